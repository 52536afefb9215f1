//! The silo's Prometheus metrics, as OpenMetrics text for the gateway's
//! `GET /metrics`: calls by type, message and outcome and a turn-duration
//! histogram by type, recorded as turns end, and every counter of `rio
//! stats`, read at each scrape.
//!
//! Labels never name an object id, and never take a value a caller
//! chooses freely: a message a type does not know is `(unknown)`, and a
//! guest's own error kinds are one outcome, `guest-error` (their number is
//! the guest's to choose).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::encoding::{
    EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use rio_protocol::ReplyError;

use super::Counters;
use crate::base::batch_sizes::BatchSizeReading;

/// Turn durations, in seconds: from 50 µs (a warm Rust call) to the
/// default turn deadline of 5 s.
const TURN_BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    service_type: String,
    message: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    service_type: String,
}

/// One service type's share of the silo's directory, read at each
/// scrape (the directory, above this module, counts it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TypeCensus {
    pub(crate) service_type: String,
    /// Objects of the type with an activation here.
    pub(crate) activations: u64,
    /// Messages waiting in their mailboxes, or for their placement or
    /// deactivation to end.
    pub(crate) queued: u64,
}

/// What the cluster's membership looks like from this silo, read at each
/// scrape (absent for a silo on its own).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct MembershipReading {
    /// Silos in the membership table by status, as this silo last read it.
    pub(crate) by_status: Vec<(&'static str, u64)>,
    /// Suspicions this silo raised against peers that missed its probes.
    pub(crate) suspicions: u64,
    /// Silos this silo declared dead.
    pub(crate) declared_dead: u64,
}

/// What a scrape reads from the parts above this module.
#[derive(Clone, Debug, Default)]
pub(crate) struct Readings {
    pub(crate) census: Vec<TypeCensus>,
    pub(crate) membership: Option<MembershipReading>,
    /// Turns' commits per group commit, from a store that groups them.
    pub(crate) batch_sizes: Option<BatchSizeReading>,
}

type HistogramFamily = Family<TypeLabels, Histogram, fn() -> Histogram>;

fn turn_histogram() -> Histogram {
    Histogram::new(TURN_BUCKETS)
}

/// What turns record as they end.
pub(crate) struct TurnMetrics {
    calls: Family<CallLabels, Counter>,
    seconds: HistogramFamily,
    /// How long a turn's commit took, group commit and fencing included.
    commit_seconds: Histogram,
}

impl Default for TurnMetrics {
    fn default() -> TurnMetrics {
        TurnMetrics {
            calls: Family::default(),
            seconds: Family::new_with_constructor(turn_histogram),
            commit_seconds: turn_histogram(),
        }
    }
}

impl TurnMetrics {
    /// Records a turn's commit that took `elapsed`; only those that
    /// succeeded are timed (a failure's time says nothing of the store).
    pub(crate) fn record_commit(&self, succeeded: bool, elapsed: Duration) {
        if succeeded {
            self.commit_seconds.observe(elapsed.as_secs_f64());
        }
    }

    /// Records a handled message of `service_type` that ended with
    /// `result` after `elapsed`.
    /// `message` is the turn's own copy of the message type, moved into
    /// the label rather than copied again.
    pub(crate) fn record(
        &self,
        service_type: &str,
        message: String,
        result: Result<(), &ReplyError>,
        elapsed: Duration,
    ) {
        let (outcome, message) = match result {
            Ok(_) => ("ok", message),
            Err(ReplyError::UnknownMessage { .. }) => ("unknown-message", "(unknown)".into()),
            Err(error) => (error.platform_kind().unwrap_or("guest-error"), message),
        };
        let labels = CallLabels {
            service_type: service_type.to_string(),
            message,
            outcome,
        };
        self.calls.get_or_create(&labels).inc();
        let labels = TypeLabels {
            service_type: labels.service_type,
        };
        self.seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }
}

/// Every metric of the silo as OpenMetrics text, with `readings` taken
/// for this scrape.
pub(crate) fn encode(
    counters: &Arc<Counters>,
    readings: Readings,
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("rio");
    registry.register(
        "calls",
        "Messages handled by objects, by service type, message and outcome",
        counters.turns.calls.clone(),
    );
    registry.register(
        "turn_duration_seconds",
        "How long a handled message's turn took, commit included, by service type",
        counters.turns.seconds.clone(),
    );
    registry.register(
        "commit_duration_seconds",
        "How long a turn's commit took, group commit and fencing included",
        counters.turns.commit_seconds.clone(),
    );
    registry.register_collector(Box::new(StatsCollector(counters.clone())));
    registry.register_collector(Box::new(CensusCollector(readings.census)));
    if let Some(membership) = readings.membership {
        registry.register_collector(Box::new(MembershipCollector(membership)));
    }
    if let Some(sizes) = readings.batch_sizes {
        registry.register_collector(Box::new(BatchSizeCollector(sizes)));
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

/// The counters of `rio stats`, read at each scrape. Names follow the
/// stats' field names: a `_total` field is a counter, any other a gauge;
/// durations are converted to seconds, the base unit.
struct StatsCollector(Arc<Counters>);

impl std::fmt::Debug for StatsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatsCollector")
    }
}

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = serde_json::to_value(self.0.stats()).map_err(|_| std::fmt::Error)?;
        let Some(fields) = stats.as_object() else {
            return Ok(());
        };
        for (field, value) in fields {
            let Some(value) = value.as_u64() else {
                continue;
            };
            let help = format!("`{field}` of `rio stats`");
            let (stem, counter) = match field.strip_suffix("_total") {
                Some(stem) => (stem, true),
                None => (field.as_str(), false),
            };
            // Durations in their base unit, seconds.
            if let Some(stem) = stem.strip_suffix("_nanos") {
                let name = format!("{stem}_seconds");
                emit(&mut encoder, &name, &help, value as f64 / 1e9, counter)?;
            } else if let Some(stem) = stem.strip_suffix("_ms") {
                let name = format!("{stem}_seconds");
                emit(&mut encoder, &name, &help, value as f64 / 1e3, counter)?;
            } else {
                emit(&mut encoder, stem, &help, value, counter)?;
            }
        }
        Ok(())
    }
}

/// Activations and mailbox depth by service type.
#[derive(Debug)]
struct CensusCollector(Vec<TypeCensus>);

impl Collector for CensusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        type Read = fn(&TypeCensus) -> u64;
        let gauges: [(&str, &str, Read); 2] = [
            (
                "type_activations",
                "Objects with an activation on this silo, by service type",
                |census| census.activations,
            ),
            (
                "mailbox_depth",
                "Messages waiting for their object's turn on this silo, by service type",
                |census| census.queued,
            ),
        ];
        for (name, help, read) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for census in &self.0 {
                let labels = TypeLabels {
                    service_type: census.service_type.clone(),
                };
                ConstGauge::new(read(census)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

/// Members by status, suspicions raised and silos declared dead.
#[derive(Debug)]
struct MembershipCollector(MembershipReading);

impl Collector for MembershipCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let help = "Silos in the cluster's membership table by status, as this silo last read it";
        let mut family = encoder.encode_descriptor("members", help, None, MetricType::Gauge)?;
        for (status, count) in &self.0.by_status {
            let labels = StatusLabels { status };
            ConstGauge::new(*count).encode(family.encode_family(&labels)?)?;
        }
        let suspicions = "Suspicions this silo raised against peers that did not answer its probes";
        emit(
            &mut encoder,
            "suspicions",
            suspicions,
            self.0.suspicions,
            true,
        )?;
        let dead = "Silos this silo declared dead";
        emit(
            &mut encoder,
            "silos_declared_dead",
            dead,
            self.0.declared_dead,
            true,
        )
    }
}

/// Turns' commits per group commit, as a histogram.
#[derive(Debug)]
struct BatchSizeCollector(BatchSizeReading);

impl Collector for BatchSizeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let help = "Turns' commits written together by one group commit";
        let metric =
            encoder.encode_descriptor("group_commit_size", help, None, MetricType::Histogram)?;
        let reading = &self.0;
        let count = reading.cumulative.last().map_or(0, |(_, count)| *count);
        // Counts per bucket, not cumulative: the encoder adds them up.
        let mut below = 0;
        let buckets: Vec<(f64, u64)> = reading
            .cumulative
            .iter()
            .map(|(bound, cumulative)| {
                let in_bucket = cumulative - below;
                below = *cumulative;
                (*bound, in_bucket)
            })
            .collect();
        let mut metric = metric;
        metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            reading.commits as f64,
            count,
            &buckets,
            None,
        )
    }
}

/// One metric of one value, a counter or a gauge.
fn emit<N>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
    counter: bool,
) -> Result<(), std::fmt::Error>
where
    N: EncodeCounterValue + EncodeGaugeValue + std::fmt::Debug,
{
    if counter {
        let metric = ConstCounter::new(value);
        metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
    } else {
        let metric = ConstGauge::new(value);
        metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_and_stats_come_out_named_by_convention() {
        let counters = Arc::new(Counters::default());
        let turns = &counters.turns;
        turns.record(
            "Counter",
            "increment".into(),
            Ok(()),
            Duration::from_micros(80),
        );
        turns.record(
            "Counter",
            "increment".into(),
            Ok(()),
            Duration::from_micros(120),
        );
        let unknown = ReplyError::UnknownMessage {
            service_type: "Counter".into(),
            message_type: "attacker-chosen-1234".into(),
        };
        turns.record(
            "Counter",
            "attacker-chosen-1234".into(),
            Err(&unknown),
            Duration::ZERO,
        );
        let refused = ReplyError::Guest {
            kind: "kind-of-the-guest-99".into(),
            message: "no".into(),
        };
        turns.record(
            "Account",
            "withdraw".into(),
            Err(&refused),
            Duration::from_millis(2),
        );
        counters
            .activations_total
            .fetch_add(3, std::sync::atomic::Ordering::Relaxed);
        let census = vec![TypeCensus {
            service_type: "Counter".into(),
            activations: 5,
            queued: 2,
        }];
        let membership = MembershipReading {
            by_status: vec![("active", 2), ("left", 0), ("dead", 1)],
            suspicions: 4,
            declared_dead: 1,
        };
        let sizes = crate::base::batch_sizes::BatchSizes::default();
        sizes.record(3);
        sizes.record(1);
        let readings = Readings {
            census,
            membership: Some(membership),
            batch_sizes: Some(sizes.read()),
        };
        let text = encode(&counters, readings).unwrap();
        let has = |line: &str| {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        };
        has(r#"rio_calls_total{service_type="Counter",message="increment",outcome="ok"} 2"#);
        has(
            r#"rio_calls_total{service_type="Counter",message="(unknown)",outcome="unknown-message"} 1"#,
        );
        has(
            r#"rio_calls_total{service_type="Account",message="withdraw",outcome="guest-error"} 1"#,
        );
        has(r#"rio_turn_duration_seconds_count{service_type="Counter"} 3"#);
        has(r#"rio_turn_duration_seconds_bucket{le="0.0001",service_type="Counter"} 2"#);
        has("rio_activations_total 3");
        has("# TYPE rio_live_activations gauge");
        has(r#"rio_type_activations{service_type="Counter"} 5"#);
        has(r#"rio_mailbox_depth{service_type="Counter"} 2"#);
        has("rio_outbox_pending 0");
        has(r#"rio_members{status="dead"} 1"#);
        has("rio_suspicions_total 4");
        has("rio_silos_declared_dead_total 1");
        has("rio_group_commit_size_sum 4.0");
        has("rio_group_commit_size_count 2");
        has(r#"rio_group_commit_size_bucket{le="2.0"} 1"#);
        has(r#"rio_group_commit_size_bucket{le="+Inf"} 2"#);
        assert!(text.contains("rio_activation_seconds_total"), "{text}");
        assert!(!text.contains("attacker-chosen"), "{text}");
        assert!(!text.contains("kind-of-the-guest"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
