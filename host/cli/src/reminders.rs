//! `rio reminders`: an object's durable reminders, or the next due across
//! the cluster.

use clap::Args;

use crate::json_cbor::cbor_to_json;

#[derive(Args)]
pub(crate) struct RemindersArgs {
    /// `TYPE/ID`: this object's reminders. Without it, `--due`.
    object: Option<String>,
    /// The next due reminders across the cluster, earliest first.
    #[arg(long, conflicts_with = "object")]
    due: bool,
    #[command(flatten)]
    silo: crate::connect::SiloAddress,
    /// List at most this many.
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

pub(crate) async fn run(args: RemindersArgs) -> anyhow::Result<()> {
    let object = match &args.object {
        Some(object) => {
            let (service_type, id) = object
                .split_once('/')
                .ok_or_else(|| anyhow::anyhow!("expected TYPE/ID, got `{object}`"))?;
            Some((service_type, id))
        }
        None if args.due => None,
        None => anyhow::bail!("name an object (TYPE/ID) or ask for --due"),
    };
    let client = args.silo.connect().await?;
    let reminders = client.reminders(object, args.limit).await?;
    println!("OBJECT\tNAME\tDUE_MS\tEVERY_MS\tMISSED\tMESSAGE\tPAYLOAD");
    for reminder in reminders {
        // A payload that is not CBOR is shown by its size.
        let payload = match cbor_to_json(&reminder.payload) {
            Ok(json) => json.to_string(),
            Err(_) => format!("<{} bytes>", reminder.payload.len()),
        };
        let every = reminder
            .every_ms
            .map_or_else(|| "-".to_string(), |every| every.to_string());
        println!(
            "{}/{}\t{}\t{}\t{every}\t{}\t{}\t{payload}",
            reminder.object.0,
            reminder.object.1,
            reminder.name,
            reminder.due_ms,
            reminder.missed,
            reminder.message_type,
        );
    }
    Ok(())
}
