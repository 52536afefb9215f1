//! Wire types and frame codec shared by rio silos and clients.
//!
//! - [`frame`]: what travels on a connection (hello, requests, replies).
//! - [`error`]: the typed errors a silo replies with.
//! - [`codec`]: length-delimited CBOR framing over any async byte stream.
//! - [`writer`]: [`FrameWriter`], one connection's writes shared by many tasks.
//!
//! This crate knows nothing of wasmtime or of the silo runtime; clients in
//! any process depend on it alone.
#![warn(missing_docs)]

pub mod codec;
pub mod error;
pub mod frame;
pub mod writer;

pub use codec::{FrameError, FrameReader, encode_frame};
pub use error::ReplyError;
pub use frame::{
    CallRequest, ClientFrame, DeadLetterInfo, DeploymentInfo, ENQUEUE_MESSAGE_TYPE, EnqueueRequest,
    ForwardRequest, MAX_IDEMPOTENCY_KEY_BYTES, MemberInfo, Request, Response, ServerFrame,
    SiloStats, WaitInfo, WaitReport,
};
pub use writer::{FrameWriter, WriterClosed};

/// Version of the wire protocol; a silo refuses a client that says another.
pub const PROTOCOL_VERSION: u32 = 2;

/// Default upper bound on one frame's body, in bytes. Deploying a component
/// travels in one frame, so this is sized for large (Python, JS) components.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
