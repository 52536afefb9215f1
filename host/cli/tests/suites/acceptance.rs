//! The README's acceptance example, run with the real `rio` binary: a silo
//! process, `rio build`, `rio deploy`, `rio call`, and a restart; and a
//! short `rio bench` whose checks must all pass.

use crate::common;

use std::path::Path;

use common::{SiloProcess, rio, stdout_of};

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

/// `rio bench --keyed-writes --transfers`, briefly and tiny: every check the
/// benchmark makes (acknowledged writes committed, money conserved by both
/// transfer variants once the outbox has delivered) holds.
#[test]
fn a_short_bench_with_transfers_verifies_its_figures() {
    let output = rio(&[
        "bench",
        "--json",
        "--keyed-writes",
        "--transfers",
        "--seconds",
        "0.5",
        "--connections",
        "2",
        "--in-flight",
        "8",
        "--objects",
        "20",
        "--accounts",
        "8",
        "--latency-samples",
        "20",
        "--activations",
        "20",
        "--idle-objects",
        "20",
    ]);
    let figures: serde_json::Value = serde_json::from_str(&stdout_of(&output)).unwrap();
    assert_eq!(figures["writes_verified"], true, "{figures:#}");
    assert_eq!(figures["keyed_writes"]["verified"], true, "{figures:#}");
    assert_eq!(figures["transfers"]["accounts"], 8);
    for variant in ["call", "send"] {
        let run = &figures["transfers"][variant];
        assert_eq!(run["verified"], true, "{variant}: {figures:#}");
        assert_eq!(run["refused"], 0, "{variant}: {figures:#}");
        assert!(
            run["throughput"]["completed"].as_u64().unwrap() > 0,
            "{variant}: {figures:#}"
        );
    }
}
