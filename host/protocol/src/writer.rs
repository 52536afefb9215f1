//! A frame writer shared by every task of one connection.
//!
//! Whoever sends while the socket is idle writes at once, with a
//! non-blocking `try_write`, saving the hop to a writer task on the latency
//! path. Frames sent while a write is under way queue up and go out together
//! in the next write, which keeps syscalls few under load. Only when the
//! socket would block does a background task take over, so no sender ever
//! waits on a slow peer. Over any other stream (a TLS session, which has no
//! non-blocking write) the background task does every write.
//!
//! The writer counts the bytes it accepted and has not yet written
//! ([`FrameWriter::unsent_bytes`]), so the owner of a connection can stop
//! producing work for a peer that does not read ([`FrameWriter::wrote`]
//! tells when that count went down).

use std::borrow::Cow;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// The frame writer of one connection. After [`FrameWriter::close`] the
/// background task flushes what is queued and ends; the write side closes
/// when the last handle is dropped.
pub struct FrameWriter {
    stream: Sink,
    state: Mutex<WriterState>,
    wake_background: Notify,
    /// Woken (all waiters) whenever bytes left for the socket, and when the
    /// writer closes or fails; only while someone waits (`progress_waiters`),
    /// so the common case costs no extra lock per write.
    progress: Notify,
    progress_waiters: AtomicUsize,
}

/// Where a writer's bytes go.
enum Sink {
    /// A TCP socket: senders write to it directly while it has room.
    Tcp(OwnedWriteHalf),
    /// Any other byte stream: only the background task writes, so the lock
    /// is never contended.
    Stream(tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>),
}

/// How long the end of a stream (a TLS close-notify) may take to go out.
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Default)]
struct WriterState {
    /// Bytes waiting for the current writer to pick them up.
    queued: Vec<u8>,
    /// Someone (a sender or the background task) is writing now.
    writing: bool,
    /// The background task is that someone: a sender handed over to it.
    background_owns: bool,
    /// No more frames are taken: the connection failed or is closing.
    closed: bool,
    /// Bytes taken by `send` and not yet written: `queued` plus the batch
    /// the current writer holds.
    unsent: usize,
    /// The writer gave up: what is unsent is dropped and the background task
    /// stops even while the peer does not read.
    aborted: bool,
}

/// Rounds a sender writes on behalf of others before handing over, so one
/// task never spends long doing another's I/O.
const DIRECT_ROUNDS: usize = 4;

/// The connection is closed; the frame was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterClosed;

impl FrameWriter {
    /// Wraps `stream` and starts its background task on the current runtime.
    pub fn start(stream: OwnedWriteHalf) -> Arc<FrameWriter> {
        FrameWriter::start_sink(Sink::Tcp(stream))
    }

    /// As [`FrameWriter::start`] for any byte stream, such as a TLS session.
    pub fn start_stream(stream: Box<dyn AsyncWrite + Send + Unpin>) -> Arc<FrameWriter> {
        FrameWriter::start_sink(Sink::Stream(tokio::sync::Mutex::new(stream)))
    }

    fn start_sink(stream: Sink) -> Arc<FrameWriter> {
        let writer = Arc::new(FrameWriter {
            stream,
            state: Mutex::new(WriterState::default()),
            wake_background: Notify::new(),
            progress: Notify::new(),
            progress_waiters: AtomicUsize::new(0),
        });
        tokio::spawn(writer.clone().run_background());
        writer
    }

    /// Sends already-encoded frame bytes; never waits on the peer.
    pub fn send(&self, frame: &[u8]) -> Result<(), WriterClosed> {
        self.send_bytes(Cow::Borrowed(frame), usize::MAX).map(drop)
    }

    /// Sends `frame` unless more than `max_unsent` bytes are unsent already
    /// (then `Ok(false)`, and nothing is queued): what waits for a peer
    /// that does not read stays below `max_unsent` plus one frame, however
    /// many tasks send at once.
    /// Takes `frame` itself, so a big one is not copied when nothing else
    /// is queued.
    pub fn send_within(&self, frame: Vec<u8>, max_unsent: usize) -> Result<bool, WriterClosed> {
        self.send_bytes(Cow::Owned(frame), max_unsent)
    }

    fn send_bytes(&self, frame: Cow<'_, [u8]>, max_unsent: usize) -> Result<bool, WriterClosed> {
        let mut batch = {
            let mut state = self.lock();
            if state.closed {
                return Err(WriterClosed);
            }
            if state.unsent > max_unsent {
                return Ok(false);
            }
            state.unsent += frame.len();
            if state.queued.is_empty() {
                state.queued = frame.into_owned();
            } else {
                state.queued.extend_from_slice(&frame);
            }
            if state.writing {
                return Ok(true);
            }
            state.writing = true;
            std::mem::take(&mut state.queued)
        };
        for _ in 0..DIRECT_ROUNDS {
            match self.write_without_waiting(&batch) {
                Ok(written) if written == batch.len() => {}
                Ok(written) => {
                    self.count_written(written);
                    self.hand_over(batch.split_off(written));
                    return Ok(true);
                }
                Err(error) => {
                    tracing::debug!(%error, "connection write failed");
                    self.fail();
                    return Err(WriterClosed);
                }
            }
            let mut state = self.lock();
            state.unsent = state.unsent.saturating_sub(batch.len());
            batch.clear();
            if self.progress_waiters.load(Ordering::SeqCst) > 0 {
                self.progress.notify_waiters();
            }
            if state.queued.is_empty() {
                state.writing = false;
                if state.closed {
                    // The background task may be waiting for us to finish.
                    self.wake_background.notify_one();
                }
                return Ok(true);
            }
            std::mem::swap(&mut batch, &mut state.queued);
        }
        self.hand_over(batch);
        Ok(true)
    }

    /// Takes no more frames; what is queued is still written, then the
    /// background task ends.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake_background.notify_one();
        self.wake_progress_waiters();
    }

    /// Takes no more frames and drops what is unsent: for a peer that does
    /// not read, whose queue would otherwise keep the connection open.
    pub fn abort(&self) {
        self.lock().aborted = true;
        self.fail();
    }

    /// Whether the writer takes no more frames.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Bytes accepted by [`FrameWriter::send`] and not yet written to the
    /// socket (0 once the writer failed or was aborted).
    pub fn unsent_bytes(&self) -> usize {
        self.lock().unsent
    }

    /// Resolves after the next write that sent bytes, or when the writer
    /// closes. Counts from the call: take it before checking
    /// [`FrameWriter::unsent_bytes`] so no wake-up is missed in between.
    pub fn wrote(&self) -> Wrote<'_> {
        // Counted before the `Notified` exists: a writer that misses the
        // count has already updated what the caller is about to check.
        self.progress_waiters.fetch_add(1, Ordering::SeqCst);
        Wrote {
            notified: Box::pin(self.progress.notified()),
            writer: self,
        }
    }

    fn wake_progress_waiters(&self) {
        if self.progress_waiters.load(Ordering::SeqCst) > 0 {
            self.progress.notify_waiters();
        }
    }

    /// After a write error: drop everything and let the background task end.
    fn fail(&self) {
        {
            let mut state = self.lock();
            state.closed = true;
            state.writing = false;
            state.background_owns = false;
            state.queued.clear();
            state.unsent = 0;
        }
        self.wake_background.notify_one();
        self.wake_progress_waiters();
    }

    fn count_written(&self, written: usize) {
        if written == 0 {
            return;
        }
        {
            let mut state = self.lock();
            state.unsent = state.unsent.saturating_sub(written);
        }
        self.wake_progress_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WriterState> {
        // Held only for buffer bookkeeping; a poisoned lock still holds
        // consistent bytes.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes what the socket takes now; returns how much that was.
    /// A stream other than TCP takes nothing this way: the background task
    /// writes it.
    fn write_without_waiting(&self, bytes: &[u8]) -> io::Result<usize> {
        let Sink::Tcp(stream) = &self.stream else {
            return Ok(0);
        };
        let mut written = 0;
        while written < bytes.len() {
            match stream.try_write(&bytes[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => return Err(error),
            }
        }
        Ok(written)
    }

    /// Puts unwritten bytes back at the front and lets the background task
    /// finish; `writing` stays set so order is kept.
    fn hand_over(&self, mut unwritten: Vec<u8>) {
        {
            let mut state = self.lock();
            unwritten.extend_from_slice(&state.queued);
            state.queued = unwritten;
            state.background_owns = true;
        }
        self.wake_background.notify_one();
    }

    async fn run_background(self: Arc<Self>) {
        loop {
            self.wake_background.notified().await;
            loop {
                let batch = {
                    let mut state = self.lock();
                    if state.background_owns && state.queued.is_empty() {
                        state.background_owns = false;
                        state.writing = false;
                    }
                    if state.background_owns {
                        Some(std::mem::take(&mut state.queued))
                    } else if state.closed && !state.writing {
                        None
                    } else {
                        break;
                    }
                };
                let Some(batch) = batch else {
                    self.shut_down().await;
                    return;
                };
                if let Err(error) = self.write_waiting(&batch).await {
                    tracing::debug!(%error, "connection write failed");
                    self.fail();
                }
            }
        }
    }

    /// Ends the stream, so the peer sees its end even while handles to this
    /// writer still exist.
    async fn shut_down(&self) {
        match &self.stream {
            Sink::Tcp(stream) => {
                let _ = socket2::SockRef::from(stream.as_ref()).shutdown(std::net::Shutdown::Write);
            }
            Sink::Stream(stream) => {
                let mut stream = stream.lock().await;
                let _ = tokio::time::timeout(SHUTDOWN_WAIT, stream.shutdown()).await;
            }
        }
    }

    async fn write_waiting(&self, bytes: &[u8]) -> io::Result<()> {
        let stream = match &self.stream {
            Sink::Tcp(stream) => stream,
            Sink::Stream(stream) => return self.write_to_stream(stream, bytes).await,
        };
        let mut written = 0;
        while written < bytes.len() {
            tokio::select! {
                ready = stream.writable() => ready?,
                // `close` and `abort` wake this task; only an abort ends
                // a wait on a peer that does not read.
                _ = self.wake_background.notified() => {
                    if self.lock().aborted {
                        return Err(io::Error::other("aborted"));
                    }
                    continue;
                }
            }
            let now = self.write_without_waiting(&bytes[written..])?;
            self.count_written(now);
            written += now;
        }
        Ok(())
    }
}

impl FrameWriter {
    async fn write_to_stream(
        &self,
        stream: &tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>,
        bytes: &[u8],
    ) -> io::Result<()> {
        let mut stream = stream.lock().await;
        let write = async {
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        // Only an abort ends a write to a peer that does not read; other
        // wake-ups (more frames queued) are seen after this batch.
        let aborted = async {
            loop {
                self.wake_background.notified().await;
                if self.lock().aborted {
                    return;
                }
            }
        };
        tokio::select! {
            written = write => {
                written?;
                self.count_written(bytes.len());
                Ok(())
            }
            _ = aborted => Err(io::Error::other("aborted")),
        }
    }
}

/// The future of [`FrameWriter::wrote`].
pub struct Wrote<'a> {
    notified: Pin<Box<Notified<'a>>>,
    writer: &'a FrameWriter,
}

impl Future for Wrote<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        self.notified.as_mut().poll(context)
    }
}

impl Drop for Wrote<'_> {
    fn drop(&mut self) {
        self.writer.progress_waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    async fn pair() -> (Arc<FrameWriter>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let connect = TcpStream::connect(listener.local_addr().unwrap());
        let (connected, accepted) = tokio::join!(connect, listener.accept());
        let (_read, write) = connected.unwrap().into_split();
        (FrameWriter::start(write), accepted.unwrap().0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unsent_bytes_wait_for_a_reader_and_an_abort_drops_them() {
        let (writer, mut peer) = pair().await;
        // Far more than the socket buffers hold while the peer reads nothing.
        let chunk = vec![7u8; 1024 * 1024];
        for _ in 0..64 {
            writer.send(&chunk).unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let unsent = writer.unsent_bytes();
        assert!(unsent > 16 * 1024 * 1024, "only {unsent} bytes unsent");

        // Reading some makes progress visible.
        let wrote = writer.wrote();
        let mut buffer = vec![0u8; 4 * 1024 * 1024];
        let mut read = 0;
        while read < buffer.len() {
            read += peer.read(&mut buffer[read..]).await.unwrap();
        }
        tokio::time::timeout(std::time::Duration::from_secs(5), wrote)
            .await
            .expect("a write after the peer read");
        assert!(writer.unsent_bytes() < unsent);

        // An abort drops the rest and ends the stream although nobody reads.
        writer.abort();
        assert_eq!(writer.unsent_bytes(), 0);
        assert!(writer.send(b"late").is_err());
        let ended = async {
            loop {
                match peer.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), ended)
            .await
            .expect("the stream ends after an abort");
    }
}
