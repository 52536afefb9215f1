//! Architecture invariant: a client never compiles wasmtime. The protocol and
//! client crates must stay light enough to embed in any Rust service.

use std::process::Command;

fn normal_dependencies(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "--offline",
            "--edges",
            "normal",
            "--prefix",
            "none",
            "--package",
            package,
        ])
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| line.split(' ').next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn client_and_protocol_do_not_depend_on_wasmtime() {
    for package in ["rio-client", "rio-protocol"] {
        let dependencies = normal_dependencies(package);
        assert!(
            dependencies.iter().any(|name| name == "tokio"),
            "{package}: the tree was read: {dependencies:?}"
        );
        let heavy: Vec<_> = dependencies
            .iter()
            .filter(|name| {
                name.starts_with("wasmtime") || name.starts_with("cranelift") || *name == "rio-silo"
            })
            .collect();
        assert!(heavy.is_empty(), "{package} depends on {heavy:?}");
    }
}
