//! Builds a Python guest into a component with componentize-py.

use std::path::{Path, PathBuf};

pub(crate) fn build_python_guest(dir: &Path) -> anyhow::Result<PathBuf> {
    anyhow::bail!("building Python guests ({}) is not implemented yet", dir.display())
}
