"""Calls to other objects, in any language, and one-way sends, with CBOR
done here."""

from componentize_py_types import Err
from wit_world.imports import messaging as _host
from wit_world.imports import types as _types

from ._codec import decode, encode
from ._errors import RioError
from ._service import to_wire

# The words a failed call is reported with, as the other SDKs use them.
_KINDS = {
    _types.CallError_UnknownType: "unknown-type",
    _types.CallError_Trap: "trap",
    _types.CallError_Timeout: "timeout",
    _types.CallError_Overloaded: "overloaded",
    _types.CallError_Cycle: "cycle",
    _types.CallError_Deadlock: "deadlock",
    # The call may or may not have run; not the same as `overloaded`.
    _types.CallError_Unavailable: "unavailable",
    _types.CallError_Internal: "internal",
}


def call(service_type: str, object_id: str, message_type: str, message=None):
    """Sends `message` to `service_type/object_id` and returns its decoded reply.

    Raises `RioError` with the callee's kind when the call fails, or the
    platform's (`unknown-type`, `trap`, `timeout`, `overloaded`, `cycle`,
    `deadlock`, `unavailable`, `internal`); a reply that is not CBOR raises
    `bad-data`.
    """
    payload = encode(to_wire(message if message is not None else {}))
    try:
        reply = _host.call(service_type, object_id, message_type, payload)
    except Err as failure:
        raise _call_error(failure.value) from None
    return decode(reply, f"the reply of {service_type}/{object_id}")


def send(service_type: str, object_id: str, message_type: str, message=None):
    """Sends `message` to `service_type/object_id` one way, without a reply.

    The message goes out only if this turn commits (it is stored with the
    turn's writes), and takes effect exactly once, after the messages this
    object sent the same receiver before. One the receiver refuses becomes a
    dead letter (`rio dead-letters`). Raises `RioError` (`internal`) only
    for arguments no message can carry, such as an empty type or id.
    """
    payload = encode(to_wire(message if message is not None else {}))
    try:
        _host.send(service_type, object_id, message_type, payload)
    except Err as failure:
        raise _call_error(failure.value) from None


def _call_error(error) -> RioError:
    if isinstance(error, _types.CallError_Guest):
        return RioError(error.value.kind, error.value.message)
    return RioError(_KINDS.get(type(error), "internal"), str(error.value))
