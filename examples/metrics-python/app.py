"""A metrics aggregator in Python, with the same messages as the Rust one
(`examples/metrics`): each `<Type>/<source>` object keeps a pending count and
sum of the values it is sent; a periodic timer set in `on_activate` flushes
them every second, one way, to `<Type>/total`, which adds them up.

- `record {"value": n}` answers `{"pending": {"count", "sum"}}`;
- `get` answers `{"pending": {...}, "total": {...}}`;
- `close` flushes and asks for this object's deactivation;
- `add {"count", "sum"}` (what a flush sends) adds to this object's total.

Build it with `rio build examples/metrics-python`.
"""

from dataclasses import dataclass

from rio_sdk import handler, identity, lifecycle, send, service, state, timers

TOTAL = "total"
EMPTY = {"count": 0, "sum": 0}


@dataclass
class Record:
    value: int


@dataclass
class Sums:
    count: int
    sum: int


@service
class Metrics:
    def on_activate(self):
        if identity.object_id() != TOTAL:
            timers.set("flush", "flush", every=1)

    def on_deactivate(self):
        self.flush()

    @handler("record")
    def record(self, message: Record):
        pending = state.load("pending", EMPTY)
        pending = {"count": pending["count"] + 1, "sum": pending["sum"] + message.value}
        state.save("pending", pending)
        return {"pending": pending}

    @handler("flush")
    def flush(self):
        # Leaves with this turn's commit, which also clears it here.
        pending = state.load("pending", EMPTY)
        if pending["count"] > 0:
            send(identity.service_type(), TOTAL, "add", pending)
            state.delete("pending")
        return {"pending": EMPTY}

    @handler("close")
    def close(self):
        lifecycle.deactivate()
        return self.flush()

    @handler("add")
    def add(self, message: Sums):
        total = state.load("total", EMPTY)
        state.save("total", {"count": total["count"] + message.count, "sum": total["sum"] + message.sum})
        return self.get()

    @handler("get")
    def get(self):
        return {"pending": state.load("pending", EMPTY), "total": state.load("total", EMPTY)}
