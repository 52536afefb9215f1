//! Reports of long waits between silos: each silo of a cluster tells the
//! others which of its turns have waited on calls for a while, so that the
//! cycles of waits no single silo sees whole are found (see `deadlock`).

use std::sync::Arc;

use rio_protocol::{WaitInfo, WaitReport};
use tokio::sync::watch;

use super::Cluster;
use crate::base::{ObjectKey, pace};
use crate::deadlock::{LONG_WAIT, REPORT_INTERVAL, Wait, WaitGraph};

/// The most waits one report carries.
const MAX_REPORTED_WAITS: usize = 10_000;

/// Every `REPORT_INTERVAL`, while this silo has long waits (and once more
/// when they are over, to clear them), sends them to every active silo and
/// refuses what the reports show to close a cycle here; until the silo stops.
pub(crate) async fn run_wait_reports(
    cluster: Arc<Cluster>,
    waits: WaitGraph,
    mut stopping: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(REPORT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported_some = false;
    while pace::tick(&mut ticker, &mut stopping).await {
        let Ok(me) = cluster.me() else { continue };
        let mut long = waits.long_waits(LONG_WAIT);
        // The oldest first: under a flood of slow calls the report stays
        // bounded, and a cycle's older waits are the ones it needs.
        long.sort_unstable_by_key(|wait| wait.since_us);
        long.truncate(MAX_REPORTED_WAITS);
        if long.is_empty() && !reported_some {
            continue;
        }
        reported_some = !long.is_empty();
        let report = WaitReport {
            silo: me.address.clone(),
            waits: long.iter().map(to_info).collect(),
        };
        for peer in cluster.active_silos() {
            if peer == *me {
                continue;
            }
            let (cluster, report) = (cluster.clone(), report.clone());
            // One task per peer: a frozen peer must not delay the others.
            tokio::spawn(async move { cluster.peers.report_waits(&peer.address, report).await });
        }
        waits.break_cycles(LONG_WAIT);
    }
}

/// Takes in another silo's report and refuses what it shows to close a
/// cycle here.
pub(crate) fn note_wait_report(waits: &WaitGraph, report: WaitReport) {
    let reported = report.waits.into_iter().map(from_info).collect();
    waits.note_report(&report.silo, reported);
    waits.break_cycles(LONG_WAIT);
}

fn to_info(wait: &Wait) -> WaitInfo {
    let pair = |key: &ObjectKey| (key.service_type.to_string(), key.object_id.to_string());
    WaitInfo {
        caller: pair(&wait.caller),
        callee: pair(&wait.callee),
        since_us: wait.since_us,
    }
}

fn from_info(info: WaitInfo) -> Wait {
    let key =
        |(service_type, object_id): (String, String)| ObjectKey::new(&service_type, &object_id);
    Wait {
        caller: key(info.caller),
        callee: key(info.callee),
        since_us: info.since_us,
    }
}
