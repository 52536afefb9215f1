"""`events` outside a component: what it hands the host, and how a refusal
comes back. Run as test_codec.py is; the host modules are stand-ins here."""

import sys
import types
import unittest
from pathlib import Path

import cbor2


class Err(Exception):
    """What componentize-py raises for a WIT `result`'s error."""

    def __init__(self, value):
        super().__init__(value)
        self.value = value


def _variant(name):
    def __init__(self, value):
        self.value = value

    return type(name, (), {"__init__": __init__})


def _stand_ins():
    """The generated modules `events` imports, recording what it publishes."""
    published = []
    host_types = types.ModuleType("wit_world.imports.types")
    for case in ["Guest", "UnknownType", "Trap", "Timeout", "Overloaded", "Cycle", "Deadlock",
                 "Unavailable", "Internal"]:
        setattr(host_types, f"CallError_{case}", _variant(f"CallError_{case}"))
    host_events = types.ModuleType("wit_world.imports.events")

    def publish(topic, payload):
        if not topic or topic.startswith("rio:"):
            raise Err(host_types.CallError_Internal(f"`{topic}` is no topic"))
        published.append((topic, payload))

    host_events.publish = publish
    subscribed = {}

    def subscribe(topic, message_type):
        if not message_type or message_type.startswith("rio:"):
            raise Err(host_types.CallError_Internal(f"`{message_type}` is reserved"))
        subscribed[topic] = message_type

    host_events.subscribe = subscribe
    host_events.unsubscribe = lambda topic: subscribed.pop(topic, None)
    host_events.subscriptions = lambda: sorted(subscribed.items())
    host_identity = types.ModuleType("wit_world.imports.identity")
    host_identity.current = lambda: types.SimpleNamespace(service_type="Room", object_id="lobby")
    imports = types.ModuleType("wit_world.imports")
    imports.types, imports.events, imports.identity = host_types, host_events, host_identity
    imports.messaging = types.ModuleType("wit_world.imports.messaging")
    world = types.ModuleType("wit_world")
    world.imports = imports
    runtime = types.ModuleType("componentize_py_types")
    runtime.Err = Err
    sys.modules.update({
        "componentize_py_types": runtime,
        "wit_world": world,
        "wit_world.imports": imports,
        "wit_world.imports.types": host_types,
        "wit_world.imports.events": host_events,
        "wit_world.imports.identity": host_identity,
        "wit_world.imports.messaging": imports.messaging,
    })
    return published, subscribed


published, subscribed = _stand_ins()
# A bare package of the SDK's folder, as in test_codec.py: its `__init__`
# would import every host module.
package = types.ModuleType("rio_sdk")
package.__path__ = [str(Path(__file__).resolve().parents[1] / "rio_sdk")]
sys.modules["rio_sdk"] = package

from rio_sdk import events  # noqa: E402
from rio_sdk._errors import RioError  # noqa: E402


class Events(unittest.TestCase):
    def setUp(self):
        published.clear()

    def test_an_event_goes_to_the_host_as_cbor(self):
        events.publish("announcements", {"text": "open"})
        self.assertEqual(published, [("announcements", cbor2.dumps({"text": "open"}))])

    def test_an_objects_own_topic_is_its_type_and_id(self):
        self.assertEqual(events.own_topic(), "Room/lobby")
        events.publish_own({"kind": "joined", "member": "ada"})
        self.assertEqual([topic for topic, _ in published], ["Room/lobby"])

    def test_a_refused_topic_raises_the_call_errors_kind(self):
        with self.assertRaises(RioError) as refused:
            events.publish("rio:reserved", {})
        self.assertEqual(refused.exception.kind, "internal")
        self.assertEqual(published, [])

    def test_subscriptions_go_to_the_host_and_list_back(self):
        events.subscribe("Room/lobby", "heard")
        events.subscribe("news", "read")
        events.unsubscribe("news")
        self.assertEqual(events.subscriptions(), [("Room/lobby", "heard")])
        with self.assertRaises(RioError) as refused:
            events.subscribe("Room/lobby", "rio:wake-outbox")
        self.assertEqual(refused.exception.kind, "internal")


if __name__ == "__main__":
    unittest.main()
