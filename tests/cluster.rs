//! Issue 14: the cluster, with real parts only. Each test starts its own Redis
//! (Debian's `redis-server` on a unix socket in a temp dir, persistence off) and
//! three `wsrelay` binaries (A, B, C) on free loopback ports sharing it, publishes
//! with ffmpeg over RTMP and plays with WebSocket-FLV and HTTP-FLV clients that
//! check every tag (FLV header, sequence headers, keyframe first, monotonic
//! timestamps), then breaks something and watches what the players see:
//!
//! 1. a stream published on A plays on B (3 players, one pull) and C (HTTP-FLV);
//! 2. a second publisher of a live name on any node is refused;
//! 3. A is killed (`kill -9`) and the name is republished on C within the grace
//!    period: B's players continue;
//! 4. an edge is killed: players of the origin and of the other edge do not notice;
//! 5. Redis is stalled (`SIGSTOP`) for 10 s: flowing streams keep flowing, new
//!    remote plays and publishers get 503, `/healthz` stays 200, all recovers
//!    after `SIGCONT`;
//! 6. Redis is restarted empty: registrations and leases come back.
//!
//! The tests take turns (a three-node cluster per test on a two-core machine), and
//! stop every process they started by PID. When a test fails, the tail of each
//! node's log is printed with the failure; the logs stay in the test's directory.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Ended, StreamCheck, WsPlayer};
use flv::{Demuxer, DemuxerConfig, Tag, TagType};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Child;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite;

use common::cluster::{Cluster, Node, Redis, SECOND, SERIAL, json, signal, try_json};

/// Media that outlasts the longest test (the shared 20 s file ends too soon for the
/// Redis stall and the edge kill).
fn long_media() -> &'static Path {
    static MEDIA: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    MEDIA.get_or_init(|| common::make_media("h264-aac-60s.flv", 60, &[]))
}

/// The `/api/streams` entry of `name` on a node, if listed.
async fn stream_entry(addr: SocketAddr, name: &str) -> Option<Value> {
    let v = try_json(addr, "/api/streams").await?;
    v["streams"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
}

/// Polls `/api/streams` on `addr` until `name`'s entry satisfies `ok`; returns it.
async fn wait_entry(
    addr: SocketAddr,
    name: &str,
    within: Duration,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let entry = stream_entry(addr, name).await;
        if let Some(e) = &entry
            && ok(e)
        {
            return e.clone();
        }
        assert!(
            start.elapsed() < within,
            "{what}: not within {within:?}; {name} on {addr}: {entry:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of one metric sample (exact name with labels) on `/metrics`.
async fn metric(addr: SocketAddr, series: &str) -> Option<f64> {
    let text = tokio::time::timeout(5 * SECOND, common::http_get(addr, "/metrics"))
        .await
        .ok()?
        .ok()?;
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// Polls a metric until `ok`; returns (value, time taken).
async fn wait_metric(
    addr: SocketAddr,
    series: &str,
    within: Duration,
    ok: impl Fn(f64) -> bool,
) -> (f64, Duration) {
    let start = Instant::now();
    loop {
        let v = metric(addr, series).await;
        if let Some(v) = v
            && ok(v)
        {
            return (v, start.elapsed());
        }
        assert!(
            start.elapsed() < within,
            "{series} on {addr}: {v:?} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A raw `POST /live/NAME.flv` with a 3-byte body: the status tells whether the
/// publish was admitted (409 when the name is taken anywhere in the cluster).
async fn post_publish_status(addr: SocketAddr, name: &str) -> (u16, String) {
    common::http_request(addr, "POST", &format!("/live/{name}.flv"), b"FLV")
        .await
        .expect("POST answered")
}

/// Waits for an ffmpeg publisher to be refused; returns its stderr.
async fn refused(child: Child) -> String {
    let out = tokio::time::timeout(20 * SECOND, child.wait_with_output())
        .await
        .expect("a refused ffmpeg exits within 20 s")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "ffmpeg should have been refused");
    stderr
}

// ---------------------------------------------------------------------------------
// Players

/// An HTTP-FLV player: the chunked body of `GET /live/NAME.flv`, demuxed.
struct HttpFlv {
    r: BufReader<TcpStream>,
    demux: Demuxer,
}

impl HttpFlv {
    async fn connect(addr: SocketAddr, name: &str) -> HttpFlv {
        let (status, head, r) = common::get_head(addr, &format!("/live/{name}.flv"), "").await;
        assert_eq!(status, 200, "HTTP-FLV play of {name} on {addr}: {head}");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        assert!(head.contains("video/x-flv"), "{head}");
        HttpFlv {
            r,
            demux: Demuxer::new(DemuxerConfig::default()),
        }
    }

    /// One chunk of the body; None at its end (or when the connection broke).
    async fn chunk(&mut self) -> Option<Vec<u8>> {
        let mut line = String::new();
        if self.r.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let size = usize::from_str_radix(line.trim().split(';').next()?, 16).ok()?;
        if size == 0 {
            return None;
        }
        let mut data = vec![0; size + 2];
        self.r.read_exact(&mut data).await.ok()?;
        data.truncate(size);
        Some(data)
    }

    async fn next(&mut self, timeout: Duration) -> Result<Tag, Ended> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(tag) = self.demux.next_tag().expect("server sent valid FLV") {
                return Ok(tag);
            }
            let chunk = tokio::time::timeout_at(deadline, self.chunk())
                .await
                .expect("timed out waiting for a tag");
            match chunk {
                Some(data) => self.demux.push(&data),
                None => return Err(Ended::Eof),
            }
        }
    }
}

/// A WebSocket-FLV play that may be refused: Err(status) when the upgrade is.
async fn try_ws(addr: SocketAddr, name: &str) -> Result<WsPlayer, u16> {
    let url = format!("ws://{addr}/live/{name}.flv");
    let connect = tokio::time::timeout(15 * SECOND, tokio_tungstenite::connect_async(url))
        .await
        .unwrap_or_else(|_| panic!("WebSocket play of {name} on {addr}: no answer within 15 s"));
    match connect {
        Ok((ws, _)) => Ok(WsPlayer {
            ws,
            demux: Demuxer::new(DemuxerConfig::default()),
            bytes: 0,
            started: Instant::now(),
        }),
        Err(tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
        Err(e) => panic!("WebSocket play of {name} on {addr}: {e}"),
    }
}

enum Player {
    Ws(Box<WsPlayer>),
    Http(Box<HttpFlv>),
}

impl Player {
    async fn ws(addr: SocketAddr, name: &str) -> Player {
        match try_ws(addr, name).await {
            Ok(p) => Player::Ws(Box::new(p)),
            Err(status) => panic!("WebSocket play of {name} on {addr} refused: {status}"),
        }
    }

    async fn http(addr: SocketAddr, name: &str) -> Player {
        Player::Http(Box::new(HttpFlv::connect(addr, name).await))
    }

    async fn next(&mut self, timeout: Duration) -> Result<Tag, Ended> {
        match self {
            Player::Ws(p) => p.next(timeout).await,
            Player::Http(p) => p.next(timeout).await,
        }
    }
}

/// What a background player has received: the arrival time of every frame (after
/// the sequence headers), and how it ended.
#[derive(Default)]
struct Seen {
    frames: Vec<(Instant, TagType)>,
    end: Option<String>,
}

/// A player read in a task of its own, every tag checked by [`StreamCheck`]
/// (header, sequence headers, keyframe first, monotonic timestamps).
struct Reader {
    label: String,
    seen: Arc<Mutex<Seen>>,
    task: Option<JoinHandle<()>>,
}

impl Reader {
    fn spawn(label: impl Into<String>, mut player: Player) -> Reader {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            let mut check = StreamCheck::new();
            let started = Instant::now();
            loop {
                // Longer than any grace period of these tests: a stall shows as a gap.
                match player.next(60 * SECOND).await {
                    Ok(tag) => {
                        check.tag(&tag, started.elapsed());
                        if !tag.is_metadata() && !tag.is_sequence_header() && check.frames > 0 {
                            record
                                .lock()
                                .unwrap()
                                .frames
                                .push((Instant::now(), tag.tag_type));
                        }
                    }
                    Err(end) => {
                        record.lock().unwrap().end = Some(format!("{end:?}"));
                        return;
                    }
                }
            }
        });
        Reader {
            label: label.into(),
            seen,
            task: Some(task),
        }
    }

    /// Video frames that arrived after `t`.
    fn video_since(&self, t: Instant) -> usize {
        let seen = self.seen.lock().unwrap();
        seen.frames
            .iter()
            .filter(|(at, kind)| *at > t && *kind == TagType::Video)
            .count()
    }

    /// The longest time without a frame within `[from, to]`.
    fn max_gap(&self, from: Instant, to: Instant) -> Duration {
        let seen = self.seen.lock().unwrap();
        let mut points = vec![from];
        points.extend(
            seen.frames
                .iter()
                .map(|(at, _)| *at)
                .filter(|at| *at > from && *at < to),
        );
        points.push(to);
        points
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }

    /// Panics if the player ended or its checks failed (re-raising the check's panic).
    async fn assert_alive(&mut self) {
        let ended = self.seen.lock().unwrap().end.clone();
        if let Some(end) = ended {
            panic!("player {} ended: {end}", self.label);
        }
        if self.task.as_ref().is_some_and(|t| t.is_finished()) {
            let task = self.task.take().unwrap();
            if let Err(e) = task.await
                && e.is_panic()
            {
                std::panic::resume_unwind(e.into_panic());
            }
            panic!("player {} stopped", self.label);
        }
    }

    /// Waits until `n` video frames arrived after `t`; returns the time from `t`
    /// to the first of them.
    async fn wait_video_since(&mut self, t: Instant, n: usize, within: Duration) -> Duration {
        loop {
            self.assert_alive().await;
            if self.video_since(t) >= n {
                let seen = self.seen.lock().unwrap();
                let first = seen
                    .frames
                    .iter()
                    .find(|(at, kind)| *at > t && *kind == TagType::Video)
                    .map(|(at, _)| *at - t);
                return first.unwrap_or_default();
            }
            assert!(
                t.elapsed() < within,
                "player {}: {} video frames since the mark, {n} wanted within {within:?}",
                self.label,
                self.video_since(t)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the player's stream ended; returns how.
    async fn wait_end(&mut self, within: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(end) = self.seen.lock().unwrap().end.clone() {
                return end;
            }
            assert!(
                start.elapsed() < within,
                "player {} still playing after {within:?}",
                self.label
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Readers for `n` WebSocket players of `name` on a node, labelled `LABEL-ws-i`.
async fn ws_readers(node: &Node, name: &str, n: usize) -> Vec<Reader> {
    let mut out = Vec::new();
    for i in 0..n {
        let player = Player::ws(node.http, name).await;
        out.push(Reader::spawn(format!("{}-ws-{i}", node.label), player));
    }
    out
}

/// Publishes `name` on `node` over RTMP with ffmpeg and waits until it is live.
async fn publish(node: &Node, name: &str, media: &Path) -> Child {
    let child = common::ffmpeg_publish(&node.rtmp_url(name), media, &[]);
    common::wait_live(node.http, name).await;
    child
}

// ---------------------------------------------------------------------------------
// The tests

/// Publish on A; 3 WebSocket players on B and an HTTP-FLV player on C all get a
/// valid stream through one pull per edge; the origin lists each edge once, each
/// edge says where it pulls from; an unknown name is a prompt 404 and a pull with a
/// bad token is 401; the pull stops a linger time after the last player left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_published_on_one_node_plays_on_every_node_through_one_pull() {
    let _turn = SERIAL.lock().await;
    let mut cl = Cluster::start("plays", 10_000).await;
    let _publisher = publish(&cl.a, "cam", common::media()).await;

    let t_play = Instant::now();
    let mut on_b = ws_readers(&cl.b, "cam", 3).await;
    let mut on_c = vec![Reader::spawn(
        "C-http",
        Player::http(cl.c.http, "cam").await,
    )];
    for r in on_b.iter_mut().chain(on_c.iter_mut()) {
        let first = r.wait_video_since(t_play, 50, 20 * SECOND).await;
        println!("{}: first video {first:?} after connecting", r.label);
    }

    // A lists each edge exactly once; the edges name their origin.
    let origin = wait_entry(cl.a.http, "cam", 10 * SECOND, "both edges on A", |e| {
        let edges = e["edges"].as_array().cloned().unwrap_or_default();
        edges.contains(&Value::from(cl.b.id.as_str()))
            && edges.contains(&Value::from(cl.c.id.as_str()))
    })
    .await;
    let edges = origin["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 2, "one entry per pulling node: {origin}");
    assert_eq!(origin["origin"]["node"], cl.a.id.as_str(), "{origin}");
    assert_eq!(origin["origin"]["url"], cl.a.url(), "{origin}");
    for (node, players) in [(&cl.b, 3), (&cl.c, 1)] {
        let e = stream_entry(node.http, "cam")
            .await
            .expect("listed on the edge");
        assert_eq!(e["pulled_from"], cl.a.id.as_str(), "{} {e}", node.label);
        assert_eq!(e["publisher"], "pull", "{} {e}", node.label);
        assert_eq!(e["origin"]["node"], cl.a.id.as_str(), "{} {e}", node.label);
        assert_eq!(e["players"], players, "{} {e}", node.label);
        assert_eq!(
            metric(node.http, "wsrelay_cluster_pulls").await,
            Some(1.0),
            "node {}: one pull shared by its players",
            node.label
        );
    }
    assert_eq!(metric(cl.a.http, "wsrelay_cluster_leases").await, Some(1.0));
    assert_eq!(metric(cl.a.http, "wsrelay_cluster_pulls").await, Some(0.0));
    for node in cl.alive() {
        let text = common::http_get(node.http, "/metrics").await.unwrap();
        // (wsrelay_cluster_pull_starts_total{outcome} has samples once a pull
        // ended: B's below.)
        for series in [
            "wsrelay_cluster_pulls",
            "wsrelay_cluster_leases",
            "wsrelay_cluster_redis_errors_total",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(&format!("{series} "))),
                "node {} has no {series}",
                node.label
            );
        }
    }
    // /api/cluster: every node, its URL, boot and what it serves.
    let v = json(cl.c.http, "/api/cluster").await;
    let a = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == cl.a.id.as_str())
        .unwrap_or_else(|| panic!("A in /api/cluster: {v}"))
        .clone();
    assert_eq!(a["url"], cl.a.url(), "{a}");
    assert!(a["boot"].is_string() || a["boot"].is_number(), "{a}");
    assert!(a["age_ms"].is_number() && a["players"].is_number(), "{a}");
    assert!(
        a["streams"]
            .as_array()
            .is_some_and(|s| s.contains(&Value::from("cam"))),
        "{a}"
    );
    // A node's players are its viewers: A serves only the two edges' pulls (0), B
    // its three players (registrations refresh every heartbeat).
    let deadline = Instant::now() + 10 * SECOND;
    loop {
        let v = json(cl.c.http, "/api/cluster").await;
        let players = |id: &str| {
            v["nodes"]
                .as_array()
                .and_then(|n| n.iter().find(|n| n["id"] == id))
                .and_then(|n| n["players"].as_u64())
        };
        let (a, b) = (players(&cl.a.id), players(&cl.b.id));
        if a == Some(0) && b == Some(3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "players per node: A {a:?} (want 0: pulls are not viewers), B {b:?} (want 3): {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // An unknown name is a prompt 404 on an edge.
    let asked = Instant::now();
    let (status, head, _) = common::get_head(cl.b.http, "/live/nosuch.flv", "").await;
    let took = asked.elapsed();
    println!("404 for an unknown name on B in {took:?}");
    assert_eq!(status, 404, "{head}");
    assert!(took < 5 * SECOND, "404 took {took:?} (play_wait_ms is 3 s)");
    // Pulls need a valid cluster token.
    for value in ["not-a-token", ""] {
        let (status, head, _) = common::get_head(
            cl.a.http,
            "/live/cam.flv",
            &format!("x-wsrelay-pull: {value}\r\n"),
        )
        .await;
        assert_eq!(status, 401, "pull token {value:?}: {head}");
    }

    // The last player leaves B: the pull lingers (a player that comes back within
    // the linger reuses it), then stops.
    drop(on_b);
    tokio::time::sleep(SECOND).await;
    let back = Instant::now();
    let mut again = Reader::spawn("B-again", Player::ws(cl.b.http, "cam").await);
    let first = again.wait_video_since(back, 10, 10 * SECOND).await;
    println!("a player back on B within the linger: first video after {first:?}");
    assert_eq!(metric(cl.b.http, "wsrelay_cluster_pulls").await, Some(1.0));
    let left = Instant::now();
    drop(again);
    let (_, took) = wait_metric(cl.b.http, "wsrelay_cluster_pulls", 20 * SECOND, |v| {
        v == 0.0
    })
    .await;
    println!("B's pull stopped {took:?} after its last player left (pull_linger_ms 5000)");
    assert!(
        took >= 3 * SECOND,
        "the pull lingers ~5 s, stopped after {took:?}"
    );
    let b_metrics = common::http_get(cl.b.http, "/metrics").await.unwrap();
    let pulls: Vec<&str> = b_metrics
        .lines()
        .filter(|l| l.starts_with("wsrelay_cluster_pull_starts_total{"))
        .collect();
    println!("B's pull counter: {pulls:?}");
    let counted: f64 = pulls
        .iter()
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert!(counted >= 1.0, "B counted its pull, by outcome: {pulls:?}");
    let e = wait_entry(
        cl.a.http,
        "cam",
        10 * SECOND,
        "B gone from A's edges",
        |e| {
            !e["edges"]
                .as_array()
                .is_some_and(|a| a.contains(&Value::from(cl.b.id.as_str())))
        },
    )
    .await;
    println!(
        "A's edges once B stopped pulling ({:?} after): {}",
        left.elapsed(),
        e["edges"]
    );
    for r in on_c.iter_mut() {
        r.assert_alive().await;
    }
    drop(on_c);
    cl.stop().await;
}

/// One publisher per name cluster-wide: a second one on another node is refused
/// (RTMP: ffmpeg exits with an error; HTTP: 409) and the first goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_publisher_on_another_node_is_refused() {
    let _turn = SERIAL.lock().await;
    let mut cl = Cluster::start("second", 10_000).await;
    let mut first = publish(&cl.a, "solo", common::media()).await;
    let mut player = Reader::spawn("A-ws", Player::ws(cl.a.http, "solo").await);

    let asked = Instant::now();
    let stderr = refused(common::ffmpeg_publish(
        &cl.c.rtmp_url("solo"),
        common::media(),
        &[],
    ))
    .await;
    println!(
        "RTMP publisher on C refused in {:?}: {}",
        asked.elapsed(),
        stderr.trim()
    );
    for node in [&cl.b, &cl.c, &cl.a] {
        let (status, body) = post_publish_status(node.http, "solo").await;
        assert_eq!(status, 409, "HTTP publisher on {}: {body}", node.label);
    }
    // A refused duplicate, even on the origin itself, leaves the live publisher's
    // lease alone: the name is still taken everywhere.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        metric(cl.a.http, "wsrelay_cluster_leases").await,
        Some(1.0),
        "A still holds the lease after refusing a duplicate publisher"
    );
    for node in [&cl.b, &cl.c] {
        let (status, body) = post_publish_status(node.http, "solo").await;
        assert_eq!(
            status, 409,
            "HTTP publisher on {} after a duplicate was refused on A: {body}",
            node.label
        );
    }

    // The first publisher and its players go on; C's players get it through a pull.
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first publisher still runs"
    );
    let now = Instant::now();
    player.wait_video_since(now, 50, 10 * SECOND).await;
    let mut on_c = Reader::spawn("C-ws", Player::ws(cl.c.http, "solo").await);
    on_c.wait_video_since(now, 25, 15 * SECOND).await;
    let e = stream_entry(cl.c.http, "solo").await.expect("listed on C");
    assert_eq!(e["pulled_from"], cl.a.id.as_str(), "{e}");
    let e = stream_entry(cl.a.http, "solo").await.expect("listed on A");
    assert_eq!(e["origin"]["node"], cl.a.id.as_str(), "{e}");
    assert_ne!(e["publisher"], "pull", "{e}");
    drop((player, on_c));
    cl.stop().await;
}

/// The origin dies (`kill -9`); its lease expires, the publisher republishes the
/// same name on C within the grace period, and B's players, still connected,
/// continue from the new origin with monotonic timestamps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_players_continue_when_the_origin_dies_and_the_stream_is_republished() {
    let _turn = SERIAL.lock().await;
    let mut cl = Cluster::start("republish", 15_000).await;
    let mut publisher = publish(&cl.a, "live1", long_media()).await;
    let t_play = Instant::now();
    let mut on_b = ws_readers(&cl.b, "live1", 3).await;
    for r in &mut on_b {
        r.wait_video_since(t_play, 25, 20 * SECOND).await;
    }

    let t_kill = Instant::now();
    cl.a.crash().await;
    let _ = publisher.kill().await;

    // The encoder reconnects to C until the name is free (the dead node's lease
    // expires): refused attempts exit, the accepted one keeps running.
    let mut attempts = 0;
    let mut republisher = 'attempts: loop {
        attempts += 1;
        let mut child = common::ffmpeg_publish(&cl.c.rtmp_url("live1"), long_media(), &[]);
        let tried = Instant::now();
        while tried.elapsed() < 5 * SECOND {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(!status.success(), "a refused publisher fails");
                assert!(
                    t_kill.elapsed() < 13 * SECOND,
                    "the name was not free for a publisher on C {:?} after A died \
                     ({attempts} attempts; lease_ttl_ms 5000, grace 15 s)",
                    t_kill.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue 'attempts;
            }
            if stream_entry(cl.c.http, "live1")
                .await
                .is_some_and(|e| e["publisher"] == "rtmp")
            {
                break 'attempts child;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("publisher on C neither refused nor admitted within 5 s");
    };
    let t_republish = Instant::now();
    println!(
        "republish on C admitted {:?} after kill -9 A ({attempts} attempts)",
        t_republish - t_kill
    );
    common::wait_live(cl.c.http, "live1").await;
    for r in &mut on_b {
        let resumed = r.wait_video_since(t_kill, 1, 20 * SECOND).await;
        r.wait_video_since(t_republish, 50, 20 * SECOND).await;
        println!("{}: video again {resumed:?} after the kill", r.label);
    }
    let e = wait_entry(cl.b.http, "live1", 10 * SECOND, "B pulls from C", |e| {
        e["pulled_from"] == cl.c.id.as_str()
    })
    .await;
    assert_eq!(e["origin"]["node"], cl.c.id.as_str(), "{e}");
    assert_eq!(e["players"], 3, "{e}");
    let e = stream_entry(cl.c.http, "live1").await.expect("listed on C");
    assert_eq!(e["edges"], serde_json::json!([cl.b.id]), "{e}");
    // The dead node leaves the registry on its own.
    let took = cl.wait_registered(15 * SECOND).await;
    println!(
        "A gone from /api/cluster {:?} after the kill",
        t_kill.elapsed().min(took + (Instant::now() - t_kill))
    );
    for r in &mut on_b {
        r.assert_alive().await;
    }
    drop(on_b);
    let _ = republisher.kill().await;
    cl.stop().await;
}

/// An edge dies (`kill -9`): its own players end; the origin's players and the other
/// edge's players see no gap over 1 s, and the origin drops the dead edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_edge_affects_only_its_own_players() {
    let _turn = SERIAL.lock().await;
    let mut cl = Cluster::start("edgekill", 10_000).await;
    let _publisher = publish(&cl.a, "show", long_media()).await;
    let t_play = Instant::now();
    let mut others = vec![
        Reader::spawn("A-ws", Player::ws(cl.a.http, "show").await),
        Reader::spawn("C-http", Player::http(cl.c.http, "show").await),
        Reader::spawn("C-ws", Player::ws(cl.c.http, "show").await),
    ];
    let mut on_b = ws_readers(&cl.b, "show", 2).await;
    for r in others.iter_mut().chain(on_b.iter_mut()) {
        r.wait_video_since(t_play, 25, 20 * SECOND).await;
    }
    wait_entry(cl.a.http, "show", 10 * SECOND, "B and C on A", |e| {
        e["edges"].as_array().is_some_and(|a| a.len() == 2)
    })
    .await;

    let t_kill = Instant::now();
    cl.b.crash().await;
    for r in &mut on_b {
        let end = r.wait_end(10 * SECOND).await;
        println!("{} ended with B: {end}", r.label);
    }
    tokio::time::sleep(4 * SECOND).await;
    for r in &mut others {
        r.assert_alive().await;
        let gap = r.max_gap(t_kill - SECOND, Instant::now());
        println!("{}: longest gap around the kill {gap:?}", r.label);
        assert!(gap < SECOND, "{}: a gap of {gap:?} when B died", r.label);
        assert!(
            r.video_since(t_kill) >= 75,
            "{}: {} frames",
            r.label,
            r.video_since(t_kill)
        );
    }
    let e = wait_entry(cl.a.http, "show", 10 * SECOND, "only C pulls", |e| {
        e["edges"] == serde_json::json!([cl.c.id])
    })
    .await;
    println!(
        "A's edges {:?} after the kill: {}",
        t_kill.elapsed(),
        e["edges"]
    );
    cl.wait_registered(15 * SECOND).await;
    println!(
        "B gone from /api/cluster {:?} after the kill",
        t_kill.elapsed()
    );
    let now = Instant::now();
    for r in &mut others {
        r.wait_video_since(now, 25, 10 * SECOND).await;
    }
    drop((others, on_b));
    cl.stop().await;
}

/// Redis stalls (`SIGSTOP`) for 10 s: an edge stream that is flowing keeps flowing
/// (no gap over 200 ms), a new remote play and a new publisher get 503, `/healthz`
/// stays 200; after `SIGCONT` remote plays work again and the leases and
/// registrations are back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_stall_keeps_flowing_streams_and_refuses_new_remote_plays() {
    let _turn = SERIAL.lock().await;
    let mut cl = Cluster::start("stall", 10_000).await;
    let _one = publish(&cl.a, "one", long_media()).await;
    let _two = publish(&cl.a, "two", long_media()).await;
    let t_play = Instant::now();
    let mut on_b = ws_readers(&cl.b, "one", 2).await;
    for r in &mut on_b {
        r.wait_video_since(t_play, 50, 20 * SECOND).await;
    }
    let before = Instant::now();
    tokio::time::sleep(3 * SECOND).await;
    for r in &on_b {
        println!(
            "{}: longest gap before the stall {:?}",
            r.label,
            r.max_gap(before, Instant::now())
        );
    }

    let t_stop = Instant::now();
    signal(cl.redis.pid, "STOP");
    // /healthz on every node, every 500 ms, through the stall.
    let addrs: Vec<SocketAddr> = cl.alive().iter().map(|n| n.http).collect();
    let health = tokio::spawn(async move {
        let mut checks = 0;
        while t_stop.elapsed() < Duration::from_millis(9500) {
            for &addr in &addrs {
                let asked = Instant::now();
                let got =
                    tokio::time::timeout(2 * SECOND, common::http_get(addr, "/healthz")).await;
                assert!(
                    matches!(got, Ok(Ok(_))),
                    "/healthz on {addr} during the Redis stall: {got:?} after {:?}",
                    asked.elapsed()
                );
                checks += 1;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        checks
    });
    tokio::time::sleep(SECOND).await;
    // A new remote play: C must ask Redis who has "two"; Redis is away: 503.
    let asked = Instant::now();
    let (status, head, _) = common::get_head(cl.c.http, "/live/two.flv", "").await;
    let took = asked.elapsed();
    println!("remote play on C during the stall: {status} in {took:?}");
    assert_eq!(status, 503, "{head}");
    assert!(took < 8 * SECOND, "the 503 took {took:?}");
    // A new publisher cannot take a lease either: 503, not a silent second origin.
    let asked = Instant::now();
    let (status, body) = post_publish_status(cl.c.http, "three").await;
    println!(
        "new publisher on C during the stall: {status} in {:?}",
        asked.elapsed()
    );
    assert_eq!(status, 503, "{body}");
    // The nodes say Redis is away.
    let deadline = t_stop + 9 * SECOND;
    loop {
        let v = json(cl.b.http, "/api/cluster").await;
        if v["redis"] == "unavailable" {
            println!(
                "B reports redis unavailable {:?} into the stall",
                t_stop.elapsed()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B still says {v} during the stall"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let until = t_stop + 10 * SECOND;
    tokio::time::sleep_until(until.into()).await;
    signal(cl.redis.pid, "CONT");
    let t_cont = Instant::now();
    let checks = health.await.expect("every /healthz answered 200");
    println!("{checks} /healthz checks during the stall, all 200");
    for r in &mut on_b {
        r.assert_alive().await;
        let gap = r.max_gap(t_stop, t_cont);
        let frames = r.video_since(t_stop) - r.video_since(t_cont);
        println!(
            "{}: longest gap during the stall {gap:?}, {frames} video frames",
            r.label
        );
        assert!(
            gap <= Duration::from_millis(200),
            "{}: gap {gap:?}",
            r.label
        );
        assert!(frames >= 200, "{}: {frames} video frames in 10 s", r.label);
    }

    // Back: remote plays work again within a few seconds.
    let mut tries = 0;
    let mut two = loop {
        tries += 1;
        match try_ws(cl.c.http, "two").await {
            Ok(p) => break Reader::spawn("C-two", Player::Ws(Box::new(p))),
            Err(status) => {
                assert!(
                    t_cont.elapsed() < 10 * SECOND,
                    "remote play on C still {status} {:?} after SIGCONT",
                    t_cont.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    let admitted = t_cont.elapsed();
    two.wait_video_since(t_cont, 25, 15 * SECOND).await;
    println!("remote play on C admitted {admitted:?} after SIGCONT ({tries} tries)");
    let took = cl.wait_registered(10 * SECOND).await;
    println!("registrations ok {took:?} after the play came back");
    let (_, took) = wait_metric(cl.a.http, "wsrelay_cluster_leases", 10 * SECOND, |v| {
        v == 2.0
    })
    .await;
    println!(
        "A holds both leases {:?} after SIGCONT",
        t_cont.elapsed().max(took)
    );
    let (status, body) = post_publish_status(cl.b.http, "one").await;
    assert_eq!(status, 409, "{body}");
    for r in &mut on_b {
        r.wait_video_since(t_cont, 50, 10 * SECOND).await;
    }
    let errors = metric(cl.c.http, "wsrelay_cluster_redis_errors_total").await;
    println!("C's wsrelay_cluster_redis_errors_total after the stall: {errors:?}");
    drop((on_b, two));
    cl.stop().await;
}

/// Redis dies and comes back empty on the same socket: within a few seconds every
/// node is registered again, A holds its stream's lease again (a second publisher
/// on B gets 409), and the edge stream flowed on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restarted_empty_gets_registrations_and_leases_back() {
    let _turn = SERIAL.lock().await;
    let mut cl = Cluster::start("restart", 10_000).await;
    let _publisher = publish(&cl.a, "keep", long_media()).await;
    let t_play = Instant::now();
    let mut on_b = Reader::spawn("B-ws", Player::ws(cl.b.http, "keep").await);
    on_b.wait_video_since(t_play, 50, 20 * SECOND).await;
    let keys = cl.redis.keys().await.expect("DBSIZE");
    println!("keys in Redis before: {keys}");

    let t_kill = Instant::now();
    cl.redis.stop("KILL").await;
    tokio::time::sleep(SECOND).await;
    let dir = cl.dir.clone();
    cl.redis = Redis::start(&dir).await;
    let t_back = Instant::now();
    assert_eq!(cl.redis.keys().await, Some(0), "a new, empty Redis");

    let took = cl.wait_registered(10 * SECOND).await;
    println!("3 nodes registered again {took:?} after the new Redis started");
    let (_, took) = wait_metric(cl.a.http, "wsrelay_cluster_leases", 10 * SECOND, |v| {
        v == 1.0
    })
    .await;
    println!("A's lease gauge 1 again {took:?} later");
    // Anything but 409 would mean the name was free for B: a second origin.
    let (status, body) = post_publish_status(cl.b.http, "keep").await;
    assert_eq!(
        status, 409,
        "a second publisher on B after the Redis restart: {body}"
    );
    let e = stream_entry(cl.b.http, "keep").await.expect("listed on B");
    assert_eq!(e["origin"]["node"], cl.a.id.as_str(), "{e}");
    let keys = cl.redis.keys().await.expect("DBSIZE");
    println!("keys in the new Redis: {keys}");
    assert!(keys > 0);

    on_b.assert_alive().await;
    let gap = on_b.max_gap(t_kill, Instant::now());
    println!("B's player: longest gap across the restart {gap:?}");
    assert!(gap < SECOND, "gap {gap:?}");
    on_b.wait_video_since(t_back, 50, 10 * SECOND).await;
    drop(on_b);
    cl.stop().await;
}
