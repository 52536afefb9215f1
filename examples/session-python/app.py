"""A session that expires, in Python, with the same messages as the Rust one
(`examples/session`): `Session/<id>` holds who is logged in until its
time-to-live passes without a `touch`; the expiry is a reminder, so it also
holds across a silo restart or a failover.

- `login {"user": s, "ttl_ms": n}` answers `{"active": true, "user", "expires_at_ms"}`;
- `touch` moves the expiry `ttl_ms` on from now (`no-session` if none);
- `logout` ends it at once;
- `get` answers `{"active", "user", "expired"}`;
- `expire` is what the reminder delivers (refused from anyone else).

Build it with `rio build examples/session-python`.
"""

from dataclasses import dataclass

from rio_sdk import RioError, handler, reminders, service, state


@dataclass
class Login:
    user: str
    ttl_ms: int


def expire_later(session):
    reminders.set("expire", "expire", after=session["ttl_ms"] / 1000)
    return {"active": True, "user": session["user"],
            "expires_at_ms": reminders.now_ms() + session["ttl_ms"]}


@service
class Session:
    @handler("login")
    def login(self, message: Login):
        session = {"user": message.user, "ttl_ms": message.ttl_ms}
        state.save("session", session)
        return expire_later(session)

    @handler("touch")
    def touch(self):
        session = state.load("session")
        if session is None:
            raise RioError("no-session", "nobody is logged in")
        return expire_later(session)

    @handler("logout")
    def logout(self):
        reminders.cancel("expire")
        state.delete("session")
        return self.get()

    @handler("expire")
    def expire(self):
        if reminders.fired() is None:
            raise RioError("not-a-reminder", "`expire` comes from the session's reminder")
        if state.load("session") is not None:
            state.delete("session")
            state.save("expired", state.load("expired", 0) + 1)
        return self.get()

    @handler("get")
    def get(self):
        session = state.load("session")
        return {"active": session is not None,
                "user": None if session is None else session["user"],
                "expired": state.load("expired", 0)}
