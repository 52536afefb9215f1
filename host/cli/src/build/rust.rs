//! Builds a Rust guest crate into a component with cargo.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

const TARGET: &str = "wasm32-wasip2";

/// Builds the crate in `dir` for wasm32-wasip2 and returns the component path.
pub(crate) fn build_rust_guest(dir: &Path, release: bool) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "{} has no Cargo.toml: `rio build` needs a Rust guest crate folder",
            dir.display()
        );
    }
    let manifest = manifest.canonicalize()?;
    check_target_installed()?;
    let mut command = Command::new("cargo");
    command
        .args([
            "build",
            "--target",
            TARGET,
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if release {
        command.arg("--release");
        // The silo cannot use a guest's DWARF, and it is most of the file
        // (2.7 MB of a 2.9 MB counter); a user's explicit choice still wins.
        if std::env::var_os("CARGO_PROFILE_RELEASE_STRIP").is_none() {
            command.env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
        }
    }
    let output = command
        .output()
        .context("cannot run cargo; install Rust from https://rustup.rs")?;
    if !output.status.success() {
        bail!("cargo build failed for {}", manifest.display());
    }
    find_component(&output.stdout, &manifest)
}

fn check_target_installed() -> anyhow::Result<()> {
    let Ok(output) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        // Without rustup we cannot tell; cargo will report a missing target itself.
        return Ok(());
    };
    let installed = String::from_utf8_lossy(&output.stdout);
    if !installed.lines().any(|line| line.trim() == TARGET) {
        bail!(
            "the Rust target {TARGET} is not installed; install it with `rustup target add {TARGET}`"
        );
    }
    Ok(())
}

/// Picks, from cargo's JSON messages, the `.wasm` cdylib of the crate itself.
fn find_component(messages: &[u8], manifest: &Path) -> anyhow::Result<PathBuf> {
    let mut found = None;
    for line in messages
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
    {
        let Ok(message) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let same_manifest = message["manifest_path"].as_str().map(Path::new) == Some(manifest);
        let is_cdylib = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"));
        if !same_manifest || !is_cdylib {
            continue;
        }
        let filenames = message["filenames"].as_array().into_iter().flatten();
        for filename in filenames.filter_map(|f| f.as_str()) {
            if filename.ends_with(".wasm") {
                found = Some(PathBuf::from(filename));
            }
        }
    }
    found.with_context(|| {
        format!(
            "cargo built no .wasm for {}: is its [lib] crate-type [\"cdylib\"]?",
            manifest.display()
        )
    })
}
