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
pub mod json;
pub mod writer;

pub use codec::{BufferBudget, FrameError, FrameReader, UNRESERVED_FRAME_BYTES, encode_frame};
pub use error::ReplyError;
pub use frame::{
    CallRequest, ClientFrame, DeadLetterInfo, DeploymentInfo, ENQUEUE_MESSAGE_TYPE, EnqueueRequest,
    Event, ForwardRequest, MAX_IDEMPOTENCY_KEY_BYTES, MAX_TOPICS_PER_CONNECTION, MemberInfo,
    ReminderInfo, Request, Response, ServerFrame, SiloStats, WaitInfo, WaitReport,
    encode_events_frame,
};
pub use writer::{FrameWriter, WriterClosed};

/// Version of the wire protocol; a silo refuses a client that says another.
pub const PROTOCOL_VERSION: u32 = 2;

/// Default bound on a call's payload and on its reply's, in bytes: the
/// silo's limit `payload-bytes`, which its clients and peers accept as a
/// reply. A silo answers a bigger payload or reply with an error for that
/// call alone, so a reply never breaks the connection it travels on.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;

/// What a reply frame holds besides its payload (request id, error kind
/// and message), at most: silos cut error messages to fit.
pub const REPLY_FRAME_OVERHEAD_BYTES: usize = 64 * 1024;

/// Default upper bound on one frame's body, in bytes. Deploying a component
/// travels in one frame, so this is sized for large (Python, JS) components.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
