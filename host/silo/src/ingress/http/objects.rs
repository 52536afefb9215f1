//! `POST /v1/objects/{type}/{id}/{message}`: a call, its JSON body the
//! message and its JSON answer the reply; `…/send`: a one-way send,
//! `202 Accepted` once the receiver's silo stored it.

use std::time::Duration;

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use rio_protocol::json::{cbor_to_json, json_to_cbor};
use rio_protocol::{CallRequest, ENQUEUE_MESSAGE_TYPE, EnqueueRequest, Request, Response};
use serde_bytes::ByteBuf;
use tokio::time::Instant;

use super::status::HttpError;
use super::{Peer, Shared};
use crate::routing::client_call::call_deadline;

/// The header that carries a call's idempotency key.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The header that says how long the caller waits, in milliseconds.
const REQUEST_TIMEOUT: &str = "request-timeout";

type ObjectPath = Path<(String, String, String)>;

pub(super) async fn call(
    State(gateway): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path((service_type, object_id, message_type)): ObjectPath,
    headers: HeaderMap,
    body: Body,
) -> Result<HttpResponse, HttpError> {
    let payload = json_payload(&gateway, body).await?;
    let (call, deadline) = call_request(
        &gateway,
        &headers,
        service_type,
        object_id,
        message_type,
        payload,
    )?;
    let answer = gateway
        .ask(&headers, peer, Request::Call(call), deadline)
        .await?;
    let Response::Payload(reply) = answer else {
        return Err(HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the silo answered a call with something other than a reply",
        ));
    };
    let reply = cbor_to_json(&reply).map_err(|error| {
        HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "bad-data",
            format!("the handler's reply cannot be shown as JSON: {error}"),
        )
    })?;
    Ok(Json(reply).into_response())
}

pub(super) async fn send(
    State(gateway): State<Shared>,
    Extension(peer): Extension<Peer>,
    Path((service_type, object_id, message_type)): ObjectPath,
    headers: HeaderMap,
    body: Body,
) -> Result<HttpResponse, HttpError> {
    let payload = json_payload(&gateway, body).await?;
    let mut envelope = Vec::new();
    ciborium::into_writer(
        &EnqueueRequest {
            message_type,
            payload: ByteBuf::from(payload),
        },
        &mut envelope,
    )
    .map_err(|error| HttpError::bad_request(format!("cannot encode the message: {error}")))?;
    let (call, deadline) = call_request(
        &gateway,
        &headers,
        service_type,
        object_id,
        ENQUEUE_MESSAGE_TYPE.to_string(),
        envelope,
    )?;
    gateway
        .ask(&headers, peer, Request::Call(call), deadline)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"stored": true})),
    )
        .into_response())
}

/// A request's JSON body as the message's CBOR payload.
async fn json_payload(gateway: &Shared, body: Body) -> Result<Vec<u8>, HttpError> {
    let limit = gateway.router.ctx.config.limits.payload_bytes;
    let body = gateway.read_body(body, limit).await?;
    json_to_cbor(&body).map_err(|error| HttpError::bad_request(error.to_string()))
}

/// The protocol call of a route, with the caller's idempotency key and its
/// deadline (`Request-Timeout`, capped by the silo).
fn call_request(
    gateway: &Shared,
    headers: &HeaderMap,
    service_type: String,
    object_id: String,
    message_type: String,
    payload: Vec<u8>,
) -> Result<(CallRequest, Instant), HttpError> {
    let idempotency_key = match headers.get(IDEMPOTENCY_KEY) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| HttpError::bad_request("the Idempotency-Key header is not text"))?
                .to_string(),
        ),
    };
    let longest = longest_wait(gateway);
    let timeout_ms = match headers.get(REQUEST_TIMEOUT) {
        None => None,
        Some(value) => {
            let ms: u64 = value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse().ok())
                .ok_or_else(|| {
                    HttpError::bad_request(
                        "the Request-Timeout header must be a whole number of milliseconds",
                    )
                })?;
            Some(ms.min(longest.as_millis() as u64))
        }
    };
    let deadline = call_deadline(timeout_ms);
    let call = CallRequest {
        service_type,
        object_id,
        message_type,
        payload: ByteBuf::from(payload),
        timeout_ms,
        idempotency_key,
    };
    Ok((call, deadline))
}

/// The longest a caller may ask to wait: a turn's own deadline, or the
/// clients' default wait if that is longer (a call may queue behind others).
fn longest_wait(gateway: &Shared) -> Duration {
    gateway
        .router
        .ctx
        .config
        .turn_deadline
        .max(rio_client::DEFAULT_TIMEOUT)
}
