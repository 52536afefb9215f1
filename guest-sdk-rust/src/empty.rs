//! [`Empty`]: the message type of handlers that need no input.

use serde::de::{Deserializer, IgnoredAny};
use serde::{Deserialize, Serialize};

/// A message with no content. It accepts any payload (an empty one, `null`,
/// `{}`, or anything else) and ignores it, and is sent as `{}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Empty;

impl<'de> Deserialize<'de> for Empty {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Empty, D::Error> {
        IgnoredAny::deserialize(deserializer)?;
        Ok(Empty)
    }
}
