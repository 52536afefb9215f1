//! The identity of one service object: its type and its id.

use std::fmt;
use std::sync::Arc;

/// Names one object, e.g. `Counter/alice`. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// The service type, e.g. `Counter`.
    pub service_type: Arc<str>,
    /// The id within the type, e.g. `alice`.
    pub object_id: Arc<str>,
}

impl ObjectKey {
    /// The key of object `object_id` of type `service_type`.
    pub fn new(service_type: &str, object_id: &str) -> ObjectKey {
        ObjectKey {
            service_type: service_type.into(),
            object_id: object_id.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.service_type, self.object_id)
    }
}
