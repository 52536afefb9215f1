"""The `@service` and `@handler` decorators, and turning decoded CBOR into
the message types handlers ask for (and replies back into CBOR values)."""

import dataclasses
import inspect
import types
import typing

from ._errors import RioError

_registered = None


class _Service:
    """What `@service` learned about the user's class."""

    def __init__(self, cls):
        self.cls = cls
        self.handlers = {}
        for name, member in inspect.getmembers(cls, inspect.isfunction):
            message_type = getattr(member, "__rio_message_type__", None)
            if message_type is not None:
                self.handlers[message_type] = _Handler(name, member)
        self.instance = None

    def object(self):
        # One object per component instance, which is one activation.
        if self.instance is None:
            self.instance = self.cls()
        return self.instance


class _Handler:
    def __init__(self, name, function):
        self.name = name
        parameters = list(inspect.signature(function).parameters.values())[1:]
        self.takes_message = bool(parameters)
        self.message_type = None
        if parameters:
            hints = typing.get_type_hints(function)
            self.message_type = hints.get(parameters[0].name)

    def message_from(self, value):
        if self.message_type is None:
            return value
        return from_wire(value, self.message_type, "the message")


def service(cls):
    """Marks the class whose methods handle this component's messages.

    A component has exactly one service class.
    """
    global _registered
    if _registered is not None:
        raise TypeError(f"@service is used twice ({_registered.cls.__name__} and {cls.__name__})")
    _registered = _Service(cls)
    return cls


def handler(message_type):
    """Marks a method as the handler of `message_type`.

    `@handler("add-to")` names it; a bare `@handler` uses the method's name
    with `_` turned into `-`. The method takes `self` and optionally the
    message: annotated with a dataclass, the message is checked and built
    (a mismatch answers `bad-request`); otherwise it is the decoded value.
    """
    if callable(message_type):
        function = message_type
        function.__rio_message_type__ = function.__name__.replace("_", "-")
        return function

    def mark(function):
        function.__rio_message_type__ = message_type
        return function

    return mark


def registered():
    if _registered is None:
        raise RioError("internal", "the module defines no @service class")
    return _registered


_SIMPLE = {int: "an integer", float: "a number", str: "a string", bool: "a boolean", bytes: "bytes"}


def from_wire(value, wanted, where):
    """`value` as the type `wanted`, or `RioError("bad-request")` saying why not."""
    if wanted is typing.Any or wanted is None:
        return value
    origin = typing.get_origin(wanted)
    arguments = typing.get_args(wanted)
    # `Optional[int]` is a typing.Union, `int | None` a types.UnionType.
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in arguments:
            return None
        options = [option for option in arguments if option is not type(None)]
        if len(options) == 1:
            # Optional[X]: X's own complaint is the most precise one.
            return from_wire(value, options[0], where)
        for option in arguments:
            if option is type(None):
                continue
            try:
                return from_wire(value, option, where)
            except RioError:
                pass
        expected = " or ".join(_described(option) for option in arguments)
        raise RioError("bad-request", f"{where} should be {expected}, got {value!r}")
    if dataclasses.is_dataclass(wanted):
        if not isinstance(value, dict):
            raise RioError("bad-request", f"{where} should be a map, got {type(value).__name__}")
        hints = typing.get_type_hints(wanted)
        fields = {}
        for field in dataclasses.fields(wanted):
            if field.name in value:
                fields[field.name] = from_wire(value[field.name], hints[field.name], _field_of(where, field.name))
            elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                if type(None) in typing.get_args(hints[field.name]):
                    fields[field.name] = None
                else:
                    raise RioError("bad-request", f"{where} lacks the field `{field.name}`")
        return wanted(**fields)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise RioError("bad-request", f"{where} should be a list, got {type(value).__name__}")
        item = arguments[0] if arguments else typing.Any
        return [from_wire(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RioError("bad-request", f"{where} should be a map, got {type(value).__name__}")
        item = arguments[1] if len(arguments) > 1 else typing.Any
        return {k: from_wire(v, item, f"{where}[{k!r}]") for k, v in value.items()}
    if wanted in _SIMPLE:
        # bool is an int in Python, but not a number on the wire.
        acceptable = isinstance(value, wanted) and not (wanted is int and isinstance(value, bool))
        if wanted is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not acceptable:
            raise RioError("bad-request", f"{where} should be {_SIMPLE[wanted]}, got {value!r}")
        return value
    if wanted in (dict, list):
        if not isinstance(value, wanted):
            raise RioError("bad-request", f"{where} should be a {wanted.__name__}, got {type(value).__name__}")
        return value
    return value


def _described(wanted):
    """`wanted` in words, for the alternatives of a union."""
    if wanted is type(None):
        return "null"
    if wanted in _SIMPLE:
        return _SIMPLE[wanted]
    origin = typing.get_origin(wanted) or wanted
    if origin in (list, tuple):
        return "a list"
    if origin is dict or dataclasses.is_dataclass(wanted):
        return "a map"
    return getattr(wanted, "__name__", str(wanted))


def _field_of(where, name):
    return f"field `{name}`" if where == "the message" else f"{where}.{name}"


def to_wire(value):
    """Dataclasses become maps; everything else goes to CBOR as it is."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value
