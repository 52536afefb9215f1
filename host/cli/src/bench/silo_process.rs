//! The silos `rio bench` starts: a [`SiloProcess`] each (this same binary),
//! with a fresh data directory removed when the benchmark ends.

use std::process::Stdio;

use anyhow::Context;

use crate::silo_process::SiloProcess;

pub(crate) struct BenchSilo {
    // Declared first so the silo is killed before its directory is removed.
    process: SiloProcess,
    _data_dir: TempDir,
}

impl BenchSilo {
    /// Silo number `index` of this benchmark, in a cluster if `cluster` names a store.
    pub(crate) async fn start(
        index: usize,
        pooling_allocator: bool,
        cluster: Option<&str>,
    ) -> anyhow::Result<BenchSilo> {
        let data_dir = TempDir::new(index)?;
        let mut flags = Vec::new();
        if pooling_allocator {
            flags.push("--pooling-allocator".to_string());
        }
        if let Some(url) = cluster {
            flags.extend(["--cluster".to_string(), url.to_string()]);
        }
        let rio = std::env::current_exe()?;
        let dir = data_dir.0.clone();
        // Waiting for the silo's first line blocks; keep it off the runtime's
        // worker threads.
        let process = tokio::task::spawn_blocking(move || {
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            SiloProcess::spawn(&rio, &dir, &flags, Stdio::inherit())
        })
        .await
        .context("the task starting a silo failed")??;
        Ok(BenchSilo {
            process,
            _data_dir: data_dir,
        })
    }

    /// Where the silo listens.
    pub(crate) fn address(&self) -> &str {
        &self.process.address
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
