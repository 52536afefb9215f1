//! Guest stdout and stderr: each line becomes a `tracing` event tagged with
//! the object, so a guest's `println!` and panic messages reach the silo log.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use crate::ObjectKey;

/// Longest line kept before it is logged anyway, so a guest printing without
/// newlines cannot grow the buffer without bound.
const MAX_LINE_BYTES: usize = 16 * 1024;

pub(crate) struct GuestOutput {
    key: ObjectKey,
    stream: &'static str,
}

impl GuestOutput {
    pub(crate) fn new(key: &ObjectKey, stream: &'static str) -> GuestOutput {
        GuestOutput {
            key: key.clone(),
            stream,
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineLogger {
            key: self.key.clone(),
            stream: self.stream,
            line: Vec::new(),
        })
    }
}

struct LineLogger {
    key: ObjectKey,
    stream: &'static str,
    line: Vec<u8>,
}

impl LineLogger {
    fn emit(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.line);
        let service_type: &Arc<str> = &self.key.service_type;
        let object_id: &Arc<str> = &self.key.object_id;
        tracing::info!(target: "rio::guest", service_type = &**service_type, object_id = &**object_id, stream = self.stream, "{}", text.trim_end());
        self.line.clear();
    }
}

impl AsyncWrite for LineLogger {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        for &byte in bytes {
            if byte == b'\n' {
                self.emit();
            } else {
                self.line.push(byte);
                if self.line.len() >= MAX_LINE_BYTES {
                    self.emit();
                }
            }
        }
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.emit();
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineLogger {
    fn drop(&mut self) {
        self.emit();
    }
}
