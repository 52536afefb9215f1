//! `rio:service/identity`: the object learns its own type and id.

use super::ActivationData;
use super::bindings::identity::Host;
use super::bindings::types::ObjectRef;

impl Host for ActivationData {
    fn current(&mut self) -> ObjectRef {
        ObjectRef {
            service_type: self.key.service_type.to_string(),
            object_id: self.key.object_id.to_string(),
        }
    }
}

impl super::bindings::types::Host for ActivationData {}

/// Components built against 0.1.0 ask the same question.
impl super::bindings::legacy::identity::Host for ActivationData {
    fn current(&mut self) -> super::bindings::legacy::types::ObjectRef {
        super::bindings::legacy::types::ObjectRef {
            service_type: self.key.service_type.to_string(),
            object_id: self.key.object_id.to_string(),
        }
    }
}

impl super::bindings::legacy::types::Host for ActivationData {}
