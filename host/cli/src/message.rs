//! What `rio call` and `rio send` both take: the silo, a timeout, an
//! idempotency key, how to print the outcome, the object as TYPE/ID, the
//! message type and its JSON.

use clap::{Args, ValueEnum};
use rio_client::Client;

use crate::json_cbor::json_text_to_cbor;
use crate::outcome::UsageError;

/// How `rio call` and `rio send` print what happened.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// The reply as JSON on stdout, an error as prose on stderr.
    Text,
    /// One JSON document on stdout either way: the reply (`{"stored":
    /// true}` for a send) or `{"error": {"kind", "message"}}`.
    Json,
}

#[derive(Args)]
pub(crate) struct MessageArgs {
    #[command(flatten)]
    silo: crate::connect::SiloAddress,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Apply the message at most once per object under this key: repeating
    /// it with the same key changes nothing (a call prints the first reply
    /// again).
    #[arg(long, value_name = "KEY")]
    pub(crate) idempotency_key: Option<String>,
    /// How to print the reply or the error; the exit code tells the error's
    /// kind either way (see the README's table).
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
    /// The object, as TYPE/ID (e.g. Counter/alice).
    object: String,
    /// The message type (e.g. increment).
    pub(crate) message: String,
    /// The message as JSON (e.g. '{"by": 2}'); omitted means an empty payload.
    json: Option<String>,
}

impl MessageArgs {
    /// `(service type, object id)` of TYPE/ID.
    pub(crate) fn object(&self) -> anyhow::Result<(&str, &str)> {
        match self.object.split_once('/') {
            Some((service_type, object_id))
                if !service_type.is_empty() && !object_id.is_empty() =>
            {
                Ok((service_type, object_id))
            }
            _ => Err(UsageError(format!(
                "`{}` is not TYPE/ID (e.g. Counter/alice)",
                self.object
            ))
            .into()),
        }
    }

    /// The message's CBOR payload.
    pub(crate) fn payload(&self) -> anyhow::Result<Vec<u8>> {
        json_text_to_cbor(self.json.as_deref())
            .map_err(|error| UsageError(format!("{error:#}")).into())
    }

    /// A connection to the silo that waits `--timeout` for answers.
    pub(crate) async fn connect(&self) -> anyhow::Result<Client> {
        let client = self.silo.connect().await?;
        Ok(client.with_timeout(std::time::Duration::from_secs(self.timeout)))
    }
}
