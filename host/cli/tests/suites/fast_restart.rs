//! A fast restart (issue 19, items 6 and 9): three `rio silo` processes on
//! PostgreSQL, keyed two-call payments (`pay`: the payee's deposit, then the
//! fee's) between accounts in Rust, Python and JavaScript, reads reaching
//! the payers all along, and one silo killed with SIGKILL in the middle of
//! the load and started again at once on the same address, as a process
//! supervisor would.
//!
//! No client retries during the load: each payment is asked once, so an
//! interrupted one must be finished by the silos themselves. Then the
//! books: the total is what was deposited (a payment half done creates or
//! loses money), no silo gave up an interrupted turn, and once every
//! payment's outcome is known (an unknown one is asked again with its key,
//! which answers the stored reply of a finished one and runs nothing) each
//! account holds exactly its start plus what it was paid minus what it paid.
//! The same load runs once more on a cluster with tokens and TLS, where the
//! cluster secret and the call token are also rotated (SIGHUP) during the
//! load. `RIO_FAST_RESTART_RUNS=N` repeats the plain run N times.

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::bank::{Account, Picks, data_dir, deploy_banks_with, keep_compiled};
use common::guests::{Language, one_at_a_time, tooling_ready};
use common::stores::PostgresDatabase;
use common::tls::{file_with, generated_certificates};
use common::{SiloLog, SiloProcess, outcome_unknown};
use rio_client::{Calls, Client, ClientError, ConnectOptions, TlsConfig};
use serde_json::{Value, json};

const PAYERS_PER_LANGUAGE: usize = 6;
const CLIENTS: usize = 12;
const PAYMENTS: usize = 900;
const READERS: usize = 4;
const STARTING_BALANCE: i64 = 100_000;
const TURN_DEADLINE_MS: &str = "2000";

/// One payment's wait for its reply.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(20);

/// How long the balances may take to answer again after the restart.
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);

/// One payment, and how its one attempt ended.
struct Payment {
    from: Account,
    to: Account,
    fee_to: Account,
    amount: i64,
    fee: i64,
    key: String,
    outcome: Outcome,
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Done,
    Refused(String),
    Unknown(String),
}

fn pay_message(payment: &Payment) -> Value {
    json!({
        "to": payment.to.id, "to_type": payment.to.service_type,
        "amount": payment.amount, "fee": payment.fee,
        "fee_to": payment.fee_to.id, "fee_to_type": payment.fee_to.service_type,
    })
}

async fn ask(client: &Client, payment: &Payment) -> Outcome {
    let message = pay_message(payment);
    let call = client.call_with_key::<_, Value>(
        &payment.from.service_type,
        &payment.from.id,
        "pay",
        &message,
        &payment.key,
    );
    match tokio::time::timeout(ATTEMPT_LIMIT + Duration::from_secs(2), call).await {
        Ok(Ok(_)) => Outcome::Done,
        Ok(Err(ClientError::Reply(error)))
            if matches!(error.kind(), "insufficient-funds" | "deadlock") =>
        {
            Outcome::Refused(error.kind().to_string())
        }
        Ok(Err(error @ ClientError::Connect { .. })) => {
            Outcome::Refused(format!("not sent: {error}"))
        }
        Ok(Err(error)) if outcome_unknown(&error) => Outcome::Unknown(error.to_string()),
        // Connecting again failed before the request went out.
        Ok(Err(
            ClientError::Handshake(why)
            | ClientError::Tls(why)
            | ClientError::Reply(rio_protocol::ReplyError::Unauthorized(why)),
        )) => Outcome::Refused(format!("not sent: {why}")),
        Ok(Err(error)) => panic!("payment {} answered {error}", payment.key),
        Err(_) => Outcome::Unknown("no reply in time".into()),
    }
}

/// A balance, read again while the account is unavailable (moving, or
/// finishing an interrupted payment first).
async fn balance_of(client: &Client, account: &Account) -> i64 {
    let started = Instant::now();
    loop {
        let reply = client
            .call::<_, Value>(&account.service_type, &account.id, "balance", &json!({}))
            .await;
        match reply {
            Ok(reply) => return reply["balance"].as_i64().unwrap(),
            Err(error) if outcome_unknown(&error) && started.elapsed() < RECOVERY_LIMIT => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("{account} balance failed: {error}"),
        }
    }
}

async fn balances(client: &Client, accounts: &[Account]) -> Vec<i64> {
    let mut all = Vec::new();
    for account in accounts {
        all.push(balance_of(client, account).await);
    }
    all
}

/// A connection (it connects again by itself when closed).
async fn connect(address: &str, options: &ConnectOptions) -> Client {
    let started = Instant::now();
    loop {
        match Client::connect_with(address, options).await {
            Ok(client) => return client.with_timeout(ATTEMPT_LIMIT),
            Err(error) if started.elapsed() < RECOVERY_LIMIT => {
                eprintln!("connecting to {address}: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("cannot connect to {address}: {error}"),
        }
    }
}

/// Tokens and TLS for the silos and their clients, and the files an
/// operator edits to rotate the tokens.
struct Secure {
    _dir: tempfile::TempDir,
    flags: Vec<String>,
    admin: ConnectOptions,
    call: ConnectOptions,
    call_file: std::path::PathBuf,
    secret_file: std::path::PathBuf,
}

const CALL_TOKEN: &str = "call-token-fast-restart-1";
const NEW_CALL_TOKEN: &str = "call-token-fast-restart-2";
const ADMIN_TOKEN: &str = "admin-token-fast-restart";
const SECRET: &str = "cluster-secret-fast-restart-1";
const NEW_SECRET: &str = "cluster-secret-fast-restart-2";

impl Secure {
    fn new() -> Secure {
        let dir = tempfile::tempdir().unwrap();
        let (ca, certificate, key) = generated_certificates(dir.path(), "cluster");
        let call_file = file_with(dir.path(), "call-token", CALL_TOKEN);
        let admin_file = file_with(dir.path(), "admin-token", ADMIN_TOKEN);
        let secret_file = file_with(dir.path(), "cluster-secret", SECRET);
        let path = |path: &std::path::Path| path.to_str().unwrap().to_string();
        let flags = vec![
            "--tls-cert".into(),
            path(&certificate),
            "--tls-key".into(),
            path(&key),
            "--tls-ca".into(),
            path(&ca),
            "--call-token-file".into(),
            path(&call_file),
            "--admin-token-file".into(),
            path(&admin_file),
            "--cluster-secret-file".into(),
            path(&secret_file),
        ];
        let tls = TlsConfig::from_ca_file(&ca).unwrap();
        let options = |token: &str| ConnectOptions {
            token: Some(token.to_string()),
            tls: Some(tls.clone()),
            ..ConnectOptions::default()
        };
        Secure {
            admin: options(ADMIN_TOKEN),
            call: options(CALL_TOKEN),
            flags,
            call_file,
            secret_file,
            _dir: dir,
        }
    }
}

/// Rotates the call token and the cluster secret on every silo, as an
/// operator would: old and new both accepted (the new presented to peers),
/// then the new secret alone.
async fn rotate(secure: &Secure, silos: &[Option<(SiloProcess, SiloLog)>]) {
    let hang_up = || {
        for (silo, _) in silos.iter().flatten() {
            silo.signal("HUP");
        }
    };
    std::fs::write(
        &secure.call_file,
        format!("{NEW_CALL_TOKEN}\n{CALL_TOKEN}\n"),
    )
    .unwrap();
    std::fs::write(&secure.secret_file, format!("{NEW_SECRET}\n{SECRET}\n")).unwrap();
    hang_up();
    // Every silo has read both before any accepts the new secret alone.
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::write(&secure.secret_file, NEW_SECRET).unwrap();
    hang_up();
}

async fn one_run(url: &str, run: usize, secure: Option<&Secure>) {
    let mut flags: Vec<&str> = vec!["--cluster", url, "--turn-deadline-ms", TURN_DEADLINE_MS];
    if let Some(secure) = secure {
        flags.extend(secure.flags.iter().map(String::as_str));
    }
    let flags = &flags[..];
    let (admin_options, call_options) = match secure {
        Some(secure) => (secure.admin.clone(), secure.call.clone()),
        None => (ConnectOptions::default(), ConnectOptions::default()),
    };
    let started = Instant::now();
    let mut data = Vec::new();
    let mut silos: Vec<Option<(SiloProcess, SiloLog)>> = Vec::new();
    for index in 0..3 {
        let dir = data_dir();
        silos.push(Some(SiloProcess::start_logged(dir.path(), flags)));
        if index == 0 {
            deploy_banks_with(&silos[0].as_ref().unwrap().0.address, &admin_options).await;
            keep_compiled(dir.path());
        }
        data.push(dir);
    }
    let addresses: Vec<String> = silos
        .iter()
        .map(|silo| silo.as_ref().unwrap().0.address.clone())
        .collect();
    let mut logs: Vec<SiloLog> = silos
        .iter()
        .map(|silo| silo.as_ref().unwrap().1.clone())
        .collect();

    let mut payers = Vec::new();
    for language in Language::ALL {
        for index in 0..PAYERS_PER_LANGUAGE {
            payers.push(Account::new(language, format!("payer-{run}-{index}")));
        }
    }
    let fee_accounts: Vec<Account> = Language::ALL
        .iter()
        .map(|language| Account::new(*language, format!("fees-{run}")))
        .collect();
    let all: Vec<Account> = payers.iter().chain(&fee_accounts).cloned().collect();
    let setup = connect(&addresses[1], &call_options).await;
    for account in &payers {
        let _: Value = setup
            .call_with_key(
                &account.service_type,
                &account.id,
                "deposit",
                &json!({"amount": STARTING_BALANCE}),
                "open",
            )
            .await
            .unwrap();
    }
    eprintln!(
        "run {run}: three silos, {} accounts, in {:.1?}",
        all.len(),
        started.elapsed()
    );

    // Readers keep reaching the payers through every silo all along.
    let stop_reading = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..READERS {
        let (address, payers, stop) = (
            addresses[r % 3].clone(),
            payers.clone(),
            stop_reading.clone(),
        );
        let options = call_options.clone();
        readers.push(tokio::spawn(async move {
            let mut client = connect(&address, &options).await;
            let mut picks = Picks(1000 + r as u64);
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let account = &payers[picks.below(payers.len())];
                let read = client
                    .call::<_, Value>(&account.service_type, &account.id, "balance", &json!({}))
                    .await;
                reads += 1;
                if matches!(read, Err(ClientError::Connect { .. })) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    client = connect(&address, &options).await;
                }
            }
            reads
        }));
    }

    let finished = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let address = addresses[c % 3].clone();
        let (payers, fee_accounts, finished) =
            (payers.clone(), fee_accounts.clone(), finished.clone());
        let options = call_options.clone();
        clients.push(tokio::spawn(async move {
            let client = connect(&address, &options).await;
            let mut picks = Picks(run as u64 * 100 + c as u64 + 1);
            let mut payments = Vec::new();
            for n in 0..PAYMENTS / CLIENTS {
                let from = payers[picks.below(payers.len())].clone();
                let to = loop {
                    let to = &payers[picks.below(payers.len())];
                    if *to != from {
                        break to.clone();
                    }
                };
                let mut payment = Payment {
                    fee_to: fee_accounts[picks.below(fee_accounts.len())].clone(),
                    from,
                    to,
                    amount: picks.below(1000) as i64 + 1,
                    fee: picks.below(10) as i64 + 1,
                    key: format!("pay-{run}-{c}-{n}"),
                    outcome: Outcome::Done,
                };
                payment.outcome = ask(&client, &payment).await;
                if matches!(&payment.outcome, Outcome::Refused(why) if why.starts_with("not sent"))
                {
                    // The silo is restarting: a client would wait a moment.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                payments.push(payment);
                finished.fetch_add(1, Ordering::Relaxed);
            }
            payments
        }));
    }

    // A third of the way through, silo 0 is killed and started again at
    // once on its address.
    while finished.load(Ordering::Relaxed) < PAYMENTS / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (killed, _) = silos[0].take().unwrap();
    let address = killed.address.clone();
    killed.kill();
    let killed_at = Instant::now();
    let (restarted, log) = SiloProcess::start_logged_at(data[0].path(), &address, flags);
    eprintln!(
        "run {run}: silo 0 killed after {} payments and serving again on {address} {:.2?} later",
        finished.load(Ordering::Relaxed),
        killed_at.elapsed()
    );
    logs.push(log.clone());
    silos[0] = Some((restarted, log));
    if let Some(secure) = secure {
        while finished.load(Ordering::Relaxed) < 2 * PAYMENTS / 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        rotate(secure, &silos).await;
        eprintln!(
            "run {run}: tokens rotated after {} payments",
            finished.load(Ordering::Relaxed)
        );
    }

    let mut payments: Vec<Payment> = Vec::new();
    for client in clients {
        payments.extend(client.await.unwrap());
    }
    stop_reading.store(true, Ordering::Relaxed);
    let mut reads = 0;
    for reader in readers {
        reads += reader.await.unwrap();
    }
    let unknown = payments
        .iter()
        .filter(|payment| matches!(payment.outcome, Outcome::Unknown(_)))
        .count();
    let done = payments
        .iter()
        .filter(|payment| payment.outcome == Outcome::Done)
        .count();
    // What the unknown outcomes were, by the start of their text.
    let mut why_unknown: HashMap<String, usize> = HashMap::new();
    for payment in &payments {
        if let Outcome::Unknown(why) = &payment.outcome {
            let head: String = why.chars().take(60).collect();
            *why_unknown.entry(head).or_default() += 1;
        }
    }
    let mut why_unknown: Vec<_> = why_unknown.into_iter().collect();
    why_unknown.sort_by_key(|entry| std::cmp::Reverse(entry.1));
    why_unknown.truncate(4);
    eprintln!("run {run}: unknown outcomes, the most frequent: {why_unknown:?}");
    eprintln!(
        "run {run}: {} payments, {done} done, {unknown} with an unknown outcome; {reads} reads beside them",
        payments.len()
    );

    // The books, before anything is asked again: money is neither created
    // nor lost, whatever each payment's outcome.
    // After a rotation, a new connection presents the new call token.
    let probe_options = match secure {
        Some(secure) => ConnectOptions {
            token: Some(NEW_CALL_TOKEN.to_string()),
            ..secure.call.clone()
        },
        None => ConnectOptions::default(),
    };
    let probe = connect(&addresses[1], &probe_options).await;
    let expected_total = STARTING_BALANCE * payers.len() as i64;
    let settle_started = Instant::now();
    let settled = loop {
        let now = balances(&probe, &all).await;
        let total: i64 = now.iter().sum();
        if total == expected_total {
            break now;
        }
        assert!(
            settle_started.elapsed() < RECOVERY_LIMIT,
            "run {run}: the total is {total}, {expected_total} was deposited: {} money (balances {now:?})",
            if total > expected_total {
                "created"
            } else {
                "lost"
            },
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        settled.iter().all(|balance| *balance >= 0),
        "run {run}: {settled:?}"
    );

    // Every outcome made known: an unknown one asked again under its key.
    for payment in payments.iter_mut() {
        if let Outcome::Unknown(_) = payment.outcome {
            let started = Instant::now();
            payment.outcome = loop {
                match ask(&probe, payment).await {
                    Outcome::Unknown(why) if started.elapsed() < RECOVERY_LIMIT => {
                        eprintln!("run {run}: {} still unknown: {why}", payment.key);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    outcome => break outcome,
                }
            };
        }
    }
    let mut expected: HashMap<&Account, i64> = all.iter().map(|account| (account, 0)).collect();
    for account in &payers {
        expected.insert(account, STARTING_BALANCE);
    }
    for payment in &payments {
        match &payment.outcome {
            Outcome::Done => {
                *expected.get_mut(&payment.from).unwrap() -= payment.amount + payment.fee;
                *expected.get_mut(&payment.to).unwrap() += payment.amount;
                *expected.get_mut(&payment.fee_to).unwrap() += payment.fee;
            }
            Outcome::Refused(_) => {}
            Outcome::Unknown(why) => panic!("run {run}: {} stayed unknown: {why}", payment.key),
        }
    }
    let now = balances(&probe, &all).await;
    let mismatches: Vec<String> = all
        .iter()
        .zip(&now)
        .filter(|(account, balance)| expected[account] != **balance)
        .map(|(account, balance)| {
            format!("{account}: holds {balance}, expected {}", expected[account])
        })
        .collect();
    assert!(mismatches.is_empty(), "run {run}: {mismatches:#?}");
    assert_eq!(now.iter().sum::<i64>(), expected_total, "run {run}");

    let given_up: Vec<String> = logs
        .iter()
        .flat_map(|log| log.lines_with("gave up an interrupted keyed turn"))
        .collect();
    assert!(given_up.is_empty(), "run {run}: {given_up:#?}");
    let passed_around: Vec<String> = logs
        .iter()
        .flat_map(|log| log.lines_with("without settling"))
        .collect();
    eprintln!(
        "run {run}: books exact; 0 interrupted turns given up; {} messages passed around unsettled; run took {:.1?}",
        passed_around.len(),
        started.elapsed()
    );
    if let Some(secure) = secure {
        // The old cluster secret is refused now, the new one let in.
        for address in &addresses {
            let with = |token: &str| ConnectOptions {
                token: Some(token.to_string()),
                ..secure.call.clone()
            };
            assert!(
                Client::connect_with(address, &with(SECRET)).await.is_err(),
                "run {run}: {address} still accepts the old cluster secret"
            );
            let peer = Client::connect_with(address, &with(NEW_SECRET))
                .await
                .unwrap();
            peer.ping().await.unwrap();
        }
    }
    for (silo, _) in silos.into_iter().flatten() {
        silo.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silo_killed_and_restarted_at_once_on_its_address_loses_no_money() {
    if !tooling_ready(&Language::ALL) {
        return;
    }
    let _alone = one_at_a_time().await;
    let Some(database) = PostgresDatabase::create("fast_restart") else {
        return;
    };
    let runs: usize = std::env::var("RIO_FAST_RESTART_RUNS")
        .ok()
        .and_then(|runs| runs.parse().ok())
        .unwrap_or(1);
    for run in 0..runs {
        one_run(&database.url, run, None).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_with_tokens_and_tls_and_a_rotation_during_the_load() {
    if !tooling_ready(&Language::ALL) {
        return;
    }
    let _alone = one_at_a_time().await;
    let Some(database) = PostgresDatabase::create("fast_restart_secure") else {
        return;
    };
    let secure = Secure::new();
    one_run(&database.url, 100, Some(&secure)).await;
}
