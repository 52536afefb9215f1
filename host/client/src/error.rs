//! Everything that can go wrong with a call, as seen from the client.

use rio_protocol::{FrameError, ReplyError};

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TCP connection could not be made.
    #[error("cannot connect to silo at {address}: {source}")]
    Connect {
        /// Where we tried.
        address: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The TCP connection was made but could not be set up for rio (the OS
    /// refused `TCP_NODELAY`, without which small requests wait for
    /// Nagle's delay).
    #[error("cannot set up the connection to silo at {address}: {source}")]
    Socket {
        /// The silo connected to.
        address: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A cluster client was asked to connect to no silo at all.
    #[error("no silo address given: a cluster client needs at least one")]
    NoAddress,
    /// TLS could not be set up: a bad CA file, or the silo's certificate was
    /// not trusted.
    #[error("TLS: {0}")]
    Tls(String),
    /// The hello failed: no answer in time, another protocol version, or
    /// not a rio silo. (A hello refused for its token or for the silo's
    /// connection cap is a [`ClientError::Reply`] of kind `unauthorized` or
    /// `overloaded`.)
    #[error("handshake with silo failed: {0}")]
    Handshake(String),
    /// The connection is gone; requests in flight on it are lost.
    #[error("connection to silo closed: {0}")]
    Closed(String),
    /// No reply within the client's timeout. The request may still run.
    #[error("no reply within {0:?}")]
    Timeout(std::time::Duration),
    /// The silo answered with an error (also: refused the hello, with a
    /// kind).
    #[error(transparent)]
    Reply(#[from] ReplyError),
    /// A request could not be encoded or a reply decoded.
    #[error("codec error: {0}")]
    Codec(String),
    /// The silo answered with a response of the wrong kind.
    #[error("unexpected response from silo: {0}")]
    Unexpected(String),
}

impl From<FrameError> for ClientError {
    fn from(error: FrameError) -> Self {
        match error {
            FrameError::Io(e) => ClientError::Closed(e.to_string()),
            other => ClientError::Codec(other.to_string()),
        }
    }
}
