//! Words every layer shares: how a client reached us ([`Protocol`]) and what it
//! wants to do with a stream ([`Action`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long the server waits for a peer's WebSocket close reply (or for a refused
/// client to read its answer) before it drops the socket: one value for every
/// close the server starts.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// `x` rounded to tenths, for human-facing figures (seconds, kbit/s) in the API
/// and in logs.
pub fn tenths(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// How a publisher reached us.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP POST/PUT body, or HTTP-FLV play.
    Http,
    /// WebSocket binary messages.
    Ws,
    /// RTMP publish.
    Rtmp,
}

impl Protocol {
    /// `http`, `ws` or `rtmp` (the metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Ws => "ws",
            Protocol::Rtmp => "rtmp",
        }
    }
}

/// What a client wants to do with a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Send a stream (HTTP POST/PUT, WebSocket `?publish`, RTMP publish).
    Publish,
    /// Receive a stream (WebSocket-FLV, HTTP-FLV).
    Play,
}

impl Action {
    /// `publish` or `play`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Play => "play",
        }
    }
}

impl std::str::FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "publish" => Ok(Action::Publish),
            "play" => Ok(Action::Play),
            _ => Err(format!("`{s}` is not `publish` or `play`")),
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
