//! What one request read from a connection turns into: a routed call, or an
//! answer from the silo itself (members, deployments, stats, ...).

use std::sync::Arc;

use rio_protocol::{ReplyError, Request, Response};
use tokio::time::Instant;

use crate::base::ObjectKey;
use crate::message::Envelope;
use crate::message::ReplyTo;
use crate::message::connection::ConnectionSink;
use crate::routing::Router;
use crate::routing::client_call::{call_deadline, checked_idempotency_key};

/// When the caller of `request` stops waiting for its reply.
pub(super) fn request_deadline(request: &Request) -> Instant {
    match request {
        Request::Call(call) | Request::RoutedCall(call) => call_deadline(call.timeout_ms),
        Request::Forward(forward) => call_deadline(forward.call.timeout_ms),
        _ => call_deadline(None),
    }
}

/// Finds `{"Request": {"id": N, ..}}` in a frame whose request part is not
/// one this silo knows, so the client gets an answer rather than a hang.
pub(super) fn recover_request_id(body: &[u8]) -> Option<u64> {
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

pub(super) fn handle_request(
    id: u64,
    request: Request,
    deadline: Instant,
    sink: ConnectionSink,
    router: &Arc<Router>,
) {
    let report_owner = matches!(request, Request::RoutedCall(_));
    match request {
        Request::Call(call) | Request::RoutedCall(call) => {
            let reply = ReplyTo::Connection {
                request_id: id,
                sink,
                report_owner,
            };
            router.route_client_call(call, reply, deadline);
        }
        Request::Forward(mut forward) => {
            // The chain of turns waiting on this one, with its own: a peer's
            // chain is held to the same limit as a guest's calls.
            let depth = forward.call_chain.len() + 1;
            let limit = router.ctx.config.limits.call_depth;
            if depth > limit {
                return sink.reply(
                    id,
                    Err(ReplyError::BadRequest(format!(
                        "a forwarded call would make a chain of {depth} turns, over the silo's limit `call-depth` of {limit}"
                    ))),
                );
            }
            let call = &mut forward.call;
            let key = ObjectKey::new(&call.service_type, &call.object_id);
            // A peer passes on the silo's own keys (a reminder's fire).
            let idempotency_key = match checked_idempotency_key(call.idempotency_key.take(), true) {
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
        Request::Stats => sink.reply(
            id,
            Ok(Response::Stats(Box::new(router.ctx.counters.stats()))),
        ),
        Request::Metrics => sink.reply(id, router.metrics().map(Response::Metrics)),
        Request::OpenApi { service_type } => {
            let mut deployments = router.ctx.deployments.list();
            if let Some(only) = &service_type {
                deployments.retain(|deployment| deployment.service_type == *only);
                if deployments.is_empty() {
                    let error = ReplyError::UnknownType {
                        service_type: only.clone(),
                    };
                    return sink.reply(id, Err(error));
                }
            }
            let document = super::http::openapi::document(&deployments);
            sink.reply(id, Ok(Response::OpenApi(document.to_string())));
        }
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
        Request::Publish { events, missed } => {
            // In the reader, before the answer: the peer sends its next
            // batch after it, so events keep their order.
            router.ctx.events.arrived_from_peer(&events, &missed);
            sink.reply(id, Ok(Response::Noted));
        }
        // The connection's reader answers these itself (see `subscriptions`).
        Request::Subscribe { .. } | Request::Unsubscribe { .. } => sink.reply(
            id,
            Err(ReplyError::Internal(
                "a subscription reached the router".into(),
            )),
        ),
        Request::Reminders { object, limit } => {
            let store = router.ctx.effects.store().clone();
            tokio::spawn(async move {
                let object = object.map(|(service_type, id)| ObjectKey::new(&service_type, &id));
                let listed = crate::time::reminders::listing(&*store, object, limit).await;
                sink.reply(id, listed.map(Response::Reminders));
            });
        }
    }
}
