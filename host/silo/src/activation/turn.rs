//! One turn of an activation: a call into the guest within its deadline,
//! then its commit (writes, keyed reply, one-way sends) as the object's
//! owner, or its discard.

use std::sync::Arc;
use std::task::Poll;

use rio_protocol::ReplyError;
use tokio::time::Instant;

use super::traps::{classify_trap, cut};
use super::{Activation, Hook, LiveInstance, TurnFailure};
use crate::base::clock::now_ms;
use crate::base::reserved::{HAS_SENT_KEY, INTENT_KEY};
use crate::effects::committer::CommitFailure;
use crate::effects::resume::Intent;
use crate::events;
use crate::host::TurnScope;
use crate::host::bindings::Export;
use crate::message::CallChain;
use crate::storage::{Commit, ReplyRecord};

/// Drops what a failed turn wrote and sent: none of it happened.
fn discard(live: &mut LiveInstance) {
    let data = live.store.data_mut();
    data.state.discard_pending();
    data.turn.sends.clear();
    data.turn.timers.clear();
    data.turn.deactivate = false;
    data.turn.reminders.clear();
    data.turn.published.clear();
    data.turn.subscriptions.clear();
}

impl Activation {
    /// Runs one call into the guest and commits its writes if it succeeded.
    /// `Ok(None)` is a hook's success (hooks reply nothing).
    pub(super) async fn turn(
        &mut self,
        hook: Hook,
        incoming_chain: &CallChain,
        caller_deadline: Instant,
    ) -> Result<Option<Vec<u8>>, ReplyError> {
        // The instance is out of `self` while the turn runs, and back only
        // if it survived: a lost one cannot be reached by mistake.
        let Some(mut live) = self.live.take() else {
            let message = format!("{} has no live instance to run a turn on", self.key);
            return Err(ReplyError::Internal(message));
        };
        let deadline = caller_deadline.min(Instant::now() + self.ctx.config.turn_deadline);
        let started = Instant::now();
        let handled = match &hook {
            Hook::Handle { message_type, .. } => Some(message_type.clone()),
            Hook::Activate | Hook::Deactivate => None,
        };
        let outcome = self
            .call_guest(&mut live, hook, incoming_chain, deadline)
            .await;
        if let Some(message_type) = handled {
            let result = outcome
                .as_ref()
                .map(|_| ())
                .map_err(|failure| &failure.error);
            self.ctx.counters.turns.record(
                &self.key.service_type,
                message_type,
                result,
                started.elapsed(),
            );
        }
        match outcome {
            Ok(reply) => {
                self.live = Some(live);
                Ok(reply)
            }
            Err(TurnFailure {
                error,
                instance_lost,
            }) => {
                self.after_failed_keyed_turn(&mut live, &error).await;
                if !instance_lost {
                    self.live = Some(live);
                }
                Err(error)
            }
        }
    }

    async fn call_guest(
        &mut self,
        live: &mut LiveInstance,
        hook: Hook,
        incoming_chain: &CallChain,
        deadline: Instant,
    ) -> Result<Option<Vec<u8>>, TurnFailure> {
        let data = live.store.data_mut();
        let intent = match &hook {
            Hook::Handle {
                message_type,
                payload,
                idempotency_key: Some(key),
            } => Some(Intent {
                key: key.clone(),
                message_type: message_type.clone(),
                payload: payload.clone(),
            }),
            Hook::Handle { .. } | Hook::Activate | Hook::Deactivate => None,
        };
        data.turn = TurnScope::new(incoming_chain.clone(), deadline, intent);
        data.turn.rerun = self.rerunning;
        data.stderr.clear_recent();

        let object_id = &*self.key.object_id;
        let (export, message_type) = match &hook {
            Hook::Handle {
                message_type,
                payload,
                ..
            } => (
                Export::Handle {
                    message_type,
                    payload,
                },
                Some(message_type.as_str()),
            ),
            Hook::Activate => (Export::OnActivate, None),
            Hook::Deactivate => (Export::OnDeactivate, None),
        };
        let call = live.handler.call(&mut live.store, object_id, export);
        // The wall-clock bound: a guest waiting in WASI or on a call is
        // stopped here; one running code is stopped by the epoch callback.
        let called = match within(deadline, call).await {
            Some(called) => called,
            None => {
                return Err(TurnFailure {
                    error: self.timed_out(),
                    instance_lost: true,
                });
            }
        };
        match called {
            Ok(Ok(Some(reply))) if self.reply_limit(&hook, reply.len()).is_some() => {
                discard(live);
                let limits = &self.ctx.config.limits;
                let (name, limit) = self
                    .reply_limit(&hook, reply.len())
                    .unwrap_or(("payload-bytes", limits.payload_bytes));
                let cause = format!(
                    "was stopped: its reply of {} bytes is over the silo's limit `{name}` of {limit} bytes; the turn's writes were discarded",
                    reply.len()
                );
                tracing::warn!(object = %self.key, %cause, "reply refused");
                Err(TurnFailure {
                    error: ReplyError::Trap(format!("{} {cause}", self.key)),
                    instance_lost: false,
                })
            }
            Ok(Ok(reply)) => {
                let keyed_reply = match (&hook, &reply) {
                    (
                        Hook::Handle {
                            idempotency_key: Some(key),
                            ..
                        },
                        Some(reply),
                    ) => Some((key.clone(), reply.clone())),
                    _ => None,
                };
                let is_handler = matches!(hook, Hook::Handle { .. });
                self.commit(live, keyed_reply, is_handler).await?;
                self.committed_lifecycle(live, &hook);
                Ok(reply)
            }
            Ok(Err((kind, message))) => {
                discard(live);
                let callee_unknown_message =
                    live.store.data_mut().turn.callee_unknown_message.take();
                Err(TurnFailure {
                    error: self.guest_error(kind, message, message_type, callee_unknown_message),
                    instance_lost: false,
                })
            }
            Err(error) => {
                let panic = live.store.data().stderr.panic_message();
                Err(TurnFailure {
                    error: classify_trap(&self.key, error, panic),
                    instance_lost: true,
                })
            }
        }
    }

    /// What a committed turn asked of its object's lifecycle takes effect:
    /// its timers change, and it may have asked to be deactivated. Both are
    /// moot in `on-deactivate`, after which the instance ends.
    fn committed_lifecycle(&mut self, live: &mut LiveInstance, hook: &Hook) {
        let data = live.store.data_mut();
        if matches!(hook, Hook::Deactivate) {
            data.turn.timers.clear();
            return;
        }
        let now = self.ctx.clock.now();
        data.timers.apply(&mut data.turn.timers, now);
        self.deactivate_requested |= data.turn.deactivate;
    }

    /// The limit a reply of `size` bytes to `hook` is over, if any: a keyed
    /// reply is stored for the retention period, so it has a lower one.
    fn reply_limit(&self, hook: &Hook, size: usize) -> Option<(&'static str, usize)> {
        let limits = &self.ctx.config.limits;
        let keyed = matches!(
            hook,
            Hook::Handle {
                idempotency_key: Some(_),
                ..
            }
        );
        if size > limits.payload_bytes {
            Some(("payload-bytes", limits.payload_bytes))
        } else if keyed && size > limits.keyed_reply_bytes {
            Some(("keyed-reply-bytes", limits.keyed_reply_bytes))
        } else {
            None
        }
    }

    pub(super) fn timed_out(&self) -> ReplyError {
        tracing::warn!(object = %self.key, "turn stopped at its deadline");
        ReplyError::Timeout(format!(
            "{} ran past its deadline and was stopped; its writes were discarded",
            self.key
        ))
    }

    /// What the caller sees of the guest's own error. `unknown-message` is the
    /// object's own unless it is, word for word, what a callee answered.
    pub(super) fn guest_error(
        &self,
        kind: String,
        message: String,
        message_type: Option<&str>,
        callee_unknown_message: Option<ReplyError>,
    ) -> ReplyError {
        let (kind, message) = (cut(kind), cut(message));
        if kind != "unknown-message" {
            return ReplyError::Guest { kind, message };
        }
        match (callee_unknown_message, message_type) {
            (Some(callee), _) if callee.to_string() == message => callee,
            (_, Some(message_type)) => ReplyError::UnknownMessage {
                service_type: self.key.service_type.to_string(),
                message_type: message_type.to_string(),
            },
            (_, None) => ReplyError::Guest { kind, message },
        }
    }

    /// Makes the turn's writes durable. On failure the instance is dropped:
    /// its guest-side memory may assume writes that never happened. The
    /// store accepts the writes only from the object's owner (fencing).
    /// A turn run under an idempotency key commits its reply with its
    /// writes, even when it wrote nothing. A handler's commit deletes a
    /// stored intent: no handler runs while another's is unfinished, so it
    /// is this turn's own (or one that cannot be read).
    async fn commit(
        &mut self,
        live: &mut LiveInstance,
        keyed_reply: Option<(Arc<str>, Vec<u8>)>,
        is_handler: bool,
    ) -> Result<(), TurnFailure> {
        let data = live.store.data_mut();
        // The intent goes with the commit of its own turn (first attempt or
        // rerun), never with that of a turn let in before the rerun; an
        // unreadable one ("") with any handler's.
        let clears_intent = is_handler
            && match &data.intent_stored {
                Some(stored) => stored.is_empty() || data.turn.key.as_ref() == Some(stored),
                None => false,
            };
        if !data.state.has_pending()
            && keyed_reply.is_none()
            && data.turn.sends.is_empty()
            && data.turn.reminders.is_empty()
            && data.turn.published.is_empty()
            && data.turn.subscriptions.is_empty()
            && !clears_intent
        {
            return Ok(());
        }
        let now_ms = now_ms();
        // A reminder's fire moves it on first, so that the turn's own
        // setting of the same name (a session extended) wins.
        let mut reminders: Vec<_> = data
            .turn
            .fired
            .iter()
            .map(|fire| fire.advance(now_ms))
            .collect();
        reminders.append(&mut data.turn.reminders);
        let mut last_published = self.published_seq;
        let published = std::mem::take(&mut data.turn.published);
        let events = events::number(&self.key, published, &mut last_published, now_ms);
        let subscriptions = std::mem::take(&mut data.turn.subscriptions);
        let sends = std::mem::take(&mut data.turn.sends);
        // The seqs go on from the stored outbox's; opening it also starts
        // delivering what it still holds.
        if !sends.is_empty()
            && let Err(error) = self.open_outbox().await
        {
            return Err(TurnFailure {
                error,
                instance_lost: true,
            });
        }
        let outbox = match &self.outbox {
            Some(outbox) if !sends.is_empty() => outbox.number(sends, now_ms),
            _ => Vec::new(),
        };
        let data = live.store.data_mut();
        let mut writes = data.state.pending_writes();
        if clears_intent {
            writes.push((INTENT_KEY.to_string(), None));
        }
        if !events.is_empty() {
            let seq = events::encode_seq(last_published);
            writes.push((events::SEQ_KEY.to_string(), Some(seq)));
        }
        let marks_sender = !outbox.is_empty() && !self.has_sent;
        if marks_sender {
            writes.push((HAS_SENT_KEY.to_string(), Some(Vec::new())));
        }
        let commit = Commit {
            writes,
            reply: keyed_reply.map(|(key, reply)| ReplyRecord {
                key: key.to_string(),
                reply,
                stored_at_ms: now_ms,
            }),
            outbox,
            reminders,
            subscriptions,
            events: events.iter().map(events::for_log).collect(),
        };
        let topics_changed: Vec<String> = commit
            .subscriptions
            .iter()
            .map(|change| change.topic().to_string())
            .collect();
        self.commit_as_owner(commit)
            .await
            .map_err(|error| TurnFailure {
                error,
                instance_lost: true,
            })?;
        let data = live.store.data_mut();
        data.state.apply_pending();
        if clears_intent {
            data.intent_stored = None;
        }
        self.has_sent |= marks_sender;
        // Only now do the events exist: after the commit that numbered them.
        self.published_seq = last_published;
        for topic in &topics_changed {
            self.ctx.events.objects.subscribed(topic);
        }
        self.ctx.events.committed(&self.key, events);
        Ok(())
    }

    /// Stores `commit` if this silo owns the object (the store refuses a
    /// commit from any other: fencing), then remembers its reply and hands
    /// its messages to the outbox. A refusal means the object moved: this
    /// activation retires and stops delivering.
    pub(super) async fn commit_as_owner(&mut self, commit: Commit) -> Result<(), ReplyError> {
        let sent = commit.outbox.clone();
        let keyed_reply = commit
            .reply
            .as_ref()
            .map(|record| (Arc::<str>::from(record.key.as_str()), record.reply.clone()));
        let started = Instant::now();
        let result = self.ctx.effects.committer.commit(&self.key, commit).await;
        self.ctx
            .counters
            .turns
            .record_commit(result.is_ok(), started.elapsed());
        let counters = &self.ctx.counters;
        let counted = match result {
            Ok(()) => &counters.commits_total,
            Err(_) => &counters.commit_failures_total,
        };
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match result {
            Ok(()) => {
                if let Some((key, reply)) = keyed_reply {
                    self.recent_replies.insert(key, reply, self.ctx.clock.now());
                }
                if let Some(outbox) = &mut self.outbox {
                    outbox.committed(sent);
                }
                Ok(())
            }
            Err(failure @ CommitFailure::Moved) => {
                self.moved_away = true;
                if let Some(outbox) = &self.outbox {
                    outbox.stop();
                }
                tracing::warn!(object = %self.key, "commit refused: the object moved to another silo; turn discarded");
                Err(self.turn_discarded(failure))
            }
            Err(failure @ CommitFailure::NoIdentity(_)) => Err(self.turn_discarded(failure)),
            Err(failure @ CommitFailure::Store(_)) => {
                tracing::error!(object = %self.key, error = %failure, "commit failed; turn discarded");
                // The commit may have been stored after all (its answer
                // was lost): the outbox is loaded again with the next
                // instance, so no seq is handed out twice.
                self.outbox = None;
                Err(self.turn_discarded(failure))
            }
        }
    }

    /// What the caller of a turn whose commit failed hears.
    pub(super) fn turn_discarded(&self, failure: CommitFailure) -> ReplyError {
        let key = &self.key;
        failure.reply(
            key,
            "the turn's writes were discarded",
            &format!("commit the state of {key}"),
        )
    }
}

/// Runs `future` until `deadline`, `None` if it had not finished by then.
/// Like `tokio::time::timeout_at`, except that a future done at its first
/// poll (most turns: the guest runs to the end without waiting) never
/// registers a timer, which would cost every turn a timer-wheel update.
pub(super) async fn within<F: Future>(deadline: Instant, future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let first = std::future::poll_fn(|context| Poll::Ready(future.as_mut().poll(context))).await;
    match first {
        Poll::Ready(output) => Some(output),
        Poll::Pending => tokio::time::timeout_at(deadline, future).await.ok(),
    }
}
