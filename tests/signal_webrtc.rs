//! Real WebRTC through the signaling server: webrtc-rs peers (UDP on 127.0.0.1, no
//! STUN) join a room, negotiate offer/answer with trickled ICE candidates relayed
//! by the server, open DataChannels and exchange messages. Two peers, then a
//! three-peer mesh, then two peers on different nodes of a real three-node cluster
//! (a `redis-server` and three `wsrelay` binaries, tests/common/cluster.rs).
//!
//! Each test peer follows the usual browser pattern: a newcomer offers to every
//! peer in its `welcome` roster (it is the polite side towards all of them), the
//! others answer; candidates that arrive before the remote description is set
//! are held back and added right after it.

mod common;
mod signal_client;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::cluster::{Cluster, SERIAL};
use futures_util::StreamExt;
use serde_json::{Value, json};
use signal_client::{Client, server};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceCandidateInit,
    RTCPeerConnectionIceEvent, RTCSessionDescription,
};

/// Bound on each whole test; ICE on loopback takes well under a second.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What a test peer reports to the test body.
enum Note {
    /// A DataChannel to `remote` is open and can send.
    Open {
        remote: String,
        dc: Arc<dyn DataChannel>,
    },
    /// A text message arrived on the DataChannel from `remote`.
    Text { remote: String, text: String },
}

/// Counts what went through the server, to prove candidates were trickled.
#[derive(Debug, Default)]
struct Counts {
    candidates_sent: AtomicUsize,
    candidates_received: AtomicUsize,
    candidates_early: AtomicUsize,
}

struct Handler {
    remote: String,
    /// Messages for the signaling server.
    sig: mpsc::Sender<Value>,
    notes: mpsc::Sender<Note>,
    counts: Arc<Counts>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        let init = event.candidate.to_json().expect("candidate serializes");
        self.counts.candidates_sent.fetch_add(1, Ordering::Relaxed);
        let msg = json!({"type": "candidate", "to": self.remote, "candidate": init});
        let _ = self.sig.send(msg).await;
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        watch_channel(self.remote.clone(), dc, self.notes.clone());
    }
}

/// Forward a DataChannel's open and messages as notes.
fn watch_channel(remote: String, dc: Arc<dyn DataChannel>, notes: mpsc::Sender<Note>) {
    tokio::spawn(async move {
        while let Some(event) = dc.poll().await {
            match event {
                DataChannelEvent::OnOpen => {
                    let _ = notes
                        .send(Note::Open {
                            remote: remote.clone(),
                            dc: dc.clone(),
                        })
                        .await;
                }
                DataChannelEvent::OnMessage(msg) => {
                    let text = String::from_utf8_lossy(&msg.data).into_owned();
                    let _ = notes
                        .send(Note::Text {
                            remote: remote.clone(),
                            text,
                        })
                        .await;
                }
                DataChannelEvent::OnClose => break,
                _ => {}
            }
        }
    });
}

struct Link {
    pc: Arc<dyn PeerConnection>,
    remote_set: bool,
}

/// One test peer: a signaling connection plus one RTCPeerConnection per remote peer.
struct RtcPeer {
    id: String,
    notes: mpsc::Receiver<Note>,
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl RtcPeer {
    async fn join(addr: std::net::SocketAddr, room: &str, id: &str) -> RtcPeer {
        RtcPeer::join_ignoring(addr, room, id, &[]).await
    }

    /// [`RtcPeer::join`], offering to no peer of `ignore` (plain signaling clients in
    /// the room that speak no WebRTC).
    async fn join_ignoring(
        addr: std::net::SocketAddr,
        room: &str,
        id: &str,
        ignore: &[&str],
    ) -> RtcPeer {
        let (client, welcome) = Client::join_with(addr, room, json!({"peer": id})).await;
        assert_eq!(
            welcome["ice_servers"],
            json!([]),
            "no STUN: host candidates on loopback only"
        );
        let (notes_tx, notes) = mpsc::channel(64);
        let counts = Arc::new(Counts::default());
        let ignore = ignore.iter().map(|p| p.to_string()).collect();
        let task = tokio::spawn(run_peer(client, welcome, ignore, notes_tx, counts.clone()));
        RtcPeer {
            id: id.to_owned(),
            notes,
            counts,
            task,
        }
    }

    async fn note(&mut self) -> Note {
        tokio::time::timeout(Duration::from_secs(20), self.notes.recv())
            .await
            .unwrap_or_else(|_| panic!("{}: no WebRTC progress in 20 s", self.id))
            .expect("peer task alive")
    }
}

async fn new_link(
    remote: &str,
    sig: &mpsc::Sender<Value>,
    notes: &mpsc::Sender<Note>,
    counts: &Arc<Counts>,
) -> Link {
    let handler = Arc::new(Handler {
        remote: remote.to_owned(),
        sig: sig.clone(),
        notes: notes.clone(),
        counts: counts.clone(),
    });
    // Bind loopback explicitly: webrtc-rs skips loopback interfaces when given a
    // wildcard address. No ICE servers: host candidates only.
    let pc = PeerConnectionBuilder::new()
        .with_handler(handler)
        .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
        .build()
        .await
        .expect("peer connection builds");
    Link {
        pc: Arc::new(pc),
        remote_set: false,
    }
}

/// The signaling loop of one test peer; it offers to every peer of the welcome
/// roster but those in `ignore`.
async fn run_peer(
    mut client: Client,
    welcome: Value,
    ignore: Vec<String>,
    notes: mpsc::Sender<Note>,
    counts: Arc<Counts>,
) {
    let (sig_tx, mut sig_rx) = mpsc::channel::<Value>(256);
    let mut links: HashMap<String, Link> = HashMap::new();
    // Candidates that came before the remote description.
    let mut early: HashMap<String, Vec<RTCIceCandidateInit>> = HashMap::new();

    for p in welcome["peers"].as_array().unwrap() {
        let remote = p["peer"].as_str().unwrap().to_owned();
        assert_eq!(p["polite"], true, "the newcomer is the polite side");
        if ignore.contains(&remote) {
            continue;
        }
        let link = new_link(&remote, &sig_tx, &notes, &counts).await;
        let dc = link.pc.create_data_channel("chat", None).await.unwrap();
        watch_channel(remote.clone(), dc, notes.clone());
        let offer = link.pc.create_offer(None).await.unwrap();
        link.pc.set_local_description(offer.clone()).await.unwrap();
        assert!(
            !offer.sdp.contains("a=candidate"),
            "candidates are trickled, not in the SDP"
        );
        sig_tx
            .send(json!({"type": "offer", "to": remote, "sdp": offer}))
            .await
            .unwrap();
        links.insert(remote, link);
    }

    loop {
        let msg = tokio::select! {
            out = sig_rx.recv() => {
                let Some(out) = out else { return };
                client.send(out).await;
                continue;
            }
            frame = client.ws.next() => match frame {
                Some(Ok(Message::Text(t))) => serde_json::from_str::<Value>(t.as_str()).unwrap(),
                Some(Ok(Message::Close(_))) | None => return,
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("signaling socket failed: {e}"),
            }
        };
        let from = msg["from"].as_str().unwrap_or_default().to_owned();
        match msg["type"].as_str().unwrap() {
            "offer" => {
                let sdp: RTCSessionDescription =
                    serde_json::from_value(msg["sdp"].clone()).unwrap();
                let mut link = new_link(&from, &sig_tx, &notes, &counts).await;
                link.pc.set_remote_description(sdp).await.unwrap();
                link.remote_set = true;
                for c in early.remove(&from).unwrap_or_default() {
                    link.pc.add_ice_candidate(c).await.unwrap();
                }
                let answer = link.pc.create_answer(None).await.unwrap();
                link.pc.set_local_description(answer.clone()).await.unwrap();
                sig_tx
                    .send(json!({"type": "answer", "to": from, "sdp": answer}))
                    .await
                    .unwrap();
                links.insert(from, link);
            }
            "answer" => {
                let sdp: RTCSessionDescription =
                    serde_json::from_value(msg["sdp"].clone()).unwrap();
                let link = links.get_mut(&from).expect("answer to our offer");
                link.pc.set_remote_description(sdp).await.unwrap();
                link.remote_set = true;
                for c in early.remove(&from).unwrap_or_default() {
                    link.pc.add_ice_candidate(c).await.unwrap();
                }
            }
            "candidate" => {
                counts.candidates_received.fetch_add(1, Ordering::Relaxed);
                let c: RTCIceCandidateInit =
                    serde_json::from_value(msg["candidate"].clone()).unwrap();
                match links.get(&from) {
                    Some(link) if link.remote_set => link.pc.add_ice_candidate(c).await.unwrap(),
                    _ => {
                        counts.candidates_early.fetch_add(1, Ordering::Relaxed);
                        early.entry(from).or_default().push(c);
                    }
                }
            }
            "peer-joined" | "peer-left" | "pong" => {}
            other => panic!("unexpected signaling message {other}: {msg}"),
        }
    }
}

/// Wait until `peer` has open channels to all of `remotes`; returns them.
async fn open_channels(
    peer: &mut RtcPeer,
    remotes: &[&str],
) -> HashMap<String, Arc<dyn DataChannel>> {
    let mut open = HashMap::new();
    while open.len() < remotes.len() {
        match peer.note().await {
            Note::Open { remote, dc } => {
                assert!(
                    remotes.contains(&remote.as_str()),
                    "{}: unexpected channel to {remote}",
                    peer.id
                );
                open.insert(remote, dc);
            }
            Note::Text { remote, text } => panic!(
                "{}: message from {remote} before all channels opened: {text}",
                peer.id
            ),
        }
    }
    open
}

/// Collect `n` DataChannel messages.
async fn texts(peer: &mut RtcPeer, n: usize) -> Vec<(String, String)> {
    let mut got = Vec::new();
    while got.len() < n {
        if let Note::Text { remote, text } = peer.note().await {
            got.push((remote, text));
        }
    }
    got.sort();
    got
}

/// alice and bob open data channels to each other and say hello both ways; both
/// sent and received trickled candidates (through the server).
async fn hello_both_ways(alice: &mut RtcPeer, bob: &mut RtcPeer) {
    let a = open_channels(alice, &["bob"]).await;
    let b = open_channels(bob, &["alice"]).await;
    a["bob"].send_text("hello bob, from alice").await.unwrap();
    b["alice"].send_text("hello alice, from bob").await.unwrap();
    assert_eq!(
        texts(bob, 1).await,
        [("alice".to_owned(), "hello bob, from alice".to_owned())]
    );
    assert_eq!(
        texts(alice, 1).await,
        [("bob".to_owned(), "hello alice, from bob".to_owned())]
    );

    // The candidates really went through the server, trickled.
    for p in [&*alice, &*bob] {
        assert!(
            p.counts.candidates_sent.load(Ordering::Relaxed) >= 1,
            "{} sent no candidate",
            p.id
        );
        assert!(
            p.counts.candidates_received.load(Ordering::Relaxed) >= 1,
            "{} got no candidate",
            p.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_webrtc_peers_open_a_data_channel_through_the_server() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let srv = server(|_| {}).await;
        let addr = srv.http_addr().unwrap();
        let mut alice = RtcPeer::join(addr, "call", "alice").await;
        let mut bob = RtcPeer::join(addr, "call", "bob").await;

        hello_both_ways(&mut alice, &mut bob).await;
        alice.task.abort();
        bob.task.abort();
        srv.shutdown().await;
    })
    .await
    .expect("test finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_peer_mesh() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let srv = server(|_| {}).await;
        let addr = srv.http_addr().unwrap();
        let names = ["p1", "p2", "p3"];
        let mut peers = Vec::new();
        for name in names {
            peers.push(RtcPeer::join(addr, "mesh", name).await);
        }
        let mut channels = Vec::new();
        for peer in &mut peers {
            let others: Vec<&str> = names.iter().copied().filter(|n| *n != peer.id).collect();
            channels.push(open_channels(peer, &others).await);
        }
        for (i, chans) in channels.iter().enumerate() {
            for (remote, dc) in chans {
                dc.send_text(&format!("{} to {remote}", names[i]))
                    .await
                    .unwrap();
            }
        }
        for peer in &mut peers {
            let got = texts(peer, 2).await;
            let want: Vec<(String, String)> = names
                .iter()
                .filter(|n| **n != peer.id)
                .map(|n| (n.to_string(), format!("{n} to {}", peer.id)))
                .collect();
            assert_eq!(got, want, "{}", peer.id);
        }
        for p in &peers {
            p.task.abort();
        }
        srv.shutdown().await;
    })
    .await
    .expect("test finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_webrtc_peers_on_different_nodes_negotiate_a_data_channel_through_the_cluster() {
    let _serial = SERIAL.lock().await;
    let mut cl = Cluster::start_with("webrtc", 10_000, &[]).await;
    tokio::time::timeout(TEST_TIMEOUT, async {
        // A plain client joins first, on A: A is the room's home, so every signaling
        // message between alice (on B) and bob (on C) crosses two links.
        let _host = Client::join(cl.a.http, "call", "host").await;
        let mut alice = RtcPeer::join_ignoring(cl.b.http, "call", "alice", &["host"]).await;
        let mut bob = RtcPeer::join_ignoring(cl.c.http, "call", "bob", &["host"]).await;

        hello_both_ways(&mut alice, &mut bob).await;

        // The room is homed on A, with each peer on its own node.
        let rooms = common::cluster::json(cl.a.http, "/api/rooms").await;
        let entry = rooms["rooms"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["room"] == "call"))
            .unwrap_or_else(|| panic!("A lists the room: {rooms}"));
        assert_eq!(entry["home"], cl.a.id.as_str(), "{entry}");
        let nodes: Vec<(&str, &str)> = entry["nodes"]
            .as_array()
            .unwrap_or_else(|| panic!("nodes: {entry}"))
            .iter()
            .map(|n| (n["peer"].as_str().unwrap(), n["node"].as_str().unwrap()))
            .collect();
        assert_eq!(
            nodes,
            [
                ("host", cl.a.id.as_str()),
                ("alice", cl.b.id.as_str()),
                ("bob", cl.c.id.as_str()),
            ],
            "{entry}"
        );
        alice.task.abort();
        bob.task.abort();
    })
    .await
    .expect("test finishes in time");
    cl.stop().await;
}
