//! The conformance cases of reminders: what a turn's commit sets, cancels
//! and advances, the scan by due time and shard, and a fenced commit that
//! sets nothing.

use rio_silo::ObjectKey;
use rio_silo::storage::reminders::{ShardSlice, shard_of};
use rio_silo::storage::{ClusterStore, Commit, Missed, Reminder, ReminderChange, StorageError};

use crate::backends::Env;

fn reminder(due_ms: i64, every_ms: Option<i64>, missed: Missed) -> Reminder {
    Reminder {
        due_ms,
        every_ms,
        missed,
        message_type: "expire".into(),
        payload: vec![1, 2, 3],
    }
}

fn set(name: &str, reminder: Reminder) -> ReminderChange {
    ReminderChange::Set {
        name: name.into(),
        reminder,
    }
}

async fn commit_changes(store: &ClusterStore, object: &ObjectKey, changes: Vec<ReminderChange>) {
    let owner = store
        .placement
        .claim(object, &crate::writer())
        .await
        .expect("claim");
    let commit = Commit {
        reminders: changes,
        ..Commit::default()
    };
    store
        .state
        .commit_turn(object, commit, &owner)
        .await
        .unwrap_or_else(|error| panic!("commit to {object}: {error}"));
}

async fn listed(store: &ClusterStore, object: &ObjectKey) -> Vec<(String, Reminder)> {
    store
        .state
        .reminders_of(object)
        .await
        .expect("list reminders")
}

/// The names due by `due_by_ms` in `slice` among `objects`.
async fn due_names(
    store: &ClusterStore,
    slice: ShardSlice,
    from_ms: i64,
    due_by_ms: i64,
    objects: &[&ObjectKey],
) -> Vec<String> {
    let due = store
        .state
        .due_reminders(slice, from_ms, due_by_ms, 0, 10_000)
        .await
        .expect("scan");
    let mut names: Vec<String> = due
        .into_iter()
        .filter(|due| objects.contains(&&due.object))
        .map(|due| {
            format!(
                "{}/{}@{}",
                due.object.object_id, due.name, due.reminder.due_ms
            )
        })
        .collect();
    names.sort();
    names
}

pub(crate) async fn reminders(store: ClusterStore, env: &Env) {
    let object = env.object("Remind", "o");
    // In a past no other case uses, so the scan's range holds only ours.
    let base = -1_000_000 - (crate::backends::now_ms() % 1_000_000) * 10;
    commit_changes(
        &store,
        &object,
        vec![
            set("a", reminder(base + 1_000, None, Missed::Skip)),
            set("b", reminder(base + 2_000, Some(500), Missed::FireOnce)),
            set("c", reminder(base + 1_500, None, Missed::Skip)),
            ReminderChange::Cancel { name: "c".into() },
        ],
    )
    .await;
    assert_eq!(
        listed(&store, &object).await,
        vec![
            ("a".to_string(), reminder(base + 1_000, None, Missed::Skip)),
            (
                "b".to_string(),
                reminder(base + 2_000, Some(500), Missed::FireOnce)
            ),
        ]
    );
    let objects = [&object];
    assert_eq!(
        due_names(&store, ShardSlice::ALL, base, base + 1_500, &objects).await,
        [format!("o/a@{}", base + 1_000)]
    );
    assert_eq!(
        due_names(
            &store,
            ShardSlice::ALL,
            base + 1_001,
            base + 2_000,
            &objects
        )
        .await,
        [format!("o/b@{}", base + 2_000)],
        "the scan starts at `from_ms`"
    );
    // Pages by offset, ties in one order: together they list each once.
    let mut paged = Vec::new();
    for offset in 0..3 {
        let page = store
            .state
            .due_reminders(ShardSlice::ALL, base, base + 2_000, offset, 1)
            .await
            .expect("a page");
        paged.extend(page.into_iter().map(|due| due.name));
    }
    assert_eq!(paged, ["a", "b"], "one per page, then none");

    // An advance for another due time changes nothing; the right one ends
    // a one-shot reminder and moves a periodic one.
    let advance = |name: &str, fired: i64, next: Option<i64>| ReminderChange::Advance {
        name: name.into(),
        fired_due_ms: fired,
        next_due_ms: next,
    };
    commit_changes(&store, &object, vec![advance("a", base + 999, None)]).await;
    assert_eq!(listed(&store, &object).await.len(), 2);
    commit_changes(&store, &object, vec![advance("a", base + 1_000, None)]).await;
    store
        .state
        .advance_reminder(&object, "b", base + 2_000, Some(base + 2_500))
        .await
        .expect("advance outside a turn");
    assert_eq!(
        listed(&store, &object).await,
        vec![(
            "b".to_string(),
            reminder(base + 2_500, Some(500), Missed::FireOnce)
        )]
    );
    // Replaced meanwhile: a late advance of the old time leaves it.
    commit_changes(
        &store,
        &object,
        vec![set("b", reminder(base + 7_000, None, Missed::Skip))],
    )
    .await;
    store
        .state
        .advance_reminder(&object, "b", base + 2_500, Some(base + 3_000))
        .await
        .expect("stale advance");
    assert_eq!(
        listed(&store, &object).await,
        vec![("b".to_string(), reminder(base + 7_000, None, Missed::Skip))]
    );

    // Divided among three silos, each reminder is scanned by exactly one.
    let many: Vec<ObjectKey> = (0..12)
        .map(|n| env.object("Remind", &format!("m{n}")))
        .collect();
    for object in &many {
        commit_changes(
            &store,
            object,
            vec![set("t", reminder(base + 100, None, Missed::Skip))],
        )
        .await;
    }
    let refs: Vec<&ObjectKey> = many.iter().collect();
    let mut seen = Vec::new();
    for index in 0..3 {
        let slice = ShardSlice { index, count: 3 };
        let names = due_names(&store, slice, base, base + 100, &refs).await;
        for object in &many {
            let expected = slice.holds(shard_of(object));
            let found = names.contains(&format!("{}/t@{}", object.object_id, base + 100));
            assert_eq!(found, expected, "{object} in slice {index}");
        }
        seen.extend(names);
    }
    assert_eq!(seen.len(), many.len());
    for object in &many {
        commit_changes(
            &store,
            object,
            vec![ReminderChange::Cancel { name: "t".into() }],
        )
        .await;
    }
    assert!(
        due_names(&store, ShardSlice::ALL, base, base + 100, &refs)
            .await
            .is_empty()
    );
}

pub(crate) async fn fenced_commit_sets_no_reminder(store: ClusterStore, env: &Env) {
    let (a, b) = (env.silo("a"), env.silo("b"));
    let object = env.object("RemindFence", "x");
    assert_eq!(store.placement.claim(&object, &a).await.expect("claim"), a);
    let commit = Commit {
        reminders: vec![set("r", reminder(0, None, Missed::Skip))],
        ..Commit::default()
    };
    match store.state.commit_turn(&object, commit, &b).await {
        Err(StorageError::Fenced { .. }) => {}
        other => panic!("a commit by a non-owner: expected fenced, got {other:?}"),
    }
    assert!(listed(&store, &object).await.is_empty());
}
