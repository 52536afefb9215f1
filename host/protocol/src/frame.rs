//! What travels on a connection: a hello each way, then requests and replies
//! tagged with the client's request id, so replies may come out of order.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::ReplyError;

/// A frame sent by a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientFrame {
    /// First frame on every connection.
    Hello {
        /// The client's [`crate::PROTOCOL_VERSION`].
        protocol_version: u32,
        /// The client's token, for a silo that requires one: a call token,
        /// the admin token, or (between silos) the cluster secret. What the
        /// connection may ask follows from which one it is. A wrong token
        /// gets a [`ServerFrame::Goodbye`] saying so.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// One request; the silo answers with a [`ServerFrame::Reply`] of the same id.
    Request {
        /// Chosen by the client, unique among its requests in flight.
        id: u64,
        /// What is asked.
        request: Request,
    },
}

/// A frame sent by a silo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ServerFrame {
    /// Answer to [`ClientFrame::Hello`] when the versions match.
    Welcome {
        /// The silo's [`crate::PROTOCOL_VERSION`].
        protocol_version: u32,
    },
    /// Answer to one request.
    Reply {
        /// The id of the request this answers.
        id: u64,
        /// The outcome.
        result: Result<Response, ReplyError>,
    },
    /// Events for one of the connection's subscriptions, in order per
    /// publisher. A subscription too slow to keep up loses events rather
    /// than slow their publishers down: `missed` says how many it lost just
    /// before these (and the sequence numbers show the gap).
    Events {
        /// The id of the [`Request::Subscribe`] that made the subscription.
        subscription: u64,
        /// Events this subscription lost since its last frame.
        #[serde(default)]
        missed: u64,
        /// The events, oldest first.
        events: Vec<Event>,
    },
    /// The silo closes the connection after this frame, for the reason given.
    Goodbye {
        /// Why, for the client's log.
        reason: String,
        /// The error kind (as [`crate::ReplyError::kind`]) of a refused
        /// hello a client should act on rather than retry blindly:
        /// `unauthorized` (a missing or wrong token) or `overloaded` (too
        /// many connections). Absent otherwise, and from older silos.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<String>,
    },
}

/// A request to a silo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Send a message to an object and wait for its reply.
    Call(CallRequest),
    /// As `Call`, and the reply also says which silo ran the turn
    /// ([`Response::Routed`]), so a client can send the object's next
    /// messages there directly.
    RoutedCall(CallRequest),
    /// Deploy a component under a service type (replacing an older one).
    Deploy {
        /// Name callers use, e.g. `Counter`.
        service_type: String,
        /// The component's bytes.
        #[serde(with = "serde_bytes")]
        component: Vec<u8>,
    },
    /// Remove a service type: new calls to it fail with `unknown-type`,
    /// its live activations are deactivated, its objects' state is kept (a
    /// later deploy under the same name finds it).
    Undeploy {
        /// The type to remove.
        service_type: String,
    },
    /// List the deployed service types.
    ListDeployments,
    /// The HTTP gateway described as an OpenAPI 3.1 document (JSON): every
    /// deployed type, or only `service_type`.
    OpenApi {
        /// One type; `None` for all.
        service_type: Option<String>,
    },
    /// Counters about the silo, for benchmarks and operators.
    Stats,
    /// The silo's metrics as OpenMetrics text (what its gateway's
    /// `GET /metrics` serves): one silo's dashboard asks the others.
    Metrics,
    /// A call passed on by another silo of the cluster, to the silo that
    /// owns (or is to activate) the object.
    Forward(ForwardRequest),
    /// Are you alive, and which generation are you? (Failure detection.)
    Ping,
    /// The silos of the cluster as the membership store lists them.
    Members,
    /// The calls a silo's turns have been waiting on for a while, sent to
    /// the other silos so that each can find the cycles of waits no single
    /// silo sees whole (deadlocks across three silos or more).
    Waits(WaitReport),
    /// The one-way messages receivers refused (dead letters), oldest first.
    DeadLetters {
        /// Only those for receivers of this service type.
        receiver_type: Option<String>,
        /// At most this many.
        limit: u32,
    },
    /// Subscribes this connection to `topics`: the silo answers
    /// [`Response::Subscribed`], then sends [`ServerFrame::Events`] tagged
    /// with this request's id for the events published to them on any silo
    /// of the cluster, while the connection lasts or until
    /// [`Request::Unsubscribe`].
    Subscribe {
        /// Topics, e.g. `Room/lobby`.
        topics: Vec<String>,
    },
    /// Ends the subscription made by the request of id `subscription`; no
    /// events of it follow the reply.
    Unsubscribe {
        /// The id of the `Subscribe` request.
        subscription: u64,
    },
    /// Events committed on another silo of the cluster, for this silo's
    /// subscribers; sent by each silo to each other in publish order.
    Publish {
        /// The events, in the order their publishers committed them.
        events: Vec<Event>,
        /// Events of earlier batches the sending silo could not pass on
        /// (its queue to this silo was full, or a batch was not taken), by
        /// topic: this silo's subscribers to those topics are told they
        /// missed them.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        missed: Vec<(String, u64)>,
    },
    /// Durable reminders: one object's (`object` given), or the next due
    /// across the cluster, earliest first.
    Reminders {
        /// Only this object's, as `(service type, object id)`.
        object: Option<(String, String)>,
        /// At most this many.
        limit: u32,
    },
}

/// One event a turn published, as subscribers receive it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The topic it was published to.
    pub topic: String,
    /// The object that published it, as `Type/id`.
    pub publisher: String,
    /// Its place among its publisher's events, from 1: a subscriber that
    /// sees a number skipped has missed an event.
    pub seq: u64,
    /// What the publisher published; CBOR by convention.
    pub payload: ByteBuf,
    /// When the publishing turn committed, in ms since the Unix epoch.
    pub published_at_ms: i64,
}

/// The most topics one connection may subscribe to, over all its
/// subscriptions.
pub const MAX_TOPICS_PER_CONNECTION: usize = 1024;

/// The long waits of one silo, replacing its previous report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitReport {
    /// The reporting silo's address.
    pub silo: String,
    /// Every wait it knows of that has lasted a while; empty when none has.
    pub waits: Vec<WaitInfo>,
}

/// One turn waiting on a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitInfo {
    /// The waiting object, as `(service type, object id)`.
    pub caller: (String, String),
    /// The object its message is for.
    pub callee: (String, String),
    /// When the caller began waiting, in µs since the Unix epoch (the same
    /// stamp every silo knows the wait by).
    pub since_us: u64,
}

/// A call one silo passes to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForwardRequest {
    /// The call as the first silo received it.
    pub call: CallRequest,
    /// The objects whose turns wait on this call, outermost first, as
    /// `(service type, object id)`: cycles are caught across silos too.
    pub call_chain: Vec<(String, String)>,
    /// How many silos passed the call on so far.
    pub hops: u8,
    /// When the innermost caller's turn started waiting on this call, in
    /// microseconds since the Unix epoch: of the calls that close a cycle of
    /// waiting turns across silos, the youngest is refused as a deadlock.
    #[serde(default)]
    pub waiting_since_us: Option<u64>,
    /// Sent by the rerun of an interrupted keyed turn: a callee finishing
    /// an interrupted turn of its own lets it in first when the caller's
    /// key orders before its own, so reruns waiting on each other in a
    /// circle cannot wait for ever (older silos leave it out: `false`).
    #[serde(default)]
    pub from_rerun: bool,
}

/// A message for one object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRequest {
    /// The object's type, e.g. `Counter`.
    pub service_type: String,
    /// The object's id within its type, e.g. `alice`.
    pub object_id: String,
    /// Which handler, e.g. `increment`.
    pub message_type: String,
    /// Opaque to the silo; CBOR by convention.
    pub payload: ByteBuf,
    /// How long the caller still waits, in milliseconds: the turn must end
    /// by then or fail with `timeout`. `None` leaves it to the silo's turn
    /// deadline. A silo passing the call on sends what is left.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Makes the call idempotent: the first turn run under this key for
    /// this object stores its reply in the same commit as its writes, and a
    /// later call with the same key to the same object gets that reply
    /// without running again (until the silos' retention sweeps it). At
    /// most [`MAX_IDEMPOTENCY_KEY_BYTES`] bytes. Absent in older clients.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// The reserved message type of a client's one-way send: a call to the
/// receiver whose payload is an [`EnqueueRequest`]. The receiver's silo
/// stores the message in the receiver's own outbox and answers an empty
/// payload once it is stored; the message takes effect afterwards, once.
/// Guests never see this type.
pub const ENQUEUE_MESSAGE_TYPE: &str = "rio:enqueue";

/// The payload (CBOR) of a call of type [`ENQUEUE_MESSAGE_TYPE`]: the
/// message to deliver to the called object later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnqueueRequest {
    /// Which handler, e.g. `increment`.
    pub message_type: String,
    /// The handler's payload; CBOR by convention.
    pub payload: ByteBuf,
}

/// The longest idempotency key a silo accepts, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// The handler's reply payload.
    Payload(ByteBuf),
    /// Answer to [`Request::RoutedCall`]: the reply payload and the address
    /// of the silo that owns the object.
    Routed {
        /// The handler's reply payload.
        payload: ByteBuf,
        /// Where the object lives now.
        owner: String,
    },
    /// The component was accepted.
    Deployed(DeploymentInfo),
    /// The type was removed; what it pointed at.
    Undeployed(DeploymentInfo),
    /// Every deployed type.
    Deployments(Vec<DeploymentInfo>),
    /// Answer to [`Request::OpenApi`]: the document as JSON text.
    OpenApi(String),
    /// Silo counters.
    Stats(Box<SiloStats>),
    /// Answer to [`Request::Metrics`]: OpenMetrics text.
    Metrics(String),
    /// Answer to a ping: the silo's generation.
    Pong {
        /// When the silo process started, in ms since the Unix epoch.
        generation: i64,
    },
    /// The cluster's silos.
    Members(Vec<MemberInfo>),
    /// A report was taken into account.
    Noted,
    /// Answer to [`Request::DeadLetters`].
    DeadLetters(Vec<DeadLetterInfo>),
    /// Answer to [`Request::Reminders`].
    Reminders(Vec<ReminderInfo>),
    /// Answer to [`Request::Subscribe`]: events follow.
    Subscribed,
}

/// A durable reminder as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReminderInfo {
    /// Whose it is, as `(service type, object id)`.
    pub object: (String, String),
    /// Its name.
    pub name: String,
    /// When it fires next, in ms since the Unix epoch.
    pub due_ms: i64,
    /// Its period in ms, if it recurs.
    pub every_ms: Option<i64>,
    /// `skip` or `fire-once`: what it does with missed times.
    pub missed: String,
    /// The message type it delivers.
    pub message_type: String,
    /// The payload it delivers.
    pub payload: ByteBuf,
}

/// A one-way message its receiver refused, kept with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterInfo {
    /// The object that sent it, as `(service type, object id)`.
    pub sender: (String, String),
    /// Its place among the sender's messages.
    pub seq: i64,
    /// The object it was for, as `(service type, object id)`.
    pub receiver: (String, String),
    /// The receiver's message type.
    pub message_type: String,
    /// The message as sent.
    pub payload: ByteBuf,
    /// Why it was given up (the last delivery's error).
    pub reason: String,
    /// When its sender's turn committed it, in ms since the Unix epoch.
    pub created_at_ms: i64,
    /// When it was given up, in ms since the Unix epoch.
    pub failed_at_ms: i64,
}

/// One silo as the membership store lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Where it serves.
    pub address: String,
    /// Its process generation.
    pub generation: i64,
    /// `active`, `left` or `dead`.
    pub status: String,
    /// Its last heartbeat, in ms since the Unix epoch.
    pub heartbeat_ms: i64,
}

/// One deployed service type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentInfo {
    /// The name callers use.
    pub service_type: String,
    /// SHA-256 of the component bytes, hex.
    pub content_hash: String,
    /// Size of the component in bytes.
    pub component_bytes: u64,
}

/// Counters about a running silo.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiloStats {
    /// Objects with a live instance now.
    pub live_activations: u64,
    /// Instances activated (instantiated, state loaded, hook run) since the silo started.
    pub activations_total: u64,
    /// Time spent in those activations, summed, in nanoseconds.
    pub activation_nanos_total: u64,
    /// Idle activations deactivated since the silo started.
    pub deactivations_total: u64,
    /// Messages refused before any turn: a full mailbox, an unknown type,
    /// a full silo.
    #[serde(default)]
    pub messages_refused_total: u64,
    /// New activations refused because the silo was full (its
    /// `max-activations` or memory budget) and none was idle. (A silo of a
    /// cluster does not refuse a placement: it asks an idle activation to
    /// go and activates.)
    #[serde(default)]
    pub activations_refused_total: u64,
    /// Resident set size of the silo process, in bytes (0 where unknown).
    /// Pages that many activations share (a component's memory image) count
    /// once per activation here.
    pub resident_bytes: u64,
    /// Proportional set size: resident memory with each shared page divided
    /// among its sharers, the memory the silo really costs (0 where unknown).
    #[serde(default)]
    pub proportional_bytes: u64,
    /// Components compiled since the silo started (deploys of new code, or
    /// a cache miss at start).
    #[serde(default)]
    pub components_compiled: u64,
    /// Components loaded already compiled from the on-disk cache.
    #[serde(default)]
    pub components_loaded: u64,
    /// Messages this silo passed to another silo of its cluster.
    #[serde(default)]
    pub forwarded_total: u64,
    /// Client and silo connections open now.
    #[serde(default)]
    pub connections_open: u64,
    /// HTTP gateway connections open now (not in `connections_open`).
    #[serde(default)]
    pub http_connections_open: u64,
    /// Connections refused because the silo had its maximum open.
    #[serde(default)]
    pub connections_refused: u64,
    /// Connections closed for misbehaving (no hello in time, a bad frame,
    /// replies left unread).
    #[serde(default)]
    pub connections_closed_misbehaving: u64,
    /// Connections closed after their idle timeout.
    #[serde(default)]
    pub connections_closed_idle: u64,
    /// Connections refused at their hello for a wrong or missing token.
    #[serde(default)]
    pub connections_unauthorized: u64,
    /// Connections closed before their hello because newer ones needed the
    /// room kept for connections that have not said hello.
    #[serde(default)]
    pub connections_evicted_before_hello: u64,
    /// Replies not sent because their connection had more replies unread
    /// than its limit (the caller got `unavailable` instead).
    #[serde(default)]
    pub replies_dropped_unread: u64,
    /// Timer ticks run since the silo started.
    #[serde(default)]
    pub timer_ticks_total: u64,
    /// Periodic timer ticks skipped because the previous tick of the same
    /// timer was still waiting or running when they came due.
    #[serde(default)]
    pub timer_ticks_skipped_total: u64,
    /// Reminder fires this silo dispatched that took effect.
    #[serde(default)]
    pub reminder_fires_total: u64,
    /// Reminder fires whose handler failed (counted as fired: the reminder
    /// moved on).
    #[serde(default)]
    pub reminder_fires_failed_total: u64,
    /// Missed times of periodic reminders skipped by their policy.
    #[serde(default)]
    pub reminder_fires_skipped_total: u64,
    /// The sum of the fires' lateness (dispatch minus due time), in ms.
    #[serde(default)]
    pub reminder_tardiness_ms_total: u64,
    /// Events published by turns that committed on this silo.
    #[serde(default)]
    pub events_published_total: u64,
    /// Events handed to this silo's client subscriptions.
    #[serde(default)]
    pub event_deliveries_total: u64,
    /// Events this silo's client subscriptions lost for being too slow.
    #[serde(default)]
    pub events_missed_total: u64,
    /// Events not passed on to another silo, whose queue to it was full
    /// (its subscribers see the gap in the sequence numbers).
    #[serde(default)]
    pub events_not_broadcast_total: u64,
    /// Client subscriptions open now.
    #[serde(default)]
    pub subscriptions_open: u64,
    /// Events this silo delivered to subscribed objects that took effect.
    #[serde(default)]
    pub object_event_deliveries_total: u64,
    /// Events this silo delivered to objects whose handler failed (they
    /// count as delivered).
    #[serde(default)]
    pub object_event_deliveries_failed_total: u64,
    /// Deliveries to objects tried again, their subscriber unreachable.
    #[serde(default)]
    pub object_event_delivery_retries_total: u64,
    /// Turns' commits this silo's activations made.
    #[serde(default)]
    pub commits_total: u64,
    /// Commits that failed: the store refused or could not be reached, or
    /// the object had moved to another silo.
    #[serde(default)]
    pub commit_failures_total: u64,
    /// Keyed calls answered with their stored reply, nothing run.
    #[serde(default)]
    pub idempotency_hits_total: u64,
    /// Calls refused to break a cycle of waits (`deadlock`).
    #[serde(default)]
    pub deadlocks_total: u64,
    /// One-way messages this silo's outboxes delivered.
    #[serde(default)]
    pub outbox_delivered_total: u64,
    /// Outbox delivery attempts to be tried again.
    #[serde(default)]
    pub outbox_retries_total: u64,
    /// One-way messages given up and moved to the dead letters.
    #[serde(default)]
    pub dead_letters_total: u64,
    /// One-way messages this silo's outboxes hold committed and not yet
    /// delivered nor given up (the outbox backlog).
    #[serde(default)]
    pub outbox_pending: u64,
}

/// The shape of [`ServerFrame::Events`] over borrowed events, for a silo
/// that sends the same events to many subscriptions without copying them.
#[derive(Serialize)]
enum BorrowedEventsFrame<'a> {
    Events {
        subscription: u64,
        missed: u64,
        events: &'a [&'a Event],
    },
}

/// Appends a [`ServerFrame::Events`] frame of `events` to `out`.
pub fn encode_events_frame(
    subscription: u64,
    missed: u64,
    events: &[&Event],
    out: &mut Vec<u8>,
) -> Result<(), crate::FrameError> {
    let frame = BorrowedEventsFrame::Events {
        subscription,
        missed,
        events,
    };
    crate::encode_frame(&frame, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_events_frame_decodes_as_the_owned_one() {
        let event = Event {
            topic: "Room/lobby".into(),
            publisher: "Room/lobby".into(),
            seq: 7,
            payload: ByteBuf::from(vec![1, 2, 3]),
            published_at_ms: 42,
        };
        let mut bytes = Vec::new();
        encode_events_frame(5, 2, &[&event, &event], &mut bytes).unwrap();
        let decoded: ServerFrame = crate::codec::decode_body(&bytes[4..]).unwrap();
        assert_eq!(
            decoded,
            ServerFrame::Events {
                subscription: 5,
                missed: 2,
                events: vec![event.clone(), event],
            }
        );
    }
}
