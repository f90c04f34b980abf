//! The wsrelay load harness: `cargo bench --bench load -- <live|cluster|signal|self-test> [options]`.
//!
//! - `live`: a publisher replays an FLV (generated with ffmpeg, or `--file`) and N
//!   light players (raw TCP, tag headers only) play it over WS-FLV or HTTP-FLV, for
//!   each N of `--players` and each coalescing window of `--windows`, against
//!   wsrelay (started here on free ports, or `--url`) and, in the same invocation,
//!   against the ceiling (a minimal fan-out server, `ceiling.rs`) at the same window
//!   and against node-media-server (`nms.rs`). Prints a table, appends JSON lines,
//!   draws an SVG against N.
//! - `cluster`: one node against 1 origin + 2 edges on a Redis (`cluster.rs`).
//! - `signal`: signaling peers relaying messages at rates, and an idle-memory test;
//!   `signal --cluster`: the same across a 3-node cluster (`signal_cluster.rs`).
//!
//! See `benches/README.md` for what each figure means and the commands.

mod ceiling;
mod cluster;
mod live;
mod measure;
mod media;
mod nms;
mod player;
mod procfs;
mod publisher;
mod report;
mod rtmp;
mod server;
mod signal;
mod signal_cluster;
mod stats;
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::live::{Kind, LiveResult, LiveSettings};
use crate::publisher::{Pace, PublishMode};
use crate::signal::{Rate, SignalSettings};

/// wsrelay load harness.
#[derive(Debug, Parser)]
#[command(name = "load", about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Live relay: one publisher, N players, wsrelay vs the ceiling vs node-media-server.
    Live(LiveArgs),
    /// Cluster: 1 node vs 1 origin + 2 edges on Redis; edge-hop latency, pull cost.
    Cluster(cluster::ClusterArgs),
    /// Signaling: relayed messages/s, latency, memory per peer.
    Signal(SignalArgs),
    /// Checks the harness's own decoders.
    SelfTest,
    /// The ceiling server (started by `live`; not for direct use).
    #[command(hide = true)]
    CeilingServer {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// RTMP listen address (no RTMP without it).
        #[arg(long)]
        rtmp: Option<SocketAddr>,
        /// Coalescing window, ms (0: each tag at once).
        #[arg(long, default_value_t = 0)]
        window_ms: u64,
        /// Worker threads [default: one per core, like wsrelay].
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Burns one core until the harness exits (`--spin-cores`; not for direct use).
    #[command(hide = true)]
    Spin,
}

/// Other servers `live` compares with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Peer {
    /// node-media-server 2.7.4 (npm), RTMP in, WS-FLV and HTTP-FLV out.
    Nms,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Play {
    /// WebSocket-FLV.
    Ws,
    /// HTTP-FLV.
    Http,
}

/// Options shared by `live` and `signal`.
#[derive(Debug, Args)]
struct Common {
    /// Measure this server instead of starting wsrelay (e.g. http://127.0.0.1:8080).
    #[arg(long)]
    url: Option<String>,
    /// PID of the `--url` server, for its CPU and RSS (from /proc).
    #[arg(long)]
    server_pid: Option<u32>,
    /// wsrelay binary to start.
    #[arg(long, default_value = env!("CARGO_BIN_EXE_wsrelay"))]
    server_bin: PathBuf,
    /// Directory for logs, the server config, generated media and default outputs.
    #[arg(long, default_value = "target/bench-load")]
    out_dir: PathBuf,
    /// JSON lines output (appended) [default: OUT_DIR/<live|signal|signal-cluster>.jsonl].
    #[arg(long)]
    json: Option<PathBuf>,
    /// Seconds between the last join and the measurement window.
    #[arg(long, default_value_t = 3.0)]
    warmup_secs: f64,
    /// Length of the measurement window, seconds.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Harness worker threads [default: one per core].
    #[arg(long)]
    threads: Option<usize>,
    /// Exit with status 1 if any player/peer failed, fell behind or lost messages (CI).
    #[arg(long)]
    strict: bool,
}

#[derive(Debug, Args)]
struct LiveArgs {
    #[command(flatten)]
    common: Common,
    /// Numbers of players, one run each (e.g. 100,500,1000,2000).
    #[arg(long, value_delimiter = ',', default_value = "100")]
    players: Vec<usize>,
    /// Do not run the ceiling server.
    #[arg(long)]
    no_ceiling: bool,
    /// Only run the ceiling server.
    #[arg(long, conflicts_with = "no_ceiling")]
    only_ceiling: bool,
    /// Peer server to compare with (needs Node.js and npm; installed once).
    #[arg(long, value_enum, default_value = "nms")]
    peer: Peer,
    /// Do not run the peer server.
    #[arg(long, conflicts_with = "only_ceiling")]
    no_peer: bool,
    /// Only run the peer server.
    #[arg(long, conflicts_with_all = ["no_peer", "only_ceiling"])]
    only_peer: bool,
    /// Where node-media-server is installed (npm prefix; installed there if missing).
    #[arg(long, default_value = "target/bench-peers/node-media-server-2.7.4")]
    nms_dir: PathBuf,
    /// Coalescing windows, ms: wsrelay (`live.write_coalesce_ms`) and the ceiling run
    /// once per window [default: 0 and wsrelay's own default from its
    /// --print-config; 0 alone without wsrelay or with a build that has no such key].
    #[arg(long, value_delimiter = ',')]
    windows: Option<Vec<u64>>,
    /// Count the server's syscalls in the window with `strace -c -f -p PID` (slows
    /// the server down: compare counts, not CPU, of such runs).
    #[arg(long)]
    strace: bool,
    /// Busy-looping processes during each run (CPU contention).
    #[arg(long, default_value_t = 0)]
    spin_cores: usize,
    /// Search the largest N where every player keeps up, from the first --players.
    #[arg(long)]
    find_max: bool,
    /// Upper bound for --find-max.
    #[arg(long, default_value_t = 8000)]
    max_players: usize,
    /// Runs of every server at each N, interleaved (server A, B, C, then A, B, C
    /// again): the ratios are then also given as the median over the rounds of each
    /// round's ratio, which a passing load on the machine moves less than one run.
    #[arg(long, default_value_t = 1, conflicts_with = "find_max")]
    rounds: usize,
    /// Player protocols, one run each (`ws,http`: the HTTP-FLV runs are also given
    /// as ratios to the WebSocket-FLV runs of the same server, N and round).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "ws")]
    play: Vec<Play>,
    /// Publisher transport [default: rtmp with the nms peer (which takes only RTMP),
    /// else http]. The ceiling takes HTTP POST instead of WebSocket.
    #[arg(long, value_enum)]
    publish: Option<PublishMode>,
    /// Replay speed.
    #[arg(long, value_enum, default_value = "realtime")]
    pace: Pace,
    /// Stream name.
    #[arg(long, default_value = "bench")]
    stream: String,
    /// Player request path [default: /live/STREAM.flv] (for servers with other URL
    /// layouts, e.g. `/live?app=live&stream=bench` for nginx-http-flv).
    #[arg(long)]
    play_path: Option<String>,
    /// RTMP URL of the `--url` server for `--publish rtmp`.
    #[arg(long)]
    rtmp_url: Option<String>,
    #[command(flatten)]
    media: crate::media::MediaArgs,
    /// Players join evenly over this many ms (0: all at once).
    #[arg(long, default_value_t = 2000)]
    ramp_ms: u64,
    /// The publisher runs this long before players join (fills the GOP cache).
    #[arg(long, default_value_t = 1500)]
    prestart_ms: u64,
    /// Share of the stream a player must receive in the window to count as kept up.
    #[arg(long, default_value_t = 0.95)]
    keep_up: f64,
    /// …and whose own p99 publisher→player latency is at most this many ms.
    #[arg(long, default_value_t = 1000)]
    keep_up_latency_ms: u64,
    /// SVG plot of CPU per Gbit, CPU and latency against N [default: OUT_DIR/live.svg].
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Worker threads of the ceiling server [default: one per core].
    #[arg(long)]
    ceiling_threads: Option<usize>,
}

#[derive(Debug, Args)]
struct SignalArgs {
    #[command(flatten)]
    common: Common,
    /// Peers.
    #[arg(long, default_value_t = 100)]
    peers: usize,
    /// Rooms (peers are spread evenly).
    #[arg(long, default_value_t = 10)]
    rooms: usize,
    /// Total message rates, one run each: messages/s or `max` (closed loop).
    #[arg(long, value_delimiter = ',', default_value = "10000,max")]
    rate: Vec<Rate>,
    /// Outstanding pings per peer in `max` mode.
    #[arg(long, default_value_t = 8)]
    inflight: usize,
    /// Idle-connection memory test with this many peers (0: skip).
    #[arg(long, default_value_t = 10_000)]
    idle_peers: usize,
    /// Peers per room in the idle test.
    #[arg(long, default_value_t = 10)]
    idle_per_room: usize,
    /// Against a 3-node cluster started here (redis-server and nodes A, B, C; every
    /// room homed on A): pairs of talkers (--peers / 2, one room each) per
    /// --placements at each --rate, then --idle-peers idle peers, a third per node.
    /// --rooms does not apply.
    #[arg(long, conflicts_with_all = ["url", "server_pid"])]
    cluster: bool,
    /// With --cluster: where each pair's talkers connect, one run each per rate.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "same,hop,cross"
    )]
    placements: Vec<signal_cluster::Placement>,
    /// With --cluster: the Redis server to start (Debian: `apt-get install redis-server`).
    #[arg(long, default_value = "redis-server")]
    redis_server: PathBuf,
}

fn main() -> ExitCode {
    // `cargo bench` appends `--bench`; it means nothing here.
    let args = std::env::args_os().filter(|a| a != "--bench");
    let cli = Cli::parse_from(args);
    let threads = match &cli.cmd {
        Cmd::Live(a) => a.common.threads,
        Cmd::Cluster(a) => a.threads,
        Cmd::Signal(a) => a.common.threads,
        Cmd::CeilingServer { threads, .. } => *threads,
        Cmd::SelfTest => Some(1),
        Cmd::Spin => {
            measure::spin();
            return ExitCode::SUCCESS;
        }
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = threads {
        rt.worker_threads(t.max(1));
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Live(a) => live_main(a).await,
            Cmd::Cluster(a) => cluster::main(a).await,
            Cmd::Signal(a) => signal_main(a).await,
            Cmd::SelfTest => self_test(),
            Cmd::CeilingServer {
                listen,
                rtmp,
                window_ms,
                ..
            } => ceiling::serve(listen, rtmp, window_ms).await.map(|()| true),
            Cmd::Spin => Ok(true),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("load: FAILED (--strict): some players/peers failed or fell behind");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("load: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn self_test() -> Result<bool, String> {
    wire::self_test()?;
    rtmp::self_test()?;
    publisher::self_test_against_wsrelay()?;
    let summary = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 60.00    0.060000          10      6000           writev
 40.00    0.040000          20      2000       100 epoll_wait
------ ----------- ----------- --------- --------- ----------------
100.00    0.100000          12      8000       100 total
";
    let calls = measure::parse_strace_summary(summary);
    if calls.get("writev") != Some(&6000)
        || calls.get("epoll_wait") != Some(&2000)
        || calls.len() != 2
    {
        return Err(format!("strace summary parse: {calls:?}"));
    }
    println!("self-test ok");
    Ok(true)
}

async fn live_main(a: LiveArgs) -> Result<bool, String> {
    let c = &a.common;
    std::fs::create_dir_all(&c.out_dir).map_err(|e| format!("{}: {e}", c.out_dir.display()))?;

    // Which servers, with which publisher.
    let attach = a.publish == Some(PublishMode::Attach);
    let with_main = !a.only_ceiling && !a.only_peer;
    let with_ceiling = !a.no_ceiling && !a.only_peer && !attach;
    let with_nms = a.only_peer || (a.peer == Peer::Nms && !a.no_peer && !a.only_ceiling && !attach);
    let publish = match a.publish {
        Some(PublishMode::Http | PublishMode::Ws) if with_nms => {
            return Err(
                "node-media-server takes RTMP publishers only, and every server gets the same \
                 publisher: use --publish rtmp (the default with the peer) or --no-peer"
                    .into(),
            );
        }
        Some(mode) => mode,
        None if with_nms => PublishMode::Rtmp,
        None => PublishMode::Http,
    };
    let wsrelay_started = with_main && c.url.is_none();
    if wsrelay_started && !c.server_bin.exists() {
        return Err(format!(
            "wsrelay binary {} not found: build it with `cargo build --release --bin wsrelay` \
             or pass --server-bin",
            c.server_bin.display()
        ));
    }
    // wsrelay's own default window, if it has the key (the ceiling alone: none).
    let default_window = if wsrelay_started {
        server::wsrelay_coalesce_default(&c.server_bin)?
    } else {
        None
    };
    let coalesce_key = default_window.is_some();
    let mut windows = match (&a.windows, default_window) {
        (Some(w), _) => w.clone(),
        (None, Some(d)) => vec![0, d],
        (None, None) => vec![0],
    };
    windows.sort_unstable();
    windows.dedup();
    if windows.is_empty() {
        return Err("--windows: give at least one window (0 = each tag at once)".into());
    }
    if wsrelay_started && !coalesce_key && windows.iter().any(|&w| w > 0) {
        return Err(format!(
            "{} has no live.write_coalesce_ms (its --print-config does not list it): \
             only --windows 0 can run against it",
            c.server_bin.display()
        ));
    }
    if a.strace {
        measure::check_strace()?;
    }
    let mut kinds = Vec::new();
    if with_main && let Some(url) = &c.url {
        kinds.push(Kind::Url(url.clone()));
    }
    for &w in &windows {
        if wsrelay_started {
            kinds.push(Kind::Wsrelay(Some(w)));
        }
        if with_ceiling {
            kinds.push(Kind::Ceiling(w));
        }
    }
    let nms = if with_nms {
        kinds.push(Kind::Nms);
        Some(tokio::task::block_in_place(|| {
            nms::prepare(&a.nms_dir, &c.out_dir)
        })?)
    } else {
        None
    };
    if kinds.is_empty() {
        return Err("nothing to run (check --only-*/--no-*)".into());
    }

    let media = a.media.media(&c.out_dir)?;
    println!(
        "media: {} ({:.0} kbit/s, {} tags per {:.1} s loop); load average {}",
        media.path.display(),
        media.kbps(),
        media.tags.len(),
        f64::from(media.loop_ms) / 1e3,
        procfs::loadavg()
    );
    println!(
        "servers: {}{}; publisher: {}{}",
        kinds.iter().map(Kind::label).collect::<Vec<_>>().join(", "),
        if with_nms {
            format!(" (node-media-server {})", nms::VERSION)
        } else {
            String::new()
        },
        publish_label(publish),
        if a.spin_cores > 0 {
            format!("; {} busy-looping processes during each run", a.spin_cores)
        } else {
            String::new()
        }
    );
    let media = Arc::new(media);
    let settings = LiveSettings {
        server_bin: c.server_bin.clone(),
        server_pid: c.server_pid,
        out_dir: c.out_dir.clone(),
        stream: a.stream.clone(),
        play_path: a.play_path.clone(),
        rtmp_url: a.rtmp_url.clone(),
        publish,
        pace: a.pace,
        ramp: Duration::from_millis(a.ramp_ms),
        warmup: secs(c.warmup_secs),
        window: secs(c.secs),
        prestart: Duration::from_millis(a.prestart_ms),
        keep_up: a.keep_up,
        keep_up_latency: Duration::from_millis(a.keep_up_latency_ms),
        ceiling_threads: a.ceiling_threads,
        coalesce_key,
        nms,
        strace: a.strace,
        spin_cores: a.spin_cores,
    };
    let json = c
        .json
        .clone()
        .unwrap_or_else(|| c.out_dir.join("live.jsonl"));
    let mut results: Vec<LiveResult> = Vec::new();
    let rounds = a.rounds.max(1);
    let mut plays: Vec<Play> = Vec::new();
    for &play in &a.play {
        if !plays.contains(&play) {
            plays.push(play);
        }
    }
    let run_one =
        async |kind: &Kind, n: usize, play: Play, round: usize, results: &mut Vec<LiveResult>| {
            eprintln!(
                "run: {} N={n}{}{} (load average {})",
                kind.label(),
                if plays.len() > 1 {
                    format!(" {}", play_name(play))
                } else {
                    String::new()
                },
                if rounds > 1 {
                    format!(" round {round}/{rounds}")
                } else {
                    String::new()
                },
                procfs::loadavg()
            );
            let mut r = live::run(kind, n, play == Play::Ws, &settings, &media).await?;
            if plays.len() > 1 {
                r.target = format!("{}:{}", r.target, r.play);
            }
            r.round = round;
            eprintln!(
                "  kept up {}/{}  {:.1} Mbit/s  server CPU {}%  latency p99 {} ms",
                r.kept_up,
                r.players,
                r.mbit_s,
                r.server_cpu_pct.map_or("-".into(), |v| format!("{v:.0}")),
                r.latency_ms[1].map_or("-".into(), |v| format!("{v:.2}")),
            );
            report::json_lines(&json, std::slice::from_ref(&r))?;
            let ok = r.all_kept_up();
            results.push(r);
            Ok::<bool, String>(ok)
        };
    let limit = nofile_limit().saturating_sub(200).min(a.max_players);
    if a.find_max {
        let mut found = Vec::new();
        for kind in &kinds {
            let mut lo: Option<usize> = None;
            let mut hi: Option<usize> = None;
            let mut n = a.players.first().copied().unwrap_or(500).clamp(1, limit);
            loop {
                if run_one(kind, n, plays[0], 1, &mut results).await? {
                    lo = Some(n);
                } else {
                    hi = Some(n);
                }
                n = match (lo, hi) {
                    (Some(l), None) if l >= limit => break,
                    (Some(l), None) => (l * 2).min(limit),
                    (None, Some(h)) if h <= 1 => break,
                    (None, Some(h)) => h / 2,
                    (Some(l), Some(h)) if h - l <= (l / 10).max(10) => break,
                    (Some(l), Some(h)) => (l + h) / 2,
                    (None, None) => break,
                };
            }
            found.push((kind.label(), lo, hi));
        }
        let rank = |server: &str| match server {
            "wsrelay" | "url" => 0,
            "ceiling" => 1,
            _ => 2,
        };
        results.sort_by_key(|r| {
            (
                r.window_ms.is_none(),
                r.window_ms,
                rank(r.server),
                r.players,
            )
        });
        report::live_table(&results);
        println!();
        for (label, lo, hi) in found {
            println!(
                "largest N where all players kept up: {label} {} (first N that did not: {})",
                lo.map_or("none".into(), |v| v.to_string()),
                hi.map_or(format!("none up to {limit}"), |v| v.to_string())
            );
        }
    } else {
        for &n in &a.players {
            if n > limit {
                return Err(format!(
                    "{n} players exceed the open-file limit ({}): raise `ulimit -n`",
                    nofile_limit()
                ));
            }
            for round in 1..=rounds {
                for kind in &kinds {
                    for &play in &plays {
                        run_one(kind, n, play, round, &mut results).await?;
                    }
                }
            }
        }
        report::live_table(&results);
    }
    let plot = a.plot.clone().unwrap_or_else(|| c.out_dir.join("live.svg"));
    report::plot(&plot, &results)?;
    println!();
    println!("JSON lines: {}   plot: {}", json.display(), plot.display());
    let clean = results
        .iter()
        .all(|r| r.failures.is_empty() && r.all_kept_up());
    Ok(clean || !c.strict)
}

fn play_name(play: Play) -> &'static str {
    match play {
        Play::Ws => "ws",
        Play::Http => "http",
    }
}

fn publish_label(mode: PublishMode) -> &'static str {
    match mode {
        PublishMode::Http => "HTTP POST",
        PublishMode::Ws => "WebSocket (the ceiling: HTTP POST)",
        PublishMode::Rtmp => "RTMP (the harness's client)",
        PublishMode::RtmpFfmpeg => "RTMP (ffmpeg; no latency figures)",
        PublishMode::Attach => "none (attached to a live stream)",
    }
}

async fn signal_main(a: SignalArgs) -> Result<bool, String> {
    let c = &a.common;
    if a.cluster {
        std::fs::create_dir_all(&c.out_dir).map_err(|e| format!("{}: {e}", c.out_dir.display()))?;
        return signal_cluster::main(signal_cluster::Settings {
            server_bin: c.server_bin.clone(),
            redis_server: a.redis_server.clone(),
            out_dir: c.out_dir.clone(),
            json: c
                .json
                .clone()
                .unwrap_or_else(|| c.out_dir.join("signal-cluster.jsonl")),
            pairs: a.peers / 2,
            placements: a.placements.clone(),
            rates: a.rate.clone(),
            inflight: a.inflight.max(1),
            warmup: secs(c.warmup_secs),
            window: secs(c.secs),
            idle_peers: a.idle_peers,
            idle_per_room: a.idle_per_room,
            strict: c.strict,
        })
        .await;
    }
    if a.peers == 0 || a.rooms == 0 {
        return Err("--peers and --rooms must be positive".into());
    }
    let settings = SignalSettings {
        server_bin: c.server_bin.clone(),
        url: c.url.clone(),
        server_pid: c.server_pid,
        out_dir: c.out_dir.clone(),
        peers: a.peers,
        rooms: a.rooms.min(a.peers),
        inflight: a.inflight.max(1),
        warmup: secs(c.warmup_secs),
        window: secs(c.secs),
    };
    std::fs::create_dir_all(&c.out_dir).map_err(|e| format!("{}: {e}", c.out_dir.display()))?;
    let json = c
        .json
        .clone()
        .unwrap_or_else(|| c.out_dir.join("signal.jsonl"));
    let limit = nofile_limit().saturating_sub(200);
    if a.peers > limit || a.idle_peers > limit {
        return Err(format!(
            "more peers than the open-file limit ({limit}) allows: raise `ulimit -n`"
        ));
    }
    let mut clean = true;
    println!(
        "{:<8} {:>6} {:>5} {:>7} {:>12} {:>20} {:>8} {:>10} {:>6}  errors/failures",
        "target",
        "peers",
        "rooms",
        "rate",
        "relayed/s",
        "lat p50/99/max ms",
        "srvCPU%",
        "KiB/peer",
        "harn%"
    );
    for rate in &a.rate {
        let r = signal::run(&settings, *rate).await?;
        let f = |v: Option<f64>, d: usize| v.map_or("-".to_owned(), |v| format!("{v:.d$}"));
        let problems: Vec<String> = r
            .errors
            .iter()
            .map(|(k, v)| format!("{v}× error {k}"))
            .chain(r.failures.iter().map(|(k, v)| format!("{v}× {k}")))
            .collect();
        println!(
            "{:<8} {:>6} {:>5} {:>7} {:>12.0} {:>20} {:>8} {:>10} {:>6}  {}",
            r.target,
            r.peers,
            r.rooms,
            r.rate,
            r.relayed_per_s,
            format!(
                "{}/{}/{}",
                f(r.latency_ms[0], 2),
                f(r.latency_ms[1], 2),
                f(r.latency_ms[2], 1)
            ),
            f(r.server_cpu_pct, 0),
            f(r.rss_per_peer_kib, 1),
            f(r.harness_cpu_pct, 0),
            if problems.is_empty() {
                "-".to_owned()
            } else {
                problems.join("; ")
            }
        );
        // Open loop: what was sent in the window must (nearly) all arrive.
        let lost = match rate {
            Rate::PerSec(_) => r.delivered + r.delivered / 50 < r.sent,
            Rate::Max => r.delivered == 0,
        };
        clean &= problems.is_empty() && r.peers == a.peers && !lost;
        report::json_lines(&json, std::slice::from_ref(&r))?;
    }
    if a.idle_peers > 0 {
        let r = signal::idle(&settings, a.idle_peers, a.idle_per_room).await?;
        println!(
            "idle: {}/{} peers joined in {:.1} s; server RSS {} → {} MiB: {} KiB per idle peer{}",
            r.joined,
            r.peers,
            r.join_s,
            r.rss_base_mib.map_or("-".into(), |v| format!("{v:.1}")),
            r.rss_mib.map_or("-".into(), |v| format!("{v:.1}")),
            r.rss_per_peer_kib.map_or("-".into(), |v| format!("{v:.2}")),
            if r.failures.is_empty() {
                String::new()
            } else {
                format!("; failures: {:?}", r.failures)
            }
        );
        clean &= r.failures.is_empty() && r.joined == r.peers;
        report::json_lines(&json, std::slice::from_ref(&r))?;
    }
    println!("JSON lines: {}", json.display());
    Ok(clean || !c.strict)
}

/// The soft open-file limit (`ulimit -n`), from /proc/self/limits.
fn nofile_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse().ok()
        })
        .unwrap_or(1024)
}
