//! Servers under test: wsrelay, the ceiling or node-media-server (`nms.rs`), started
//! as child processes on free loopback ports, or an external server given by `--url`.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a started server has to print its `listening` lines.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The wsrelay configuration the harness runs with: loopback listeners, limits
/// raised so that the harness's own load is not refused (these are the knobs an
/// operator would raise for such a load too), `live.write_coalesce_ms` when a window
/// is given, everything else default.
fn wsrelay_config(rtmp: bool, window_ms: Option<u64>) -> String {
    let window = window_ms.map_or(String::new(), |w| format!("write_coalesce_ms = {w}\n"));
    format!(
        r#"# Written by the load harness (benches/load).
http = "127.0.0.1:0"
rtmp = "{rtmp}"
max_connections = 19000
# All load comes from loopback: one IP.
max_connections_per_ip = 19000

[live]
max_players = 19000
max_players_per_stream = 19000
{window}
[signal]
max_connections = 19000
max_rooms = 19000
max_peers_per_room = 1000
rate_per_second = 1000000
rate_burst = 1000000
"#,
        rtmp = if rtmp { "127.0.0.1:0" } else { "off" },
    )
}

/// A server under test.
#[derive(Debug)]
pub struct Target {
    /// Label in reports and of its log file: `wsrelay`, `ceiling`, `nms` or `url`.
    pub label: String,
    /// `host:port` of the HTTP/WebSocket listener.
    pub http: SocketAddr,
    /// `host:port` of the RTMP listener, if any.
    pub rtmp: Option<SocketAddr>,
    /// PID for CPU/RSS sampling.
    pub pid: Option<u32>,
    child: Option<Child>,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Target {
    /// An external server.
    pub fn external(url: &str, pid: Option<u32>) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("ws://"))
            .ok_or_else(|| format!("--url must start with http:// or ws:// (got {url})"))?;
        let hostport = rest.split('/').next().unwrap_or(rest);
        let http = std::net::ToSocketAddrs::to_socket_addrs(hostport)
            .map_err(|e| format!("cannot resolve {hostport}: {e}"))?
            .next()
            .ok_or_else(|| format!("{hostport} resolves to nothing"))?;
        Ok(Target {
            label: "url".into(),
            http,
            rtmp: None,
            pid,
            child: None,
        })
    }

    /// Starts wsrelay (`bin`) with the harness config in `dir`, with
    /// `live.write_coalesce_ms = W` if `window_ms` is `Some(W)`.
    pub fn wsrelay(
        bin: &Path,
        dir: &Path,
        rtmp: bool,
        window_ms: Option<u64>,
    ) -> Result<Target, String> {
        Target::wsrelay_node(bin, dir, "wsrelay", rtmp, window_ms, &[])
    }

    /// Starts wsrelay like [`Target::wsrelay`] as `label` (its log is
    /// `dir/LABEL.log`), with extra command-line arguments (e.g. the cluster flags).
    pub fn wsrelay_node(
        bin: &Path,
        dir: &Path,
        label: &str,
        rtmp: bool,
        window_ms: Option<u64>,
        args: &[String],
    ) -> Result<Target, String> {
        if !bin.exists() {
            return Err(format!(
                "wsrelay binary {} not found: build it with `cargo build --release --bin wsrelay` \
                 or pass --server-bin",
                bin.display()
            ));
        }
        let config = dir.join("wsrelay-bench.toml");
        std::fs::write(&config, wsrelay_config(rtmp, window_ms))
            .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("--config").arg(&config).args(args);
        spawn(label, cmd, dir, rtmp)
    }

    /// Starts the ceiling server: this very binary, `ceiling-server` subcommand, with
    /// an RTMP listener if `rtmp`, at window `window_ms`.
    pub fn ceiling(
        dir: &Path,
        threads: Option<usize>,
        rtmp: bool,
        window_ms: u64,
    ) -> Result<Target, String> {
        let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut cmd = Command::new(me);
        cmd.args(["ceiling-server", "--listen", "127.0.0.1:0"]);
        cmd.arg("--window-ms").arg(window_ms.to_string());
        if rtmp {
            cmd.args(["--rtmp", "127.0.0.1:0"]);
        }
        if let Some(t) = threads {
            cmd.arg("--threads").arg(t.to_string());
        }
        spawn("ceiling", cmd, dir, rtmp)
    }

    /// Starts node-media-server with the launcher `nms.rs` wrote (`node LAUNCHER DIR`):
    /// RTMP and HTTP on loopback, free ports.
    pub fn nms(node: &Path, launcher: &Path, nms_dir: &Path, dir: &Path) -> Result<Target, String> {
        let mut cmd = Command::new(node);
        cmd.arg(launcher).arg(nms_dir).current_dir(dir);
        spawn("nms", cmd, dir, true)
    }
}

/// The default `live.write_coalesce_ms` of a wsrelay binary (its `--print-config`
/// lists every key with its default), or `None` if it has no such key.
pub fn wsrelay_coalesce_default(bin: &Path) -> Result<Option<u64>, String> {
    let out = Command::new(bin)
        .arg("--print-config")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {} --print-config: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} --print-config failed ({})",
            bin.display(),
            out.status
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("write_coalesce_ms"));
    match line {
        None => Ok(None),
        Some(rest) => rest
            .trim()
            .trim_start_matches('=')
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| {
                format!(
                    "{} --print-config: write_coalesce_ms{rest}: {e}",
                    bin.display()
                )
            }),
    }
}

fn spawn(label: &str, mut cmd: Command, dir: &Path, want_rtmp: bool) -> Result<Target, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let log_path: PathBuf = dir.join(format!("{label}.log"));
    let log = std::fs::File::create(&log_path)
        .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {label}: {e}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel::<String>();
    // Reads the `listening` lines, then keeps draining stdout so the child never
    // blocks on a full pipe.
    std::thread::spawn(move || {
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(log_path.with_extension("stdout.log"))
            .ok();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(f) = &mut log {
                let _ = writeln!(f, "{line}");
            }
            let _ = tx.send(line);
        }
    });
    let mut http = None;
    let mut rtmp = None;
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    while http.is_none() || (want_rtmp && rtmp.is_none()) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(a) = line.strip_prefix("listening http://") {
                    http = a.trim().parse().ok();
                } else if let Some(a) = line.strip_prefix("listening rtmp://") {
                    rtmp = a.trim().parse().ok();
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let what = if http.is_none() { "http" } else { "rtmp" };
                return Err(format!(
                    "{label} did not print `listening {what}://…` in {START_TIMEOUT:?} (see {}/{label}.log)",
                    dir.display()
                ));
            }
        }
    }
    Ok(Target {
        label: label.to_owned(),
        http: http.expect("loop ends with http set"),
        rtmp,
        pid: Some(child.id()),
        child: Some(child),
    })
}
