//! What a client says when its hello fails (issue 19, item 8): a silo that
//! answers with bytes that are no rio frame (a TLS server's alert) gets a
//! hint about TLS; a connection reset or closed during the hello does not.
//! A server that accepts and never answers (a frozen silo) fails the
//! connect at its timeout, and the connection is closed.

use std::time::Duration;

use rio_client::{Client, ClientError, ConnectOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server that accepts one connection and does `answer` with it.
async fn server<F, Fut>(answer: F) -> String
where
    F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        answer(stream).await;
    });
    address
}

fn handshake_reason(result: Result<Client, ClientError>) -> String {
    match result {
        Err(ClientError::Handshake(reason)) => reason,
        other => panic!("expected a handshake error, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn a_reset_during_the_hello_says_nothing_of_tls() {
    let address = server(|stream| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        // SO_LINGER 0: the close is a reset.
        #[allow(deprecated)]
        stream.set_linger(Some(Duration::ZERO)).unwrap();
        drop(stream);
    })
    .await;
    let reason = handshake_reason(Client::connect(&address).await);
    assert!(!reason.contains("TLS"), "{reason}");
    assert!(
        reason.contains("broke during the hello") || reason.contains("closed"),
        "{reason}"
    );
}

#[tokio::test]
async fn an_answer_that_is_no_frame_suggests_tls() {
    let address = server(|mut stream| async move {
        // A TLS alert record (handshake failure), as a TLS server answers
        // a plain hello.
        stream
            .write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    })
    .await;
    let reason = handshake_reason(Client::connect(&address).await);
    assert!(reason.contains("TLS"), "{reason}");
}

#[tokio::test]
async fn a_silo_that_never_answers_the_hello_fails_the_connect_at_its_timeout() {
    let (closed_sender, closed) = tokio::sync::oneshot::channel();
    let address = server(|mut stream| async move {
        // Reads the hello, answers nothing, and notes when the client
        // closes the connection (a read of zero bytes).
        let mut buffer = [0u8; 256];
        while stream.read(&mut buffer).await.is_ok_and(|read| read > 0) {}
        let _ = closed_sender.send(());
    })
    .await;
    let options = ConnectOptions {
        connect_timeout: Duration::from_millis(300),
        ..ConnectOptions::default()
    };
    let started = std::time::Instant::now();
    let reason = handshake_reason(Client::connect_with(&address, &options).await);
    let took = started.elapsed();
    assert!(reason.contains("within 300ms"), "{reason}");
    assert!(took >= Duration::from_millis(300), "failed after {took:?}");
    assert!(took < Duration::from_secs(5), "failed only after {took:?}");
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("the client closes the connection it gave up on")
        .unwrap();
}
