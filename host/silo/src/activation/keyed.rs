//! Keyed turns in an activation: the reply kept under an idempotency key,
//! and an interrupted keyed turn (see `effects::resume`), which runs again
//! before any other turn, is retried within its budget and is forgotten
//! once it has ended.

use rio_protocol::ReplyError;
use tokio::time::Instant;

use super::{Activation, Hook, LiveInstance};
use crate::base::reserved::INTENT_KEY;
use crate::effects::resume::{self, Intent, Interrupted, NOT_RUN, RESUME_ATTEMPTS};
use crate::message::empty_chain;
use crate::storage::Commit;

impl Activation {
    /// A live instance with no unfinished keyed turn: activates the object
    /// if needed, then runs an interrupted keyed turn again if there is
    /// one. While that turn stays unfinished, other messages are refused
    /// `unavailable` (nothing of theirs ran), so that it alone sees the
    /// state its first attempt saw.
    pub(super) async fn ready_for_turn(&mut self) -> Result<(), ReplyError> {
        if self.live.is_none() {
            self.activate().await?;
        }
        if self.interrupted.is_none() {
            return Ok(());
        }
        self.finish_interrupted().await?;
        if self.live.is_none() {
            self.activate().await?;
        }
        match &self.interrupted {
            None => Ok(()),
            Some(interrupted) => {
                Err(self.unfinished(interrupted.attempts, "its intent was loaded again"))
            }
        }
    }

    /// Whether `envelope` runs before this object's interrupted keyed turn
    /// is finished: a call from another interrupted turn's rerun whose
    /// object orders before this one. Reruns waiting on each other's
    /// objects in a circle (each object refusing the others' calls until
    /// its own rerun is done, and each rerun needing the next object's
    /// answer) would otherwise never finish; letting in the calls of the
    /// lower-ordered object's rerun means a rerun only ever waits on the
    /// rerun of a lower-ordered object, which cannot close a circle. The
    /// turn let in sees the state before the rerun and may not call out
    /// (`store_intent_before_calling`); the rerun then sees its writes.
    pub(super) fn lets_in_before_rerun(&self, envelope: &crate::message::Envelope) -> bool {
        // Checked before the object is active (its intent not loaded yet):
        // without an interrupted turn, letting in changes nothing.
        envelope.from_rerun && envelope.caller().is_some_and(|caller| *caller < self.key)
    }

    /// Activates the object if needed, without running its interrupted
    /// turn (see `lets_in_before_rerun`).
    pub(super) async fn ready_without_rerun(&mut self) -> Result<(), ReplyError> {
        if self.live.is_none() {
            self.activate().await?;
        }
        Ok(())
    }

    /// Runs the interrupted keyed turn once more; `Err` while it is still
    /// unfinished. After [`RESUME_ATTEMPTS`] and its time budget (see
    /// `Interrupted::may_give_up`) it is given up (an error in the log):
    /// its calls' effects stand without it.
    pub(super) async fn finish_interrupted(&mut self) -> Result<(), ReplyError> {
        let now = self.ctx.clock.now();
        if let Some(interrupted) = &self.interrupted
            && interrupted.too_soon(now)
        {
            return Err(self.unfinished(interrupted.attempts, "its last attempt was a moment ago"));
        }
        let Some(mut interrupted) = self.interrupted.take() else {
            return Ok(());
        };
        interrupted.last_attempt = Some(now);
        let attempt = interrupted.attempts + 1;
        let intent = interrupted.intent.clone();
        // Committed after all (its commit's answer was lost): nothing to run.
        match self.stored_reply(&intent.key).await {
            Ok(None) => {}
            Ok(Some(_)) => {
                let live = self.live.as_ref();
                if live.is_some_and(|live| live.store.data().intent_stored.is_some()) {
                    self.forget_intent_of_live().await;
                }
                return Ok(());
            }
            Err(error) => {
                self.interrupted = Some(interrupted);
                return Err(error);
            }
        }
        tracing::info!(object = %self.key, key = %intent.key, attempt, "running an interrupted keyed turn again before any other turn");
        let hook = Hook::Handle {
            message_type: intent.message_type.clone(),
            payload: intent.payload.clone(),
            idempotency_key: Some(intent.key.clone()),
        };
        let deadline = Instant::now() + self.ctx.config.turn_deadline;
        self.rerunning = true;
        let result = self.turn(hook, &empty_chain(), deadline).await;
        self.rerunning = false;
        let error = match result {
            Ok(_) => {
                tracing::info!(object = %self.key, key = %intent.key, "interrupted keyed turn finished");
                return Ok(());
            }
            Err(error) => error,
        };
        let (after, budget) = (self.ctx.clock.now(), self.resume_budget());
        let Some(again) = self.interrupted.as_mut() else {
            // It ended for good (its intent is deleted), or the object moved.
            tracing::info!(object = %self.key, key = %intent.key, %error, "interrupted keyed turn ended with an error");
            return Ok(());
        };
        // The failed attempt left a fresh record: it keeps the first's
        // time and the count.
        again.attempts = attempt;
        again.since = interrupted.since;
        again.last_attempt = Some(now);
        if !again.may_give_up(after, budget) {
            return Err(self.unfinished(attempt, &error.to_string()));
        }
        tracing::error!(object = %self.key, key = %intent.key, attempt, %error, "gave up an interrupted keyed turn: the effects of its calls may stand without its own");
        self.interrupted = None;
        self.forget_intent_of_live().await;
        Ok(())
    }

    /// How long an interrupted turn is retried at least: a cluster's failure
    /// detection (an owner killed and not yet declared dead refuses the
    /// turn's calls meanwhile) plus two turn deadlines.
    fn resume_budget(&self) -> std::time::Duration {
        let detection = self
            .ctx
            .cluster
            .as_ref()
            .map_or(std::time::Duration::ZERO, |cluster| {
                let config = &cluster.config;
                (config.probe_interval + config.probe_timeout) * (config.missed_probes + 1)
            });
        detection + 2 * self.ctx.config.turn_deadline
    }

    /// What a message hears while the interrupted turn, run `attempts`
    /// times, is unfinished.
    pub(super) fn unfinished(&self, attempts: u32, why: &str) -> ReplyError {
        ReplyError::Unavailable(format!(
            "{} is finishing an interrupted keyed turn first (attempt {attempts}, at least {RESUME_ATTEMPTS} are made: {why}); {NOT_RUN}, retry it",
            self.key
        ))
    }

    /// A keyed turn failed after its intent was stored: it either ended for
    /// good (its intent is deleted) or runs again before the next turn.
    pub(super) async fn after_failed_keyed_turn(
        &mut self,
        live: &mut LiveInstance,
        error: &ReplyError,
    ) {
        let data = live.store.data_mut();
        let Some(intent) = data.turn.intent.take() else {
            return;
        };
        if data.intent_stored.as_ref() != Some(&intent.key) || self.moved_away {
            // It never called out, or the object's new owner finishes it.
            return;
        }
        // A first attempt whose every call was refused unrun did nothing
        // anywhere: it ends, rather than make this object refuse others
        // until a rerun (which, met by the same refusals, spread).
        let nothing_ran = !self.rerunning && !data.turn.calls_may_have_run;
        let ends = nothing_ran
            || match self.rerunning {
                true => resume::ends_a_rerun(error),
                false => resume::ends_the_turn(error),
            };
        if ends {
            if self.forget_intent().await {
                live.store.data_mut().intent_stored = None;
            }
        } else {
            // The failed turn counts as the last attempt: the first rerun
            // waits the spacing too.
            let now = self.ctx.clock.now();
            let mut interrupted = Interrupted::new(intent, now);
            interrupted.last_attempt = Some(now);
            self.interrupted = Some(interrupted);
        }
    }

    /// Deletes the object's stored intent; false if that failed: the
    /// intent stays, and the next activation runs its turn again (which
    /// ends the same way).
    pub(super) async fn forget_intent(&mut self) -> bool {
        let commit = Commit {
            writes: vec![(INTENT_KEY.to_string(), None)],
            ..Commit::default()
        };
        match self.ctx.effects.committer.commit(&self.key, commit).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(object = %self.key, %error, "cannot delete an ended keyed turn's intent; the object's next activation runs it again");
                false
            }
        }
    }

    /// Deletes the stored intent, and notes it on the live instance.
    async fn forget_intent_of_live(&mut self) {
        if self.forget_intent().await
            && let Some(live) = self.live.as_mut()
        {
            live.store.data_mut().intent_stored = None;
        }
    }

    /// The reply committed under idempotency key `key`: remembered here, or
    /// read from the store (an earlier activation or another silo may have
    /// committed it).
    pub(super) async fn stored_reply(&mut self, key: &str) -> Result<Option<Vec<u8>>, ReplyError> {
        let retention = self.ctx.config.idempotency_retention;
        if let Some(reply) = self
            .recent_replies
            .get(key, retention, self.ctx.clock.now())
        {
            return Ok(Some(reply));
        }
        self.ctx
            .effects
            .store()
            .stored_reply(&self.key, key)
            .await
            .map_err(|error| {
                ReplyError::Internal(format!(
                    "cannot read the stored replies of {}: {error}",
                    self.key
                ))
            })
    }

    /// An intent loaded with the object's state: its turn runs again before
    /// any other (keeping the count of attempts this activation made).
    pub(super) fn loaded_intent(&mut self, bytes: &[u8]) -> Option<Intent> {
        let Some(intent) = Intent::decode(bytes) else {
            tracing::warn!(object = %self.key, "dropping a stored keyed-turn intent that cannot be read");
            return None;
        };
        let mut loaded = Interrupted::new(intent.clone(), self.ctx.clock.now());
        if let Some(earlier) = self.interrupted.take()
            && earlier.intent.key == intent.key
        {
            loaded.attempts = earlier.attempts;
            loaded.since = earlier.since;
            loaded.last_attempt = earlier.last_attempt;
        }
        self.interrupted = Some(loaded);
        Some(intent)
    }
}
