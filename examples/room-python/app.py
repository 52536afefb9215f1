"""A chat room with presence, in Python, with the same messages as the Rust
one (`examples/room`): `Room/<id>` keeps who is in it, publishes every
arrival, line and departure to its own topic `Room/<id>` (what `rio
subscribe Room/<id>` prints), and drops the members it has not heard from
for `idle_ms`, on a periodic timer. An empty room cancels that timer and
deactivates itself.

- `join {"member": s, "idle_ms"?: n}` adds `member` (or refreshes it), keeps
  `idle_ms` for the room (else the room's, else 30000) and sets the timer
  `sweep`; publishes `{"kind": "joined", "member"}` for a newcomer;
- `say {"member": s, "text": t}` publishes `{"kind": "said", "member",
  "text"}` (`not-a-member` if `member` has not joined);
- `ping {"member": s}` only refreshes `member` (`not-a-member` too);
- `leave {"member": s}` removes it, publishing `{"kind": "left", "member"}`;
- `members` answers, as every message does, `{"members": [names, sorted]}`;
- `sweep` (what the timer delivers) drops whoever was last seen more than
  `idle_ms` ago, publishing `{"kind": "dropped", "member"}` for each.

Build it with `rio build examples/room-python`.
"""

from dataclasses import dataclass
from typing import Optional

from rio_sdk import RioError, events, handler, lifecycle, reminders, service, state, timers

# How long a member may stay silent when `join` does not say.
DEFAULT_IDLE_MS = 30000


@dataclass
class Join:
    member: str
    idle_ms: Optional[int]


@dataclass
class Say:
    member: str
    text: str


@dataclass
class Member:
    member: str


def load_members():
    """Member name to the silo's time (ms) it was last heard from."""
    return state.load("members", {})


def save_members(members):
    # Once nobody is left the key goes, as in the Rust room.
    if members:
        state.save("members", members)
    else:
        state.delete("members")


def present(members):
    return {"members": sorted(members)}


def sweep_every(idle_ms):
    # A few sweeps per `idle_ms`, so a member goes at most a quarter of it
    # late. It keeps the room active: a room with members must stay to sweep
    # them, and it deactivates itself once empty.
    timers.set("sweep", "sweep", every=max(idle_ms // 4, 100) / 1000, keep_active=True)


def refresh(member):
    """Marks `member` as heard from now, or fails if it is not in the room."""
    members = load_members()
    if member not in members:
        raise RioError("not-a-member", f"`{member}` is not in the room")
    members[member] = reminders.now_ms()
    save_members(members)
    return members


@service
class Room:
    def on_activate(self):
        # Timers end with an activation; a room that still has members when
        # it is activated again (a restart, a move) needs its sweep back.
        if load_members():
            sweep_every(state.load("idle_ms", DEFAULT_IDLE_MS))

    @handler("join")
    def join(self, message: Join):
        idle_ms = message.idle_ms
        if idle_ms is None:
            idle_ms = state.load("idle_ms", DEFAULT_IDLE_MS)
        elif idle_ms < 0:
            # What the Rust room's `u64` refuses.
            raise RioError("bad-request", f"field `idle_ms` should be a non-negative integer, got {idle_ms}")
        state.save("idle_ms", idle_ms)
        members = load_members()
        newcomer = message.member not in members
        members[message.member] = reminders.now_ms()
        save_members(members)
        if newcomer:
            events.publish_own({"kind": "joined", "member": message.member})
        sweep_every(idle_ms)
        return present(members)

    @handler("say")
    def say(self, message: Say):
        members = refresh(message.member)
        events.publish_own({"kind": "said", "member": message.member, "text": message.text})
        return present(members)

    @handler("ping")
    def ping(self, message: Member):
        return present(refresh(message.member))

    @handler("leave")
    def leave(self, message: Member):
        members = load_members()
        if message.member in members:
            del members[message.member]
            save_members(members)
            events.publish_own({"kind": "left", "member": message.member})
        return present(members)

    @handler("members")
    def members(self):
        return present(load_members())

    @handler("sweep")
    def sweep(self):
        idle_ms = state.load("idle_ms", DEFAULT_IDLE_MS)
        now_ms = reminders.now_ms()
        members = load_members()
        for member in sorted(members):
            if now_ms - members[member] > idle_ms:
                del members[member]
                events.publish_own({"kind": "dropped", "member": member})
        save_members(members)
        if not members:
            # Nobody left to sweep: the next `join` activates the room afresh.
            timers.cancel("sweep")
            lifecycle.deactivate()
        return present(members)
