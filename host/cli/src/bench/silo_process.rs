//! A silo started by `rio bench` as a child process, killed when dropped.

use std::process::Stdio;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub(crate) struct SiloProcess {
    pub(crate) address: String,
    _child: Child,
    _data_dir: TempDir,
}

impl SiloProcess {
    /// Silo number `index` of this benchmark, in a cluster if `cluster` names a store.
    pub(crate) async fn start(
        index: usize,
        pooling_allocator: bool,
        cluster: Option<&str>,
    ) -> anyhow::Result<SiloProcess> {
        let data_dir = TempDir::new(index)?;
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(["silo", "--listen", "127.0.0.1:0", "--data"])
            .arg(&data_dir.0)
            .env("RIO_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if pooling_allocator {
            command.arg("--pooling-allocator");
        }
        if let Some(url) = cluster {
            command.args(["--cluster", url]);
        }
        let mut child = command.spawn().context("cannot start a silo process")?;
        let stdout = child.stdout.take().context("no stdout from the silo")?;
        let mut lines = BufReader::new(stdout).lines();
        while let Some(line) = lines.next_line().await? {
            if let Some(address) = line.strip_prefix("rio silo listening on ") {
                let address = address.trim().to_string();
                return Ok(SiloProcess {
                    address,
                    _child: child,
                    _data_dir: data_dir,
                });
            }
        }
        bail!("the silo exited before it listened")
    }
}

/// A data directory removed when the benchmark ends.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(index: usize) -> anyhow::Result<TempDir> {
        let path = std::env::temp_dir().join(format!("rio-bench-{}-{index}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
