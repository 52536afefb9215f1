//! The gateway's OpenAPI document (issue 21, item 2, first part): `GET
//! /v1/openapi.json` and `rio describe` for the deployed types, checked by
//! a real OpenAPI validator (`openapi-spec-validator`, which `scripts/test`
//! installs in `target/test-tools`). Components describe no message
//! schemas yet, so each type's message is a path parameter and its body any
//! JSON.

use crate::common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::guests::{Language, build};
use common::http::Http;
use common::{SiloProcess, rio, stdout_of, workspace_root};
use hyper::Method;
use serde_json::Value;

/// The validator, from `target/test-tools` or the `PATH`; outside CI a test
/// skips without it, under CI it fails.
fn validator() -> Option<PathBuf> {
    let venv = workspace_root().join("target/test-tools/bin/openapi-spec-validator");
    for candidate in [venv, PathBuf::from("openapi-spec-validator")] {
        let runs = Command::new(&candidate)
            .arg("--version")
            .output()
            .is_ok_and(|output| output.status.success());
        if runs {
            return Some(candidate);
        }
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "openapi-spec-validator is not installed (scripts/test installs it in target/test-tools)"
    );
    let _ = writeln!(
        std::io::stderr(),
        "skipping: openapi-spec-validator is not installed (pip install -r host/cli/tests/requirements-tools.txt)"
    );
    None
}

/// What the validator says of `document`: `Ok` if it is a valid OpenAPI
/// document, else its complaint.
fn validate(validator: &Path, document: &Value) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, document.to_string()).unwrap();
    let output = Command::new(validator)
        .args(["--schema", "3.1"])
        .arg(&file)
        .output()
        .expect("the validator runs");
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_has_every_deployed_type_and_validates() {
    let Some(validator) = validator() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start_with(data.path(), &["--http", "127.0.0.1:0"]);
    let gateway = silo.http.clone().unwrap();
    let mut http = Http::connect(&gateway).await;
    for (service_type, folder) in [
        ("Counter", "examples/counter"),
        ("Account", Language::Rust.bank()),
    ] {
        let path = format!("/v1/deployments/{service_type}");
        let deployed = http.request(Method::PUT, &path, &[], build(folder)).await;
        assert_eq!(deployed.status, 200, "{}", deployed.json);
    }

    let answer = http.request(Method::GET, "/v1/openapi.json", &[], "").await;
    assert_eq!(answer.status, 200, "{}", answer.json);
    let document = answer.json;
    assert_eq!(document["openapi"], "3.1.0");
    for service_type in ["Counter", "Account"] {
        let call = format!("/v1/objects/{service_type}/{{id}}/{{message}}");
        let post = &document["paths"][&call]["post"];
        assert_eq!(post["operationId"], format!("{service_type}_call"));
        assert!(post["responses"]["200"].is_object(), "{post}");
        assert!(post["responses"]["429"]["$ref"].is_string(), "{post}");
        let send = format!("{call}/send");
        assert!(document["paths"][&send]["post"]["responses"]["202"].is_object());
    }
    validate(&validator, &document).unwrap_or_else(|complaint| {
        panic!("the silo's document does not validate: {complaint}\n{document:#}")
    });

    // The validator is not a rubber stamp: a parameter in a place OpenAPI
    // has no such place fails it.
    let mut broken = document.clone();
    let call = "/v1/objects/Counter/{id}/{message}";
    broken["paths"][call]["post"]["parameters"][0]["in"] = "body".into();
    assert!(validate(&validator, &broken).is_err());

    // One type's part, over HTTP and from `rio describe`.
    let one = http
        .request(Method::GET, "/v1/openapi.json?type=Account", &[], "")
        .await;
    assert_eq!(one.status, 200);
    let paths: Vec<&String> = one.json["paths"].as_object().unwrap().keys().collect();
    assert!(
        paths
            .iter()
            .all(|path| path.starts_with("/v1/objects/Account/")),
        "{paths:?}"
    );
    let described = stdout_of(&rio(&["describe", "--silo", &silo.address, "Counter"]));
    let described: Value = serde_json::from_str(&described).unwrap();
    assert!(described["paths"][call].is_object(), "{described:#}");
    assert!(described["paths"]["/v1/objects/Account/{id}/{message}"].is_null());
    validate(&validator, &described).unwrap();

    // A type that is not deployed: 404 over HTTP, exit code 3 from `rio`.
    let missing = http
        .request(Method::GET, "/v1/openapi.json?type=Nope", &[], "")
        .await;
    assert_eq!((missing.status, missing.kind()), (404, "unknown-type"));
    let output = rio(&["describe", "--silo", &silo.address, "Nope"]);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
}
