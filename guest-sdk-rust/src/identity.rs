//! Who this object is.

use crate::bindings::rio::service::identity::current;

/// This object's id, e.g. `alice` for `Counter/alice`.
pub fn object_id() -> String {
    current().object_id
}

/// This object's service type, e.g. `Counter`.
pub fn service_type() -> String {
    current().service_type
}
