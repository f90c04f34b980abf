//! `load cluster`: one wsrelay node against a 3-node cluster (1 origin + 2 edges on
//! one Redis), on this machine, in one invocation. In this order:
//!
//! 1. **single**: one node without the cluster, N players ([`live::run`], the run
//!    `load live --no-ceiling` makes).
//! 2. The cluster: `redis-server` on a unix socket in a temp dir, three nodes with
//!    `--cluster redis+unix://… --cluster-secret …`, the publisher on the origin.
//!    **Pull cost**: the origin's CPU with no stream, with the publisher only, with 2
//!    local HTTP-FLV players (what a pull is), then with both edges pulling (one
//!    player on each edge, none on the origin).
//! 3. **cluster**: N/2 players on each edge, none on the origin (each edge pulls
//!    the stream once over HTTP-FLV): players kept up, CPU per delivered Gbit per
//!    node and for the three together, Redis commands.
//! 4. **hop**: K players on the origin and K on each edge at the same time: the
//!    publisher→player latency on the edges minus that on the origin is what one
//!    edge hop adds.
//!
//! Latency uses the publisher's send table (see `player.rs`): an edge passes the
//! origin's timestamps through, so the same (type, timestamp) keys match there.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::live::{self, Kind, LiveResult, LiveSettings};
use crate::media::Media;
use crate::player::{self, PlayerConfig, PlayerResult, SendTable};
use crate::procfs::{self, CpuSample, Proc};
use crate::publisher::{self, Pace, Publish, PublishMode, PublishStats};
use crate::report::{f, problems, three};
use crate::server::Target;
use crate::stats::{pct, pct_ms};

/// `cargo bench --bench load -- cluster [options]`.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Players: all on the single node; half on each edge of the cluster.
    #[arg(long, default_value_t = 100)]
    players: usize,
    /// Players per node (origin, edge A, edge B) in the hop-latency phase (0: skip).
    #[arg(long, default_value_t = 20)]
    hop_players: usize,
    /// Length of each origin CPU window of the pull-cost phase, s (0: skip).
    #[arg(long, default_value_t = 3.0)]
    idle_secs: f64,
    /// Seconds between the last join and each measurement window.
    #[arg(long, default_value_t = 2.0)]
    warmup_secs: f64,
    /// Length of the single-node, cluster and hop measurement windows, s.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Players join evenly over this many ms (0: all at once).
    #[arg(long, default_value_t = 1000)]
    ramp_ms: u64,
    /// The publisher runs this long before players join (fills the GOP cache).
    #[arg(long, default_value_t = 1500)]
    prestart_ms: u64,
    /// Player protocol (`ws`: WebSocket-FLV, `http`: HTTP-FLV).
    #[arg(long, value_enum, default_value = "ws")]
    play: crate::Play,
    /// Share of the stream a player must receive in the window to count as kept up.
    #[arg(long, default_value_t = 0.95)]
    keep_up: f64,
    /// …and whose own p99 publisher→player latency is at most this many ms.
    #[arg(long, default_value_t = 1000)]
    keep_up_latency_ms: u64,
    /// The Redis server to start (Debian: `apt-get install redis-server`).
    #[arg(long, default_value = "redis-server")]
    redis_server: PathBuf,
    /// Stream name.
    #[arg(long, default_value = "bench")]
    stream: String,
    /// wsrelay binary to start.
    #[arg(long, default_value = env!("CARGO_BIN_EXE_wsrelay"))]
    server_bin: PathBuf,
    /// Directory for logs, the server config, generated media and default outputs.
    #[arg(long, default_value = "target/bench-load")]
    out_dir: PathBuf,
    /// JSON lines output (appended) [default: OUT_DIR/cluster.jsonl].
    #[arg(long)]
    json: Option<PathBuf>,
    /// Harness worker threads [default: one per core].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Exit with status 1 if any player failed or fell behind, or the cluster did
    /// not look as expected (CI).
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    media: crate::media::MediaArgs,
}

/// One row of the table (one JSON line): a node, or all nodes, in one phase.
#[derive(Debug, Serialize)]
struct Row {
    /// `cluster`.
    kind: &'static str,
    /// `single`, `cluster` or `hop`.
    phase: &'static str,
    /// `node` (single), `origin`, `edge-a`, `edge-b`, `all` (the three nodes).
    node: &'static str,
    /// Players on this node (all nodes for `all`).
    players: usize,
    /// Edge pulls this node serves (origin) or runs (edges), from `/api/streams`.
    pulls: Option<usize>,
    /// Players that got ≥ keep_up of the stream in the window, p99 within the bound.
    kept_up: usize,
    /// Players with the stream's rate but a p99 latency above the bound.
    late: usize,
    /// Players that did not fail but got less than keep_up of the stream.
    behind: usize,
    /// Players that failed, by reason.
    failures: BTreeMap<String, usize>,
    /// Delivered in the window, Mbit/s: to this node's players, plus (origin) the
    /// stream's rate once per edge pull.
    mbit_s: f64,
    /// Server CPU in the window, % of one core (`/proc/PID/stat`; `all`: the sum).
    cpu_pct: Option<f64>,
    /// Server CPU seconds per delivered Gbit.
    cpu_s_per_gbit: Option<f64>,
    /// Server RSS at the end of the window, MiB (`all`: the sum).
    rss_mib: Option<f64>,
    /// Time to first keyframe, ms: p50/p95/p99.
    ttfk_ms: [Option<f64>; 3],
    /// Publisher→player latency of tags sent in the window, ms: p50/p99/max.
    latency_ms: [Option<f64>; 3],
    /// Latency samples.
    latency_samples: usize,
    /// Harness CPU in the window, % of one core.
    harness_cpu_pct: Option<f64>,
    /// Stream bitrate in the window, kbit/s (from the publisher).
    stream_kbps: Option<f64>,
    /// Load average when the phase started.
    loadavg: String,
    /// Window length, s.
    window_s: f64,
}

/// The figures derived from the rows, and what the cluster's API said (one JSON line).
#[derive(Debug, Default, Serialize)]
struct Summary {
    /// `cluster-summary`.
    kind: &'static str,
    /// Players.
    players: usize,
    /// Kept up: single node / cluster (both edges).
    kept_up_single: usize,
    kept_up_cluster: usize,
    /// CPU s per delivered Gbit: single node / all three cluster nodes.
    cpu_s_per_gbit_single: Option<f64>,
    cpu_s_per_gbit_cluster: Option<f64>,
    /// Origin CPU, % of one core, from the threads' `sum_exec_runtime`
    /// (`/proc/PID/task/*/sched`, µs resolution): no stream; publisher only;
    /// publisher + the edges' pulls, no local players.
    origin_cpu_pct_no_stream: Option<f64>,
    origin_cpu_pct_publisher: Option<f64>,
    origin_cpu_pct_pulls: Option<f64>,
    /// Origin CPU with 2 local HTTP-FLV players (what a pull is), and per player.
    origin_cpu_pct_local: Option<f64>,
    origin_cpu_pct_per_local: Option<f64>,
    /// Time to first keyframe of the 2 local HTTP-FLV players on the origin, and of
    /// the first player on each edge (it starts the edge's pull), ms.
    ttfk_origin_ms: Vec<Option<f64>>,
    ttfk_edge_first_ms: Vec<Option<f64>>,
    /// Pulls the origin served in the pull window.
    pulls: Option<usize>,
    /// (pulls − publisher) / pulls, % of one core.
    origin_cpu_pct_per_pull: Option<f64>,
    /// Same from `/proc/PID/stat` (10 ms ticks), for comparison.
    origin_cpu_pct_per_pull_stat: Option<f64>,
    /// Hop phase: latency p50/p99 ms on the origin and on the edges (both pooled).
    hop_origin_ms: [Option<f64>; 2],
    hop_edges_ms: [Option<f64>; 2],
    /// Edges − origin, ms: p50, p99.
    hop_extra_ms: [Option<f64>; 2],
    /// Redis: commands/s and CPU % during the cluster window.
    redis_cmds_per_s: Option<f64>,
    /// …per command name (`INFO commandstats`).
    redis_cmds_by_name: BTreeMap<String, f64>,
    redis_cpu_pct: Option<f64>,
    /// What looked wrong in the cluster (API checks, failures).
    problems: Vec<String>,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// Runs the whole comparison; `Ok(false)` when `--strict` and something was off.
pub async fn main(a: ClusterArgs) -> Result<bool, String> {
    // Loudly, before anything runs: the cluster needs a real Redis.
    let version = redis_version(&a.redis_server)?;
    if a.players < 2 {
        return Err("--players must be at least 2 (half on each edge)".into());
    }
    let limit = crate::nofile_limit().saturating_sub(200);
    if a.players.max(3 * a.hop_players) > limit {
        return Err(format!(
            "more players than the open-file limit ({}) allows: raise `ulimit -n`",
            crate::nofile_limit()
        ));
    }
    std::fs::create_dir_all(&a.out_dir).map_err(|e| format!("{}: {e}", a.out_dir.display()))?;
    let media = a.media.media(&a.out_dir)?;
    println!(
        "media: {} ({:.0} kbit/s, {} tags per {:.1} s loop); {}; load average {}",
        media.path.display(),
        media.kbps(),
        media.tags.len(),
        f64::from(media.loop_ms) / 1e3,
        version,
        procfs::loadavg()
    );
    let media = Arc::new(media);
    let json = a
        .json
        .clone()
        .unwrap_or_else(|| a.out_dir.join("cluster.jsonl"));

    // 1. One node, N players: the run `live --no-ceiling` makes.
    let settings = LiveSettings {
        server_bin: a.server_bin.clone(),
        server_pid: None,
        out_dir: a.out_dir.clone(),
        stream: a.stream.clone(),
        play_path: None,
        rtmp_url: None,
        publish: PublishMode::Http,
        pace: Pace::Realtime,
        ramp: Duration::from_millis(a.ramp_ms),
        warmup: secs(a.warmup_secs),
        window: secs(a.secs),
        prestart: Duration::from_millis(a.prestart_ms),
        keep_up: a.keep_up,
        keep_up_latency: Duration::from_millis(a.keep_up_latency_ms),
        ceiling_threads: None,
        coalesce_key: false,
        nms: None,
        strace: false,
        spin_cores: 0,
    };
    eprintln!(
        "run: single node, N={} (load average {})",
        a.players,
        procfs::loadavg()
    );
    let single = live::run(
        &Kind::Wsrelay(None),
        a.players,
        a.play == crate::Play::Ws,
        &settings,
        &media,
    )
    .await?;
    let single_row = row_from_live(&single);

    // 2–4. The cluster: pull cost, N/2 players per edge, the hop.
    let mut summary = Summary {
        kind: "cluster-summary",
        players: a.players,
        ..Summary::default()
    };
    let cluster_rows = run_cluster(&a, &settings, &media, &mut summary).await?;

    let mut rows = vec![single_row];
    rows.extend(cluster_rows);
    summary.kept_up_single = rows[0].kept_up;
    summary.cpu_s_per_gbit_single = rows[0].cpu_s_per_gbit;
    if let Some(all) = rows
        .iter()
        .find(|r| r.phase == "cluster" && r.node == "all")
    {
        summary.kept_up_cluster = all.kept_up;
        summary.cpu_s_per_gbit_cluster = all.cpu_s_per_gbit;
    }
    for r in &rows {
        for (reason, count) in &r.failures {
            summary
                .problems
                .push(format!("{} {}: {count}× {reason}", r.phase, r.node));
        }
        if r.behind > 0 || r.late > 0 {
            summary.problems.push(format!(
                "{} {}: {} behind, {} late of {}",
                r.phase, r.node, r.behind, r.late, r.players
            ));
        }
    }
    print_table(&rows, &summary);
    crate::report::json_lines(&json, &rows)?;
    crate::report::json_lines(&json, std::slice::from_ref(&summary))?;
    println!();
    println!("JSON lines: {}", json.display());
    Ok(summary.problems.is_empty() || !a.strict)
}

/// `redis-server --version`'s first words (`Redis server v=7.0.15`), or an error
/// that says how to install it: the cluster modes need a real Redis.
pub(crate) fn redis_version(bin: &Path) -> Result<String, String> {
    let version = Command::new(bin).arg("--version").output().map_err(|e| {
        format!(
            "`{}` cannot run ({e}): the cluster modes start a real Redis; install Debian's \
             package (`apt-get install redis-server`) or pass --redis-server PATH",
            bin.display()
        )
    })?;
    if !version.status.success() {
        return Err(format!(
            "`{} --version` failed: {}",
            bin.display(),
            String::from_utf8_lossy(&version.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&version.stdout)
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" "))
}

fn row_from_live(r: &LiveResult) -> Row {
    Row {
        kind: "cluster",
        phase: "single",
        node: "node",
        players: r.players,
        pulls: None,
        kept_up: r.kept_up,
        late: r.late,
        behind: r.behind,
        failures: r.failures.clone(),
        mbit_s: r.mbit_s,
        cpu_pct: r.server_cpu_pct,
        cpu_s_per_gbit: r.cpu_s_per_gbit,
        rss_mib: r.rss_mib,
        ttfk_ms: r.ttfk_ms,
        latency_ms: r.latency_ms,
        latency_samples: r.latency_samples,
        harness_cpu_pct: r.harness_cpu_pct,
        stream_kbps: r.stream_kbps,
        loadavg: r.loadavg.clone(),
        window_s: r.window_s,
    }
}

/// `redis-server` on a unix socket in a temp dir; killed by PID on drop.
pub(crate) struct Redis {
    child: Child,
    dir: PathBuf,
    sock: PathBuf,
}

impl Redis {
    pub(crate) async fn start(bin: &Path, log: &Path) -> Result<Redis, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "wsrelay-bench-redis-{}-{nanos:x}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let sock = dir.join("redis.sock");
        let child = Command::new(bin)
            .args(["--port", "0", "--unixsocket"])
            .arg(&sock)
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--logfile",
            ])
            .arg(log)
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut redis = Redis { child, dir, sock };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if redis
                .command("PING")
                .await
                .is_ok_and(|r| r.contains("PONG"))
            {
                return Ok(redis);
            }
            if let Ok(Some(status)) = redis.child.try_wait() {
                return Err(format!(
                    "redis-server exited at start ({status}): see {}",
                    log.display()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "redis-server did not answer on {} in 10 s: see {}",
                    redis.sock.display(),
                    log.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn url(&self) -> String {
        format!("redis+unix://{}", self.sock.display())
    }

    /// One inline command; the raw reply (enough for PING and INFO).
    async fn command(&self, cmd: &str) -> Result<String, String> {
        let io = async {
            let mut s = tokio::net::UnixStream::connect(&self.sock).await?;
            s.write_all(format!("{cmd}\r\n").as_bytes()).await?;
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
                if reply_complete(&out) {
                    break;
                }
            }
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&out).into_owned())
        };
        tokio::time::timeout(Duration::from_secs(2), io)
            .await
            .map_err(|_| "redis: no answer".to_owned())?
            .map_err(|e| format!("redis: {e}"))
    }

    /// Calls so far per command (`INFO commandstats`), without this harness's own
    /// `INFO`s.
    pub(crate) async fn commands(&self) -> Option<BTreeMap<String, u64>> {
        let info = self.command("INFO commandstats").await.ok()?;
        let mut calls = BTreeMap::new();
        for line in info.lines() {
            let Some((name, rest)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let n = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|v| v.parse().ok());
            if let Some(n) = n
                && name != "info"
            {
                calls.insert(name.to_owned(), n);
            }
        }
        Some(calls)
    }
}

/// Whether a RESP reply (simple string, error, or bulk string) is complete.
fn reply_complete(b: &[u8]) -> bool {
    let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    if b.first() != Some(&b'$') {
        return true;
    }
    let len: i64 = std::str::from_utf8(&b[1..eol])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(-1);
    len < 0 || b.len() >= eol + 2 + len as usize + 2
}

impl Drop for Redis {
    fn drop(&mut self) {
        // By PID (our child), never by name.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `GET path` (HTTP/1.0, so the body ends with the connection), parsed as JSON.
pub(crate) async fn get_json(addr: SocketAddr, path: &str) -> Result<serde_json::Value, String> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let raw = tokio::time::timeout(Duration::from_secs(3), io)
        .await
        .map_err(|_| format!("GET {path}: no answer"))?
        .map_err(|e| format!("GET {path}: {e}"))?;
    let body = crate::wire::head_end(&raw).map_or(&raw[..0], |end| &raw[end..]);
    serde_json::from_slice(body).map_err(|e| format!("GET {path}: not JSON: {e}"))
}

/// Precise CPU seconds of a process: the sum of its threads' `se.sum_exec_runtime`
/// (`/proc/PID/task/*/sched`, ms with µs decimals). Threads that exited are not
/// counted (the wsrelay nodes keep their worker threads).
pub(crate) fn sched_cpu_secs(pid: u32) -> Option<f64> {
    let mut total = 0.0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(task) = task else { continue };
        let Ok(sched) = std::fs::read_to_string(task.path().join("sched")) else {
            continue;
        };
        let ms: f64 = sched
            .lines()
            .find(|l| l.starts_with("se.sum_exec_runtime"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.trim().parse().ok())?;
        total += ms / 1e3;
    }
    Some(total)
}

/// A node of the cluster.
pub(crate) struct Node {
    pub(crate) name: &'static str,
    pub(crate) target: Target,
}

impl Node {
    fn proc(&self) -> Option<Proc> {
        self.target.pid.map(Proc::Pid)
    }
}

/// The stream's entry in a node's `/api/streams`.
async fn stream_status(node: &Node, stream: &str) -> Option<serde_json::Value> {
    let v = get_json(node.target.http, "/api/streams").await.ok()?;
    v["streams"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == stream)
        .cloned()
}

/// Origin CPU in a window: (precise %, stat %).
async fn origin_cpu(origin: &Node, window: Duration) -> (Option<f64>, Option<f64>) {
    let pid = origin.target.pid;
    let p0 = pid.and_then(sched_cpu_secs);
    let s0 = origin.proc().map(|p| p.sample());
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let p1 = pid.and_then(sched_cpu_secs);
    let s1 = origin.proc().map(|p| p.sample());
    let wall = t0.elapsed().as_secs_f64().max(1e-9);
    let precise = match (p0, p1) {
        (Some(a), Some(b)) => Some(100.0 * (b - a).max(0.0) / wall),
        _ => None,
    };
    let stat = match (s0, s1) {
        (Some(a), Some(b)) => a.until(&b).map(|c| c.1),
        _ => None,
    };
    (precise, stat)
}

/// An HTTP-FLV player of `stream` on `node` for the pull-cost windows (no send
/// table: only the origin's CPU is measured there).
fn probe(node: &Node, stream: &str) -> Arc<PlayerConfig> {
    let now = Instant::now();
    Arc::new(PlayerConfig {
        addr: node.target.http,
        path: format!("/live/{stream}.flv"),
        ws: false,
        table: None,
        window: (now, now),
        first_byte_timeout: Duration::from_secs(10),
    })
}

/// Origin CPU in a window while `plan`'s players play (started together, 1 s to
/// settle first); `status` gets the origin's stream status before the window.
/// Returns (precise %, stat %, the players' results).
async fn origin_cpu_with(
    origin: &Node,
    plan: &[(usize, Arc<PlayerConfig>)],
    window: Duration,
    status: impl FnOnce(Option<serde_json::Value>),
) -> Result<(Option<f64>, Option<f64>, Vec<PlayerResult>), String> {
    let stop = CancellationToken::new();
    let players = spawn_players(plan, Instant::now(), Duration::ZERO, &stop);
    // Past the join burst (the cached GOP) and, for edges, the pull's start.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let name = plan
        .first()
        .map(|(_, c)| c.path.trim_start_matches("/live/").trim_end_matches(".flv"))
        .unwrap_or_default();
    status(stream_status(origin, name).await);
    let (precise, stat) = origin_cpu(origin, window).await;
    stop.cancel();
    let mut results = Vec::new();
    for (_, h) in players {
        results.push(h.await.map_err(|e| format!("player task: {e}"))?);
    }
    Ok((precise, stat, results))
}

/// Players to start: (node index, config) in join order.
fn spawn_players(
    plan: &[(usize, Arc<PlayerConfig>)],
    t_start: Instant,
    ramp: Duration,
    stop: &CancellationToken,
) -> Vec<(usize, JoinHandle<PlayerResult>)> {
    let n = plan.len().max(1);
    plan.iter()
        .enumerate()
        .map(|(i, (node, cfg))| {
            let at = t_start + ramp.mul_f64(i as f64 / n as f64);
            let cfg = cfg.clone();
            let stop = stop.clone();
            let h = tokio::spawn(async move {
                tokio::time::sleep_until(at.into()).await;
                player::run(cfg, stop).await
            });
            (*node, h)
        })
        .collect()
}

/// One phase with players on some nodes: their results per node and the windows'
/// CPU samples per node.
struct Phase {
    results: Vec<Vec<PlayerResult>>,
    cpu: Vec<Option<(f64, f64)>>,
    rss: Vec<Option<u64>>,
    harness_cpu: Option<f64>,
    sent_bytes: u64,
    window_s: f64,
    loadavg: String,
    redis_cmds: Option<BTreeMap<String, u64>>,
    redis_cpu: Option<f64>,
    pulls: Vec<Option<usize>>,
}

struct PhasePlan<'a> {
    nodes: &'a [Node],
    redis: &'a Redis,
    per_node: [usize; 3],
    table: &'a Arc<SendTable>,
    stream: &'a str,
    /// WebSocket-FLV players (else HTTP-FLV).
    ws: bool,
}

async fn run_phase(p: PhasePlan<'_>, s: &LiveSettings) -> Result<Phase, String> {
    let loadavg = procfs::loadavg();
    let t_start = Instant::now();
    let w_from = t_start + s.ramp + s.warmup;
    let w_to = w_from + s.window;
    let cfgs: Vec<Arc<PlayerConfig>> = p
        .nodes
        .iter()
        .map(|n| {
            Arc::new(PlayerConfig {
                addr: n.target.http,
                path: format!("/live/{}.flv", p.stream),
                ws: p.ws,
                table: Some(p.table.clone()),
                window: (w_from, w_to),
                first_byte_timeout: Duration::from_secs(10),
            })
        })
        .collect();
    // Interleave the nodes so that each joins evenly over the ramp.
    let mut plan = Vec::new();
    let most = p.per_node.iter().copied().max().unwrap_or(0);
    for i in 0..most {
        for (node, &count) in p.per_node.iter().enumerate() {
            if i < count {
                plan.push((node, cfgs[node].clone()));
            }
        }
    }
    let stop = CancellationToken::new();
    let handles = spawn_players(&plan, t_start, s.ramp, &stop);
    tokio::time::sleep_until(w_from.into()).await;
    let cpu0: Vec<Option<CpuSample>> = p
        .nodes
        .iter()
        .map(|n| n.proc().map(|pr| pr.sample()))
        .collect();
    let me0 = Proc::Myself.sample();
    let redis0 = Proc::Pid(p.redis.pid()).sample();
    let cmds0 = p.redis.commands().await;
    // Mid-window: how many pulls each node serves (origin) or runs (edges).
    tokio::time::sleep(s.window / 2).await;
    let mut pulls = Vec::new();
    for (i, n) in p.nodes.iter().enumerate() {
        let st = stream_status(n, p.stream).await;
        pulls.push(st.map(|st| {
            if i == 0 {
                // Players on the origin include the edges' pulls.
                st["players"]
                    .as_u64()
                    .map_or(0, |v| (v as usize).saturating_sub(p.per_node[0]))
            } else {
                usize::from(st.get("pulled_from").is_some())
            }
        }));
    }
    tokio::time::sleep_until(w_to.into()).await;
    let cpu1: Vec<Option<CpuSample>> = p
        .nodes
        .iter()
        .map(|n| n.proc().map(|pr| pr.sample()))
        .collect();
    let me1 = Proc::Myself.sample();
    let redis1 = Proc::Pid(p.redis.pid()).sample();
    let cmds1 = p.redis.commands().await;
    let rss = p
        .nodes
        .iter()
        .map(|n| n.proc().and_then(|pr| pr.rss_bytes()))
        .collect();
    // Let tags sent just before the window's end arrive.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    let mut results: Vec<Vec<PlayerResult>> = p.nodes.iter().map(|_| Vec::new()).collect();
    for (node, h) in handles {
        results[node].push(h.await.map_err(|e| format!("player task: {e}"))?);
    }
    let cpu = cpu0
        .iter()
        .zip(&cpu1)
        .map(|(a, b)| match (a, b) {
            (Some(a), Some(b)) => a.until(b),
            _ => None,
        })
        .collect();
    Ok(Phase {
        results,
        cpu,
        rss,
        harness_cpu: me0.until(&me1).map(|c| c.1),
        sent_bytes: p.table.sent_in(w_from, w_to).0,
        window_s: s.window.as_secs_f64(),
        loadavg,
        redis_cmds: match (cmds0, cmds1) {
            (Some(a), Some(b)) => Some(
                b.into_iter()
                    .map(|(k, v)| {
                        let before = a.get(&k).copied().unwrap_or(0);
                        (k, v.saturating_sub(before))
                    })
                    .filter(|(_, v)| *v > 0)
                    .collect(),
            ),
            _ => None,
        },
        redis_cpu: redis0.until(&redis1).map(|c| c.1),
        pulls,
    })
}

/// Kept up / late / behind / failures, as `live.rs` counts them.
struct Group {
    kept_up: usize,
    late: usize,
    behind: usize,
    failures: BTreeMap<String, usize>,
    delivered: u64,
    ttfk_ms: [Option<f64>; 3],
    lat_us: Vec<u32>,
}

fn summarize(results: &[PlayerResult], sent: u64, s: &LiveSettings) -> Group {
    let mut g = Group {
        kept_up: 0,
        late: 0,
        behind: 0,
        failures: BTreeMap::new(),
        delivered: 0,
        ttfk_ms: [None; 3],
        lat_us: Vec::new(),
    };
    for r in results {
        if let Some(f) = &r.failure {
            *g.failures.entry(f.clone()).or_insert(0) += 1;
        } else if sent > 0 && r.window_sent_bytes as f64 >= s.keep_up * sent as f64 {
            let mut own = r.latency_us.clone();
            own.sort_unstable();
            if pct(&own, 0.99).is_some_and(|p99| u128::from(p99) > s.keep_up_latency.as_micros()) {
                g.late += 1;
            } else {
                g.kept_up += 1;
            }
        } else {
            g.behind += 1;
        }
        g.delivered += r.window_sent_bytes;
        g.lat_us.extend_from_slice(&r.latency_us);
    }
    g.lat_us.sort_unstable();
    let ttfk: Vec<f64> = results
        .iter()
        .filter_map(|r| r.ttfk)
        .map(|d| d.as_secs_f64() * 1e3)
        .collect();
    g.ttfk_ms = pct_ms(ttfk, [0.50, 0.95, 0.99]);
    g
}

fn lat3(sorted: &[u32]) -> [Option<f64>; 3] {
    [
        pct(sorted, 0.50).map(|v| f64::from(v) / 1e3),
        pct(sorted, 0.99).map(|v| f64::from(v) / 1e3),
        sorted.last().map(|v| f64::from(*v) / 1e3),
    ]
}

/// The rows of one phase: one per node, then `all`.
fn phase_rows(phase: &'static str, nodes: &[Node], ph: &Phase, s: &LiveSettings) -> Vec<Row> {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let stream_bits = ph.sent_bytes as f64 * 8.0;
    let mut rows = Vec::new();
    let mut all_lat = Vec::new();
    let mut all = Group {
        kept_up: 0,
        late: 0,
        behind: 0,
        failures: BTreeMap::new(),
        delivered: 0,
        ttfk_ms: [None; 3],
        lat_us: Vec::new(),
    };
    let mut all_cpu_s = Some(0.0);
    let mut all_rss = Some(0u64);
    let mut all_ttfk = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let g = summarize(&ph.results[i], ph.sent_bytes, s);
        // The origin also delivers the stream once per edge pull.
        let pulls_out = if i == 0 { ph.pulls[0].unwrap_or(0) } else { 0 };
        let bits = g.delivered as f64 * 8.0 + stream_bits * pulls_out as f64;
        let cpu = ph.cpu[i];
        all_cpu_s = all_cpu_s.zip(cpu).map(|(a, c)| a + c.0);
        all_rss = all_rss.zip(ph.rss[i]).map(|(a, b)| a + b);
        all.kept_up += g.kept_up;
        all.late += g.late;
        all.behind += g.behind;
        all.delivered += g.delivered;
        for (k, v) in &g.failures {
            *all.failures.entry(k.clone()).or_insert(0) += v;
        }
        all_lat.extend_from_slice(&g.lat_us);
        all_ttfk.extend(
            ph.results[i]
                .iter()
                .filter_map(|r| r.ttfk)
                .map(|d| d.as_secs_f64() * 1e3),
        );
        rows.push(Row {
            kind: "cluster",
            phase,
            node: node.name,
            players: ph.results[i].len(),
            pulls: ph.pulls[i],
            kept_up: g.kept_up,
            late: g.late,
            behind: g.behind,
            failures: g.failures,
            mbit_s: bits / ph.window_s / 1e6,
            cpu_pct: cpu.map(|c| c.1),
            cpu_s_per_gbit: cpu.filter(|_| bits > 0.0).map(|c| c.0 / (bits / 1e9)),
            rss_mib: ph.rss[i].map(mib),
            ttfk_ms: g.ttfk_ms,
            latency_ms: lat3(&g.lat_us),
            latency_samples: g.lat_us.len(),
            harness_cpu_pct: ph.harness_cpu,
            stream_kbps: Some(stream_bits / ph.window_s / 1e3),
            loadavg: ph.loadavg.clone(),
            window_s: ph.window_s,
        });
    }
    all_lat.sort_unstable();
    let bits = all.delivered as f64 * 8.0;
    rows.push(Row {
        kind: "cluster",
        phase,
        node: "all",
        players: ph.results.iter().map(Vec::len).sum(),
        pulls: None,
        kept_up: all.kept_up,
        late: all.late,
        behind: all.behind,
        failures: all.failures,
        mbit_s: bits / ph.window_s / 1e6,
        cpu_pct: all_cpu_s.map(|c| 100.0 * c / ph.window_s),
        cpu_s_per_gbit: all_cpu_s.filter(|_| bits > 0.0).map(|c| c / (bits / 1e9)),
        rss_mib: all_rss.map(mib),
        ttfk_ms: pct_ms(all_ttfk, [0.50, 0.95, 0.99]),
        latency_ms: lat3(&all_lat),
        latency_samples: all_lat.len(),
        harness_cpu_pct: ph.harness_cpu,
        stream_kbps: Some(stream_bits / ph.window_s / 1e3),
        loadavg: ph.loadavg.clone(),
        window_s: ph.window_s,
    });
    rows
}

/// A running cluster: Redis and three nodes (dropped in this order: the nodes
/// first, so they do not log Redis going away).
pub(crate) struct Started {
    /// The nodes, in the order of their names.
    pub(crate) nodes: Vec<Node>,
    /// Their ids (`/api/cluster`'s `node.id`), in the same order.
    pub(crate) ids: Vec<String>,
    /// The Redis they share.
    pub(crate) redis: Redis,
}

/// Starts `redis-server` on a unix socket (its log `OUT_DIR/PREFIX-redis.log`) and
/// three wsrelay nodes with the harness config and `--cluster … --cluster-secret
/// <random>` (`OUT_DIR/PREFIX-NAME.log`), and waits until `/api/cluster` on the first
/// lists all three.
pub(crate) async fn start(
    redis_server: &Path,
    server_bin: &Path,
    out_dir: &Path,
    prefix: &str,
    names: [&'static str; 3],
) -> Result<Started, String> {
    // Absolute: redis-server opens its log after changing to its --dir.
    let out_dir =
        std::path::absolute(out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let redis = Redis::start(redis_server, &out_dir.join(format!("{prefix}-redis.log"))).await?;
    let secret = format!(
        "bench-{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let args = vec![
        "--cluster".to_owned(),
        redis.url(),
        "--cluster-secret".to_owned(),
        secret,
    ];
    let mut nodes = Vec::new();
    for name in names {
        let target = Target::wsrelay_node(
            server_bin,
            &out_dir,
            &format!("{prefix}-{name}"),
            false,
            None,
            &args,
        )?;
        nodes.push(Node { name, target });
    }
    // All three registered?
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = get_json(nodes[0].target.http, "/api/cluster").await;
        let registered = v
            .as_ref()
            .ok()
            .and_then(|v| v["nodes"].as_array().map(Vec::len));
        if registered == Some(3) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the cluster did not list 3 nodes in 10 s: {v:?} (logs: {}/{prefix}-*.log)",
                out_dir.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ids = Vec::new();
    for n in &nodes {
        let v = get_json(n.target.http, "/api/cluster").await?;
        ids.push(v["node"]["id"].as_str().unwrap_or_default().to_owned());
    }
    Ok(Started { nodes, ids, redis })
}

/// Starts Redis and the three nodes, runs the pull-cost, cluster and hop phases.
async fn run_cluster(
    a: &ClusterArgs,
    s: &LiveSettings,
    media: &Arc<Media>,
    summary: &mut Summary,
) -> Result<Vec<Row>, String> {
    eprintln!(
        "run: cluster (redis + origin + 2 edges), N={} (load average {})",
        a.players,
        procfs::loadavg()
    );
    // Bound in this order, so that on an early return the nodes drop before Redis.
    let Started {
        redis, nodes, ids, ..
    } = start(
        &a.redis_server,
        &s.server_bin,
        &s.out_dir,
        "cluster",
        ["origin", "edge-a", "edge-b"],
    )
    .await?;
    let origin_id = ids[0].clone();

    // The origin with no stream at all.
    let idle = secs(a.idle_secs);
    if !idle.is_zero() {
        summary.origin_cpu_pct_no_stream = origin_cpu(&nodes[0], idle).await.0;
    }

    let table = Arc::new(SendTable::default());
    let stop_pub = CancellationToken::new();
    let publisher = tokio::spawn(publisher::run(
        Publish {
            mode: PublishMode::Http,
            http: nodes[0].target.http,
            rtmp: None,
            stream: s.stream.clone(),
            media: media.clone(),
            pace: Pace::Realtime,
            table: Some(table.clone()),
            stats: Arc::new(PublishStats::default()),
        },
        stop_pub.clone(),
    ));
    tokio::time::sleep(s.prestart).await;
    if publisher.is_finished() {
        return Err(match publisher.await {
            Ok(Err(e)) => format!("cluster origin: {e}"),
            other => format!("cluster origin: publisher ended early: {other:?}"),
        });
    }
    match stream_status(&nodes[0], &s.stream).await {
        Some(st) if st["origin"]["node"] == origin_id.as_str() => {}
        other => summary.problems.push(format!(
            "origin's /api/streams does not name it the origin: {other:?}"
        )),
    }

    // Pull cost: publisher only; + 2 local HTTP-FLV players on the origin (what a
    // pull is, for comparison); + both edges pulling (one player on each edge).
    if !idle.is_zero() {
        let (precise, stat) = origin_cpu(&nodes[0], idle).await;
        summary.origin_cpu_pct_publisher = precise;
        let local = [
            (0, probe(&nodes[0], &s.stream)),
            (0, probe(&nodes[0], &s.stream)),
        ];
        let (local_cpu, _, local_players) =
            origin_cpu_with(&nodes[0], &local, idle, |_| ()).await?;
        summary.origin_cpu_pct_local = local_cpu;
        summary.origin_cpu_pct_per_local = local_cpu.zip(precise).map(|(w, o)| (w - o) / 2.0);
        let edges = [
            (1, probe(&nodes[1], &s.stream)),
            (2, probe(&nodes[2], &s.stream)),
        ];
        let mut st = None;
        let (with_pulls, with_pulls_stat, edge_players) =
            origin_cpu_with(&nodes[0], &edges, idle, |v| st = v).await?;
        let pulls = st
            .as_ref()
            .and_then(|st| st["players"].as_u64())
            .map(|v| v as usize);
        let edge_ids = st
            .as_ref()
            .and_then(|st| st["edges"].as_array().map(Vec::len))
            .unwrap_or(0);
        if pulls != Some(2) || edge_ids != 2 {
            summary.problems.push(format!(
                "pull window: the origin reports {pulls:?} players and {edge_ids} edges, \
                 expected 2 and 2: {st:?}"
            ));
        }
        for n in &nodes[1..] {
            let st = stream_status(n, &s.stream).await;
            let from = st.as_ref().and_then(|st| st["pulled_from"].as_str());
            if from != Some(origin_id.as_str()) {
                summary.problems.push(format!(
                    "{}: /api/streams pulled_from is {from:?}, expected the origin {origin_id}",
                    n.name
                ));
            }
        }
        summary.pulls = pulls;
        summary.origin_cpu_pct_pulls = with_pulls;
        let per = |with: Option<f64>, without: Option<f64>| {
            with.zip(without)
                .zip(pulls.filter(|p| *p > 0))
                .map(|((w, o), p)| (w - o) / p as f64)
        };
        summary.origin_cpu_pct_per_pull = per(with_pulls, precise);
        summary.origin_cpu_pct_per_pull_stat = per(with_pulls_stat, stat);
        let ms = |r: &PlayerResult| r.ttfk.map(|d| d.as_secs_f64() * 1e3);
        summary.ttfk_origin_ms = local_players.iter().map(ms).collect();
        summary.ttfk_edge_first_ms = edge_players.iter().map(ms).collect();
        for r in local_players.iter().chain(&edge_players) {
            if let Some(f) = &r.failure {
                summary
                    .problems
                    .push(format!("pull-cost probe player failed: {f}"));
            }
        }
    }

    // The cluster phase: N/2 players on each edge, none on the origin.
    let edge_a = a.players / 2;
    let plan = PhasePlan {
        nodes: &nodes,
        redis: &redis,
        per_node: [0, edge_a, a.players - edge_a],
        table: &table,
        stream: &s.stream,
        ws: a.play == crate::Play::Ws,
    };
    let ph = run_phase(plan, s).await?;
    if ph.pulls[0] != Some(2) || ph.pulls[1] != Some(1) || ph.pulls[2] != Some(1) {
        summary.problems.push(format!(
            "cluster window: pulls (origin serves, edges run) {:?}, expected [2, 1, 1]",
            ph.pulls
        ));
    }
    summary.redis_cmds_per_s = ph
        .redis_cmds
        .as_ref()
        .map(|c| c.values().sum::<u64>() as f64 / ph.window_s);
    summary.redis_cmds_by_name = ph
        .redis_cmds
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), *v as f64 / ph.window_s))
        .collect();
    summary.redis_cpu_pct = ph.redis_cpu;
    let mut rows = phase_rows("cluster", &nodes, &ph, s);

    // The hop: K players on each node at once.
    if a.hop_players > 0 {
        eprintln!(
            "run: hop latency, {} players on each node (load average {})",
            a.hop_players,
            procfs::loadavg()
        );
        let plan = PhasePlan {
            nodes: &nodes,
            redis: &redis,
            per_node: [a.hop_players; 3],
            table: &table,
            stream: &s.stream,
            ws: a.play == crate::Play::Ws,
        };
        let ph = run_phase(plan, s).await?;
        let origin = summarize(&ph.results[0], ph.sent_bytes, s);
        let mut edges = summarize(&ph.results[1], ph.sent_bytes, s).lat_us;
        edges.extend(summarize(&ph.results[2], ph.sent_bytes, s).lat_us);
        edges.sort_unstable();
        let o = lat3(&origin.lat_us);
        let e = lat3(&edges);
        summary.hop_origin_ms = [o[0], o[1]];
        summary.hop_edges_ms = [e[0], e[1]];
        summary.hop_extra_ms = [
            e[0].zip(o[0]).map(|(e, o)| e - o),
            e[1].zip(o[1]).map(|(e, o)| e - o),
        ];
        rows.extend(phase_rows("hop", &nodes, &ph, s));
    }

    stop_pub.cancel();
    let pub_result = publisher
        .await
        .map_err(|e| format!("publisher task: {e}"))?;
    drop(nodes);
    drop(redis);
    pub_result?;
    Ok(rows)
}

fn print_table(rows: &[Row], sm: &Summary) {
    println!();
    println!(
        "{:<8} {:<7} {:>5} {:>5} {:>6} {:>8} {:>6} {:>9} {:>7} {:>17} {:>17} {:>5}  failures",
        "phase",
        "node",
        "N",
        "pulls",
        "keptup",
        "Mbit/s",
        "CPU%",
        "CPUs/Gbit",
        "RSS MiB",
        "TTFK p50/95/99 ms",
        "lat p50/99/max ms",
        "harn%"
    );
    for r in rows {
        println!(
            "{:<8} {:<7} {:>5} {:>5} {:>6} {:>8.1} {:>6} {:>9} {:>7} {:>17} {:>17} {:>5}  {}",
            r.phase,
            r.node,
            r.players,
            r.pulls.map_or("-".into(), |p| p.to_string()),
            r.kept_up,
            r.mbit_s,
            f(r.cpu_pct, 1),
            f(r.cpu_s_per_gbit, 3),
            f(r.rss_mib, 1),
            if r.players > 0 {
                three(&r.ttfk_ms, 1)
            } else {
                "-".into()
            },
            if r.players > 0 {
                three(&r.latency_ms, 2)
            } else {
                "-".into()
            },
            f(r.harness_cpu_pct, 0),
            problems(&r.failures, r.behind, r.late)
        );
    }
    let ratio = match (sm.cpu_s_per_gbit_cluster, sm.cpu_s_per_gbit_single) {
        (Some(c), Some(s)) if s > 0.0 => format!(" = {:.2}x", c / s),
        _ => String::new(),
    };
    println!();
    println!(
        "players kept up: 1 node {}/{}, cluster (2 edges) {}/{}",
        sm.kept_up_single, sm.players, sm.kept_up_cluster, sm.players
    );
    println!(
        "CPU s per delivered Gbit: 1 node {}, cluster (origin + 2 edges) {}{ratio}",
        f(sm.cpu_s_per_gbit_single, 3),
        f(sm.cpu_s_per_gbit_cluster, 3),
    );
    if sm.hop_origin_ms[0].is_some() {
        println!(
            "one edge hop adds: p50 {} ms, p99 {} ms (latency p50/p99: origin {}/{} ms, edges {}/{} ms)",
            f(sm.hop_extra_ms[0], 2),
            f(sm.hop_extra_ms[1], 2),
            f(sm.hop_origin_ms[0], 2),
            f(sm.hop_origin_ms[1], 2),
            f(sm.hop_edges_ms[0], 2),
            f(sm.hop_edges_ms[1], 2),
        );
    }
    if sm.origin_cpu_pct_publisher.is_some() {
        println!(
            "origin CPU, % of a core: no stream {}; publisher only {}; \
             + 2 local HTTP-FLV players {} ({} per player); + {} edge pulls {} \
             → {} per pull ({} from /proc/PID/stat ticks)",
            f(sm.origin_cpu_pct_no_stream, 2),
            f(sm.origin_cpu_pct_publisher, 2),
            f(sm.origin_cpu_pct_local, 2),
            f(sm.origin_cpu_pct_per_local, 2),
            sm.pulls.map_or("?".into(), |p| p.to_string()),
            f(sm.origin_cpu_pct_pulls, 2),
            f(sm.origin_cpu_pct_per_pull, 2),
            f(sm.origin_cpu_pct_per_pull_stat, 2),
        );
    }
    if !sm.ttfk_edge_first_ms.is_empty() {
        let list = |v: &[Option<f64>]| v.iter().map(|t| f(*t, 1)).collect::<Vec<_>>().join(", ");
        println!(
            "time to first keyframe, ms: players on the origin {}; first player on each edge \
             (starts its pull) {}",
            list(&sm.ttfk_origin_ms),
            list(&sm.ttfk_edge_first_ms)
        );
    }
    let by_name: Vec<String> = sm
        .redis_cmds_by_name
        .iter()
        .map(|(k, v)| format!("{k} {v:.1}"))
        .collect();
    println!(
        "redis during the cluster window (3 nodes, 1 stream): {} commands/s ({}), CPU {} %",
        f(sm.redis_cmds_per_s, 1),
        by_name.join(", "),
        f(sm.redis_cpu_pct, 2)
    );
    if sm.problems.is_empty() {
        println!("cluster checks: ok (origin named in /api/streams, one pull per edge)");
    } else {
        println!("cluster checks: PROBLEMS");
        for p in &sm.problems {
            println!("  - {p}");
        }
    }
}
