// A chat room with presence, in JavaScript, with the same messages as the
// Rust one (`examples/room`): `Room/<id>` keeps who is in it, publishes every
// arrival, line and departure to its own topic `Room/<id>` (what `rio
// subscribe Room/<id>` prints), and drops the members it has not heard from
// for `idle_ms`, on a periodic timer. An empty room cancels that timer and
// deactivates itself.
//
// - `join {"member": s, "idle_ms"?: n}` adds `member` (or refreshes it),
//   keeps `idle_ms` for the room (else the room's, else 30000) and sets the
//   timer `sweep`; publishes `{"kind": "joined", "member"}` for a newcomer;
// - `say {"member": s, "text": t}` publishes `{"kind": "said", "member",
//   "text"}` (`not-a-member` if `member` has not joined);
// - `ping {"member": s}` only refreshes `member` (`not-a-member` too);
// - `leave {"member": s}` removes it, publishing `{"kind": "left", "member"}`;
// - `members` answers, as every message does, `{"members": [names, sorted]}`;
// - `sweep` (what the timer delivers) drops whoever was last seen more than
//   `idle_ms` ago, publishing `{"kind": "dropped", "member"}` for each.
//
// Build it with `rio build examples/room-js`.

import { RioError, events, lifecycle, reminders, service, state, timers } from "rio-sdk";

// How long a member may stay silent when `join` does not say.
const DEFAULT_IDLE_MS = 30000;

// Member name to the silo's time (ms) it was last heard from, as a Map: a
// plain object would take a member called `__proto__` for its prototype.
function loadMembers() {
  return new Map(Object.entries(state.load("members", {})));
}

// Stored as a CBOR map, as the Rust room does; once nobody is left the key
// goes.
function saveMembers(members) {
  if (members.size > 0) state.save("members", Object.fromEntries(members));
  else state.delete("members");
}

// Code point order, as Rust and Python sort strings; JavaScript's own sort
// compares UTF-16 units, which puts some characters elsewhere.
function byCodePoint(a, b) {
  const left = Array.from(a);
  const right = Array.from(b);
  for (let i = 0; i < Math.min(left.length, right.length); i++) {
    const difference = left[i].codePointAt(0) - right[i].codePointAt(0);
    if (difference !== 0) return difference;
  }
  return left.length - right.length;
}

function names(members) {
  return [...members.keys()].sort(byCodePoint);
}

function present(members) {
  return { members: names(members) };
}

// A few sweeps per `idle_ms`, so a member goes at most a quarter of it late.
// It keeps the room active: a room with members must stay to sweep them, and
// it deactivates itself once empty.
function sweepEvery(idleMs) {
  timers.set("sweep", "sweep", {}, { everyMs: Math.max(Math.floor(idleMs / 4), 100), keepActive: true });
}

// Marks `member` as heard from now, or fails if it is not in the room.
function refresh(member) {
  const members = loadMembers();
  if (!members.has(member)) {
    throw new RioError("not-a-member", `\`${member}\` is not in the room`);
  }
  members.set(member, reminders.nowMs());
  saveMembers(members);
  return members;
}

export default service({
  // Timers end with an activation; a room that still has members when it is
  // activated again (a restart, a move) needs its sweep back.
  onActivate() {
    if (loadMembers().size > 0) sweepEvery(state.load("idle_ms", DEFAULT_IDLE_MS));
  },

  join: {
    message: { member: "string", idle_ms: "int?" },
    handle({ member, idle_ms }) {
      let idleMs = idle_ms;
      if (idleMs === undefined || idleMs === null) {
        idleMs = state.load("idle_ms", DEFAULT_IDLE_MS);
      } else if (idleMs < 0) {
        // What the Rust room's `u64` refuses.
        throw new RioError("bad-request", `field \`idle_ms\` should be a non-negative integer, got ${idleMs}`);
      }
      state.save("idle_ms", idleMs);
      const members = loadMembers();
      const newcomer = !members.has(member);
      members.set(member, reminders.nowMs());
      saveMembers(members);
      if (newcomer) events.publishOwn({ kind: "joined", member });
      sweepEvery(idleMs);
      return present(members);
    },
  },
  say: {
    message: { member: "string", text: "string" },
    handle({ member, text }) {
      const members = refresh(member);
      events.publishOwn({ kind: "said", member, text });
      return present(members);
    },
  },
  ping: {
    message: { member: "string" },
    handle({ member }) {
      return present(refresh(member));
    },
  },
  leave: {
    message: { member: "string" },
    handle({ member }) {
      const members = loadMembers();
      if (members.delete(member)) {
        saveMembers(members);
        events.publishOwn({ kind: "left", member });
      }
      return present(members);
    },
  },
  members() {
    return present(loadMembers());
  },
  sweep() {
    const idleMs = state.load("idle_ms", DEFAULT_IDLE_MS);
    const nowMs = reminders.nowMs();
    const members = loadMembers();
    for (const member of names(members)) {
      if (nowMs - members.get(member) > idleMs) {
        members.delete(member);
        events.publishOwn({ kind: "dropped", member });
      }
    }
    saveMembers(members);
    if (members.size === 0) {
      // Nobody left to sweep: the next `join` activates the room afresh.
      timers.cancel("sweep");
      lifecycle.deactivate();
    }
    return present(members);
  },
});
