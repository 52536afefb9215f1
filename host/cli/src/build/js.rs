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
    let version = Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string());
    let Some(version) = version else {
        bail!(
            "node is not installed; JavaScript guests need Node.js 20 or newer (https://nodejs.org)"
        );
    };
    // "v20.20.2"; the pinned componentize-js and esbuild are tried on 20.
    let major = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|major| major.parse::<u32>().ok());
    if major.is_some_and(|major| major < 20) {
        bail!(
            "node {version} is too old; JavaScript guests need Node.js 20 or newer (https://nodejs.org)"
        );
    }
    // What build.mjs and the SDK import; a partial install fails here, with
    // the fix, rather than in the middle of a bundle.
    let missing: Vec<&str> = ["@bytecodealliance/componentize-js", "esbuild", "cborg"]
        .into_iter()
        .filter(|package| !sdk.join("node_modules").join(package).is_dir())
        .collect();
    if !missing.is_empty() {
        bail!(
            "the JavaScript SDK's build tools are not installed (missing {}); install them with `npm ci --prefix {}`",
            missing.join(", "),
            sdk.display()
        );
    }
    Ok(())
}
