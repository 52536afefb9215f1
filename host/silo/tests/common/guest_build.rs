//! Builds the test guests once per test binary. Shared by the integration
//! tests (`common`) and the silo's own unit tests (through `#[path]`), so
//! both run the same components.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The guest crates the tests deploy, by package name.
const GUEST_PACKAGES: &[&str] = &[
    "rio-guest-counter",
    "rio-guest-faulty",
    "rio-guest-legacy",
    "rio-example-bank",
    "rio-example-counter",
    "rio-example-metrics",
    "rio-example-session",
    "rio-example-room",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The component bytes of a test guest, e.g. `guest("rio-guest-counter")`.
///
/// The guests are built for wasm32-wasip2 once per test binary, in a target
/// directory of their own so the nested cargo never waits on the outer one.
pub fn guest(package: &str) -> Vec<u8> {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let folder = BUILT.get_or_init(|| {
        let target_dir = workspace_root().join("target/wasm");
        let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        command
            .current_dir(workspace_root())
            // As `rio build` does, so both share one set of built artefacts.
            .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--target-dir",
            ])
            .arg(&target_dir);
        for package in GUEST_PACKAGES {
            command.args(["-p", package]);
        }
        let status = command
            .status()
            .expect("cannot run cargo to build the test guests");
        assert!(
            status.success(),
            "building the test guests failed (is `rustup target add wasm32-wasip2` done?)"
        );
        target_dir.join("wasm32-wasip2/release")
    });
    let file = folder.join(format!("{}.wasm", package.replace('-', "_")));
    std::fs::read(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()))
}
