//! The HTTP/JSON gateway (`--http ADDR`): the wire protocol's requests in
//! another encoding, for callers that are not `rio-client`.
//!
//! Each route becomes one protocol `Request`, checked against the bearer
//! token's credential by the same `AuthConfig::check` and answered by the
//! same `handle_request` as a frame read from a wire connection (its reply
//! goes to a waiting sink instead of a socket), so the gateway adds no
//! second path into the silo: a call through it is routed, forwarded,
//! made idempotent and bounded exactly as a wire call is.
//!
//! Invariants:
//! - Every answer that is not a success has the JSON body
//!   `{"error": {"kind", "message"}}` and the status of `status`'s table,
//!   also for what never reaches the silo (an unknown route, a body that is
//!   not JSON or is too large, a missing token).
//! - Nothing a client sends can hold more than its bounds: a body is read
//!   up to the payload limit (a component up to the frame limit) and must
//!   arrive within the frame timeout; a request's headers (and the wait
//!   for them between requests) within the connection idle timeout;
//!   connections beyond the silo's cap (its own, the wire protocol's size)
//!   wait in the listen queue; an HTTP/2 connection has at most the wire
//!   protocol's requests in flight as streams. Unlike
//!   the wire protocol's hello, there is no shorter first deadline nor
//!   eviction of the oldest unfinished request.
//! - A wrong token waits before its 401 as a wrong hello does (`hello`'s
//!   `FailedHellos`), so tokens cannot be guessed faster over HTTP.

mod admin;
mod dashboard;
mod events;
mod objects;
pub(super) mod openapi;
mod status;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post, put};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rio_protocol::{Request, Response};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::ServiceExt;

use self::status::HttpError;
use super::hello::FailedHellos;
use super::requests::handle_request;
use crate::config::auth::LiveAuth;
use crate::message::connection::ConnectionSink;
use crate::observe::ConnectionCounters;
use crate::routing::Router;

/// What every request of the gateway shares.
struct Gateway {
    router: Arc<Router>,
    auth: Arc<LiveAuth>,
    failed_tokens: FailedHellos,
}

/// The peer of the connection a request came on.
#[derive(Clone, Copy)]
struct Peer(SocketAddr);

type Shared = Arc<Gateway>;

/// Serves the gateway on `listener` until `shutdown` resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Arc<Router>,
    auth: Arc<LiveAuth>,
    shutdown: impl Future<Output = ()>,
) {
    let config = router.ctx.config.clone();
    let counters = router.ctx.counters.connections.clone();
    let gateway = Arc::new(Gateway {
        router,
        auth,
        failed_tokens: FailedHellos::new(config.failed_hello_delay),
    });
    let app = routes().with_state(gateway);
    let mut connections = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    connections
        .http1()
        .timer(TokioTimer::new())
        // hyper times a request's headers from the moment it waits for
        // them, idle between requests included, so this is also how long a
        // kept-alive connection may sit idle: as long as a wire one.
        .header_read_timeout(config.connection_idle_timeout);
    // An HTTP/2 connection's streams are its requests in flight, held to
    // the wire protocol's bound per connection.
    let streams = u32::try_from(config.max_requests_in_flight).unwrap_or(u32::MAX);
    connections
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(streams)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let connections = Arc::new(connections);
    let tls = config.tls.as_ref().map(|tls| tls.http_acceptor.clone());
    let places = Arc::new(Semaphore::new(config.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let place = tokio::select! {
            _ = &mut shutdown => return,
            place = places.clone().acquire_owned() => match place {
                Ok(place) => place,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let connections = connections.clone();
        let tls = tls.clone();
        let handshake_timeout = config.handshake_timeout;
        let open = HttpConnectionOpen::count(&counters);
        tokio::spawn(async move {
            let _place = place;
            let _open = open;
            let service = hyper::service::service_fn(move |mut request| {
                request.extensions_mut().insert(Peer(peer));
                app.clone().oneshot(request)
            });
            let served = match tls {
                None => {
                    connections
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(session)) => {
                            connections
                                .serve_connection(TokioIo::new(session), service)
                                .await
                        }
                        _ => return,
                    }
                }
            };
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "HTTP connection ended with an error");
            }
        });
    }
}

/// Counts an HTTP connection as open while it lives.
struct HttpConnectionOpen(Arc<ConnectionCounters>);

impl HttpConnectionOpen {
    fn count(counters: &Arc<ConnectionCounters>) -> HttpConnectionOpen {
        counters.http_open.fetch_add(1, Ordering::Relaxed);
        HttpConnectionOpen(counters.clone())
    }
}

impl Drop for HttpConnectionOpen {
    fn drop(&mut self) {
        self.0.http_open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route(
            "/v1/objects/{service_type}/{object_id}/{message_type}",
            post(objects::call),
        )
        .route(
            "/v1/objects/{service_type}/{object_id}/{message_type}/send",
            post(objects::send),
        )
        .route("/v1/deployments", get(admin::deployments))
        .route("/v1/openapi.json", get(admin::openapi))
        .route(
            "/v1/deployments/{service_type}",
            put(admin::deploy).delete(admin::undeploy),
        )
        .route("/v1/events", get(events::events))
        .route("/metrics", get(admin::metrics))
        .route("/dashboard", get(dashboard::page))
        .route("/v1/cluster/metrics", get(dashboard::cluster_metrics))
        .route("/v1/members", get(admin::members))
        .route("/v1/stats", get(admin::stats))
        .route("/v1/dead-letters", get(admin::dead_letters))
        .route("/v1/reminders", get(admin::reminders))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn unknown_route(uri: axum::http::Uri) -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        "unknown-route",
        format!(
            "no route {}; calls are POST /v1/objects/TYPE/ID/MESSAGE",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> HttpError {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!("{} does not take {method}", uri.path()),
    )
}

impl Gateway {
    /// Answers `request` as a wire connection holding the headers' bearer
    /// token would be answered, waiting at most until `deadline`.
    async fn ask(
        &self,
        headers: &HeaderMap,
        peer: Peer,
        request: Request,
        deadline: Instant,
    ) -> Result<Response, HttpError> {
        self.authorize(headers, peer, &request).await?;
        let (sink, reply) = ConnectionSink::waiting();
        handle_request(0, request, deadline, sink, &self.router);
        // The turn ends by its deadline; a moment more lets its own
        // `timeout` arrive rather than the gateway's.
        match tokio::time::timeout_at(deadline + REPLY_MARGIN, reply).await {
            Ok(Ok(result)) => Ok(result?),
            Ok(Err(_)) => Err(HttpError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the silo dropped the request without an answer",
            )),
            Err(_) => Err(HttpError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "no answer before the request's deadline",
            )),
        }
    }

    /// Whether the headers' bearer token allows `request`: a missing or
    /// wrong token is 401 (after the delay a wrong hello waits), a token
    /// whose scope does not allow it 403.
    async fn authorize(
        &self,
        headers: &HeaderMap,
        peer: Peer,
        request: &Request,
    ) -> Result<(), HttpError> {
        let token = bearer_token(headers)?;
        let auth = self.auth.current();
        let credential = match auth.credential(token) {
            Ok(credential) => credential,
            Err(reason) => {
                let delay = self.failed_tokens.note(peer.0.ip());
                tokio::time::sleep(delay).await;
                return Err(HttpError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    reason.replace(
                        "(rio: --token, --token-file or RIO_TOKEN)",
                        "(send `Authorization: Bearer TOKEN`)",
                    ),
                ));
            }
        };
        Ok(auth.check(credential, request)?)
    }

    /// The body of a request, at most `limit` bytes, arrived within the
    /// silo's frame timeout.
    async fn read_body(&self, body: Body, limit: usize) -> Result<Bytes, HttpError> {
        let timeout = self.router.ctx.config.frame_timeout;
        match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(error)) => {
                let too_large = std::error::Error::source(&error)
                    .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
                if too_large {
                    Err(HttpError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too-large",
                        format!("the body is over this silo's limit of {limit} bytes"),
                    ))
                } else {
                    Err(HttpError::bad_request(format!(
                        "cannot read the body: {error}"
                    )))
                }
            }
            Err(_) => Err(HttpError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request-timeout",
                format!(
                    "the body did not arrive whole within {} s",
                    timeout.as_secs()
                ),
            )),
        }
    }
}

/// How long past a request's deadline the gateway waits for its answer.
const REPLY_MARGIN: Duration = Duration::from_secs(1);

/// The token of an `Authorization: Bearer TOKEN` header, if there is one.
fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, HttpError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    // The scheme's name is case-insensitive (RFC 9110).
    let token = value
        .to_str()
        .ok()
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match token {
        Some(token) if !token.is_empty() => Ok(Some(token)),
        _ => Err(HttpError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the Authorization header must be `Bearer TOKEN`",
        )),
    }
}
