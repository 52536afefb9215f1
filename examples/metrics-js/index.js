// A metrics aggregator in JavaScript, with the same messages as the Rust one
// (`examples/metrics`): each `<Type>/<source>` object keeps a pending count
// and sum of the values it is sent; a periodic timer set in `onActivate`
// flushes them every second, one way, to `<Type>/total`, which adds them up.
//
// - `record {"value": n}` answers `{"pending": {"count", "sum"}}`;
// - `get` answers `{"pending": {...}, "total": {...}}`;
// - `close` flushes and asks for this object's deactivation;
// - `add {"count", "sum"}` (what a flush sends) adds to this object's total.
//
// Build it with `rio build examples/metrics-js`.

import { identity, lifecycle, send, service, state, timers } from "rio-sdk";

const TOTAL = "total";
const EMPTY = { count: 0, sum: 0 };

// Leaves with this turn's commit, which also clears it here.
function flush() {
  const pending = state.load("pending", EMPTY);
  if (pending.count > 0) {
    send(identity.serviceType(), TOTAL, "add", pending);
    state.delete("pending");
  }
  return { pending: EMPTY };
}

function get() {
  return { pending: state.load("pending", EMPTY), total: state.load("total", EMPTY) };
}

export default service({
  onActivate() {
    if (identity.objectId() !== TOTAL) timers.set("flush", "flush", {}, { everyMs: 1000 });
  },
  onDeactivate() {
    flush();
  },

  record: {
    message: { value: "int" },
    handle({ value }) {
      const pending = state.load("pending", EMPTY);
      const next = { count: pending.count + 1, sum: pending.sum + value };
      state.save("pending", next);
      return { pending: next };
    },
  },
  flush,
  close() {
    lifecycle.deactivate();
    return flush();
  },
  add: {
    message: { count: "int", sum: "int" },
    handle({ count, sum }) {
      const total = state.load("total", EMPTY);
      state.save("total", { count: total.count + count, sum: total.sum + sum });
      return get();
    },
  },
  get,
});
