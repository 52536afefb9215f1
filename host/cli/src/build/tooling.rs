//! What the Python and JavaScript builders share: where the WIT and the SDKs
//! are, and where a component goes.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The repository this `rio` was built from; the SDKs and the WIT live there.
fn repository_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The world the SDKs target, named with its version: `wit/` also keeps the
/// released versions, in subfolders the WIT parsers skip, and a guest built
/// against the wrong one would not match its SDK's imports.
pub(crate) const WORLD: &str = "rio:service/service-object@0.2.0";

/// The rio WIT folder: `RIO_WIT_DIR`, else the repository's `wit/`.
pub(crate) fn wit_dir() -> anyhow::Result<PathBuf> {
    located("RIO_WIT_DIR", "wit")
}

/// An SDK folder: the environment variable `variable`, else `folder` in the
/// repository.
pub(crate) fn sdk_dir(variable: &str, folder: &str) -> anyhow::Result<PathBuf> {
    located(variable, folder)
}

fn located(variable: &str, folder: &str) -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os(variable) {
        Some(dir) => PathBuf::from(dir),
        None => repository_dir().join(folder),
    };
    if !dir.is_dir() {
        bail!(
            "{} does not exist: `rio build` needs the rio repository's `{folder}` folder; set {variable} to where it is",
            dir.display()
        );
    }
    dir.canonicalize()
        .with_context(|| format!("cannot open {}", dir.display()))
}

/// A component's name: its folder's name, as a file name.
pub(crate) fn guest_name(dir: &Path) -> String {
    let name = dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "guest".into());
    name.replace(
        |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_',
        "_",
    )
}

/// `DIR/target/NAME.wasm`, with its folder created.
pub(crate) fn output_path(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let target = dir.join("target");
    std::fs::create_dir_all(&target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    Ok(target.join(format!("{name}.wasm")))
}
