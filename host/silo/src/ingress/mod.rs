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
//! - Every limit ends in a `Goodbye` and a close, logged once per connection
//!   (never once per frame): no valid hello within the handshake timeout,
//!   nothing asked and nothing owed for the idle timeout, more connections
//!   than the cap (refusals are logged as a periodic summary).
//! - One connection cannot make the silo hold more than its bounds of
//!   work: past `max_requests_in_flight` requests without a reply, or
//!   `max_unread_reply_bytes` of replies it has not read, the silo stops
//!   reading its requests until it catches up; one that does not read for
//!   the idle timeout is closed.
//! - A peer that half-closes still gets the replies of the requests it
//!   sent before, each waited for at most until its deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rio_protocol::codec::decode_body;
use rio_protocol::{
    ClientFrame, FrameError, FrameReader, FrameWriter, MAX_IDEMPOTENCY_KEY_BYTES, PROTOCOL_VERSION,
    ReplyError, Request, Response, ServerFrame,
};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::base::log_summary::LogSummary;
use crate::base::{ObjectKey, reserved};
use crate::config::auth::Credential;
use crate::message::connection::{Connection, ConnectionSink, Room};
use crate::message::{Envelope, ReplyTo};
use crate::observe::ConnectionCounters;
use crate::routing::Router;

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

/// Accepts connections on `listener` until `shutdown` resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Arc<Router>,
    counters: Arc<ConnectionCounters>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let open = counters.open.load(Ordering::SeqCst);
                    if open >= router.ctx.config.max_connections as u64 {
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
                            let max = router.ctx.config.max_connections;
                            tokio::spawn(async move {
                                refuse(stream, max).await;
                                counters.refusing.fetch_sub(1, Ordering::SeqCst);
                            });
                        }
                        continue;
                    }
                    counters.open.fetch_add(1, Ordering::SeqCst);
                    let open = OpenConnection(counters.clone());
                    tokio::spawn(serve_connection(stream, peer, router.clone(), open));
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
async fn refuse(stream: TcpStream, max_connections: usize) {
    let (mut read_half, write_half) = stream.into_split();
    let connection = Connection::new(FrameWriter::start(write_half));
    connection.send_frame(&ServerFrame::Goodbye {
        reason: format!("too many connections: this silo serves at most {max_connections}"),
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
    /// The hello's token was wrong or missing; the reason goes in the
    /// goodbye, and refusals are logged as a periodic summary (a scanner
    /// guessing tokens must not flood the log).
    Unauthorized(String),
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Arc<Router>,
    open: OpenConnection,
) {
    let _ = stream.set_nodelay(true);
    let Some(tls) = &router.ctx.config.tls else {
        let (read_half, write_half) = stream.into_split();
        let writer = FrameWriter::start(write_half);
        return serve_stream(read_half, writer, peer, router, open).await;
    };
    let timeout = router.ctx.config.handshake_timeout;
    let failure = match tokio::time::timeout(timeout, tls.acceptor.accept(stream)).await {
        Ok(Ok(session)) => {
            let (read_half, write_half) = tokio::io::split(session);
            let writer = FrameWriter::start_stream(Box::new(write_half));
            return serve_stream(read_half, writer, peer, router, open).await;
        }
        Ok(Err(error)) => format!("TLS handshake failed: {error}"),
        Err(_) => format!("no TLS handshake within {} ms", timeout.as_millis()),
    };
    open.0.closed_misbehaving.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(%peer, reason = %one_line(&failure), "closing a misbehaving connection");
}

/// Serves one connection, plain or TLS, once its bytes flow.
async fn serve_stream<R: tokio::io::AsyncRead + Unpin>(
    read_half: R,
    writer: Arc<FrameWriter>,
    peer: SocketAddr,
    router: Arc<Router>,
    open: OpenConnection,
) {
    let config = &router.ctx.config;
    let mut reader = FrameReader::new(read_half, config.max_frame_bytes);
    let connection = Connection::new(writer);
    let counters = &open.0;

    let end = match tokio::time::timeout(config.handshake_timeout, handshake(&mut reader)).await {
        Err(_) => End::Misbehaved(format!(
            "no hello within {} ms",
            config.handshake_timeout.as_millis()
        )),
        Ok(Err(None)) => End::Left,
        Ok(Err(Some(reason))) => End::Misbehaved(reason),
        Ok(Ok(token)) => match config.auth.credential(token.as_deref()) {
            Ok(credential) => {
                connection.send_frame(&ServerFrame::Welcome {
                    protocol_version: PROTOCOL_VERSION,
                });
                read_requests(&mut reader, &connection, &router, credential).await
            }
            Err(reason) => End::Unauthorized(reason),
        },
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
            connection.send_frame(&ServerFrame::Goodbye { reason });
            GOODBYE_LINGER
        }
        End::Unauthorized(reason) => {
            counters.unauthorized.fetch_add(1, Ordering::Relaxed);
            if let Some(refused) = UNAUTHORIZED_LOG.note() {
                tracing::warn!(%peer, %reason, refused, "refusing connections: bad or missing token");
            }
            connection.send_frame(&ServerFrame::Goodbye { reason });
            GOODBYE_LINGER
        }
        End::Misbehaved(reason) => {
            counters.closed_misbehaving.fetch_add(1, Ordering::Relaxed);
            let reason = one_line(&reason);
            tracing::warn!(%peer, %reason, "closing a misbehaving connection");
            connection.send_frame(&ServerFrame::Goodbye { reason });
            GOODBYE_LINGER
        }
    };
    // Replies still in flight after this are dropped: the peer has gone,
    // idled out or misbehaved.
    connection.close(linger).await;
    drop(open);
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
) -> End {
    let config = &router.ctx.config;
    let idle_timeout = config.connection_idle_timeout;
    // The latest deadline of a request read so far: after a half-close the
    // replies are waited for until then.
    let mut latest_deadline = Instant::now();
    let mut last_activity = Instant::now();
    // One timer for the connection's life, re-armed only when it fires.
    let idle_timer = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle_timer);
    loop {
        let room = connection.room(
            config.max_requests_in_flight,
            config.max_unread_reply_bytes,
            idle_timeout,
        );
        if let Room::Stalled = room.await {
            return End::Misbehaved(format!(
                "{} bytes of replies left unread for {} s",
                connection.unsent_bytes(),
                idle_timeout.as_secs()
            ));
        }
        let read = tokio::select! {
            biased;
            read = reader.next_body() => read,
            _ = &mut idle_timer => {
                let now = Instant::now();
                if connection.in_flight() > 0 || connection.unsent_bytes() > 0 {
                    // Work still owed counts as activity: idle time starts
                    // once it is done (seen within an eighth of the timeout).
                    last_activity = now;
                } else if now >= last_activity + idle_timeout {
                    return End::Idle;
                }
                let idle_until = last_activity + idle_timeout;
                idle_timer.as_mut().reset(idle_until.min(now + idle_timeout / 8).max(now + Duration::from_millis(1)));
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
                if let Err(refused) = config.auth.check(credential, &request) {
                    connection.request_sink().reply(id, Err(refused));
                    continue;
                }
                handle_request(id, request, deadline, connection.request_sink(), router);
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

/// When the caller of `request` stops waiting for its reply.
fn request_deadline(request: &Request) -> Instant {
    match request {
        Request::Call(call) | Request::RoutedCall(call) => call_deadline(call.timeout_ms),
        Request::Forward(forward) => call_deadline(forward.call.timeout_ms),
        _ => call_deadline(None),
    }
}

/// Finds `{"Request": {"id": N, ..}}` in a frame whose request part is not
/// one this silo knows, so the client gets an answer rather than a hang.
fn recover_request_id(body: &[u8]) -> Option<u64> {
    let value: ciborium::Value = ciborium::from_reader(body).ok()?;
    let (tag, inner) = value.as_map()?.first()?;
    if tag.as_text()? != "Request" {
        return None;
    }
    let (_, id) = inner
        .as_map()?
        .iter()
        .find(|(key, _)| key.as_text() == Some("id"))?;
    u64::try_from(id.as_integer()?).ok()
}

fn handle_request(
    id: u64,
    request: Request,
    deadline: Instant,
    sink: ConnectionSink,
    router: &Arc<Router>,
) {
    let report_owner = matches!(request, Request::RoutedCall(_));
    match request {
        Request::Call(mut call) | Request::RoutedCall(mut call) => {
            let key = ObjectKey::new(&call.service_type, &call.object_id);
            if let Err(error) = reserved::check_client_call(&call.message_type, &key) {
                return sink.reply(id, Err(error));
            }
            let idempotency_key = match checked_idempotency_key(call.idempotency_key.take()) {
                Ok(idempotency_key) => idempotency_key,
                Err(error) => return sink.reply(id, Err(error)),
            };
            let reply = ReplyTo::Connection {
                request_id: id,
                sink,
                report_owner,
            };
            router.route(
                key,
                Envelope::from_call(call, idempotency_key, reply, deadline),
            );
        }
        Request::Forward(mut forward) => {
            let call = &mut forward.call;
            let key = ObjectKey::new(&call.service_type, &call.object_id);
            let idempotency_key = match checked_idempotency_key(call.idempotency_key.take()) {
                Ok(idempotency_key) => idempotency_key,
                Err(error) => return sink.reply(id, Err(error)),
            };
            let reply = ReplyTo::Connection {
                request_id: id,
                sink,
                report_owner: false,
            };
            let envelope = Envelope::from_forward(forward, idempotency_key, reply, deadline);
            router.route(key, envelope);
        }
        Request::Waits(report) => {
            crate::cluster::note_wait_report(&router.waits, report);
            sink.reply(id, Ok(Response::Noted));
        }
        Request::Ping => sink.reply(
            id,
            Ok(Response::Pong {
                generation: router.ctx.effects.committer.generation(),
            }),
        ),
        Request::Members => {
            let router = router.clone();
            tokio::spawn(async move {
                sink.reply(id, router.members().await.map(Response::Members));
            });
        }
        Request::Deploy {
            service_type,
            component,
        } => {
            let router = router.clone();
            tokio::spawn(async move {
                let result = router
                    .ctx
                    .deployments
                    .deploy(&service_type, component)
                    .await;
                sink.reply(id, result.map(Response::Deployed));
            });
        }
        Request::Undeploy { service_type } => {
            let router = router.clone();
            tokio::spawn(async move {
                let result = router.ctx.deployments.undeploy(&service_type).await;
                sink.reply(id, result.map(Response::Undeployed));
            });
        }
        Request::ListDeployments => {
            sink.reply(id, Ok(Response::Deployments(router.ctx.deployments.list())))
        }
        Request::Stats => sink.reply(id, Ok(Response::Stats(router.ctx.counters.stats()))),
        Request::DeadLetters {
            receiver_type,
            limit,
        } => {
            let router = router.clone();
            tokio::spawn(async move {
                let store = router.ctx.effects.store();
                let payload_limit = router.ctx.config.limits.payload_bytes;
                let listed = crate::effects::outbox::dead_letters(
                    &**store,
                    payload_limit,
                    receiver_type,
                    limit,
                )
                .await;
                sink.reply(id, listed.map(Response::DeadLetters));
            });
        }
    }
}

/// A call's idempotency key, if it is one the stores can index.
fn checked_idempotency_key(key: Option<String>) -> Result<Option<Arc<str>>, ReplyError> {
    match key {
        None => Ok(None),
        Some(key) if key.is_empty() => Err(ReplyError::BadRequest(
            "the idempotency key is empty".into(),
        )),
        Some(key) if key.len() > MAX_IDEMPOTENCY_KEY_BYTES => Err(ReplyError::BadRequest(format!(
            "the idempotency key is {} bytes long; at most {MAX_IDEMPOTENCY_KEY_BYTES} are allowed",
            key.len()
        ))),
        Some(key) => Ok(Some(key.into())),
    }
}

/// When the caller of a request stops waiting: what it said, or as long as
/// `rio-client` waits by default when it said nothing (an older client).
fn call_deadline(timeout_ms: Option<u64>) -> Instant {
    let wait = timeout_ms.map_or(rio_client::DEFAULT_TIMEOUT, Duration::from_millis);
    // A far-off deadline (u64::MAX ms) must not overflow the clock.
    Instant::now()
        .checked_add(wait)
        .unwrap_or_else(|| Instant::now() + rio_client::DEFAULT_TIMEOUT * 1000)
}
