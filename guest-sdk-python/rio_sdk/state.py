"""This object's own state: Python values (anything CBOR holds) under string keys.

Reads see this turn's own writes. The host commits a turn's writes when the
handler returns and discards them when it raises.
"""

from wit_world.imports import state as _host

from ._codec import decode, encode


def load(key: str, default=None):
    """The value under `key`, or `default` if there is none."""
    stored = _host.get(key)
    if stored is None:
        return default
    return decode(stored, f"state key `{key}`")


def save(key: str, value) -> None:
    """Stores `value` under `key`."""
    _host.set(key, encode(value))


def delete(key: str) -> None:
    _host.delete(key)


def keys() -> list:
    """Every key that has a value."""
    return _host.keys()
