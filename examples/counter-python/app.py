"""A counter service object in Python, with the same messages as the Rust one.

- `increment {"by": n}` adds n and answers `{"value": <new value>}`;
- `get` answers `{"value": <value>}`;
- `add-to {"target": id, "by": n}` increments another counter of this type;
- `relay {"service_type", "object_id", "message_type", "payload"}` calls any
  object, in any language, and answers its reply;
- `send-to {...}`, the same fields, sends one way (delivered once this turn
  commits) and answers `{"sent": true}`.

Build it with `rio build examples/counter-python`.
"""

from dataclasses import dataclass
from typing import Any, Optional

from rio_sdk import call, handler, identity, send, service, state


@dataclass
class Increment:
    by: int


@dataclass
class AddTo:
    target: str
    by: int


@dataclass
class Relay:
    service_type: str
    object_id: str
    message_type: str
    payload: Optional[Any] = None


@service
class Counter:
    @handler("increment")
    def increment(self, message: Increment):
        value = state.load("value", 0) + message.by
        state.save("value", value)
        return {"value": value}

    @handler("get")
    def get(self):
        return {"value": state.load("value", 0)}

    @handler("add-to")
    def add_to(self, message: AddTo):
        return call(identity.service_type(), message.target, "increment", {"by": message.by})

    @handler("relay")
    def relay(self, message: Relay):
        return call(message.service_type, message.object_id, message.message_type, message.payload)

    @handler("send-to")
    def send_to(self, message: Relay):
        send(message.service_type, message.object_id, message.message_type, message.payload)
        return {"sent": True}
