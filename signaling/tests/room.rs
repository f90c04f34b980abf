//! Room rules driven on virtual time: many peers, no sockets, no sleeps.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{Value, json};
use signaling::auth::issue_token;
use signaling::{
    Claims, CloseReason, Config, ConnId, Event, Input, LeaveReason, Output, Room, Secret, WallClock,
};

const UNIX0_MS: u64 = 1_700_000_000_000;

/// A room plus what each connection has received.
struct Sim {
    room: Room,
    t0: Instant,
    now: Instant,
    inbox: HashMap<ConnId, Vec<Value>>,
    closed: HashMap<ConnId, CloseReason>,
    events: Vec<Event>,
}

impl Sim {
    fn new(config: Config) -> Self {
        config.validate().unwrap();
        let t0 = Instant::now();
        Sim {
            room: Room::new(
                "r1",
                Arc::new(config),
                WallClock::new(t0, UNIX0_MS),
                [42; 32],
            ),
            t0,
            now: t0,
            inbox: HashMap::new(),
            closed: HashMap::new(),
            events: Vec::new(),
        }
    }

    fn input(&mut self, input: Input) {
        self.room.handle(self.now, input);
        while let Some(out) = self.room.poll_output() {
            match out {
                Output::Send { conn, text } => {
                    assert!(
                        !self.closed.contains_key(&conn),
                        "send to closed conn {conn}: {text}"
                    );
                    let v: Value = serde_json::from_str(&text).unwrap();
                    self.inbox.entry(conn).or_default().push(v);
                }
                Output::Close { conn, reason } => {
                    assert!(self.closed.insert(conn, reason).is_none(), "closed twice");
                }
                Output::Event(e) => self.events.push(e),
                other => panic!("unexpected output {other:?}"),
            }
        }
    }

    fn connect(&mut self, conn: ConnId) {
        self.input(Input::Connect { conn });
    }

    fn text(&mut self, conn: ConnId, v: Value) {
        self.input(Input::Text {
            conn,
            text: v.to_string(),
        });
    }

    fn raw(&mut self, conn: ConnId, text: &str) {
        self.input(Input::Text {
            conn,
            text: text.into(),
        });
    }

    /// Connect and join; returns the welcome.
    fn join(&mut self, conn: ConnId, peer: &str) -> Value {
        self.connect(conn);
        self.text(conn, json!({"type": "join", "peer": peer}));
        let w = self.take(conn).remove(0);
        assert_eq!(w["type"], "welcome", "{w}");
        w
    }

    fn take(&mut self, conn: ConnId) -> Vec<Value> {
        self.inbox.remove(&conn).unwrap_or_default()
    }

    fn take_one(&mut self, conn: ConnId) -> Value {
        let mut v = self.take(conn);
        assert_eq!(v.len(), 1, "expected one message for {conn}: {v:?}");
        v.remove(0)
    }

    fn error_code(&mut self, conn: ConnId) -> String {
        let e = self.take_one(conn);
        assert_eq!(e["type"], "error", "{e}");
        e["code"].as_str().unwrap().to_owned()
    }

    fn advance(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        self.input(Input::Tick);
    }
}

fn config() -> Config {
    Config::default()
}

#[test]
fn join_roster_leave() {
    let mut s = Sim::new(config());
    let wa = s.join(1, "alice");
    assert_eq!(wa["peer"], "alice");
    assert_eq!(wa["peers"], json!([]));
    assert_eq!(wa["protocol"], 1);
    assert_eq!(wa["heartbeat_ms"], 20_000);
    assert_eq!(wa["ice_servers"], json!([]));
    assert_eq!(wa["resumed"], false);
    assert_eq!(wa["session"].as_str().unwrap().len(), 43);

    s.connect(2);
    s.text(
        2,
        json!({"type": "join", "peer": "bob", "meta": {"name": "Bob"}}),
    );
    let wb = s.take_one(2);
    assert_eq!(
        wb["peers"],
        json!([{"peer": "alice", "polite": true, "reconnecting": false}])
    );
    assert_eq!(
        s.take_one(1),
        json!({"type": "peer-joined", "peer": "bob", "meta": {"name": "Bob"}, "polite": false})
    );

    // No peer id: the server generates a URL-safe one.
    s.connect(3);
    s.text(3, json!({"type": "join"}));
    let wc = s.take_one(3);
    let generated = wc["peer"].as_str().unwrap().to_owned();
    assert!(
        signaling::is_valid_id(&generated) && generated.len() == 12,
        "{generated}"
    );
    let roster: Vec<&str> = wc["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["peer"].as_str().unwrap())
        .collect();
    assert_eq!(roster, ["alice", "bob"], "roster in join order");
    assert_eq!(wc["peers"][1]["meta"], json!({"name": "Bob"}));
    assert_eq!(s.take_one(1)["peer"], generated.as_str());
    assert_eq!(s.take_one(2)["peer"], generated.as_str());

    let sum = s.room.summary();
    assert_eq!((sum.peers, sum.connections, sum.reconnecting), (3, 3, 0));
    assert_eq!(
        sum.peer_ids,
        vec!["alice".to_string(), "bob".into(), generated.clone()]
    );

    s.text(2, json!({"type": "leave"}));
    assert_eq!(s.closed[&2], CloseReason::Left);
    assert_eq!(CloseReason::Left.code(), 1000);
    for c in [1, 3] {
        assert_eq!(
            s.take_one(c),
            json!({"type": "peer-left", "peer": "bob", "reason": "leave"})
        );
    }
    assert!(s.events.contains(&Event::Left {
        peer: "bob".into(),
        reason: LeaveReason::Leave
    }));
    // bob's id is free again.
    s.join(4, "bob");

    for c in [1, 3, 4] {
        s.text(c, json!({"type": "leave"}));
    }
    assert!(s.room.is_empty());
}

#[test]
fn relay_stamps_from_and_passes_payloads_through() {
    let mut s = Sim::new(config());
    s.join(1, "a");
    s.join(2, "b");
    s.join(3, "c");
    s.take(1);
    s.take(2);
    let sdp =
        r#"{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n", "x" : [1,2.50,"\u00e9"]}"#;
    s.raw(
        1,
        &format!(r#"{{"type":"offer","to":"b","from":"mallory","sdp":{sdp}}}"#),
    );
    let got = s.take_one(2);
    assert_eq!(got["from"], "a");
    assert_eq!(got["type"], "offer");
    // Byte-exact pass-through: check the raw text too.
    s.raw(1, &format!(r#"{{"type":"answer","to":"b","sdp":{sdp}}}"#));
    assert_eq!(s.take_one(2)["sdp"]["x"], json!([1, 2.5, "é"]));
    s.raw(1, r#"{"type":"candidate","to":"c","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0"}}"#);
    assert_eq!(s.take_one(3)["candidate"]["sdpMid"], "0");
    let mut room_text = Vec::new();
    s.room.handle(
        s.now,
        Input::Text {
            conn: 1,
            text: format!(r#"{{"type":"message","to":"b","data":{sdp}}}"#),
        },
    );
    while let Some(o) = s.room.poll_output() {
        if let Output::Send { text, .. } = o {
            room_text.push(text.to_string());
        }
    }
    assert_eq!(
        room_text,
        vec![format!(r#"{{"type":"message","from":"a","data":{sdp}}}"#)]
    );

    // Broadcast goes to every other peer, not back to the sender.
    s.text(2, json!({"type": "message", "data": "hi all"}));
    assert_eq!(
        s.take_one(1),
        json!({"type": "message", "from": "b", "data": "hi all"})
    );
    assert_eq!(
        s.take_one(3),
        json!({"type": "message", "from": "b", "data": "hi all"})
    );
    assert!(s.take(2).is_empty());
}

#[test]
fn polite_is_symmetric_for_every_pair() {
    let mut s = Sim::new(config());
    let n = 12u64;
    // polite[(me, other)] as told to `me`.
    let mut polite: HashMap<(String, String), bool> = HashMap::new();
    for i in 0..n {
        let me = format!("p{i}");
        let w = s.join(i, &me);
        for p in w["peers"].as_array().unwrap() {
            polite.insert(
                (me.clone(), p["peer"].as_str().unwrap().into()),
                p["polite"].as_bool().unwrap(),
            );
        }
        for j in 0..i {
            let pj = s.take_one(j);
            assert_eq!(pj["type"], "peer-joined");
            polite.insert(
                (format!("p{j}"), me.clone()),
                pj["polite"].as_bool().unwrap(),
            );
        }
    }
    for i in 0..n {
        for j in 0..n {
            if i != j {
                let a = polite[&(format!("p{i}"), format!("p{j}"))];
                let b = polite[&(format!("p{j}"), format!("p{i}"))];
                assert_ne!(a, b, "exactly one of p{i}, p{j} is polite");
            }
        }
    }
}

#[test]
fn ordering_per_pair_with_many_peers() {
    let mut s = Sim::new(Config {
        rate_burst: 10_000,
        ..config()
    });
    let n = 16u64;
    for i in 0..n {
        s.join(i, &format!("p{i}"));
    }
    for i in 0..n {
        s.take(i);
    }
    // Interleave: in each round every peer sends its k-th message to each other peer.
    for k in 0..20u64 {
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    s.text(
                        i,
                        json!({"type": "message", "to": format!("p{j}"), "data": k}),
                    );
                }
            }
        }
        s.advance(1);
    }
    for j in 0..n {
        let mut next: HashMap<String, u64> = HashMap::new();
        for m in s.take(j) {
            let from = m["from"].as_str().unwrap().to_owned();
            let k = m["data"].as_u64().unwrap();
            let want = next.entry(from).or_insert(0);
            assert_eq!(k, *want);
            *want += 1;
        }
        assert_eq!(next.len() as u64, n - 1);
        assert!(next.values().all(|v| *v == 20));
    }
}

#[test]
fn resume_delivers_queued_messages_in_order_with_fresh_roster() {
    let mut s = Sim::new(config());
    s.join(1, "a");
    let wb = s.join(2, "b");
    let session = wb["session"].as_str().unwrap().to_owned();
    s.take(1);

    s.input(Input::Disconnect { conn: 2 });
    assert_eq!(
        s.take_one(1),
        json!({"type": "peer-reconnecting", "peer": "b"})
    );
    assert_eq!(s.room.summary().reconnecting, 1);
    for k in 0..5 {
        s.text(1, json!({"type": "message", "to": "b", "data": k}));
    }
    s.join(3, "c");
    s.take(1);
    s.text(
        3,
        json!({"type": "candidate", "to": "b", "candidate": "c0"}),
    );
    assert!(s.take(1).is_empty(), "nothing bounced to the senders");
    assert!(s.take(3).is_empty());

    s.advance(14_000);
    s.connect(4);
    s.text(4, json!({"type": "join", "resume": session}));
    let got = s.take(4);
    assert_eq!(got[0]["type"], "welcome");
    assert_eq!(got[0]["peer"], "b");
    assert_eq!(got[0]["resumed"], true);
    assert_eq!(got[0]["session"], session.as_str());
    let roster: Vec<&str> = got[0]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["peer"].as_str().unwrap())
        .collect();
    assert_eq!(
        roster,
        ["a", "c"],
        "fresh roster includes the peer that joined meanwhile"
    );
    let data: Vec<&Value> = got[1..].iter().map(|m| &m["data"]).collect();
    assert_eq!(
        data[..5],
        [&json!(0), &json!(1), &json!(2), &json!(3), &json!(4)]
    );
    assert_eq!(
        got[6],
        json!({"type": "candidate", "from": "c", "candidate": "c0"})
    );
    assert_eq!(got.len(), 7);
    assert_eq!(s.take_one(1), json!({"type": "peer-resumed", "peer": "b"}));
    assert_eq!(s.take_one(3), json!({"type": "peer-resumed", "peer": "b"}));
    assert!(s.events.contains(&Event::Resumed {
        conn: 4,
        peer: "b".into()
    }));

    // Live again: direct delivery.
    s.text(1, json!({"type": "message", "to": "b", "data": "live"}));
    assert_eq!(s.take_one(4)["data"], "live");
    // The grace deadline no longer applies.
    s.advance(60_000);
    assert!(s.take(1).is_empty());
    assert_eq!(s.room.summary().peers, 3);
}

#[test]
fn queue_overflow_tells_the_sender() {
    let mut s = Sim::new(Config {
        max_queued_per_peer: 3,
        ..config()
    });
    s.join(1, "a");
    s.join(2, "b");
    s.take(1);
    s.input(Input::Disconnect { conn: 2 });
    s.take(1);
    for k in 0..3 {
        s.text(1, json!({"type": "message", "to": "b", "data": k}));
    }
    assert!(s.take(1).is_empty());
    s.text(
        1,
        json!({"type": "message", "to": "b", "data": 3, "id": "m3"}),
    );
    let e = s.take_one(1);
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("queue-full"), Some("m3"))
    );

    // Bytes bound too.
    let mut s = Sim::new(Config {
        max_queued_bytes_per_peer: 100,
        ..config()
    });
    s.join(1, "a");
    s.join(2, "b");
    s.input(Input::Disconnect { conn: 2 });
    s.take(1);
    s.text(
        1,
        json!({"type": "message", "to": "b", "data": "x".repeat(120)}),
    );
    assert_eq!(s.error_code(1), "queue-full");
}

#[test]
fn messages_from_a_peer_that_left_are_dropped_from_queues() {
    let mut s = Sim::new(config());
    s.join(1, "a");
    let wb = s.join(2, "b");
    s.input(Input::Disconnect { conn: 2 });
    s.text(1, json!({"type": "message", "to": "b", "data": 1}));
    s.text(1, json!({"type": "leave"}));
    s.connect(3);
    s.text(3, json!({"type": "join", "resume": wb["session"]}));
    let got = s.take(3);
    assert_eq!(got.len(), 1, "only the welcome: {got:?}");
    assert_eq!(got[0]["peers"], json!([]));
}

#[test]
fn grace_expiry_and_late_resume() {
    let mut s = Sim::new(config());
    s.join(1, "a");
    let wb = s.join(2, "b");
    s.take(1);
    s.input(Input::Disconnect { conn: 2 });
    s.take(1);
    assert_eq!(
        s.room.poll_timeout(),
        Some(s.t0 + Duration::from_millis(15_000))
    );
    s.advance(14_999);
    assert!(s.take(1).is_empty());
    s.advance(1);
    assert_eq!(
        s.take_one(1),
        json!({"type": "peer-left", "peer": "b", "reason": "timeout"})
    );
    assert_eq!(s.room.poll_timeout(), None);

    // A late resume (session expired) falls back to a fresh join with the asked id.
    s.connect(3);
    s.text(
        3,
        json!({"type": "join", "peer": "b", "resume": wb["session"]}),
    );
    let w = s.take_one(3);
    assert_eq!(
        (w["peer"].as_str(), w["resumed"].as_bool()),
        (Some("b"), Some(false))
    );
    assert_ne!(w["session"], wb["session"]);
}

#[test]
fn expiry_is_applied_before_input_even_without_tick() {
    let mut s = Sim::new(config());
    s.join(1, "a");
    let wb = s.join(2, "b");
    s.input(Input::Disconnect { conn: 2 });
    s.now += Duration::from_millis(20_000);
    s.connect(3);
    s.text(3, json!({"type": "join", "resume": wb["session"]}));
    assert_eq!(s.take_one(3)["resumed"], false);
}

#[test]
fn zero_grace_removes_at_once() {
    let mut s = Sim::new(Config {
        resume_grace_ms: 0,
        ..config()
    });
    s.join(1, "a");
    s.join(2, "b");
    s.take(1);
    s.input(Input::Disconnect { conn: 2 });
    assert_eq!(s.take_one(1)["type"], "peer-left");
    assert!(s.closed.is_empty(), "no close for a socket that is gone");
}

#[test]
fn resume_on_a_new_socket_replaces_the_old_one() {
    let mut s = Sim::new(config());
    s.join(1, "a");
    let wb = s.join(2, "b");
    s.take(1);
    s.connect(3);
    s.text(3, json!({"type": "join", "resume": wb["session"]}));
    assert_eq!(s.closed[&2], CloseReason::Replaced);
    assert_eq!(CloseReason::Replaced.code(), 4004);
    assert_eq!(s.take_one(3)["resumed"], true);
    assert_eq!(s.take_one(1)["type"], "peer-resumed");
    s.text(1, json!({"type": "message", "to": "b", "data": 1}));
    assert_eq!(s.take_one(3)["data"], 1);
    // The old socket's late disconnect changes nothing.
    s.input(Input::Disconnect { conn: 2 });
    assert!(s.take(1).is_empty());
}

#[test]
fn peer_id_taken() {
    let mut s = Sim::new(config());
    s.join(1, "a");
    s.connect(2);
    s.text(2, json!({"type": "join", "peer": "a", "id": 1}));
    let e = s.take_one(2);
    assert_eq!(
        (e["code"].as_str(), e["id"].as_u64()),
        (Some("peer-id-taken"), Some(1))
    );
    assert!(
        !s.closed.contains_key(&2),
        "the client may retry with another id"
    );
    // Also taken while the owner is reconnecting, and with a wrong session.
    s.input(Input::Disconnect { conn: 1 });
    s.text(
        2,
        json!({"type": "join", "peer": "a", "resume": "not-the-session"}),
    );
    assert_eq!(s.error_code(2), "peer-id-taken");
    s.text(2, json!({"type": "join", "peer": "a2"}));
    assert_eq!(s.take_one(2)["peer"], "a2");
}

#[test]
fn room_full() {
    let mut s = Sim::new(Config {
        max_peers_per_room: 3,
        ..config()
    });
    for i in 0..3 {
        s.join(i, &format!("p{i}"));
    }
    s.input(Input::Disconnect { conn: 2 });
    s.connect(9);
    s.text(9, json!({"type": "join"}));
    assert_eq!(s.error_code(9), "room-full");
    assert_eq!(s.closed[&9], CloseReason::RoomFull);
    assert_eq!(CloseReason::RoomFull.code(), 4013);
    // After a leave there is room again.
    s.text(0, json!({"type": "leave"}));
    s.join(10, "late");
}

#[test]
fn every_error_code() {
    let mut s = Sim::new(config());
    s.connect(1);
    s.raw(1, "{not json");
    assert_eq!(s.error_code(1), "bad-json");
    s.raw(1, r#"{"type":"hug","id":"h"}"#);
    let e = s.take_one(1);
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("unknown-type"), Some("h"))
    );
    s.raw(1, r#"{"type":"offer","to":"b","sdp":"x"}"#);
    assert_eq!(s.error_code(1), "not-joined", "offer before join");
    s.raw(1, r#"{"type":"ping","id":5}"#);
    assert_eq!(
        s.take_one(1),
        json!({"type": "pong", "id": 5}),
        "ping works before join"
    );
    s.text(1, json!({"type": "join", "peer": "a"}));
    s.take(1);
    s.raw(1, r#"{"type":"offer","sdp":"x","id":"o1"}"#);
    let e = s.take_one(1);
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("missing-field"), Some("o1"))
    );
    assert!(e["message"].as_str().unwrap().contains("`to`"), "{e}");
    s.raw(1, r#"{"type":"offer","to":"ghost","sdp":"x","id":"o2"}"#);
    let e = s.take_one(1);
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("unknown-peer"), Some("o2"))
    );
    s.raw(1, r#"{"type":"message","to":"a","data":1}"#);
    assert_eq!(s.error_code(1), "unknown-peer", "sending to oneself");
    s.raw(1, r#"{"type":"join"}"#);
    assert_eq!(s.error_code(1), "already-joined");
    s.text(1, json!({"type": "ping"}));
    assert_eq!(s.take_one(1), json!({"type": "pong"}));
    assert!(s.closed.is_empty(), "none of these close the socket");

    // too-large: a text over the limit, or the shell's TooLarge input.
    let mut s = Sim::new(Config {
        max_message_bytes: 100,
        ..config()
    });
    s.join(1, "a");
    s.join(2, "b");
    s.join(3, "c");
    s.take(1);
    s.take(2);
    s.raw(
        1,
        &format!(r#"{{"type":"message","data":"{}"}}"#, "x".repeat(100)),
    );
    assert_eq!(s.error_code(1), "too-large");
    assert_eq!(s.closed[&1], CloseReason::TooLarge);
    assert_eq!(
        s.take_one(2),
        json!({"type": "peer-left", "peer": "a", "reason": "closed"})
    );
    s.input(Input::TooLarge { conn: 2 });
    assert_eq!(s.error_code(2), "too-large");
    assert_eq!(s.closed[&2].code(), 4009);
    s.take(3);
    s.input(Input::Binary { conn: 3 });
    assert_eq!(s.error_code(3), "bad-json");
    assert_eq!(s.closed[&3].code(), 4003);
    s.connect(4);
    s.input(Input::NotUtf8 { conn: 4 });
    assert_eq!(s.error_code(4), "bad-json");
    assert_eq!(s.closed[&4].code(), 4007);
    // Meta over its own limit refuses the join without closing.
    let mut s = Sim::new(Config {
        max_meta_bytes: 10,
        ..config()
    });
    s.connect(1);
    s.text(1, json!({"type": "join", "meta": "0123456789abc"}));
    assert_eq!(s.error_code(1), "too-large");
    assert!(s.closed.is_empty());
    // Inputs for unknown or closed connections are ignored.
    s.input(Input::Text {
        conn: 77,
        text: "{".into(),
    });
    s.input(Input::Disconnect { conn: 77 });
    assert!(s.take(77).is_empty());
}

#[test]
fn join_timeout() {
    let mut s = Sim::new(config());
    s.connect(1);
    s.connect(2);
    s.advance(5_000);
    s.text(2, json!({"type": "join"}));
    s.take(2);
    s.raw(1, r#"{"type":"ping"}"#);
    assert_eq!(
        s.room.poll_timeout(),
        Some(s.t0 + Duration::from_millis(10_000))
    );
    s.advance(4_999);
    assert!(s.closed.is_empty());
    s.advance(1);
    assert_eq!(s.closed[&1], CloseReason::JoinTimeout);
    assert_eq!(CloseReason::JoinTimeout.code(), 4002);
    assert!(!s.closed.contains_key(&2), "joined in time");
}

#[test]
fn rate_limit_and_flood() {
    let cfg = Config {
        rate_burst: 5,
        rate_per_second: 10,
        flood_limit: 3,
        ..config()
    };
    let mut s = Sim::new(cfg);
    s.join(1, "a");
    s.join(2, "b");
    s.join(3, "c");
    for c in 1..=3 {
        s.take(c);
    }
    // The join used one token; 4 more pass, the 5th is limited.
    for k in 0..4 {
        s.text(1, json!({"type": "message", "to": "b", "data": k}));
    }
    assert_eq!(s.take(2).len(), 4);
    s.text(1, json!({"type": "message", "to": "b", "data": "x"}));
    assert_eq!(s.error_code(1), "rate-limited");
    assert!(s.take(2).is_empty());
    // 100 ms refill one token at 10/s.
    s.advance(100);
    s.text(1, json!({"type": "message", "to": "b", "data": "y"}));
    assert_eq!(s.take_one(2)["data"], "y");
    // A full refill forgives earlier violations.
    s.advance(1_000);
    for _ in 0..5 {
        s.text(1, json!({"type": "ping"}));
    }
    s.take(1);
    // Flood: violations 1..=3 get errors, the 4th closes.
    for _ in 0..3 {
        s.text(1, json!({"type": "ping"}));
        assert_eq!(s.error_code(1), "rate-limited");
    }
    assert!(s.closed.is_empty());
    s.text(1, json!({"type": "ping"}));
    assert_eq!(s.error_code(1), "rate-limited");
    assert_eq!(s.closed[&1], CloseReason::Flood);
    assert_eq!(CloseReason::Flood.code(), 4029);
    assert_eq!(
        s.take_one(2),
        json!({"type": "peer-left", "peer": "a", "reason": "closed"})
    );
    // Other peers are unaffected.
    s.text(
        3,
        json!({"type": "message", "to": "b", "data": "still here"}),
    );
    assert_eq!(s.take_one(2)["data"], "still here");
}

fn jwt_config() -> (Config, Secret) {
    let secret = Secret::new("jwt-secret");
    (
        Config {
            jwt_secret: Some(secret.clone()),
            jwt_leeway_ms: 0,
            ..config()
        },
        secret,
    )
}

#[test]
fn jwt_accept_and_reject() {
    let (cfg, secret) = jwt_config();
    let exp = UNIX0_MS / 1000 + 60;
    let tok = |room: &str, peer: Option<&str>, exp: u64, secret: &Secret| {
        issue_token(
            secret,
            &Claims {
                room: room.into(),
                peer: peer.map(Into::into),
                exp,
            },
        )
    };
    let mut s = Sim::new(cfg);
    // Accepted, with and without a peer claim.
    s.connect(1);
    s.text(
        1,
        json!({"type": "join", "token": tok("r1", None, exp, &secret)}),
    );
    assert_eq!(s.take_one(1)["type"], "welcome");
    s.connect(2);
    s.text(
        2,
        json!({"type": "join", "token": tok("r1", Some("bob"), exp, &secret)}),
    );
    assert_eq!(
        s.take_one(2)["peer"],
        "bob",
        "the peer claim names the peer"
    );

    let cases = [
        (json!({"type": "join"}), "a token is required"),
        (json!({"type": "join", "token": "garbage"}), "invalid token"),
        (
            json!({"type": "join", "token": tok("r1", None, exp, &Secret::new("wrong"))}),
            "invalid token",
        ),
        (
            json!({"type": "join", "token": tok("r2", None, exp, &secret)}),
            "another room",
        ),
        (
            json!({"type": "join", "token": tok("r1", None, exp - 61, &secret)}),
            "expired",
        ),
        (
            json!({"type": "join", "peer": "eve", "token": tok("r1", Some("carol"), exp, &secret)}),
            "another peer",
        ),
    ];
    for (k, (join, why)) in cases.into_iter().enumerate() {
        let conn = 10 + k as ConnId;
        s.connect(conn);
        s.text(conn, join);
        let e = s.take_one(conn);
        assert_eq!(e["code"], "unauthorized");
        assert!(e["message"].as_str().unwrap().contains(why), "{e} vs {why}");
        assert_eq!(s.closed[&conn], CloseReason::Unauthorized);
        assert_eq!(s.closed[&conn].code(), 4001);
    }
    // The token expires while time passes.
    s.advance(61_000);
    s.connect(30);
    s.text(
        30,
        json!({"type": "join", "token": tok("r1", None, exp, &secret)}),
    );
    assert_eq!(s.error_code(30), "unauthorized");
}

#[test]
fn resume_needs_no_token_but_a_valid_session() {
    let (cfg, secret) = jwt_config();
    let mut s = Sim::new(cfg);
    let exp = UNIX0_MS / 1000 + 5;
    s.connect(1);
    s.text(1, json!({"type": "join", "token": issue_token(&secret, &Claims { room: "r1".into(), peer: None, exp })}));
    let w = s.take_one(1);
    s.input(Input::Disconnect { conn: 1 });
    s.advance(10_000);
    s.connect(2);
    s.text(2, json!({"type": "join", "resume": w["session"]}));
    assert_eq!(s.take_one(2)["resumed"], true, "session outlives the token");
    s.connect(3);
    s.text(3, json!({"type": "join", "resume": "forged"}));
    assert_eq!(s.error_code(3), "unauthorized");
}

#[test]
fn turn_credentials_in_welcome() {
    let cfg = Config {
        stun_urls: vec!["stun:stun.example:3478".into()],
        turn_urls: vec!["turn:turn.example:3478?transport=udp".into()],
        turn_secret: Some(Secret::new("secret")),
        turn_ttl_ms: 3_600_000,
        ..config()
    };
    let mut s = Sim::new(cfg);
    let w = s.join(1, "alice");
    let expiry = UNIX0_MS / 1000 + 3_600;
    let (user, cred) = signaling::auth::turn_credentials(&Secret::new("secret"), "alice", expiry);
    assert_eq!(
        w["ice_servers"],
        json!([
            {"urls": ["stun:stun.example:3478"]},
            {"urls": ["turn:turn.example:3478?transport=udp"], "username": user, "credential": cred}
        ])
    );
    assert_eq!(user, format!("{expiry}:alice"));
}

#[test]
fn full_mesh_of_32_peers_on_virtual_time() {
    // 32 peers, full mesh signaling (offer, answer, 3 candidates per pair).
    let mut s = Sim::new(config());
    let n = 32u64;
    for i in 0..n {
        s.join(i, &format!("p{i}"));
        s.advance(10);
    }
    for i in 0..n {
        s.take(i);
    }
    for i in 0..n {
        for j in 0..i {
            s.text(
                i,
                json!({"type": "offer", "to": format!("p{j}"), "sdp": "o"}),
            );
            s.text(
                j,
                json!({"type": "answer", "to": format!("p{i}"), "sdp": "a"}),
            );
            for c in 0..3 {
                s.text(
                    i,
                    json!({"type": "candidate", "to": format!("p{j}"), "candidate": c}),
                );
            }
        }
        s.advance(1_000);
    }
    for i in 0..n {
        let got = s.take(i);
        // From each later joiner: offer + 3 candidates; from each earlier one: answer.
        assert_eq!(got.len() as u64, 4 * (n - 1 - i) + i, "peer {i}");
        assert!(got.iter().all(|m| m["type"] != "error"), "{got:?}");
    }
    assert!(s.closed.is_empty());
}

/// One step of a random schedule.
#[derive(Debug, Clone)]
enum Step {
    Send { from: usize, to: usize },
    Drop { peer: usize },
    Resume { peer: usize },
    Wait { ms: u64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..4usize, 0..4usize).prop_map(|(from, to)| Step::Send { from, to }),
        1 => (0..4usize).prop_map(|peer| Step::Drop { peer }),
        2 => (0..4usize).prop_map(|peer| Step::Resume { peer }),
        1 => (0..5_000u64).prop_map(|ms| Step::Wait { ms }),
    ]
}

proptest! {
    /// Whatever the interleaving of sends, drops and resumes (within the grace
    /// period), every receiver gets each sender's messages exactly once, in order.
    #[test]
    fn any_interleaving_preserves_per_pair_order(steps in proptest::collection::vec(step(), 1..200)) {
        let mut s = Sim::new(Config { rate_burst: 1_000, resume_grace_ms: 1_000_000, ..config() });
        let peers = 4;
        let mut conn_of: Vec<Option<ConnId>> = Vec::new();
        let mut sessions = Vec::new();
        let mut next_conn = 100;
        for p in 0..peers {
            let w = s.join(p as ConnId, &format!("p{p}"));
            sessions.push(w["session"].as_str().unwrap().to_owned());
            conn_of.push(Some(p as ConnId));
        }
        let mut sent = vec![vec![0u64; peers]; peers];
        let mut received: Vec<Vec<Value>> = vec![Vec::new(); peers];
        let collect = |s: &mut Sim, conn_of: &Vec<Option<ConnId>>, received: &mut Vec<Vec<Value>>| {
            for (p, c) in conn_of.iter().enumerate() {
                if let Some(c) = c {
                    received[p].extend(s.take(*c).into_iter().filter(|m| m["type"] == "message"));
                }
            }
        };
        for st in steps {
            match st {
                Step::Send { from, to } if from != to => {
                    if let Some(c) = conn_of[from] {
                        s.text(c, json!({"type": "message", "to": format!("p{to}"), "data": sent[from][to]}));
                        sent[from][to] += 1;
                    }
                }
                Step::Send { .. } => {}
                Step::Drop { peer } => {
                    if let Some(c) = conn_of[peer].take() {
                        collect(&mut s, &conn_of, &mut received);
                        received[peer].extend(s.take(c).into_iter().filter(|m| m["type"] == "message"));
                        s.input(Input::Disconnect { conn: c });
                    }
                }
                Step::Resume { peer } => {
                    next_conn += 1;
                    let c = next_conn;
                    if let Some(old) = conn_of[peer] {
                        received[peer].extend(s.take(old).into_iter().filter(|m| m["type"] == "message"));
                    }
                    s.connect(c);
                    s.text(c, json!({"type": "join", "resume": sessions[peer]}));
                    conn_of[peer] = Some(c);
                }
                Step::Wait { ms } => s.advance(ms),
            }
            collect(&mut s, &conn_of, &mut received);
        }
        // Bring everyone back and collect the rest.
        for (peer, session) in sessions.iter().enumerate() {
            if conn_of[peer].is_none() {
                next_conn += 1;
                s.connect(next_conn);
                s.text(next_conn, json!({"type": "join", "resume": session}));
                conn_of[peer] = Some(next_conn);
            }
        }
        collect(&mut s, &conn_of, &mut received);
        for (to, msgs) in received.iter().enumerate() {
            let mut next = vec![0u64; peers];
            for m in msgs {
                let from: usize = m["from"].as_str().unwrap()[1..].parse().unwrap();
                prop_assert_eq!(m["data"].as_u64().unwrap(), next[from]);
                next[from] += 1;
            }
            for from in 0..peers {
                prop_assert_eq!(next[from], sent[from][to], "from p{} to p{}", from, to);
            }
        }
    }

    /// Arbitrary text, before and after join, never panics and always gets a
    /// well-formed answer.
    #[test]
    fn arbitrary_text_never_panics(texts in proptest::collection::vec(".{0,80}", 1..30), joined in any::<bool>()) {
        let mut s = Sim::new(config());
        if joined { s.join(1, "a"); } else { s.connect(1); }
        s.join(2, "b");
        for t in texts {
            s.input(Input::Text { conn: 1, text: t });
        }
        for m in s.take(1) {
            prop_assert!(m["type"].is_string());
        }
    }

    /// Random JSON objects made of protocol field names never panic.
    #[test]
    fn arbitrary_messages_never_panic(
        msgs in proptest::collection::vec(
            proptest::collection::btree_map(
                prop_oneof![Just("type"), Just("to"), Just("id"), Just("sdp"), Just("data"),
                            Just("peer"), Just("resume"), Just("meta"), Just("x")],
                prop_oneof![Just(json!("join")), Just(json!("offer")), Just(json!("message")),
                            Just(json!("leave")), Just(json!("b")), Just(json!(null)), Just(json!(1)),
                            Just(json!({"a": [1]}))],
                0..6),
            1..40)
    ) {
        let mut s = Sim::new(config());
        s.connect(1);
        s.join(2, "b");
        for m in msgs {
            s.text(1, serde_json::to_value(m).unwrap());
        }
    }
}
