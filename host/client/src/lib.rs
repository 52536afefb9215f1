//! Rust client for rio silos.
//!
//! One [`Client`] is one TCP connection with any number of requests in
//! flight: each request gets an id, the caller writes its frame itself when
//! the socket is idle (frames sent meanwhile are batched into the next
//! write), and a reader task hands each reply to whoever waits for that id.
//! `Client` is cheap to clone; clones share the connection. Besides calls,
//! a client sends one way (`send`): acknowledged once the receiver's silo
//! stored the message, which then takes effect exactly once.
//!
//! - `calls`: [`Calls`], calls and one-way sends, the same on every client
//!   (`use rio_client::Calls;` to make them).
//! - `connection`: the connection and its reader task.
//! - `cluster`: [`ClusterClient`], connections to every silo of a cluster,
//!   calling each object's owner directly.
//! - `subscription`: [`Client::subscribe`], a [`Subscription`] to topics.
//! - `error`: [`ClientError`].
//! - `tls`: [`TlsConfig`], the certificates a client trusts.
//!
//! A silo that requires a token, or TLS, is reached with
//! [`Client::connect_with`] and [`ConnectOptions`].
//!
//! ```no_run
//! use rio_client::Calls;
//! # async fn demo() -> Result<(), rio_client::ClientError> {
//! #[derive(serde::Serialize)] struct Increment { by: i64 }
//! #[derive(serde::Deserialize)] struct Value { value: i64 }
//! let client = rio_client::Client::connect("127.0.0.1:7700").await?;
//! let reply: Value = client.call("Counter", "alice", "increment", &Increment { by: 2 }).await?;
//! // One way: returns once the silo stored the message; it takes effect once, later.
//! client.send("Counter", "alice", "increment", &Increment { by: 1 }).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod admin;
mod calls;
mod cluster;
mod connection;
mod error;
mod subscription;
mod tls;

pub use calls::Calls;
pub use cluster::ClusterClient;
pub use connection::{Client, ConnectOptions, DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT};
pub use error::ClientError;
pub use rio_protocol::{
    DeadLetterInfo, DeploymentInfo, Event, MemberInfo, ReminderInfo, ReplyError, SiloStats,
};
pub use subscription::{Delivery, FEED_CAPACITY, Subscription};
pub use tls::TlsConfig;
