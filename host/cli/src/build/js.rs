//! Builds a JavaScript guest into a component with the JS SDK's build script
//! (esbuild to bundle, componentize-js to componentize).
//!
//! The guest's own package.json needs no dependencies: `rio-sdk` imports
//! resolve to the SDK folder, whose node_modules hold the tools.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use super::tooling::{guest_name, output_path, sdk_dir, wit_dir};

pub(crate) fn build_js_guest(dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot open {}", dir.display()))?;
    let sdk = sdk_dir("RIO_SDK_JS_DIR", "guest-sdk-js")?;
    check_tools(&sdk)?;
    let entry = dir.join(entry_module(&dir)?);
    if !entry.is_file() {
        bail!(
            "{} does not exist: a JavaScript guest's module is package.json's \"main\" (default index.js)",
            entry.display()
        );
    }
    let output = output_path(&dir, &guest_name(&dir))?;
    let status = Command::new("node")
        .arg(sdk.join("build.mjs"))
        .arg("--entry")
        .arg(&entry)
        .arg("--wit")
        .arg(wit_dir()?)
        .arg("--out")
        .arg(&output)
        .stdout(Stdio::null())
        .status()
        .context("cannot run node")?;
    if !status.success() {
        bail!("building the JavaScript guest {} failed", dir.display());
    }
    Ok(output)
}

/// package.json's "main", or index.js.
fn entry_module(dir: &Path) -> anyhow::Result<String> {
    let manifest = dir.join("package.json");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("cannot read {}", manifest.display()))?;
    let parsed: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", manifest.display()))?;
    Ok(parsed["main"].as_str().unwrap_or("index.js").to_string())
}

fn check_tools(sdk: &Path) -> anyhow::Result<()> {
    let node_runs = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !node_runs {
        bail!(
            "node is not installed; JavaScript guests need Node.js 20 or newer (https://nodejs.org)"
        );
    }
    let tools = sdk.join("node_modules/@bytecodealliance/componentize-js");
    if !tools.is_dir() {
        bail!(
            "the JavaScript SDK's build tools are not installed; install them with `npm ci --prefix {}`",
            sdk.display()
        );
    }
    Ok(())
}
