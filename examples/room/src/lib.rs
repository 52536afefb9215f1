//! A chat room with presence: `Room/<id>` keeps who is in it, publishes
//! every arrival, line and departure to its own topic `Room/<id>` (what
//! `rio subscribe Room/<id>` prints), and drops the members it has not heard
//! from for `idle_ms`, on a periodic timer. An empty room cancels that timer
//! and deactivates itself.
//!
//! - `join {"member": s, "idle_ms"?: n}` adds `member` (or refreshes it),
//!   keeps `idle_ms` for the room (else the room's, else 30000) and sets the
//!   timer `sweep`; publishes `{"kind": "joined", "member"}` for a newcomer;
//! - `say {"member": s, "text": t}` publishes `{"kind": "said", "member",
//!   "text"}` (`not-a-member` if `member` has not joined);
//! - `ping {"member": s}` only refreshes `member` (`not-a-member` too);
//! - `leave {"member": s}` removes it, publishing `{"kind": "left", "member"}`;
//! - `members` answers, as every message does, `{"members": [names, sorted]}`;
//! - `sweep` (what the timer delivers) drops whoever was last seen more than
//!   `idle_ms` ago, publishing `{"kind": "dropped", "member"}` for each.
//!
//! Build it with `rio build examples/room`; the same object is in
//! `examples/room-python` and `examples/room-js`.

use std::collections::BTreeMap;
use std::time::Duration;

use rio_sdk::prelude::*;

/// How long a member may stay silent when `join` does not say.
const DEFAULT_IDLE_MS: u64 = 30_000;

/// Member name to the silo's time (ms) it was last heard from; a BTreeMap,
/// so the names come out sorted.
type Members = BTreeMap<String, u64>;

#[derive(Deserialize)]
struct Join {
    member: String,
    idle_ms: Option<u64>,
}

#[derive(Deserialize)]
struct Say {
    member: String,
    text: String,
}

#[derive(Deserialize)]
struct Member {
    member: String,
}

#[derive(Serialize)]
struct Event<'a> {
    kind: &'a str,
    member: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
}

#[derive(Serialize)]
struct Present {
    members: Vec<String>,
}

fn load_members() -> Result<Members, Error> {
    Ok(state::load("members")?.unwrap_or_default())
}

/// Stores the members, or removes the key once nobody is left.
fn save_members(members: &Members) -> Result<(), Error> {
    if members.is_empty() {
        state::delete("members");
        Ok(())
    } else {
        state::save("members", members)
    }
}

fn idle_ms() -> Result<u64, Error> {
    Ok(state::load("idle_ms")?.unwrap_or(DEFAULT_IDLE_MS))
}

fn present(members: &Members) -> Present {
    Present {
        members: members.keys().cloned().collect(),
    }
}

fn publish(kind: &str, member: &str, text: Option<&str>) -> Result<(), Error> {
    events::publish_own(&Event { kind, member, text })
}

/// Sets (or replaces) the sweep, a few times per `idle_ms` so that a member
/// goes at most a quarter of it late. It keeps the room active: a room with
/// members must stay to sweep them, and it deactivates itself once empty.
fn sweep_every(idle_ms: u64) -> Result<(), Error> {
    let period = Duration::from_millis((idle_ms / 4).max(100));
    timers::set("sweep", Timer::every(period).keep_active(), "sweep", &Empty)
}

fn not_a_member(member: &str) -> Error {
    Error::new("not-a-member", format!("`{member}` is not in the room"))
}

/// Timers end with an activation; a room that still has members when it is
/// activated again (a restart, a move) needs its sweep back.
fn on_activate() -> Result<(), Error> {
    if !load_members()?.is_empty() {
        sweep_every(idle_ms()?)?;
    }
    Ok(())
}

fn join(message: Join) -> Result<Present, Error> {
    let idle_ms = match message.idle_ms {
        Some(idle_ms) => idle_ms,
        None => idle_ms()?,
    };
    state::save("idle_ms", &idle_ms)?;
    let mut members = load_members()?;
    let newcomer = members
        .insert(message.member.clone(), reminders::now_ms())
        .is_none();
    save_members(&members)?;
    if newcomer {
        publish("joined", &message.member, None)?;
    }
    sweep_every(idle_ms)?;
    Ok(present(&members))
}

/// Marks `member` as heard from now, or fails if it is not in the room.
fn refresh(member: &str) -> Result<Members, Error> {
    let mut members = load_members()?;
    match members.get_mut(member) {
        Some(last_seen_ms) => *last_seen_ms = reminders::now_ms(),
        None => return Err(not_a_member(member)),
    }
    save_members(&members)?;
    Ok(members)
}

fn say(message: Say) -> Result<Present, Error> {
    let members = refresh(&message.member)?;
    publish("said", &message.member, Some(&message.text))?;
    Ok(present(&members))
}

fn ping(message: Member) -> Result<Present, Error> {
    Ok(present(&refresh(&message.member)?))
}

fn leave(message: Member) -> Result<Present, Error> {
    let mut members = load_members()?;
    if members.remove(&message.member).is_some() {
        save_members(&members)?;
        publish("left", &message.member, None)?;
    }
    Ok(present(&members))
}

fn members() -> Result<Present, Error> {
    Ok(present(&load_members()?))
}

fn sweep() -> Result<Present, Error> {
    let idle_ms = idle_ms()?;
    let now_ms = reminders::now_ms();
    let mut members = load_members()?;
    let gone: Vec<String> = members
        .iter()
        .filter(|(_, last_seen_ms)| now_ms.saturating_sub(**last_seen_ms) > idle_ms)
        .map(|(member, _)| member.clone())
        .collect();
    for member in &gone {
        members.remove(member);
        publish("dropped", member, None)?;
    }
    save_members(&members)?;
    if members.is_empty() {
        // Nobody left to sweep: the next `join` activates the room afresh.
        timers::cancel("sweep");
        lifecycle::deactivate();
    }
    Ok(present(&members))
}

rio_sdk::service! {
    on_activate = on_activate;
    "join" => join,
    "say" => say,
    "ping" => ping,
    "leave" => leave,
    "members" => members,
    "sweep" => sweep,
}
