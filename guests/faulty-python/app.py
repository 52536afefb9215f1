"""A Python guest that misbehaves on request, for the fault-isolation tests:
the same messages as `guests/faulty` (Rust)."""

import time
from dataclasses import dataclass

from rio_sdk import RioError, call, handler, identity, log, service, state
from wit_world.imports import state as host_state


@dataclass
class SetValue:
    value: int


@dataclass
class Sleep:
    millis: int


@dataclass
class CallSleeper:
    target: str
    millis: int
    # Slept before the call, so the callee gets less than a whole deadline.
    before_millis: int = 0


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

    # For the deadline tests: sleeps in WASI, directly, through a call it
    # waits on, or in the deactivation hook.
    def on_deactivate(self):
        millis = state.load("deactivate_sleep_millis")
        if millis is not None:
            time.sleep(millis / 1000)

    @handler("sleep")
    def sleep(self, message: Sleep):
        # Written first, so a test sees whether the turn's writes were kept.
        state.save("value", message.millis)
        time.sleep(message.millis / 1000)
        return {"slept": message.millis}

    @handler("call-sleeper")
    def call_sleeper(self, message: CallSleeper):
        state.save("value", message.millis)
        time.sleep(message.before_millis / 1000)
        return call(identity.service_type(), message.target, "sleep", {"millis": message.millis})

    @handler("sleep-on-deactivate")
    def sleep_on_deactivate(self, message: Sleep):
        state.save("deactivate_sleep_millis", message.millis)
        return {"ok": True}

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
