//! The README's acceptance example, run with the real `rio` binary: a silo
//! process, `rio build`, `rio deploy`, `rio call`, and a restart.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const RIO: &str = env!("CARGO_BIN_EXE_rio");

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Runs `rio ARGS` from the workspace root. Guest builds go to their own
/// target directory so they never wait on the cargo running this test.
fn rio(args: &[&str]) -> Output {
    Command::new(RIO)
        .args(args)
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", workspace_root().join("target/wasm"))
        .output()
        .expect("rio runs")
}

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "rio failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .trim()
        .to_string()
}

struct SiloProcess {
    child: Child,
    address: String,
}

impl SiloProcess {
    fn start(data_dir: &Path) -> SiloProcess {
        let mut child = Command::new(RIO)
            .args(["silo", "--listen", "127.0.0.1:0", "--data"])
            .arg(data_dir)
            .env("RIO_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("rio silo starts");
        let mut first_line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first_line)
            .unwrap();
        let address = first_line
            .trim()
            .strip_prefix("rio silo listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {first_line:?}"))
            .to_string();
        SiloProcess { child, address }
    }

    /// SIGTERM, as an operator would stop it, and wait for a clean exit.
    fn stop(mut self) {
        let status = Command::new("kill")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "the silo exits cleanly on SIGTERM: {exit}");
    }
}

impl Drop for SiloProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn build_deploy_call_and_restart_with_the_cli() {
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start(data.path());
    let address = silo.address.clone();

    let component = stdout_of(&rio(&["build", "examples/counter"]));
    assert!(
        component.ends_with(".wasm") && Path::new(&component).is_file(),
        "{component}"
    );
    stdout_of(&rio(&[
        "deploy", "--silo", &address, "--type", "Counter", &component,
    ]));

    let reply = stdout_of(&rio(&[
        "call",
        "--silo",
        &address,
        "Counter/alice",
        "increment",
        r#"{"by": 2}"#,
    ]));
    assert_eq!(reply, r#"{"value":2}"#);
    assert_eq!(
        stdout_of(&rio(&["call", "--silo", &address, "Counter/alice", "get"])),
        r#"{"value":2}"#
    );

    // Errors: non-zero exit and a message on stderr.
    let unknown = rio(&["call", "--silo", &address, "Nope/x", "get"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown service type `Nope`"));
    let not_a_component = data.path().join("module.wasm");
    std::fs::write(&not_a_component, b"\0asm\x01\0\0\0").unwrap();
    let refused = rio(&[
        "deploy",
        "--silo",
        &address,
        "--type",
        "Counter",
        not_a_component.to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not a component"));

    silo.stop();
    let silo = SiloProcess::start(data.path());
    let reply = stdout_of(&rio(&[
        "call",
        "--silo",
        &silo.address,
        "Counter/alice",
        "get",
    ]));
    assert_eq!(
        reply, r#"{"value":2}"#,
        "state and deployment survive the restart"
    );
    silo.stop();
}
