//! A bounded protocol fuzz run against a live `rio silo` process (issue 11,
//! item 8): several connections send some thousands of frames drawn from a
//! seeded PRNG (random bodies, truncated and oversized frames, deeply nested
//! CBOR, mutated valid requests, unframed garbage, misplaced hellos). Then
//! the silo must still serve a normal call, have logged no panic, have let
//! every fuzzing connection go, and have logged at most one line per
//! connection it closed.
//!
//! The seed is printed; `RIO_FUZZ_SEED=N` replays a run.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::SiloProcess;
use common::guests::build;
use rio_client::{Calls, Client};
use rio_protocol::{
    CallRequest, ClientFrame, ForwardRequest, PROTOCOL_VERSION, Request, encode_frame,
};
use serde_bytes::ByteBuf;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WORKERS: usize = 4;
const FRAMES_PER_WORKER: u64 = 2500;
const TIME_BUDGET: Duration = Duration::from_secs(6);
/// The silo's frame limit in this test, so "oversized" is cheap to send.
const MAX_FRAME_MIB: usize = 1;

/// xorshift64*: small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

fn encoded(frame: &ClientFrame) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_frame(frame, &mut bytes).unwrap();
    bytes.split_off(4)
}

fn hello_body() -> Vec<u8> {
    encoded(&ClientFrame::Hello {
        protocol_version: PROTOCOL_VERSION,
        token: None,
    })
}

fn call(object_id: &str, message_type: &str) -> CallRequest {
    let mut payload = Vec::new();
    ciborium::into_writer(&json!({}), &mut payload).unwrap();
    CallRequest {
        service_type: "Faulty".into(),
        object_id: object_id.into(),
        message_type: message_type.into(),
        payload: ByteBuf::from(payload),
        timeout_ms: Some(2_000),
        idempotency_key: None,
    }
}

/// A valid request body, one of each kind the silo serves.
fn valid_request(rng: &mut Rng) -> Vec<u8> {
    let id = rng.next() % 1_000_000;
    let object_id = ["a", "b", "c"][rng.below(3)];
    let request = match rng.below(8) {
        0 => Request::Ping,
        1 => Request::Stats,
        2 => Request::ListDeployments,
        3 => Request::Members,
        4 => Request::Deploy {
            service_type: "Fuzzed".into(),
            component: rng.bytes(32),
        },
        5 => Request::Forward(ForwardRequest {
            call: call(object_id, "ok"),
            call_chain: vec![("Faulty".into(), "caller".into())],
            hops: rng.below(3) as u8,
            waiting_since_us: None,
            from_rerun: false,
        }),
        6 => Request::RoutedCall(call(object_id, "get")),
        _ => Request::Call(call(object_id, "ok")),
    };
    encoded(&ClientFrame::Request { id, request })
}

/// A valid body with a few bytes flipped, dropped, added, or cut short.
fn mutated(rng: &mut Rng, mut body: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(4) {
        if body.is_empty() {
            break;
        }
        let at = rng.below(body.len());
        match rng.below(4) {
            0 => body[at] ^= 1 << rng.below(8),
            1 => body[at] = rng.next() as u8,
            2 => {
                body.remove(at);
            }
            _ => body.insert(at, rng.next() as u8),
        }
    }
    if rng.below(5) == 0 {
        let keep = rng.below(body.len() + 1);
        body.truncate(keep);
    }
    body
}

/// CBOR nested `depth` deep: arrays, maps or tags, around a request or not.
fn nested(rng: &mut Rng) -> Vec<u8> {
    let depth = 100 + rng.below(50_000);
    let mut body = Vec::with_capacity(depth * 2 + 16);
    if rng.below(2) == 0 {
        // {"Request": {"id": 1, "request": <nested>}}
        body.extend_from_slice(&[0xa1, 0x67]);
        body.extend_from_slice(b"Request");
        body.extend_from_slice(&[0xa2, 0x62, b'i', b'd', 0x01, 0x67]);
        body.extend_from_slice(b"request");
    }
    let opener: &[u8] = match rng.below(3) {
        0 => &[0x81],
        1 => &[0xa1, 0x00],
        _ => &[0xc6],
    };
    for _ in 0..depth {
        body.extend_from_slice(opener);
    }
    body.push(0x00);
    body
}

/// What one step of a connection sends, and whether the connection can go
/// on after it (a frame cut short or refused ends the stream's framing).
fn next_step(rng: &mut Rng) -> (Vec<u8>, bool) {
    match rng.below(100) {
        0..=14 => {
            let length = rng.below(256);
            (framed(&rng.bytes(length)), true)
        }
        15..=19 => {
            let whole = framed(&valid_request(rng));
            let cut = rng.below(whole.len());
            (whole[..cut].to_vec(), false)
        }
        20..=22 => {
            let mut frame = (u32::MAX - rng.below(1000) as u32).to_be_bytes().to_vec();
            frame.extend(rng.bytes(64));
            (frame, false)
        }
        23..=27 => (framed(&nested(rng)), true),
        28..=64 => {
            let body = valid_request(rng);
            (framed(&mutated(rng, body)), true)
        }
        65..=67 => {
            let length = 1 + rng.below(512);
            (rng.bytes(length), false)
        }
        68..=69 => (framed(&hello_body()), true),
        _ => (framed(&valid_request(rng)), true),
    }
}

/// Frames sent and connections opened, over every worker.
#[derive(Default)]
struct Tally {
    frames: AtomicU64,
    connections: AtomicU64,
}

async fn fuzz_worker(address: String, seed: u64, tally: Arc<Tally>) {
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let mut sent = 0;
    while sent < FRAMES_PER_WORKER && started.elapsed() < TIME_BUDGET {
        let Ok(stream) = TcpStream::connect(&address).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        tally.connections.fetch_add(1, Ordering::Relaxed);
        let sent_before = sent;
        let (mut read_half, mut write_half) = stream.into_split();
        // Whatever the silo answers is read and dropped, so it never waits on us.
        let drain = tokio::spawn(async move {
            let mut sink = vec![0u8; 64 * 1024];
            while matches!(read_half.read(&mut sink).await, Ok(n) if n > 0) {}
        });
        let hello = match rng.below(10) {
            0 => mutated(&mut rng, hello_body()),
            1 => valid_request(&mut rng),
            _ => hello_body(),
        };
        let mut open = write_half.write_all(&framed(&hello)).await.is_ok();
        sent += 1;
        let steps = 1 + rng.below(60);
        for _ in 0..steps {
            if !open || sent >= FRAMES_PER_WORKER {
                break;
            }
            let (bytes, goes_on) = next_step(&mut rng);
            open = write_half.write_all(&bytes).await.is_ok() && goes_on;
            sent += 1;
        }
        tally
            .frames
            .fetch_add(sent - sent_before, Ordering::Relaxed);
        // Half of the connections end with a half-close, half just drop.
        if rng.below(2) == 0 {
            let _ = write_half.shutdown().await;
            let _ = tokio::time::timeout(Duration::from_millis(200), drain).await;
        } else {
            drain.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_frames_neither_crash_the_silo_nor_stop_it_serving() {
    let seed = std::env::var("RIO_FUZZ_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("RIO_FUZZ_SEED={seed}");
    let data = tempfile::tempdir().unwrap();
    let max_frame = MAX_FRAME_MIB.to_string();
    let (silo, log) = SiloProcess::start_logged(
        data.path(),
        &[
            "--max-frame-mib",
            &max_frame,
            "--handshake-timeout-ms",
            "1000",
        ],
    );
    let client = Client::connect(&silo.address).await.unwrap();
    client
        .deploy("Faulty", build("guests/faulty"))
        .await
        .expect("faulty deploys");

    let tally = Arc::new(Tally::default());
    let workers: Vec<_> = (0..WORKERS as u64)
        .map(|worker| {
            let seed = seed.wrapping_add(worker.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            tokio::spawn(fuzz_worker(silo.address.clone(), seed, tally.clone()))
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let frames = tally.frames.load(Ordering::Relaxed);
    let connections = tally.connections.load(Ordering::Relaxed);
    println!("sent {frames} frames over {connections} connections");
    assert!(frames >= 1000, "the fuzz run sent only {frames} frames");

    let reply: Value = client
        .call("Faulty", "after-fuzz", "ok", &json!({}))
        .await
        .expect("the silo still serves a normal call");
    assert_eq!(reply["ok"], true);

    // Every fuzzing connection is let go (the last wait at most the
    // handshake timeout, or their replies' deadlines after a half-close).
    let deadline = Instant::now() + Duration::from_secs(15);
    let stats = loop {
        let stats = client.stats().await.unwrap();
        if stats.connections_open <= 1 || Instant::now() > deadline {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("{stats:?}");
    assert_eq!(
        stats.connections_open, 1,
        "only this client is left: {stats:?}"
    );

    // The log comes through a pipe: give it a moment to catch up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = log.text();
    assert!(!text.contains("panicked"), "the silo panicked:\n{text}");
    // After its hello, a misbehaving connection gets one line; before it,
    // connections (anyone who reaches the port) are summarised, one line
    // per 10 s at most.
    let after_hello = log.lines_with("closing a misbehaving connection").len() as u64;
    let summaries = log
        .lines_with("closing misbehaving connections before their hello")
        .len() as u64;
    let closing_lines = after_hello + summaries;
    assert!(
        closing_lines <= connections,
        "{closing_lines} lines for {connections} connections: more than one per connection"
    );
    assert!(
        summaries <= 2,
        "{summaries} summaries in one fuzz run of seconds"
    );
    assert!(
        closing_lines <= stats.connections_closed_misbehaving
            && (stats.connections_closed_misbehaving == 0 || closing_lines >= 1),
        "{after_hello} lines and {summaries} summaries for {} connections closed",
        stats.connections_closed_misbehaving
    );
    silo.stop();
}
