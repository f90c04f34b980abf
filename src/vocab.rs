//! Words every layer shares: how a client reached us ([`Protocol`]) and what it
//! wants to do with a stream ([`Action`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long the server waits for a peer's WebSocket close reply (or for a refused
/// client to read its answer) before it drops the socket: one value for every
/// close the server starts.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A duration as people read it in logs: `850ms`, `26.1s`, `3m05s`, `2h01m`.
#[derive(Clone, Copy, Debug)]
pub struct Human(pub Duration);

impl std::fmt::Display for Human {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.as_millis();
        let s = self.0.as_secs();
        match s {
            _ if ms < 1_000 => write!(f, "{ms}ms"),
            0..60 => write!(f, "{:.1}s", self.0.as_secs_f64()),
            60..3_600 => write!(f, "{}m{:02}s", s / 60, s % 60),
            _ => write!(f, "{}h{:02}m", s / 3_600, (s % 3_600) / 60),
        }
    }
}

/// An error and its sources, `outer: inner: innermost`, for log lines (an error's
/// `Display` says what failed; its sources say why).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        // Some errors repeat their source in their own message; say it once.
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

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
    /// A cluster edge pulling the stream from its origin node.
    Pull,
}

impl Protocol {
    /// `http`, `ws` or `rtmp` (the metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Ws => "ws",
            Protocol::Rtmp => "rtmp",
            Protocol::Pull => "pull",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        let h = |ms: u64| Human(Duration::from_millis(ms)).to_string();
        assert_eq!(h(850), "850ms");
        assert_eq!(h(26_113), "26.1s");
        assert_eq!(h(185_000), "3m05s");
        assert_eq!(h(7_260_000), "2h01m");
        assert_eq!(tenths(26.113_491_149), 26.1);
    }
}
