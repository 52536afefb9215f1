//! The chat room with presence (`examples/room`, `examples/room-python`,
//! `examples/room-js`) in each language, deployed to a real `rio silo`
//! process and watched through the room's own topic by two subscribers on
//! two connections: arrivals, lines and departures come to both, the same,
//! in order, numbered without a gap, and refused or redundant messages
//! publish nothing; a silent member is dropped by the room's timer in real
//! time while one that pings stays; the emptied room deactivates itself;
//! and 200 lines said at once by 8 clients each arrive exactly once.
//! A transcript (`examples/transcript*`) of the same language follows the
//! room's topic as an object subscriber: at the end it holds the last 100
//! events exactly as the clients saw them, in order, and after it unfollows
//! it takes no more.
//!
//! Outside CI a language whose tooling is not installed is skipped with a
//! printed reason; in CI (`CI=true`) that is a failure.

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::SiloProcess;
use common::guests::{Language, build, tooling_ready};
use rio_client::{Calls, Client, ClientError, Delivery, ReplyError, Subscription};
use serde_json::{Value, json};

fn room_folder(language: Language) -> &'static str {
    match language {
        Language::Rust => "examples/room",
        Language::Python => "examples/room-python",
        Language::JavaScript => "examples/room-js",
    }
}

fn transcript_folder(language: Language) -> &'static str {
    match language {
        Language::Rust => "examples/transcript",
        Language::Python => "examples/transcript-python",
        Language::JavaScript => "examples/transcript-js",
    }
}

/// How long the transcript may take to catch up with the clients.
const TRANSCRIPT_WAIT: Duration = Duration::from_secs(60);

/// Objects active beside the room: its transcript, which the silo's idle
/// timeout (600 s) never reaches in a test.
const TRANSCRIPTS: u64 = 1;

/// How long any one event may take to come: generous for a debug silo on
/// two busy cores, yet a lost event fails in seconds.
const WAIT: Duration = Duration::from_secs(10);

/// The idle time the room gets when `dan` joins: short, to watch the sweep
/// (every quarter of it) in real time; long beside the pings' 50 ms, so a
/// loaded silo does not drop the member that keeps pinging.
const IDLE_MS: u64 = 500;

async fn connect(silo: &SiloProcess) -> Client {
    // Deploying compiles a Python or JS component (12-18 MB) in the silo:
    // tens of seconds while the other languages' tests compile theirs.
    Client::connect(&silo.address)
        .await
        .expect("client connects")
        .with_timeout(Duration::from_secs(240))
}

/// One room object, as one client calls it.
#[derive(Clone)]
struct Room {
    client: Client,
    service_type: String,
    id: &'static str,
}

impl Room {
    /// Sends a message; answers the `members` every reply carries.
    async fn send(&self, message_type: &str, message: Value) -> Result<Vec<String>, ClientError> {
        let reply: Value = self
            .client
            .call(&self.service_type, self.id, message_type, &message)
            .await?;
        let members = reply["members"].as_array();
        let members = members.unwrap_or_else(|| panic!("{message_type} answered {reply}"));
        Ok(members
            .iter()
            .map(|name| name.as_str().unwrap().to_string())
            .collect())
    }

    async fn ok(&self, message_type: &str, message: Value) -> Vec<String> {
        let answered = self.send(message_type, message.clone()).await;
        answered.unwrap_or_else(|e| panic!("{} {message_type} {message}: {e}", self.service_type))
    }
}

/// The refusal of a message from someone not in the room.
fn not_a_member(answered: Result<Vec<String>, ClientError>, what: &str) {
    match answered {
        Err(ClientError::Reply(ReplyError::Guest { kind, .. })) if kind == "not-a-member" => {}
        other => panic!("{what}: expected `not-a-member`, got {other:?}"),
    }
}

/// The room's topic as both subscribers see it, and the number of the last
/// event they saw: every event must reach both, identical, numbered next.
struct Watchers {
    subscriptions: [Subscription; 2],
    topic: String,
    seq: u64,
    /// Every event seen, in order.
    seen: Vec<Value>,
}

impl Watchers {
    async fn next(&mut self, what: &str) -> Value {
        let mut seen = Vec::new();
        for (n, subscription) in self.subscriptions.iter_mut().enumerate() {
            match tokio::time::timeout(WAIT, subscription.next()).await {
                Ok(Some(Ok(Delivery::Event(event)))) => seen.push(event),
                Ok(other) => panic!("{what}: subscriber {n} got {other:?}"),
                Err(_) => panic!("{what}: subscriber {n} got nothing within {WAIT:?}"),
            }
        }
        let event = &seen[0];
        assert_eq!(event, &seen[1], "{what}: the subscribers differ");
        // Published to the room's own topic, as `Type/id`, numbered next:
        // no gap, no repeat.
        self.seq += 1;
        let place = (&*event.topic, &*event.publisher, event.seq);
        assert_eq!(place, (&*self.topic, &*self.topic, self.seq), "{what}");
        let event: Value = ciborium::from_reader(&event.payload[..]).unwrap();
        self.seen.push(event.clone());
        event
    }

    async fn expect(&mut self, what: &str, expected: Value) {
        assert_eq!(self.next(what).await, expected, "{what}");
    }

    /// Nothing comes for `wait`: an absence can only be waited for.
    async fn quiet(&mut self, wait: Duration, what: &str) {
        let [first, second] = &mut self.subscriptions;
        if let Ok(delivery) = tokio::time::timeout(wait, first.next()).await {
            panic!("{what}: expected nothing, got {delivery:?}");
        }
        if let Ok(delivery) = tokio::time::timeout(Duration::from_millis(20), second.next()).await {
            panic!("{what}: expected nothing on the second subscriber, got {delivery:?}");
        }
    }
}

fn event(kind: &str, member: &str) -> Value {
    json!({"kind": kind, "member": member})
}

async fn room_suite(language: Language) {
    if !tooling_ready(&[language]) {
        return;
    }
    let building = Instant::now();
    let component = build(room_folder(language));
    let built = building.elapsed();
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start(data.path());
    let client = connect(&silo).await;
    let service_type = format!("{}Room", language.tag());
    let deploying = Instant::now();
    client
        .deploy(&service_type, component)
        .await
        .expect("the room deploys");
    let deployed = deploying.elapsed();
    let room = Room {
        client: client.clone(),
        service_type: service_type.clone(),
        id: "lobby",
    };

    // Subscribed before the room's first event, so the numbers start at 1;
    // the second subscriber is on a connection of its own.
    let topic = format!("{service_type}/lobby");
    let second = connect(&silo).await;
    let subscriptions = [
        client.subscribe(&[&topic]).await.unwrap(),
        second.subscribe(&[&topic]).await.unwrap(),
    ];
    let transcript_type = format!("{}Transcript", language.tag());
    client
        .deploy(&transcript_type, build(transcript_folder(language)))
        .await
        .expect("the transcript deploys");
    let followed: Value = client
        .call(&transcript_type, "log", "follow", &json!({"topic": topic}))
        .await
        .unwrap();
    assert_eq!(followed, json!({"following": [topic]}));
    let mut watchers = Watchers {
        subscriptions,
        topic,
        seq: 0,
        seen: Vec::new(),
    };

    let started = Instant::now();
    presence(&room, &mut watchers).await;
    idle_members_are_dropped(&room, &mut watchers).await;
    many_talk_at_once(&room, &silo, &mut watchers).await;
    transcript_matches(&client, &transcript_type, &room, &watchers).await;
    let checked = started.elapsed();
    eprintln!(
        "{language:?}: built in {built:.1?}, deployed in {deployed:.1?}, checked in {checked:.1?}"
    );
    silo.stop();
}

/// The transcript holds the last 100 events the clients saw, in order,
/// once its deliveries caught up; unfollowed, it takes no more. It may be
/// far behind the clients: it takes one event at a time, each a keyed turn
/// with its commit (in a Python or JS guest on a busy debug silo, tens of
/// milliseconds each), so it is given a minute; a lost or repeated event
/// never matches.
async fn transcript_matches(client: &Client, service_type: &str, room: &Room, watchers: &Watchers) {
    let kept = watchers.seen.len().min(100);
    let expected = &watchers.seen[watchers.seen.len() - kept..];
    let history = |client: Client| async move {
        let history: Value = client
            .call(service_type, "log", "history", &json!({}))
            .await
            .unwrap();
        history["events"].as_array().unwrap().clone()
    };
    let started = Instant::now();
    loop {
        let events = history(client.clone()).await;
        if events == expected {
            break;
        }
        assert!(
            started.elapsed() < TRANSCRIPT_WAIT,
            "the transcript has {} events, not the {kept} seen: {events:?}",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let unfollowed: Value = client
        .call(
            service_type,
            "log",
            "unfollow",
            &json!({"topic": watchers.topic}),
        )
        .await
        .unwrap();
    assert_eq!(unfollowed, json!({"following": []}));
    room.ok("join", json!({"member": "zed"})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        history(client.clone()).await,
        expected,
        "an unfollowed topic's event arrived"
    );
}

/// Arrivals, a line and departures, step by step: each reply's members
/// (or refusal), and the event it publishes, if any. What changes nothing
/// publishes nothing: the next event's number would show it.
async fn presence(room: &Room, watchers: &mut Watchers) {
    let said = json!({"kind": "said", "member": "ann", "text": "hi"});
    let ann_bob: &[&str] = &["ann", "bob"];
    #[rustfmt::skip]
    let steps = [
        ("join", json!({"member": "ann"}), Ok(&["ann"][..]), Some(event("joined", "ann"))),
        ("join", json!({"member": "bob"}), Ok(ann_bob), Some(event("joined", "bob"))),
        // Already in: refreshed, not announced.
        ("join", json!({"member": "ann"}), Ok(ann_bob), None),
        ("say", json!({"member": "ann", "text": "hi"}), Ok(ann_bob), Some(said)),
        // Not in the room: refused, and neither let in nor announced.
        ("say", json!({"member": "carl", "text": "me too"}), Err("not-a-member"), None),
        ("ping", json!({"member": "carl"}), Err("not-a-member"), None),
        ("members", json!({}), Ok(ann_bob), None),
        ("leave", json!({"member": "bob"}), Ok(&["ann"]), Some(event("left", "bob"))),
        ("leave", json!({"member": "bob"}), Ok(&["ann"]), None),
        ("members", json!({}), Ok(&["ann"]), None),
    ];
    for (message_type, message, expected, published) in steps {
        let what = format!("{message_type} {message}");
        match (room.send(message_type, message).await, expected) {
            (Ok(members), Ok(expected)) => assert_eq!(members, expected, "{what}"),
            (Err(ClientError::Reply(ReplyError::Guest { kind, .. })), Err(expected)) => {
                assert_eq!(kind, expected, "{what}")
            }
            (answered, expected) => panic!("{what}: expected {expected:?}, got {answered:?}"),
        }
        if let Some(published) = published {
            watchers.expect(&what, published).await;
        }
    }
}

/// `dan` joins with a short idle time and says nothing; `ann` pings. Only
/// `dan` is dropped, by the timer, neither early nor much late; once `ann`
/// is silent too she goes, and the empty room deactivates itself.
async fn idle_members_are_dropped(room: &Room, watchers: &mut Watchers) {
    let before = room.client.stats().await.unwrap();
    assert_eq!(
        before.live_activations,
        1 + TRANSCRIPTS,
        "the room and its transcript alone are active: {before:?}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let pinger = tokio::spawn({
        let (room, stop) = (room.clone(), stop.clone());
        async move {
            loop {
                let sent = Instant::now();
                let members = room.ok("ping", json!({"member": "ann"})).await;
                assert!(
                    members.contains(&"ann".to_string()),
                    "ann's ping answered {members:?}"
                );
                if stop.load(Ordering::SeqCst) {
                    // When ann was last heard from, at the latest.
                    return sent;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });

    let idle = Duration::from_millis(IDLE_MS);
    let joined_at = Instant::now();
    let joined = room
        .ok("join", json!({"member": "dan", "idle_ms": IDLE_MS}))
        .await;
    assert_eq!(joined, ["ann", "dan"]);
    watchers.expect("dan joins", event("joined", "dan")).await;
    watchers
        .expect("dan, silent, is dropped", event("dropped", "dan"))
        .await;
    let silent = joined_at.elapsed();
    // The sweep runs every IDLE_MS / 4: dropped after IDLE_MS, not before,
    // and well within a few sweeps after (a margin for a loaded silo).
    assert!(
        silent >= idle && silent < idle + Duration::from_millis(2_500),
        "dan was dropped {silent:?} after joining, with an idle time of {idle:?}"
    );
    not_a_member(
        room.send("ping", json!({"member": "dan"})).await,
        "dan, dropped, pings",
    );

    // Several idle times more: the timer goes on, ann keeps pinging, and
    // nobody else is dropped.
    watchers.quiet(idle * 3, "ann keeps pinging").await;
    assert!(!pinger.is_finished(), "ann's pings failed");
    stop.store(true, Ordering::SeqCst);
    let last_ping = pinger.await.expect("ann's pings all answered");
    watchers
        .expect("ann, silent now, is dropped", event("dropped", "ann"))
        .await;
    let silent = last_ping.elapsed();
    assert!(
        silent >= idle && silent < idle + Duration::from_millis(2_500),
        "ann was dropped {silent:?} after her last ping"
    );

    // The sweep that emptied the room cancelled itself and deactivated the
    // room; nothing else could have (the silo's idle timeout is 600 s).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = room.client.stats().await.unwrap();
        if stats.live_activations == TRANSCRIPTS {
            assert_eq!(
                stats.deactivations_total,
                before.deactivations_total + 1,
                "{stats:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the empty room is still active: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Eight clients join, then say 25 lines each at once: every line comes
/// exactly once, each member's in the order sent, the numbers without a
/// gap; the room had been deactivated, so its numbering survived that.
async fn many_talk_at_once(room: &Room, silo: &SiloProcess, watchers: &mut Watchers) {
    const TALKERS: usize = 8;
    const LINES: usize = 25;
    // The room is the silo's one object beside its transcript: activated
    // once so far, and deactivated once (no stray sweep woke it again); the
    // next message activates it afresh, with nobody left from before.
    let counts = |s: rio_protocol::SiloStats| {
        (
            s.live_activations,
            s.activations_total,
            s.deactivations_total,
        )
    };
    let t = TRANSCRIPTS;
    assert_eq!(counts(room.client.stats().await.unwrap()), (t, 1 + t, 1));
    assert_eq!(room.ok("members", json!({})).await, Vec::<String>::new());
    assert_eq!(
        counts(room.client.stats().await.unwrap()),
        (1 + t, 2 + t, 1)
    );

    let names: Vec<String> = (0..TALKERS).map(|n| format!("m{n}")).collect();
    let mut talkers = Vec::new();
    for (n, name) in names.iter().enumerate() {
        let client = Client::connect(&silo.address).await.unwrap();
        let talker = Room {
            client,
            ..room.clone()
        };
        // Long enough that the sweep drops nobody while the others talk.
        let joined = talker
            .ok("join", json!({"member": name, "idle_ms": 60_000}))
            .await;
        assert_eq!(joined, names[..=n], "{name} joins");
        watchers
            .expect("the talkers join", event("joined", name))
            .await;
        talkers.push(talker);
    }

    let barrier = Arc::new(tokio::sync::Barrier::new(TALKERS));
    let mut tasks = Vec::new();
    for (talker, name) in talkers.into_iter().zip(names.clone()) {
        let (barrier, names) = (barrier.clone(), names.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            for line in 0..LINES {
                let text = format!("{name} line {line}");
                let said = talker
                    .ok("say", json!({"member": name, "text": text}))
                    .await;
                assert_eq!(said, names, "{name}'s line {line}");
            }
        }));
    }
    // Read while they talk: each member's next line is the one after its last.
    let mut next_line: HashMap<String, usize> = names.iter().map(|n| (n.clone(), 0)).collect();
    for _ in 0..TALKERS * LINES {
        let said = watchers.next("the talkers' lines").await;
        assert_eq!(said["kind"], "said", "{said}");
        let member = said["member"].as_str().unwrap_or_else(|| panic!("{said}"));
        let line = next_line
            .get_mut(member)
            .unwrap_or_else(|| panic!("from whom? {said}"));
        assert!(
            *line < LINES,
            "more than {LINES} lines from {member}: {said}"
        );
        let expected =
            json!({"kind": "said", "member": member, "text": format!("{member} line {line}")});
        assert_eq!(said, expected, "{member}'s lines in the order sent");
        *line += 1;
    }
    for task in tasks {
        task.await.expect("every line is taken");
    }
    assert!(
        next_line.values().all(|&lines| lines == LINES),
        "{next_line:?}"
    );

    // Everyone leaves: numbered straight after the last line, so no line
    // came twice or late.
    for (n, name) in names.iter().enumerate() {
        assert_eq!(
            room.ok("leave", json!({"member": name})).await,
            names[n + 1..]
        );
        watchers
            .expect("the talkers leave", event("left", name))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_room_keeps_presence_and_order() {
    room_suite(Language::Rust).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_room_keeps_presence_and_order() {
    room_suite(Language::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_room_keeps_presence_and_order() {
    room_suite(Language::JavaScript).await;
}
