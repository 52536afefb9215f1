//! One client connection's shared side: the writer its replies go through
//! and the requests it has in flight.
//!
//! Each request read from a connection gets its own [`ConnectionSink`]; the
//! request counts as in flight until that sink is dropped, answered or not,
//! so the connection's reader can bound the work one client has queued and
//! can wait for the replies still owed before it closes.
//!
//! Replies are bounded in bytes as well as in number: a reply produced while
//! more than the connection's unread-reply limit waits unsent is not queued
//! (its caller gets `unavailable`, which says the call ran), so a peer that
//! asks for many big replies and reads none makes the silo hold at most the
//! limit plus one reply.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rio_protocol::{FrameWriter, ReplyError, Response, ServerFrame, encode_frame};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::observe::ConnectionCounters;

/// What the reader and the repliers of one connection share.
pub(crate) struct Connection {
    writer: Arc<FrameWriter>,
    /// Reply bytes that may wait unsent before further replies are dropped.
    max_unsent: usize,
    /// Where dropped replies are counted.
    counters: Arc<ConnectionCounters>,
    in_flight: AtomicUsize,
    /// A recent reply's size, decaying with each smaller one: the reader
    /// reads a request only while the replies owed, at this size each,
    /// would fit the unread limit, so a client that asks for big replies has
    /// few in flight and replies are rarely dropped.
    reply_estimate: AtomicUsize,
    /// Woken (all waiters) when a request stops being in flight, while the
    /// reader waits for that (`reader_waits`), so a reply costs no extra
    /// lock otherwise.
    replied: Notify,
    reader_waits: AtomicBool,
    /// Subscriptions the connection has open: a subscriber that asks
    /// nothing more is waiting for events, not idle.
    subscriptions: AtomicUsize,
}

/// How a wait for room to read more requests ended.
pub(crate) enum Room {
    /// Below both bounds: the reader may go on; `waited` if it had to wait.
    Available { waited: bool },
    /// Nothing moved for the whole stall limit: the peer does not read.
    Stalled,
}

impl Connection {
    /// A connection whose replies wait unsent up to `max_unsent` bytes (plus
    /// one reply); replies dropped past that are counted in `counters`.
    pub(crate) fn new(
        writer: Arc<FrameWriter>,
        max_unsent: usize,
        counters: Arc<ConnectionCounters>,
    ) -> Arc<Connection> {
        Arc::new(Connection {
            writer,
            max_unsent,
            counters,
            in_flight: AtomicUsize::new(0),
            reply_estimate: AtomicUsize::new(0),
            replied: Notify::new(),
            reader_waits: AtomicBool::new(false),
            subscriptions: AtomicUsize::new(0),
        })
    }

    /// A sink for one request just read; the request is in flight until it
    /// is dropped.
    pub(crate) fn request_sink(self: &Arc<Self>) -> ConnectionSink {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        ConnectionSink {
            to: SinkTo::Wire(self.clone()),
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub(crate) fn unsent_bytes(&self) -> usize {
        self.writer.unsent_bytes()
    }

    /// Counts a subscription opened (`true`) or ended on this connection.
    pub(crate) fn note_subscription(&self, opened: bool) {
        if opened {
            self.subscriptions.fetch_add(1, Ordering::Relaxed);
        } else {
            self.subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Whether the connection has a subscription open.
    pub(crate) fn has_subscriptions(&self) -> bool {
        self.subscriptions.load(Ordering::Relaxed) > 0
    }

    /// Queues an events frame unless more than `max_unsent` bytes wait
    /// unsent already: `Some(false)` then (the events are missed), `None`
    /// when the connection is closing.
    pub(crate) fn send_event_frame(&self, frame: Vec<u8>, max_unsent: usize) -> Option<bool> {
        self.writer.send_within(frame, max_unsent).ok()
    }

    /// Sends a frame that answers no request (a welcome or a goodbye).
    pub(crate) fn send_frame(&self, frame: &ServerFrame) {
        let mut encoded = Vec::new();
        match encode_frame(frame, &mut encoded) {
            // A closed connection drops replies to requests it no longer awaits.
            Ok(()) => drop(self.writer.send_within(encoded, usize::MAX)),
            Err(error) => tracing::error!(%error, "cannot encode a reply frame"),
        }
    }

    /// Waits until fewer than `max_in_flight` requests are in flight and at
    /// most `max_unsent` reply bytes are unsent. Each reply sent or byte
    /// written restarts the `stall_limit` clock.
    pub(crate) async fn room(
        &self,
        max_in_flight: usize,
        max_unsent: usize,
        stall_limit: Duration,
    ) -> Room {
        // A failed writer has nothing unsent: the reader goes on and finds
        // the broken stream.
        let has_room = || {
            let (in_flight, unsent) = (self.in_flight(), self.unsent_bytes());
            let owed = in_flight.saturating_mul(self.reply_estimate.load(Ordering::Relaxed));
            in_flight < max_in_flight
                && unsent <= max_unsent
                && (in_flight == 0 || unsent.saturating_add(owed) <= max_unsent)
        };
        if has_room() {
            return Room::Available { waited: false };
        }
        let _waiting = self.reader_waiting();
        loop {
            // Taken before the check, so a change in between still wakes us.
            let wrote = self.writer.wrote();
            let replied = self.replied.notified();
            if has_room() {
                return Room::Available { waited: true };
            }
            tokio::select! {
                _ = wrote => {}
                _ = replied => {}
                _ = tokio::time::sleep(stall_limit) => return Room::Stalled,
            }
        }
    }

    /// Marks the reader as waiting for replies until the guard is dropped.
    fn reader_waiting(&self) -> ReaderWaiting<'_> {
        self.reader_waits.store(true, Ordering::SeqCst);
        ReaderWaiting(self)
    }

    /// Waits until no request is in flight, or `until`.
    pub(crate) async fn replies_sent(&self, until: Instant) {
        let _waiting = self.reader_waiting();
        loop {
            let replied = self.replied.notified();
            if self.in_flight() == 0 {
                return;
            }
            tokio::select! {
                _ = replied => {}
                _ = tokio::time::sleep_until(until) => return,
            }
        }
    }

    /// Takes no more frames, waits at most `linger` for the queued ones to
    /// be written, then drops what is left, which ends the connection even
    /// when the peer does not read.
    pub(crate) async fn close(&self, linger: Duration) {
        self.writer.close();
        let flushed = async {
            loop {
                let wrote = self.writer.wrote();
                if self.writer.unsent_bytes() == 0 {
                    return;
                }
                wrote.await;
            }
        };
        if tokio::time::timeout(linger, flushed).await.is_err() {
            self.writer.abort();
        }
    }
}

/// Where the reply to one request goes: a wire connection's writer, or a
/// task of this silo awaiting it (the HTTP gateway's request), so every way
/// in hands its requests to the same `handle_request`. A wire request stops
/// counting as in flight on its connection when this is dropped.
pub(crate) struct ConnectionSink {
    to: SinkTo,
}

enum SinkTo {
    Wire(Arc<Connection>),
    Waiting(Mutex<Option<oneshot::Sender<Result<Response, ReplyError>>>>),
}

impl ConnectionSink {
    /// A sink whose one reply the returned receiver gets (dropped unanswered,
    /// the receiver sees the sender gone).
    pub(crate) fn waiting() -> (
        ConnectionSink,
        oneshot::Receiver<Result<Response, ReplyError>>,
    ) {
        let (sender, receiver) = oneshot::channel();
        let sink = ConnectionSink {
            to: SinkTo::Waiting(Mutex::new(Some(sender))),
        };
        (sink, receiver)
    }

    pub(crate) fn reply(&self, id: u64, result: Result<Response, ReplyError>) {
        let connection = match &self.to {
            SinkTo::Wire(connection) => connection,
            SinkTo::Waiting(sender) => {
                let sender = sender.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(sender) = sender {
                    let _ = sender.send(result);
                }
                return;
            }
        };
        // Checked before encoding too: a reply that would be dropped is not
        // copied into a frame first.
        if connection.unsent_bytes() > connection.max_unsent {
            return Self::drop_reply(connection, id, reply_size(&result));
        }
        let mut encoded = Vec::new();
        if let Err(error) = encode_frame(&ServerFrame::Reply { id, result }, &mut encoded) {
            tracing::error!(%error, "cannot encode a reply frame");
            return;
        }
        let size = encoded.len();
        let _ = connection.reply_estimate.fetch_update(
            Ordering::Relaxed,
            Ordering::Relaxed,
            |estimate| Some(size.max(estimate - estimate / 8)),
        );
        if let Ok(false) = connection
            .writer
            .send_within(encoded, connection.max_unsent)
        {
            Self::drop_reply(connection, id, size);
        }
    }

    /// Answers `unavailable` in place of a reply of `size` bytes that the
    /// connection has no room for.
    fn drop_reply(connection: &Connection, id: u64, size: usize) {
        connection
            .counters
            .replies_dropped_unread
            .fetch_add(1, Ordering::Relaxed);
        let refusal = ReplyError::Unavailable(format!(
            "the call ran, but its reply ({size} bytes) was dropped: this connection has {} bytes \
             of replies unread, over its limit of {} (read replies as they come; a retry with the \
             same idempotency key gets the reply)",
            connection.unsent_bytes(),
            connection.max_unsent
        ));
        // Small, and sent past the limit: the caller must learn what happened.
        connection.send_frame(&ServerFrame::Reply {
            id,
            result: Err(refusal),
        });
    }
}

/// About what a reply weighs on the wire.
fn reply_size(result: &Result<Response, ReplyError>) -> usize {
    match result {
        Ok(Response::Payload(payload)) => payload.len(),
        _ => 0,
    }
}

impl Drop for ConnectionSink {
    fn drop(&mut self) {
        let SinkTo::Wire(connection) = &self.to else {
            return;
        };
        connection.in_flight.fetch_sub(1, Ordering::SeqCst);
        // Both sides use SeqCst: either the reader sees the new count, or
        // this sees that it waits.
        if connection.reader_waits.load(Ordering::SeqCst) {
            connection.replied.notify_waiters();
        }
    }
}

/// The reader waits for replies while this lives.
struct ReaderWaiting<'a>(&'a Connection);

impl Drop for ReaderWaiting<'_> {
    fn drop(&mut self) {
        self.0.reader_waits.store(false, Ordering::SeqCst);
    }
}
