//! The live dashboard: `GET /dashboard`, one self-contained page (no
//! external assets), and `GET /v1/cluster/metrics`, every member's metrics
//! in one answer, which the page reads every two seconds.
//!
//! The page itself holds no data and needs no token: a browser cannot send
//! a bearer token when it opens a URL. The data route needs the admin
//! token, which the page asks for (or takes from the URL's fragment,
//! `#token=…`, which browsers never send to a server) and keeps in the
//! tab's session storage. Rates and quantiles are computed in the page
//! from successive readings of the counters, so the silo keeps no history:
//! the graphs start when the page opens (Prometheus is the place for
//! longer history).

use std::time::Duration;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use rio_protocol::Request;
use serde_json::{Value, json};

use super::status::HttpError;
use super::{Peer, Shared};

/// The page, HTML with its style and script inline.
const PAGE: &str = include_str!("dashboard.html");

/// How long the other silos have to answer with their metrics: a silo that
/// takes longer shows as not answering (frozen, or overloaded) and the
/// page goes on with the others.
const PEER_METRICS_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) async fn page() -> Response {
    let headers = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        // Everything is inline; nothing may be loaded from elsewhere.
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:",
        ),
    ];
    (headers, PAGE).into_response()
}

/// `GET /v1/cluster/metrics`: each member as the membership store lists
/// it, with its metrics text or why there is none.
pub(super) async fn cluster_metrics(
    State(gateway): State<Shared>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Result<Json<Value>, HttpError> {
    gateway.authorize(&headers, peer, &Request::Metrics).await?;
    let router = &gateway.router;
    let members = router.cluster_metrics(PEER_METRICS_TIMEOUT).await?;
    let silos: Vec<Value> = members
        .into_iter()
        .map(|(member, metrics)| {
            let (text, error) = match metrics {
                Ok(text) => (Some(text), None),
                Err(error) => (None, Some(error)),
            };
            json!({
                "address": member.address,
                "generation": member.generation,
                "status": member.status,
                "heartbeat_ms": member.heartbeat_ms,
                "metrics": text,
                "error": error,
            })
        })
        .collect();
    Ok(Json(json!({
        "served_by": router.ctx.address.get(),
        "now_ms": crate::base::clock::now_ms(),
        "silos": silos,
    })))
}
