//! `rio subscribe`: prints the events published to topics, one JSON line
//! each, as they come from any silo of the cluster.

use std::io::Write;

use clap::Args;
use rio_client::Delivery;
use serde_json::json;

#[derive(Args)]
pub(crate) struct SubscribeArgs {
    /// Topics, e.g. `Room/lobby` (an object's own topic is its `TYPE/ID`).
    #[arg(required = true)]
    topics: Vec<String>,
    #[command(flatten)]
    silo: crate::connect::SiloAddress,
    /// Exit after this many events (missed ones count too).
    #[arg(long)]
    count: Option<u64>,
}

pub(crate) async fn run(args: SubscribeArgs) -> anyhow::Result<()> {
    let client = args.silo.connect().await?;
    let mut subscription = client.subscribe(&args.topics).await?;
    let mut seen = 0u64;
    let mut out = std::io::stdout();
    // A line tells a reader (a pipe, a test) that events now reach us.
    eprintln!("subscribed to {}", args.topics.join(", "));
    while args.count.is_none_or(|count| seen < count) {
        let Some(delivery) = subscription.next().await else {
            break;
        };
        let line = match delivery? {
            Delivery::Event(event) => {
                seen += 1;
                rio_protocol::json::event_to_json(&event)
            }
            Delivery::Missed(missed) => {
                seen += missed;
                json!({ "missed": missed })
            }
        };
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Ok(())
}
