//! A message whose object lives elsewhere, or may: placing it through the
//! cluster, then passing it to its owner and the reply back.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rio_protocol::ReplyError;
use tokio::time::Instant;

use super::Router;
use crate::activation;
use crate::activation::directory::Settled;
use crate::base::ObjectKey;
use crate::cluster::{ForwardFailure, Route};
use crate::message::Envelope;
use crate::runtime::deployments::DeployedType;
use crate::storage::SiloId;

/// A message is passed between silos at most this often: placement races
/// settle in one extra hop.
const MAX_HOPS: u8 = 3;
/// How far apart a message is re-sent to an owner that could not be
/// reached, until the cluster declares that owner dead or the message's
/// deadline passes.
const REDELIVERY_DELAY: Duration = Duration::from_millis(250);

impl Router {
    /// Asks the cluster where `key` lives and sends the messages waiting in
    /// its `Placing` slot there: into a new activation or to another silo.
    pub(super) async fn place(self: &Arc<Self>, key: ObjectKey, sent_to_me: bool) {
        let Some(cluster) = self.ctx.cluster.clone() else {
            return;
        };
        // Deployments are replaced, never removed: a type known here stays.
        let route = match self.deployed_here(&key).await {
            Ok(deployed) => cluster
                .route(&key, sent_to_me, self.is_closing())
                .await
                .map(|route| (route, deployed)),
            Err(error) => Err(error),
        };
        let here = matches!(route, Ok((Route::Local, _)));
        let full = here && self.full(self.ctx.directory.occupancy()).is_some();
        match (self.ctx.directory.settle_placement(&key, here, full), route) {
            (Settled::Here(inbox, handle), Ok((_, deployed))) => {
                activation::spawn(
                    &self.ctx,
                    self.clone().links(),
                    key,
                    deployed,
                    inbox,
                    handle,
                );
            }
            (Settled::Elsewhere(waiting), Ok((Route::Remote(owner), _))) => {
                for envelope in waiting {
                    let router = self.clone();
                    let (key, owner) = (key.clone(), owner.clone());
                    self.ctx
                        .effects
                        .tasks
                        .spawn(async move { router.forward(key, owner, envelope).await });
                }
            }
            (Settled::Elsewhere(waiting), Err(error)) => {
                for envelope in waiting {
                    envelope.reply.send(Err(error.clone()));
                }
            }
            (Settled::Elsewhere(_), Ok((Route::Local, _))) | (Settled::Here(..), Err(_)) => {
                unreachable!("settled as asked")
            }
        }
    }

    /// The object's type as deployed here, after looking for deployments
    /// made through other silos if it is not.
    async fn deployed_here(&self, key: &ObjectKey) -> Result<Arc<DeployedType>, ReplyError> {
        if let Some(deployed) = self.ctx.deployments.get(&key.service_type) {
            return Ok(deployed);
        }
        if let Err(error) = self.ctx.deployments.refresh().await {
            tracing::warn!(%error, "cannot read the deployments of the cluster");
        }
        self.ctx
            .deployments
            .get(&key.service_type)
            .ok_or_else(|| ReplyError::UnknownType {
                service_type: key.service_type.to_string(),
            })
    }

    /// Sends one message to the silo that owns its object, and its reply
    /// back where the message came from.
    async fn forward(self: &Arc<Self>, key: ObjectKey, owner: SiloId, mut envelope: Envelope) {
        let Some(cluster) = self.ctx.cluster.clone() else {
            return;
        };
        if envelope.hops >= MAX_HOPS {
            let message =
                format!("{key} was passed between silos {MAX_HOPS} times without settling");
            return envelope.reply.send(Err(ReplyError::Unavailable(message)));
        }
        let time_left = envelope.deadline.saturating_duration_since(Instant::now());
        let client = match cluster
            .peers
            .call_connection(&owner.address, time_left)
            .await
        {
            Ok(client) => client,
            Err(reason) => {
                cluster.forget_route(&key);
                if Instant::now() + REDELIVERY_DELAY >= envelope.deadline {
                    let message = format!(
                        "{key} is on {owner}, which could not be reached before the call's deadline ({reason}); the message was not delivered"
                    );
                    return envelope.reply.send(Err(ReplyError::Unavailable(message)));
                }
                // Nothing was sent, so trying again is safe. The owner may be
                // dead and not yet declared so: ask again shortly, until the
                // cluster moves the object.
                tokio::time::sleep(REDELIVERY_DELAY).await;
                return self.route(key, envelope);
            }
        };
        // From here the message leaves for good, so its payload moves along,
        // and its reply is this task's to give (unless a deadlock was found
        // while it waited to be placed: then it was answered already).
        envelope.reply = match envelope.reply.claim() {
            Some(reply) => reply,
            None => return,
        };
        let remaining = envelope.deadline.saturating_duration_since(Instant::now());
        let request = envelope.take_forward(&key);
        self.ctx
            .counters
            .forwarded_total
            .fetch_add(1, Ordering::Relaxed);
        match cluster
            .peers
            .forward(&owner.address, client, request, remaining)
            .await
        {
            Ok(reply) => envelope.reply.send_from(Ok(reply), Some(&owner.address)),
            Err(ForwardFailure::Reply(error)) => envelope.reply.send(Err(error)),
            Err(ForwardFailure::Lost(reason)) => {
                cluster.forget_route(&key);
                let message = format!(
                    "the connection to {owner}, which owns {key}, broke after the message was sent ({reason}); it may or may not have run"
                );
                envelope.reply.send(Err(ReplyError::Unavailable(message)));
            }
        }
    }
}
