"""Timers: messages this object has the silo deliver to itself later, as
ordinary turns, while it is active.

    from rio_sdk import timers

    timers.set("flush", "flush", every=60)     # every minute, first in a minute
    timers.set("expire", "expire", after=30)   # once, in 30 s
    timers.cancel("expire")

Times are in seconds (floats allowed, counted in whole milliseconds). A
timer lives as long as the activation that set it: idle deactivation,
`lifecycle.deactivate()`, a trap or a redeploy ends it, so set the timers an
object always has in `on_activate`. Setting and cancelling take effect when
the turn commits. Ticks never overlap and never pile up: a periodic tick
that comes due while the previous one still waits or runs is skipped. A tick
does not keep an idle object active unless `keep_active=True`.
"""

from componentize_py_types import Err
from wit_world.imports import timers as _host

from ._call import _call_error
from ._codec import encode
from ._errors import RioError
from ._service import to_wire


def _millis(seconds, what: str) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
        raise RioError("internal", f"a timer's `{what}` must be a number of seconds, not {seconds!r}")
    return round(seconds * 1000)


def set(name: str, message_type: str, message=None, *, after=None, every=None, keep_active=False):
    """Sets the timer `name` (replacing one of that name) to deliver `message`
    as `message_type` to this object: once `after` seconds from now, or every
    `every` seconds (the first tick `after`, or one period, from now).

    Raises `RioError` (`internal`) for arguments no timer can have: neither
    `after` nor `every`, an empty or reserved name, a period of 0, more than
    64 timers, or their payloads over 1 MiB together.
    """
    if after is None and every is None:
        raise RioError("internal", f"timer `{name}` needs `after` or `every`")
    every_ms = None if every is None else _millis(every, "every")
    after_ms = every_ms if after is None else _millis(after, "after")
    timer = _host.Timer(
        after_ms=after_ms,
        every_ms=every_ms,
        message_type=message_type,
        payload=encode(to_wire(message if message is not None else {})),
        keep_active=bool(keep_active),
    )
    try:
        _host.set(name, timer)
    except Err as failure:
        raise _call_error(failure.value) from None


def cancel(name: str) -> None:
    """Cancels the timer `name` once this turn commits; none of that name is
    no error."""
    _host.cancel(name)
