"""This object's own lifecycle."""

from wit_world.imports import lifecycle as _host


def deactivate() -> None:
    """Asks that this object be deactivated once this turn commits: its
    `on_deactivate` runs, its timers end, and the next message activates it
    afresh, wherever placement puts it. A turn that fails does not
    deactivate."""
    _host.deactivate()
