//! One live run: a server (fresh), a publisher, N players, a measurement window.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::media::Media;
use crate::player::{self, PlayerConfig, SendTable};
use crate::procfs::Proc;
use crate::publisher::{self, Pace, Publish, PublishMode, PublishStats};
use crate::server::Target;
use crate::stats::{pct, pct_ms};

/// Which server a run measures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// wsrelay started by the harness.
    Wsrelay,
    /// The harness's ceiling server.
    Ceiling,
    /// `--url`.
    Url(String),
}

impl Kind {
    /// Report label.
    pub fn label(&self) -> &str {
        match self {
            Kind::Wsrelay => "wsrelay",
            Kind::Ceiling => "ceiling",
            Kind::Url(_) => "url",
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
    /// WS-FLV players (else HTTP-FLV).
    pub ws: bool,
    /// Publisher transport (for wsrelay/url; the ceiling always gets HTTP POST).
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
}

/// Everything measured in one run (one JSON line).
#[derive(Debug, Serialize)]
pub struct LiveResult {
    /// `live`.
    pub kind: &'static str,
    /// Server label.
    pub target: String,
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
    /// Load average when the run started.
    pub loadavg: String,
    /// Window length, s.
    pub window_s: f64,
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
    s: &LiveSettings,
    media: &Arc<Media>,
) -> Result<LiveResult, String> {
    let loadavg = crate::procfs::loadavg();
    let dir = s.out_dir.clone();
    let publish_mode = if *kind == Kind::Ceiling {
        PublishMode::Http
    } else {
        s.publish
    };
    let target = match kind {
        Kind::Wsrelay => Target::wsrelay(&s.server_bin, &dir, publish_mode == PublishMode::Rtmp)?,
        Kind::Ceiling => Target::ceiling(&dir, s.ceiling_threads)?,
        Kind::Url(url) => Target::external(url, s.server_pid)?,
    };
    let srv = target.pid.map(Proc::Pid);
    let table = matches!(publish_mode, PublishMode::Http | PublishMode::Ws)
        .then(|| Arc::new(SendTable::default()));
    let stats = Arc::new(PublishStats::default());
    let stop_pub = CancellationToken::new();
    let publisher = tokio::spawn(publisher::run(
        Publish {
            mode: publish_mode,
            http: target.http,
            rtmp: s
                .rtmp_url
                .clone()
                .or_else(|| target.rtmp.map(|a| format!("rtmp://{a}/live/{}", s.stream))),
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
        ws: s.ws,
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
    tokio::time::sleep_until(w_from.into()).await;
    let srv0 = srv.map(|p| p.sample());
    let me0 = Proc::Myself.sample();
    tokio::time::sleep_until(w_to.into()).await;
    let srv1 = srv.map(|p| p.sample());
    let me1 = Proc::Myself.sample();
    let rss_end = srv.and_then(|p| p.rss_bytes());
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
    pub_result?;

    let window_s = s.window.as_secs_f64();
    let sent = table.as_ref().map(|t| t.sent_in(w_from, w_to).0);
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
        target: kind.label().to_owned(),
        players: n,
        play: if s.ws { "ws" } else { "http" },
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
        loadavg,
        window_s,
    })
}
