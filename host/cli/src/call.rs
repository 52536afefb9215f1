//! `rio call TYPE/ID MESSAGE [JSON]`.

use anyhow::{Context, bail};
use clap::Args;

use crate::json_cbor::{cbor_to_json, json_text_to_cbor};

#[derive(Args)]
pub(crate) struct CallArgs {
    #[command(flatten)]
    silo: crate::connect::SiloAddress,
    /// Seconds to wait for the reply.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Run the call at most once per object under this key: calling again
    /// with the same key prints the first reply and changes nothing.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// The object, as TYPE/ID (e.g. Counter/alice).
    object: String,
    /// The message type (e.g. increment).
    message: String,
    /// The message as JSON (e.g. '{"by": 2}'); omitted means an empty payload.
    json: Option<String>,
}

pub(crate) async fn run(args: CallArgs) -> anyhow::Result<()> {
    let Some((service_type, object_id)) = args.object.split_once('/') else {
        bail!("`{}` is not TYPE/ID (e.g. Counter/alice)", args.object);
    };
    if service_type.is_empty() || object_id.is_empty() {
        bail!("`{}` is not TYPE/ID (e.g. Counter/alice)", args.object);
    }
    let payload = json_text_to_cbor(args.json.as_deref())?;
    let client = args
        .silo
        .connect()
        .await?
        .with_timeout(std::time::Duration::from_secs(args.timeout));
    let reply = client
        .call_raw_keyed(
            service_type,
            object_id,
            &args.message,
            payload,
            args.idempotency_key.as_deref(),
        )
        .await?;
    let json = cbor_to_json(&reply).context("cannot show the reply")?;
    println!("{json}");
    Ok(())
}
