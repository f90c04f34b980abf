//! Any text: `parse` returns a message or a typed error, never panics, and a
//! rejected message's `id` (if any) is valid JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match signaling::protocol::parse(text) {
        Ok(req) => {
            let _ = req.message.type_name();
        }
        Err(rejected) => {
            let _ = rejected.error.code().as_str();
            let _ = rejected.error.close();
            if let Some(id) = rejected.id {
                serde_json::from_str::<serde_json::Value>(id.get()).expect("echoed id is JSON");
            }
        }
    }
});
