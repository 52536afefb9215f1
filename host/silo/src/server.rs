//! The TCP side of a silo: accepts connections and runs, per connection, a
//! reader task; replies are written by whoever produces them (see
//! `FrameWriter`).
//!
//! Invariant: nothing a peer sends can panic the silo. A frame that does not
//! decode gets an error reply when its request id can be recovered, and
//! otherwise a `Goodbye` with the reason before the connection is closed.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rio_protocol::codec::decode_body;
use rio_protocol::{
    ClientFrame, FrameError, FrameReader, FrameWriter, MAX_IDEMPOTENCY_KEY_BYTES, PROTOCOL_VERSION,
    ReplyError, Request, Response, ServerFrame,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::ObjectKey;
use crate::mailbox::{ConnectionSink, Envelope, ReplyTo};
use crate::router::Router;

/// Accepts connections on `listener` until `shutdown` resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Arc<Router>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(serve_connection(stream, peer, router.clone()));
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

async fn serve_connection(stream: TcpStream, peer: SocketAddr, router: Arc<Router>) {
    let _ = stream.set_nodelay(true);
    let (read_half, write_half) = stream.into_split();
    let mut reader = FrameReader::new(read_half, router.config.max_frame_bytes);
    let sink = ConnectionSink::new(FrameWriter::start(write_half));

    let reason = match handshake(&mut reader).await {
        Ok(()) => {
            sink.send_frame(&ServerFrame::Welcome {
                protocol_version: PROTOCOL_VERSION,
            });
            read_requests(&mut reader, &sink, &router).await
        }
        Err(reason) => Some(reason),
    };
    if let Some(reason) = reason {
        tracing::warn!(%peer, %reason, "closing connection");
        sink.send_frame(&ServerFrame::Goodbye { reason });
    }
    // Replies still in flight are dropped: the peer has gone or misbehaved.
    sink.close();
}

async fn handshake<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
) -> Result<(), String> {
    match reader.next_frame::<ClientFrame>().await {
        Ok(Some(ClientFrame::Hello { protocol_version }))
            if protocol_version == PROTOCOL_VERSION =>
        {
            Ok(())
        }
        Ok(Some(ClientFrame::Hello { protocol_version })) => Err(format!(
            "protocol version {protocol_version} is not supported; this silo speaks version {PROTOCOL_VERSION}"
        )),
        Ok(Some(_)) => Err("the first frame must be a hello".into()),
        Ok(None) => Err("closed before the hello".into()),
        Err(error) => Err(format!("bad hello: {error}")),
    }
}

/// Reads requests until the peer leaves (`None`) or misbehaves (`Some(reason)`).
async fn read_requests<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    sink: &ConnectionSink,
    router: &Arc<Router>,
) -> Option<String> {
    loop {
        let body = match reader.next_body().await {
            Ok(Some(body)) => body,
            Ok(None) => return None,
            Err(FrameError::Io(_) | FrameError::Truncated) => return None,
            Err(error) => return Some(error.to_string()),
        };
        match decode_body::<ClientFrame>(&body) {
            Ok(ClientFrame::Request { id, request }) => handle_request(id, request, sink, router),
            Ok(ClientFrame::Hello { .. }) => {
                return Some("a second hello on one connection".into());
            }
            Err(error) => match recover_request_id(&body) {
                Some(id) => sink.reply(
                    id,
                    Err(ReplyError::BadRequest(format!(
                        "cannot decode request: {error}"
                    ))),
                ),
                None => return Some(format!("undecodable frame: {error}")),
            },
        }
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

fn handle_request(id: u64, request: Request, sink: &ConnectionSink, router: &Arc<Router>) {
    let report_owner = matches!(request, Request::RoutedCall(_));
    match request {
        Request::Call(call) | Request::RoutedCall(call) => {
            let key = ObjectKey::new(&call.service_type, &call.object_id);
            let idempotency_key = match checked_idempotency_key(call.idempotency_key) {
                Ok(idempotency_key) => idempotency_key,
                Err(error) => return sink.reply(id, Err(error)),
            };
            let reply = ReplyTo::Connection {
                request_id: id,
                sink: sink.clone(),
                report_owner,
            };
            let deadline = call_deadline(call.timeout_ms);
            let mut envelope = Envelope::new(
                call.message_type,
                call.payload.into_vec(),
                router.empty_chain(),
                reply,
                deadline,
            );
            envelope.idempotency_key = idempotency_key;
            router.dispatch(key, envelope);
        }
        Request::Forward(forward) => {
            let call = forward.call;
            let key = ObjectKey::new(&call.service_type, &call.object_id);
            let idempotency_key = match checked_idempotency_key(call.idempotency_key) {
                Ok(idempotency_key) => idempotency_key,
                Err(error) => return sink.reply(id, Err(error)),
            };
            let chain: Vec<ObjectKey> = forward
                .call_chain
                .iter()
                .map(|(service_type, object_id)| ObjectKey::new(service_type, object_id))
                .collect();
            let reply = ReplyTo::Connection {
                request_id: id,
                sink: sink.clone(),
                report_owner: false,
            };
            let deadline = call_deadline(call.timeout_ms);
            let mut envelope = Envelope::new(
                call.message_type,
                call.payload.into_vec(),
                chain.into(),
                reply,
                deadline,
            );
            envelope.hops = forward.hops;
            envelope.waiting_since_us = forward.waiting_since_us;
            envelope.idempotency_key = idempotency_key;
            router.dispatch(key, envelope);
        }
        Request::Waits(report) => {
            crate::cluster::note_wait_report(&router.waits, report);
            sink.reply(id, Ok(Response::Noted));
        }
        Request::Ping => sink.reply(
            id,
            Ok(Response::Pong {
                generation: router.generation,
            }),
        ),
        Request::Members => {
            let (sink, router) = (sink.clone(), router.clone());
            tokio::spawn(async move {
                sink.reply(id, router.members().await.map(Response::Members));
            });
        }
        Request::Deploy {
            service_type,
            component,
        } => {
            let (sink, router) = (sink.clone(), router.clone());
            tokio::spawn(async move {
                let result = router.deployments.deploy(&service_type, component).await;
                sink.reply(id, result.map(Response::Deployed));
            });
        }
        Request::ListDeployments => {
            sink.reply(id, Ok(Response::Deployments(router.deployments.list())))
        }
        Request::Stats => sink.reply(id, Ok(Response::Stats(crate::stats::stats(router)))),
        Request::DeadLetters {
            receiver_type,
            limit,
        } => {
            let (sink, router) = (sink.clone(), router.clone());
            tokio::spawn(async move {
                let listed = crate::outbox::dead_letters(&router, receiver_type, limit).await;
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
