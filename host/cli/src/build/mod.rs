//! `rio build DIR`: turn a guest's source folder into a component, whatever
//! its language.
//!
//! Installs nothing: when a tool or target is missing it says which, and the
//! command that installs it.

mod js;
mod python;
mod rust;
mod tooling;

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Args;

pub(crate) use rust::build_rust_guest;

#[derive(Args)]
pub(crate) struct BuildArgs {
    /// The guest's folder: a Rust crate (Cargo.toml), a JavaScript package
    /// (package.json) or a Python project (pyproject.toml or app.py).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Rust only: build with the dev profile instead of release.
    #[arg(long)]
    debug: bool,
}

pub(crate) fn run(args: BuildArgs) -> anyhow::Result<()> {
    let component = build_guest(&args.dir, !args.debug)?;
    println!("{}", component.display());
    Ok(())
}

/// The languages `rio build` knows, told apart by the files in the folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GuestLanguage {
    Rust,
    Python,
    JavaScript,
}

/// Which language the guest in `dir` is written in. A Cargo.toml wins over
/// the others, as a Rust crate may carry JS or Python tooling files.
pub(crate) fn detect_language(dir: &Path) -> anyhow::Result<GuestLanguage> {
    if dir.join("Cargo.toml").is_file() {
        Ok(GuestLanguage::Rust)
    } else if dir.join("package.json").is_file() {
        Ok(GuestLanguage::JavaScript)
    } else if dir.join("pyproject.toml").is_file() || dir.join("app.py").is_file() {
        Ok(GuestLanguage::Python)
    } else if !dir.is_dir() {
        bail!("{} is not a folder", dir.display())
    } else {
        bail!(
            "{} holds no guest that `rio build` knows: expected Cargo.toml (Rust), \
             package.json (JavaScript), or pyproject.toml or app.py (Python)",
            dir.display()
        )
    }
}

/// Builds the guest in `dir` and returns the path of the component.
pub(crate) fn build_guest(dir: &Path, release: bool) -> anyhow::Result<PathBuf> {
    match detect_language(dir)? {
        GuestLanguage::Rust => build_rust_guest(dir, release),
        GuestLanguage::Python => python::build_python_guest(dir),
        GuestLanguage::JavaScript => js::build_js_guest(dir),
    }
}
