//! `rio call TYPE/ID MESSAGE [JSON]`: a call, its reply printed as JSON.

use anyhow::Context;
use clap::Args;
use rio_client::Calls;

use crate::json_cbor::cbor_to_json;
use crate::message::MessageArgs;

#[derive(Args)]
pub(crate) struct CallArgs {
    #[command(flatten)]
    pub(crate) message: MessageArgs,
}

pub(crate) async fn run(args: CallArgs) -> anyhow::Result<()> {
    let args = args.message;
    let (service_type, object_id) = args.object()?;
    let payload = args.payload()?;
    let client = args.connect().await?;
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
