//! `rio deploy`, `rio undeploy` and `rio deployments`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

#[derive(Args)]
pub(crate) struct DeployArgs {
    #[command(flatten)]
    silo: crate::connect::SiloAddress,
    /// The service type name callers will use (e.g. Counter).
    #[arg(long = "type")]
    service_type: String,
    /// The component file (`rio build` prints its path).
    file: PathBuf,
}

#[derive(Args)]
pub(crate) struct UndeployArgs {
    #[command(flatten)]
    silo: crate::connect::SiloAddress,
    /// The service type to remove (its objects' state stays stored).
    service_type: String,
}

#[derive(Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    silo: crate::connect::SiloAddress,
}

#[derive(Args)]
pub(crate) struct DescribeArgs {
    #[command(flatten)]
    silo: crate::connect::SiloAddress,
    /// The service type; all deployed types without it.
    #[arg(value_name = "TYPE")]
    service_type: Option<String>,
}

pub(crate) async fn run(args: DeployArgs) -> anyhow::Result<()> {
    let component = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    check_is_component(&component)
        .with_context(|| format!("{} cannot be deployed", args.file.display()))?;
    let client = args
        .silo
        .connect()
        .await?
        .with_timeout(std::time::Duration::from_secs(300));
    let info = client.deploy(&args.service_type, component).await?;
    println!(
        "deployed {} ({} bytes, sha256 {})",
        info.service_type, info.component_bytes, info.content_hash
    );
    Ok(())
}

pub(crate) async fn undeploy(args: UndeployArgs) -> anyhow::Result<()> {
    let client = args.silo.connect().await?;
    let info = client.undeploy(&args.service_type).await?;
    println!(
        "undeployed {} (sha256 {})",
        info.service_type, info.content_hash
    );
    Ok(())
}

pub(crate) async fn list(args: ListArgs) -> anyhow::Result<()> {
    let client = args.silo.connect().await?;
    for info in client.deployments().await? {
        println!(
            "{}\t{}\t{} bytes",
            info.service_type, info.content_hash, info.component_bytes
        );
    }
    Ok(())
}

pub(crate) async fn describe(args: DescribeArgs) -> anyhow::Result<()> {
    let client = args.silo.connect().await?;
    let document = client.open_api(args.service_type.as_deref()).await?;
    let document: serde_json::Value = serde_json::from_str(&document)?;
    println!("{}", serde_json::to_string_pretty(&document)?);
    Ok(())
}

/// Catches the common wrong files before they travel; the silo does the
/// real validation against the rio world.
fn check_is_component(bytes: &[u8]) -> anyhow::Result<()> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        bail!("it is not a WebAssembly file");
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        bail!(
            "it is a core WebAssembly module, not a component; build it for the wasm32-wasip2 target (`rio build`)"
        );
    }
    Ok(())
}
