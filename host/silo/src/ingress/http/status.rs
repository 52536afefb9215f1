//! The gateway's one table from error kind to HTTP status, and the JSON
//! body every error carries: `{"error": {"kind", "message"}}`.
//!
//! The classes follow the CLI's exit codes (README, "From scripts"): what
//! decides a status is whether anything ran and whether a retry can help.
//! A guest error whose kind is one of the shared kinds (`SHARED_KINDS`,
//! e.g. a `deadlock` passed on from a callee) gets that kind's status; any
//! other guest kind is `422`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rio_protocol::ReplyError;
use rio_protocol::error::SHARED_KINDS;
use serde_json::json;

/// Kinds by status, in the order the README lists them (a test holds the
/// README to it); the OpenAPI document lists them too.
pub(crate) const STATUS_TABLE: &[(u16, &[&str])] = &[
    (400, &["bad-request", "bad-data", "invalid-component"]),
    (
        401,
        &["unauthorized (no token, or a token this silo does not accept)"],
    ),
    (
        403,
        &["unauthorized (a token whose scope does not allow this)"],
    ),
    (404, &["unknown-type", "unknown-message", "unknown-route"]),
    (405, &["method-not-allowed"]),
    (408, &["request-timeout"]),
    (409, &["deadlock", "cycle"]),
    (413, &["too-large"]),
    (422, &["(the guest's own kind)"]),
    (429, &["overloaded"]),
    (500, &["trap", "internal"]),
    (503, &["unavailable"]),
    (504, &["timeout"]),
];

/// Seconds a caller told `overloaded` or `unavailable` waits before it
/// tries again (`Retry-After`).
const RETRY_AFTER_SECS: &str = "1";

/// A failed request as the gateway answers it.
#[derive(Debug)]
pub(crate) struct HttpError {
    pub(crate) status: StatusCode,
    pub(crate) kind: String,
    pub(crate) message: String,
}

impl HttpError {
    pub(crate) fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            kind: kind.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::BAD_REQUEST, "bad-request", message)
    }
}

/// The status of a kind the silo or a guest replied with.
pub(crate) fn status_of_kind(kind: &str, from_guest: bool) -> StatusCode {
    if from_guest && !SHARED_KINDS.contains(&kind) {
        return StatusCode::UNPROCESSABLE_ENTITY;
    }
    match kind {
        "bad-request" | "bad-data" | "invalid-component" => StatusCode::BAD_REQUEST,
        // Only a token's scope reaches here: a missing or wrong token is
        // answered 401 before anything is asked of the silo.
        "unauthorized" => StatusCode::FORBIDDEN,
        "unknown-type" | "unknown-message" => StatusCode::NOT_FOUND,
        "deadlock" | "cycle" => StatusCode::CONFLICT,
        "overloaded" => StatusCode::TOO_MANY_REQUESTS,
        "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        "timeout" => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<ReplyError> for HttpError {
    fn from(error: ReplyError) -> HttpError {
        let from_guest = matches!(error, ReplyError::Guest { .. });
        let kind = error.kind().to_string();
        let message = match error {
            ReplyError::Guest { message, .. } => message,
            other => other.to_string(),
        };
        HttpError {
            status: status_of_kind(&kind, from_guest),
            kind,
            message,
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"kind": self.kind, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        match self.status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECS),
                );
            }
            StatusCode::UNAUTHORIZED => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"rio\""),
                );
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(error: ReplyError) -> u16 {
        HttpError::from(error).status.as_u16()
    }

    #[test]
    fn every_reply_error_has_the_status_of_the_table() {
        let text = || "x".to_string();
        let cases = [
            (ReplyError::BadRequest(text()), 400),
            (ReplyError::InvalidComponent(text()), 400),
            (ReplyError::Unauthorized(text()), 403),
            (
                ReplyError::UnknownType {
                    service_type: text(),
                },
                404,
            ),
            (
                ReplyError::UnknownMessage {
                    service_type: text(),
                    message_type: text(),
                },
                404,
            ),
            (ReplyError::Deadlock(text()), 409),
            (ReplyError::Cycle(text()), 409),
            (ReplyError::Overloaded(text()), 429),
            (ReplyError::Trap(text()), 500),
            (ReplyError::Internal(text()), 500),
            (ReplyError::Unavailable(text()), 503),
            (ReplyError::Timeout(text()), 504),
        ];
        for (error, expected) in cases {
            let kind = error.kind().to_string();
            assert_eq!(status(error), expected, "{kind}");
            let listed = STATUS_TABLE
                .iter()
                .find(|(_, kinds)| kinds.iter().any(|k| k.starts_with(kind.as_str())))
                .map(|(code, _)| *code);
            assert!(
                listed == Some(expected) || kind == "unauthorized",
                "{kind} is listed under {listed:?}, answered {expected}"
            );
        }
    }

    #[test]
    fn the_readme_table_gives_every_status_the_kinds_given_here() {
        let readme = include_str!("../../../../../README.md");
        let section = readme
            .split("## Call over HTTP")
            .nth(1)
            .expect("the README has its section");
        for (status, kinds) in STATUS_TABLE {
            let row = section
                .lines()
                .find(|line| line.starts_with(&format!("| {status} |")))
                .unwrap_or_else(|| panic!("no README row for status {status}"));
            for kind in kinds.iter().filter(|kind| !kind.starts_with('(')) {
                let kind = kind.split(' ').next().unwrap();
                assert!(
                    row.contains(&format!("`{kind}`")),
                    "{status}: `{kind}` in {row}"
                );
            }
        }
    }

    #[test]
    fn a_guest_kind_is_422_unless_it_is_a_shared_kind() {
        let guest = |kind: &str| ReplyError::Guest {
            kind: kind.into(),
            message: "said no".into(),
        };
        assert_eq!(status(guest("insufficient-funds")), 422);
        assert_eq!(status(guest("deadlock")), 409);
        assert_eq!(status(guest("bad-data")), 400);
        let error = HttpError::from(guest("insufficient-funds"));
        assert_eq!(error.kind, "insufficient-funds");
        assert_eq!(error.message, "said no");
    }

    #[test]
    fn overloaded_and_unavailable_say_when_to_retry() {
        for error in [
            ReplyError::Overloaded("full".into()),
            ReplyError::Unavailable("gone".into()),
        ] {
            let response = HttpError::from(error).into_response();
            assert_eq!(response.headers()[header::RETRY_AFTER], RETRY_AFTER_SECS);
        }
    }
}
