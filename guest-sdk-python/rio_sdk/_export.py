"""The component's export: the WIT `handler` interface, dispatching to the
user's `@service` class. `rio build` makes the component's entry module
import the user's module and then this `Handler`."""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.types import HandlerError

from ._codec import decode, encode
from ._errors import RioError
from ._service import registered, to_wire


def _as_handler_error(error: Exception) -> Err:
    if isinstance(error, RioError):
        return Err(HandlerError(error.kind, error.message))
    # An uncaught exception answers `trap`, as a Rust panic does, so callers
    # see one kind whatever the callee's language. The instance is kept: the
    # turn's writes are discarded anyway, and Python's memory is still sound.
    return Err(HandlerError("trap", f"{type(error).__name__}: {error}"))


def _run_hook(name: str, object_id: str) -> None:
    try:
        service = registered()
        hook = getattr(service.object(), name, None)
        if hook is not None:
            hook()
    except Exception as error:
        raise _as_handler_error(error) from None


class Handler(exports.Handler):
    def handle(self, object_id: str, message_type: str, payload: bytes) -> bytes:
        try:
            service = registered()
            handler = service.handlers.get(message_type)
            if handler is None:
                raise RioError("unknown-message", f"{service.cls.__name__} has no handler for `{message_type}`")
            method = getattr(service.object(), handler.name)
            if handler.takes_message:
                message = handler.message_from(decode(payload, f"the `{message_type}` message", "bad-request"))
                reply = method(message)
            else:
                reply = method()
            return encode(to_wire(reply))
        except Exception as error:
            raise _as_handler_error(error) from None

    def on_activate(self, object_id: str) -> None:
        _run_hook("on_activate", object_id)

    def on_deactivate(self, object_id: str) -> None:
        _run_hook("on_deactivate", object_id)
