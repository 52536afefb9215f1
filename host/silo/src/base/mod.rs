//! Rank 0: what every other part of the silo uses and that uses nothing of
//! the silo: object keys, the clock, the reserved names, the limits, small
//! text helpers, log summaries and the group commits' size counts.

pub(crate) mod batch_sizes;
pub(crate) mod clock;
pub(crate) mod limits;
pub(crate) mod log_summary;
pub(crate) mod object_key;
pub(crate) mod pace;
pub(crate) mod reserved;
pub(crate) mod text;

pub use limits::{Limits, UnknownLimit};
pub use object_key::ObjectKey;
