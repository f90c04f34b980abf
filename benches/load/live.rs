//! One live run: a server (fresh), a publisher, N players, a measurement window.
//! Around the window: CPU and RSS from `/proc`, the player write/wakeup counters of
//! `/metrics`, optionally `strace -c` and busy-looping processes (`measure.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::measure::{self, Counters, Spinners, Strace};
use crate::media::Media;
use crate::nms::Nms;
use crate::player::{self, PlayerConfig, SendTable};
use crate::procfs::Proc;
use crate::publisher::{self, Pace, Publish, PublishMode, PublishStats};
use crate::server::Target;
use crate::stats::{pct, pct_ms};

/// Which server a run measures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// wsrelay started by the harness; `Some(W)`: at window W ms
    /// (`live.write_coalesce_ms`), `None`: with the binary's default.
    Wsrelay(Option<u64>),
    /// The harness's ceiling server at a window, ms.
    Ceiling(u64),
    /// node-media-server (its own fixed batching).
    Nms,
    /// `--url`.
    Url(String),
}

impl Kind {
    /// The server: `wsrelay`, `ceiling`, `nms` or `url`.
    pub fn server(&self) -> &'static str {
        match self {
            Kind::Wsrelay(_) => "wsrelay",
            Kind::Ceiling(_) => "ceiling",
            Kind::Nms => "nms",
            Kind::Url(_) => "url",
        }
    }

    /// The coalescing window, ms, where the harness sets one.
    pub fn window_ms(&self) -> Option<u64> {
        match self {
            Kind::Wsrelay(w) => *w,
            Kind::Ceiling(w) => Some(*w),
            Kind::Nms | Kind::Url(_) => None,
        }
    }

    /// Report label: the server, and `@W` with a window.
    pub fn label(&self) -> String {
        match self.window_ms() {
            Some(w) => format!("{}@{w}", self.server()),
            None => self.server().to_owned(),
        }
    }
}

/// Settings shared by every run of an invocation.
#[derive(Debug)]
pub struct LiveSettings {
    /// wsrelay binary.
    pub server_bin: PathBuf,
    /// PID of the `--url` server, for CPU/RSS.
    pub server_pid: Option<u32>,
    /// Output directory (logs, config, media).
    pub out_dir: PathBuf,
    /// Stream name.
    pub stream: String,
    /// Player request path (default `/live/STREAM.flv`).
    pub play_path: Option<String>,
    /// RTMP URL for `--publish rtmp` (default: the started wsrelay's listener).
    pub rtmp_url: Option<String>,
    /// Publisher transport (the ceiling gets HTTP POST instead of WebSocket).
    pub publish: PublishMode,
    /// Replay speed.
    pub pace: Pace,
    /// Players join evenly over this time (0: all at once).
    pub ramp: Duration,
    /// Time after the ramp before the window opens.
    pub warmup: Duration,
    /// Measurement window.
    pub window: Duration,
    /// Time the publisher runs before the first player joins.
    pub prestart: Duration,
    /// Ratio of the stream a player must get in the window to have kept up.
    pub keep_up: f64,
    /// A player whose own p99 latency exceeds this has not kept up either (a live
    /// player's buffer runs dry): real time, not just the rate.
    pub keep_up_latency: Duration,
    /// Worker threads of the ceiling server (default: as many as cores, like wsrelay).
    pub ceiling_threads: Option<usize>,
    /// Whether the wsrelay binary knows `live.write_coalesce_ms`: without it a
    /// window-0 run writes no key (such a binary writes each tag as it comes).
    pub coalesce_key: bool,
    /// The installed node-media-server, if it takes part.
    pub nms: Option<Nms>,
    /// Run `strace -c -f -p PID` on the server during the window.
    pub strace: bool,
    /// Busy-looping processes during each run.
    pub spin_cores: usize,
}

/// Everything measured in one run (one JSON line).
#[derive(Debug, Serialize)]
pub struct LiveResult {
    /// `live`.
    pub kind: &'static str,
    /// Report label: server and window (`wsrelay@20`, `ceiling@0`, `nms`).
    pub target: String,
    /// `wsrelay`, `ceiling`, `nms` or `url`.
    pub server: &'static str,
    /// Coalescing window the harness set, ms (`None`: nms, `--url`, or wsrelay's
    /// default).
    pub window_ms: Option<u64>,
    /// Players.
    pub players: usize,
    /// `ws` or `http`.
    pub play: &'static str,
    /// Publisher transport.
    pub publish: PublishMode,
    /// Replay speed.
    pub pace: Pace,
    /// Stream bitrate in the window, kbit/s (from the publisher), if known.
    pub stream_kbps: Option<f64>,
    /// Players that got ≥ keep_up of the stream in the window without failing.
    pub kept_up: usize,
    /// Players that got the stream's rate but with a p99 latency above the bound.
    pub late: usize,
    /// Players that did not fail but got less than `keep_up` of the stream.
    pub behind: usize,
    /// Players that failed, by reason.
    pub failures: BTreeMap<String, usize>,
    /// Aggregate delivered rate in the window, Mbit/s.
    pub mbit_s: f64,
    /// Server CPU in the window, % of one core.
    pub server_cpu_pct: Option<f64>,
    /// Server CPU seconds per delivered Gbit.
    pub cpu_s_per_gbit: Option<f64>,
    /// Server RSS before players joined, MiB.
    pub rss_base_mib: Option<f64>,
    /// Server RSS at the end of the window, MiB.
    pub rss_mib: Option<f64>,
    /// (RSS − baseline) / players, KiB.
    pub rss_per_player_kib: Option<f64>,
    /// Harness CPU in the window, % of one core.
    pub harness_cpu_pct: Option<f64>,
    /// Time to first byte, ms: p50/p95/p99.
    pub ttfb_ms: [Option<f64>; 3],
    /// Time to first keyframe, ms: p50/p95/p99.
    pub ttfk_ms: [Option<f64>; 3],
    /// Publisher→player latency, ms: p50/p99/max.
    pub latency_ms: [Option<f64>; 3],
    /// Latency samples.
    pub latency_samples: usize,
    /// Tags the publisher sent in the window (needs send times).
    pub sent_tags: Option<u64>,
    /// Tags delivered in the window: sent tags × players.
    pub delivered_tags: Option<u64>,
    /// Player writes in the window (`wsrelay_player_writes_total`), if served.
    pub player_writes: Option<f64>,
    /// Player wakeups in the window (`wsrelay_player_wakeups_total`), if served.
    pub player_wakeups: Option<f64>,
    /// Player writes per delivered tag.
    pub writes_per_tag: Option<f64>,
    /// Player wakeups per delivered tag.
    pub wakeups_per_tag: Option<f64>,
    /// With `--strace`: calls per syscall in the window (all threads). CPU and
    /// latency of such a run include ptrace's overhead.
    pub syscalls: Option<BTreeMap<String, u64>>,
    /// Busy-looping processes during the run (`--spin-cores`).
    pub spin_cores: usize,
    /// Load average when the run started.
    pub loadavg: String,
    /// Window length, s.
    pub window_s: f64,
    /// Which of `--rounds` this run was (1 for a single round and for --find-max).
    pub round: usize,
}

impl LiveResult {
    /// Whether every player kept up.
    pub fn all_kept_up(&self) -> bool {
        self.kept_up == self.players
    }
}

/// Runs `n` players against a fresh `kind` server (or the `--url` one).
pub async fn run(
    kind: &Kind,
    n: usize,
    ws: bool,
    s: &LiveSettings,
    media: &Arc<Media>,
) -> Result<LiveResult, String> {
    let loadavg = crate::procfs::loadavg();
    let dir = s.out_dir.clone();
    // The busy loops start before the server and end after it.
    let spinners = match s.spin_cores {
        0 => None,
        k => Some(Spinners::start(k)?),
    };
    let publish_mode = match (kind, s.publish) {
        (Kind::Ceiling(_), PublishMode::Ws) => PublishMode::Http,
        (_, mode) => mode,
    };
    let rtmp = matches!(publish_mode, PublishMode::Rtmp | PublishMode::RtmpFfmpeg);
    let target = match kind {
        Kind::Wsrelay(w) => {
            Target::wsrelay(&s.server_bin, &dir, rtmp, w.filter(|_| s.coalesce_key))?
        }
        Kind::Ceiling(w) => Target::ceiling(&dir, s.ceiling_threads, rtmp, *w)?,
        Kind::Nms => {
            let nms = s.nms.as_ref().ok_or("nms is not installed (a bug)")?;
            Target::nms(&nms.node, &nms.launcher, &nms.dir, &dir)?
        }
        Kind::Url(url) => Target::external(url, s.server_pid)?,
    };
    let srv = target.pid.map(Proc::Pid);
    let table = matches!(
        publish_mode,
        PublishMode::Http | PublishMode::Ws | PublishMode::Rtmp
    )
    .then(|| Arc::new(SendTable::default()));
    let rtmp_url = match kind {
        Kind::Url(_) => s.rtmp_url.clone(),
        _ => None,
    }
    .or_else(|| target.rtmp.map(|a| format!("rtmp://{a}/live/{}", s.stream)));
    let stats = Arc::new(PublishStats::default());
    let stop_pub = CancellationToken::new();
    let publisher = tokio::spawn(publisher::run(
        Publish {
            mode: publish_mode,
            http: target.http,
            rtmp: rtmp_url,
            stream: s.stream.clone(),
            media: media.clone(),
            pace: s.pace,
            table: table.clone(),
            stats: stats.clone(),
        },
        stop_pub.clone(),
    ));
    if publish_mode != PublishMode::Attach {
        tokio::time::sleep(s.prestart).await;
        if publisher.is_finished() {
            return Err(match publisher.await {
                Ok(Err(e)) => format!("{}: {e}", target.label),
                other => format!("{}: publisher ended early: {other:?}", target.label),
            });
        }
    }
    let rss_base = srv.and_then(|p| p.rss_bytes());

    let t_start = Instant::now();
    let w_from = t_start + s.ramp + s.warmup;
    let w_to = w_from + s.window;
    let cfg = Arc::new(PlayerConfig {
        addr: target.http,
        path: s
            .play_path
            .clone()
            .unwrap_or_else(|| format!("/live/{}.flv", s.stream)),
        ws,
        table: table.clone(),
        window: (w_from, w_to),
        first_byte_timeout: Duration::from_secs(10),
    });
    let stop_players = CancellationToken::new();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let at = t_start + s.ramp.mul_f64(i as f64 / n.max(1) as f64);
        let cfg = cfg.clone();
        let stop = stop_players.clone();
        handles.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            player::run(cfg, stop).await
        }));
    }
    // nms has no /metrics.
    let scrape = !matches!(kind, Kind::Nms);
    tokio::time::sleep_until(w_from.into()).await;
    let counters0 = if scrape {
        measure::scrape(target.http).await
    } else {
        Counters::default()
    };
    let strace = match target.pid {
        Some(pid) if s.strace => Some(Strace::attach(
            pid,
            &dir.join(format!("strace-{}-{n}.txt", kind.label())),
        )?),
        _ => None,
    };
    let srv0 = srv.map(|p| p.sample());
    let me0 = Proc::Myself.sample();
    tokio::time::sleep_until(w_to.into()).await;
    let srv1 = srv.map(|p| p.sample());
    let me1 = Proc::Myself.sample();
    let rss_end = srv.and_then(|p| p.rss_bytes());
    let syscalls = match strace {
        Some(st) => Some(tokio::task::block_in_place(|| st.finish())?),
        None => None,
    };
    let counters = if scrape {
        counters0.until(&measure::scrape(target.http).await)
    } else {
        Counters::default()
    };
    // Let tags sent just before the window's end arrive.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop_players.cancel();
    let mut results = Vec::with_capacity(n);
    for h in handles {
        results.push(h.await.map_err(|e| format!("player task: {e}"))?);
    }
    stop_pub.cancel();
    let pub_result = publisher
        .await
        .map_err(|e| format!("publisher task: {e}"))?;
    drop(target);
    drop(spinners);
    pub_result?;

    let window_s = s.window.as_secs_f64();
    let sent_in = table.as_ref().map(|t| t.sent_in(w_from, w_to));
    let sent = sent_in.map(|(bytes, _)| bytes);
    let delivered_tags = sent_in.map(|(_, tags)| tags * n as u64);
    let per_tag = |v: Option<f64>| match (v, delivered_tags) {
        (Some(v), Some(t)) if t > 0 => Some(v / t as f64),
        _ => None,
    };
    // Without send times (RTMP, attach): the best player's bytes are the reference.
    let reference = sent.unwrap_or_else(|| {
        results
            .iter()
            .map(|r| r.window_recv_bytes)
            .max()
            .unwrap_or(0)
    });
    let got = |r: &player::PlayerResult| {
        if sent.is_some() {
            r.window_sent_bytes
        } else {
            r.window_recv_bytes
        }
    };
    let mut failures = BTreeMap::new();
    let mut kept_up = 0;
    let mut late = 0;
    let mut behind = 0;
    for r in &results {
        if let Some(f) = &r.failure {
            *failures.entry(f.clone()).or_insert(0) += 1;
        } else if reference > 0 && got(r) as f64 >= s.keep_up * reference as f64 {
            let mut own = r.latency_us.clone();
            own.sort_unstable();
            let too_late =
                pct(&own, 0.99).is_some_and(|p99| u128::from(p99) > s.keep_up_latency.as_micros());
            if too_late {
                late += 1;
            } else {
                kept_up += 1;
            }
        } else {
            behind += 1;
        }
    }
    let delivered: u64 = results.iter().map(got).sum();
    let gbit = delivered as f64 * 8.0 / 1e9;
    let server_cpu = match (srv0, srv1) {
        (Some(a), Some(b)) => a.until(&b),
        _ => None,
    };
    let ttfb: Vec<f64> = results
        .iter()
        .filter_map(|r| r.ttfb)
        .map(|d| d.as_secs_f64() * 1e3)
        .collect();
    let ttfk: Vec<f64> = results
        .iter()
        .filter_map(|r| r.ttfk)
        .map(|d| d.as_secs_f64() * 1e3)
        .collect();
    let mut lat: Vec<u32> = results
        .iter()
        .flat_map(|r| r.latency_us.iter().copied())
        .collect();
    lat.sort_unstable();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    Ok(LiveResult {
        kind: "live",
        target: kind.label(),
        server: kind.server(),
        window_ms: kind.window_ms(),
        players: n,
        play: if ws { "ws" } else { "http" },
        publish: publish_mode,
        pace: s.pace,
        stream_kbps: sent.map(|b| b as f64 * 8.0 / window_s / 1e3),
        kept_up,
        late,
        behind,
        failures,
        mbit_s: delivered as f64 * 8.0 / window_s / 1e6,
        server_cpu_pct: server_cpu.map(|c| c.1),
        cpu_s_per_gbit: server_cpu.filter(|_| gbit > 0.0).map(|c| c.0 / gbit),
        rss_base_mib: rss_base.map(mib),
        rss_mib: rss_end.map(mib),
        rss_per_player_kib: match (rss_base, rss_end) {
            (Some(a), Some(b)) if n > 0 => Some((b as f64 - a as f64) / 1024.0 / n as f64),
            _ => None,
        },
        harness_cpu_pct: me0.until(&me1).map(|c| c.1),
        ttfb_ms: pct_ms(ttfb, [0.50, 0.95, 0.99]),
        ttfk_ms: pct_ms(ttfk, [0.50, 0.95, 0.99]),
        latency_ms: [
            pct(&lat, 0.50).map(|v| f64::from(v) / 1e3),
            pct(&lat, 0.99).map(|v| f64::from(v) / 1e3),
            lat.last().map(|v| f64::from(*v) / 1e3),
        ],
        latency_samples: lat.len(),
        sent_tags: sent_in.map(|(_, tags)| tags),
        delivered_tags,
        player_writes: counters.writes,
        player_wakeups: counters.wakeups,
        writes_per_tag: per_tag(counters.writes),
        wakeups_per_tag: per_tag(counters.wakeups),
        syscalls,
        spin_cores: s.spin_cores,
        loadavg,
        window_s,
        round: 1,
    })
}
