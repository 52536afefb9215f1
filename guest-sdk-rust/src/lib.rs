//! Write rio service objects in plain Rust.
//!
//! A service object is a `cdylib` crate: serde message types, one function
//! per message type, and one [`service!`] line that exports them. The SDK
//! does the CBOR and the WIT glue.
//!
//! ```no_run
//! use rio_sdk::prelude::*;
//!
//! #[derive(Deserialize)]
//! struct Increment { by: i64 }
//! #[derive(Serialize)]
//! struct Value { value: i64 }
//!
//! fn increment(message: Increment) -> Result<Value, Error> {
//!     let value = state::load::<i64>("value")?.unwrap_or(0) + message.by;
//!     state::save("value", &value)?;
//!     Ok(Value { value })
//! }
//!
//! fn get() -> Result<Value, Error> {
//!     Ok(Value { value: state::load("value")?.unwrap_or(0) })
//! }
//!
//! rio_sdk::service! { "increment" => increment, "get" => get }
//! ```
//!
//! A message that carries nothing (`get` above) is handled by a function
//! with no parameter, or one taking [`Empty`]; either accepts an empty
//! payload, `null` or `{}`. A message type can also have optional fields
//! (`#[serde(default)]`): an empty payload decodes as `{}`.
//!
//! - [`state`]: this object's typed keys and values.
//! - [`call`](mod@call): typed calls to other objects, and one-way sends.
//! - [`log`]: lines in the silo's log, tagged with this object.
//! - [`identity`]: this object's type and id.
//! - [`timers`]: messages to itself later, once or periodically.
//! - [`reminders`]: durable messages to itself at a time, kept by the
//!   silos across restarts.
//! - [`events`]: events published to topics, for subscribed clients.
//! - [`lifecycle`]: deactivating itself once a turn commits.
//! - [`Error`]: what a handler returns on failure (a kind and a message).
#![warn(missing_docs)]

pub mod call;
mod codec;
#[doc(hidden)]
pub mod dispatch;
mod empty;
mod error;
pub mod events;
pub mod identity;
pub mod lifecycle;
pub mod log;
pub mod reminders;
pub mod state;
pub mod timers;

pub use call::{call, send};
pub use empty::Empty;
pub use error::Error;
pub use reminders::Reminder;
pub use timers::Timer;

/// CBOR values, for messages whose shape is not known in advance.
pub use ciborium::Value as CborValue;

/// Everything a handler module usually needs.
pub mod prelude {
    pub use crate::{
        CborValue, Empty, Error, Reminder, Timer, call, events, identity, lifecycle, log,
        reminders, send, state, timers,
    };
    pub use serde::{Deserialize, Serialize};
}

/// The wit-bindgen glue. Public only because [`service!`] expands in the
/// user's crate, which must reach the export macro and the WIT types through
/// `rio_sdk` without depending on wit-bindgen itself.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        // `../wit` holds the package being developed; released versions sit
        // in subfolders (`0.1.0/`), which the WIT parser does not read. The
        // version is named anyway, so the SDK never silently targets another.
        path: "../wit",
        world: "rio:service/service-object@0.2.0",
        pub_export_macro: true,
        export_macro_name: "__export_service_object",
        default_bindings_module: "::rio_sdk::bindings",
    });
}

/// Exports the listed handlers as this component's service object.
///
/// Each `"message-type" => function` pair routes that message type to a
/// function taking one deserializable message, or nothing, and returning
/// `Result<impl Serialize, Error>`. Any other message type is answered with
/// the kind `unknown-message`. Optional hooks come first, in this order, each
/// `fn() -> Result<(), Error>`; their state writes are committed like a
/// message's:
///
/// ```no_run
/// # use rio_sdk::prelude::*;
/// # fn warm_up() -> Result<(), Error> { Ok(()) }
/// # fn flush() -> Result<(), Error> { Ok(()) }
/// # fn increment(_: Empty) -> Result<(), Error> { Ok(()) }
/// # fn get(_: Empty) -> Result<(), Error> { Ok(()) }
/// rio_sdk::service! {
///     on_activate = warm_up;
///     on_deactivate = flush;
///     "increment" => increment,
///     "get" => get,
/// }
/// ```
#[macro_export]
macro_rules! service {
    (
        $(on_activate = $on_activate:path;)?
        $(on_deactivate = $on_deactivate:path;)?
        $( $message_type:literal => $handler:path ),* $(,)?
    ) => {
        struct RioServiceObject;

        impl $crate::bindings::exports::rio::service::handler::Guest for RioServiceObject {
            fn handle(
                _object_id: ::std::string::String,
                message_type: ::std::string::String,
                payload: ::std::vec::Vec<u8>,
            ) -> ::std::result::Result<::std::vec::Vec<u8>, $crate::bindings::rio::service::types::HandlerError> {
                match message_type.as_str() {
                    $( $message_type => $crate::dispatch::handle(&payload, $handler), )*
                    other => ::std::result::Result::Err($crate::Error::unknown_message(other).into()),
                }
            }

            fn on_activate(
                _object_id: ::std::string::String,
            ) -> ::std::result::Result<(), $crate::bindings::rio::service::types::HandlerError> {
                $( return $crate::dispatch::hook($on_activate); )?
                #[allow(unreachable_code)]
                ::std::result::Result::Ok(())
            }

            fn on_deactivate(
                _object_id: ::std::string::String,
            ) -> ::std::result::Result<(), $crate::bindings::rio::service::types::HandlerError> {
                $( return $crate::dispatch::hook($on_deactivate); )?
                #[allow(unreachable_code)]
                ::std::result::Result::Ok(())
            }
        }

        $crate::bindings::__export_service_object!(RioServiceObject with_types_in $crate::bindings);
    };
}
