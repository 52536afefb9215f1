//! The network side of a silo: accepts connections (TCP, or TLS when the
//! silo has a certificate) and runs, per connection, a reader task; replies
//! are written by whoever produces them (see `FrameWriter`).
//!
//! Invariants:
//! - What a connection may ask is fixed at its hello (its token's
//!   `Credential`) and checked before each request is dispatched; a
//!   request it may not make is answered `unauthorized`, and a wrong token
//!   ends the connection with a goodbye that says so.
//! - Nothing a peer sends can panic the silo. A frame that does not decode
//!   gets an error reply when its request id can be recovered, and
//!   otherwise a `Goodbye` with the reason before the connection is closed.
//! - Before its hello a connection holds almost nothing (see `hello`): a
//!   hello frame of at most 16 KiB, a place among a bounded number of such
//!   connections (the oldest closed first for a newer one), the handshake
//!   timeout; a wrong token waits before its goodbye.
//! - Every limit ends in a `Goodbye` and a close, logged once per connection
//!   after the hello and as a periodic summary before it (never once per
//!   frame): no valid hello within the handshake timeout, nothing asked and
//!   nothing owed for the idle timeout, more connections than the cap.
//! - The cap is fitted to the open-files limit at start (see `descriptors`).
//! - One connection cannot make the silo hold more than its bounds of
//!   work: past `max_requests_in_flight` requests without a reply, or
//!   `max_unread_reply_bytes` of replies it has not read, the silo stops
//!   reading its requests until it catches up (replies produced meanwhile
//!   past that are dropped for an error, see `Connection`); one that does
//!   not read for the idle timeout is closed. An unfinished frame holds
//!   what has arrived of it, big ones within a budget all connections
//!   share, and must be whole within the frame timeout.
//! - A peer that half-closes still gets the replies of the requests it
//!   sent before, each waited for at most until its deadline.

mod descriptors;
mod hello;
pub(crate) mod http;
mod listen;
mod requests;
mod subscriptions;

pub use self::listen::listen;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rio_protocol::codec::decode_body;
use rio_protocol::{
    BufferBudget, ClientFrame, FrameError, FrameReader, FrameWriter, PROTOCOL_VERSION, ReplyError,
    Request, ServerFrame,
};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use self::hello::{FailedHellos, HelloPlace, MAX_HELLO_BYTES, MIN_HELLO_TIME, Unwelcomed};
use self::requests::{handle_request, recover_request_id, request_deadline};
use self::subscriptions::ConnectionSubscriptions;
use crate::base::log_summary::LogSummary;
use crate::config::auth::{AuthConfig, Credential, LiveAuth};
use crate::message::connection::{Connection, Room};
use crate::observe::ConnectionCounters;
use crate::routing::Router;

/// What the frame budget holds beyond one frame of the limit, so a frame of
/// the limit (with its length prefix, rounded up to KiB) always fits.
const UNFINISHED_FRAME_SLACK: usize = 8 * 1024;

/// How long a connection being closed for misbehaving, or refused, may take
/// to receive its goodbye before it is dropped.
const GOODBYE_LINGER: Duration = Duration::from_secs(5);

/// How long past a request's deadline a half-closed connection still waits
/// for its reply: the reply is sent at the deadline at the latest.
const REPLY_MARGIN: Duration = Duration::from_secs(1);

/// The longest reason a goodbye or a log line quotes from a peer's frame.
const MAX_REASON_CHARS: usize = 200;

/// Refused connections that may wait for their goodbye to be read at once;
/// more are closed without one.
const MAX_LINGERING_REFUSALS: usize = 64;

/// Connections refused at the cap, logged at most once per period.
static REFUSED_LOG: LogSummary = LogSummary::new();

/// Connections refused for their token, logged at most once per period.
static UNAUTHORIZED_LOG: LogSummary = LogSummary::new();

/// Connections closed for misbehaving before their hello (no hello in time,
/// a bad first frame, a failed TLS handshake), logged at most once per
/// period: anyone who reaches the port could otherwise flood the log.
static BEFORE_HELLO_LOG: LogSummary = LogSummary::new();

/// Connections closed before their hello to make room for newer ones.
static EVICTED_LOG: LogSummary = LogSummary::new();

/// What every connection of one listener shares.
struct Ingress {
    router: Arc<Router>,
    /// The tokens accepted now.
    auth: Arc<LiveAuth>,
    counters: Arc<ConnectionCounters>,
    unwelcomed: Arc<Unwelcomed>,
    failed_hellos: FailedHellos,
    frames: Arc<BufferBudget>,
}

/// Accepts connections on `listener` until `shutdown` resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Arc<Router>,
    counters: Arc<ConnectionCounters>,
    auth: Arc<LiveAuth>,
    shutdown: impl Future<Output = ()>,
) {
    let config = &router.ctx.config;
    let (max_connections, open_files) = descriptors::fit_connection_cap(config.max_connections);
    // Kept below the cap, so connections that said hello always have room.
    let before_hello = config
        .max_connections_before_hello
        .min(max_connections - max_connections / 4)
        .max(1);
    tracing::info!(
        max_connections,
        before_hello,
        open_files = open_files.map_or_else(|| "unknown".to_string(), |n| n.to_string()),
        "connection limits"
    );
    if max_connections < config.max_connections {
        tracing::warn!(
            asked = config.max_connections,
            max_connections,
            "the open-files limit lowers the connection cap; raise `ulimit -n` (the hard limit) to serve more"
        );
    }
    let ingress = Arc::new(Ingress {
        router: router.clone(),
        auth,
        counters: counters.clone(),
        unwelcomed: Unwelcomed::new(before_hello, MIN_HELLO_TIME),
        failed_hellos: FailedHellos::new(config.failed_hello_delay),
        frames: BufferBudget::new(
            config
                .max_unfinished_frame_bytes
                .max(config.max_frame_bytes + UNFINISHED_FRAME_SLACK),
        ),
    });
    tokio::pin!(shutdown);
    loop {
        // Connections wait in the listen queue while every place before
        // the hello is young (see `hello`).
        tokio::select! {
            _ = &mut shutdown => return,
            _ = ingress.unwelcomed.room() => {}
        }
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let open = counters.open.load(Ordering::SeqCst);
                    if open >= max_connections as u64 {
                        counters.refused.fetch_add(1, Ordering::Relaxed);
                        if let Some(refused) = REFUSED_LOG.note() {
                            tracing::warn!(%peer, refused, open, "refusing connections: too many open");
                        }
                        // A flood of refused connections must not use up the
                        // descriptors: past a few lingering refusals, drop at once.
                        // (A TLS silo cannot say goodbye before the TLS
                        // handshake, which would cost as much as serving.)
                        if router.ctx.config.tls.is_none()
                            && counters.refusing.load(Ordering::SeqCst) < MAX_LINGERING_REFUSALS
                        {
                            counters.refusing.fetch_add(1, Ordering::SeqCst);
                            let counters = counters.clone();
                            tokio::spawn(async move {
                                refuse(stream, max_connections, counters.clone()).await;
                                counters.refusing.fetch_sub(1, Ordering::SeqCst);
                            });
                        }
                        continue;
                    }
                    counters.open.fetch_add(1, Ordering::SeqCst);
                    let open = OpenConnection(counters.clone());
                    let (place, evicted_one) = ingress.unwelcomed.enter();
                    if evicted_one {
                        counters.evicted_before_hello.fetch_add(1, Ordering::Relaxed);
                        if let Some(evicted) = EVICTED_LOG.note() {
                            tracing::warn!(%peer, evicted, before_hello, "closing the oldest connections that have not said hello: too many wait for theirs");
                        }
                    }
                    tokio::spawn(serve_connection(stream, peer, ingress.clone(), open, place));
                }
                Err(error) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// One open connection in the counters, for as long as this lives.
struct OpenConnection(Arc<ConnectionCounters>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Says goodbye to a connection over the cap. Its hello is read and
/// dropped first, for a while: closing a socket with unread input resets it,
/// and the peer could lose the goodbye.
async fn refuse(stream: TcpStream, max_connections: usize, counters: Arc<ConnectionCounters>) {
    let (mut read_half, write_half) = stream.into_split();
    let connection = Connection::new(FrameWriter::start(write_half), usize::MAX, counters);
    connection.send_frame(&ServerFrame::Goodbye {
        reason: format!("too many connections: this silo serves at most {max_connections}"),
        kind: Some("overloaded".into()),
    });
    let drain = async {
        let mut sink = [0u8; 4096];
        while matches!(read_half.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    let _ = tokio::time::timeout(GOODBYE_LINGER, async {
        connection.close(GOODBYE_LINGER).await;
        drain.await;
    })
    .await;
}

/// How a connection's reader ended.
enum End {
    /// The peer closed its side (after its replies were sent, or at least
    /// waited for) or the connection broke.
    Left,
    /// Nothing asked and nothing owed for the idle timeout.
    Idle,
    /// The peer broke a rule; the reason goes in the goodbye and the log.
    Misbehaved(String),
    /// Before its hello, the peer broke a rule; refusals are logged as a
    /// periodic summary.
    MisbehavedBeforeHello(String),
    /// A newer connection took this one's place before its hello.
    Evicted,
    /// The hello's token was wrong or missing; the reason goes in the
    /// goodbye, and refusals are logged as a periodic summary (a scanner
    /// guessing tokens must not flood the log).
    Unauthorized(String),
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    ingress: Arc<Ingress>,
    open: OpenConnection,
    place: HelloPlace,
) {
    let _ = stream.set_nodelay(true);
    let config = &ingress.router.ctx.config;
    let Some(tls) = &config.tls else {
        let (read_half, write_half) = stream.into_split();
        let writer = FrameWriter::start(write_half);
        return serve_stream(read_half, writer, peer, ingress, open, place).await;
    };
    let timeout = config.handshake_timeout;
    let accepted = tokio::select! {
        accepted = tokio::time::timeout(timeout, tls.acceptor.accept(stream)) => accepted,
        // Counted when its place was taken.
        _ = place.evicted() => return,
    };
    let failure = match accepted {
        Ok(Ok(session)) => {
            let (read_half, write_half) = tokio::io::split(session);
            let writer = FrameWriter::start_stream(Box::new(write_half));
            return serve_stream(read_half, writer, peer, ingress, open, place).await;
        }
        Ok(Err(error)) => format!("TLS handshake failed: {error}"),
        Err(_) => format!("no TLS handshake within {} ms", timeout.as_millis()),
    };
    note_misbehaving_before_hello(&ingress.counters, peer, &failure);
}

/// Counts and (in a periodic summary) logs a connection closed for
/// misbehaving before its hello.
fn note_misbehaving_before_hello(counters: &ConnectionCounters, peer: SocketAddr, reason: &str) {
    counters.closed_misbehaving.fetch_add(1, Ordering::Relaxed);
    if let Some(closed) = BEFORE_HELLO_LOG.note() {
        tracing::warn!(%peer, reason = %one_line(reason), closed, "closing misbehaving connections before their hello");
    }
}

/// Serves one connection, plain or TLS, once its bytes flow.
async fn serve_stream<R: tokio::io::AsyncRead + Unpin>(
    read_half: R,
    writer: Arc<FrameWriter>,
    peer: SocketAddr,
    ingress: Arc<Ingress>,
    open: OpenConnection,
    place: HelloPlace,
) {
    let router = &ingress.router;
    let config = &router.ctx.config;
    let counters = &open.0;
    let mut reader = FrameReader::new(read_half, MAX_HELLO_BYTES);
    let connection = Connection::new(writer, config.max_unread_reply_bytes, counters.clone());

    let end = match greet(&mut reader, &connection, peer, &ingress, place).await {
        Ok((credential, auth)) => {
            reader.set_max_frame_bytes(config.max_frame_bytes);
            reader.set_budget(ingress.frames.clone());
            read_requests(&mut reader, &connection, router, credential, &auth).await
        }
        Err(end) => end,
    };
    let linger = match end {
        End::Left => config.connection_idle_timeout,
        End::Idle => {
            counters.closed_idle.fetch_add(1, Ordering::Relaxed);
            let reason = format!(
                "idle for {} s: nothing asked and nothing in flight",
                config.connection_idle_timeout.as_secs()
            );
            tracing::debug!(%peer, %reason, "closing an idle connection");
            connection.send_frame(&ServerFrame::Goodbye { reason, kind: None });
            GOODBYE_LINGER
        }
        End::Unauthorized(reason) => {
            connection.send_frame(&ServerFrame::Goodbye {
                reason,
                kind: Some("unauthorized".into()),
            });
            GOODBYE_LINGER
        }
        End::Evicted => {
            connection.send_frame(&ServerFrame::Goodbye {
                reason: "too many connections are waiting for their hello; say hello sooner".into(),
                kind: Some("overloaded".into()),
            });
            // Its place is already someone else's: no lingering.
            Duration::ZERO
        }
        End::MisbehavedBeforeHello(reason) => {
            let reason = one_line(&reason);
            note_misbehaving_before_hello(counters, peer, &reason);
            connection.send_frame(&ServerFrame::Goodbye { reason, kind: None });
            GOODBYE_LINGER
        }
        End::Misbehaved(reason) => {
            counters.closed_misbehaving.fetch_add(1, Ordering::Relaxed);
            let reason = one_line(&reason);
            tracing::warn!(%peer, %reason, "closing a misbehaving connection");
            connection.send_frame(&ServerFrame::Goodbye { reason, kind: None });
            GOODBYE_LINGER
        }
    };
    // Replies still in flight after this are dropped: the peer has gone,
    // idled out or misbehaved.
    connection.close(linger).await;
    drop(open);
}

/// Reads the hello within the handshake timeout, or until a newer
/// connection takes this one's place; a wrong token waits its delay (still
/// holding the place) before the error.
async fn greet<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    connection: &Connection,
    peer: SocketAddr,
    ingress: &Ingress,
    place: HelloPlace,
) -> Result<(Credential, Arc<AuthConfig>), End> {
    let config = &ingress.router.ctx.config;
    let timeout = config.handshake_timeout;
    let hello = tokio::select! {
        hello = tokio::time::timeout(timeout, handshake(reader)) => hello,
        _ = place.evicted() => return Err(End::Evicted),
    };
    let token = match hello {
        Err(_) => {
            return Err(End::MisbehavedBeforeHello(format!(
                "no hello within {} ms",
                timeout.as_millis()
            )));
        }
        Ok(Err(None)) => return Err(End::Left),
        Ok(Err(Some(reason))) => return Err(End::MisbehavedBeforeHello(reason)),
        Ok(Ok(token)) => token,
    };
    // Checked against what `check` later uses, the same tokens.
    let auth = ingress.auth.current();
    match auth.credential(token.as_deref()) {
        Ok(credential) => {
            drop(place);
            connection.send_frame(&ServerFrame::Welcome {
                protocol_version: PROTOCOL_VERSION,
            });
            Ok((credential, auth))
        }
        Err(reason) => {
            let counters = &ingress.counters;
            counters.unauthorized.fetch_add(1, Ordering::Relaxed);
            if let Some(refused) = UNAUTHORIZED_LOG.note() {
                tracing::warn!(%peer, %reason, refused, "refusing connections: bad or missing token");
            }
            let delay = ingress.failed_hellos.note(peer.ip());
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = place.evicted() => return Err(End::Evicted),
            }
            Err(End::Unauthorized(reason))
        }
    }
}

/// Shortened to one line of at most `MAX_REASON_CHARS` characters.
fn one_line(text: &str) -> String {
    crate::base::text::one_line(text, MAX_REASON_CHARS)
}

/// The hello's token; `Err(None)`: the peer left before saying anything.
async fn handshake<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
) -> Result<Option<String>, Option<String>> {
    match reader.next_frame::<ClientFrame>().await {
        Ok(Some(ClientFrame::Hello {
            protocol_version,
            token,
        })) if protocol_version == PROTOCOL_VERSION => Ok(token),
        Ok(Some(ClientFrame::Hello {
            protocol_version, ..
        })) => Err(Some(format!(
            "protocol version {protocol_version} is not supported; this silo speaks version {PROTOCOL_VERSION}"
        ))),
        Ok(Some(_)) => Err(Some("the first frame must be a hello".into())),
        Ok(None) => Err(None),
        Err(error) => Err(Some(format!("bad hello: {error}"))),
    }
}

/// Reads requests until the peer leaves, idles out or misbehaves.
async fn read_requests<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    connection: &Arc<Connection>,
    router: &Arc<Router>,
    credential: Credential,
    auth: &AuthConfig,
) -> End {
    let config = &router.ctx.config;
    let idle_timeout = config.connection_idle_timeout;
    let frame_timeout = config.frame_timeout;
    // The latest deadline of a request read so far: after a half-close the
    // replies are waited for until then.
    let mut latest_deadline = Instant::now();
    let mut last_activity = Instant::now();
    // Ended, all of them, when this returns.
    let mut subscriptions =
        ConnectionSubscriptions::new(router.ctx.events.clone(), connection.clone());
    // One timer for the connection's life, re-armed only when it fires.
    let idle_timer = tokio::time::sleep(idle_timeout.min(frame_timeout / 4));
    tokio::pin!(idle_timer);
    loop {
        let room = connection.room(
            config.max_requests_in_flight,
            config.max_unread_reply_bytes,
            idle_timeout,
        );
        match room.await {
            Room::Available { waited: false } => {}
            // The frame's clock stood still while the silo did not read.
            Room::Available { waited: true } => reader.restart_partial_clock(),
            Room::Stalled => {
                return End::Misbehaved(format!(
                    "{} bytes of replies left unread for {} s",
                    connection.unsent_bytes(),
                    idle_timeout.as_secs()
                ));
            }
        }
        let read = tokio::select! {
            biased;
            read = reader.next_body() => read,
            _ = &mut idle_timer => {
                let now = Instant::now();
                if let Some(since) = reader.partial_since()
                    && now >= since + frame_timeout
                {
                    return End::Misbehaved(format!(
                        "a frame was begun {} s ago and is still unfinished ({} bytes came)",
                        frame_timeout.as_secs(),
                        reader.buffered_bytes()
                    ));
                }
                if connection.in_flight() > 0
                    || connection.unsent_bytes() > 0
                    || connection.has_subscriptions()
                {
                    // Work still owed counts as activity, and so does a
                    // subscription: idle time starts once it is done (seen
                    // within an eighth of the timeout).
                    last_activity = now;
                } else if now >= last_activity + idle_timeout {
                    return End::Idle;
                }
                let idle_until = last_activity + idle_timeout;
                let mut next = idle_until.min(now + idle_timeout / 8).min(now + frame_timeout / 4);
                if let Some(since) = reader.partial_since() {
                    next = next.min(since + frame_timeout);
                }
                idle_timer.as_mut().reset(next.max(now + Duration::from_millis(1)));
                continue;
            }
        };
        last_activity = Instant::now();
        let body = match read {
            Ok(Some(body)) => body,
            // A half-close (or a close mid-frame): what was asked is still
            // answered, each reply waited for until its deadline.
            Ok(None) | Err(FrameError::Truncated) => {
                connection
                    .replies_sent(latest_deadline + REPLY_MARGIN)
                    .await;
                return End::Left;
            }
            Err(FrameError::Io(_)) => return End::Left,
            Err(error) => return End::Misbehaved(error.to_string()),
        };
        match decode_body::<ClientFrame>(&body) {
            Ok(ClientFrame::Request { id, request }) => {
                let deadline = request_deadline(&request);
                latest_deadline = latest_deadline.max(deadline);
                if let Err(refused) = auth.check(credential, &request) {
                    connection.request_sink().reply(id, Err(refused));
                    continue;
                }
                match request {
                    Request::Subscribe { topics } => {
                        subscriptions.subscribe(id, topics, connection.request_sink());
                    }
                    Request::Unsubscribe { subscription } => {
                        let answer = subscriptions.unsubscribe(subscription);
                        connection.request_sink().reply(id, answer);
                    }
                    request => {
                        handle_request(id, request, deadline, connection.request_sink(), router)
                    }
                }
            }
            Ok(ClientFrame::Hello { .. }) => {
                return End::Misbehaved("a second hello on one connection".into());
            }
            Err(error) => match recover_request_id(&body) {
                Some(id) => connection.request_sink().reply(
                    id,
                    Err(ReplyError::BadRequest(format!(
                        "cannot decode request: {error}"
                    ))),
                ),
                None => return End::Misbehaved(format!("undecodable frame: {error}")),
            },
        }
    }
}
