//! Extra measurements around a run's window: the player write/wakeup counters of
//! `/metrics`, a syscall count with `strace -c`, and busy-looping processes that
//! take cores away (`--spin-cores`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Counter names scraped from `/metrics` (wsrelay's, and the ceiling's same names).
pub const WRITES: &str = "wsrelay_player_writes_total";
/// See [`WRITES`].
pub const WAKEUPS: &str = "wsrelay_player_wakeups_total";

/// How long a `/metrics` scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Player writes and wakeups so far, summed over protocols; `None` where the server
/// has no such counter (or no `/metrics`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    /// [`WRITES`].
    pub writes: Option<f64>,
    /// [`WAKEUPS`].
    pub wakeups: Option<f64>,
}

impl Counters {
    /// Increments from `self` to `later`.
    pub fn until(&self, later: &Counters) -> Counters {
        let d = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
        Counters {
            writes: d(self.writes, later.writes),
            wakeups: d(self.wakeups, later.wakeups),
        }
    }
}

/// `GET /metrics` of `addr`, summing each counter over its label sets.
pub async fn scrape(addr: SocketAddr) -> Counters {
    let body = tokio::time::timeout(SCRAPE_TIMEOUT, get(addr, "/metrics"))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let sum = |name: &str| {
        let mut found = false;
        let mut total = 0.0;
        for line in body.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            // `name{labels} value` or `name value`, not a longer name.
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                continue;
            }
            if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
                found = true;
                total += v;
            }
        }
        found.then_some(total)
    };
    Counters {
        writes: sum(WRITES),
        wakeups: sum(WAKEUPS),
    }
}

async fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut sock = TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    sock.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    sock.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    if !text.starts_with("HTTP/1.1 200") {
        return Ok(String::new());
    }
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

/// `strace -c -f -p PID` while it runs; [`Strace::finish`] detaches it and reads the
/// summary.
#[derive(Debug)]
pub struct Strace {
    child: Child,
    out: PathBuf,
}

/// Fails with a clear message if `strace` cannot run here.
pub fn check_strace() -> Result<(), String> {
    match Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        _ => Err("--strace needs strace (`apt-get install strace`); it is not installed".into()),
    }
}

impl Strace {
    /// Attaches to `pid` and all its threads; the summary goes to `out`.
    pub fn attach(pid: u32, out: &Path) -> Result<Strace, String> {
        let _ = std::fs::remove_file(out);
        let child = Command::new("strace")
            .args(["-c", "-f", "-qq", "-o"])
            .arg(out)
            .arg("-p")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run strace: {e}"))?;
        Ok(Strace {
            child,
            out: out.to_owned(),
        })
    }

    /// Detaches (SIGINT) and returns the calls per syscall name.
    pub fn finish(mut self) -> Result<BTreeMap<String, u64>, String> {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err("strace did not stop within 10 s of SIGINT".into());
                }
            }
        }
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let calls = parse_strace_summary(&text);
        if calls.is_empty() {
            let mut err = String::new();
            if let Some(mut e) = self.child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return Err(format!(
                "strace -c gave no summary ({}): {}",
                self.out.display(),
                err.trim()
            ));
        }
        Ok(calls)
    }
}

impl Drop for Strace {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Calls per syscall from `strace -c` output: rows of `% time, seconds,
/// usecs/call, calls, [errors,] syscall`.
pub fn parse_strace_summary(text: &str) -> BTreeMap<String, u64> {
    let mut calls = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || f[0].parse::<f64>().is_err() {
            continue;
        }
        let name = f[f.len() - 1];
        if name == "total" {
            continue;
        }
        if let Ok(n) = f[3].parse::<u64>() {
            *calls.entry(name.to_owned()).or_insert(0) += n;
        }
    }
    calls
}

/// `K` processes that spin on a core each until dropped (killed by PID).
#[derive(Debug)]
pub struct Spinners(Vec<Child>);

impl Spinners {
    /// Starts `k` copies of this binary's `spin` subcommand.
    pub fn start(k: usize) -> Result<Spinners, String> {
        let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut children = Vec::with_capacity(k);
        for _ in 0..k {
            let child = Command::new(&me)
                .arg("spin")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start a spinner: {e}"))?;
            children.push(child);
        }
        Ok(Spinners(children))
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The `spin` subcommand: burns one core until its parent (the harness) is gone.
pub fn spin() {
    let parent = std::os::unix::process::parent_id();
    let mut x: u64 = 1;
    loop {
        let until = Instant::now() + Duration::from_millis(200);
        while Instant::now() < until {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
            }
        }
        if std::os::unix::process::parent_id() != parent {
            return;
        }
    }
}
