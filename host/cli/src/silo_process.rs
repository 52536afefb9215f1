//! A `rio silo` child process on a free loopback port, killed when dropped.
//!
//! The one definition for `rio bench` (which starts its own silos) and the
//! CLI's integration tests, which include this file by path
//! (`tests/common/mod.rs`) and add their test-only controls (SIGTERM and
//! wait, signals, kill) there. It uses `std::process`, which both can: the
//! tests are synchronous, and the bench starts its silos before any load.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

/// A running `rio silo`, killed (and reaped) when dropped.
pub struct SiloProcess {
    /// The child; the tests signal and wait for it.
    pub child: Child,
    /// The address it listens on, as it printed it.
    pub address: String,
    /// Where its HTTP gateway listens, if `flags` asked for one (`--http`).
    pub http: Option<String>,
}

impl SiloProcess {
    /// Runs `rio silo` (the binary `rio`) on a free loopback port with its
    /// data in `data_dir` and extra `flags`, and waits for the line saying
    /// where it listens. Its stderr (the log, at `warn`) goes to `stderr`.
    pub fn spawn(
        rio: &Path,
        data_dir: &Path,
        flags: &[&str],
        stderr: Stdio,
    ) -> anyhow::Result<SiloProcess> {
        SiloProcess::spawn_at(rio, data_dir, "127.0.0.1:0", flags, stderr)
    }

    /// As [`SiloProcess::spawn`], listening on `listen`.
    pub fn spawn_at(
        rio: &Path,
        data_dir: &Path,
        listen: &str,
        flags: &[&str],
        stderr: Stdio,
    ) -> anyhow::Result<SiloProcess> {
        let mut child = Command::new(rio)
            .args(["silo", "--listen", listen, "--data"])
            .arg(data_dir)
            .args(flags)
            // Warnings and errors, unless `RIO_SILO_LOG` asks for more
            // (e.g. `info` to see a test's silos at work).
            .env(
                "RIO_LOG",
                std::env::var("RIO_SILO_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .context("cannot start a silo process")?;
        let stdout = child.stdout.take().context("no stdout from the silo")?;
        // Built before reading, so a silo that fails to start is killed
        // and reaped by `Drop` like any other.
        let mut silo = SiloProcess {
            child,
            address: String::new(),
            http: None,
        };
        let wants_http = flags.contains(&"--http");
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            if let Some(address) = line.strip_prefix("rio silo listening on ") {
                silo.address = address.trim().to_string();
            } else if let Some(address) = line.strip_prefix("rio silo HTTP gateway on ") {
                silo.http = Some(address.trim().to_string());
            }
            if !silo.address.is_empty() && (silo.http.is_some() || !wants_http) {
                return Ok(silo);
            }
        }
        bail!("the silo exited before it listened")
    }
}

impl Drop for SiloProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
