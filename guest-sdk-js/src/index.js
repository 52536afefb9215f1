// The rio guest SDK for JavaScript: a service object is a module whose
// default export is `service({...})`, one function per message type; the
// SDK does the CBOR and the WIT glue.

import * as hostState from "rio:service/state@0.2.0";
import { call as hostCall, send as hostSend } from "rio:service/messaging@0.2.0";
import { write as hostLog } from "rio:service/log@0.2.0";
import { current } from "rio:service/identity@0.2.0";
import { set as hostSetTimer, cancel as hostCancelTimer } from "rio:service/timers@0.2.0";
import { deactivate as hostDeactivate } from "rio:service/lifecycle@0.2.0";
import * as hostReminders from "rio:service/reminders@0.2.0";
import * as hostEvents from "rio:service/events@0.2.0";

import { decode, encode } from "./codec.js";
import { Abort, RioError, asHandlerError } from "./errors.js";
import { checkMessage } from "./schema.js";

export { RioError };

/** This object's own state: values CBOR can hold, under string keys. */
export const state = {
  /** The value under `key`, or `fallback` (default undefined) if none. */
  load(key, fallback = undefined) {
    const stored = hostState.get(key);
    return stored === undefined ? fallback : decode(stored, `state key \`${key}\``);
  },
  save(key, value) {
    hostState.set(key, encode(value));
  },
  delete(key) {
    hostState.delete(key);
  },
  keys() {
    return hostState.keys();
  },
};

/** Logging into the silo's log, tagged with this object's identity. */
export const log = Object.fromEntries(
  ["trace", "debug", "info", "warn", "error"].map((level) => [
    level,
    (...parts) => hostLog(level, parts.map(show).join(" ")),
  ]),
);

function show(part) {
  if (typeof part === "string") return part;
  if (part instanceof Error) return `${part.name}: ${part.message}`;
  try {
    return JSON.stringify(part, (_, v) => (typeof v === "bigint" ? v.toString() : v)) ?? String(part);
  } catch {
    return String(part);
  }
}

/** Who this instance is. */
export const identity = {
  serviceType: () => current().serviceType,
  objectId: () => current().objectId,
};

/**
 * Sends `message` to `serviceType/objectId` and returns its decoded reply.
 * Throws a `RioError` with the callee's kind when the call fails, or the
 * platform's (`unknown-type`, `trap`, `timeout`, `overloaded`, `cycle`,
 * `deadlock`, `unavailable`, `internal`); a reply that is not CBOR throws
 * `bad-data`.
 */
export function call(serviceType, objectId, messageType, message = {}) {
  let reply;
  try {
    reply = hostCall(serviceType, objectId, messageType, encode(message ?? {}));
  } catch (thrown) {
    throw callFailure(thrown);
  }
  return decode(reply, `the reply of ${serviceType}/${objectId}`);
}

/**
 * Sends `message` to `serviceType/objectId` one way, without a reply. It
 * goes out only if this turn commits (stored with the turn's writes), and
 * takes effect exactly once, after the messages this object sent the same
 * receiver before. One the receiver refuses becomes a dead letter (`rio
 * dead-letters`). Throws a `RioError` (`internal`) only for arguments no
 * message can carry, such as an empty type or id.
 */
export function send(serviceType, objectId, messageType, message = {}) {
  try {
    hostSend(serviceType, objectId, messageType, encode(message ?? {}));
  } catch (thrown) {
    throw callFailure(thrown);
  }
}

/**
 * Timers: messages this object has the silo deliver to itself later, as
 * ordinary turns, while it is active. `set(name, messageType, message,
 * { afterMs, everyMs, keepActive })` sets (or replaces) one: once `afterMs`
 * from now, or every `everyMs` (the first tick `afterMs`, or one period,
 * from now). A timer lives as long as the activation that set it (idle
 * deactivation, `lifecycle.deactivate()`, a trap or a redeploy ends it), so
 * set the timers an object always has in `onActivate`. Setting and
 * cancelling take effect when the turn commits. Ticks never overlap and
 * never pile up: a periodic tick that comes due while the previous one still
 * waits or runs is skipped. A tick keeps an idle object active only with
 * `keepActive: true`. Throws a `RioError` (`internal`) for arguments no
 * timer can have (neither `afterMs` nor `everyMs`, an empty or reserved
 * name, a period of 0, more than 64 timers, their payloads over 1 MiB).
 */
export const timers = {
  set(name, messageType, message = {}, { afterMs, everyMs, keepActive = false } = {}) {
    if (afterMs === undefined && everyMs === undefined) {
      throw new RioError("internal", `timer \`${name}\` needs \`afterMs\` or \`everyMs\``);
    }
    const every = everyMs === undefined ? undefined : millis(everyMs, "everyMs");
    const timer = {
      afterMs: afterMs === undefined ? every : millis(afterMs, "afterMs"),
      everyMs: every,
      messageType,
      payload: encode(message ?? {}),
      keepActive: Boolean(keepActive),
    };
    try {
      hostSetTimer(name, timer);
    } catch (thrown) {
      throw callFailure(thrown);
    }
  },
  /** Cancels the timer `name` once this turn commits; none is no error. */
  cancel(name) {
    hostCancelTimer(name);
  },
};

function millis(value, what) {
  const number = typeof value === "bigint" ? Number(value) : value;
  if (typeof number !== "number" || !Number.isFinite(number) || number < 0) {
    throw new RioError("internal", `\`${what}\` must be a number of milliseconds, not ${show(value)}`);
  }
  return BigInt(Math.round(number));
}

/**
 * Reminders: durable messages this object has the silo deliver to itself at
 * a time, once or periodically, even when it is not active or its silo
 * died. Stored with the commit of the turn that sets them (a turn that
 * fails sets nothing); each fire runs once in effect, and its commit moves
 * a periodic reminder on to its next time and removes a one-shot one.
 *
 *   reminders.set("expire", "expire", {}, { afterMs: 30 * 60 * 1000 });
 *   reminders.set("report", "report", {}, { everyMs: 3600000, fireOnceWhenMissed: true });
 *
 * In the handler, `reminders.fired()` is `{ name, dueMs }` of the fire.
 */
export const reminders = {
  set(name, messageType, message = {}, { afterMs, atMs, everyMs, fireOnceWhenMissed = false } = {}) {
    if (afterMs === undefined && atMs === undefined && everyMs === undefined) {
      throw new RioError("internal", `reminder \`${name}\` needs \`afterMs\`, \`atMs\` or \`everyMs\``);
    }
    const every = everyMs === undefined ? undefined : millis(everyMs, "everyMs");
    let dueMs;
    if (atMs !== undefined) {
      dueMs = millis(atMs, "atMs");
    } else {
      dueMs = hostReminders.nowMs() + (afterMs === undefined ? every : millis(afterMs, "afterMs"));
    }
    const reminder = {
      dueMs,
      everyMs: every,
      missed: fireOnceWhenMissed ? "fire-once" : "skip",
      messageType,
      payload: encode(message ?? {}),
    };
    try {
      hostReminders.set(name, reminder);
    } catch (thrown) {
      throw callFailure(thrown);
    }
  },
  /** Removes the reminder `name` once this turn commits; none is no error. */
  cancel(name) {
    hostReminders.cancel(name);
  },
  /**
   * This object's reminders as stored, by name: `{ name, dueMs, everyMs,
   * messageType }` (this turn's own changes are not in it until it commits).
   */
  list() {
    let listed;
    try {
      listed = hostReminders.getAll();
    } catch (thrown) {
      throw callFailure(thrown);
    }
    return listed.map(([name, reminder]) => ({
      name,
      dueMs: Number(reminder.dueMs),
      everyMs: reminder.everyMs === undefined ? undefined : Number(reminder.everyMs),
      messageType: reminder.messageType,
    }));
  },
  /** `{ name, dueMs }` of the fire this turn handles, or undefined. */
  fired() {
    const fire = hostReminders.fired();
    return fire === undefined ? undefined : { name: fire.name, dueMs: Number(fire.dueMs) };
  },
  /** The silo's clock, in milliseconds since the Unix epoch. */
  nowMs() {
    return Number(hostReminders.nowMs());
  },
};

/**
 * Pub/sub: events this object publishes to topics, for the clients and the
 * objects that subscribe to them on any silo of the cluster.
 *
 *   // Clients watching `Room/lobby` (this object's own topic) see it once
 *   // this turn commits.
 *   events.publishOwn({ kind: "joined", member: "ada" });
 *   // Every later event of `Room/lobby` arrives here as a `heard` message.
 *   events.subscribe("Room/lobby", "heard");
 *
 * An event leaves only when the turn that published it commits, after the
 * turn's earlier events; a turn that fails publishes nothing. Every event
 * carries this object as its publisher and a sequence number counting its
 * events from 1 (kept across restarts and moves), so a subscriber sees a
 * gap. Delivery to clients is at most once: nobody subscribed, nobody
 * receives it. An object's subscription is durable instead: each later
 * event takes effect in it once, in its publisher's order, even across
 * restarts and failovers.
 */
export const events = {
  /**
   * Publishes `value` (CBOR) to `topic` once this turn commits. Throws a
   * `RioError` (`internal`) for arguments no event can have: an empty or
   * reserved (`rio:`) topic, one over 200 bytes or with control characters,
   * more than 1,000 events in one turn, or their payloads over the silo's
   * `payload-bytes` together.
   */
  publish(topic, value) {
    const payload = encode(value);
    try {
      hostEvents.publish(topic, payload);
    } catch (thrown) {
      throw callFailure(thrown);
    }
  },
  /** Publishes `value` to this object's own topic, its `Type/id`. */
  publishOwn(value) {
    events.publish(events.ownTopic(), value);
  },
  /** This object's own topic, its `Type/id` (e.g. `Room/lobby`). */
  ownTopic() {
    const me = current();
    return `${me.serviceType}/${me.objectId}`;
  },
  /**
   * Subscribes this object to `topic` once this turn commits: each event
   * published there afterwards, on any silo, arrives as a message of type
   * `messageType` carrying the event's payload, activating this object if
   * needed. Delivery is at least once with repeats skipped, so each event
   * takes effect once; one publisher's events arrive in publish order.
   * Subscribing again replaces the message type. Throws a `RioError`
   * (`internal`) for a topic no event can have, or an empty or reserved
   * (`rio:`) message type.
   */
  subscribe(topic, messageType) {
    try {
      hostEvents.subscribe(topic, messageType);
    } catch (thrown) {
      throw callFailure(thrown);
    }
  },
  /** Ends this object's subscription to `topic` once this turn commits. */
  unsubscribe(topic) {
    hostEvents.unsubscribe(topic);
  },
  /** This object's subscriptions as last committed: `[topic, messageType]` pairs, by topic. */
  subscriptions() {
    try {
      return hostEvents.subscriptions().map(([topic, messageType]) => [topic, messageType]);
    } catch (thrown) {
      throw callFailure(thrown);
    }
  },
};

/** This object's own lifecycle. */
export const lifecycle = {
  /**
   * Asks that this object be deactivated once this turn commits: its
   * `onDeactivate` runs, its timers end, and the next message activates it
   * afresh, wherever placement puts it. A turn that fails does not.
   */
  deactivate() {
    hostDeactivate();
  },
};

function callFailure(thrown) {
  const error = thrown?.payload ?? thrown;
  if (error?.tag === "guest") return new RioError(error.val.kind, error.val.message);
  // The other cases of the WIT `call-error` are named by the kind words
  // themselves (`unknown-type`, ..., `deadlock`, `unavailable`).
  if (typeof error?.tag === "string") return new RioError(error.tag, String(error.val));
  return new RioError("internal", String(thrown));
}

/**
 * Stops this instance with a trap, as a Rust panic does: the turn's writes
 * are discarded, the caller gets `trap`, and the next message activates a
 * fresh instance. For an object whose memory can no longer be trusted.
 */
export function abort(reason = "aborted") {
  hostLog("error", `aborting: ${reason}`);
  throw new Abort(reason);
}

const HOOKS = new Set(["onActivate", "onDeactivate"]);

/**
 * Declares the service: `{ "message-type": handler, ... }`, plus optional
 * `onActivate()` and `onDeactivate()`. A handler is `(message) => reply`, or
 * `{ message: { field: "int" }, handle(message) {...} }` to have the message
 * checked first (a mismatch answers `bad-request`). Returns what the
 * component exports; make it the module's default export.
 */
export function service(definition) {
  const handlers = new Map();
  for (const [name, value] of Object.entries(definition)) {
    if (HOOKS.has(name)) {
      if (typeof value !== "function") throw new TypeError(`\`${name}\` must be a function`);
      continue;
    }
    if (typeof value === "function") {
      handlers.set(name, { handle: value, schema: undefined });
    } else if (value && typeof value.handle === "function") {
      handlers.set(name, { handle: value.handle, schema: value.message });
    } else {
      throw new TypeError(`the handler of \`${name}\` must be a function or { message, handle }`);
    }
  }
  const hook = (name) => () => {
    try {
      synchronous(name, definition[name]?.());
    } catch (error) {
      throw failure(error);
    }
  };
  return {
    handle(objectId, messageType, payload) {
      try {
        const handler = handlers.get(messageType);
        if (!handler) {
          throw new RioError("unknown-message", `no handler for \`${messageType}\``);
        }
        const message = messageFor(handler, messageType, payload);
        if (handler.schema) checkMessage(message, handler.schema);
        const reply = synchronous(messageType, handler.handle(message));
        return encode(reply ?? {});
      } catch (error) {
        throw failure(error);
      }
    },
    onActivate: hook("onActivate"),
    onDeactivate: hook("onDeactivate"),
  };
}

/** The decoded message; a handler declared without a parameter takes any. */
function messageFor(handler, messageType, payload) {
  try {
    return decode(payload, `the \`${messageType}\` message`, "bad-request");
  } catch (error) {
    if (!handler.schema && handler.handle.length === 0) return {};
    throw error;
  }
}

function synchronous(name, result) {
  if (typeof result?.then === "function") {
    // A promise would be encoded as `{}` and its work never run to the end.
    throw new RioError(
      "internal",
      `\`${name}\` returned a Promise: rio handlers are synchronous (call() already waits for its reply)`,
    );
  }
  return result;
}

/**
 * An `Abort` escapes as is: componentize-js traps when a thrown value is not
 * a `handler-error`, which is the point.
 */
function failure(error) {
  return error instanceof Abort ? error : asHandlerError(error);
}
