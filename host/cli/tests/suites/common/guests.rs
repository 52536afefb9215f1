//! Guests built once per test process, in each language, for the tests that
//! need several languages at once (crossing transfers, deadlines).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;

use super::{rio, workspace_root};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Language {
    Rust,
    Python,
    JavaScript,
}

impl Language {
    pub const ALL: [Language; 3] = [Language::Rust, Language::Python, Language::JavaScript];

    /// The bank account guest, relative to the workspace root; all three
    /// have the messages of `examples/bank`.
    pub fn bank(self) -> &'static str {
        match self {
            Language::Rust => "examples/bank",
            Language::Python => "guests/bank-python",
            Language::JavaScript => "guests/bank-js",
        }
    }

    pub fn faulty(self) -> &'static str {
        match self {
            Language::Rust => "guests/faulty",
            Language::Python => "guests/faulty-python",
            Language::JavaScript => "guests/faulty-js",
        }
    }

    /// A short tag for type names: `RustAccount`, `PyAccount`, `JsAccount`.
    pub fn tag(self) -> &'static str {
        match self {
            Language::Rust => "Rust",
            Language::Python => "Py",
            Language::JavaScript => "Js",
        }
    }

    /// Why this language's guests cannot be built here, if they cannot.
    fn missing_tooling(self) -> Option<String> {
        let runs = |program: &str, arg: &str| {
            std::process::Command::new(program)
                .arg(arg)
                .output()
                .is_ok_and(|output| output.status.success())
        };
        match self {
            Language::Rust => None,
            Language::Python => (!runs("componentize-py", "--version")).then(|| {
                "componentize-py is not installed (pip install -r guest-sdk-python/requirements-build.txt)".into()
            }),
            Language::JavaScript => {
                let tools = workspace_root()
                    .join("guest-sdk-js/node_modules/@bytecodealliance/componentize-js");
                (!runs("node", "--version") || !tools.is_dir()).then(|| {
                    "node or the JS SDK's tools are missing (npm ci --prefix guest-sdk-js)".into()
                })
            }
        }
    }
}

/// Whether every language's tooling is here; prints what is missing, and
/// fails in CI (`CI=true`), where a skipped language would hide a failure.
pub fn tooling_ready(languages: &[Language]) -> bool {
    let missing: Vec<String> = languages
        .iter()
        .filter_map(|language| {
            language
                .missing_tooling()
                .map(|reason| format!("{language:?}: {reason}"))
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("guests cannot be built in CI: {missing:?}");
    }
    // Straight to stderr: the harness hides what `eprintln!` prints in a
    // test that passes, and a skip must be seen.
    let _ = writeln!(std::io::stderr(), "skipping: {missing:?}");
    false
}

/// `rio build FOLDER`, once per folder and process: tests of one binary
/// run in parallel and would otherwise write the same output file at once.
pub fn build(folder: &str) -> Vec<u8> {
    static BUILT: Mutex<Option<HashMap<String, Vec<u8>>>> = Mutex::new(None);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(bytes) = built.get(folder) {
        return bytes.clone();
    }
    let output = rio(&["build", folder]);
    assert!(
        output.status.success(),
        "rio build {folder} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let path = PathBuf::from(String::from_utf8(output.stdout).unwrap().trim());
    let bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    built.insert(folder.to_string(), bytes.clone());
    bytes
}

/// Held by a test for its whole run, so the timed tests of one binary do not
/// share the two cores with each other (a deadline holds under contention,
/// but each test's printed figures should be its own). An async lock, as it
/// is held across the test's awaits; it has no poisoning, so a test that
/// failed does not stop the next.
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}
