//! The conformance cases of object subscriptions: what a turn's commit
//! subscribes and unsubscribes, the topic log it adds to only while its
//! topic has subscribers, delivery progress, the sweep's listing, and a
//! fenced commit that subscribes and logs nothing.

use rio_silo::ObjectKey;
use rio_silo::storage::reminders::ShardSlice;
use rio_silo::storage::{
    Chain, ClusterStore, Commit, StorageError, SubscriptionChange, TopicEvent,
};

use crate::backends::Env;

async fn commit(store: &ClusterStore, object: &ObjectKey, commit: Commit) {
    let owner = store
        .placement
        .claim(object, &crate::writer())
        .await
        .expect("claim");
    store
        .state
        .commit_turn(object, commit, &owner)
        .await
        .unwrap_or_else(|error| panic!("commit to {object}: {error}"));
}

fn subscribe(topic: &str, message_type: &str, since_ms: i64) -> SubscriptionChange {
    SubscriptionChange::Subscribe {
        topic: topic.into(),
        message_type: message_type.into(),
        since_ms,
    }
}

fn event(topic: &str, seq: i64, published_ms: i64) -> TopicEvent {
    TopicEvent {
        topic: topic.into(),
        seq,
        payload: vec![seq as u8, 7],
        published_ms,
    }
}

async fn logged_seqs(store: &ClusterStore, chain: &Chain) -> Vec<(i64, Option<String>)> {
    store
        .state
        .logged_events(chain, 100)
        .await
        .expect("read the log")
        .into_iter()
        .map(|logged| {
            assert_eq!(logged.event.payload, vec![logged.event.seq as u8, 7]);
            (
                logged.event.seq,
                logged
                    .delivered_through
                    .map(|object| object.object_id.to_string()),
            )
        })
        .collect()
}

async fn subscriber_ids(
    store: &ClusterStore,
    topic: &str,
    after: Option<&ObjectKey>,
    published_ms: i64,
    limit: usize,
) -> Vec<(String, String)> {
    store
        .state
        .subscribers(topic, after, published_ms, limit)
        .await
        .expect("read the subscribers")
        .into_iter()
        .map(|subscriber| {
            (
                subscriber.object.object_id.to_string(),
                subscriber.message_type,
            )
        })
        .collect()
}

pub(crate) async fn topics(store: ClusterStore, env: &Env) {
    let topic = env.name("room");
    let quiet = env.name("quiet");
    let (a, b, c) = (
        env.object("Sub", "a"),
        env.object("Sub", "b"),
        env.object("Sub", "c"),
    );
    let publisher = env.object("Pub", "p");
    assert!(!store.state.has_subscribers(&topic).await.unwrap());

    // Subscriptions commit with their turns; subscribing again replaces.
    for (object, since) in [(&b, 100), (&a, 100), (&c, 500)] {
        let change = Commit {
            subscriptions: vec![
                subscribe(&topic, "old", since),
                subscribe(&topic, "heard", since),
            ],
            ..Commit::default()
        };
        commit(&store, object, change).await;
    }
    assert!(store.state.has_subscribers(&topic).await.unwrap());
    assert_eq!(
        store.state.subscriptions_of(&a).await.unwrap(),
        vec![(topic.clone(), "heard".to_string())]
    );

    // In key order, from after a given one, and only those subscribed by
    // the event's time.
    let heard = |id: &str| (id.to_string(), "heard".to_string());
    assert_eq!(
        subscriber_ids(&store, &topic, None, 400, 10).await,
        vec![heard("a"), heard("b")]
    );
    assert_eq!(
        subscriber_ids(&store, &topic, None, 500, 10).await,
        vec![heard("a"), heard("b"), heard("c")]
    );
    assert_eq!(
        subscriber_ids(&store, &topic, Some(&a), 500, 1).await,
        vec![heard("b")]
    );
    assert_eq!(
        subscriber_ids(&store, &topic, Some(&c), 500, 10).await,
        Vec::<(String, String)>::new()
    );

    // A publish logs its event only for a topic with subscribers.
    let publish = Commit {
        events: vec![
            event(&topic, 1, 1_000),
            event(&quiet, 2, 1_000),
            event(&topic, 3, 1_000),
        ],
        ..Commit::default()
    };
    commit(&store, &publisher, publish).await;
    let chain = Chain {
        topic: topic.clone(),
        publisher: publisher.clone(),
    };
    let quiet_chain = Chain {
        topic: quiet.clone(),
        publisher: publisher.clone(),
    };
    assert_eq!(
        logged_seqs(&store, &chain).await,
        vec![(1, None), (3, None)]
    );
    assert!(logged_seqs(&store, &quiet_chain).await.is_empty());

    // The sweep lists the chain once its events are old enough.
    let waiting = |by: i64| {
        let store = store.clone();
        async move {
            store
                .state
                .chains_waiting(ShardSlice::ALL, by, 10_000)
                .await
                .expect("list waiting chains")
        }
    };
    assert!(!waiting(999).await.contains(&chain));
    assert!(waiting(1_000).await.contains(&chain));
    // A deliverer that touched it keeps it off the sweep until then.
    store
        .state
        .touch_logged_event(&chain, 1, 5_000)
        .await
        .unwrap();
    assert!(!waiting(4_999).await.contains(&chain));
    assert!(waiting(5_000).await.contains(&chain));

    // Progress is recorded on the event; the last step removes it.
    store
        .state
        .event_delivered(&chain, 1, Some(&a))
        .await
        .unwrap();
    assert_eq!(
        logged_seqs(&store, &chain).await,
        vec![(1, Some("a".to_string())), (3, None)]
    );
    store.state.event_delivered(&chain, 1, None).await.unwrap();
    // Progress on an event gone stores nothing.
    store
        .state
        .event_delivered(&chain, 1, Some(&b))
        .await
        .unwrap();
    assert_eq!(logged_seqs(&store, &chain).await, vec![(3, None)]);
    store.state.event_delivered(&chain, 3, None).await.unwrap();
    assert!(logged_seqs(&store, &chain).await.is_empty());
    assert!(!waiting(i64::MAX / 2).await.contains(&chain));

    // Unsubscribing every one leaves the topic without subscribers, and
    // a publish then logs nothing.
    for object in [&a, &b, &c] {
        let change = Commit {
            subscriptions: vec![SubscriptionChange::Unsubscribe {
                topic: topic.clone(),
            }],
            ..Commit::default()
        };
        commit(&store, object, change).await;
    }
    assert!(!store.state.has_subscribers(&topic).await.unwrap());
    assert!(store.state.subscriptions_of(&a).await.unwrap().is_empty());
    let publish = Commit {
        events: vec![event(&topic, 4, 2_000)],
        ..Commit::default()
    };
    commit(&store, &publisher, publish).await;
    assert!(logged_seqs(&store, &chain).await.is_empty());

    // A turn that subscribes and publishes to the same topic logs its event.
    let both = Commit {
        subscriptions: vec![subscribe(&topic, "heard", 3_000)],
        events: vec![event(&topic, 5, 3_000)],
        ..Commit::default()
    };
    commit(&store, &publisher, both).await;
    assert_eq!(logged_seqs(&store, &chain).await, vec![(5, None)]);
}

pub(crate) async fn fenced_commit_subscribes_nothing(store: ClusterStore, env: &Env) {
    let (owner, other) = (env.silo("a"), env.silo("b"));
    let topic = env.name("fenced");
    let subscriber = env.object("SubFence", "s");
    let publisher = env.object("PubFence", "p");
    for object in [&subscriber, &publisher] {
        assert_eq!(
            store.placement.claim(object, &owner).await.expect("claim"),
            owner
        );
    }
    let change = Commit {
        subscriptions: vec![subscribe(&topic, "heard", 0)],
        ..Commit::default()
    };
    match store.state.commit_turn(&subscriber, change, &other).await {
        Err(StorageError::Fenced { .. }) => {}
        other => panic!("a commit by a non-owner: expected fenced, got {other:?}"),
    }
    assert!(!store.state.has_subscribers(&topic).await.unwrap());
    // With a subscriber, a fenced publish logs nothing either.
    let change = Commit {
        subscriptions: vec![subscribe(&topic, "heard", 0)],
        ..Commit::default()
    };
    store
        .state
        .commit_turn(&subscriber, change, &owner)
        .await
        .expect("the owner subscribes");
    let publish = Commit {
        events: vec![event(&topic, 1, 10)],
        ..Commit::default()
    };
    match store.state.commit_turn(&publisher, publish, &other).await {
        Err(StorageError::Fenced { .. }) => {}
        other => panic!("a commit by a non-owner: expected fenced, got {other:?}"),
    }
    let chain = Chain { topic, publisher };
    assert!(logged_seqs(&store, &chain).await.is_empty());
}
