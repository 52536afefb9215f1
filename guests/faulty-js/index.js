// A JavaScript guest that misbehaves on request, for the fault-isolation
// tests: the same messages as `guests/faulty` (Rust).

import { RioError, abort, call, identity, log, service, state } from "rio-sdk";
import { set as hostSet } from "rio:service/state@0.2.0";

const setValue = { value: "int" };

// JS has no synchronous sleep and handlers are synchronous, so the deadline
// tests' "sleep" is a busy wait here: it burns CPU instead of waiting in WASI.
function busyWait(millis) {
  const until = Date.now() + millis;
  while (Date.now() < until);
}

export default service({
  onActivate() {
    // Counted in state, so tests see the hook ran and was committed.
    state.save("activations", state.load("activations", 0) + 1);
  },

  onDeactivate() {
    const millis = state.load("deactivate_sleep_millis", null);
    if (millis !== null) busyWait(millis);
  },

  ok: () => ({ ok: true }),

  set: {
    message: setValue,
    handle({ value }) {
      state.save("value", value);
      return { value };
    },
  },

  get: () => ({ value: state.load("value", null) }),

  "set-then-trap": {
    message: setValue,
    handle({ value }) {
      state.save("value", value);
      // Uncaught: the turn fails, so the host discards the write.
      throw new Error(`failing after a write of ${value}`);
    },
  },

  trap() {
    // Logged first so the log import is exercised too.
    log.warn("about to trap on request");
    abort("asked to trap");
  },

  loop() {
    let counter = 0;
    for (;;) counter++;
  },

  hog() {
    const hoard = [];
    for (;;) hoard.push(new Uint8Array(1 << 20).fill(1));
  },

  fail() {
    throw new RioError("refused", "this guest refuses");
  },

  activations: () => ({ activations: state.load("activations", 0) }),

  sleep: {
    message: { millis: "int" },
    handle({ millis }) {
      // Written first, so a test sees whether the turn's writes were kept.
      state.save("value", millis);
      busyWait(millis);
      return { slept: millis };
    },
  },

  "call-sleeper": {
    message: { target: "string", millis: "int", before_millis: "int?" },
    handle({ target, millis, before_millis: before }) {
      state.save("value", millis);
      // Waited before the call, so the callee gets less than a whole deadline.
      busyWait(before ?? 0);
      return call(identity.serviceType(), target, "sleep", { millis });
    },
  },

  "sleep-on-deactivate": {
    message: { millis: "int" },
    handle({ millis }) {
      state.save("deactivate_sleep_millis", millis);
      return { ok: true };
    },
  },

  maybe: {
    // Absent and null are fine, a string is a `bad-request`.
    message: { value: "int?" },
    handle: ({ value }) => ({ value: value ?? null }),
  },

  "read-garbage"() {
    // Bytes that are not CBOR, stored through the raw host import and read
    // back with the SDK: `bad-data`, and the write is discarded.
    hostSet("garbage", new Uint8Array([0xff, 0x00]));
    state.load("garbage");
    return { ok: true };
  },
});
