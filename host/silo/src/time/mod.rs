//! What the silo does for objects over time: an activation's timers
//! (`timers`). Reminders, the durable kind, will live here too.
//!
//! Everything here reads time from `base::clock::Clock`, never from the
//! system directly, so tests move it by hand.

pub(crate) mod timers;
