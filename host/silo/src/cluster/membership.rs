//! The membership agent: writes this silo's heartbeat, reads the table,
//! probes a few peers directly and declares a peer dead when enough
//! distinct silos suspect it, as Orleans does.
//!
//! Each silo probes the (up to) three active silos after it in address
//! order, so every silo is probed by several others and no silo probes all.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;

use super::{Cluster, now_ms};
use crate::base::pace;
use crate::storage::{SiloId, SiloStatus};

const PROBED_PEERS: usize = 3;

/// Probes and heartbeats until `stopping` turns `true` or this silo left;
/// then only heartbeats, until the silo has handed over its objects
/// (`retired`), so the others can tell a silo still handing over from one
/// that was killed doing so.
pub(crate) async fn run_agent(cluster: Arc<Cluster>, stopping: watch::Receiver<bool>) {
    let Ok(me) = cluster.me().cloned() else {
        return;
    };
    if probe_until_stopping(&cluster, &me, stopping.clone()).await {
        heartbeat_while_leaving(&cluster, &me, stopping).await;
    }
}

/// Heartbeats only, until the silo retired, was declared dead or is gone.
async fn heartbeat_while_leaving(
    cluster: &Cluster,
    me: &SiloId,
    mut stopping: watch::Receiver<bool>,
) {
    let mut retired = cluster.retired.subscribe();
    let mut ticker = tokio::time::interval(cluster.config.probe_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = retired.wait_for(|retired| *retired) => return,
            // The silo was dropped without finishing its stop.
            changed = stopping.changed() => if changed.is_err() { return },
            _ = ticker.tick() => {}
        }
        match cluster.store.membership.heartbeat(me, now_ms()).await {
            Ok(SiloStatus::Dead) => {
                tracing::error!(silo = %me, "the cluster declared this silo dead while it was leaving");
                let _ = cluster.evicted.send(true);
                return;
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot write the heartbeat"),
        }
    }
}

/// The agent of an active silo. Answers true if the silo is leaving (it
/// stopped, or the store says it left), false if it was declared dead.
async fn probe_until_stopping(
    cluster: &Arc<Cluster>,
    me: &SiloId,
    mut stopping: watch::Receiver<bool>,
) -> bool {
    let me = me.clone();
    let config = cluster.config.clone();
    let mut missed: HashMap<SiloId, u32> = HashMap::new();
    let mut ticker = tokio::time::interval(config.probe_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while pace::tick(&mut ticker, &mut stopping).await {
        match cluster.store.membership.heartbeat(&me, now_ms()).await {
            Ok(SiloStatus::Active) => {}
            Ok(SiloStatus::Left) => return true,
            Ok(SiloStatus::Dead) => {
                tracing::error!(silo = %me, "the cluster declared this silo dead; stopping");
                let _ = cluster.evicted.send(true);
                return false;
            }
            // A store that is away for a while must not stop the silo.
            Err(error) => tracing::warn!(%error, "cannot write the heartbeat"),
        }
        if let Err(error) = cluster.refresh_view().await {
            tracing::warn!(%error, "cannot read the membership table");
            continue;
        }
        let active = cluster.active_silos();
        missed.retain(|silo, _| active.contains(silo));
        let targets = probe_targets(&active, &me);
        let probes = targets.iter().map(|target| {
            let cluster = Arc::clone(cluster);
            let target = target.clone();
            async move {
                let answer = cluster
                    .peers
                    .ping(&target.address, config.probe_timeout)
                    .await;
                let alive = match answer {
                    Ok(generation) => generation == target.generation,
                    Err(_) => false,
                };
                (target, alive)
            }
        });
        let results = futures_join_all(probes).await;
        for (target, alive) in results {
            if alive {
                missed.remove(&target);
                continue;
            }
            let count = missed.entry(target.clone()).or_default();
            *count += 1;
            if *count >= config.missed_probes {
                suspect(cluster, &me, &target, active.len()).await;
            }
        }
    }
    true
}

/// The next `PROBED_PEERS` active silos after `me`, wrapping around.
fn probe_targets(active: &[SiloId], me: &SiloId) -> Vec<SiloId> {
    let others: Vec<&SiloId> = active.iter().filter(|silo| *silo != me).collect();
    let start = others.iter().position(|silo| *silo > me).unwrap_or(0);
    (0..others.len().min(PROBED_PEERS))
        .map(|offset| others[(start + offset) % others.len()].clone())
        .collect()
}

async fn suspect(cluster: &Cluster, me: &SiloId, target: &SiloId, active_count: usize) {
    let config = &cluster.config;
    let now = now_ms();
    let membership = &cluster.store.membership;
    if let Err(error) = membership.suspect(target, me, now).await {
        tracing::warn!(%error, %target, "cannot record a suspicion");
        return;
    }
    cluster
        .suspicions
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let since = now - config.suspicion_window.as_millis() as i64;
    let votes = match membership.suspicions(target, since).await {
        Ok(votes) => votes,
        Err(error) => {
            tracing::warn!(%error, %target, "cannot count suspicions");
            return;
        }
    };
    // In a cluster of two, the survivor alone decides.
    let needed = config
        .votes_to_kill
        .min(active_count.saturating_sub(1))
        .max(1);
    tracing::warn!(%target, votes, needed, "peer does not answer probes");
    if votes < needed {
        return;
    }
    declare_dead(cluster, target, "it does not answer probes").await;
}

/// Marks `target` dead in the membership table and releases its objects,
/// so the next message for each places it anew (its interrupted turns are
/// finished by the new owner).
pub(super) async fn declare_dead(cluster: &Cluster, target: &SiloId, why: &str) {
    let membership = &cluster.store.membership;
    if let Err(error) = membership.set_status(target, SiloStatus::Dead).await {
        tracing::warn!(%error, %target, "cannot declare a silo dead");
        return;
    }
    tracing::warn!(%target, why, "declared dead");
    cluster.peers.forget(&target.address);
    match cluster.store.placement.release_all(target).await {
        Ok(released) => tracing::info!(%target, released, "released the objects of a dead silo"),
        Err(error) => tracing::warn!(%error, %target, "cannot release a dead silo's objects"),
    }
    let _ = cluster.refresh_view().await;
    cluster.deaths.send_modify(|deaths| *deaths += 1);
}

/// Runs the futures concurrently and collects their outputs.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        if let Ok(output) = handle.await {
            outputs.push(output);
        }
    }
    outputs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silo(port: u16) -> SiloId {
        SiloId {
            address: format!("127.0.0.1:{port}"),
            generation: 1,
        }
    }

    #[test]
    fn each_silo_probes_the_next_three_after_it() {
        let active: Vec<SiloId> = (1..=5).map(silo).collect();
        assert_eq!(
            probe_targets(&active, &silo(2)),
            vec![silo(3), silo(4), silo(5)]
        );
        assert_eq!(
            probe_targets(&active, &silo(5)),
            vec![silo(1), silo(2), silo(3)]
        );
        assert_eq!(probe_targets(&active[..2], &silo(1)), vec![silo(2)]);
        assert!(probe_targets(&active[..1], &silo(1)).is_empty());
    }
}
