//! The `bindgen!` of each WIT version the silo runs, and one view over their
//! exports, so the rest of the silo handles a component of either version
//! the same way.
//!
//! `rio:service@0.2.0` is current; `@0.1.0` is released and frozen. A linker
//! holds both sets of imports (their interface names carry the version), so a
//! component built against either one links, and [`Handler`] calls its
//! exports.

mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "rio:service/service-object@0.2.0",
        imports: {
            "rio:service/messaging.call": async,
            // Over a state limit the guest is stopped in the call.
            "rio:service/state.set": trappable,
            "rio:service/state.delete": trappable,
            // A big value is read from the store when asked for; a store
            // that fails then stops the turn.
            "rio:service/state.get": async | trappable,
            // Listing reads the store.
            "rio:service/reminders.get-all": async,
            // Past the turn's limit of changes the guest is stopped.
            "rio:service/reminders.cancel": trappable,
            "rio:service/events.subscriptions": async,
            // Past the turn's limit of changes the guest is stopped.
            "rio:service/events.unsubscribe": trappable,
        },
        exports: { default: async },
    });
}

mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../../wit/0.1.0",
        world: "rio:service/service-object@0.1.0",
        imports: {
            "rio:service/messaging.call": async,
            // Over a state limit the guest is stopped in the call.
            "rio:service/state.set": trappable,
            "rio:service/state.delete": trappable,
            // A big value is read from the store when asked for; a store
            // that fails then stops the turn.
            "rio:service/state.get": async | trappable,
        },
        exports: { default: async },
    });
}

use wasmtime::component::{InstancePre, Linker};
use wasmtime::{AsContextMut, Store};

pub(crate) use v0_2::rio::service::{
    events, identity, lifecycle, log, messaging, reminders, state, timers, types,
};

/// The 0.1.0 interfaces, which the host implements by delegating to 0.2.0.
pub(crate) mod legacy {
    pub(crate) use super::v0_1::rio::service::{identity, log, messaging, state, types};
}

/// Adds the imports of every WIT version to `linker`.
pub(crate) fn add_to_linker<T>(linker: &mut Linker<T>) -> wasmtime::Result<()>
where
    T: 'static
        + Send
        + v0_2::rio::service::state::Host
        + v0_2::rio::service::messaging::Host
        + v0_2::rio::service::log::Host
        + v0_2::rio::service::identity::Host
        + v0_2::rio::service::types::Host
        + v0_2::rio::service::timers::Host
        + v0_2::rio::service::lifecycle::Host
        + v0_2::rio::service::reminders::Host
        + v0_2::rio::service::events::Host
        + v0_1::rio::service::state::Host
        + v0_1::rio::service::messaging::Host
        + v0_1::rio::service::log::Host
        + v0_1::rio::service::identity::Host
        + v0_1::rio::service::types::Host,
{
    use wasmtime::component::HasSelf;
    v0_2::ServiceObject::add_to_linker::<_, HasSelf<T>>(linker, |data| data)?;
    v0_1::ServiceObject::add_to_linker::<_, HasSelf<T>>(linker, |data| data)?;
    Ok(())
}

/// A component linked and checked against one WIT version, ready to
/// instantiate for each activation.
pub(crate) enum HandlerPre<T: 'static> {
    V0_2(v0_2::ServiceObjectPre<T>),
    V0_1(v0_1::ServiceObjectPre<T>),
}

impl<T: Send + 'static> HandlerPre<T> {
    /// Checks that a linked component exports the handler of one of the
    /// versions (the newest it matches).
    pub(crate) fn new(pre: InstancePre<T>) -> wasmtime::Result<HandlerPre<T>> {
        match v0_2::ServiceObjectPre::new(pre.clone()) {
            Ok(current) => Ok(HandlerPre::V0_2(current)),
            Err(current_error) => match v0_1::ServiceObjectPre::new(pre) {
                Ok(legacy) => Ok(HandlerPre::V0_1(legacy)),
                // The newest version's complaint is the useful one.
                Err(_) => Err(current_error),
            },
        }
    }

    /// The WIT version the component was built against.
    pub(crate) fn wit_version(&self) -> &'static str {
        match self {
            HandlerPre::V0_2(_) => "0.2.0",
            HandlerPre::V0_1(_) => "0.1.0",
        }
    }

    pub(crate) async fn instantiate(&self, store: &mut Store<T>) -> wasmtime::Result<Handler> {
        Ok(match self {
            HandlerPre::V0_2(pre) => Handler::V0_2(pre.instantiate_async(store).await?),
            HandlerPre::V0_1(pre) => Handler::V0_1(pre.instantiate_async(store).await?),
        })
    }
}

/// What a handler export answered: a reply (`None` for hooks) or the
/// guest's `(kind, message)`.
pub(crate) type HandlerOutcome = Result<Option<Vec<u8>>, (String, String)>;

/// Which export of the `handler` interface to call.
pub(crate) enum Export<'a> {
    Handle {
        message_type: &'a str,
        payload: &'a [u8],
    },
    OnActivate,
    OnDeactivate,
}

/// One instance's `handler` export, whichever version it has.
pub(crate) enum Handler {
    V0_2(v0_2::ServiceObject),
    V0_1(v0_1::ServiceObject),
}

/// One body for both versions: their generated types differ only in name.
macro_rules! call_export {
    ($handler:expr, $store:expr, $object_id:expr, $export:expr) => {{
        let handler = $handler.rio_service_handler();
        match $export {
            Export::Handle {
                message_type,
                payload,
            } => handler
                .call_handle($store, $object_id, message_type, payload)
                .await?
                .map(Some)
                .map_err(|e| (e.kind, e.message)),
            Export::OnActivate => handler
                .call_on_activate($store, $object_id)
                .await?
                .map(|()| None)
                .map_err(|e| (e.kind, e.message)),
            Export::OnDeactivate => handler
                .call_on_deactivate($store, $object_id)
                .await?
                .map(|()| None)
                .map_err(|e| (e.kind, e.message)),
        }
    }};
}

impl Handler {
    /// Calls one export; `Err` is a trap, `Ok(Err(..))` the guest's own error.
    pub(crate) async fn call<S: AsContextMut<Data: Send>>(
        &self,
        store: S,
        object_id: &str,
        export: Export<'_>,
    ) -> wasmtime::Result<HandlerOutcome> {
        Ok(match self {
            Handler::V0_2(bindings) => call_export!(bindings, store, object_id, export),
            Handler::V0_1(bindings) => call_export!(bindings, store, object_id, export),
        })
    }
}
