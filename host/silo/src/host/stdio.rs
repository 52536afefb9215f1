//! Guest stdout and stderr: each line goes to the silo log through the
//! activation's `GuestLog` (escaped, cut, and within the one rate the `log`
//! import counts against too), so a guest's `println!` and panic messages
//! reach the log, and a guest printing in a loop cannot flood it.
//!
//! Writes are taken synchronously (not through wasmtime's writer task), so a
//! panic message is in the log, and in the stderr lines kept for the turn,
//! before the trap that follows it is handled: the caller's error can then
//! quote it.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

use super::bindings::log::Level;
use super::log::GuestLog;

/// Longest line kept before it is logged anyway, so a guest printing without
/// newlines cannot grow the buffer without bound.
const MAX_LINE_BYTES: usize = 16 * 1024;

/// Stderr lines kept for the current turn, and the most of each one kept.
const RECENT_LINES: usize = 16;
const RECENT_LINE_CHARS: usize = 400;

/// Most bytes a guest may hand over in one write (it asks first).
const WRITE_PERMIT: usize = 64 * 1024;

/// One guest output stream (stdout or stderr) of one activation. Every
/// stream the guest opens on it shares one line buffer.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    lines: Arc<Mutex<LineLogger>>,
}

impl GuestOutput {
    pub(crate) fn new(log: Arc<GuestLog>, stream: &'static str) -> GuestOutput {
        GuestOutput {
            lines: Arc::new(Mutex::new(LineLogger {
                log,
                stream,
                line: Vec::new(),
                recent: VecDeque::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LineLogger> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets the lines kept so far: a new turn starts.
    pub(crate) fn clear_recent(&self) {
        self.lock().recent.clear();
    }

    /// The message of a Rust panic printed in this turn, on one line:
    /// `panicked at FILE:LINE:COL: MESSAGE`.
    pub(crate) fn panic_message(&self) -> Option<String> {
        let mut logger = self.lock();
        // A message cut short without its newline still counts.
        logger.emit();
        panic_message(logger.recent.iter().map(String::as_str))
    }
}

/// Finds the std panic hook's output among `lines`: a header ending in
/// `panicked at FILE:LINE:COL:`, then the message, then perhaps a `note:`.
fn panic_message<'a>(lines: impl Iterator<Item = &'a str>) -> Option<String> {
    let all: Vec<&str> = lines.collect();
    let header = all.iter().rposition(|line| line.contains("panicked at "))?;
    let location = all[header]
        .split_once("panicked at ")
        .map(|(_, rest)| rest.trim_end_matches(':').trim())?;
    let message: Vec<&str> = all[header + 1..]
        .iter()
        .map(|line| line.trim())
        .take_while(|line| !line.starts_with("note:"))
        .filter(|line| !line.is_empty())
        .collect();
    Some(format!("panicked at {location}: {}", message.join(" ")))
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

struct LineLogger {
    log: Arc<GuestLog>,
    stream: &'static str,
    line: Vec<u8>,
    /// The last lines of stderr in this turn (empty for stdout).
    recent: VecDeque<String>,
}

impl LineLogger {
    fn take(&mut self, bytes: &[u8]) {
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
    }

    fn emit(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_end();
        self.log.write(Level::Info, Some(self.stream), text);
        // Kept whether or not the line was logged: a trap's cause quotes it.
        if self.stream == "stderr" {
            if self.recent.len() == RECENT_LINES {
                self.recent.pop_front();
            }
            self.recent
                .push_back(text.chars().take(RECENT_LINE_CHARS).collect());
        }
        self.line.clear();
    }
}

impl Drop for LineLogger {
    fn drop(&mut self) {
        self.emit();
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    /// Always ready: writes never wait.
    async fn ready(&mut self) {}
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.lock().take(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(WRITE_PERMIT)
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.lock().take(bytes);
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.lock().emit();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::panic_message;

    #[test]
    fn finds_the_panic_message_after_other_output() {
        let lines = [
            "about to go wrong",
            "thread '<unnamed>' panicked at src/lib.rs:58:5:",
            "asked to trap",
            "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace",
        ];
        assert_eq!(
            panic_message(lines.iter().copied()).as_deref(),
            Some("panicked at src/lib.rs:58:5: asked to trap")
        );
        assert_eq!(panic_message(["just a line"].iter().copied()), None);
    }
}
