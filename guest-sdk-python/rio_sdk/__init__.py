"""The rio guest SDK for Python: a service object is a class with one method
per message type; the SDK does the CBOR and the WIT glue.

    from dataclasses import dataclass
    from rio_sdk import service, handler, state

    @dataclass
    class Increment:
        by: int

    @service
    class Counter:
        @handler("increment")
        def increment(self, message: Increment):
            value = state.load("value", 0) + message.by
            state.save("value", value)
            return {"value": value}

`timers` delivers messages to the object itself later while it is active,
`reminders` durably (across restarts and failovers), `events` publishes to
topics that clients subscribe to, and `lifecycle.deactivate()` ends its
activation once the turn commits.

`rio build FOLDER` turns the folder holding `app.py` into a component.
"""

from . import events, identity, lifecycle, log, reminders, state, timers
from ._call import call, send
from ._errors import RioError
from ._service import handler, service

__all__ = [
    "service",
    "handler",
    "state",
    "call",
    "send",
    "RioError",
    "log",
    "identity",
    "timers",
    "reminders",
    "events",
    "lifecycle",
]
