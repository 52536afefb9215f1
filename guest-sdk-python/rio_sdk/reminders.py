"""Reminders: durable messages this object has the silo deliver to itself at
a time, once or periodically, even when it is not active or its silo died.

    from rio_sdk import reminders

    reminders.set("expire", "expire", after=1800)   # once, in half an hour
    reminders.set("report", "report", every=3600, fire_once_when_missed=True)
    reminders.cancel("expire")

    def expire(_):
        name, due_ms = reminders.fired()   # which reminder, due when
        ...

A reminder is stored with the commit of the turn that sets it (a turn that
fails sets nothing). Each fire runs once in effect, however often it is
delivered; its commit moves a periodic reminder on to its next time and
removes a one-shot one. Times are in seconds (floats allowed, counted in
whole milliseconds), `at_ms` in milliseconds since the Unix epoch. A
periodic reminder found a whole period late skips to its next time, or with
`fire_once_when_missed=True` fires once, then goes on.
"""

from componentize_py_types import Err
from wit_world.imports import reminders as _host

from ._call import _call_error
from ._codec import encode
from ._errors import RioError
from ._service import to_wire


def _millis(seconds, what: str) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
        raise RioError("internal", f"a reminder's `{what}` must be a number of seconds, not {seconds!r}")
    return round(seconds * 1000)


def set(name: str, message_type: str, message=None, *, after=None, at_ms=None, every=None,
        fire_once_when_missed=False):
    """Sets the reminder `name` (replacing one of that name) to deliver
    `message` as `message_type` to this object once this turn commits: at
    `at_ms`, or `after` seconds from now, or every `every` seconds (the first
    time `after`, `at_ms`, or one period from now).

    Raises `RioError` (`internal`) for arguments no reminder can have: no
    time at all, an empty or reserved name, one over 200 bytes, a period of
    0, more than 64 reminder changes in one turn.
    """
    if after is None and at_ms is None and every is None:
        raise RioError("internal", f"reminder `{name}` needs `after`, `at_ms` or `every`")
    every_ms = None if every is None else _millis(every, "every")
    if at_ms is not None:
        due_ms = int(at_ms)
    else:
        delay = every_ms if after is None else _millis(after, "after")
        due_ms = _host.now_ms() + delay
    reminder = _host.Reminder(
        due_ms=max(due_ms, 0),
        every_ms=every_ms,
        missed=_host.Missed.FIRE_ONCE if fire_once_when_missed else _host.Missed.SKIP,
        message_type=message_type,
        payload=encode(to_wire(message if message is not None else {})),
    )
    try:
        _host.set(name, reminder)
    except Err as failure:
        raise _call_error(failure.value) from None


def cancel(name: str) -> None:
    """Removes the reminder `name` once this turn commits; none of that name
    is no error."""
    _host.cancel(name)


def list():
    """This object's reminders as stored, by name: dicts with `name`,
    `due_ms`, `every_ms` (or None) and `message_type` (this turn's own
    changes are not in it until it commits)."""
    try:
        listed = _host.get_all()
    except Err as failure:
        raise _call_error(failure.value) from None
    return [
        {"name": name, "due_ms": r.due_ms, "every_ms": r.every_ms, "message_type": r.message_type}
        for name, r in listed
    ]


def fired():
    """`(name, due_ms)` of the reminder whose fire this turn handles, or None
    in a turn that is no fire."""
    fire = _host.fired()
    return None if fire is None else (fire.name, fire.due_ms)


def now_ms() -> int:
    """The silo's clock, in milliseconds since the Unix epoch."""
    return _host.now_ms()
