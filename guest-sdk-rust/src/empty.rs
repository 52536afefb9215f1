//! [`Empty`]: the message type of handlers that need no input, and the
//! message to send to one.

use serde::de::{Deserializer, IgnoredAny};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

/// A message with no content. It accepts any payload (an empty one, `null`,
/// `{}`, or anything else) and ignores it, and is sent as `{}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Empty;

impl Serialize for Empty {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // A map rather than serde's unit (`null`): a callee whose message has
        // only optional fields decodes `{}` but rejects `null`.
        serializer.serialize_map(Some(0))?.end()
    }
}

impl<'de> Deserialize<'de> for Empty {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Empty, D::Error> {
        IgnoredAny::deserialize(deserializer)?;
        Ok(Empty)
    }
}
