//! Issue 15: signaling rooms that span nodes, with real parts only — a
//! `redis-server` on a unix socket and three `wsrelay` binaries (A, B, C) per test,
//! signaling clients on different nodes of one room:
//!
//! 1. roster and presence across nodes, `from` stamped, polite flags complementary,
//!    `peer-id-taken` and `room-full` cluster-wide, `/api/rooms` on every node;
//! 2. 2,000 messages each way between peers on two edges arrive exactly once, in order;
//! 3. a dropped peer resumes on a third node with what was queued for it;
//! 4. `kill -9` of a peer's node: the others see it reconnecting, then leave, in
//!    bounded time, and no ghost remains;
//! 5. `kill -9` of the room's home node: the room continues on another node for the
//!    peers still connected, who see only the dead node's peers leave;
//! 6. Redis `SIGSTOP` for 10 s, then a restart empty: rooms keep relaying, a join that
//!    needs Redis gets `cluster-unavailable` (1013), and afterwards the room is one room;
//! 7. bad input through a link closes only its sender, and links cannot be forged;
//! 8. links do not count against the home's `max_connections_per_ip`;
//! 9. a frozen node (`SIGSTOP`) is found dead when its registration lapses;
//! 10. a home that shuts down (SIGTERM) hands its rooms over, in one move;
//! 11. first joins racing on one node share one lease (none is lost later).

mod common;
mod signal_client;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, Node, Redis, SECOND, SERIAL, json, signal};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use signal_client::{Client, Closed};
use tokio_tungstenite::tungstenite::Message;

/// Grace periods short enough for the failure tests to finish quickly.
const RESUME_GRACE_MS: u64 = 4_000;

fn settings(extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--set".to_owned(),
        format!("signal.resume_grace_ms={RESUME_GRACE_MS}"),
    ];
    for s in extra {
        args.push("--set".into());
        args.push((*s).to_owned());
    }
    args
}

async fn start(test: &str, extra: &[&str]) -> Cluster {
    Cluster::start_with(&format!("signal-{test}"), 10_000, &settings(extra)).await
}

async fn join(node: &Node, room: &str, peer: &str) -> (Client, Value) {
    Client::join_with(node.http, room, json!({ "peer": peer })).await
}

/// Reads until a message of `ty` (skipping others, which are returned too).
async fn until(c: &mut Client, ty: &str) -> (Value, Vec<Value>) {
    let mut skipped = Vec::new();
    loop {
        let v = c.recv().await;
        if v["type"] == ty {
            return (v, skipped);
        }
        skipped.push(v);
    }
}

/// The room's entry in `/api/rooms` on `addr`.
async fn room_entry(addr: SocketAddr, room: &str) -> Option<Value> {
    let v = json(addr, "/api/rooms").await;
    v["rooms"]
        .as_array()?
        .iter()
        .find(|r| r["room"] == room)
        .cloned()
}

/// `peer → node id` of a room entry.
fn nodes_of(entry: &Value) -> Vec<(String, Value)> {
    entry["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| {
                    (
                        n["peer"].as_str().unwrap_or("").to_owned(),
                        n["node"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_spans_nodes_with_every_rule_of_protocol_v1() {
    let _serial = SERIAL.lock().await;
    let mut cl = start(
        "roster",
        &[
            "signal.max_peers_per_room=3",
            "admin_token=cluster-admin-token",
        ],
    )
    .await;
    let room = "call";
    // alice joins first, on A: A is the room's home.
    let (mut alice, w) = join(&cl.a, room, "alice").await;
    assert_eq!(w["peers"], json!([]), "{w}");
    let (mut bob, w) = join(&cl.b, room, "bob").await;
    assert_eq!(
        w["peers"],
        json!([{"peer": "alice", "polite": true, "reconnecting": false}]),
        "bob on B sees alice on A: {w}"
    );
    let j = alice.expect("peer-joined").await;
    assert_eq!(
        j,
        json!({"type": "peer-joined", "peer": "bob", "polite": false})
    );
    let (mut carol, w) = Client::join_with(
        cl.c.http,
        room,
        json!({"peer": "carol", "meta": {"name": "Carol"}}),
    )
    .await;
    let peers: Vec<(&str, bool)> = w["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["peer"].as_str().unwrap(), p["polite"].as_bool().unwrap()))
        .collect();
    assert_eq!(peers, [("alice", true), ("bob", true)], "{w}");
    for c in [&mut alice, &mut bob] {
        let j = c.expect("peer-joined").await;
        assert_eq!(
            j,
            json!({"type": "peer-joined", "peer": "carol", "meta": {"name": "Carol"}, "polite": false})
        );
    }

    // Relays by id between every pair of nodes, `from` stamped by the home.
    bob.send(json!({"type": "offer", "to": "carol", "sdp": {"type": "offer", "sdp": "v=0 b"}}))
        .await;
    let o = carol.expect("offer").await;
    assert_eq!(
        o,
        json!({"type": "offer", "from": "bob", "sdp": {"type": "offer", "sdp": "v=0 b"}})
    );
    carol
        .send(json!({"type": "answer", "to": "bob", "sdp": {"type": "answer", "sdp": "v=0 c"}}))
        .await;
    assert_eq!(bob.expect("answer").await["from"], "carol");
    carol
        .send(json!({"type": "candidate", "to": "alice", "from": "bob", "candidate": null}))
        .await;
    let cand = alice.expect("candidate").await;
    assert_eq!(
        cand,
        json!({"type": "candidate", "from": "carol", "candidate": null}),
        "a client's own `from` is ignored"
    );
    alice
        .send(json!({"type": "message", "data": "hi all"}))
        .await;
    for c in [&mut bob, &mut carol] {
        assert_eq!(
            c.expect("message").await,
            json!({"type": "message", "from": "alice", "data": "hi all"})
        );
    }
    bob.send(json!({"type": "message", "to": "nobody", "data": 1, "id": 7}))
        .await;
    let e = bob.expect_error("unknown-peer").await;
    assert_eq!(
        e["id"], 7,
        "errors come back through the link with the id: {e}"
    );

    // Limits hold cluster-wide: the id is taken on every node; the room is full.
    let mut dave = Client::connect(cl.b.http, room).await;
    dave.send(json!({"type": "join", "peer": "alice"})).await;
    dave.expect_error("peer-id-taken").await;
    dave.send(json!({"type": "join", "peer": "dave"})).await;
    dave.expect_error("room-full").await;
    assert_eq!(
        dave.expect_close().await,
        Closed::Frame(4013, "room full".into())
    );

    // `/api/rooms` on every node: one room, homed on A, each peer with its node.
    for node in [&cl.a, &cl.b, &cl.c] {
        let entry = room_entry(node.http, room)
            .await
            .unwrap_or_else(|| panic!("{} lists the room", node.label));
        assert_eq!(entry["home"], cl.a.id.as_str(), "{entry}");
        assert_eq!(
            entry["peer_ids"],
            json!(["alice", "bob", "carol"]),
            "{entry}"
        );
        assert_eq!(
            nodes_of(&entry),
            [
                ("alice".to_owned(), json!(cl.a.id)),
                ("bob".to_owned(), json!(cl.b.id)),
                ("carol".to_owned(), json!(cl.c.id)),
            ],
            "on {}: {entry}",
            node.label
        );
    }

    // The room's detail (admin) on a node the room does not live on.
    let auth = "Authorization: Bearer cluster-admin-token\r\n";
    let (status, body) = signal_client::http(cl.c.http, "GET", "/api/rooms/call", auth).await;
    assert_eq!(status, 200, "{body}");
    let detail: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(detail["home"], cl.a.id.as_str(), "{detail}");
    assert_eq!(detail["peers"], 3, "{detail}");
    let (status, _) = signal_client::http(cl.c.http, "GET", "/api/rooms/call", "").await;
    assert_eq!(
        status, 401,
        "the detail needs the admin token on every node"
    );

    // leave: the others hear it at once, wherever they are.
    carol.send(json!({"type": "leave"})).await;
    assert_eq!(
        carol.expect_close().await,
        Closed::Frame(1000, "left".into())
    );
    for c in [&mut alice, &mut bob] {
        let l = c.expect("peer-left").await;
        assert_eq!(
            l,
            json!({"type": "peer-left", "peer": "carol", "reason": "leave"})
        );
    }
    let frames = metric_sum(cl.b.http, "wsrelay_signal_cluster_frames_total").await;
    assert!(frames >= 6.0, "B counted the frames it relayed: {frames}");
    cl.stop().await;
}

/// alice joins on A (the room's home), bob on B; alice has heard of bob.
async fn alice_on_a_bob_on_b(cl: &Cluster, room: &str) -> (Client, Client) {
    let (mut alice, _) = join(&cl.a, room, "alice").await;
    let (bob, _) = join(&cl.b, room, "bob").await;
    alice.expect("peer-joined").await;
    (alice, bob)
}

/// After A went away, its room moved once: neither B nor C lost the room's lease
/// to the other afterwards.
async fn assert_moved_once(cl: &Cluster) {
    for node in [&cl.b, &cl.c] {
        let lost = metric_sum(node.http, "wsrelay_cluster_leases_lost_total").await;
        assert_eq!(
            lost, 0.0,
            "{} lost a lease: the room moved twice",
            node.label
        );
    }
}

/// The sum of a metric's samples on a node.
async fn metric_sum(addr: SocketAddr, name: &str) -> f64 {
    let text = common::http_get(addr, "/metrics").await.unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l.as_bytes().get(name.len()) == Some(&b' ')
                    || l.as_bytes().get(name.len()) == Some(&b'{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sends `n` messages to `to`, numbered, and reads `n` from `from`, concurrently;
/// returns the numbers received from `from`, in arrival order.
async fn exchange(c: Client, to: &str, from: &str, n: u64) -> Vec<u64> {
    let (mut tx, mut rx) = c.ws.split();
    let to = to.to_owned();
    let sender = tokio::spawn(async move {
        for i in 0..n {
            let m = json!({"type": "message", "to": to, "data": {"n": i}});
            tx.send(Message::text(m.to_string())).await.expect("send");
        }
        tx
    });
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + 30 * SECOND;
    while (got.len() as u64) < n {
        let frame = tokio::time::timeout_at(deadline, rx.next())
            .await
            .unwrap_or_else(|_| panic!("{} of {n} messages after 30 s", got.len()));
        let Some(Ok(Message::Text(t))) = frame else {
            continue;
        };
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        assert_eq!(v["type"], "message", "{v}");
        assert_eq!(v["from"], from, "{v}");
        got.push(v["data"]["n"].as_u64().unwrap());
    }
    let _ = sender.await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_messages_each_way_between_edges_arrive_once_in_order() {
    let _serial = SERIAL.lock().await;
    let mut cl = start(
        "order",
        &["signal.rate_per_second=100000", "signal.rate_burst=100000"],
    )
    .await;
    let room = "bulk";
    // The home is A; the two talkers are on B and C: every message crosses two links.
    let (_host, _) = join(&cl.a, room, "host").await;
    let (mut alice, _) = join(&cl.b, room, "alice").await;
    let (bob, _) = join(&cl.c, room, "bob").await;
    // alice hears of bob before the flood starts.
    alice.expect("peer-joined").await;
    let n = 2_000;
    let t = Instant::now();
    let (a, b) = tokio::join!(
        exchange(alice, "bob", "bob", n),
        exchange(bob, "alice", "alice", n)
    );
    let want: Vec<u64> = (0..n).collect();
    assert_eq!(a, want, "alice got bob's messages exactly once, in order");
    assert_eq!(b, want, "bob got alice's messages exactly once, in order");
    println!(
        "{} messages each way across two links in {:?}",
        n,
        t.elapsed()
    );
    cl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_peer_resumes_on_a_third_node_with_its_queue() {
    let _serial = SERIAL.lock().await;
    let mut cl = start("resume", &[]).await;
    let room = "resume";
    let (mut alice, bob) = alice_on_a_bob_on_b(&cl, room).await;
    let session = bob.session.clone();
    // bob's socket drops without a close (the page lost its network).
    drop(bob);
    let r = alice.expect("peer-reconnecting").await;
    assert_eq!(r["peer"], "bob");
    for i in 0..3 {
        alice
            .send(json!({"type": "message", "to": "bob", "data": i}))
            .await;
    }
    // A forged session is no session: bob's id stays taken.
    let mut thief = Client::connect(cl.c.http, room).await;
    thief
        .send(json!({"type": "join", "peer": "bob", "resume": "Zm9yZ2Vk"}))
        .await;
    thief.expect_error("peer-id-taken").await;
    // A session of another room resumes nothing there.
    let (other, w) = Client::join_with(cl.c.http, "elsewhere", json!({"resume": session})).await;
    assert_eq!(w["resumed"], false, "{w}");
    drop(other);
    // bob comes back on C, a node he was never on.
    let (mut bob, w) = Client::join_with(cl.c.http, room, json!({"resume": session})).await;
    assert_eq!(w["resumed"], true, "{w}");
    assert_eq!(w["peer"], "bob");
    for i in 0..3 {
        let m = bob.expect("message").await;
        assert_eq!(m, json!({"type": "message", "from": "alice", "data": i}));
    }
    assert_eq!(alice.expect("peer-resumed").await["peer"], "bob");
    bob.send(json!({"type": "message", "to": "alice", "data": "back"}))
        .await;
    assert_eq!(alice.expect("message").await["data"], "back");
    let entry = room_entry(cl.a.http, room).await.unwrap();
    assert_eq!(
        nodes_of(&entry),
        [
            ("alice".to_owned(), json!(cl.a.id)),
            ("bob".to_owned(), json!(cl.c.id))
        ],
        "{entry}"
    );
    cl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_peers_node_makes_it_leave_in_bounded_time_without_ghosts() {
    let _serial = SERIAL.lock().await;
    let mut cl = start("peerkill", &[]).await;
    let room = "k";
    let (mut alice, _) = join(&cl.a, room, "alice").await;
    let (_bob, _) = join(&cl.b, room, "bob").await;
    let (mut carol, _) = join(&cl.c, room, "carol").await;
    alice.expect("peer-joined").await;
    alice.expect("peer-joined").await;
    let t = Instant::now();
    cl.b.crash().await;
    for c in [&mut alice, &mut carol] {
        let r = c.expect("peer-reconnecting").await;
        assert_eq!(r["peer"], "bob");
    }
    let seen = t.elapsed();
    for c in [&mut alice, &mut carol] {
        let l = c.expect("peer-left").await;
        assert_eq!(
            l,
            json!({"type": "peer-left", "peer": "bob", "reason": "timeout"})
        );
    }
    let left = t.elapsed();
    println!("bob reconnecting after {seen:?}, left after {left:?}");
    assert!(
        seen < 2 * SECOND,
        "reconnecting within 2 s of the crash: {seen:?}"
    );
    assert!(
        left < Duration::from_millis(RESUME_GRACE_MS) + 3 * SECOND,
        "left within resume_grace_ms + 3 s: {left:?}"
    );
    for node in [&cl.a, &cl.c] {
        let entry = room_entry(node.http, room).await.unwrap();
        assert_eq!(
            entry["peer_ids"],
            json!(["alice", "carol"]),
            "no ghost: {entry}"
        );
    }
    // The survivors still talk.
    carol
        .send(json!({"type": "message", "to": "alice", "data": 1}))
        .await;
    assert_eq!(alice.expect("message").await["from"], "carol");
    cl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_home_node_moves_the_room_for_the_peers_still_connected() {
    let _serial = SERIAL.lock().await;
    let mut cl = start("homekill", &[]).await;
    let room = "moving";
    let (_alice, _) = join(&cl.a, room, "alice").await;
    let (mut bob, _) = join(&cl.b, room, "bob").await;
    let (mut carol, _) = join(&cl.c, room, "carol").await;
    bob.expect("peer-joined").await;
    let home = room_entry(cl.b.http, room).await.unwrap()["home"].clone();
    assert_eq!(home, json!(cl.a.id));
    let t = Instant::now();
    cl.a.crash().await;
    // A message sent right away goes through once the room has moved.
    bob.send(json!({"type": "message", "to": "carol", "data": "still there?"}))
        .await;
    let (m, before) = until(&mut carol, "message").await;
    assert_eq!(
        m,
        json!({"type": "message", "from": "bob", "data": "still there?"})
    );
    assert!(before.is_empty(), "carol saw {before:?} first");
    println!(
        "a message crossed the moved room {:?} after the home died",
        t.elapsed()
    );
    // bob and carol see alice leave, and nothing about each other.
    for c in [&mut bob, &mut carol] {
        let (l, before) = until(c, "peer-left").await;
        assert_eq!(
            l,
            json!({"type": "peer-left", "peer": "alice", "reason": "timeout"})
        );
        assert!(before.is_empty(), "{} saw {before:?} before", c.peer);
    }
    let left = t.elapsed();
    println!("alice left {left:?} after her node (the home) died");
    assert!(
        left < Duration::from_millis(RESUME_GRACE_MS) + 8 * SECOND,
        "{left:?}"
    );
    // The room lives on B or C now, with both of them, and they still talk.
    let entry = room_entry(cl.b.http, room).await.unwrap();
    assert!(
        entry["home"] == json!(cl.b.id) || entry["home"] == json!(cl.c.id),
        "{entry}"
    );
    assert_eq!(entry["peer_ids"], json!(["bob", "carol"]), "{entry}");
    for i in 0..5 {
        bob.send(json!({"type": "message", "to": "carol", "data": i}))
            .await;
        carol
            .send(json!({"type": "message", "to": "bob", "data": i}))
            .await;
    }
    for i in 0..5 {
        assert_eq!(
            carol.expect("message").await,
            json!({"type": "message", "from": "bob", "data": i})
        );
        assert_eq!(
            bob.expect("message").await,
            json!({"type": "message", "from": "carol", "data": i})
        );
    }
    // A newcomer joins the moved room and is polite towards both.
    let (mut dave, w) = join(&cl.c, room, "dave").await;
    let polite: Vec<(&str, bool)> = w["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["peer"].as_str().unwrap(), p["polite"].as_bool().unwrap()))
        .collect();
    assert_eq!(polite, [("bob", true), ("carol", true)], "{w}");
    for c in [&mut bob, &mut carol] {
        let j = c.expect("peer-joined").await;
        assert_eq!(
            j,
            json!({"type": "peer-joined", "peer": "dave", "polite": false})
        );
    }
    dave.send(json!({"type": "message", "data": "hello"})).await;
    assert_eq!(bob.expect("message").await["from"], "dave");
    let rehomes = metric_sum(cl.b.http, "wsrelay_signal_rehomes_total").await
        + metric_sum(cl.c.http, "wsrelay_signal_rehomes_total").await;
    assert!(rehomes >= 1.0, "re-homes counted: {rehomes}");
    assert_moved_once(&cl).await;
    cl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_stall_and_restart_keep_rooms_relaying_and_consistent() {
    let _serial = SERIAL.lock().await;
    let mut cl = start("redis", &[]).await;
    let room = "steady";
    let (mut alice, mut bob) = alice_on_a_bob_on_b(&cl, room).await;
    let mut next = 0u64;
    // Every message is numbered: receivers check exactly-once, in order (roster
    // news in between is skipped).
    async fn ping_pong(alice: &mut Client, bob: &mut Client, next: &mut u64) {
        for _ in 0..3 {
            alice
                .send(json!({"type": "message", "to": "bob", "data": *next}))
                .await;
            bob.send(json!({"type": "message", "to": "alice", "data": *next}))
                .await;
            assert_eq!(until(bob, "message").await.0["data"], *next);
            assert_eq!(until(alice, "message").await.0["data"], *next);
            *next += 1;
        }
    }
    ping_pong(&mut alice, &mut bob, &mut next).await;

    signal(cl.redis.pid, "STOP");
    let stalled = Instant::now();
    // Running rooms do not touch Redis: cross-node relays go on.
    ping_pong(&mut alice, &mut bob, &mut next).await;
    // A join on the home itself works without Redis.
    let (mut dave, _) = join(&cl.a, room, "dave").await;
    // A join that needs Redis to find the home gets a clear error and 1013.
    let mut carol = Client::connect(cl.c.http, room).await;
    let e = carol.recv().await;
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["code"], "cluster-unavailable", "{e}");
    assert_eq!(
        carol.expect_close().await,
        Closed::Frame(1013, "cluster unavailable, try again later".into())
    );
    let errors = metric_sum(cl.c.http, "wsrelay_signal_cluster_errors_total").await;
    assert!(errors >= 1.0, "{errors}");
    while stalled.elapsed() < 10 * SECOND {
        ping_pong(&mut alice, &mut bob, &mut next).await;
        tokio::time::sleep(SECOND).await;
    }
    signal(cl.redis.pid, "CONT");
    // The home renews (re-takes) its lease at its next heartbeat.
    tokio::time::sleep(3 * SECOND).await;
    let (mut carol, w) = join(&cl.c, room, "carol").await;
    let ids: Vec<&str> = w["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["peer"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["alice", "bob", "dave"],
        "one room after the stall: {w}"
    );
    ping_pong(&mut alice, &mut bob, &mut next).await;

    // Redis restarted empty: the home takes its lease back; the room stays one.
    cl.redis.stop("TERM").await;
    let dir = cl.redis.socket.parent().unwrap().to_owned();
    cl.redis = Redis::start(&dir).await;
    ping_pong(&mut alice, &mut bob, &mut next).await;
    cl.wait_registered(10 * SECOND).await;
    tokio::time::sleep(2 * SECOND).await;
    let (_erin, w) = join(&cl.b, room, "erin").await;
    let ids: Vec<&str> = w["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["peer"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["alice", "bob", "dave", "carol"],
        "one room after the restart: {w}"
    );
    ping_pong(&mut alice, &mut bob, &mut next).await;
    for c in [&mut dave, &mut carol] {
        c.send(json!({"type": "message", "to": "erin", "data": "hi"}))
            .await;
    }
    cl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_through_a_link_closes_only_its_sender_and_links_cannot_be_forged() {
    let _serial = SERIAL.lock().await;
    let mut cl = start("badinput", &[]).await;
    let room = "rough";
    let (mut alice, mut bob) = alice_on_a_bob_on_b(&cl, room).await;

    // Each refusal comes from the home, through C's link, with its close code.
    let mut binary = Client::join(cl.c.http, room, "bin").await;
    binary.send_raw(Message::binary(vec![1u8, 2, 3])).await;
    binary.expect_error("bad-json").await;
    assert_eq!(
        binary.expect_close().await,
        Closed::Frame(4003, "binary frames are not supported".into())
    );
    let mut big = Client::join(cl.c.http, room, "big").await;
    let data = "x".repeat(100 << 10);
    big.send(json!({"type": "message", "data": data})).await;
    big.expect_error("too-large").await;
    assert_eq!(
        big.expect_close().await,
        Closed::Frame(4009, "message too large".into())
    );
    for c in [&mut alice, &mut bob] {
        for gone in ["bin", "big"] {
            let (j, _) = until(c, "peer-left").await;
            assert_eq!(
                j,
                json!({"type": "peer-left", "peer": gone, "reason": "closed"})
            );
        }
    }

    // A client cannot speak the link's internal frames...
    let mut sly = Client::connect(cl.b.http, room).await;
    sly.send(json!({"type": "x-wsrelay-restore", "peer": "alice", "seq": 0, "session": "s", "known": []}))
        .await;
    sly.expect_error("unknown-type").await;
    // ...nor open a link without the cluster secret.
    let (status, _) = signal_client::http(
        cl.a.http,
        "GET",
        &format!("/signal/{room}"),
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nx-wsrelay-signal: 00ff.9999999999.00\r\n",
    )
    .await;
    assert_eq!(status, 401, "a forged link token is refused");

    // alice and bob never noticed.
    bob.send(json!({"type": "message", "to": "alice", "data": "still here"}))
        .await;
    assert_eq!(alice.expect("message").await["data"], "still here");
    cl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_do_not_count_against_the_per_ip_limit_of_the_home() {
    let _serial = SERIAL.lock().await;
    // Clients and nodes share 127.0.0.1 here: each node takes 5 clients, while A,
    // the home, takes 1 client and 10 links from B and C.
    let mut cl = start("perip", &["max_connections_per_ip=6"]).await;
    let room = "busy";
    let (mut host, _) = join(&cl.a, room, "host").await;
    let mut clients = Vec::new();
    for node in [&cl.b, &cl.c] {
        for i in 0..5 {
            let (c, _) = join(node, room, &format!("{}{i}", node.label)).await;
            clients.push(c);
        }
    }
    for _ in 0..10 {
        host.expect("peer-joined").await;
    }
    host.send(json!({"type": "message", "data": "all"})).await;
    for c in &mut clients {
        assert_eq!(until(c, "message").await.0["from"], "host");
    }
    cl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_is_found_dead_when_its_registration_lapses() {
    let _serial = SERIAL.lock().await;
    let mut cl = start("freeze", &[]).await;
    let room = "cold";
    let (mut alice, _bob) = alice_on_a_bob_on_b(&cl, room).await;
    // B stops answering without closing anything (a machine that vanished).
    let t = Instant::now();
    signal(cl.b.pid, "STOP");
    let r = alice.expect("peer-reconnecting").await;
    assert_eq!(r["peer"], "bob");
    let seen = t.elapsed();
    let l = alice.expect("peer-left").await;
    assert_eq!(
        l,
        json!({"type": "peer-left", "peer": "bob", "reason": "timeout"})
    );
    let left = t.elapsed();
    println!("frozen node: bob reconnecting after {seen:?}, left after {left:?}");
    // node_ttl_ms is 5 s: the home pings each link every heartbeat_ms (1 s).
    assert!(seen < 7 * SECOND, "{seen:?}");
    assert!(
        left < 7 * SECOND + Duration::from_millis(RESUME_GRACE_MS),
        "{left:?}"
    );
    signal(cl.b.pid, "CONT");
    // Whatever B does on waking, the roster alice was told matches the room's.
    tokio::time::sleep(3 * SECOND).await;
    let mut roster = vec!["alice".to_owned()];
    while let Ok(v) = alice.try_recv(Duration::from_millis(200)).await {
        match v["type"].as_str() {
            Some("peer-joined") => roster.push(v["peer"].as_str().unwrap().to_owned()),
            Some("peer-left") => roster.retain(|p| p != v["peer"].as_str().unwrap()),
            _ => {}
        }
    }
    let entry = room_entry(cl.a.http, room).await.unwrap();
    assert_eq!(entry["peer_ids"], json!(roster), "{entry}");
    cl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_that_shuts_down_hands_its_rooms_to_the_other_nodes() {
    let _serial = SERIAL.lock().await;
    let mut cl = start("homestop", &[]).await;
    let room = "handover";
    let (mut alice, _) = join(&cl.a, room, "alice").await;
    let (mut bob, _) = join(&cl.b, room, "bob").await;
    let (mut carol, _) = join(&cl.c, room, "carol").await;
    alice.expect("peer-joined").await;
    bob.expect("peer-joined").await;
    cl.a.terminate().await;
    // alice's own socket is closed as on a single node's shutdown.
    let closed = loop {
        match alice.try_recv(signal_client::WAIT).await {
            Ok(_) => continue, // roster news sent before the shutdown
            Err(e) => break e,
        }
    };
    assert_eq!(closed, Closed::Frame(1001, "server shutting down".into()));
    // bob and carol go on in a room that now lives on B or C.
    bob.send(json!({"type": "message", "to": "carol", "data": 1}))
        .await;
    let (m, before) = until(&mut carol, "message").await;
    assert_eq!(m, json!({"type": "message", "from": "bob", "data": 1}));
    assert!(before.is_empty(), "{before:?}");
    let entry = room_entry(cl.c.http, room).await.unwrap();
    assert!(
        entry["home"] == json!(cl.b.id) || entry["home"] == json!(cl.c.id),
        "{entry}"
    );
    for c in [&mut bob, &mut carol] {
        let (l, before) = until(c, "peer-left").await;
        assert_eq!(
            l,
            json!({"type": "peer-left", "peer": "alice", "reason": "timeout"})
        );
        assert!(before.is_empty(), "{} saw {before:?}", c.peer);
    }
    assert_moved_once(&cl).await;
    cl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_joins_on_one_node_share_one_lease() {
    let _serial = SERIAL.lock().await;
    let mut cl = start("racejoin", &[]).await;
    // 20 rooms, 4 peers each joining at once on A: each room's lease is taken by
    // several joins racing on A.
    let joins = (0..20).flat_map(|r| (0..4).map(move |p| (format!("race{r}"), format!("p{p}"))));
    let a = &cl.a;
    let clients: Vec<Client> = futures_util::future::join_all(
        joins.map(|(room, peer)| async move { join(a, &room, &peer).await.0 }),
    )
    .await;
    // A few heartbeats later every lease is still A's and every peer still there.
    tokio::time::sleep(3 * SECOND).await;
    let lost = metric_sum(cl.a.http, "wsrelay_cluster_leases_lost_total").await;
    assert_eq!(lost, 0.0, "A lost leases it holds");
    let rooms = json(cl.b.http, "/api/rooms").await;
    for r in 0..20 {
        let name = format!("race{r}");
        let entry = rooms["rooms"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["room"] == name.as_str()))
            .unwrap_or_else(|| panic!("{name} listed: {rooms}"));
        assert_eq!(entry["home"], cl.a.id.as_str(), "{entry}");
        assert_eq!(entry["peers"], 4, "{entry}");
    }
    drop(clients);
    cl.stop().await;
}
