//! Length-delimited CBOR framing: a 4-byte big-endian body length, then the
//! body, one CBOR value.
//!
//! Reading is buffered and bounded: a length above the configured maximum is
//! an error before any of the body is read, so a hostile peer cannot make us
//! allocate, and a big frame's buffer grows with the bytes that arrive, not
//! with the length announced; readers may share a [`BufferBudget`] that
//! bounds what they hold of big frames together. Writing is left to the caller, who appends several encoded frames
//! to one buffer and writes them with one syscall.

use bytes::{Buf, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

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

/// Bytes a reader may buffer of an unfinished frame without a reservation
/// from its [`BufferBudget`]: small frames (most requests) never wait.
pub const UNRESERVED_FRAME_BYTES: usize = 64 * 1024;

/// How much the buffer grows by at a time while a big frame arrives: memory
/// follows the bytes that came, not the length a peer announced.
const GROWTH_STEP: usize = 256 * 1024;

/// A ceiling on the bytes that many readers together may hold in unfinished
/// frames bigger than [`UNRESERVED_FRAME_BYTES`]. A reader reserves a big
/// frame's whole length before it reads past that, and gives it back when
/// the frame is complete (or the reader is dropped); while the budget is
/// spent, readers of big frames wait, and the rest go on. Whole-frame
/// reservations cannot deadlock: each reader that holds one can finish.
pub struct BufferBudget {
    kib: Arc<Semaphore>,
    max_bytes: usize,
}

impl BufferBudget {
    /// A budget of `max_bytes` (rounded down to whole KiB).
    pub fn new(max_bytes: usize) -> Arc<BufferBudget> {
        let kib = (max_bytes / 1024).min(Semaphore::MAX_PERMITS);
        Arc::new(BufferBudget {
            kib: Arc::new(Semaphore::new(kib)),
            max_bytes,
        })
    }

    /// What the budget holds in all.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Bytes reserved by readers right now.
    pub fn reserved_bytes(&self) -> usize {
        (self.max_bytes / 1024).saturating_sub(self.kib.available_permits()) * 1024
    }
}

/// Reads frames from a byte stream, through its own buffer.
pub struct FrameReader<R> {
    stream: R,
    buffer: BytesMut,
    max_frame_bytes: usize,
    budget: Option<Arc<BufferBudget>>,
    /// The current big frame's reservation.
    reserved: Option<OwnedSemaphorePermit>,
    /// Since when the buffer has held an unfinished frame.
    partial_since: Option<Instant>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps `stream`; frames whose body exceeds `max_frame_bytes` are refused.
    pub fn new(stream: R, max_frame_bytes: usize) -> Self {
        FrameReader {
            stream,
            buffer: BytesMut::with_capacity(
                UNRESERVED_FRAME_BYTES.min(max_frame_bytes + LENGTH_PREFIX),
            ),
            max_frame_bytes,
            budget: None,
            reserved: None,
            partial_since: None,
        }
    }

    /// Changes the frame limit, e.g. from a small one for a hello to the
    /// general one.
    pub fn set_max_frame_bytes(&mut self, max_frame_bytes: usize) {
        self.max_frame_bytes = max_frame_bytes;
    }

    /// Makes frames bigger than [`UNRESERVED_FRAME_BYTES`] reserve their
    /// length from `budget` before they are read.
    pub fn set_budget(&mut self, budget: Arc<BufferBudget>) {
        self.budget = Some(budget);
    }

    /// Since when an unfinished frame has been buffered, if one is.
    pub fn partial_since(&self) -> Option<Instant> {
        self.partial_since
    }

    /// Starts the unfinished frame's clock again, e.g. after a pause in
    /// reading that was the reader's doing, not the peer's.
    pub fn restart_partial_clock(&mut self) {
        if self.partial_since.is_some() {
            self.partial_since = Some(Instant::now());
        }
    }

    /// Bytes held in the buffer (of frames not yet returned).
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// The next frame's raw body, or `None` at a clean end of stream.
    ///
    /// Cancel-safe: what was read stays buffered for the next call.
    pub async fn next_body(&mut self) -> Result<Option<BytesMut>, FrameError> {
        loop {
            let wanted = match self.next_frame_length()? {
                Some(length) if self.buffer.len() >= LENGTH_PREFIX + length => {
                    self.buffer.advance(LENGTH_PREFIX);
                    let body = self.buffer.split_to(length);
                    self.reserved = None;
                    self.partial_since = (!self.buffer.is_empty()).then(Instant::now);
                    return Ok(Some(body));
                }
                Some(length) => LENGTH_PREFIX + length,
                None => LENGTH_PREFIX,
            };
            if wanted > UNRESERVED_FRAME_BYTES
                && self.reserved.is_none()
                && let Some(budget) = &self.budget
            {
                let kib = u32::try_from(wanted.div_ceil(1024)).unwrap_or(u32::MAX);
                // The budget is never closed, so this only waits.
                if let Ok(permit) = budget.kib.clone().acquire_many_owned(kib).await {
                    self.reserved = Some(permit);
                }
            }
            let missing = wanted - self.buffer.len();
            self.buffer.reserve(missing.clamp(1, GROWTH_STEP));
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
            if self.partial_since.is_none() {
                self.partial_since = Some(Instant::now());
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

    /// The body length the buffered frame announces, once its prefix is in.
    fn next_frame_length(&self) -> Result<Option<usize>, FrameError> {
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
        Ok(Some(length))
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
    async fn a_big_frame_holds_what_came_and_waits_for_the_budget() {
        // Announced 10 MiB, 100 KiB sent: the buffer follows what came.
        let (mut client, server) = tokio::io::duplex(1024 * 1024);
        let budget = BufferBudget::new(12 * 1024 * 1024);
        let mut first = FrameReader::new(server, 16 * 1024 * 1024);
        first.set_budget(budget.clone());
        tokio::io::AsyncWriteExt::write_all(&mut client, &(10u32 << 20).to_be_bytes())
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut client, &[0u8; 100 * 1024])
            .await
            .unwrap();
        let read =
            tokio::time::timeout(std::time::Duration::from_millis(100), first.next_body()).await;
        assert!(read.is_err(), "the frame is unfinished");
        assert!(first.buffered_bytes() >= 100 * 1024);
        assert!(
            first.buffer.capacity() < 2 * 1024 * 1024,
            "{}",
            first.buffer.capacity()
        );
        assert!(first.partial_since().is_some());
        assert!(
            budget.reserved_bytes() >= 10 << 20,
            "the frame's length is reserved"
        );

        // A second big frame does not fit the rest of the budget: it waits,
        // and goes on once the first is whole.
        let (mut other_client, other_server) = tokio::io::duplex(1024 * 1024);
        let mut second = FrameReader::new(other_server, 16 * 1024 * 1024);
        second.set_budget(budget.clone());
        tokio::io::AsyncWriteExt::write_all(&mut other_client, &(4u32 << 20).to_be_bytes())
            .await
            .unwrap();
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(100), second.next_body()).await;
        assert!(waiting.is_err());
        assert_eq!(
            second.buffered_bytes(),
            4,
            "nothing past the prefix was read"
        );

        let rest = vec![0u8; (10 << 20) - 100 * 1024];
        let writer = tokio::spawn(async move {
            tokio::io::AsyncWriteExt::write_all(&mut client, &rest)
                .await
                .unwrap();
            client
        });
        let body = first.next_body().await.unwrap().unwrap();
        assert_eq!(body.len(), 10 << 20);
        drop(body);
        assert_eq!(budget.reserved_bytes(), 0, "given back once whole");
        let _client = writer.await.unwrap();
        let small_frame = tokio::spawn(async move {
            tokio::io::AsyncWriteExt::write_all(&mut other_client, &vec![0u8; 4 << 20])
                .await
                .unwrap();
            other_client
        });
        assert_eq!(second.next_body().await.unwrap().unwrap().len(), 4 << 20);
        let _other = small_frame.await.unwrap();
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
