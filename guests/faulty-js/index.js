// A JavaScript guest that misbehaves on request, for the fault-isolation
// tests: the same messages as `guests/faulty` (Rust).

import { RioError, log, service, state } from "rio-sdk";

const setValue = { value: "int" };

export default service({
  onActivate() {
    // Counted in state, so tests see the hook ran and was committed.
    state.save("activations", state.load("activations", 0) + 1);
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
      throw new Error(`failing after a write of ${value}`);
    },
  },

  trap() {
    log.warn("about to fail on request");
    throw new Error("asked to fail");
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
});
