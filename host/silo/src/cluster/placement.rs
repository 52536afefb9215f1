//! Where an object's activation is, or goes: the placement store decides
//! between racing silos, the strategy picks a silo for a new activation.
//!
//! Take-over rule: an object whose owner was declared dead, or left and fell
//! silent (no heartbeat for `missed_probes + 1` probe intervals: killed or
//! frozen while handing over), or left more than [`LEAVING_OWNER_WAIT`] ago
//! and still holds it, is taken over by its next call. A leaving silo that
//! still heartbeats is waited for, since it commits and releases its
//! objects itself. Taking over too early can never let a stale write in:
//! commits are fenced by ownership, so the old owner's later commits fail.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use rio_protocol::ReplyError;

use super::{Cluster, storage};
use crate::base::ObjectKey;
use crate::config::PlacementStrategy;
use crate::storage::{SiloId, SiloStatus};

/// Where a message for an object that is not active here goes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// This silo owns the object: activate it here.
    Local,
    /// Pass the message to this silo.
    Remote(SiloId),
}

/// How long a message waits for a leaving silo that still heartbeats to
/// hand an object back, before taking it over anyway.
const LEAVING_OWNER_WAIT: Duration = Duration::from_secs(15);
const LEAVING_OWNER_POLL: Duration = Duration::from_millis(25);

impl Cluster {
    /// Decides where a message for `key` goes. `sent_to_me` says another
    /// silo chose this one; `leaving` that this silo is stopping and must
    /// activate nothing new.
    pub(crate) async fn route(
        &self,
        key: &ObjectKey,
        sent_to_me: bool,
        leaving: bool,
    ) -> Result<Route, ReplyError> {
        let me = self.me()?.clone();
        if sent_to_me {
            // The sender knew better than our memory, or it would not have
            // sent the message here: ask the store.
            self.forget_route(key);
        } else if let Some(owner) = self.cached_route(key)
            && owner != me
        {
            return Ok(Route::Remote(owner));
        }
        let deadline = tokio::time::Instant::now() + LEAVING_OWNER_WAIT;
        loop {
            let owner = self.store.placement.owner(key).await.map_err(storage)?;
            let Some(owner) = owner else {
                let target = if sent_to_me && !leaving {
                    me.clone()
                } else {
                    self.choose(key, &me, leaving)?
                };
                if target != me {
                    return Ok(Route::Remote(target));
                }
                let winner = self
                    .store
                    .placement
                    .claim(key, &me)
                    .await
                    .map_err(storage)?;
                return Ok(self.remote_unless_me(key, winner, &me));
            };
            if owner == me {
                if !leaving {
                    return Ok(Route::Local);
                }
                // A leftover entry of ours; while leaving, hand it back.
                self.release(key).await;
                continue;
            }
            match self.status_of(&owner).await {
                SiloStatus::Active => {
                    self.remember_route(key, &owner);
                    return Ok(Route::Remote(owner));
                }
                SiloStatus::Left
                    if !self.fell_silent(&owner) && tokio::time::Instant::now() < deadline =>
                {
                    // It is deactivating its objects and committing their
                    // state; the entry goes when that is done.
                    tokio::time::sleep(LEAVING_OWNER_POLL).await;
                }
                SiloStatus::Left | SiloStatus::Dead => {
                    let target = if sent_to_me && !leaving {
                        me.clone()
                    } else {
                        self.choose(key, &me, leaving)?
                    };
                    if target != me {
                        return Ok(Route::Remote(target));
                    }
                    match self
                        .store
                        .placement
                        .take_over(key, &owner, &me)
                        .await
                        .map_err(storage)?
                    {
                        Some(winner) => {
                            tracing::info!(object = %key, previous = %owner, "took over an object of a dead or vanished silo");
                            return Ok(self.remote_unless_me(key, winner, &me));
                        }
                        // Released meanwhile: claim it on the next round.
                        None => continue,
                    }
                }
            }
        }
    }

    fn remote_unless_me(&self, key: &ObjectKey, winner: SiloId, me: &SiloId) -> Route {
        if &winner == me {
            Route::Local
        } else {
            self.remember_route(key, &winner);
            Route::Remote(winner)
        }
    }

    /// The silo a new activation of `key` should go to.
    fn choose(&self, key: &ObjectKey, me: &SiloId, leaving: bool) -> Result<SiloId, ReplyError> {
        let mut candidates = self.active_silos();
        if leaving {
            candidates.retain(|silo| silo != me);
        } else if !candidates.contains(me) {
            candidates.push(me.clone());
            candidates.sort();
        }
        if candidates.is_empty() {
            return Err(ReplyError::Unavailable(
                "this silo is stopping and no other silo is active".into(),
            ));
        }
        let index = match self.config.placement {
            PlacementStrategy::PreferLocal if !leaving => return Ok(me.clone()),
            PlacementStrategy::Hash => stable_hash(key) as usize % candidates.len(),
            PlacementStrategy::PreferLocal | PlacementStrategy::Random => {
                random_below(candidates.len())
            }
        };
        Ok(candidates.swap_remove(index))
    }
}

/// The same number for the same key in every silo process.
fn stable_hash(key: &ObjectKey) -> u64 {
    // `DefaultHasher::new()` has fixed keys, unlike a `RandomState`.
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

fn random_below(n: usize) -> usize {
    use std::hash::BuildHasher;
    // Each `RandomState` is seeded afresh: good enough to spread objects,
    // without a dependency for it.
    let seed = std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now());
    (seed % n as u64) as usize
}
