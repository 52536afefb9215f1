//! The one `bindgen!` of the rio WIT world; everything else uses the curated
//! names re-exported here.

mod generated {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "rio:service/service-object",
        imports: {
            "rio:service/messaging.call": async,
        },
        exports: { default: async },
    });
}

pub(crate) use generated::rio::service::{identity, log, messaging, state, types};
pub(crate) use generated::{ServiceObject, ServiceObjectPre};
