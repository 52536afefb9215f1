//! A session that expires (a reminder, so also across a silo restart or a
//! failover): `Session/<id>` holds who is logged in until its time-to-live
//! passes without a `touch`.
//!
//! - `login {"user": s, "ttl_ms": n}` starts the session and sets the
//!   reminder `expire` for `ttl_ms` from now; answers `{"active": true,
//!   "user", "expires_at_ms"}`;
//! - `touch` moves the expiry `ttl_ms` on from now (`no-session` if none);
//! - `logout` ends it at once (and cancels the reminder);
//! - `get` answers `{"active", "user", "expired"}`, `expired` counting the
//!   sessions that ran out;
//! - `expire` is what the reminder delivers (refused from anyone else).
//!
//! Build it with `rio build examples/session`; the same object is in
//! `examples/session-python` and `examples/session-js`.

use std::time::Duration;

use rio_sdk::prelude::*;

#[derive(Serialize, Deserialize, Clone)]
struct Stored {
    user: String,
    ttl_ms: u64,
}

#[derive(Deserialize)]
struct Login {
    user: String,
    ttl_ms: u64,
}

#[derive(Serialize)]
struct Started {
    active: bool,
    user: String,
    expires_at_ms: u64,
}

#[derive(Serialize)]
struct Status {
    active: bool,
    user: Option<String>,
    expired: u64,
}

/// (Re)sets the expiry `ttl_ms` from now; in the turn's commit.
fn expire_later(session: &Stored) -> Result<Started, Error> {
    let reminder = Reminder::after(Duration::from_millis(session.ttl_ms));
    reminders::set("expire", reminder, "expire", &Empty)?;
    Ok(Started {
        active: true,
        user: session.user.clone(),
        expires_at_ms: reminders::now_ms() + session.ttl_ms,
    })
}

fn login(message: Login) -> Result<Started, Error> {
    let session = Stored {
        user: message.user,
        ttl_ms: message.ttl_ms,
    };
    state::save("session", &session)?;
    expire_later(&session)
}

fn touch(_: Empty) -> Result<Started, Error> {
    match state::load::<Stored>("session")? {
        Some(session) => expire_later(&session),
        None => Err(Error::new("no-session", "nobody is logged in")),
    }
}

fn logout(_: Empty) -> Result<Status, Error> {
    reminders::cancel("expire");
    state::delete("session");
    get(Empty)
}

fn expire(_: Empty) -> Result<Status, Error> {
    if reminders::fired().is_none() {
        return Err(Error::new(
            "not-a-reminder",
            "`expire` comes from the session's reminder",
        ));
    }
    if state::load::<Stored>("session")?.is_some() {
        state::delete("session");
        let expired: u64 = state::load("expired")?.unwrap_or(0);
        state::save("expired", &(expired + 1))?;
    }
    get(Empty)
}

fn get(_: Empty) -> Result<Status, Error> {
    let session = state::load::<Stored>("session")?;
    Ok(Status {
        active: session.is_some(),
        user: session.map(|session| session.user),
        expired: state::load("expired")?.unwrap_or(0),
    })
}

rio_sdk::service! {
    "login" => login,
    "touch" => touch,
    "logout" => logout,
    "expire" => expire,
    "get" => get,
}
