//! `rio:service/log`: guest log lines become `tracing` events tagged with
//! the object's type and id.

use crate::bindings::log::{Host, Level};
use crate::host::ActivationData;

impl Host for ActivationData {
    fn write(&mut self, level: Level, message: String) {
        let service_type = &*self.key.service_type;
        let object_id = &*self.key.object_id;
        match level {
            Level::Trace => {
                tracing::trace!(target: "rio::guest", service_type, object_id, "{message}")
            }
            Level::Debug => {
                tracing::debug!(target: "rio::guest", service_type, object_id, "{message}")
            }
            Level::Info => {
                tracing::info!(target: "rio::guest", service_type, object_id, "{message}")
            }
            Level::Warn => {
                tracing::warn!(target: "rio::guest", service_type, object_id, "{message}")
            }
            Level::Error => {
                tracing::error!(target: "rio::guest", service_type, object_id, "{message}")
            }
        }
    }
}

/// Components built against 0.1.0 log the same way.
impl crate::bindings::legacy::log::Host for ActivationData {
    fn write(&mut self, level: crate::bindings::legacy::log::Level, message: String) {
        use crate::bindings::legacy::log::Level as Legacy;
        let level = match level {
            Legacy::Trace => Level::Trace,
            Legacy::Debug => Level::Debug,
            Legacy::Info => Level::Info,
            Legacy::Warn => Level::Warn,
            Legacy::Error => Level::Error,
        };
        <Self as Host>::write(self, level, message)
    }
}
