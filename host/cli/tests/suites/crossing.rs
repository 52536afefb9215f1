//! Crossing transfers (issue 9), as a sceptical user of the README's bank
//! pattern would try them: two accounts transfer to each other at the same
//! moment, so each `transfer` turn waits on a `deposit` that queues behind
//! the other's turn. Every call must end, with `ok` or the kind `deadlock`
//! (the call that closes the cycle fails at once, the other goes on), within
//! the turn deadline plus a margin, and no money may appear or vanish.
//!
//! Accounts in Rust (`examples/bank`), Python (`guests/bank-python`) and JS
//! (`guests/bank-js`), each language with itself and across languages, on
//! one silo and on three (accounts placed on different silos); rings of
//! three accounts paying the next at once, on one silo and with each
//! account on its own silo of three (a cycle no silo sees whole); then 16
//! clients transferring at random over 30 accounts of the three languages.
//! Real `rio silo` processes on loopback.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::SiloProcess;
use common::bank::{Account, Picks, account_type, data_dir, deploy_banks, keep_compiled};
use common::guests::{Language, one_at_a_time, tooling_ready};
use common::stores::PostgresDatabase;
use rio_client::{Calls, Client, ClientError};
use serde_json::{Value, json};

/// The silos' turn deadline. Crossing turns should never need it: a
/// deadlock is broken within 100 ms on one silo and 1 s across silos.
const TURN_DEADLINE: Duration = Duration::from_secs(2);

/// How long past the deadline a call may take on one silo before it counts
/// as hung: scheduling on a shared two-core machine, not waiting.
const ONE_SILO_MARGIN: Duration = Duration::from_secs(1);

/// Across silos a call may also wait for failure detection (a dead peer is
/// declared dead in about 2 to 3 s), though no silo dies in these tests.
const CLUSTER_MARGIN: Duration = Duration::from_secs(4);

const STARTING_BALANCE: i64 = 10_000;

fn silo_flags(extra: &[&str]) -> Vec<String> {
    let mut flags = vec![
        "--turn-deadline-ms".to_string(),
        TURN_DEADLINE.as_millis().to_string(),
    ];
    flags.extend(extra.iter().map(|flag| flag.to_string()));
    flags
}

fn start_silo(data: &Path, extra: &[&str]) -> SiloProcess {
    let flags = silo_flags(extra);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    SiloProcess::start_with(data, &flags)
}

/// How one call ended, as the test sorts it.
#[derive(Debug)]
enum Outcome {
    Ok,
    /// An error with this kind (e.g. `deadlock`, `insufficient-funds`).
    Failed {
        kind: String,
        text: String,
    },
    /// The client gave up: the call did not end within the allowed time.
    Hung,
}

impl Outcome {
    fn describe(&self) -> String {
        match self {
            Outcome::Ok => "ok".to_string(),
            Outcome::Failed { kind, text } => format!("failed with `{kind}` ({text})"),
            Outcome::Hung => "no end (the test stopped waiting)".to_string(),
        }
    }
}

/// What a run measured, printed so a failure reads as a story.
#[derive(Default)]
struct Tally {
    calls: usize,
    kinds: BTreeMap<String, usize>,
    longest: Duration,
    longest_deadlock: Duration,
    /// Calls that ended with a kind this run does not allow, or not at all.
    wrong: Vec<String>,
}

impl Tally {
    fn record(&mut self, what: &str, outcome: &Outcome, took: Duration, allowed: &[&str]) {
        self.calls += 1;
        self.longest = self.longest.max(took);
        let kind = match outcome {
            Outcome::Ok => "ok".to_string(),
            Outcome::Failed { kind, .. } => kind.clone(),
            Outcome::Hung => "hung".to_string(),
        };
        if kind == "deadlock" {
            self.longest_deadlock = self.longest_deadlock.max(took);
        }
        if kind != "ok" && !allowed.contains(&kind.as_str()) {
            self.wrong
                .push(format!("{what}: {} after {took:.2?}", outcome.describe()));
        }
        *self.kinds.entry(kind).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
        self.calls += other.calls;
        self.longest = self.longest.max(other.longest);
        self.longest_deadlock = self.longest_deadlock.max(other.longest_deadlock);
        self.wrong.extend(other.wrong);
        for (kind, count) in other.kinds {
            *self.kinds.entry(kind).or_default() += count;
        }
    }

    fn report(&self, run: &str) {
        eprintln!(
            "{run}: {} calls {:?}; longest call {:.3?}, longest deadlock answer {:.3?}",
            self.calls, self.kinds, self.longest, self.longest_deadlock
        );
    }

    fn assert_all_allowed(&self, run: &str) {
        assert!(
            self.wrong.is_empty(),
            "{run}: {} of {} calls did not end as allowed (first ones: {:#?})",
            self.wrong.len(),
            self.calls,
            &self.wrong[..self.wrong.len().min(8)]
        );
    }
}

async fn connect(address: &str) -> Client {
    // The client's own timeout stays out of the way: `limit` below decides
    // how long a call may take, and measures it.
    Client::connect(address)
        .await
        .expect("client connects")
        .with_timeout(Duration::from_secs(120))
}

/// One call, bounded by `limit`; its outcome and how long it took.
async fn timed_call(
    client: &Client,
    account: &Account,
    message_type: &str,
    message: Value,
    limit: Duration,
) -> (Outcome, Duration) {
    let started = Instant::now();
    let call = client.call::<_, Value>(&account.service_type, &account.id, message_type, &message);
    let outcome = match tokio::time::timeout(limit, call).await {
        Ok(Ok(_)) => Outcome::Ok,
        Ok(Err(ClientError::Reply(error))) => Outcome::Failed {
            kind: error.kind().to_string(),
            text: error.to_string(),
        },
        Ok(Err(other)) => Outcome::Failed {
            kind: "client-error".to_string(),
            text: other.to_string(),
        },
        Err(_) => Outcome::Hung,
    };
    (outcome, started.elapsed())
}

async fn transfer(
    client: &Client,
    from: &Account,
    to: &Account,
    amount: i64,
    limit: Duration,
) -> (Outcome, Duration) {
    let message = json!({"to": to.id, "to_type": to.service_type, "amount": amount});
    timed_call(client, from, "transfer", message, limit).await
}

/// The account's balance, which must come within `limit`.
async fn balance_of(client: &Client, account: &Account, limit: Duration) -> i64 {
    let started = Instant::now();
    let reply = tokio::time::timeout(
        limit,
        client.call::<_, Value>(&account.service_type, &account.id, "balance", &json!({})),
    )
    .await
    .unwrap_or_else(|_| panic!("{account} did not answer `balance` within {limit:?}"))
    .unwrap_or_else(|error| panic!("{account} balance failed: {error}"));
    let balance = reply["balance"]
        .as_i64()
        .unwrap_or_else(|| panic!("{account} balance answered {reply}"));
    assert!(
        started.elapsed() <= limit,
        "{account} answered `balance` only after {:.2?}",
        started.elapsed()
    );
    balance
}

/// Opens `account` with the starting balance through `client` (which, with
/// prefer-local placement, places it on that client's silo). The first call
/// of a type on a silo may compile its component, so it gets long.
async fn open(client: &Client, account: &Account) {
    let reply: Value = client
        .call(
            &account.service_type,
            &account.id,
            "deposit",
            &json!({"amount": STARTING_BALANCE}),
        )
        .await
        .unwrap_or_else(|error| panic!("opening {account}: {error}"));
    assert_eq!(
        reply,
        json!({"balance": STARTING_BALANCE}),
        "{account} starts empty"
    );
}

/// The pairs of languages whose accounts cross: each with itself, and
/// Rust→Python→JS→Rust.
const PAIRS: [(Language, Language); 6] = [
    (Language::Rust, Language::Rust),
    (Language::Python, Language::Python),
    (Language::JavaScript, Language::JavaScript),
    (Language::Rust, Language::Python),
    (Language::Python, Language::JavaScript),
    (Language::JavaScript, Language::Rust),
];

/// One pair of accounts, each with its own client (connected to the silo
/// the account lives on), transferring to each other at the same moment,
/// `rounds` times. Stops at the first hung call: the rest would hang too.
async fn cross(
    a: (Account, Client),
    b: (Account, Client),
    rounds: usize,
    limit: Duration,
) -> Tally {
    let mut tally = Tally::default();
    for round in 0..rounds {
        let amount = (round % 5) as i64 + 1;
        let a_to_b = transfer(&a.1, &a.0, &b.0, amount, limit);
        let b_to_a = transfer(&b.1, &b.0, &a.0, amount, limit);
        let ((first, first_took), (second, second_took)) = tokio::join!(a_to_b, b_to_a);
        let hung = matches!(first, Outcome::Hung) || matches!(second, Outcome::Hung);
        tally.record(
            &format!("round {round} {} → {}", a.0, b.0),
            &first,
            first_took,
            &["deadlock"],
        );
        tally.record(
            &format!("round {round} {} → {}", b.0, a.0),
            &second,
            second_took,
            &["deadlock"],
        );
        if hung {
            break;
        }
    }
    tally
}

/// Every pair of `PAIRS` crossing at once, pair `p`'s two accounts opened
/// through `addresses[p % n]` and `addresses[(p + 1) % n]`.
async fn crossing_pairs(addresses: &[String], rounds: usize, limit: Duration, run: &str) {
    let mut accounts = Vec::new();
    let mut pairs = Vec::new();
    for (p, (left, right)) in PAIRS.iter().enumerate() {
        let sides = [
            (
                Account::new(*left, format!("cross-{p}-a")),
                &addresses[p % addresses.len()],
            ),
            (
                Account::new(*right, format!("cross-{p}-b")),
                &addresses[(p + 1) % addresses.len()],
            ),
        ];
        let mut opened = Vec::new();
        for (account, address) in sides {
            let client = connect(address).await;
            open(&client, &account).await;
            accounts.push(account.clone());
            opened.push((account, client));
        }
        let b = opened.pop().unwrap();
        let a = opened.pop().unwrap();
        pairs.push(tokio::spawn(cross(a, b, rounds, limit)));
    }
    let started = Instant::now();
    let mut tally = Tally::default();
    for pair in pairs {
        tally.merge(pair.await.expect("a pair's task ends"));
    }
    eprintln!("{run}: the rounds took {:.1?}", started.elapsed());
    tally.report(run);
    // The books first: they must balance whatever the calls answered.
    let probe = connect(&addresses[0]).await;
    assert_books_balance(&probe, &accounts, limit, run).await;
    tally.assert_all_allowed(run);
    assert!(
        tally.kinds.get("deadlock").copied().unwrap_or(0) > 0,
        "{run}: no transfer ever met its crossing one, so nothing here tested a deadlock"
    );
}

/// A longer cycle: three accounts (Rust, Python, JS) each pay the next at
/// the same moment, A → B, B → C, C → A, `rounds` times. Each ring of
/// waits must be broken like a pair: every call `ok` or `deadlock`.
/// Account `i` is opened through `addresses[i % n]`: on three silos each
/// account lives on its own, and no silo sees the whole ring.
async fn ring_of_three(addresses: &[String], rounds: usize, limit: Duration, run: &str) {
    let mut ring = Vec::new();
    for (i, language) in Language::ALL.into_iter().enumerate() {
        let account = Account::new(language, format!("ring-{i}"));
        let client = connect(&addresses[i % addresses.len()]).await;
        open(&client, &account).await;
        ring.push((account, client));
    }
    let accounts: Vec<Account> = ring.iter().map(|(account, _)| account.clone()).collect();
    let started = Instant::now();
    let mut tally = Tally::default();
    for round in 0..rounds {
        let amount = (round % 5) as i64 + 1;
        let pay_next = |i: usize| {
            let (from, client) = &ring[i];
            transfer(client, from, &ring[(i + 1) % 3].0, amount, limit)
        };
        let (first, second, third) = tokio::join!(pay_next(0), pay_next(1), pay_next(2));
        let mut hung = false;
        for (i, (outcome, took)) in [first, second, third].into_iter().enumerate() {
            hung |= matches!(outcome, Outcome::Hung);
            let what = format!("round {round} {} → {}", ring[i].0, ring[(i + 1) % 3].0);
            tally.record(&what, &outcome, took, &["deadlock"]);
        }
        if hung {
            break;
        }
    }
    eprintln!("{run}: the rounds took {:.1?}", started.elapsed());
    tally.report(run);
    assert_books_balance(&ring[0].1, &accounts, limit, run).await;
    tally.assert_all_allowed(run);
    assert!(
        tally.kinds.get("deadlock").copied().unwrap_or(0) > 0,
        "{run}: the three transfers of a round never all waited at once, so nothing here tested a ring"
    );
}

/// The total of all balances is what was deposited, and none is negative.
async fn assert_books_balance(client: &Client, accounts: &[Account], limit: Duration, run: &str) {
    let mut total = 0;
    for account in accounts {
        let balance = balance_of(client, account, limit).await;
        assert!(
            balance >= 0,
            "{run}: {account} has a negative balance {balance}"
        );
        total += balance;
    }
    let expected = STARTING_BALANCE * accounts.len() as i64;
    eprintln!(
        "{run}: {} accounts hold {total} in all ({expected} deposited)",
        accounts.len()
    );
    assert_eq!(
        total, expected,
        "{run}: the accounts hold {total}, but {expected} was deposited and transfers only move money"
    );
}

/// 16 clients, each transferring between random accounts of 30 (ten per
/// language), with amounts that sometimes exceed a balance.
async fn random_transfers(address: &str, limit: Duration) {
    const CLIENTS: usize = 16;
    const TRANSFERS_PER_CLIENT: usize = 60;
    let run = "16 clients, random transfers over 30 accounts, one silo";
    let setup = connect(address).await;
    let accounts: Vec<Account> = (0..30)
        .map(|i| Account::new(Language::ALL[i % 3], format!("random-{i}")))
        .collect();
    for account in &accounts {
        open(&setup, account).await;
    }
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let client = connect(address).await;
        let accounts = accounts.clone();
        clients.push(tokio::spawn(async move {
            let mut picks = Picks(c as u64 + 1);
            let mut tally = Tally::default();
            for n in 0..TRANSFERS_PER_CLIENT {
                let from = &accounts[picks.below(accounts.len())];
                let to = loop {
                    let to = &accounts[picks.below(accounts.len())];
                    if to != from {
                        break to;
                    }
                };
                // Up to half the starting balance: most go through, and
                // some are refused once an account has paid out a lot.
                let amount = picks.below(STARTING_BALANCE as usize / 2) as i64 + 1;
                let (outcome, took) = transfer(&client, from, to, amount, limit).await;
                let hung = matches!(outcome, Outcome::Hung);
                tally.record(
                    &format!("client {c} transfer {n} {from} → {to} ({amount})"),
                    &outcome,
                    took,
                    &["deadlock", "insufficient-funds"],
                );
                if hung {
                    break;
                }
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for client in clients {
        tally.merge(client.await.expect("a client's task ends"));
    }
    tally.report(run);
    // Every account still answers, and the books balance.
    assert_books_balance(&setup, &accounts, limit, run).await;
    tally.assert_all_allowed(run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_transfers_on_one_silo() {
    if !tooling_ready(&Language::ALL) {
        return;
    }
    let _alone = one_at_a_time().await;
    let data = data_dir();
    let started = Instant::now();
    let silo = start_silo(data.path(), &[]);
    deploy_banks(&silo.address).await;
    keep_compiled(data.path());
    eprintln!("silo up, banks deployed, in {:.1?}", started.elapsed());
    let limit = TURN_DEADLINE + ONE_SILO_MARGIN;
    // Each part runs even when an earlier one failed (a panic in a task is
    // caught by its handle), so one run reports every broken promise.
    let mut failed = Vec::new();
    let address = silo.address.clone();
    let pairs = tokio::spawn(async move {
        let run = "crossing pairs, 200 rounds, one silo";
        crossing_pairs(std::slice::from_ref(&address), 200, limit, run).await
    });
    if pairs.await.is_err() {
        failed.push("crossing pairs");
    }
    let address = silo.address.clone();
    let rings = tokio::spawn(async move {
        let run = "rings of three accounts, 100 rounds, one silo";
        ring_of_three(std::slice::from_ref(&address), 100, limit, run).await
    });
    if rings.await.is_err() {
        failed.push("rings of three");
    }
    let address = silo.address.clone();
    let random = tokio::spawn(async move { random_transfers(&address, limit).await });
    if random.await.is_err() {
        failed.push("random transfers");
    }
    assert!(
        failed.is_empty(),
        "failed on one silo: {failed:?} (see above)"
    );
    silo.stop();
}

/// Three silos sharing the cluster store at `url`, each pair's accounts
/// placed on two different silos (prefer-local placement, each account
/// opened through its own silo).
async fn crossing_on_three_silos(url: &str, store: &str) {
    let cluster_flags = ["--cluster", url, "--placement", "prefer-local"];
    let started = Instant::now();
    let first_data = data_dir();
    let first = start_silo(first_data.path(), &cluster_flags);
    deploy_banks(&first.address).await;
    keep_compiled(first_data.path());
    let mut data = vec![first_data];
    let mut silos = vec![first];
    for _ in 1..3 {
        let dir = data_dir();
        silos.push(start_silo(dir.path(), &cluster_flags));
        data.push(dir);
    }
    let addresses: Vec<String> = silos.iter().map(|silo| silo.address.clone()).collect();
    eprintln!(
        "three silos up on {store}, banks deployed, in {:.1?}",
        started.elapsed()
    );
    let forwarded_before = forwarded_total(&addresses).await;
    crossing_pairs(
        &addresses,
        200,
        TURN_DEADLINE + CLUSTER_MARGIN,
        &format!("crossing pairs, 200 rounds, accounts on different silos of three, {store}"),
    )
    .await;
    ring_of_three(
        &addresses,
        50,
        TURN_DEADLINE + CLUSTER_MARGIN,
        &format!("rings of three accounts, 50 rounds, each account on its own silo, {store}"),
    )
    .await;
    let forwarded = forwarded_total(&addresses).await - forwarded_before;
    eprintln!("{forwarded} messages were forwarded between silos");
    assert!(
        forwarded > 0,
        "no deposit crossed silos: the accounts were not placed apart"
    );
    for silo in silos {
        silo.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_transfers_on_three_silos() {
    if !tooling_ready(&Language::ALL) {
        return;
    }
    let _alone = one_at_a_time().await;
    let store = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", store.path().join("cluster.db").display());
    crossing_on_three_silos(&url, "a shared SQLite file").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_transfers_on_three_silos_on_postgres() {
    if !tooling_ready(&Language::ALL) {
        return;
    }
    let Some(database) = PostgresDatabase::create("crossing") else {
        return;
    };
    let _alone = one_at_a_time().await;
    crossing_on_three_silos(&database.url, "PostgreSQL").await;
}

async fn forwarded_total(addresses: &[String]) -> u64 {
    let mut total = 0;
    for address in addresses {
        total += connect(address)
            .await
            .stats()
            .await
            .unwrap()
            .forwarded_total;
    }
    total
}

/// The three banks answer the same messages with the same replies and
/// error kinds, and pay each other through `to_type`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banks_answer_alike_in_every_language() {
    if !tooling_ready(&Language::ALL) {
        return;
    }
    let _alone = one_at_a_time().await;
    let data = data_dir();
    let silo = start_silo(data.path(), &[]);
    deploy_banks(&silo.address).await;
    keep_compiled(data.path());
    let client = connect(&silo.address).await;
    let ask = |service_type: String, id: String, message_type: &'static str, message: Value| {
        let client = client.clone();
        async move {
            match client
                .call::<_, Value>(&service_type, &id, message_type, &message)
                .await
            {
                Ok(reply) => reply,
                Err(ClientError::Reply(error)) => json!({"error": error.kind()}),
                Err(other) => panic!("{service_type}/{id} {message_type}: {other}"),
            }
        }
    };
    for language in Language::ALL {
        let own = account_type(language);
        let cases = [
            ("balance", json!({}), json!({"balance": 0})),
            ("deposit", json!({"amount": 50}), json!({"balance": 50})),
            (
                "withdraw",
                json!({"amount": 80}),
                json!({"error": "insufficient-funds"}),
            ),
            ("withdraw", json!({"amount": 10}), json!({"balance": 40})),
            (
                "deposit",
                json!({"amount": 0}),
                json!({"error": "invalid-amount"}),
            ),
            (
                "deposit",
                json!({"amount": -5}),
                json!({"error": "invalid-amount"}),
            ),
            (
                "deposit",
                json!({"amount": "five"}),
                json!({"error": "bad-request"}),
            ),
            (
                "transfer",
                json!({"to": "alike", "amount": 1}),
                json!({"error": "invalid-transfer"}),
            ),
            (
                "transfer",
                json!({"to": "other", "amount": 15}),
                json!({"balance": 25}),
            ),
            (
                "transfer",
                json!({"to": "x", "to_type": "NoSuchType", "amount": 5}),
                json!({"error": "unknown-type"}),
            ),
            ("balance", json!({}), json!({"balance": 25})),
        ];
        for (message_type, message, expected) in cases {
            let reply = ask(own.clone(), "alike".into(), message_type, message.clone()).await;
            assert_eq!(reply, expected, "{own}/alike {message_type} {message}");
        }
        let reply = ask(own.clone(), "other".into(), "balance", json!({})).await;
        assert_eq!(
            reply,
            json!({"balance": 15}),
            "{own}/other got the default-type transfer"
        );
        for payee in Language::ALL {
            let payee_type = account_type(payee);
            let reply = ask(
                own.clone(),
                "alike".into(),
                "transfer",
                json!({"to": format!("from-{own}"), "to_type": payee_type, "amount": 5}),
            )
            .await;
            assert!(
                reply.get("balance").is_some(),
                "{own} → {payee_type}: {reply}"
            );
        }
        let reply = ask(own.clone(), "alike".into(), "balance", json!({})).await;
        assert_eq!(
            reply,
            json!({"balance": 10}),
            "{own}/alike after paying three accounts"
        );
    }
    for payee in Language::ALL {
        for payer in Language::ALL {
            let payee_type = account_type(payee);
            let id = format!("from-{}", account_type(payer));
            let reply = ask(payee_type.clone(), id.clone(), "balance", json!({})).await;
            assert_eq!(reply, json!({"balance": 5}), "{payee_type}/{id}");
        }
    }
    silo.stop();
}
