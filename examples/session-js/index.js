// A session that expires, in JavaScript, with the same messages as the Rust
// one (`examples/session`): `Session/<id>` holds who is logged in until its
// time-to-live passes without a `touch`; the expiry is a reminder, so it
// also holds across a silo restart or a failover.
//
// - `login {"user": s, "ttl_ms": n}` answers `{"active": true, "user", "expires_at_ms"}`;
// - `touch` moves the expiry `ttl_ms` on from now (`no-session` if none);
// - `logout` ends it at once;
// - `get` answers `{"active", "user", "expired"}`;
// - `expire` is what the reminder delivers (refused from anyone else).
//
// Build it with `rio build examples/session-js`.

import { RioError, reminders, service, state } from "rio-sdk";

function expireLater(session) {
  reminders.set("expire", "expire", {}, { afterMs: session.ttl_ms });
  return { active: true, user: session.user, expires_at_ms: reminders.nowMs() + session.ttl_ms };
}

function get() {
  const session = state.load("session");
  return {
    active: session !== undefined,
    user: session === undefined ? null : session.user,
    expired: state.load("expired", 0),
  };
}

export default service({
  login: {
    message: { user: "string", ttl_ms: "int" },
    handle({ user, ttl_ms }) {
      const session = { user, ttl_ms };
      state.save("session", session);
      return expireLater(session);
    },
  },
  touch() {
    const session = state.load("session");
    if (session === undefined) throw new RioError("no-session", "nobody is logged in");
    return expireLater(session);
  },
  logout() {
    reminders.cancel("expire");
    state.delete("session");
    return get();
  },
  expire() {
    if (reminders.fired() === undefined) {
      throw new RioError("not-a-reminder", "`expire` comes from the session's reminder");
    }
    if (state.load("session") !== undefined) {
      state.delete("session");
      state.save("expired", state.load("expired", 0) + 1);
    }
    return get();
  },
  get,
});
