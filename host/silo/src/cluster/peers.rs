//! Connections from this silo to the others: one for forwarded calls and
//! one for probes per peer, so a busy peer's queue cannot delay a probe
//! into a false suspicion.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rio_client::{Client, ClientError, ConnectOptions};
use rio_protocol::{Event, ForwardRequest, ReplyError, Request, Response, WaitReport};

use crate::config::auth::LiveAuth;

/// Why a forwarded call has no reply. (A call that could not be sent at
/// all fails earlier, at [`Peers::call_connection`], and may be retried.)
pub(crate) enum ForwardFailure {
    /// The connection broke after the call was sent: it may have run.
    Lost(String),
    /// The other silo answered with an error.
    Reply(ReplyError),
}

pub(crate) struct Peers {
    calls: Mutex<HashMap<String, Client>>,
    probes: Mutex<HashMap<String, Client>>,
    /// Published events, apart so that a burst of them delays neither
    /// calls nor probes.
    events: Mutex<HashMap<String, Client>>,
    /// How this silo connects to its peers: its `payload-bytes` (peers,
    /// configured alike, answer forwarded calls with replies up to that
    /// size), TLS if the silo serves it; the token is set per connection.
    options: ConnectOptions,
    /// The cluster secret presented to peers is the first of the current
    /// one (it may change by a rotation).
    auth: Arc<LiveAuth>,
}

/// How long a forwarded call's sender waits past the call's own deadline:
/// the owner answers `timeout` itself at the deadline; this margin covers
/// the trip back. Past it the owner is taken as unreachable (frozen, or the
/// reply lost), and the outcome is unknown.
const FORWARD_REPLY_MARGIN: Duration = Duration::from_secs(1);

/// How long connecting to a peer may take, hello included: a peer that
/// accepts but does not answer (frozen) is then treated as unreachable, and
/// the call, not sent, is routed again.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a wait report may take; later ones replace it anyway.
const REPORT_TIMEOUT: Duration = Duration::from_millis(500);

impl Peers {
    pub(crate) fn new(options: ConnectOptions, auth: Arc<LiveAuth>) -> Peers {
        Peers {
            calls: Mutex::default(),
            probes: Mutex::default(),
            events: Mutex::default(),
            options,
            auth,
        }
    }

    /// How a new connection to a peer is made now.
    fn options(&self) -> ConnectOptions {
        let mut options = self.options.clone();
        options.token = self
            .auth
            .current()
            .cluster_secret
            .as_ref()
            .map(|secret| secret.expose().to_string());
        options
    }

    /// The connection for forwarded calls to the silo at `address`, made
    /// within `within` (the call's time left); an error means nothing was
    /// sent.
    pub(crate) async fn call_connection(
        &self,
        address: &str,
        within: Duration,
    ) -> Result<Client, String> {
        let mut options = self.options();
        options.connect_timeout = within.min(PEER_CONNECT_TIMEOUT);
        connection(&self.calls, address, FORWARD_REPLY_MARGIN, &options)
            .await
            .map_err(|error| error.to_string())
    }

    /// Sends a forwarded call over `client`, the connection to `address`.
    pub(crate) async fn forward(
        &self,
        address: &str,
        client: Client,
        request: ForwardRequest,
        deadline: Duration,
    ) -> Result<Vec<u8>, ForwardFailure> {
        let client = client.with_timeout(deadline + FORWARD_REPLY_MARGIN);
        match client.request(Request::Forward(request)).await {
            Ok(Response::Payload(bytes)) => Ok(bytes.into_vec()),
            Ok(other) => Err(ForwardFailure::Reply(ReplyError::Internal(format!(
                "silo {address} answered a forwarded call with {other:?}"
            )))),
            Err(ClientError::Reply(error)) => Err(ForwardFailure::Reply(error)),
            // The connection is fine (other calls share it); this answer is late.
            Err(ClientError::Timeout(waited)) => Err(ForwardFailure::Lost(format!(
                "no answer within {waited:?}, past the call's deadline"
            ))),
            Err(error) => {
                drop_connection(&self.calls, address);
                Err(ForwardFailure::Lost(error.to_string()))
            }
        }
    }

    /// The generation of the silo at `address`, if it answers in time.
    pub(crate) async fn ping(&self, address: &str, timeout: Duration) -> Result<i64, String> {
        let attempt = async {
            // Its own timeout, whoever opened the shared probe connection.
            let mut options = self.options();
            options.connect_timeout = timeout;
            let client = connection(&self.probes, address, timeout, &options).await?;
            client.with_timeout(timeout).ping().await
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(generation)) => Ok(generation),
            Ok(Err(error)) => {
                drop_connection(&self.probes, address);
                Err(error.to_string())
            }
            Err(_) => {
                drop_connection(&self.probes, address);
                Err(format!("no answer within {timeout:?}"))
            }
        }
    }

    /// Sends this silo's long waits to the silo at `address`, over the
    /// probe connection; a report that does not arrive is simply missed
    /// (the next one follows shortly).
    pub(crate) async fn report_waits(&self, address: &str, report: WaitReport) {
        let attempt = async {
            let mut options = self.options();
            options.connect_timeout = REPORT_TIMEOUT;
            let client = connection(&self.probes, address, REPORT_TIMEOUT, &options).await?;
            client
                .with_timeout(REPORT_TIMEOUT)
                .request(Request::Waits(report))
                .await
        };
        match tokio::time::timeout(REPORT_TIMEOUT, attempt).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::debug!(%address, %error, "wait report not delivered"),
            Err(_) => tracing::debug!(%address, "wait report not delivered in time"),
        }
    }

    /// Passes `events` to the silo at `address` for its subscribers, with
    /// the counts by topic of earlier ones that did not reach it, within
    /// `timeout`.
    pub(crate) async fn publish(
        &self,
        address: &str,
        events: Vec<Event>,
        missed: Vec<(String, u64)>,
        timeout: Duration,
    ) -> Result<(), String> {
        let attempt = async {
            let mut options = self.options();
            options.connect_timeout = timeout;
            let client = connection(&self.events, address, timeout, &options).await?;
            client
                .with_timeout(timeout)
                .request(Request::Publish { events, missed })
                .await
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => {
                drop_connection(&self.events, address);
                Err(error.to_string())
            }
            Err(_) => {
                drop_connection(&self.events, address);
                Err(format!("no answer within {timeout:?}"))
            }
        }
    }

    /// The metrics of the silo at `address` (for a dashboard), over the
    /// probe connection, if it answers within `timeout`.
    pub(crate) async fn metrics(&self, address: &str, timeout: Duration) -> Result<String, String> {
        let attempt = async {
            let mut options = self.options();
            options.connect_timeout = timeout;
            let client = connection(&self.probes, address, timeout, &options).await?;
            client.with_timeout(timeout).request(Request::Metrics).await
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(Response::Metrics(text))) => Ok(text),
            Ok(Ok(other)) => Err(format!("answered {other:?}")),
            // A silo of an older version does not know the request.
            Ok(Err(ClientError::Reply(error))) => Err(error.to_string()),
            // Slow, not broken: the probes share the connection.
            Ok(Err(ClientError::Timeout(waited))) => Err(format!("no answer within {waited:?}")),
            Ok(Err(error)) => {
                drop_connection(&self.probes, address);
                Err(error.to_string())
            }
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }

    /// Closes the connections to a silo that is gone.
    pub(crate) fn forget(&self, address: &str) {
        drop_connection(&self.calls, address);
        drop_connection(&self.probes, address);
        drop_connection(&self.events, address);
    }
}

async fn connection(
    pool: &Mutex<HashMap<String, Client>>,
    address: &str,
    timeout: Duration,
    options: &ConnectOptions,
) -> Result<Client, ClientError> {
    if let Some(client) = pool.lock().unwrap_or_else(|p| p.into_inner()).get(address)
        && !client.is_closed()
    {
        return Ok(client.clone());
    }
    let client = Client::connect_with(address, options)
        .await?
        .with_timeout(timeout);
    // Two tasks may connect at once; the second connection simply wins.
    pool.lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(address.to_string(), client.clone());
    Ok(client)
}

fn drop_connection(pool: &Mutex<HashMap<String, Client>>, address: &str) {
    pool.lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(address);
}
