//! What `rio call` and `rio send` both take: the silo, a timeout, an
//! idempotency key, the object as TYPE/ID, the message type and its JSON.

use anyhow::bail;
use clap::Args;
use rio_client::Client;

use crate::json_cbor::json_text_to_cbor;

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
            _ => bail!("`{}` is not TYPE/ID (e.g. Counter/alice)", self.object),
        }
    }

    /// The message's CBOR payload.
    pub(crate) fn payload(&self) -> anyhow::Result<Vec<u8>> {
        json_text_to_cbor(self.json.as_deref())
    }

    /// A connection to the silo that waits `--timeout` for answers.
    pub(crate) async fn connect(&self) -> anyhow::Result<Client> {
        let client = self.silo.connect().await?;
        Ok(client.with_timeout(std::time::Duration::from_secs(self.timeout)))
    }
}
