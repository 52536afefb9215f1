//! Interrupted keyed turns: a turn run under an idempotency key that calls
//! other objects first stores its request (an *intent*), so that if it does
//! not commit (its silo died, a call's outcome was unknown, it timed out),
//! the object runs it again, under the same key, before any other turn.
//!
//! Why: derived keys (see `idempotency`) make a retried turn's calls answer
//! their stored replies only if the retry makes the same calls. A retry
//! that runs after other turns changed the object's state may decide
//! otherwise (a transfer refused for lack of funds after its deposit was
//! applied), and the deposit would stand alone. Run before anything else,
//! the retry sees the state the first attempt saw, makes the same calls
//! (when the guest decides only from its state, its message and the
//! replies it gets), gets their stored replies and commits what the first
//! attempt would have.
//!
//! The intent is a state entry under `rio:interrupted-turn`
//! (`base::reserved::INTENT_KEY`), which guests cannot
//! read or write: it is written (fenced, like any commit) just before the
//! turn's first call, and deleted in the commit that stores the turn's
//! writes and reply, so it exists exactly while the turn's calls may have
//! taken effect without the turn. It is loaded with the object's state, so
//! it costs an activation nothing; keyed turns that make no call never
//! write one. The wake-up pass (`wake`) activates the objects that hold
//! one after their silo died, so that each finishes its turn.

use std::sync::Arc;
use std::time::Duration;

use rio_protocol::ReplyError;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The fewest times an activation runs an interrupted turn again before it
/// may give up on it (logged as an error) and take other turns. Each
/// attempt is made when a message arrives; the message is refused
/// `unavailable` while the turn is still unfinished, so callers back off
/// and retry.
pub(crate) const RESUME_ATTEMPTS: u32 = 10;

/// The least time between two attempts: a burst of messages must not spend
/// the attempts in a moment, before the cause (a silo not yet declared
/// dead, a store away) had time to pass. A message that comes sooner is
/// refused `unavailable` without an attempt.
pub(crate) const RESUME_SPACING: Duration = Duration::from_millis(200);

/// A keyed turn's request, as stored before its first call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Intent {
    /// The idempotency key the turn ran under.
    #[serde(with = "shared_str")]
    pub(crate) key: Arc<str>,
    pub(crate) message_type: String,
    #[serde(with = "serde_bytes")]
    pub(crate) payload: Vec<u8>,
}

impl Intent {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        ciborium::into_writer(self, &mut bytes).expect("CBOR into a Vec cannot fail");
        bytes
    }

    /// `None` if the stored bytes are not an intent (written by a newer
    /// silo, or damaged); the caller logs and drops them.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Intent> {
        ciborium::from_reader(bytes).ok()
    }
}

/// Serde for `Arc<str>` (serde's `rc` feature is not enabled).
mod shared_str {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(text: &Arc<str>, to: S) -> Result<S::Ok, S::Error> {
        to.serialize_str(text)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<Arc<str>, D::Error> {
        String::deserialize(from).map(Arc::from)
    }
}

/// An activation's unfinished keyed turn, how often it was run again, and
/// since when it has been unfinished.
#[derive(Debug)]
pub(crate) struct Interrupted {
    pub(crate) intent: Intent,
    pub(crate) attempts: u32,
    /// When this silo first found it unfinished.
    pub(crate) since: Instant,
    /// When it was last run again.
    pub(crate) last_attempt: Option<Instant>,
}

impl Interrupted {
    /// A turn found unfinished at `now`.
    pub(crate) fn new(intent: Intent, now: Instant) -> Interrupted {
        Interrupted {
            intent,
            attempts: 0,
            since: now,
            last_attempt: None,
        }
    }

    /// Whether it may be given up after a failed attempt at `now`: only
    /// once it was tried `RESUME_ATTEMPTS` times *and* for `budget` (the
    /// failure detection of a cluster plus a turn's deadline, at least),
    /// so neither a burst of messages nor a fast restart can use it up.
    pub(crate) fn may_give_up(&self, now: Instant, budget: Duration) -> bool {
        self.attempts >= RESUME_ATTEMPTS && now.saturating_duration_since(self.since) >= budget
    }

    /// Whether an attempt at `now` would come too soon after the last one.
    pub(crate) fn too_soon(&self, now: Instant) -> bool {
        self.last_attempt
            .is_some_and(|last| now.saturating_duration_since(last) < RESUME_SPACING)
    }
}

/// Whether a keyed turn that failed with `error` after its intent was
/// stored has ended for good (its intent is deleted) or must run again
/// before the object's next turn. It runs again exactly when its caller
/// was told "it may have run": `unavailable`, `timeout` or `internal`,
/// its own or a call's passed on by the guest (the SDKs keep the kind), so
/// a caller that retries gets the rerun's reply. Everything else told the
/// caller that the turn did not happen (the guest's own errors, traps,
/// `deadlock`, `overloaded`), so it must not happen later either.
/// What a refusal that ran nothing of a message says (an object finishing
/// an interrupted keyed turn first); [`surely_not_run`] reads it back, also
/// from another silo's answer.
pub(crate) const NOT_RUN: &str = "nothing of this message ran";

/// Whether a call answered `error` surely ran nothing at the callee: it
/// was refused before it started (a deadlock or cycle, a full mailbox, an
/// unknown type or message, a bad request, an object finishing an
/// interrupted turn first). A keyed turn whose every call was such needs no
/// rerun when it fails: nothing of it happened anywhere.
pub(crate) fn surely_not_run(error: &ReplyError) -> bool {
    match error {
        ReplyError::Deadlock(_)
        | ReplyError::Cycle(_)
        | ReplyError::Overloaded(_)
        | ReplyError::UnknownType { .. }
        | ReplyError::UnknownMessage { .. }
        | ReplyError::BadRequest(_)
        | ReplyError::InvalidComponent(_)
        | ReplyError::Unauthorized(_) => true,
        ReplyError::Unavailable(message) => message.contains(NOT_RUN),
        _ => false,
    }
}

pub(crate) fn ends_the_turn(error: &ReplyError) -> bool {
    !matches!(error.kind(), "unavailable" | "timeout" | "internal")
}

/// As [`ends_the_turn`], for a turn run again: its caller was already told
/// "it may have run", so only what the guest decides ends it. A `deadlock`
/// or `overloaded` met by the rerun's calls leaves it unfinished: ended
/// there, a later retry would run it after other turns, the very case
/// the rerun exists to prevent.
pub(crate) fn ends_a_rerun(error: &ReplyError) -> bool {
    ends_the_turn(error) && !matches!(error.kind(), "deadlock" | "overloaded")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_turn_is_given_up_only_after_its_attempts_and_its_time() {
        let start = Instant::now();
        let intent = Intent {
            key: "k".into(),
            message_type: "pay".into(),
            payload: vec![],
        };
        let budget = Duration::from_secs(30);
        let mut interrupted = Interrupted::new(intent, start);
        interrupted.attempts = RESUME_ATTEMPTS;
        assert!(
            !interrupted.may_give_up(start + Duration::from_millis(460), budget),
            "a burst"
        );
        assert!(interrupted.may_give_up(start + budget, budget));
        interrupted.attempts = 3;
        assert!(
            !interrupted.may_give_up(start + budget * 10, budget),
            "too few attempts"
        );

        interrupted.last_attempt = Some(start);
        assert!(interrupted.too_soon(start + RESUME_SPACING / 2));
        assert!(!interrupted.too_soon(start + RESUME_SPACING));
    }

    #[test]
    fn an_intent_survives_encoding_and_garbage_is_not_one() {
        let intent = Intent {
            key: "k1".into(),
            message_type: "transfer".into(),
            payload: vec![0xa1, 0x61, 0x61, 0x01],
        };
        assert_eq!(Intent::decode(&intent.encode()), Some(intent));
        assert_eq!(Intent::decode(b"\xff\x00 not cbor"), None);
    }

    #[test]
    fn a_turn_runs_again_only_if_its_caller_was_told_it_may_have_run() {
        let guest = |kind: &str| ReplyError::Guest {
            kind: kind.into(),
            message: String::new(),
        };
        assert!(ends_the_turn(&guest("insufficient-funds")));
        assert!(ends_the_turn(&ReplyError::Trap("t".into())));
        // "Nothing ran": the caller may not retry, so it must not run later.
        for kind in ["deadlock", "overloaded"] {
            assert!(ends_the_turn(&guest(kind)), "{kind}");
        }
        assert!(ends_the_turn(&ReplyError::Deadlock("d".into())));
        for kind in ["unavailable", "timeout", "internal"] {
            assert!(!ends_the_turn(&guest(kind)), "{kind}");
        }
        assert!(!ends_the_turn(&ReplyError::Timeout("t".into())));
        assert!(!ends_the_turn(&ReplyError::Unavailable("u".into())));
        assert!(!ends_the_turn(&ReplyError::Internal("i".into())));
        // A rerun's caller already heard "may have run".
        assert!(!ends_a_rerun(&guest("deadlock")));
        assert!(!ends_a_rerun(&ReplyError::Overloaded("o".into())));
        assert!(ends_a_rerun(&guest("insufficient-funds")));
        assert!(ends_a_rerun(&ReplyError::Trap("t".into())));
    }
}
