//! `rio stats`: a silo's counters (activations, connections, timer ticks,
//! memory), as one JSON object.

use clap::Args;

#[derive(Args)]
pub(crate) struct StatsArgs {
    #[command(flatten)]
    silo: crate::connect::SiloAddress,
}

pub(crate) async fn run(args: StatsArgs) -> anyhow::Result<()> {
    let client = args.silo.connect().await?;
    let stats = client.stats().await?;
    println!("{}", serde_json::to_string_pretty(&stats)?);
    Ok(())
}
