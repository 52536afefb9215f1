//! `rio dead-letters`: the one-way messages receivers refused, with why.

use clap::Args;

use crate::json_cbor::cbor_to_json;

#[derive(Args)]
pub(crate) struct DeadLettersArgs {
    /// Only messages for objects of this service type.
    receiver_type: Option<String>,
    #[command(flatten)]
    silo: crate::connect::SiloAddress,
    /// List at most this many, oldest first.
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

pub(crate) async fn run(args: DeadLettersArgs) -> anyhow::Result<()> {
    let client = args.silo.connect().await?;
    let letters = client
        .dead_letters(args.receiver_type.as_deref(), args.limit)
        .await?;
    println!("SENDER\tSEQ\tRECEIVER\tMESSAGE\tPAYLOAD\tREASON");
    for letter in letters {
        // A payload that is not CBOR is shown by its size.
        let payload = match cbor_to_json(&letter.payload) {
            Ok(json) => json.to_string(),
            Err(_) => format!("<{} bytes>", letter.payload.len()),
        };
        println!(
            "{}/{}\t{}\t{}/{}\t{}\t{payload}\t{}",
            letter.sender.0,
            letter.sender.1,
            letter.seq,
            letter.receiver.0,
            letter.receiver.1,
            letter.message_type,
            letter.reason
        );
    }
    Ok(())
}
