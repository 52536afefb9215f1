//! `rio send TYPE/ID MESSAGE [JSON]`: a one-way send, acknowledged once
//! the object's silo stored it.

use clap::Args;
use rio_client::Calls;

use crate::message::{MessageArgs, Output};

#[derive(Args)]
pub(crate) struct SendArgs {
    #[command(flatten)]
    pub(crate) message: MessageArgs,
}

pub(crate) async fn run(args: SendArgs) -> anyhow::Result<()> {
    let args = args.message;
    let (service_type, object_id) = args.object()?;
    let payload = args.payload()?;
    let client = args.connect().await?;
    client
        .send_raw_keyed(
            service_type,
            object_id,
            &args.message,
            payload,
            args.idempotency_key.as_deref(),
        )
        .await?;
    if args.output == Output::Json {
        println!("{}", serde_json::json!({"stored": true}));
    }
    Ok(())
}
