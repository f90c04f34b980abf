//! The internal frames of a cluster link: the WebSocket a node opens to a room's
//! home node for each of its clients in that room ([`crate::cluster::rooms`]).
//!
//! Everything else on a link is the client's own frames, unchanged, both ways. The
//! internal frames are JSON text whose `type` starts with `x-wsrelay-`; the home
//! only accepts them on a link (a client sending one gets `unknown-type`), and the
//! edge never forwards them to its client.

use serde::{Deserialize, Serialize};

/// Every internal frame starts with this (how `serde_json` writes the tag first).
pub(crate) const PREFIX: &str = r#"{"type":"x-wsrelay-"#;

/// The request header that makes a `/signal/ROOM` upgrade a link: a cluster token
/// (see [`crate::cluster::token`]) naming the node that opens it.
pub(crate) const HEADER: &str = "x-wsrelay-signal";

/// How often each end of a link pings the other, and how long a silent link lives:
/// the cluster's `heartbeat_ms` and `node_ttl_ms`, so a node that vanished without
/// closing its sockets is found dead on a link as soon as in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    pub(crate) heartbeat: std::time::Duration,
    pub(crate) idle: std::time::Duration,
}

/// An internal frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub(crate) enum Frame {
    /// Home → edge, after the client joined, resumed or was restored: what the edge
    /// keeps to restore it into another home if this one dies.
    #[serde(rename = "x-wsrelay-peer")]
    Peer {
        peer: String,
        seq: u64,
        session: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        meta: Option<String>,
    },
    /// Edge → home, first frame of a link that carries a peer from a lost home.
    #[serde(rename = "x-wsrelay-restore")]
    Restore {
        peer: String,
        seq: u64,
        session: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        meta: Option<String>,
        /// The peers the client was told about.
        known: Vec<String>,
    },
    /// Edge → home: the client sent a frame over `max_message_bytes`.
    #[serde(rename = "x-wsrelay-too-large")]
    TooLarge,
    /// Edge → home: the client sent text that is not UTF-8.
    #[serde(rename = "x-wsrelay-not-utf8")]
    NotUtf8,
}

impl Frame {
    /// Parses a frame known to start with [`PREFIX`].
    pub(crate) fn parse(text: &str) -> Option<Frame> {
        serde_json::from_str(text).ok()
    }

    /// The frame as JSON text.
    pub(crate) fn to_json(&self) -> String {
        // Strings, numbers and lists only: cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Whether a text frame is internal.
pub(crate) fn is_internal(text: &str) -> bool {
    text.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_start_with_the_prefix_and_round_trip() {
        let frames = [
            Frame::Peer {
                peer: "a".into(),
                seq: 1 << 33,
                session: "s".into(),
                meta: Some(r#"{"n":1}"#.into()),
            },
            Frame::Restore {
                peer: "a".into(),
                seq: 3,
                session: "s".into(),
                meta: None,
                known: vec!["b".into()],
            },
            Frame::TooLarge,
            Frame::NotUtf8,
        ];
        for f in frames {
            let text = f.to_json();
            assert!(is_internal(&text), "{text}");
            assert_eq!(Frame::parse(&text), Some(f));
        }
        assert!(!is_internal(r#"{"type":"welcome"}"#));
        assert_eq!(Frame::parse(r#"{"type":"x-wsrelay-nope"}"#), None);
    }
}
