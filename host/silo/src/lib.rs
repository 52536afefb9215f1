//! The rio silo: hosts WebAssembly component service objects, activates them
//! on demand, runs their turns one message at a time, persists their state
//! and serves the wire protocol.
//!
//! The silo is built in ranked folders; a module imports only from its own
//! folder and from lower ranks (`tests/layers.rs` checks it). Lowest first:
//!
//! - `base` (0): object keys, the clock, reserved names, limits, text helpers.
//! - [`config`] (1): [`SiloConfig`], every tunable with its default; tokens
//!   ([`auth`]) and certificates ([`tls`]).
//! - [`storage`] (2): the storage traits and the SQL and Redis backends.
//! - `deadlock` (2): the wait-for graph that refuses calls closing a cycle.
//! - `observe` (2): every counter of the silo and its memory readings.
//! - `message` (3): envelopes, where replies go, the `Dispatch` trait.
//! - `cluster` (3): membership, failure detection, placement, forwarding
//!   (absent when a silo runs on its own).
//! - `effects` (4): what a turn leaves behind: the committer, idempotency
//!   replies, the outbox, client sends, interrupted keyed turns, wake-ups.
//! - `time` (4): an activation's timers; durable reminders and their scan.
//! - `events` (4): pub/sub to clients: subscriptions, fan-out, broadcast to
//!   the other silos.
//! - `host` (5): the WIT bindings and one file per interface given to guests.
//! - `runtime` (6): the wasmtime engine, memory mappings, the compiled
//!   component cache, deployments.
//! - `activation` (7): one object's lifecycle and turns; the directory.
//! - `routing` (8): the router, which delivers a message here or to its owner.
//! - `ingress` (9): the wire server: handshake, auth, one reader per connection.
//! - [`silo`] (10): [`Silo`], which wires the parts together; the entry point.
#![warn(missing_docs)]

mod activation;
mod base;
mod cluster;
pub mod config;
mod deadlock;
mod effects;
mod error;
mod events;
mod host;
mod ingress;
mod message;
mod observe;
mod routing;
mod runtime;
pub mod silo;
pub mod storage;
mod time;

pub use base::{Limits, ObjectKey, UnknownLimit};
pub use config::auth::{AuthConfig, Secret};
pub use config::{
    ClusterConfig, ConfigError, PlacementStrategy, SiloConfig, SqliteDurability, auth, tls,
};
pub use error::SiloError;
pub use ingress::listen;
pub use observe::memory::return_big_buffers_to_the_os;
pub use silo::Silo;
pub use tls::SiloTls;
