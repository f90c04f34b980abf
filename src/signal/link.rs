//! The internal frames of a cluster link: the WebSocket a node opens to a room's
//! home node for each of its clients in that room ([`crate::cluster::rooms`]).
//!
//! Everything else on a link is the client's own frames, unchanged, both ways. The
//! internal frames are JSON text whose `type` starts with `x-wsrelay-`; the home
//! only accepts them on a link (a client sending one gets `unknown-type`), and the
//! edge never forwards them to its client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Every internal frame starts with this (how `serde_json` writes the tag first).
pub(crate) const PREFIX: &str = r#"{"type":"x-wsrelay-"#;

/// The request header that makes a `/signal/ROOM` upgrade a link: a cluster token
/// (see [`crate::cluster::token`]) naming the node that opens it.
pub(crate) const HEADER: &str = "x-wsrelay-signal";

/// The nodes this node has links with — as an edge, the homes of its clients'
/// rooms; as a home, the nodes linking in — each with a token that ends all those
/// links when the cluster finds the node dead: its registration lapsed
/// (`node_ttl_ms`), as for a machine that vanished without closing its sockets.
/// One check per node and heartbeat in Redis, however many links: no per-link pings
/// beyond the clients' own heartbeat.
#[derive(Debug, Default)]
pub(crate) struct Peers {
    nodes: Mutex<HashMap<String, (CancellationToken, usize)>>,
}

/// One link's interest in its other node; dropping it ends the interest.
#[derive(Debug)]
pub(crate) struct Watch {
    peers: Arc<Peers>,
    node: String,
    /// Cancelled when the node is found dead.
    pub(crate) dead: CancellationToken,
}

impl Peers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (CancellationToken, usize)>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watches `node` for a link.
    pub(crate) fn watch(self: &Arc<Self>, node: &str) -> Watch {
        let mut nodes = self.lock();
        let (token, links) = nodes.entry(node.to_owned()).or_default();
        *links += 1;
        Watch {
            peers: self.clone(),
            node: node.to_owned(),
            dead: token.clone(),
        }
    }

    /// The nodes with links now.
    pub(crate) fn nodes(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// `node` is dead: end every link with it.
    pub(crate) fn dead(&self, node: &str) {
        if let Some((token, _)) = self.lock().remove(node) {
            token.cancel();
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // A cancelled watch's entry is gone already (maybe replaced by a new one).
        if self.dead.is_cancelled() {
            return;
        }
        let mut nodes = self.peers.lock();
        if let Some((_, links)) = nodes.get_mut(&self.node) {
            *links -= 1;
            if *links == 0 {
                nodes.remove(&self.node);
            }
        }
    }
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
    fn a_dead_node_ends_its_links_and_is_forgotten_with_the_last() {
        let peers = Arc::new(Peers::default());
        let (a1, a2, b) = (peers.watch("a"), peers.watch("a"), peers.watch("b"));
        let mut nodes = peers.nodes();
        nodes.sort();
        assert_eq!(nodes, ["a", "b"]);
        peers.dead("a");
        assert!(a1.dead.is_cancelled() && a2.dead.is_cancelled());
        assert!(!b.dead.is_cancelled());
        // A new link to a node of the same id (restarted) is watched afresh.
        let a3 = peers.watch("a");
        drop((a1, a2));
        assert!(!a3.dead.is_cancelled());
        assert_eq!(peers.nodes().len(), 2);
        drop((a3, b));
        assert!(peers.nodes().is_empty());
    }

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
