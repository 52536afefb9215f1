//! One connection to a silo, shared by every clone of a [`Client`], and made
//! anew when the next request finds it closed (the silo's idle timeout, a
//! restart): a request is only ever sent on a connection once, so one in
//! flight when its connection broke still fails with `Closed`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rio_protocol::{
    CallRequest, ClientFrame, FrameError, FrameReader, FrameWriter, PROTOCOL_VERSION, ReplyError,
    Request, Response, ServerFrame, encode_frame,
};
use serde_bytes::ByteBuf;
use tokio::io::AsyncRead;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::subscription::Feed;
use crate::{Calls, ClientError, TlsConfig};

type ReplySender = oneshot::Sender<Result<Response, ReplyError>>;

/// The default time a call waits for its reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How [`Client::connect_with`] connects.
#[derive(Clone)]
pub struct ConnectOptions {
    /// The token the silo requires (a call token or the admin token), if any.
    pub token: Option<String>,
    /// Connect over TLS, trusting these certificates; `None`: plain TCP.
    pub tls: Option<TlsConfig>,
    /// The largest reply payload accepted (the silos' limit
    /// `payload-bytes`): a bigger frame closes the connection.
    pub max_reply_payload_bytes: usize,
    /// How long connecting may take, TLS handshake and hello included (also
    /// when the client connects again by itself): a silo that accepts the
    /// TCP connection but never answers (frozen, or overloaded) fails it
    /// with [`ClientError::Handshake`] rather than holding it for ever.
    pub connect_timeout: Duration,
}

/// The default for [`ConnectOptions::connect_timeout`]: the silo's own
/// default time for a hello, so a silo that is merely busy gets its due.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for ConnectOptions {
    fn default() -> ConnectOptions {
        ConnectOptions {
            token: None,
            tls: None,
            max_reply_payload_bytes: rio_protocol::DEFAULT_MAX_PAYLOAD_BYTES,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for ConnectOptions {
    // The token never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("tls", &self.tls)
            .field("max_reply_payload_bytes", &self.max_reply_payload_bytes)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// A connection to one silo. Clone it freely: clones share the connection
/// and may all have requests in flight at once. When a request finds the
/// connection closed (the silo closed an idle one, or restarted), the
/// client connects again, with the same options, before sending it.
#[derive(Clone)]
pub struct Client {
    link: Arc<Link>,
    timeout: Duration,
}

/// Where a client connects, and its connection now.
struct Link {
    address: String,
    options: ConnectOptions,
    current: Mutex<Arc<Session>>,
    /// Held while connecting again, so clones racing to do it connect once.
    redial: tokio::sync::Mutex<()>,
}

/// One connection; closed when the last holder drops it (the reader task
/// holds `shared`, so `Shared` itself cannot be the trigger).
pub(crate) struct Session {
    pub(crate) shared: Arc<Shared>,
    _open: CloseOnDrop,
}

pub(crate) struct Shared {
    next_id: AtomicU64,
    // A std mutex: held only to insert or remove one entry, never across an await.
    pending: Mutex<Pending>,
    writer: Arc<FrameWriter>,
}

impl Shared {
    /// The pending map, locked. A poisoned lock is taken over rather than
    /// turned into a panic in every later request: each critical section
    /// is one insert, one remove or setting `closed`, none of which can
    /// leave the map half-changed, so the data a panicking holder left is
    /// still consistent (at worst a waiter is missing, and its caller gets
    /// `Closed` or `Timeout` as for a lost connection).
    pub(crate) fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct CloseOnDrop(Arc<FrameWriter>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

pub(crate) struct Pending {
    waiting: HashMap<u64, ReplySender>,
    /// Where each subscription's events go, by the id of its request.
    pub(crate) feeds: HashMap<u64, Feed>,
    /// Set once the reader task ends, so late requests fail at once.
    closed: Option<String>,
}

impl Client {
    /// Connects to the silo at `address` (`host:port`) and does the
    /// handshake, without a token or TLS. It accepts replies of up to
    /// [`rio_protocol::DEFAULT_MAX_PAYLOAD_BYTES`], the silo's default limit
    /// `payload-bytes` (a silo answers a bigger reply with an error for that
    /// call alone); see [`Client::connect_with`] for the other options.
    pub async fn connect(address: &str) -> Result<Client, ClientError> {
        Client::connect_with(address, &ConnectOptions::default()).await
    }

    /// As [`Client::connect`], accepting reply payloads of up to
    /// `max_reply_payload_bytes`: the limit `payload-bytes` of silos that
    /// raised it. A frame over it (a silo with a higher limit) closes the
    /// connection, failing the calls in flight on it.
    pub async fn connect_accepting(
        address: &str,
        max_reply_payload_bytes: usize,
    ) -> Result<Client, ClientError> {
        let options = ConnectOptions {
            max_reply_payload_bytes,
            ..ConnectOptions::default()
        };
        Client::connect_with(address, &options).await
    }

    /// Connects with a token, TLS, or another reply limit (see
    /// [`ConnectOptions`]) and does the handshake. A silo that refuses the
    /// token answers with [`ClientError::Handshake`] saying why.
    pub async fn connect_with(
        address: &str,
        options: &ConnectOptions,
    ) -> Result<Client, ClientError> {
        let session = Session::open(address, options).await?;
        Ok(Client {
            link: Arc::new(Link {
                address: address.to_string(),
                options: options.clone(),
                current: Mutex::new(Arc::new(session)),
                redial: tokio::sync::Mutex::new(()),
            }),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The connection to send on: the current one, or a new one if it is
    /// closed.
    async fn session(&self) -> Result<Arc<Session>, ClientError> {
        let current = self.link.current();
        if !current.is_closed() {
            return Ok(current);
        }
        let _redialing = self.link.redial.lock().await;
        let current = self.link.current();
        if !current.is_closed() {
            return Ok(current);
        }
        let fresh = Arc::new(Session::open(&self.link.address, &self.link.options).await?);
        *self.link.lock() = fresh.clone();
        Ok(fresh)
    }
}

impl Link {
    fn lock(&self) -> std::sync::MutexGuard<'_, Arc<Session>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn current(&self) -> Arc<Session> {
        self.lock().clone()
    }
}

impl Session {
    fn is_closed(&self) -> bool {
        self.shared.pending().closed.is_some()
    }

    /// Connects and does the handshake, within the options' time.
    async fn open(address: &str, options: &ConnectOptions) -> Result<Session, ClientError> {
        let deadline = tokio::time::Instant::now() + options.connect_timeout;
        let late = || {
            ClientError::Handshake(format!(
                "{address} did not finish the handshake within {:?}",
                options.connect_timeout
            ))
        };
        let stream = tokio::time::timeout_at(deadline, TcpStream::connect(address))
            .await
            .map_err(|_| late())?
            .map_err(|source| ClientError::Connect {
                address: address.to_string(),
                source,
            })?;
        stream
            .set_nodelay(true)
            .map_err(|source| ClientError::Socket {
                address: address.to_string(),
                source,
            })?;
        let (read_half, writer): (Box<dyn AsyncRead + Send + Unpin>, _) = match &options.tls {
            None => {
                let (read_half, write_half) = stream.into_split();
                (Box::new(read_half), FrameWriter::start(write_half))
            }
            Some(tls) => {
                let session = tokio::time::timeout_at(deadline, tls.connect(address, stream))
                    .await
                    .map_err(|_| late())??;
                let (read_half, write_half) = tokio::io::split(session);
                (
                    Box::new(read_half),
                    FrameWriter::start_stream(Box::new(write_half)),
                )
            }
        };
        let max_reply_frame_bytes = options
            .max_reply_payload_bytes
            .saturating_add(rio_protocol::REPLY_FRAME_OVERHEAD_BYTES);
        // Closes the connection if the hello fails or this future is
        // dropped before it ends (a caller's own timeout): the writer's task
        // would otherwise keep the socket open.
        let open = CloseOnDrop(writer.clone());
        let mut reader = FrameReader::new(read_half, max_reply_frame_bytes);

        let mut hello = Vec::new();
        encode_frame(
            &ClientFrame::Hello {
                protocol_version: PROTOCOL_VERSION,
                token: options.token.clone(),
            },
            &mut hello,
        )?;
        if writer.send(&hello).is_err() {
            return Err(ClientError::Closed(
                "connection lost during the hello".into(),
            ));
        }
        let Ok(answer) =
            tokio::time::timeout_at(deadline, reader.next_frame::<ServerFrame>()).await
        else {
            return Err(late());
        };
        match answer {
            Ok(Some(ServerFrame::Welcome { .. })) => Ok(()),
            // A refusal the silo gave a kind is an error of that kind (a
            // wrong token is `unauthorized`, not a broken connection).
            Ok(Some(ServerFrame::Goodbye { reason, kind })) => Err(match kind.as_deref() {
                Some("unauthorized") => ClientError::Reply(ReplyError::Unauthorized(reason)),
                Some("overloaded") => ClientError::Reply(ReplyError::Overloaded(reason)),
                _ => ClientError::Handshake(reason),
            }),
            Ok(Some(other)) => Err(ClientError::Handshake(format!("unexpected {other:?}"))),
            Ok(None) => Err(ClientError::Handshake("silo closed the connection".into())),
            // What a TLS server answers a plain hello with is no frame; a
            // reset or a close says nothing of TLS.
            Err(error @ (FrameError::Malformed(_) | FrameError::TooLarge { .. }))
                if options.tls.is_none() =>
            {
                Err(ClientError::Handshake(format!(
                    "the answer is not a rio welcome ({error}); if the silo serves TLS, \
                     connect with its CA (rio: --tls-ca)"
                )))
            }
            Err(FrameError::Io(error)) => Err(ClientError::Handshake(format!(
                "the connection broke during the hello: {error}"
            ))),
            Err(error) => Err(error.into()),
        }?;

        let shared = Arc::new(Shared {
            next_id: AtomicU64::new(1),
            pending: Mutex::new(Pending {
                waiting: HashMap::new(),
                feeds: HashMap::new(),
                closed: None,
            }),
            writer: writer.clone(),
        });
        tokio::spawn(read_replies(reader, shared.clone()));
        Ok(Session {
            shared,
            _open: open,
        })
    }
}

impl Client {
    /// How long this client waits for a reply, in milliseconds: sent with
    /// each call so the silo stops the turn when nobody waits any more.
    pub fn timeout_ms(&self) -> u64 {
        u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX)
    }

    /// A client sharing this connection whose calls wait at most `timeout`.
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client {
            link: self.link.clone(),
            timeout,
        }
    }

    /// Whether the connection has ended (the silo closed it, or it broke);
    /// the next request connects again before it is sent.
    pub fn is_closed(&self) -> bool {
        self.link.current().is_closed()
    }

    /// Sends any request and waits for its reply. If the connection is
    /// found closed before the request is sent, it is made again first.
    pub async fn request(&self, request: Request) -> Result<Response, ClientError> {
        let (response, _, _) = self.send_request(request, None, None).await?;
        Ok(response)
    }

    /// Sends `request` on `session` only (a subscription's own connection).
    pub(crate) async fn request_on(
        &self,
        session: &Arc<Session>,
        request: Request,
    ) -> Result<Response, ClientError> {
        let (response, _, _) = self.send_request(request, None, Some(session)).await?;
        Ok(response)
    }

    /// Sends `request` and waits for its reply; `feed`, if given, receives
    /// the events frames tagged with the request's id from before the
    /// request is sent (a subscription). It goes `on` that session if
    /// given (failing if it closed), else on the client's. Answers the
    /// session it went on and the id it had.
    pub(crate) async fn send_request(
        &self,
        request: Request,
        mut feed: Option<Feed>,
        on: Option<&Arc<Session>>,
    ) -> Result<(Response, Arc<Session>, u64), ClientError> {
        let mut session = match on {
            Some(session) => session.clone(),
            None => self.session().await?,
        };
        let (reply_sender, reply) = oneshot::channel();
        let mut reply_sender = Some(reply_sender);
        // A connection that closed between the check and here has not had
        // this request: one more connection is tried.
        let mut id = 0;
        for attempt in 0..2 {
            let closed = {
                let mut pending = session.shared.pending();
                match &pending.closed {
                    Some(reason) => Some(reason.clone()),
                    None => {
                        id = session.shared.next_id.fetch_add(1, Ordering::Relaxed);
                        if let Some(sender) = reply_sender.take() {
                            pending.waiting.insert(id, sender);
                        }
                        if let Some(feed) = feed.take() {
                            pending.feeds.insert(id, feed);
                        }
                        None
                    }
                }
            };
            match closed {
                None => break,
                Some(reason) if attempt == 1 || on.is_some() => {
                    return Err(ClientError::Closed(reason));
                }
                Some(_) => session = self.session().await?,
            }
        }
        let mut frame = Vec::new();
        if let Err(error) = encode_frame(&ClientFrame::Request { id, request }, &mut frame) {
            session.shared.forget(id);
            return Err(error.into());
        }
        let shared = &session.shared;
        if shared.writer.send_within(frame, usize::MAX).is_err() {
            shared.forget(id);
            return Err(ClientError::Closed(shared.closed_reason()));
        }
        let outcome = match tokio::time::timeout(self.timeout, reply).await {
            Ok(Ok(result)) => result.map_err(ClientError::Reply),
            Ok(Err(_)) => Err(ClientError::Closed(shared.closed_reason())),
            Err(_) => {
                shared.forget(id);
                Err(ClientError::Timeout(self.timeout))
            }
        };
        match outcome {
            Ok(response) => Ok((response, session, id)),
            Err(error) => {
                session.shared.pending().feeds.remove(&id);
                Err(error)
            }
        }
    }
}

impl Shared {
    fn forget(&self, id: u64) {
        self.pending().waiting.remove(&id);
    }

    /// Sends `request` without waiting for its answer (which the reader
    /// then drops, as no one waits on its id); nothing if the connection
    /// has closed. For what must go out where nothing can wait: a drop.
    pub(crate) fn send_unanswered(&self, request: Request) {
        let id = {
            let pending = self.pending();
            if pending.closed.is_some() {
                return;
            }
            self.next_id.fetch_add(1, Ordering::Relaxed)
        };
        let mut frame = Vec::new();
        if encode_frame(&ClientFrame::Request { id, request }, &mut frame).is_ok() {
            let _ = self.writer.send_within(frame, usize::MAX);
        }
    }

    pub(crate) fn closed_reason(&self) -> String {
        self.pending()
            .closed
            .clone()
            .unwrap_or_else(|| "connection lost".into())
    }
}

/// A plain call, answered by (or forwarded from) the silo this client is
/// connected to.
impl Calls for Client {
    async fn call_raw_keyed(
        &self,
        service_type: &str,
        object_id: &str,
        message_type: &str,
        payload: Vec<u8>,
        idempotency_key: Option<&str>,
    ) -> Result<Vec<u8>, ClientError> {
        let request = Request::Call(CallRequest {
            service_type: service_type.to_string(),
            object_id: object_id.to_string(),
            message_type: message_type.to_string(),
            payload: ByteBuf::from(payload),
            timeout_ms: Some(self.timeout_ms()),
            idempotency_key: idempotency_key.map(str::to_string),
        });
        match self.request(request).await? {
            Response::Payload(bytes) => Ok(bytes.into_vec()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
}

async fn read_replies(
    mut reader: FrameReader<Box<dyn AsyncRead + Send + Unpin>>,
    shared: Arc<Shared>,
) {
    let reason = loop {
        match reader.next_frame::<ServerFrame>().await {
            Ok(Some(ServerFrame::Reply { id, result })) => {
                let waiter = shared.pending().waiting.remove(&id);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(result);
                }
            }
            Ok(Some(ServerFrame::Events {
                subscription,
                missed,
                events,
            })) => {
                let mut pending = shared.pending();
                if let Some(feed) = pending.feeds.get_mut(&subscription) {
                    feed.hand_over(missed, events);
                }
            }
            Ok(Some(ServerFrame::Goodbye { reason, .. })) => {
                break format!("silo said goodbye: {reason}");
            }
            Ok(Some(ServerFrame::Welcome { .. })) => {
                break "silo sent a second welcome".to_string();
            }
            Ok(None) => break "silo closed the connection".to_string(),
            Err(error) => break error.to_string(),
        }
    };
    tracing::debug!(%reason, "client connection closed");
    let mut pending = shared.pending();
    pending.closed = Some(reason);
    // Dropping the senders wakes every waiter with `Closed`, and ends
    // every subscription.
    pending.waiting.clear();
    pending.feeds.clear();
    drop(pending);
    shared.writer.close();
}
