//! `rio send TYPE/ID MESSAGE [JSON]`: a one-way send, acknowledged once
//! the object's silo stored it.

use anyhow::bail;
use clap::Args;

use crate::json_cbor::json_text_to_cbor;

#[derive(Args)]
pub(crate) struct SendArgs {
    #[command(flatten)]
    silo: crate::connect::SiloAddress,
    /// Seconds to wait for the acknowledgement.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Store the message at most once per object under this key: sending
    /// again with the same key (after a lost acknowledgement) changes nothing.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// The object, as TYPE/ID (e.g. Counter/alice).
    object: String,
    /// The message type (e.g. increment).
    message: String,
    /// The message as JSON (e.g. '{"by": 2}'); omitted means an empty payload.
    json: Option<String>,
}

pub(crate) async fn run(args: SendArgs) -> anyhow::Result<()> {
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
    client
        .send_raw_keyed(
            service_type,
            object_id,
            &args.message,
            payload,
            args.idempotency_key.as_deref(),
        )
        .await?;
    Ok(())
}
