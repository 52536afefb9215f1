//! JSON on the command line, CBOR on the wire (the conversion itself is
//! `rio_protocol::json`, shared with the silo's HTTP gateway).

use anyhow::Context;
use serde_json::Value as Json;

/// Encodes a JSON text as a CBOR payload; `None` is the empty payload.
pub(crate) fn json_text_to_cbor(json: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let Some(json) = json else {
        return Ok(Vec::new());
    };
    rio_protocol::json::json_to_cbor(json.as_bytes())
        .with_context(|| format!("`{json}` is not valid JSON"))
}

/// Decodes a CBOR reply into JSON; an empty reply is `null`.
pub(crate) fn cbor_to_json(payload: &[u8]) -> anyhow::Result<Json> {
    rio_protocol::json::cbor_to_json(payload).context("the reply is not CBOR")
}
