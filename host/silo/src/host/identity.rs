//! `rio:service/identity`: the object learns its own type and id.

use crate::bindings::identity::Host;
use crate::bindings::types::ObjectRef;
use crate::host::ActivationData;

impl Host for ActivationData {
    fn current(&mut self) -> ObjectRef {
        ObjectRef {
            service_type: self.key.service_type.to_string(),
            object_id: self.key.object_id.to_string(),
        }
    }
}

impl crate::bindings::types::Host for ActivationData {}

/// Components built against 0.1.0 ask the same question.
impl crate::bindings::legacy::identity::Host for ActivationData {
    fn current(&mut self) -> crate::bindings::legacy::types::ObjectRef {
        crate::bindings::legacy::types::ObjectRef {
            service_type: self.key.service_type.to_string(),
            object_id: self.key.object_id.to_string(),
        }
    }
}

impl crate::bindings::legacy::types::Host for ActivationData {}
