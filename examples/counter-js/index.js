// A counter service object in JavaScript, with the same messages as the
// Rust one:
//
// - `increment {"by": n}` adds n and answers `{"value": <new value>}`;
// - `get` answers `{"value": <value>}`;
// - `add-to {"target": id, "by": n}` increments another counter of this type;
// - `relay {"service_type", "object_id", "message_type", "payload"}` calls any
//   object, in any language, and answers its reply;
// - `send-to {...}`, the same fields, sends one way (delivered once this turn
//   commits) and answers `{"sent": true}`.
//
// Build it with `rio build examples/counter-js`.

import { call, identity, send, service, state } from "rio-sdk";

export default service({
  increment: {
    message: { by: "int" },
    handle({ by }) {
      const value = state.load("value", 0) + by;
      state.save("value", value);
      return { value };
    },
  },

  get() {
    return { value: state.load("value", 0) };
  },

  "add-to": {
    message: { target: "string", by: "int" },
    handle({ target, by }) {
      return call(identity.serviceType(), target, "increment", { by });
    },
  },

  relay: {
    message: { service_type: "string", object_id: "string", message_type: "string", payload: "any?" },
    handle(message) {
      return call(message.service_type, message.object_id, message.message_type, message.payload ?? {});
    },
  },
  "send-to": {
    message: { service_type: "string", object_id: "string", message_type: "string", payload: "any?" },
    handle(message) {
      send(message.service_type, message.object_id, message.message_type, message.payload ?? {});
      return { sent: true };
    },
  },
});
