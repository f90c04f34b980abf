//! Signaling measurements against the real `wsrelay` binary in its own process, so
//! that its memory is measured alone. Ignored by default (they are measurements, not
//! checks of behaviour); run with
//!
//! ```sh
//! cargo test --release --test signal_load -- --ignored --nocapture --test-threads 1
//! ```
//!
//! Each test still asserts a loose floor so a regression by an order of magnitude
//! fails. Knobs (environment): `SIGNAL_LOAD_PAIRS` (default 16), `SIGNAL_LOAD_SECS`
//! (default 5), `SIGNAL_IDLE_PEERS` (default 2000).

mod signal_client;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use signal_client::Client;
use tokio_tungstenite::tungstenite::Message;

/// Messages a sender may be ahead of its receiver: keeps every queue in the server
/// far below `max_outbound_messages`, so the run measures throughput, not drops.
const WINDOW: u64 = 64;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The wsrelay binary on a free loopback port with `extra` appended to its config.
struct Proc {
    child: Child,
    addr: SocketAddr,
}

impl Proc {
    fn start(extra: &str) -> Proc {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        let conf = dir.join(format!("signal-load-{}.toml", std::process::id()));
        std::fs::write(
            &conf,
            format!("max_connections = 50000\nmax_connections_per_ip = 50000\n[signal]\nmax_connections = 50000\n{extra}"),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_wsrelay"))
            .arg("--config")
            .arg(&conf)
            .args(["--http", "127.0.0.1:0", "--rtmp", "off"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start wsrelay");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = lines.find_map(|l| {
            l.ok()?
                .trim()
                .strip_prefix("listening http://")
                .and_then(|a| a.parse::<SocketAddr>().ok())
        });
        // Construct `Proc` first so that Drop reaps the child on every path.
        let proc = Proc {
            child,
            addr: addr.unwrap_or_else(|| ([0, 0, 0, 0], 0).into()),
        };
        assert!(addr.is_some(), "wsrelay exited before listening");
        proc
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the command name: utime is the 14th, stime the 15th field overall.
        let rest = stat.rsplit_once(')').unwrap().1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --ignored --nocapture"]
async fn relay_rate() {
    let pairs = env_or("SIGNAL_LOAD_PAIRS", 16);
    let secs = env_or("SIGNAL_LOAD_SECS", 5);
    // The default rate limit (50 msg/s per socket) would be the figure measured.
    let server = Proc::start("rate_burst = 100000000\nrate_per_second = 100000000\n");
    let addr = server.addr;
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for p in 0..pairs {
        let room = format!("load{p}");
        let a = Client::join(addr, &room, "a").await;
        let mut b = Client::join(addr, &room, "b").await;
        let mut a = a;
        a.expect("peer-joined").await;
        let acked = Arc::new(AtomicU64::new(0));
        let (acked2, received2, stop2) = (acked.clone(), received.clone(), stop.clone());
        // Receiver: count relayed messages.
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(m)) = b.ws.next().await {
                if let Message::Text(t) = m {
                    // Only relayed messages from `a` count.
                    assert!(
                        t.as_str()
                            .starts_with(r#"{"type":"message","from":"a","data":["#),
                        "{}",
                        t.as_str()
                    );
                    acked2.fetch_add(1, Ordering::Relaxed);
                    received2.fetch_add(1, Ordering::Relaxed);
                }
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
            }
        }));
        // Sender: ~100-byte messages, at most WINDOW ahead of the receiver.
        let stop3 = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent = 0u64;
            let payload = "x".repeat(60);
            while !stop3.load(Ordering::Relaxed) {
                let burst = WINDOW - (sent - acked.load(Ordering::Relaxed)).min(WINDOW);
                if burst == 0 {
                    tokio::task::yield_now().await;
                    continue;
                }
                for _ in 0..burst {
                    let m =
                        json!({"type": "message", "to": "b", "data": [sent, payload]}).to_string();
                    if a.ws.feed(Message::text(m)).await.is_err() {
                        return;
                    }
                    sent += 1;
                }
                if a.ws.flush().await.is_err() {
                    return;
                }
            }
        }));
    }
    // Warm up, then measure.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (n0, cpu0, t0) = (
        received.load(Ordering::Relaxed),
        server.cpu_ticks(),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (n1, cpu1, dt) = (
        received.load(Ordering::Relaxed),
        server.cpu_ticks(),
        t0.elapsed(),
    );
    stop.store(true, Ordering::Relaxed);
    let rate = (n1 - n0) as f64 / dt.as_secs_f64();
    // Clock ticks are 1/100 s on Linux.
    let cpu = (cpu1 - cpu0) as f64 / 100.0 / dt.as_secs_f64();
    println!(
        "signal relay: {pairs} sender→receiver pairs, {secs} s: {rate:.0} messages/s relayed \
         (server CPU {:.0}% of one core, {:.1} µs CPU per message; load generator on the same 2 cores)",
        cpu * 100.0,
        cpu * 1e6 / rate,
    );
    for t in tasks {
        t.abort();
    }
    assert!(rate > 2_000.0, "relay rate collapsed: {rate:.0} msg/s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --ignored --nocapture"]
async fn idle_connection_memory() {
    let n = env_or("SIGNAL_IDLE_PEERS", 2000) as usize;
    let per_room = 10;
    let server = Proc::start("");
    let addr = server.addr;
    // Warm up allocator and runtime with one room, then take the baseline.
    let warm = Client::join(addr, "warm", "w").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.rss_kib();
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        clients.push(
            Client::join(
                addr,
                &format!("idle{}", i / per_room),
                &format!("p{}", i % per_room),
            )
            .await,
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = server.rss_kib();
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    println!(
        "signal idle: {n} joined peers in rooms of {per_room}: server VmRSS {before} KiB → {after} KiB, \
         {per:.1} KiB per idle peer"
    );
    drop(clients);
    drop(warm);
    assert!(per < 200.0, "idle peer memory regressed: {per:.1} KiB");
}
