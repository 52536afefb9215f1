"""CBOR in and out, the convention every rio SDK shares."""

import io

import cbor2

# Not re-exported by cbor2's package when its C extension is absent, as it
# is inside a component.
from cbor2._types import break_marker

from ._errors import RioError

# What an empty payload means: a message with no fields.
_EMPTY_MAP = b"\xa0"


def encode(value) -> bytes:
    try:
        return cbor2.dumps(value)
    except Exception as error:
        raise RioError("internal", f"cannot encode {type(value).__name__} as CBOR: {error}")


def decode(payload: bytes, what: str, kind: str = "bad-data"):
    """`payload` decoded; `kind` names the failure: `bad-request` for an
    incoming message, `bad-data` (the default) for a stored value or a reply,
    as the Rust and JavaScript SDKs do."""
    data = payload or _EMPTY_MAP
    stream = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(stream).decode()
    except Exception as error:
        raise RioError(kind, f"{what} is not valid CBOR: {error}")
    # cbor2 hands a stray "break" byte back as a value and stops after the
    # first item; the Rust and JavaScript SDKs refuse both.
    if value is break_marker:
        raise RioError(kind, f"{what} is not valid CBOR: a break byte outside any container")
    if stream.tell() != len(data):
        raise RioError(kind, f"{what} is not valid CBOR: bytes follow the first CBOR item")
    return value
