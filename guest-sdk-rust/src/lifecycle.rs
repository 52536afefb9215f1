//! This object's own lifecycle.

use crate::bindings::rio::service::lifecycle as host;

/// Asks that this object be deactivated once this turn commits (rio-rs's
/// self-shutdown): its `on_deactivate` hook runs, its timers end, and the
/// next message activates it afresh, wherever placement puts it. A turn
/// that fails does not deactivate.
pub fn deactivate() {
    host::deactivate();
}
