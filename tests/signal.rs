//! Signaling over real sockets: tokio-tungstenite clients against the server
//! started in-process on 127.0.0.1:0.

mod signal_client;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use signal_client::{Client, Closed, http, server, upgrade_status};
use signaling::auth::issue_token;
use signaling::{Claims, Secret};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn join_relay_broadcast_ping_leave_and_api() {
    let srv = server(|_| {}).await;
    let addr = srv.http_addr().unwrap();

    let (mut a, wa) =
        Client::join_with(addr, "room1", json!({"peer": "alice", "meta": {"n": "A"}})).await;
    assert_eq!(wa["peers"], json!([]));
    assert_eq!(wa["heartbeat_ms"], 20_000);
    let (mut b, wb) = Client::join_with(addr, "room1", json!({})).await;
    assert_eq!(
        wb["peers"],
        json!([{"peer": "alice", "meta": {"n": "A"}, "polite": true, "reconnecting": false}])
    );
    let bob = b.peer.clone();
    let pj = a.expect("peer-joined").await;
    assert_eq!(
        (pj["peer"].as_str(), pj["polite"].as_bool()),
        (Some(bob.as_str()), Some(false))
    );

    // Offer / answer / candidates, `from` stamped, payloads unchanged.
    let sdp = json!({"type": "offer", "sdp": "v=0\r\no=- 46117 2 IN IP4 127.0.0.1\r\n"});
    b.send(json!({"type": "offer", "to": "alice", "from": "mallory", "sdp": sdp}))
        .await;
    let o = a.expect("offer").await;
    assert_eq!((&o["from"], &o["sdp"]), (&json!(bob), &sdp));
    a.send(json!({"type": "answer", "to": bob, "sdp": {"type": "answer", "sdp": "v=0"}}))
        .await;
    assert_eq!(b.expect("answer").await["from"], "alice");
    for i in 0..20 {
        a.send(json!({"type": "candidate", "to": bob, "candidate": {"candidate": format!("c{i}"), "sdpMid": "0"}})).await;
    }
    for i in 0..20 {
        assert_eq!(
            b.expect("candidate").await["candidate"]["candidate"],
            format!("c{i}"),
            "in order"
        );
    }

    // Broadcast to every other peer.
    let mut c = Client::join(addr, "room1", "carol").await;
    a.expect("peer-joined").await;
    b.expect("peer-joined").await;
    c.send(json!({"type": "message", "data": {"hello": [1, 2]}}))
        .await;
    for x in [&mut a, &mut b] {
        assert_eq!(
            x.expect("message").await,
            json!({"type": "message", "from": "carol", "data": {"hello": [1, 2]}})
        );
    }

    // JSON ping.
    a.send(json!({"type": "ping", "id": "p1"})).await;
    assert_eq!(a.recv().await, json!({"type": "pong", "id": "p1"}));

    // A second room is independent.
    let mut z = Client::join(addr, "room2", "alice").await;
    z.send(json!({"type": "message", "data": 1})).await;

    // /api/rooms
    let (status, body) = http(addr, "GET", "/api/rooms", "").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["connections"], 4);
    assert_eq!(v["rooms"][0]["room"], "room1");
    assert_eq!(v["rooms"][0]["peers"], 3);
    assert_eq!(v["rooms"][0]["peer_ids"], json!(["alice", bob, "carol"]));
    assert_eq!(v["rooms"][1]["room"], "room2");
    assert_eq!(v["rooms"][1]["peers"], 1);

    // Leave: others are told, the leaver gets a normal close.
    c.send(json!({"type": "leave"})).await;
    assert_eq!(c.expect_close().await, Closed::Frame(1000, "left".into()));
    for x in [&mut a, &mut b] {
        assert_eq!(
            x.recv().await,
            json!({"type": "peer-left", "peer": "carol", "reason": "leave"})
        );
    }
    assert!(
        z.silent(Duration::from_millis(200)).await,
        "room2 saw nothing of room1"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn bad_urls_and_limits() {
    let srv = server(|c| {
        c.signal.max_rooms = 2;
        c.signal.max_connections = 3;
    })
    .await;
    let addr = srv.http_addr().unwrap();
    assert_eq!(upgrade_status(addr, "/signal/bad%20name").await, 400);
    assert_eq!(upgrade_status(addr, "/signal/").await, 400);
    assert_eq!(
        upgrade_status(addr, &format!("/signal/{}", "x".repeat(65))).await,
        400
    );
    assert_eq!(upgrade_status(addr, "/signal/a/b").await, 400);
    assert_eq!(
        http(addr, "GET", "/signal/ok", "").await.0,
        426,
        "plain GET needs an upgrade"
    );
    assert_eq!(
        http(addr, "POST", "/api/rooms", "Content-Length: 0\r\n")
            .await
            .0,
        405
    );

    let _a = Client::join(addr, "r1", "a").await;
    let _b = Client::join(addr, "r2", "b").await;
    assert_eq!(upgrade_status(addr, "/signal/r3").await, 503, "max_rooms");
    let _c = Client::join(addr, "r2", "c").await;
    assert_eq!(
        upgrade_status(addr, "/signal/r1").await,
        503,
        "max_connections"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn errors_over_the_wire() {
    let srv = server(|_| {}).await;
    let addr = srv.http_addr().unwrap();
    let mut x = Client::connect(addr, "errs").await;
    x.send_raw(Message::text("{oops")).await;
    x.expect_error("bad-json").await;
    x.send(json!({"type": "wave", "id": 9})).await;
    assert_eq!(x.expect_error("unknown-type").await["id"], 9);
    x.send(json!({"type": "offer", "to": "b", "sdp": ""})).await;
    x.expect_error("not-joined").await;
    x.send(json!({"type": "join", "peer": "a"})).await;
    x.expect("welcome").await;
    x.send(json!({"type": "candidate", "candidate": null}))
        .await;
    x.expect_error("missing-field").await;
    x.send(json!({"type": "answer", "to": "nobody", "sdp": "", "id": "q"}))
        .await;
    assert_eq!(x.expect_error("unknown-peer").await["id"], "q");
    let mut y = Client::connect(addr, "errs").await;
    y.send(json!({"type": "join", "peer": "a"})).await;
    y.expect_error("peer-id-taken").await;
    // Binary frames break the protocol: error, then close 4003.
    y.send_raw(Message::binary(vec![1, 2, 3])).await;
    y.expect_error("bad-json").await;
    assert_eq!(
        y.expect_close().await,
        Closed::Frame(4003, "binary frames are not supported".into())
    );
    // Text that is not UTF-8: error, then close 4007.
    let mut z = Client::join(addr, "errs", "z").await;
    use tokio_tungstenite::tungstenite::protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    };
    let bad = Frame::message(vec![b'"', 0xff, 0xfe, b'"'], OpCode::Data(Data::Text), true);
    z.send_raw(Message::Frame(bad)).await;
    z.expect_error("bad-json").await;
    assert_eq!(
        z.expect_close().await,
        Closed::Frame(4007, "text is not UTF-8".into())
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn resume_with_queued_messages_and_grace_expiry() {
    let srv = server(|c| c.signal.resume_grace_ms = 1_500).await;
    let addr = srv.http_addr().unwrap();
    let mut a = Client::join(addr, "res", "a").await;
    let b = Client::join(addr, "res", "b").await;
    a.expect("peer-joined").await;
    let session = b.session.clone();
    // Drop the TCP connection without a close frame or `leave`.
    drop(b);
    assert_eq!(
        a.recv().await,
        json!({"type": "peer-reconnecting", "peer": "b"})
    );
    for i in 0..10 {
        a.send(json!({"type": "message", "to": "b", "data": i}))
            .await;
    }
    let (mut b2, w) = Client::join_with(addr, "res", json!({"resume": session})).await;
    assert_eq!(
        (w["peer"].as_str(), w["resumed"].as_bool()),
        (Some("b"), Some(true))
    );
    for i in 0..10 {
        assert_eq!(b2.expect("message").await["data"], i);
    }
    assert_eq!(a.recv().await, json!({"type": "peer-resumed", "peer": "b"}));

    // Now let the grace period run out.
    drop(b2);
    a.expect("peer-reconnecting").await;
    let t = std::time::Instant::now();
    assert_eq!(
        a.recv().await,
        json!({"type": "peer-left", "peer": "b", "reason": "timeout"})
    );
    assert!(
        t.elapsed() >= Duration::from_millis(1_300),
        "{:?}",
        t.elapsed()
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn one_mib_message_closes_only_its_sender() {
    let srv = server(|_| {}).await;
    let addr = srv.http_addr().unwrap();
    let mut big = Client::join(addr, "big", "big").await;
    let mut a = Client::join(addr, "big", "a").await;
    big.expect("peer-joined").await;
    let mut other1 = Client::join(addr, "calm", "o1").await;
    let mut other2 = Client::join(addr, "calm", "o2").await;
    other1.expect("peer-joined").await;

    let payload = "x".repeat(1 << 20);
    big.send(json!({"type": "message", "to": "a", "data": payload}))
        .await;
    let e = big.expect_error("too-large").await;
    assert!(e["message"].as_str().unwrap().contains("65536"), "{e}");
    assert_eq!(
        big.expect_close().await,
        Closed::Frame(4009, "message too large".into())
    );
    assert_eq!(
        a.recv().await,
        json!({"type": "peer-left", "peer": "big", "reason": "closed"})
    );

    // Everyone else carries on.
    other1
        .send(json!({"type": "message", "to": "o2", "data": "fine"}))
        .await;
    assert_eq!(other2.expect("message").await["data"], "fine");
    let mut b = Client::join(addr, "big", "b").await;
    a.expect("peer-joined").await;
    b.send(json!({"type": "message", "to": "a", "data": "hi"}))
        .await;
    assert_eq!(a.expect("message").await["data"], "hi");
    srv.shutdown().await;
}

#[tokio::test]
async fn flood_closes_the_flooder_only() {
    let srv = server(|_| {}).await;
    let addr = srv.http_addr().unwrap();
    let cfg = signaling::Config::default();
    let flooder = Client::join(addr, "fl", "flooder").await;
    let mut a = Client::join(addr, "fl", "a").await;
    let mut b = Client::join(addr, "fl", "b").await;
    a.expect("peer-joined").await;
    let mut o1 = Client::join(addr, "quiet", "o1").await;
    let mut o2 = Client::join(addr, "quiet", "o2").await;
    o1.expect("peer-joined").await;

    // Send far more than burst + flood limit, as fast as possible, without reading.
    let n = 2_000;
    let (mut sink, mut stream) = flooder.ws.split();
    let writer = tokio::spawn(async move {
        use futures_util::SinkExt;
        for i in 0..n {
            let m = json!({"type": "message", "to": "a", "data": i}).to_string();
            if sink.feed(Message::text(m)).await.is_err() {
                return i;
            }
        }
        let _ = sink.flush().await;
        n
    });
    let mut errors = 0;
    let close = loop {
        match tokio::time::timeout(signal_client::WAIT, stream.next())
            .await
            .expect("flooder hears back")
        {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "error" {
                    assert_eq!(v["code"], "rate-limited", "{v}");
                    errors += 1;
                }
            }
            Some(Ok(Message::Close(f))) => break f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("flooder stream failed before the close frame: {e}"),
            None => panic!("flooder stream ended without a close frame"),
        }
    };
    assert_eq!(close, Some(4029));
    assert_eq!(
        errors,
        cfg.flood_limit + 1,
        "an error per rate-limited message up to the flood limit"
    );
    let _ = writer.await;

    // `a` got exactly the burst that passed (join took one token), in order, then the leave.
    let mut got = 0u64;
    loop {
        let v = a.recv().await;
        if v["type"] == "peer-left" {
            assert_eq!(
                v,
                json!({"type": "peer-left", "peer": "flooder", "reason": "closed"})
            );
            break;
        }
        assert_eq!(v["data"], got);
        got += 1;
    }
    assert!(got >= u64::from(cfg.rate_burst) - 1, "{got}");
    assert_eq!(b.recv().await["type"], "peer-left");
    // Others in the same room and in another room are unaffected.
    a.send(json!({"type": "message", "to": "b", "data": "ok"}))
        .await;
    assert_eq!(b.expect("message").await["data"], "ok");
    o1.send(json!({"type": "message", "to": "o2", "data": "ok"}))
        .await;
    assert_eq!(o2.expect("message").await["data"], "ok");
    srv.shutdown().await;
}

#[tokio::test]
async fn jwt_auth_over_the_wire() {
    let secret = Secret::new("test-secret");
    let s2 = secret.clone();
    let srv = server(move |c| c.signal.jwt_secret = Some(s2)).await;
    let addr = srv.http_addr().unwrap();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let good = issue_token(
        &secret,
        &Claims {
            room: "sec".into(),
            peer: Some("alice".into()),
            exp,
        },
    );
    let (_a, w) = Client::join_with(addr, "sec", json!({"token": good})).await;
    assert_eq!(w["peer"], "alice");

    for token in [
        issue_token(
            &secret,
            &Claims {
                room: "other".into(),
                peer: None,
                exp,
            },
        ),
        issue_token(
            &secret,
            &Claims {
                room: "sec".into(),
                peer: None,
                exp: exp - 3_600,
            },
        ),
        issue_token(
            &Secret::new("forged"),
            &Claims {
                room: "sec".into(),
                peer: None,
                exp,
            },
        ),
    ] {
        let mut x = Client::connect(addr, "sec").await;
        x.send(json!({"type": "join", "token": token})).await;
        x.expect_error("unauthorized").await;
        assert_eq!(
            x.expect_close().await,
            Closed::Frame(4001, "unauthorized".into())
        );
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn dead_clients_are_closed_by_heartbeat() {
    let srv = server(|c| {
        c.signal.heartbeat_interval_ms = 100;
        c.signal.idle_timeout_ms = 400;
    })
    .await;
    let addr = srv.http_addr().unwrap();
    let mut a = Client::join(addr, "hb", "a").await;
    let mut dead = Client::join(addr, "hb", "dead").await;
    a.expect("peer-joined").await;
    // `a` keeps reading (tungstenite answers pings while reading); `dead` does not.
    let t = std::time::Instant::now();
    assert_eq!(
        a.recv().await,
        json!({"type": "peer-reconnecting", "peer": "dead"})
    );
    assert!(
        t.elapsed() >= Duration::from_millis(350),
        "{:?}",
        t.elapsed()
    );
    let more = a.try_recv(Duration::from_millis(600)).await;
    assert_eq!(
        more,
        Err(Closed::Eof("timeout".into())),
        "a, which answers pings, stays"
    );
    let end = dead.expect_close().await;
    assert_eq!(end, Closed::Frame(4005, "idle timeout".into()));
    srv.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_with_1001() {
    let srv = server(|_| {}).await;
    let addr = srv.http_addr().unwrap();
    let mut a = Client::join(addr, "sd", "a").await;
    let mut b = Client::connect(addr, "sd").await;
    let t = std::time::Instant::now();
    let stop = tokio::spawn(srv.shutdown());
    assert_eq!(
        a.expect_close().await,
        Closed::Frame(1001, "server shutting down".into())
    );
    assert_eq!(
        b.expect_close().await,
        Closed::Frame(1001, "server shutting down".into())
    );
    stop.await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_not_buffered() {
    let srv = server(|c| {
        c.signal.max_outbound_messages = 64;
        c.signal.write_timeout_ms = 500;
        c.signal.rate_burst = 1_000;
    })
    .await;
    let addr = srv.http_addr().unwrap();
    let mut sender = Client::join(addr, "slow", "sender").await;
    let _victim = Client::join(addr, "slow", "victim").await;
    let mut other = Client::join(addr, "slow", "other").await;
    sender.expect("peer-joined").await;
    sender.expect("peer-joined").await;
    // The sender reads everything it is sent (queue-full errors once the victim
    // is reconnecting) while it writes ~18 MB towards the victim, which never
    // reads: more than the kernel's socket buffers hold.
    let (mut sink, mut stream) = sender.ws.split();
    let (dropped_tx, dropped) = tokio::sync::oneshot::channel();
    let _reader = tokio::spawn(async move {
        let t = std::time::Instant::now();
        let mut dropped_tx = Some(dropped_tx);
        while let Some(Ok(m)) = stream.next().await {
            if let Message::Text(t2) = m {
                let v: Value = serde_json::from_str(t2.as_str()).unwrap();
                if v == json!({"type": "peer-reconnecting", "peer": "victim"}) {
                    let _ = dropped_tx.take().map(|tx| tx.send(t.elapsed()));
                }
                if v["type"] == "error" {
                    assert_eq!(v["code"], "queue-full", "{v}");
                }
            }
        }
    });
    let chunk = "y".repeat(60_000);
    for i in 0..300 {
        use futures_util::SinkExt;
        let m = json!({"type": "message", "to": "victim", "data": [i, chunk]}).to_string();
        sink.send(Message::text(m)).await.unwrap();
    }
    let took = tokio::time::timeout(signal_client::WAIT, dropped)
        .await
        .expect("victim dropped")
        .unwrap();
    assert!(took < Duration::from_secs(5), "{took:?}");
    // The room goes on.
    {
        use futures_util::SinkExt;
        let m = json!({"type": "message", "to": "other", "data": "ok"}).to_string();
        sink.send(Message::text(m)).await.unwrap();
    }
    loop {
        let v = other.recv().await;
        if v["type"] == "message" {
            assert_eq!(v["data"], "ok");
            break;
        }
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn room_full_and_join_timeout_over_the_wire() {
    let srv = server(|c| {
        c.signal.max_peers_per_room = 2;
        c.signal.join_timeout_ms = 300;
    })
    .await;
    let addr = srv.http_addr().unwrap();
    let _a = Client::join(addr, "full", "a").await;
    let _b = Client::join(addr, "full", "b").await;
    let mut c = Client::connect(addr, "full").await;
    c.send(json!({"type": "join", "peer": "c"})).await;
    c.expect_error("room-full").await;
    assert_eq!(
        c.expect_close().await,
        Closed::Frame(4013, "room full".into())
    );
    // Another room is not full; a socket that never joins is closed.
    let mut d = Client::connect(addr, "other").await;
    assert_eq!(
        d.expect_close().await,
        Closed::Frame(4002, "join timeout".into())
    );
    srv.shutdown().await;
}
