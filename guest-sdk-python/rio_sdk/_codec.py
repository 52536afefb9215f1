"""CBOR in and out, the convention every rio SDK shares."""

import cbor2

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
    incoming message, `bad-data` (the default) for a stored value or a reply."""
    try:
        return cbor2.loads(payload or _EMPTY_MAP)
    except Exception as error:
        raise RioError(kind, f"{what} is not valid CBOR: {error}")
