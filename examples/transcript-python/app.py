"""A durable transcript of topics, in Python, with the same messages as the
Rust one (`examples/transcript`): `Transcript/<id>` subscribes itself to the
topics it is told to follow (a room's `Room/<id>`, say) and keeps the last
events they carried, so what was said while no client watched is still
there to read. Each event takes effect here once and a publisher's events
come in their order, across restarts and failovers.

- `follow {"topic": t}` subscribes to `t` from now on; `unfollow {"topic":
  t}` ends it; both answer `{"following": [topics]}`;
- `heard` is how events arrive (the subscription's message type): the event
  is kept, the oldest dropped past the last 100;
- `history` answers `{"events": [events, oldest first]}`.

Build it with `rio build examples/transcript-python`.
"""

from dataclasses import dataclass

from rio_sdk import events, handler, service, state

# Events kept, at most.
KEPT = 100


@dataclass
class Topic:
    topic: str


def following(change, added):
    """The topics followed once this turn commits: the stored ones with
    this turn's change."""
    topics = [topic for topic, _ in events.subscriptions() if topic != change]
    if added:
        topics.append(change)
    return {"following": sorted(topics)}


@service
class Transcript:
    @handler("follow")
    def follow(self, message: Topic):
        events.subscribe(message.topic, "heard")
        return following(message.topic, True)

    @handler("unfollow")
    def unfollow(self, message: Topic):
        events.unsubscribe(message.topic)
        return following(message.topic, False)

    @handler("heard")
    def heard(self, event):
        kept = state.load("history", [])
        kept.append(event)
        state.save("history", kept[-KEPT:])
        return {}

    @handler("history")
    def history(self):
        return {"events": state.load("history", [])}
