//! `rio members`: the silos of the cluster a silo belongs to.

use clap::Args;

#[derive(Args)]
pub(crate) struct MembersArgs {
    #[command(flatten)]
    silo: crate::connect::SiloAddress,
}

pub(crate) async fn run(args: MembersArgs) -> anyhow::Result<()> {
    let client = args.silo.connect().await?;
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
