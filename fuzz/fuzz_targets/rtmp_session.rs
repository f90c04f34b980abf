//! Any bytes after a valid handshake, in any chunking: the session never panics and
//! accepts any publish it is asked about (so media paths are reached too).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsrelay::rtmp::session::{Session, SessionConfig, SessionEvent};

const HANDSHAKE: usize = 1536;

fuzz_target!(|data: &[u8]| {
    let mut s = Session::new(SessionConfig::default());
    let mut c0c1 = vec![3u8];
    c0c1.extend_from_slice(&[0u8; HANDSHAKE]);
    if s.handle_input(&c0c1).is_err() || s.handle_input(&[0u8; HANDSHAKE]).is_err() {
        return;
    }
    // The first byte picks a chunking, the rest is the stream.
    let Some((&split, rest)) = data.split_first() else { return };
    let step = usize::from(split).max(1);
    for piece in rest.chunks(step) {
        if s.handle_input(piece).is_err() {
            return;
        }
        while let Some(event) = s.poll_event() {
            if let SessionEvent::PublishRequested { .. } = event {
                if s.accept_publish("fuzz").is_err() {
                    return;
                }
            }
        }
        let _ = s.take_output();
    }
});
