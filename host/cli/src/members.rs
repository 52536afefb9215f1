//! `rio members`: the silos of the cluster a silo belongs to.

use clap::Args;
use rio_client::Client;

#[derive(Args)]
pub(crate) struct MembersArgs {
    /// Any silo of the cluster.
    #[arg(long, env = "RIO_SILO", default_value = crate::DEFAULT_SILO)]
    silo: String,
}

pub(crate) async fn run(args: MembersArgs) -> anyhow::Result<()> {
    let client = Client::connect(&args.silo).await?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64);
    println!("ADDRESS\tGENERATION\tSTATUS\tLAST HEARTBEAT");
    for member in client.members().await? {
        let age = (now_ms - member.heartbeat_ms).max(0) as f64 / 1000.0;
        println!(
            "{}\t{}\t{}\t{age:.1} s ago",
            member.address, member.generation, member.status
        );
    }
    Ok(())
}
