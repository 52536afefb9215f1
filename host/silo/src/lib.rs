//! The rio silo: hosts WebAssembly component service objects, activates them
//! on demand, runs their turns one message at a time, persists their state
//! and serves the wire protocol.
//!
//! - [`config`]: [`SiloConfig`], every tunable with its default.
//! - [`silo`]: [`Silo`], which wires the parts together; the entry point.
//! - `engine`: the shared wasmtime `Engine` and its epoch ticker.
//! - `mappings`: linear memories and fiber stacks that take few kernel mappings.
//! - `component_cache`: compiled components kept on disk, keyed by content and engine.
//! - `deployments`: service type → validated, pre-instantiated component.
//! - `bindings`: the one `bindgen!` of the WIT world, kept private.
//! - `host`: one file per WIT interface the silo provides to guests.
//! - `activation`: one object's live instance, its mailbox and its turns.
//! - `idempotency`: replies kept under idempotency keys, derived keys, the sweep.
//! - `outbox`: delivery of one-way sends committed with their turns, dead letters.
//! - `resume`: keyed turns interrupted after their calls, run again first.
//! - `client_send`: a client's one-way send, stored in its receiver's outbox.
//! - `directory`: which objects have an activation on this silo.
//! - `router`: delivers a message to an object, activating it if needed.
//! - `server`: the TCP listener, the handshake and one reader per connection.
//! - [`auth`]: the tokens a silo accepts and what each allows.
//! - [`tls`]: the silo's certificate and the ones it trusts on its peers.
//! - `connection`: one connection's writer, requests in flight and limits.
//! - `log_summary`: one log line per period for events that may flood.
//! - `cluster`: membership, failure detection, placement and forwarding
//!   between silos (absent when a silo runs on its own).
//! - [`storage`]: the storage traits and the SQLite backend.
#![warn(missing_docs)]

mod activation;
pub mod auth;
mod bindings;
mod client_send;
mod cluster;
mod component_cache;
pub mod config;
mod connection;
mod deadlock;
mod deployments;
mod directory;
mod engine;
mod error;
mod host;
mod idempotency;
mod limits;
mod log_summary;
mod mailbox;
mod mappings;
mod object_key;
mod outbox;
mod resume;
mod router;
mod server;
pub mod silo;
mod stats;
pub mod storage;
pub mod tls;

pub use auth::{AuthConfig, Secret};
pub use config::{ClusterConfig, PlacementStrategy, SiloConfig};
pub use error::SiloError;
pub use limits::{Limits, UnknownLimit};
pub use object_key::ObjectKey;
pub use silo::Silo;
pub use tls::SiloTls;
