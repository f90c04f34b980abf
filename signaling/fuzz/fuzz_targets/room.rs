//! A room driven by arbitrary inputs: never panics, and everything it sends is
//! a JSON object with a `type`.
//!
//! The input is split at NUL bytes into steps; the first byte of a step picks the
//! connection (low 2 bits) and the input kind (next bits), the rest is the text.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use signaling::{Config, Input, Output, Room, WallClock};

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let config = Config {
        max_peers_per_room: 3,
        max_queued_per_peer: 4,
        rate_burst: 20,
        flood_limit: 3,
        ..Config::default()
    };
    let mut room = Room::new(
        "fuzz",
        Arc::new(config),
        WallClock::new(t0, 1_700_000_000_000),
        [3; 32],
    );
    let mut now = t0;
    for step in data.split(|b| *b == 0) {
        let Some((&head, rest)) = step.split_first() else {
            continue;
        };
        let conn = u64::from(head & 3);
        let text = String::from_utf8_lossy(rest).into_owned();
        let input = match (head >> 2) % 8 {
            0 => Input::Connect { conn },
            1 => Input::Disconnect { conn },
            2 => Input::Binary { conn },
            3 => Input::TooLarge { conn },
            4 => {
                now += Duration::from_millis(u64::from(head) * 300);
                Input::Tick
            }
            _ => Input::Text { conn, text },
        };
        room.handle(now, input);
        while let Some(out) = room.poll_output() {
            if let Output::Send { text, .. } = out {
                let v: serde_json::Value =
                    serde_json::from_str(&text).expect("server output is JSON");
                assert!(v["type"].is_string(), "{text}");
            }
        }
    }
});
