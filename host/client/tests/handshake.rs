//! What a client says when its hello fails (issue 19, item 8): a silo that
//! answers with bytes that are no rio frame (a TLS server's alert) gets a
//! hint about TLS; a connection reset or closed during the hello does not.

use std::time::Duration;

use rio_client::{Client, ClientError};
use tokio::io::AsyncWriteExt;
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
