//! Prometheus metrics (issue 21, item 3): a silo's `GET /metrics` with the
//! admin token, scraped by a real Prometheus server (Debian's package,
//! which `scripts/test` installs), and a counter queried back through
//! Prometheus's own HTTP API.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::SiloProcess;
use common::guests::{Language, build};
use common::http::Http;
use common::stores::{free_port, programs_installed};
use hyper::Method;

const ADMIN_TOKEN: &str = "metrics-admin-token-4e1f";
const CALL_TOKEN: &str = "metrics-call-token-8a2c";

/// A Prometheus server, killed when dropped.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A query string's value, percent-encoded.
fn encoded(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// The value of a PromQL `query` with one result, once Prometheus has one.
async fn query(prometheus: &str, promql: &str, expected: &str) {
    let started = Instant::now();
    let path = format!("/api/v1/query?query={}", encoded(promql));
    let mut last = serde_json::Value::Null;
    while started.elapsed() < Duration::from_secs(60) {
        // Prometheus takes a moment to listen.
        if tokio::net::TcpStream::connect(prometheus).await.is_err() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let mut http = Http::connect(prometheus).await;
        let answer = http.request(Method::GET, &path, &[], "").await;
        if answer.status == 200 && answer.json["data"]["result"][0]["value"][1] == expected {
            return;
        }
        last = answer.json;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("`{promql}` never became {expected}: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_silo_and_answers_its_counters() {
    if !programs_installed(&["prometheus"], "apt-get install prometheus") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start_with(
        data.path(),
        &[
            "--http",
            "127.0.0.1:0",
            "--admin-token",
            ADMIN_TOKEN,
            "--call-token",
            CALL_TOKEN,
        ],
    );
    let gateway = silo.http.clone().unwrap();
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let call = format!("Bearer {CALL_TOKEN}");
    let mut http = Http::connect(&gateway).await;
    let deployed = http
        .request(
            Method::PUT,
            "/v1/deployments/Faulty",
            &[("authorization", admin.as_str())],
            build(Language::Rust.faulty()),
        )
        .await;
    assert_eq!(deployed.status, 200, "{}", deployed.json);
    let with_call = [("authorization", call.as_str())];
    for value in 0..7 {
        let body = format!(r#"{{"value": {value}}}"#);
        let set = http
            .post(
                &format!("/v1/objects/Faulty/m{value}/set"),
                &with_call,
                &body,
            )
            .await;
        assert_eq!(set.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(
            http.post("/v1/objects/Faulty/m0/fail", &with_call, "")
                .await
                .status,
            422
        );
    }

    // The scrape itself: the admin token's, as `rio stats` is.
    let scrape = |token: Option<String>| {
        let gateway = gateway.clone();
        async move {
            let mut http = Http::connect(&gateway).await;
            let headers: Vec<(&str, &str)> = match &token {
                Some(token) => vec![("authorization", token.as_str())],
                None => vec![],
            };
            http.raw(Method::GET, "/metrics", &headers).await
        }
    };
    assert_eq!(scrape(None).await.0, 401);
    assert_eq!(scrape(Some(call.clone())).await.0, 403);
    let (status, content_type, text) = scrape(Some(admin.clone())).await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(
        text.contains(r#"rio_calls_total{service_type="Faulty",message="set",outcome="ok"} 7"#),
        "{text}"
    );
    // Seven objects, each with its activation, none with a message waiting.
    assert!(
        text.contains(r#"rio_type_activations{service_type="Faulty"} 7"#),
        "{text}"
    );
    assert!(
        text.contains(r#"rio_mailbox_depth{service_type="Faulty"} 0"#),
        "{text}"
    );
    // The seven `set`s committed, in one group commit or several.
    let grouped: f64 = text
        .lines()
        .find_map(|line| line.strip_prefix("rio_group_commit_size_sum "))
        .expect("the embedded store counts its group commits")
        .parse()
        .unwrap();
    assert!(grouped >= 7.0, "{text}");
    // The scrape's own connection, at least, is an open HTTP connection.
    let http_open: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("rio_http_connections_open "))
        .expect("HTTP connections are counted")
        .parse()
        .unwrap();
    assert!(http_open >= 1, "{text}");

    // A real Prometheus scraping it every second with the admin token.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: rio\n    authorization:\n      credentials: {ADMIN_TOKEN}\n    static_configs:\n      - targets: ['{gateway}']\n"
        ),
    )
    .unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let _prometheus = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts"),
    );
    query(&web, r#"up{job="rio"}"#, "1").await;
    query(
        &web,
        r#"rio_calls_total{service_type="Faulty",message="set",outcome="ok"}"#,
        "7",
    )
    .await;
    query(
        &web,
        r#"sum(rio_calls_total{service_type="Faulty",outcome="guest-error"})"#,
        "2",
    )
    .await;
    // A counter that moves while Prometheus watches.
    for value in 0..5 {
        let body = format!(r#"{{"value": {value}}}"#);
        http.post("/v1/objects/Faulty/m0/set", &with_call, &body)
            .await;
    }
    query(
        &web,
        r#"rio_calls_total{service_type="Faulty",message="set",outcome="ok"}"#,
        "12",
    )
    .await;
    query(
        &web,
        r#"rio_turn_duration_seconds_count{service_type="Faulty"}"#,
        "14",
    )
    .await;
    silo.stop();
}
