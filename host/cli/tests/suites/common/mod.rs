//! Shared by the CLI's integration tests: runs the real `rio` binary, as
//! commands and as silo processes on ephemeral loopback ports.
#![allow(dead_code)]

pub mod bank;
pub mod guests;
pub mod http;
pub mod stores;
pub mod tls;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const RIO: &str = env!("CARGO_BIN_EXE_rio");

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Runs `rio ARGS` from the workspace root. Rust guest builds go to their
/// own target directory so they never wait on the cargo running this test.
pub fn rio(args: &[&str]) -> Output {
    Command::new(RIO)
        .args(args)
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", workspace_root().join("target/wasm"))
        .output()
        .expect("rio runs")
}

/// The trimmed stdout of a command that must have succeeded.
pub fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "rio failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .trim()
        .to_string()
}

// The one `SiloProcess`, shared with `rio bench`; the test-only controls
// are added below.
#[path = "../../../src/silo_process.rs"]
mod silo_process;
pub use silo_process::SiloProcess;

impl SiloProcess {
    pub fn start(data_dir: &Path) -> SiloProcess {
        SiloProcess::start_with(data_dir, &[])
    }

    /// Starts `rio silo` on a free port with extra flags.
    pub fn start_with(data_dir: &Path, flags: &[&str]) -> SiloProcess {
        SiloProcess::spawn(Path::new(RIO), data_dir, flags, Stdio::inherit())
            .expect("rio silo starts")
    }

    /// As [`SiloProcess::start_logged`], on `address` (a restart where a
    /// killed silo listened).
    pub fn start_logged_at(
        data_dir: &Path,
        address: &str,
        flags: &[&str],
    ) -> (SiloProcess, SiloLog) {
        let silo = SiloProcess::spawn_at(Path::new(RIO), data_dir, address, flags, Stdio::piped())
            .expect("rio silo starts");
        SiloProcess::keep_log(silo)
    }

    /// As [`SiloProcess::start_with`], keeping the silo's log (its stderr,
    /// warnings and errors) for the test to read; it is echoed as it comes.
    pub fn start_logged(data_dir: &Path, flags: &[&str]) -> (SiloProcess, SiloLog) {
        let silo = SiloProcess::spawn(Path::new(RIO), data_dir, flags, Stdio::piped())
            .expect("rio silo starts");
        SiloProcess::keep_log(silo)
    }

    fn keep_log(mut silo: SiloProcess) -> (SiloProcess, SiloLog) {
        let stderr = silo.child.stderr.take().unwrap();
        let log = SiloLog::default();
        let kept = log.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("{line}");
                let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
                kept.push_str(&line);
                kept.push('\n');
            }
        });
        (silo, log)
    }

    /// The silo's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, as an operator would stop it, and wait for a clean exit.
    pub fn stop(mut self) {
        let status = Command::new("kill")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "the silo exits cleanly on SIGTERM: {exit}");
    }
}

impl SiloProcess {
    /// SIGTERM, then waits at most `limit` for a clean exit; how long it
    /// took, or why not (a process still there after `limit` is killed).
    pub fn stop_within(
        mut self,
        limit: std::time::Duration,
    ) -> Result<std::time::Duration, String> {
        let started = std::time::Instant::now();
        let status = Command::new("kill")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                let took = started.elapsed();
                return if exit.success() {
                    Ok(took)
                } else {
                    Err(format!(
                        "the silo exited with {exit} {took:.2?} after SIGTERM"
                    ))
                };
            }
            if started.elapsed() > limit {
                return Err(format!(
                    "the silo was still running {limit:?} after SIGTERM"
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Sends the signal `name` (`STOP`, `CONT`, `TERM`, `KILL`, …).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name])
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -s {name} failed");
    }

    /// Waits up to `timeout` for the process to exit; true if it did.
    pub fn exited_within(&mut self, timeout: std::time::Duration) -> bool {
        let start = std::time::Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    }

    /// SIGKILL: the silo dies mid-flight, as in a crash.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// What a silo started with [`SiloProcess::start_logged`] has logged so far.
#[derive(Clone, Default)]
pub struct SiloLog(std::sync::Arc<std::sync::Mutex<String>>);

impl SiloLog {
    pub fn text(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The logged lines that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|line| line.contains(needle))
            .map(str::to_string)
            .collect()
    }
}

/// A raw connection that has said hello (without a token) and been
/// welcomed, reading frames of up to `max_frame` bytes.
pub async fn raw_connection(
    address: &str,
    max_frame: usize,
) -> (
    rio_protocol::FrameReader<tokio::net::tcp::OwnedReadHalf>,
    tokio::net::tcp::OwnedWriteHalf,
) {
    use rio_protocol::{ClientFrame, FrameReader, PROTOCOL_VERSION, ServerFrame, encode_frame};
    use tokio::io::AsyncWriteExt;
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (read_half, mut write_half) = stream.into_split();
    let mut reader = FrameReader::new(read_half, max_frame);
    let mut hello = Vec::new();
    encode_frame(
        &ClientFrame::Hello {
            protocol_version: PROTOCOL_VERSION,
            token: None,
        },
        &mut hello,
    )
    .unwrap();
    write_half.write_all(&hello).await.unwrap();
    match reader.next_frame::<ServerFrame>().await {
        Ok(Some(ServerFrame::Welcome { .. })) => {}
        other => panic!("expected a welcome, got {other:?}"),
    }
    (reader, write_half)
}

/// Whether an error leaves a call's outcome unknown (it may have run), so
/// that it must be retried with its idempotency key.
pub fn outcome_unknown(error: &rio_client::ClientError) -> bool {
    use rio_client::ClientError;
    match error {
        ClientError::Reply(reply) => {
            matches!(reply.kind(), "unavailable" | "timeout" | "overloaded")
        }
        ClientError::Closed(_) | ClientError::Connect { .. } | ClientError::Timeout(_) => true,
        _ => false,
    }
}
