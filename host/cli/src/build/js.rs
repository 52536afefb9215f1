//! Builds a JavaScript guest into a component with componentize-js.

use std::path::{Path, PathBuf};

pub(crate) fn build_js_guest(dir: &Path) -> anyhow::Result<PathBuf> {
    anyhow::bail!("building JavaScript guests ({}) is not implemented yet", dir.display())
}
