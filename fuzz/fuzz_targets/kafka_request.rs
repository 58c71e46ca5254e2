//! Fuzzes the Kafka front end's input path: arbitrary bytes go through
//! `read_frame` (length-prefixed frames off a connection, with a small
//! limit) and every frame it returns goes through `decode`; the whole
//! input is also decoded as a single frame. Neither may panic or abort,
//! and the reader may never return a frame over its limit.
//!
//! Seeds in `corpus/kafka_request/` come in both shapes: `*.frame` files
//! are bare frames (for the direct `decode`), `*.stream` files are
//! length-prefixed frames as a client sends them.

#![no_main]

use std::sync::LazyLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use strata_broker::kafka::codec::{decode, read_frame};

/// Small, so that the reader's limit and partial-frame paths are reached.
const MAX_FRAME_BYTES: usize = 64 << 10;

/// Built once: building a runtime per input would dominate the run.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
});

fuzz_target!(|data: &[u8]| {
    let _ = decode(Bytes::copy_from_slice(data));

    let mut rd: &[u8] = data;
    while let Ok(Some(frame)) = RUNTIME.block_on(read_frame(&mut rd, MAX_FRAME_BYTES)) {
        assert!(frame.len() <= MAX_FRAME_BYTES, "frame of {} bytes", frame.len());
        let _ = decode(frame);
    }
});
