//! Length-delimited CBOR framing: a 4-byte big-endian body length, then the
//! body, one CBOR value.
//!
//! Reading is buffered and bounded: a length above the configured maximum is
//! an error before any of the body is read, so a hostile peer cannot make us
//! allocate. Writing is left to the caller, who appends several encoded frames
//! to one buffer and writes them with one syscall.

use bytes::{Buf, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The underlying stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The announced body length is above the limit.
    #[error("frame of {length} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// What the peer announced.
        length: usize,
        /// The configured maximum.
        limit: usize,
    },
    /// The body is not valid CBOR of the expected shape.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The stream ended in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// A value could not be encoded.
    #[error("cannot encode frame: {0}")]
    Encode(String),
}

const LENGTH_PREFIX: usize = 4;

/// Appends `value` as one frame (length prefix and CBOR body) to `out`.
pub fn encode_frame<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX]);
    ciborium::into_writer(value, &mut *out).map_err(|e| {
        out.truncate(start);
        FrameError::Encode(e.to_string())
    })?;
    let body_len = out.len() - start - LENGTH_PREFIX;
    let body_len = u32::try_from(body_len).map_err(|_| {
        out.truncate(start);
        FrameError::Encode(format!(
            "frame body of {body_len} bytes does not fit a u32 length"
        ))
    })?;
    out[start..start + LENGTH_PREFIX].copy_from_slice(&body_len.to_be_bytes());
    Ok(())
}

/// Reads frames from a byte stream, through its own buffer.
pub struct FrameReader<R> {
    stream: R,
    buffer: BytesMut,
    max_frame_bytes: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps `stream`; frames whose body exceeds `max_frame_bytes` are refused.
    pub fn new(stream: R, max_frame_bytes: usize) -> Self {
        FrameReader {
            stream,
            buffer: BytesMut::with_capacity(64 * 1024),
            max_frame_bytes,
        }
    }

    /// The next frame's raw body, or `None` at a clean end of stream.
    pub async fn next_body(&mut self) -> Result<Option<BytesMut>, FrameError> {
        loop {
            if let Some(body) = self.split_complete_frame()? {
                return Ok(Some(body));
            }
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
        }
    }

    /// The next frame decoded as `T`, or `None` at a clean end of stream.
    pub async fn next_frame<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        match self.next_body().await? {
            Some(body) => decode_body(&body).map(Some),
            None => Ok(None),
        }
    }

    fn split_complete_frame(&mut self) -> Result<Option<BytesMut>, FrameError> {
        if self.buffer.len() < LENGTH_PREFIX {
            return Ok(None);
        }
        let mut prefix = [0u8; LENGTH_PREFIX];
        prefix.copy_from_slice(&self.buffer[..LENGTH_PREFIX]);
        let length = u32::from_be_bytes(prefix) as usize;
        if length > self.max_frame_bytes {
            return Err(FrameError::TooLarge {
                length,
                limit: self.max_frame_bytes,
            });
        }
        if self.buffer.len() < LENGTH_PREFIX + length {
            self.buffer
                .reserve(LENGTH_PREFIX + length - self.buffer.len());
            return Ok(None);
        }
        self.buffer.advance(LENGTH_PREFIX);
        Ok(Some(self.buffer.split_to(length)))
    }
}

/// Decodes one frame body.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    ciborium::from_reader(body).map_err(|e| FrameError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CallRequest, ClientFrame, Request};

    fn call_frame(id: u64) -> ClientFrame {
        ClientFrame::Request {
            id,
            request: Request::Call(CallRequest {
                service_type: "Counter".into(),
                object_id: "alice".into(),
                message_type: "get".into(),
                payload: serde_bytes::ByteBuf::from(vec![0xa0]),
                timeout_ms: Some(250),
                idempotency_key: None,
            }),
        }
    }

    #[tokio::test]
    async fn frames_round_trip_back_to_back() {
        let mut wire = Vec::new();
        for id in 0..3 {
            encode_frame(&call_frame(id), &mut wire).unwrap();
        }
        let mut reader = FrameReader::new(&wire[..], 1024);
        for id in 0..3 {
            let frame: ClientFrame = reader.next_frame().await.unwrap().unwrap();
            assert_eq!(frame, call_frame(id));
        }
        assert!(reader.next_frame::<ClientFrame>().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_length_is_refused_before_reading_the_body() {
        let wire = 2000u32.to_be_bytes();
        let mut reader = FrameReader::new(&wire[..], 1024);
        let error = reader.next_body().await.unwrap_err();
        assert!(
            matches!(
                error,
                FrameError::TooLarge {
                    length: 2000,
                    limit: 1024
                }
            ),
            "{error}"
        );
    }

    #[tokio::test]
    async fn truncated_and_malformed_frames_are_errors() {
        let mut wire = Vec::new();
        encode_frame(&call_frame(1), &mut wire).unwrap();
        wire.truncate(wire.len() - 1);
        let mut reader = FrameReader::new(&wire[..], 1024);
        assert!(matches!(
            reader.next_body().await,
            Err(FrameError::Truncated)
        ));

        let garbage = [0, 0, 0, 2, 0xff, 0xff];
        let mut reader = FrameReader::new(&garbage[..], 1024);
        assert!(matches!(
            reader.next_frame::<ClientFrame>().await,
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn a_call_from_an_older_client_has_no_idempotency_key() {
        // The frame an older client sends: the same map without the field.
        #[derive(serde::Serialize)]
        struct OlderCall {
            service_type: &'static str,
            object_id: &'static str,
            message_type: &'static str,
            #[serde(with = "serde_bytes")]
            payload: Vec<u8>,
            timeout_ms: Option<u64>,
        }
        let mut body = Vec::new();
        let older = OlderCall {
            service_type: "Counter",
            object_id: "alice",
            message_type: "get",
            payload: vec![0xa0],
            timeout_ms: Some(250),
        };
        ciborium::into_writer(&older, &mut body).unwrap();
        let call: CallRequest = decode_body(&body).unwrap();
        assert_eq!(call.idempotency_key, None);
        assert_eq!(call.timeout_ms, Some(250));
    }
}
