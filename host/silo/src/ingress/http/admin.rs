//! What the CLI's admin commands do, over HTTP: deployments (listed with a
//! call token; deployed and undeployed with the admin token), members,
//! stats, dead letters and reminders.

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use rio_protocol::json::cbor_to_json;
use rio_protocol::{Request, Response};
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use super::status::HttpError;
use super::{Peer, Shared};

/// How long an admin request may take: a deploy compiles the component.
const ADMIN_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// The most entries a listing answers when the query names no `limit`.
const DEFAULT_LIMIT: u32 = 100;

type Answer = Result<Json<Value>, HttpError>;

async fn admin(gateway: &Shared, headers: &HeaderMap, peer: Peer, request: Request) -> Answer {
    let answer = gateway
        .ask(headers, peer, request, Instant::now() + ADMIN_WAIT)
        .await?;
    Ok(Json(to_json(answer)?))
}

pub(super) async fn deployments(
    State(gateway): State<Shared>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Answer {
    admin(&gateway, &headers, peer, Request::ListDeployments).await
}

/// `GET /v1/openapi.json` (`?type=T` for one type): the gateway's calls
/// as an OpenAPI 3.1 document.
pub(super) async fn openapi(
    State(gateway): State<Shared>,
    Extension(peer): Extension<Peer>,
    Query(listing): Query<Listing>,
    headers: HeaderMap,
) -> Answer {
    let request = Request::OpenApi {
        service_type: listing.service_type,
    };
    admin(&gateway, &headers, peer, request).await
}

/// `PUT /v1/deployments/{type}` with the component's bytes as the body.
pub(super) async fn deploy(
    State(gateway): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(service_type): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    // The token first: a caller without the admin token must not make the
    // silo read a component's worth of body (undeploy needs the same scope).
    let probe = Request::Undeploy {
        service_type: service_type.clone(),
    };
    gateway.authorize(&headers, peer, &probe).await?;
    let limit = gateway.router.ctx.config.max_frame_bytes;
    let component = gateway.read_body(body, limit).await?.to_vec();
    let request = Request::Deploy {
        service_type,
        component,
    };
    admin(&gateway, &headers, peer, request).await
}

pub(super) async fn undeploy(
    State(gateway): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path(service_type): Path<String>,
    headers: HeaderMap,
) -> Answer {
    admin(&gateway, &headers, peer, Request::Undeploy { service_type }).await
}

pub(super) async fn members(
    State(gateway): State<Shared>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Answer {
    admin(&gateway, &headers, peer, Request::Members).await
}

pub(super) async fn stats(
    State(gateway): State<Shared>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Answer {
    admin(&gateway, &headers, peer, Request::Stats).await
}

/// `GET /metrics`: every metric of this silo as OpenMetrics text, for
/// Prometheus to scrape (with the admin token, as `rio stats`).
pub(super) async fn metrics(
    State(gateway): State<Shared>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Result<axum::response::Response, HttpError> {
    use axum::response::IntoResponse;
    gateway.authorize(&headers, peer, &Request::Stats).await?;
    let text = gateway.router.metrics().map_err(HttpError::from)?;
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    Ok(([(axum::http::header::CONTENT_TYPE, content_type)], text).into_response())
}

#[derive(Deserialize)]
pub(super) struct Listing {
    /// A service type (dead letters: the receivers'; reminders: with `id`,
    /// one object's).
    #[serde(rename = "type")]
    service_type: Option<String>,
    id: Option<String>,
    limit: Option<u32>,
}

pub(super) async fn dead_letters(
    State(gateway): State<Shared>,
    Extension(peer): Extension<Peer>,
    Query(listing): Query<Listing>,
    headers: HeaderMap,
) -> Answer {
    let request = Request::DeadLetters {
        receiver_type: listing.service_type,
        limit: listing.limit.unwrap_or(DEFAULT_LIMIT),
    };
    admin(&gateway, &headers, peer, request).await
}

/// `GET /v1/reminders?type=T&id=I` lists one object's; without them, the
/// next due across the cluster.
pub(super) async fn reminders(
    State(gateway): State<Shared>,
    Extension(peer): Extension<Peer>,
    Query(listing): Query<Listing>,
    headers: HeaderMap,
) -> Answer {
    let object = match (listing.service_type, listing.id) {
        (Some(service_type), Some(id)) => Some((service_type, id)),
        (None, None) => None,
        _ => {
            return Err(HttpError::bad_request(
                "name both `type` and `id` for one object's reminders, or neither",
            ));
        }
    };
    let request = Request::Reminders {
        object,
        limit: listing.limit.unwrap_or(DEFAULT_LIMIT),
    };
    admin(&gateway, &headers, peer, request).await
}

/// An admin answer as JSON; payloads (CBOR by convention) are shown as the
/// JSON they decode to, or as their bytes if they are not CBOR.
fn to_json(answer: Response) -> Result<Value, HttpError> {
    let value = match answer {
        Response::Deployed(info) | Response::Undeployed(info) => serde_json::to_value(info),
        Response::Deployments(list) => serde_json::to_value(list),
        Response::Members(list) => serde_json::to_value(list),
        Response::Stats(stats) => serde_json::to_value(stats),
        Response::DeadLetters(list) => serde_json::to_value(list),
        Response::Reminders(list) => serde_json::to_value(list),
        Response::OpenApi(document) => serde_json::from_str(&document),
        _ => Ok(Value::Null),
    };
    let mut value = value.map_err(|error| {
        HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot show the answer as JSON: {error}"),
        )
    })?;
    if let Value::Array(items) = &mut value {
        for item in items {
            decode_payload(item);
        }
    }
    Ok(value)
}

fn decode_payload(item: &mut Value) {
    let Some(payload) = item.get_mut("payload") else {
        return;
    };
    let bytes: Option<Vec<u8>> = payload.as_array().and_then(|numbers| {
        numbers
            .iter()
            .map(|n| n.as_u64().and_then(|n| u8::try_from(n).ok()))
            .collect()
    });
    if let Some(decoded) = bytes.and_then(|bytes| cbor_to_json(&bytes).ok()) {
        *payload = decoded;
    }
}
