//! `load signal --cluster`: signaling across a 3-node cluster (issue 15).
//!
//! Each run starts its own `redis-server` and three wsrelay nodes A, B, C
//! ([`cluster::start`], the harness config of the single-node signal runs plus the
//! cluster flags), so that no run inherits another's rooms, leases or links. Every
//! room is homed on A: the first peer of each room joins there (a node takes a room's
//! lease when a peer of it joins there first). Then:
//!
//! - **traffic**: pairs of talkers, one room per pair, placed by `--placements`:
//!   `same` (both on A: no link), `hop` (A and B: each message crosses one link),
//!   `cross` (B and C, with an idle anchor peer joined on A first: each message
//!   crosses two links, edge → home → edge), `edge` (both on B, anchor on A: two
//!   link crossings, out and back). They relay messages as in `load signal`
//!   ([`signal::start`]) at each `--rate`; the nodes' CPU comes from their threads'
//!   `se.sum_exec_runtime` (µs resolution; a 1,000 msg/s run costs a few % of a core).
//! - **idle**: `--idle-peers` idle peers, a third on each node, in rooms of
//!   `--idle-per-room` spanning the three nodes. First A's third joins (A becomes every
//!   room's home), then B's and C's. RSS deltas give A's cost per local peer, A's
//!   cost per remote peer (the home's end of the peer's link) and B's and C's cost
//!   per peer (the client's socket and the link's other end).
//!
//! Before the traffic and after the idle joins the harness reads `/api/rooms` on A
//! (cluster-wide) and checks each room's home and each peer's node.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use serde::Serialize;

use crate::cluster::{self, Started, sched_cpu_secs};
use crate::procfs::{self, Proc};
use crate::report::{f, three};
use crate::signal::{self, JoinSpec, Rate, Talker};

/// Node names (log files `OUT_DIR/signal-cluster-{a,b,c}.log`); A is every room's home.
const NAMES: [&str; 3] = ["a", "b", "c"];
const LABELS: [&str; 3] = ["A", "B", "C"];

/// Where a pair's two talkers connect (every room is homed on A).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Placement {
    /// Both on A, the room's home: no link.
    Same,
    /// One on A, one on B: each message crosses one link.
    Hop,
    /// One on B, one on C (an idle anchor on A homes the room): two links.
    Cross,
    /// Both on B (an idle anchor on A homes the room): two links, out and back.
    Edge,
}

impl Placement {
    fn name(self) -> &'static str {
        match self {
            Placement::Same => "same",
            Placement::Hop => "hop",
            Placement::Cross => "cross",
            Placement::Edge => "edge",
        }
    }

    /// The nodes of the two talkers (0 = A).
    fn nodes(self) -> [usize; 2] {
        match self {
            Placement::Same => [0, 0],
            Placement::Hop => [0, 1],
            Placement::Cross => [1, 2],
            Placement::Edge => [1, 1],
        }
    }

    /// Links each message crosses.
    fn links(self) -> usize {
        self.nodes().iter().filter(|&&n| n != 0).count()
    }
}

/// What `load signal --cluster` runs.
#[derive(Debug)]
pub struct Settings {
    /// wsrelay binary.
    pub server_bin: PathBuf,
    /// `redis-server` binary.
    pub redis_server: PathBuf,
    /// Logs, the config, outputs.
    pub out_dir: PathBuf,
    /// JSON lines (appended).
    pub json: PathBuf,
    /// Pairs of talkers per placement.
    pub pairs: usize,
    /// Placements, one run each per rate.
    pub placements: Vec<Placement>,
    /// Total message rates.
    pub rates: Vec<Rate>,
    /// Outstanding pings per talker in `max` mode.
    pub inflight: usize,
    /// Time from the last join to the window.
    pub warmup: Duration,
    /// Measurement window.
    pub window: Duration,
    /// Idle peers over the three nodes (0: no idle test).
    pub idle_peers: usize,
    /// Peers per idle room.
    pub idle_per_room: usize,
    /// `--strict`.
    pub strict: bool,
}

/// One traffic run (a JSON line).
#[derive(Debug, Serialize)]
struct Run {
    /// `signal-cluster`.
    kind: &'static str,
    /// `same`, `hop`, `cross` or `edge`.
    placement: &'static str,
    /// The talkers' nodes, e.g. `B+C` (rooms are homed on A).
    talkers: String,
    /// Links each message crosses.
    links: usize,
    /// Pairs (rooms).
    pairs: usize,
    /// Talkers joined.
    peers: usize,
    /// Offered rate, messages/s in total, or `max`.
    rate: String,
    /// Messages delivered to talkers per second in the window.
    relayed_per_s: f64,
    /// Delivery latency ms: p50/p99/max.
    latency_ms: [Option<f64>; 3],
    /// Messages sent / delivered in the window.
    sent: u64,
    delivered: u64,
    /// Open loop: over 2 % of the messages sent in the window did not arrive in it;
    /// `max`: nothing arrived.
    lost: bool,
    /// `error` messages by code.
    errors: BTreeMap<String, usize>,
    /// Failed peers by reason.
    failures: BTreeMap<String, usize>,
    /// CPU of A, B, C in the window, % of one core (threads' `sum_exec_runtime`).
    node_cpu_pct: [Option<f64>; 3],
    /// Their sum.
    cpu_pct_sum: Option<f64>,
    /// Node CPU (all three) per delivered message, µs.
    cpu_us_per_msg: Option<f64>,
    /// Redis commands/s in the window (`INFO commandstats`).
    redis_cmds_per_s: Option<f64>,
    /// Redis CPU, % of one core.
    redis_cpu_pct: Option<f64>,
    /// Harness CPU, % of one core.
    harness_cpu_pct: Option<f64>,
    /// What `/api/rooms` showed that it should not have.
    problems: Vec<String>,
    /// Load average at the start.
    loadavg: String,
    /// Window, s.
    window_s: f64,
}

/// The idle test (a JSON line).
#[derive(Debug, Serialize)]
struct Idle {
    /// `signal-cluster-idle`.
    kind: &'static str,
    /// Peers asked for on each node.
    per_node: usize,
    /// Rooms (all homed on A).
    rooms: usize,
    /// Peers joined on A, B, C.
    joined: [usize; 3],
    /// Time to join A's peers, then B's and C's, s.
    join_s: [f64; 2],
    /// RSS MiB of A, B, C, each [at the start, with A's peers, with everyone].
    rss_mib: [[Option<f64>; 3]; 3],
    /// A: (RSS with its own peers − at the start) / its peers, KiB.
    home_kib_per_local_peer: Option<f64>,
    /// A: (RSS with everyone − with its own peers) / B's and C's peers, KiB: the
    /// home's side of a remote peer (its link's end and the peer in the room).
    home_kib_per_remote_peer: Option<f64>,
    /// B, C: (RSS with everyone − at the start) / their peers, KiB: the client's
    /// socket and its link.
    edge_kib_per_peer: [Option<f64>; 2],
    /// Node CPU while idle with A's peers only, % of one core (A, B, C).
    node_cpu_pct_home_only: [Option<f64>; 3],
    /// Redis commands/s then.
    redis_cmds_per_s_home_only: Option<f64>,
    /// Node CPU while idle with everyone joined, % of one core (A, B, C).
    node_cpu_pct: [Option<f64>; 3],
    /// Redis commands/s while idle, total and by name.
    redis_cmds_per_s: Option<f64>,
    redis_cmds_by_name: BTreeMap<String, f64>,
    /// Failed peers by reason.
    failures: BTreeMap<String, usize>,
    /// What `/api/rooms` showed that it should not have.
    problems: Vec<String>,
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// Runs every placement at every rate, then the idle test; `Ok(false)` when
/// `--strict` and something was off.
pub async fn main(s: Settings) -> Result<bool, String> {
    let version = cluster::redis_version(&s.redis_server)?;
    if s.pairs == 0 {
        return Err("--peers must be at least 2 (one pair) with --cluster".into());
    }
    let limit = crate::nofile_limit().saturating_sub(200);
    if 3 * s.pairs > limit || s.idle_peers > limit {
        return Err(format!(
            "more peers than the open-file limit ({}) allows: raise `ulimit -n`",
            crate::nofile_limit()
        ));
    }
    println!(
        "3-node cluster ({version}, nodes A B C on loopback), rooms homed on A; {} pairs per run; \
         load average {}",
        s.pairs,
        procfs::loadavg()
    );
    let mut clean = true;
    let mut runs = Vec::new();
    if !s.rates.is_empty() && !s.placements.is_empty() {
        println!(
            "{:<9} {:<7} {:>5} {:>5} {:>7} {:>10} {:>18} {:>15} {:>6} {:>6} {:>7} {:>5}  errors/failures",
            "placement",
            "talkers",
            "links",
            "pairs",
            "rate",
            "relayed/s",
            "lat p50/99/max ms",
            "CPU% A/B/C",
            "sum%",
            "µs/msg",
            "redis/s",
            "harn%"
        );
    }
    for &rate in &s.rates {
        for &placement in &s.placements {
            eprintln!(
                "run: {} pairs, {rate} msg/s (load average {})",
                placement.name(),
                procfs::loadavg()
            );
            let r = run(&s, placement, rate).await?;
            print_run(&r);
            clean &= r.errors.is_empty()
                && r.failures.is_empty()
                && r.problems.is_empty()
                && r.peers == 2 * s.pairs
                && !r.lost;
            crate::report::json_lines(&s.json, std::slice::from_ref(&r))?;
            runs.push(r);
        }
    }
    print_comparison(&runs);
    let mut problems: Vec<String> = runs
        .iter()
        .flat_map(|r| {
            r.problems
                .iter()
                .map(|p| format!("{} {}: {p}", r.placement, r.rate))
        })
        .collect();
    if s.idle_peers > 0 {
        eprintln!(
            "run: idle, {} peers (load average {})",
            s.idle_peers,
            procfs::loadavg()
        );
        let r = idle(&s).await?;
        print_idle(&r);
        clean &= r.failures.is_empty()
            && r.problems.is_empty()
            && r.joined.iter().all(|&j| j == r.per_node);
        problems.extend(r.problems.iter().map(|p| format!("idle: {p}")));
        crate::report::json_lines(&s.json, std::slice::from_ref(&r))?;
    }
    println!();
    if problems.is_empty() {
        println!(
            "cluster checks: ok (/api/rooms on A: every room homed on A, every peer on its node)"
        );
    } else {
        println!("cluster checks: PROBLEMS");
        for p in problems {
            println!("  - {p}");
        }
    }
    println!("JSON lines: {}", s.json.display());
    Ok(clean || !s.strict)
}

async fn start_cluster(s: &Settings) -> Result<Started, String> {
    cluster::start(
        &s.redis_server,
        &s.server_bin,
        &s.out_dir,
        "signal-cluster",
        NAMES,
    )
    .await
}

/// CPU seconds (precise) of each node, of Redis, and the instant.
struct Sample {
    at: Instant,
    nodes: [Option<f64>; 3],
    redis: Option<f64>,
    cmds: Option<BTreeMap<String, u64>>,
}

async fn sample(c: &Started) -> Sample {
    let cpu = |n: usize| c.nodes[n].target.pid.and_then(sched_cpu_secs);
    Sample {
        at: Instant::now(),
        nodes: [cpu(0), cpu(1), cpu(2)],
        redis: sched_cpu_secs(c.redis.pid()),
        cmds: c.redis.commands().await,
    }
}

/// What happened between two samples.
struct Usage {
    /// CPU of A, B, C, % of one core.
    nodes: [Option<f64>; 3],
    /// Redis CPU, % of one core.
    redis: Option<f64>,
    /// Redis commands/s by name.
    cmds: Option<BTreeMap<String, f64>>,
}

fn between(a: &Sample, b: &Sample) -> Usage {
    let wall = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
    let pct =
        |x: Option<f64>, y: Option<f64>| x.zip(y).map(|(x, y)| 100.0 * (y - x).max(0.0) / wall);
    let cmds = a.cmds.as_ref().zip(b.cmds.as_ref()).map(|(x, y)| {
        y.iter()
            .map(|(k, v)| {
                let before = x.get(k).copied().unwrap_or(0);
                (k.clone(), v.saturating_sub(before) as f64 / wall)
            })
            .filter(|(_, v)| *v > 0.0)
            .collect()
    });
    Usage {
        nodes: [0, 1, 2].map(|i| pct(a.nodes[i], b.nodes[i])),
        redis: pct(a.redis, b.redis),
        cmds,
    }
}

/// `/api/rooms` on A (cluster-wide): each room's home and each peer's node.
/// `expect`: room → (peer → node index); returns what differs.
async fn check_rooms(
    c: &Started,
    expect: &BTreeMap<String, BTreeMap<String, usize>>,
) -> Vec<String> {
    let v = match cluster::get_json(c.nodes[0].target.http, "/api/rooms").await {
        Ok(v) => v,
        Err(e) => return vec![format!("/api/rooms on A: {e}")],
    };
    let mut problems = Vec::new();
    let mut seen = 0;
    let mut wrong_home = 0;
    let mut wrong_node = 0;
    let mut missing_peer = Vec::new();
    for room in v["rooms"].as_array().into_iter().flatten() {
        let Some(name) = room["room"].as_str() else {
            continue;
        };
        let Some(peers) = expect.get(name) else {
            continue;
        };
        seen += 1;
        if room["home"].as_str() != Some(c.ids[0].as_str()) {
            wrong_home += 1;
        }
        let listed: BTreeMap<&str, &str> = room["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p["peer"].as_str()?, p["node"].as_str()?)))
            .collect();
        for (peer, &node) in peers {
            match listed.get(peer.as_str()) {
                None => missing_peer.push(format!("{peer} in {room}")),
                Some(id) if *id != c.ids[node] => wrong_node += 1,
                Some(_) => {}
            }
        }
    }
    if seen != expect.len() {
        problems.push(format!(
            "/api/rooms lists {seen} of the {} rooms",
            expect.len()
        ));
    }
    if wrong_home > 0 {
        problems.push(format!("{wrong_home} rooms not homed on A"));
    }
    if !missing_peer.is_empty() {
        problems.push(format!(
            "{} joined peers missing in /api/rooms: {}",
            missing_peer.len(),
            missing_peer.join(", ")
        ));
    }
    if wrong_node > 0 {
        problems.push(format!("{wrong_node} peers listed on another node"));
    }
    if let Some(u) = v["unreachable"].as_array().filter(|u| !u.is_empty()) {
        problems.push(format!("/api/rooms: unreachable nodes {u:?}"));
    }
    problems
}

/// One placement at one rate, on a fresh cluster.
async fn run(s: &Settings, placement: Placement, rate: Rate) -> Result<Run, String> {
    let loadavg = procfs::loadavg();
    let c = start_cluster(s).await?;
    let addr = |n: usize| c.nodes[n].target.http;
    let [x, y] = placement.nodes();
    let anchored = x != 0;
    // First the peer that makes A each room's home (an anchor, or the talker on A),
    // then the others. Talkers are p{2k} (on x) and p{2k+1} (on y) in room r{k}.
    let mut first: Vec<(JoinSpec, Option<usize>)> = Vec::new();
    let mut second: Vec<(JoinSpec, Option<usize>)> = Vec::new();
    let mut expect: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for k in 0..s.pairs {
        let room = format!("r{k}");
        let spec = |node: usize, peer: String| JoinSpec {
            addr: addr(node),
            room: room.clone(),
            peer,
        };
        let (a, b) = (2 * k, 2 * k + 1);
        if anchored {
            first.push((spec(0, format!("a{k}")), None));
            second.push((spec(x, format!("p{a}")), Some(a)));
        } else {
            first.push((spec(x, format!("p{a}")), Some(a)));
        }
        second.push((spec(y, format!("p{b}")), Some(b)));
        let peers = expect.entry(room.clone()).or_default();
        peers.insert(format!("p{a}"), x);
        peers.insert(format!("p{b}"), y);
        if anchored {
            peers.insert(format!("a{k}"), 0);
        }
    }
    let mut failures = BTreeMap::new();
    let mut talkers = Vec::new();
    let mut anchors = Vec::new();
    for phase in [first, second] {
        let specs: Vec<JoinSpec> = phase.iter().map(|(j, _)| j.clone()).collect();
        let sockets = signal::join_all(&specs, &mut failures).await;
        for ((_, me), ws) in phase.into_iter().zip(sockets) {
            let Some(ws) = ws else { continue };
            match me {
                // Partners: p{2k} ↔ p{2k+1}.
                Some(me) => talkers.push(Talker { ws, me, to: me ^ 1 }),
                None => anchors.push(ws),
            }
        }
    }
    let anchors = signal::hold(anchors);
    let peers = talkers.len();
    let problems = check_rooms(&c, &expect).await;

    let traffic = signal::start(talkers, rate, s.inflight, s.warmup, s.window);
    tokio::time::sleep_until(traffic.w_from.into()).await;
    let s0 = sample(&c).await;
    let me0 = Proc::Myself.sample();
    tokio::time::sleep_until(traffic.w_to.into()).await;
    let s1 = sample(&c).await;
    let me1 = Proc::Myself.sample();
    let out = traffic.finish().await?;
    anchors.release(&mut failures).await;
    drop(c);
    for (k, v) in &out.failures {
        *failures.entry(k.clone()).or_insert(0) += v;
    }
    let Usage {
        nodes: node_cpu,
        redis: redis_cpu,
        cmds,
    } = between(&s0, &s1);
    let window_s = s.window.as_secs_f64();
    let cpu_pct_sum = node_cpu.iter().try_fold(0.0, |acc, c| c.map(|c| acc + c));
    Ok(Run {
        kind: "signal-cluster",
        placement: placement.name(),
        talkers: format!("{}+{}", LABELS[x], LABELS[y]),
        links: placement.links(),
        pairs: s.pairs,
        peers,
        rate: rate.to_string(),
        relayed_per_s: out.delivered as f64 / window_s,
        latency_ms: out.latency_ms(),
        sent: out.sent,
        delivered: out.delivered,
        lost: out.lost(rate),
        errors: out.errors,
        failures,
        node_cpu_pct: node_cpu,
        cpu_pct_sum,
        cpu_us_per_msg: cpu_pct_sum
            .filter(|_| out.delivered > 0)
            .map(|p| p / 100.0 * window_s * 1e6 / out.delivered as f64),
        redis_cmds_per_s: cmds.map(|c| c.values().sum()),
        redis_cpu_pct: redis_cpu,
        harness_cpu_pct: me0.until(&me1).map(|c| c.1),
        problems,
        loadavg,
        window_s,
    })
}

fn print_run(r: &Run) {
    let problems: Vec<String> = r
        .errors
        .iter()
        .map(|(k, v)| format!("{v}× error {k}"))
        .chain(r.failures.iter().map(|(k, v)| format!("{v}× {k}")))
        .chain(r.problems.iter().cloned())
        .chain(
            r.lost
                .then(|| format!("lost: {} sent, {} delivered", r.sent, r.delivered)),
        )
        .collect();
    println!(
        "{:<9} {:<7} {:>5} {:>5} {:>7} {:>10.0} {:>18} {:>15} {:>6} {:>6} {:>7} {:>5}  {}",
        r.placement,
        r.talkers,
        r.links,
        r.pairs,
        r.rate,
        r.relayed_per_s,
        format!(
            "{}/{}/{}",
            f(r.latency_ms[0], 2),
            f(r.latency_ms[1], 2),
            f(r.latency_ms[2], 1)
        ),
        three(&r.node_cpu_pct, 1),
        f(r.cpu_pct_sum, 1),
        f(r.cpu_us_per_msg, 1),
        f(r.redis_cmds_per_s, 0),
        f(r.harness_cpu_pct, 0),
        if problems.is_empty() {
            "-".to_owned()
        } else {
            problems.join("; ")
        }
    );
}

/// Each other placement against `same` at the same rate.
fn print_comparison(runs: &[Run]) {
    let mut lines = Vec::new();
    for base in runs.iter().filter(|r| r.placement == "same") {
        for r in runs
            .iter()
            .filter(|r| r.rate == base.rate && r.placement != "same")
        {
            let d = |a: Option<f64>, b: Option<f64>| {
                a.zip(b)
                    .map_or("-".to_owned(), |(a, b)| format!("{:+.2}", a - b))
            };
            let ratio = match (r.cpu_us_per_msg, base.cpu_us_per_msg) {
                (Some(a), Some(b)) if b > 0.0 => format!(" ({:.1}x)", a / b),
                _ => String::new(),
            };
            lines.push(format!(
                "  {} msg/s: {} ({}, {} link{}) vs same: latency p50 {} ms, p99 {} ms; \
                 node CPU per message {} vs {} µs{ratio}; relayed/s {:.0} vs {:.0}",
                r.rate,
                r.placement,
                r.talkers,
                r.links,
                if r.links == 1 { "" } else { "s" },
                d(r.latency_ms[0], base.latency_ms[0]),
                d(r.latency_ms[1], base.latency_ms[1]),
                f(r.cpu_us_per_msg, 1),
                f(base.cpu_us_per_msg, 1),
                r.relayed_per_s,
                base.relayed_per_s,
            ));
        }
    }
    if !lines.is_empty() {
        println!();
        println!("against same-node pairs (both on the home A) at the same rate:");
        for l in lines {
            println!("{l}");
        }
    }
}

/// Idle peers, a third per node, rooms spanning the nodes, all homed on A.
async fn idle(s: &Settings) -> Result<Idle, String> {
    let per_node = s.idle_peers / 3;
    let rooms = (3 * per_node).div_ceil(s.idle_per_room.max(1)).max(1);
    let c = start_cluster(s).await?;
    let rss = |c: &Started| {
        c.nodes
            .iter()
            .map(|n| n.target.pid.and_then(|p| Proc::Pid(p).rss_bytes()))
            .collect::<Vec<_>>()
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss0 = rss(&c);
    let mut expect: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let specs = |node: usize| -> Vec<JoinSpec> {
        (0..per_node)
            .map(|j| JoinSpec {
                addr: c.nodes[node].target.http,
                room: format!("r{}", j % rooms),
                peer: format!("{}{j}", NAMES[node]),
            })
            .collect()
    };
    let mut failures = BTreeMap::new();
    // A's peers: A becomes every room's home.
    let t0 = Instant::now();
    let on_a = signal::join_all(&specs(0), &mut failures).await;
    let join_a = t0.elapsed().as_secs_f64();
    let mut joined = [0; 3];
    joined[0] = on_a.iter().filter(|w| w.is_some()).count();
    let holders_a = signal::hold(on_a.into_iter().flatten());
    // Settle, then CPU and Redis with A's peers alone, then memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let a0 = sample(&c).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let a1 = sample(&c).await;
    let rss1 = rss(&c);
    // B's and C's, interleaved.
    let (b, cc) = (specs(1), specs(2));
    let both: Vec<JoinSpec> = b
        .iter()
        .zip(&cc)
        .flat_map(|(x, y)| [x.clone(), y.clone()])
        .collect();
    let t1 = Instant::now();
    let on_bc = signal::join_all(&both, &mut failures).await;
    let join_bc = t1.elapsed().as_secs_f64();
    for (i, ws) in on_bc.iter().enumerate() {
        if ws.is_some() {
            joined[1 + i % 2] += 1;
        }
    }
    let holders_bc = signal::hold(on_bc.into_iter().flatten());
    for (node, list) in [(0, specs(0)), (1, b), (2, cc)] {
        for spec in list {
            expect.entry(spec.room).or_default().insert(spec.peer, node);
        }
    }
    // Settle, then CPU and Redis while idle, then memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s0 = sample(&c).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s1 = sample(&c).await;
    let rss2 = rss(&c);
    let problems = check_rooms(&c, &expect).await;
    holders_a.release(&mut failures).await;
    holders_bc.release(&mut failures).await;
    drop(c);
    let Usage {
        nodes: node_cpu,
        cmds,
        ..
    } = between(&s0, &s1);
    let home_only = between(&a0, &a1);
    let per = |after: Option<u64>, before: Option<u64>, n: usize| {
        after
            .zip(before)
            .filter(|_| n > 0)
            .map(|(a, b)| (a as f64 - b as f64) / 1024.0 / n as f64)
    };
    Ok(Idle {
        kind: "signal-cluster-idle",
        per_node,
        rooms,
        joined,
        join_s: [join_a, join_bc],
        rss_mib: [0, 1, 2].map(|n| [rss0[n], rss1[n], rss2[n]].map(|v| v.map(mib))),
        home_kib_per_local_peer: per(rss1[0], rss0[0], joined[0]),
        home_kib_per_remote_peer: per(rss2[0], rss1[0], joined[1] + joined[2]),
        edge_kib_per_peer: [
            per(rss2[1], rss0[1], joined[1]),
            per(rss2[2], rss0[2], joined[2]),
        ],
        node_cpu_pct_home_only: home_only.nodes,
        redis_cmds_per_s_home_only: home_only.cmds.map(|c| c.values().sum()),
        node_cpu_pct: node_cpu,
        redis_cmds_per_s: cmds.as_ref().map(|c| c.values().sum()),
        redis_cmds_by_name: cmds.unwrap_or_default(),
        failures,
        problems,
    })
}

fn print_idle(r: &Idle) {
    let rss = |n: usize| {
        format!(
            "{} → {} → {} MiB",
            f(r.rss_mib[n][0], 1),
            f(r.rss_mib[n][1], 1),
            f(r.rss_mib[n][2], 1)
        )
    };
    println!();
    println!(
        "idle: {} peers per node ({}/{}/{} joined on A/B/C), {} rooms spanning the nodes, all \
         homed on A; joins {:.1} s (A) + {:.1} s (B and C)",
        r.per_node, r.joined[0], r.joined[1], r.joined[2], r.rooms, r.join_s[0], r.join_s[1]
    );
    println!(
        "  A (home):  RSS {}: {} KiB per local peer; {} KiB per remote peer (its link's end here)",
        rss(0),
        f(r.home_kib_per_local_peer, 2),
        f(r.home_kib_per_remote_peer, 2)
    );
    for (i, n) in [1, 2].into_iter().enumerate() {
        println!(
            "  {} (edge):  RSS {}: {} KiB per peer (client socket + link)",
            LABELS[n],
            rss(n),
            f(r.edge_kib_per_peer[i], 2)
        );
    }
    let by_name: Vec<String> = r
        .redis_cmds_by_name
        .iter()
        .map(|(k, v)| format!("{k} {v:.0}"))
        .collect();
    println!(
        "  idle CPU, % of a core, with A's peers only: A {}, B {}, C {}; Redis {} commands/s",
        f(r.node_cpu_pct_home_only[0], 2),
        f(r.node_cpu_pct_home_only[1], 2),
        f(r.node_cpu_pct_home_only[2], 2),
        f(r.redis_cmds_per_s_home_only, 0),
    );
    println!(
        "  idle CPU, % of a core, with everyone: A {}, B {}, C {}; Redis {} commands/s ({})",
        f(r.node_cpu_pct[0], 2),
        f(r.node_cpu_pct[1], 2),
        f(r.node_cpu_pct[2], 2),
        f(r.redis_cmds_per_s, 0),
        by_name.join(", ")
    );
    if !r.failures.is_empty() || !r.problems.is_empty() {
        println!("  failures: {:?}; problems: {:?}", r.failures, r.problems);
    }
}
