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
