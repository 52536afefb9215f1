//! Authentication, TLS and undeploy (issue 11, item 1), tried against real
//! `rio silo` processes on loopback: tokens scope what a connection may
//! ask and a wrong one is refused at the hello, tokens never reach the log,
//! a silo will not listen on the network without tokens unless told to,
//! TLS with a generated CA is verified by the client and the CLI, a
//! cluster's silos forward to each other with the cluster secret over TLS,
//! and an undeployed type is gone from every silo while its state stays.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::guests::build;
use common::tls::{file_with, generated_certificates, tls_flags};
use common::{RIO, SiloProcess, rio, stdout_of};
use rio_client::{Calls, Client, ClientError, ConnectOptions, TlsConfig};
use rio_protocol::{ReplyError, Request};
use serde_json::{Value, json};

const CALL_TOKEN: &str = "call-token-3b1f7a";
const ADMIN_TOKEN: &str = "admin-token-9c2e";
const CLUSTER_SECRET: &str = "cluster-secret-51d0";

fn with_token(token: &str) -> ConnectOptions {
    ConnectOptions {
        token: Some(token.to_string()),
        ..ConnectOptions::default()
    }
}

fn unauthorized(result: Result<impl std::fmt::Debug, ClientError>) -> String {
    match result {
        Err(ClientError::Reply(ReplyError::Unauthorized(reason))) => reason,
        other => panic!("expected unauthorized, got {other:?}"),
    }
}

/// The reason of a hello refused for its token: an `unauthorized` error
/// (the goodbye's kind), not a broken handshake.
fn refused_at_hello(result: Result<Client, ClientError>) -> String {
    match result {
        Err(ClientError::Reply(rio_protocol::ReplyError::Unauthorized(reason))) => reason,
        Err(other) => panic!("expected a refused hello, got {other}"),
        Ok(_) => panic!("expected a refused hello, got a connection"),
    }
}

/// Waits (bounded) until a connection with `token` is `accepted` or not.
async fn until_token(address: &str, token: &str, accepted: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let connected = Client::connect_with(address, &with_token(token)).await;
        if connected.is_ok() == accepted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the token was {} 10 s after SIGHUP",
            if accepted {
                "still refused"
            } else {
                "still accepted"
            }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Token rotation without a restart (issue 19, item 5): the token file
/// lists the old and the new token, SIGHUP, both are accepted; then the
/// new alone, SIGHUP, the old is refused. Connections made with the old
/// one keep working; a rotation to a weak token is refused and changes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_rotate_on_sighup_with_old_and_new_accepted_meanwhile() {
    const NEW_CALL_TOKEN: &str = "call-token-rotated-77c1e2";
    let data = tempfile::tempdir().unwrap();
    let call_file = file_with(data.path(), "call-token", &format!("{CALL_TOKEN}\n"));
    let admin_file = file_with(data.path(), "admin-token", ADMIN_TOKEN);
    let (silo, log) = SiloProcess::start_logged(
        data.path(),
        &[
            "--call-token-file",
            call_file.to_str().unwrap(),
            "--admin-token-file",
            admin_file.to_str().unwrap(),
        ],
    );
    let admin = Client::connect_with(&silo.address, &with_token(ADMIN_TOKEN))
        .await
        .unwrap();
    admin
        .deploy("Counter", build("guests/counter"))
        .await
        .unwrap();
    let old = Client::connect_with(&silo.address, &with_token(CALL_TOKEN))
        .await
        .unwrap();
    refused_at_hello(Client::connect_with(&silo.address, &with_token(NEW_CALL_TOKEN)).await);

    std::fs::write(&call_file, format!("{NEW_CALL_TOKEN}\n{CALL_TOKEN}\n")).unwrap();
    silo.signal("HUP");
    until_token(&silo.address, NEW_CALL_TOKEN, true).await;
    until_token(&silo.address, CALL_TOKEN, true).await;

    std::fs::write(&call_file, NEW_CALL_TOKEN).unwrap();
    silo.signal("HUP");
    until_token(&silo.address, CALL_TOKEN, false).await;
    let new = Client::connect_with(&silo.address, &with_token(NEW_CALL_TOKEN))
        .await
        .unwrap();
    let reply: Value = new
        .call("Counter", "r", "increment", &json!({"by": 1}))
        .await
        .unwrap();
    assert_eq!(reply, json!({"value": 1}));
    // The connection made with the old token keeps what its hello proved.
    let reply: Value = old
        .call("Counter", "r", "increment", &json!({"by": 1}))
        .await
        .unwrap();
    assert_eq!(reply, json!({"value": 2}));

    // A weak token in the file: the rotation is refused, the tokens stay.
    std::fs::write(&call_file, "short").unwrap();
    silo.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.lines_with("tokens not rotated").is_empty() {
        assert!(Instant::now() < deadline, "no word of the refused rotation");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Client::connect_with(&silo.address, &with_token(NEW_CALL_TOKEN))
        .await
        .expect("the rotated token is still accepted");
    refused_at_hello(Client::connect_with(&silo.address, &with_token("short")).await);
    let text = log.text();
    for token in [CALL_TOKEN, NEW_CALL_TOKEN, ADMIN_TOKEN] {
        assert!(!text.contains(token), "a token reached the log");
    }
    silo.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_scope_what_a_connection_may_ask() {
    let data = tempfile::tempdir().unwrap();
    let admin_file = file_with(data.path(), "admin-token", &format!("{ADMIN_TOKEN}\n"));
    let (silo, log) = SiloProcess::start_logged(
        data.path(),
        &[
            "--call-token",
            CALL_TOKEN,
            "--admin-token-file",
            admin_file.to_str().unwrap(),
        ],
    );

    // No token, or a wrong one: refused at the hello, with the reason.
    let reason = refused_at_hello(Client::connect(&silo.address).await);
    assert!(reason.contains("requires a token"), "{reason}");
    let reason = refused_at_hello(Client::connect_with(&silo.address, &with_token("guess")).await);
    assert!(reason.contains("not one this silo accepts"), "{reason}");

    // The admin token deploys; a call token calls, and may not deploy.
    let admin = Client::connect_with(&silo.address, &with_token(ADMIN_TOKEN))
        .await
        .unwrap();
    admin
        .deploy("Counter", build("guests/counter"))
        .await
        .unwrap();
    let caller = Client::connect_with(&silo.address, &with_token(CALL_TOKEN))
        .await
        .unwrap();
    let reply: Value = caller
        .call("Counter", "a", "increment", &json!({"by": 2}))
        .await
        .unwrap();
    assert_eq!(reply, json!({"value": 2}));
    assert_eq!(caller.deployments().await.unwrap().len(), 1);
    let reason = unauthorized(caller.deploy("Other", build("guests/counter")).await);
    assert!(reason.contains("admin token"), "{reason}");
    unauthorized(caller.undeploy("Counter").await);
    unauthorized(caller.stats().await);
    unauthorized(caller.members().await);
    unauthorized(caller.dead_letters(None, 10).await);

    // Silo-to-silo requests need the cluster secret, which this silo lacks:
    // not even the admin may forward or ping.
    let reason = unauthorized(admin.ping().await);
    assert!(reason.contains("cluster secret"), "{reason}");
    unauthorized(caller.request(Request::Ping).await);

    // The refused connection did not disturb the others.
    let reply: Value = caller
        .call("Counter", "a", "increment", &json!({"by": 1}))
        .await
        .unwrap();
    assert_eq!(reply, json!({"value": 3}));
    let stats = admin.stats().await.unwrap();
    assert_eq!(stats.connections_unauthorized, 2, "{stats:?}");

    // The CLI takes the token from a flag, a variable or a file.
    let call = rio(&[
        "call",
        "--silo",
        &silo.address,
        "--token",
        CALL_TOKEN,
        "Counter/a",
        "get",
    ]);
    assert_eq!(stdout_of(&call), r#"{"value":3}"#);
    let denied = Command::new(RIO)
        .args(["undeploy", "--silo", &silo.address, "Counter"])
        .env("RIO_TOKEN", CALL_TOKEN)
        .output()
        .unwrap();
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(stderr.contains("unauthorized"), "{stderr}");
    let listed = rio(&[
        "deployments",
        "--silo",
        &silo.address,
        "--token-file",
        admin_file.to_str().unwrap(),
    ]);
    assert!(stdout_of(&listed).starts_with("Counter\t"));

    silo.stop();
    let log = log.text();
    assert!(log.contains("bad or missing token"), "{log}");
    for secret in [CALL_TOKEN, ADMIN_TOKEN] {
        assert!(!log.contains(secret), "the log shows a token:\n{log}");
    }
}

#[test]
fn a_silo_will_not_listen_on_the_network_without_tokens() {
    let data = tempfile::tempdir().unwrap();
    let refused = Command::new(RIO)
        .args(["silo", "--listen", "0.0.0.0:0", "--data"])
        .arg(data.path())
        .env("RIO_LOG", "warn")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--allow-unauthenticated"), "{stderr}");

    // Tokens, or the explicit flag, let it start.
    for flags in [
        ["--call-token", CALL_TOKEN, "--admin-token", ADMIN_TOKEN].as_slice(),
        ["--allow-unauthenticated"].as_slice(),
    ] {
        let data = tempfile::tempdir().unwrap();
        let mut child = Command::new(RIO)
            .args(["silo", "--listen", "0.0.0.0:0", "--data"])
            .arg(data.path())
            .args(flags)
            .env("RIO_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert!(
            line.starts_with("rio silo listening on 0.0.0.0:"),
            "{line:?} with {flags:?}"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

/// A token short enough to guess, or one string for two scopes, stops the
/// silo at start with a message saying why; nothing listens.
#[test]
fn weak_or_shared_tokens_are_refused_at_start() {
    let cases: [(&[&str], &str); 5] = [
        (&["--call-token", "short"], "at least 16"),
        (&["--call-token", " "], "at least 16"),
        (&["--admin-token", "fifteen-bytes-x"], "at least 16"),
        (
            &["--call-token", ADMIN_TOKEN, "--admin-token", ADMIN_TOKEN],
            "the same",
        ),
        (
            &[
                "--admin-token",
                CLUSTER_SECRET,
                "--cluster-secret",
                CLUSTER_SECRET,
            ],
            "the same",
        ),
    ];
    for (flags, needle) in cases {
        let data = tempfile::tempdir().unwrap();
        let refused = Command::new(RIO)
            .args(["silo", "--listen", "127.0.0.1:0", "--data"])
            .arg(data.path())
            .args(flags)
            .env("RIO_LOG", "warn")
            .output()
            .unwrap();
        assert!(!refused.status.success(), "started with {flags:?}");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains(needle), "{flags:?}: {stderr}");
        let stdout = String::from_utf8_lossy(&refused.stdout);
        assert!(!stdout.contains("listening"), "{flags:?}: {stdout}");
        for flag in flags.iter().filter(|flag| !flag.starts_with("--")) {
            if flag.trim().len() >= 8 {
                assert!(
                    !stderr.contains(flag),
                    "the error shows the token: {stderr}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeployed_type_is_refused_and_its_state_stays() {
    let data = tempfile::tempdir().unwrap();
    let silo = SiloProcess::start(data.path());
    let client = Client::connect(&silo.address).await.unwrap();
    let counter = build("guests/counter");
    client.deploy("Counter", counter.clone()).await.unwrap();
    let _: Value = client
        .call("Counter", "kept", "increment", &json!({"by": 5}))
        .await
        .unwrap();

    let undeployed = rio(&["undeploy", "--silo", &silo.address, "Counter"]);
    assert!(stdout_of(&undeployed).starts_with("undeployed Counter"));
    match client
        .call::<_, Value>("Counter", "kept", "get", &json!({}))
        .await
    {
        Err(ClientError::Reply(ReplyError::UnknownType { service_type })) => {
            assert_eq!(service_type, "Counter")
        }
        other => panic!("expected unknown-type, got {other:?}"),
    }
    assert!(client.deployments().await.unwrap().is_empty());
    assert!(matches!(
        client.undeploy("Counter").await,
        Err(ClientError::Reply(ReplyError::UnknownType { .. }))
    ));

    // Still gone after a restart; deployed again, the object finds its state.
    silo.stop();
    let silo = SiloProcess::start(data.path());
    let client = Client::connect(&silo.address).await.unwrap();
    assert!(client.deployments().await.unwrap().is_empty());
    client.deploy("Counter", counter).await.unwrap();
    let reply: Value = client
        .call("Counter", "kept", "get", &json!({}))
        .await
        .unwrap();
    assert_eq!(reply, json!({"value": 5}));
    silo.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_verified_by_clients_and_the_cli() {
    let data = tempfile::tempdir().unwrap();
    let (ca, certificate, key) = generated_certificates(data.path(), "good");
    let (other_ca, _, _) = generated_certificates(data.path(), "other");
    let silo = SiloProcess::start_with(data.path(), &tls_flags(&certificate, &key, &ca));

    let tls = TlsConfig::from_ca_file(&ca).unwrap();
    let options = ConnectOptions {
        tls: Some(tls.clone()),
        ..ConnectOptions::default()
    };
    let client = Client::connect_with(&silo.address, &options).await.unwrap();
    client
        .deploy("Counter", build("guests/counter"))
        .await
        .unwrap();
    // Many calls in flight at once over one TLS connection.
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..200 {
        let client = client.clone();
        calls.spawn(async move {
            let object = format!("c{}", i % 10);
            client
                .call::<_, Value>("Counter", &object, "increment", &json!({"by": 1}))
                .await
        });
    }
    while let Some(reply) = calls.join_next().await {
        reply.unwrap().unwrap();
    }
    let total: i64 = {
        let mut total = 0;
        for i in 0..10 {
            let reply: Value = client
                .call("Counter", &format!("c{i}"), "get", &json!({}))
                .await
                .unwrap();
            total += reply["value"].as_i64().unwrap();
        }
        total
    };
    assert_eq!(total, 200);

    // A client that trusts another CA refuses the silo; a plain one is
    // refused by it; neither disturbs the TLS client.
    let distrusting = ConnectOptions {
        tls: Some(TlsConfig::from_ca_file(&other_ca).unwrap()),
        ..ConnectOptions::default()
    };
    match Client::connect_with(&silo.address, &distrusting).await {
        Err(ClientError::Tls(reason)) => assert!(reason.contains("certificate"), "{reason}"),
        other => panic!("expected a TLS error, got {:?}", other.map(|_| ())),
    }
    let plain = tokio::time::timeout(Duration::from_secs(10), Client::connect(&silo.address))
        .await
        .expect("a plain client is answered, not left hanging");
    match plain {
        Err(ClientError::Handshake(reason)) => assert!(reason.contains("--tls-ca"), "{reason}"),
        other => panic!("expected a refused hello, got {:?}", other.map(|_| ())),
    }
    // A name the certificate does not carry is refused too.
    let misnamed = ConnectOptions {
        tls: Some(tls.with_server_name("elsewhere.example").unwrap()),
        ..ConnectOptions::default()
    };
    assert!(matches!(
        Client::connect_with(&silo.address, &misnamed).await,
        Err(ClientError::Tls(_))
    ));
    let reply: Value = client
        .call("Counter", "c0", "get", &json!({}))
        .await
        .unwrap();
    assert_eq!(reply, json!({"value": 20}));

    let call = rio(&[
        "call",
        "--silo",
        &silo.address,
        "--tls-ca",
        ca.to_str().unwrap(),
        "Counter/c1",
        "get",
    ]);
    assert_eq!(stdout_of(&call), r#"{"value":20}"#);
    let refused = rio(&[
        "call",
        "--silo",
        &silo.address,
        "--tls-ca",
        other_ca.to_str().unwrap(),
        "Counter/c1",
        "get",
    ]);
    assert!(!refused.status.success());
    silo.stop();
}

/// Two silos of one cluster over TLS with tokens: calls through either
/// reach objects on both (forwarded with the cluster secret), and a type
/// undeployed through one is gone from the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_forwards_over_tls_with_its_secret_and_undeploys_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("cluster.db").display());
    let (ca, certificate, key) = generated_certificates(dir.path(), "cluster");
    let secret_file = file_with(dir.path(), "secret", CLUSTER_SECRET);
    let mut flags = tls_flags(&certificate, &key, &ca);
    flags.extend([
        "--cluster",
        &url,
        "--call-token",
        CALL_TOKEN,
        "--admin-token",
        ADMIN_TOKEN,
        "--cluster-secret-file",
        secret_file.to_str().unwrap(),
        "--placement",
        "hash",
    ]);
    let data: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let silos: Vec<SiloProcess> = data
        .iter()
        .map(|dir| SiloProcess::start_with(dir.path(), &flags))
        .collect();
    let tls = TlsConfig::from_ca_file(&ca).unwrap();
    let as_admin = ConnectOptions {
        token: Some(ADMIN_TOKEN.into()),
        tls: Some(tls.clone()),
        ..ConnectOptions::default()
    };
    let as_caller = ConnectOptions {
        token: Some(CALL_TOKEN.into()),
        tls: Some(tls),
        ..ConnectOptions::default()
    };
    let admin = Client::connect_with(&silos[0].address, &as_admin)
        .await
        .unwrap();
    admin
        .deploy("Counter", build("guests/counter"))
        .await
        .unwrap();
    let members = admin.members().await.unwrap();
    assert_eq!(members.len(), 2, "{members:?}");

    // Through the second silo: with hash placement some objects live on
    // the first, so their calls are forwarded, with the secret, over TLS.
    let caller = Client::connect_with(&silos[1].address, &as_caller)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 0..40 {
        loop {
            match caller
                .call::<_, Value>("Counter", &format!("o{i}"), "increment", &json!({"by": 1}))
                .await
            {
                Ok(reply) => {
                    assert_eq!(reply, json!({"value": 1}));
                    break;
                }
                // The second silo learns of the deployment by polling.
                Err(ClientError::Reply(ReplyError::UnknownType { .. }))
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => panic!("call o{i} failed: {error}"),
            }
        }
    }
    let second_admin = Client::connect_with(&silos[1].address, &as_admin)
        .await
        .unwrap();
    let forwarded = second_admin.stats().await.unwrap().forwarded_total;
    assert!(forwarded > 0, "no call was forwarded");

    // Undeployed through the first, gone from the second within its poll:
    // then every object answers unknown-type, wherever it lives.
    admin.undeploy("Counter").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !second_admin.deployments().await.unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the second silo still serves Counter"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in 0..40 {
        match caller
            .call::<_, Value>("Counter", &format!("o{i}"), "get", &json!({}))
            .await
        {
            Err(ClientError::Reply(ReplyError::UnknownType { .. })) => {}
            other => panic!("o{i}: expected unknown-type after the undeploy, got {other:?}"),
        }
    }
    for silo in silos {
        silo.stop();
    }
}
