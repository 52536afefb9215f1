"""Pub/sub: events this object publishes to topics, for the clients and
the objects that subscribe to them on any silo of the cluster.

    from rio_sdk import events

    # Clients watching `Room/lobby` (this object's own topic) see it once
    # this turn commits.
    events.publish_own({"kind": "joined", "member": "ada"})
    events.publish("announcements", {"text": "the lobby is open"})
    # Every later event of `Room/lobby` arrives here as a `heard` message.
    events.subscribe("Room/lobby", "heard")

An event leaves only when the turn that published it commits, after the
turn's earlier events; a turn that fails publishes nothing. Every event
carries this object as its publisher and a sequence number counting its
events from 1 (kept across restarts and moves), so a subscriber sees a gap.
Delivery to clients is at most once: nobody subscribed, nobody receives it.
An object's subscription is durable instead: each later event takes effect
in it once, in its publisher's order, even across restarts and failovers.
"""

from componentize_py_types import Err
from wit_world.imports import events as _host

from . import identity
from ._call import _call_error
from ._codec import encode
from ._service import to_wire


def publish(topic: str, value) -> None:
    """Publishes `value` (CBOR; a dataclass becomes a map) to `topic` once
    this turn commits.

    Raises `RioError` (`internal`) for arguments no event can have: an empty
    or reserved (`rio:`) topic, one over 200 bytes or with control
    characters, more than 1,000 events in one turn, or their payloads over
    the silo's `payload-bytes` together.
    """
    payload = encode(to_wire(value))
    try:
        _host.publish(topic, payload)
    except Err as failure:
        raise _call_error(failure.value) from None


def publish_own(value) -> None:
    """Publishes `value` to this object's own topic, its `Type/id`."""
    publish(own_topic(), value)


def own_topic() -> str:
    """This object's own topic, its `Type/id` (e.g. `Room/lobby`)."""
    return f"{identity.service_type()}/{identity.object_id()}"


def subscribe(topic: str, message_type: str) -> None:
    """Subscribes this object to `topic` once this turn commits: each event
    published there afterwards, on any silo, arrives as a message of type
    `message_type` carrying the event's payload, activating this object if
    needed. Delivery is at least once with repeats skipped, so each event
    takes effect once; one publisher's events arrive in publish order.
    Subscribing again replaces the message type.

    Raises `RioError` (`internal`) for a topic no event can have, or an
    empty or reserved (`rio:`) message type.
    """
    try:
        _host.subscribe(topic, message_type)
    except Err as failure:
        raise _call_error(failure.value) from None


def unsubscribe(topic: str) -> None:
    """Ends this object's subscription to `topic` once this turn commits."""
    _host.unsubscribe(topic)


def subscriptions() -> list:
    """This object's subscriptions as last committed: `(topic,
    message_type)` pairs, by topic."""
    try:
        return [(topic, message_type) for topic, message_type in _host.subscriptions()]
    except Err as failure:
        raise _call_error(failure.value) from None
