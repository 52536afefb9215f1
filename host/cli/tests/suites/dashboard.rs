//! The live dashboard (issue 21, item 5): `GET /dashboard` opened in a real
//! headless browser (Debian's chromium, driven through chromedriver) against
//! a three-silo cluster under load, which `scripts/test` installs; the test
//! reads what the page shows, kills a silo and sees the page say so.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::SiloProcess;
use common::guests::{Language, build, one_at_a_time};
use common::http::Http;
use common::stores::{SqliteFile, free_port, programs_installed};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper::Method;
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "dashboard-admin-token-51c7";
const CALL_TOKEN: &str = "dashboard-call-token-0b9e";
const CLUSTER_SECRET: &str = "dashboard-cluster-secret-77d2";

/// Accounts the load moves money between: few, so that they are busy.
const ACCOUNTS: usize = 12;

/// A chromedriver process, killed when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A headless chromium session through a chromedriver of its own.
async fn browser() -> (Driver, Client) {
    let port = free_port();
    let driver = Driver(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let capabilities = json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1360,1000"],
        }
    });
    let Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    let started = Instant::now();
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let session = ClientBuilder::new(connector)
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        match session {
            Ok(client) => return (driver, client),
            // chromedriver takes a moment to listen.
            Err(error) if started.elapsed() < Duration::from_secs(30) => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("no WebDriver session: {error}"),
        }
    }
}

/// What the page shows, read from its DOM in the browser.
async fn shown(page: &Client) -> Value {
    let script = r#"
        const rows = (selector) => [...document.querySelectorAll(selector)];
        return {
            refreshes: Number(document.body.dataset.refreshes),
            login: getComputedStyle(document.getElementById("login")).display,
            problem: document.getElementById("problem").textContent,
            silosCard: document.getElementById("card-silos").textContent,
            silos: rows("tr[data-silo]").map((row) => ({
                address: row.dataset.silo, status: row.dataset.status,
                answering: row.dataset.answering })),
            types: Object.fromEntries(rows("tr[data-type]").map((row) => [row.dataset.type, {
                activations: Number(row.dataset.activations),
                callsPerSecond: Number(row.dataset.callsPerSecond),
                callsInWindow: Number(row.dataset.callsInWindow),
                p99: row.dataset.p99Seconds === "" ? null : Number(row.dataset.p99Seconds),
                cells: [...row.cells].map((cell) => cell.textContent.trim()) }])),
            foreign: performance.getEntriesByType("resource")
                .map((entry) => entry.name)
                .filter((name) => !name.startsWith(location.origin)),
        };
    "#;
    page.execute(script, vec![]).await.expect("the script runs")
}

/// What the page shows once `ready` holds of it (within 60 s).
async fn shown_when(page: &Client, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let now = shown(page).await;
        if ready(&now) {
            return now;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the page never showed {what}: {now:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Clients moving money between the accounts through every gateway until
/// `stop`; also some transfers of more than there is (refused: errors).
fn load(
    gateways: &[String],
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..6)
        .map(|client| {
            let gateway = gateways[client % gateways.len()].clone();
            let stop = stop.clone();
            let answered = answered.clone();
            tokio::spawn(async move {
                let call = format!("Bearer {CALL_TOKEN}");
                let headers = [("authorization", call.as_str())];
                let mut http = Http::connect(&gateway).await;
                let mut n = client;
                while !stop.load(Ordering::Relaxed) {
                    n += 7;
                    let from = n % ACCOUNTS;
                    let to = (n / ACCOUNTS + from + 1) % ACCOUNTS;
                    let amount = if n % 10 == 0 { 1_000_000 } else { 1 };
                    let path = format!("/v1/objects/Account/a{from}/transfer");
                    let body = format!(r#"{{"to": "a{to}", "amount": {amount}}}"#);
                    let answer = http.post(&path, &headers, &body).await;
                    // Under a dying silo a call may fail; the page is what
                    // is under test here, not these calls.
                    if answer.status == 200 || answer.status == 422 {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    if n % 5 == 0 {
                        let path = format!("/v1/objects/Faulty/f{}/fail", n % 3);
                        http.post(&path, &headers, "").await;
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_three_silo_cluster_under_load_and_a_silo_that_froze_then_died() {
    let programs = ["chromium", "chromedriver"];
    if !programs_installed(&programs, "apt-get install chromium chromium-driver") {
        return;
    }
    let _alone = one_at_a_time().await;
    let cluster = SqliteFile::create();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut silos: Vec<SiloProcess> = dirs
        .iter()
        .map(|dir| {
            SiloProcess::start_with(
                dir.path(),
                &[
                    "--cluster",
                    &cluster.url,
                    "--http",
                    "127.0.0.1:0",
                    "--admin-token",
                    ADMIN_TOKEN,
                    "--call-token",
                    CALL_TOKEN,
                    "--cluster-secret",
                    CLUSTER_SECRET,
                ],
            )
        })
        .collect();
    let gateways: Vec<String> = silos.iter().map(|s| s.http.clone().unwrap()).collect();
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let call = format!("Bearer {CALL_TOKEN}");
    let mut http = Http::connect(&gateways[0]).await;
    for (service_type, folder) in [
        ("Account", Language::Rust.bank()),
        ("Faulty", Language::Rust.faulty()),
    ] {
        let deployed = http
            .request(
                Method::PUT,
                &format!("/v1/deployments/{service_type}"),
                &[("authorization", admin.as_str())],
                build(folder),
            )
            .await;
        assert_eq!(deployed.status, 200, "{}", deployed.json);
    }
    for account in 0..ACCOUNTS {
        let path = format!("/v1/objects/Account/a{account}/deposit");
        let answer = http
            .post(
                &path,
                &[("authorization", call.as_str())],
                r#"{"amount": 1000}"#,
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.json);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    // Through the two silos that live on; the third serves its share of
    // the accounts, forwarded to it, until it is killed.
    let clients = load(&gateways[..2], stop.clone(), answered.clone());

    let (_driver, page) = browser().await;
    let dashboard = format!("http://{}/dashboard", gateways[0]);

    // Without the token the page holds nothing and asks for it.
    page.goto(&dashboard).await.unwrap();
    let asked = shown_when(&page, "its token form", |now| now["login"] == "block").await;
    assert_eq!(asked["silos"], json!([]), "no data without the token");
    page.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(ADMIN_TOKEN)
        .await
        .unwrap();
    page.find(Locator::Css("#login-form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // Three silos answering, both types with their activations, calls and
    // turn times; it refreshes by itself.
    let busy = shown_when(&page, "three silos under load", |now| {
        let silos = now["silos"].as_array().unwrap();
        silos.len() == 3
            && silos
                .iter()
                .all(|s| s["status"] == "active" && s["answering"] == "yes")
            && now["types"]["Account"]["callsPerSecond"].as_f64() > Some(0.0)
            && now["types"]["Faulty"]["callsInWindow"].as_f64() > Some(0.0)
            && now["refreshes"].as_u64() >= Some(3)
            // Enough transfers in the minute for the refused tenth to show.
            && now["types"]["Account"]["cells"][5] != "0 %"
    })
    .await;
    assert_eq!(busy["silosCard"], "3 / 3");
    assert_eq!(busy["login"], "none");
    assert_eq!(busy["foreign"], json!([]), "everything comes from the silo");
    let account = &busy["types"]["Account"];
    assert_eq!(
        account["activations"].as_u64(),
        Some(ACCOUNTS as u64),
        "every account is active on one silo of the three: {account}"
    );
    let p99 = account["p99"].as_f64().expect("a p99 turn time");
    assert!(p99 > 0.0 && p99 < 5.0, "{account}");
    let faulty = &busy["types"]["Faulty"]["cells"];
    assert_eq!(faulty[5], "100 %", "every `fail` fails: {faulty}");
    let errors = account["cells"][5].as_str().unwrap();
    assert_ne!(errors, "0 %", "one transfer in ten is refused: {account}");

    let screenshot = page.screenshot().await.unwrap();
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&path, screenshot).unwrap();
    eprintln!("dashboard screenshot: {}", path.display());

    // A silo frozen mid-load (SIGSTOP): the page goes on refreshing (its
    // metrics are waited for a second at most) and shows it not answering;
    // then it is killed (`kill -9`), and once the cluster declares it
    // dead, the page says so.
    let victim = silos.remove(2);
    let victim_address = victim.address.clone();
    victim.signal("STOP");
    let frozen = shown_when(&page, "the frozen silo not answering", |now| {
        now["silos"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["address"] == victim_address.as_str() && s["answering"] == "no")
    })
    .await;
    let refreshes = frozen["refreshes"].as_u64().unwrap();
    shown_when(&page, "refreshes while a silo is frozen", |now| {
        now["refreshes"].as_u64() >= Some(refreshes + 2)
    })
    .await;
    victim.kill();
    let after = shown_when(&page, "the killed silo dead", |now| {
        let silos = now["silos"].as_array().unwrap();
        let dead = silos.iter().filter(|s| s["status"] == "dead").count();
        let answering = silos.iter().filter(|s| s["answering"] == "yes").count();
        dead == 1 && answering == 2 && now["silosCard"] == "2 / 3"
    })
    .await;
    let dead = after["silos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["status"] == "dead")
        .unwrap();
    assert_eq!(dead["address"], victim_address.as_str(), "{after:#}");
    // What the page read: the survivors' membership metrics say the same.
    let cluster = http
        .request(
            Method::GET,
            "/v1/cluster/metrics",
            &[("authorization", admin.as_str())],
            "",
        )
        .await;
    assert_eq!(cluster.status, 200, "{}", cluster.json);
    let texts: Vec<&str> = cluster.json["silos"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|silo| silo["metrics"].as_str())
        .collect();
    assert_eq!(texts.len(), 2, "{}", cluster.json);
    let declared: u64 = texts
        .iter()
        .filter_map(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("rio_silos_declared_dead_total "))
        })
        .map(|count| count.parse::<u64>().unwrap())
        .sum();
    assert!(
        declared >= 1,
        "a survivor declared the silo dead: {texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|text| text.contains("rio_suspicions_total")),
        "{texts:?}"
    );
    let refreshed = after["refreshes"].as_u64().unwrap();
    assert!(refreshed > busy["refreshes"].as_u64().unwrap());

    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    assert!(answered.load(Ordering::Relaxed) > 0);
    page.close().await.unwrap();
}
