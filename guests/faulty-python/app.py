"""A Python guest that misbehaves on request, for the fault-isolation tests:
the same messages as `guests/faulty` (Rust)."""

from dataclasses import dataclass

from rio_sdk import RioError, handler, log, service, state
from wit_world.imports import state as host_state


@dataclass
class SetValue:
    value: int


@dataclass
class MaybeSetValue:
    value: int | None


@service
class Faulty:
    def on_activate(self):
        # Counted in state, so tests see the hook ran and was committed.
        state.save("activations", state.load("activations", 0) + 1)

    @handler("ok")
    def ok(self):
        return {"ok": True}

    @handler("set")
    def set(self, message: SetValue):
        state.save("value", message.value)
        return {"value": message.value}

    @handler("get")
    def get(self):
        return {"value": state.load("value")}

    @handler("set-then-trap")
    def set_then_trap(self, message: SetValue):
        state.save("value", message.value)
        raise RuntimeError(f"failing after a write of {message.value}")

    @handler("trap")
    def trap(self):
        log.warn("about to fail on request")
        raise RuntimeError("asked to fail")

    @handler("loop")
    def spin(self):
        counter = 0
        while True:
            counter += 1

    @handler("hog")
    def hog(self):
        hoard = []
        while True:
            hoard.append(bytearray(b"\x01" * (1 << 20)))

    @handler("fail")
    def fail(self):
        raise RioError("refused", "this guest refuses")

    @handler("activations")
    def activations(self):
        return {"activations": state.load("activations", 0)}

    @handler("maybe")
    def maybe(self, message: MaybeSetValue):
        # Absent and null are fine, a string is a `bad-request`.
        return {"value": message.value}

    @handler("read-garbage")
    def read_garbage(self):
        # Bytes that are not CBOR, stored through the raw host import and
        # read back with the SDK: `bad-data`, and the write is discarded.
        host_state.set("garbage", b"\xff\x00")
        state.load("garbage")
        return {"ok": True}
