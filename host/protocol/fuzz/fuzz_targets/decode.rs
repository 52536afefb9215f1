//! Fuzzes what a silo and a client do with bytes from the network: the
//! frame reader (length prefix, limit, truncation) over arbitrary input,
//! and decoding of every body as a client frame and as a server frame.
//! Any outcome is fine except a panic, a hang or an allocation the frame
//! limit should have prevented.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rio_protocol::codec::decode_body;
use rio_protocol::{ClientFrame, FrameReader, ServerFrame};

/// Small, so the limit is hit often; the silo's default is 64 MiB.
const MAX_FRAME_BYTES: usize = 64 * 1024;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    // The bytes as one body, as the reader hands it on.
    let _ = decode_body::<ClientFrame>(data);
    let _ = decode_body::<ServerFrame>(data);
    // The bytes as a stream of frames.
    runtime().block_on(async {
        let mut reader = FrameReader::new(data, MAX_FRAME_BYTES);
        while let Ok(Some(body)) = reader.next_body().await {
            assert!(body.len() <= MAX_FRAME_BYTES, "a frame over the limit was read");
            let _ = decode_body::<ClientFrame>(&body);
        }
    });
});
