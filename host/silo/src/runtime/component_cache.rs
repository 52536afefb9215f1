//! Compiled components kept on disk, so a restarted silo does not recompile.
//!
//! Files are named by the SHA-256 of the component bytes, inside a folder
//! named by the engine's compatibility fingerprint: a wasmtime upgrade or a
//! different engine configuration simply misses the cache.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The hex SHA-256 of a component's bytes: its identity everywhere in rio.
pub(crate) fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) struct CompiledCache {
    engine: Engine,
    folder: PathBuf,
}

/// Whether a component came from the disk cache or was compiled now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Provenance {
    Cached,
    Compiled,
}

impl CompiledCache {
    pub(crate) fn new(engine: &Engine, data_dir: &Path) -> std::io::Result<CompiledCache> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let folder = data_dir
            .join("compiled")
            .join(format!("{:016x}", hasher.finish()));
        std::fs::create_dir_all(&folder)?;
        Ok(CompiledCache {
            engine: engine.clone(),
            folder,
        })
    }

    /// The compiled form of `bytes`, from disk if present, else compiled now
    /// and written to disk. Blocking: call from a blocking thread.
    pub(crate) fn load_or_compile(
        &self,
        hash: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, Provenance)> {
        let path = self.folder.join(format!("{hash}.cwasm"));
        if path.exists() {
            // SAFETY: the file was written by `Component::serialize` of this
            // very engine configuration (the folder is keyed by it) and the
            // data directory belongs to the silo.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(component) => return Ok((component, Provenance::Cached)),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "ignoring unusable compiled component")
                }
            }
        }
        let component = Component::new(&self.engine, bytes)?;
        match component.serialize() {
            Ok(serialized) => {
                if let Err(error) = write_atomically(&path, &serialized) {
                    tracing::warn!(path = %path.display(), %error, "cannot cache compiled component");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot serialize compiled component"),
        }
        Ok((component, Provenance::Compiled))
    }
}

/// Writes to a temporary name and renames, so a crash never leaves half a
/// file under the final name.
fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temporary, contents)?;
    std::fs::rename(&temporary, path)
}
