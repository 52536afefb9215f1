// A durable transcript of topics, in JavaScript, with the same messages as
// the Rust one (`examples/transcript`): `Transcript/<id>` subscribes itself
// to the topics it is told to follow (a room's `Room/<id>`, say) and keeps
// the last events they carried, so what was said while no client watched is
// still there to read. Each event takes effect here once and a publisher's
// events come in their order, across restarts and failovers.
//
// - `follow {"topic": t}` subscribes to `t` from now on; `unfollow
//   {"topic": t}` ends it; both answer `{"following": [topics]}`;
// - `heard` is how events arrive (the subscription's message type): the
//   event is kept, the oldest dropped past the last 100;
// - `history` answers `{"events": [events, oldest first]}`.
//
// Build it with `rio build examples/transcript-js`.

import { events, service, state } from "rio-sdk";

// Events kept, at most.
const KEPT = 100;

// The topics followed once this turn commits: the stored ones with this
// turn's change.
function following(change, added) {
  const topics = events
    .subscriptions()
    .map(([topic]) => topic)
    .filter((topic) => topic !== change);
  if (added) {
    topics.push(change);
  }
  return { following: topics.sort() };
}

export default service({
  follow({ topic }) {
    events.subscribe(topic, "heard");
    return following(topic, true);
  },
  unfollow({ topic }) {
    events.unsubscribe(topic);
    return following(topic, false);
  },
  heard(event) {
    const kept = state.load("history", []);
    kept.push(event);
    state.save("history", kept.slice(-KEPT));
    return {};
  },
  history() {
    return { events: state.load("history", []) };
  },
});
