//! A real cluster for tests: a `redis-server` on a unix socket and three `wsrelay`
//! binaries on free loopback ports sharing it, stopped by PID (tests/cluster.rs,
//! tests/cluster_signal.rs).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

pub const SECOND: Duration = Duration::from_secs(1);
pub const SECRET: &str = "cluster-test-secret";

/// One cluster at a time: several three-node clusters at once on a two-core
/// machine would measure the machine, not the cluster.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `kill -SIG PID`.
pub fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid}");
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------
// Redis

/// A `redis-server` of this test: no TCP port, a unix socket, no persistence.
pub struct Redis {
    pub child: Child,
    pub pid: u32,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Redis {
    /// Starts redis-server on `DIR/redis.sock` and waits until it answers PING.
    pub async fn start(dir: &Path) -> Redis {
        super::require("redis-server");
        let socket = dir.join("redis.sock");
        let log = dir.join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&socket)
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server");
        let pid = child.id().expect("redis-server pid");
        let redis = Redis {
            child,
            pid,
            socket,
            log,
        };
        let deadline = Instant::now() + 10 * SECOND;
        while redis.command(&["PING"]).await.as_deref() != Some("+PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING within 10 s: {}",
                tail(&redis.log, 20)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        redis
    }

    /// `redis+unix:///…/redis.sock`.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    /// One command over a fresh connection; the first line of the reply (`+PONG`,
    /// `:3`), or None if Redis does not answer within 2 s.
    pub async fn command(&self, args: &[&str]) -> Option<String> {
        let exchange = async {
            let mut s = tokio::net::UnixStream::connect(&self.socket).await.ok()?;
            let mut req = format!("*{}\r\n", args.len());
            for a in args {
                req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
            }
            s.write_all(req.as_bytes()).await.ok()?;
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line).await.ok()?;
            Some(line.trim_end().to_owned())
        };
        tokio::time::timeout(2 * SECOND, exchange).await.ok()?
    }

    /// Number of keys (`DBSIZE`).
    pub async fn keys(&self) -> Option<u64> {
        self.command(&["DBSIZE"])
            .await?
            .strip_prefix(':')?
            .parse()
            .ok()
    }

    /// `kill -SIG` and wait for the process to go.
    pub async fn stop(&mut self, sig: &str) {
        signal(self.pid, sig);
        tokio::time::timeout(10 * SECOND, self.child.wait())
            .await
            .expect("redis-server exits")
            .unwrap();
    }
}

// ---------------------------------------------------------------------------------
// Nodes

/// One `wsrelay` process of the cluster.
pub struct Node {
    pub label: &'static str,
    pub child: Child,
    pub pid: u32,
    pub http: SocketAddr,
    pub rtmp: SocketAddr,
    /// The node id it reports in `/api/cluster` (known once it registered).
    pub id: String,
    pub log: PathBuf,
    pub alive: bool,
}

impl Node {
    /// `wsrelay --http 127.0.0.1:0 --rtmp 127.0.0.1:0 --cluster URL --cluster-secret S
    /// --set live.publisher_grace_ms=G` (no `--node-url`: derived from the bound
    /// loopback address); stderr (the log) goes to `DIR/LABEL.log`.
    pub async fn start(
        label: &'static str,
        dir: &Path,
        redis_url: &str,
        grace_ms: u64,
        extra: &[String],
    ) -> Node {
        let log = dir.join(format!("{label}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_wsrelay"))
            .args(["--http", "127.0.0.1:0", "--rtmp", "127.0.0.1:0"])
            .args(["--cluster", redis_url, "--cluster-secret", SECRET])
            .arg("--set")
            .arg(format!("live.publisher_grace_ms={grace_ms}"))
            .args(extra)
            .env("RUST_LOG", "wsrelay=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("run wsrelay");
        let pid = child.id().expect("wsrelay pid");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let found = tokio::time::timeout(20 * SECOND, async {
            let (mut http, mut rtmp) = (None, None);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(a) = line.strip_prefix("listening http://") {
                    http = Some(a.parse::<SocketAddr>().expect("an address"));
                }
                if let Some(a) = line.strip_prefix("listening rtmp://") {
                    rtmp = Some(a.parse::<SocketAddr>().expect("an address"));
                }
                if let (Some(h), Some(r)) = (http, rtmp) {
                    return Some((h, r));
                }
            }
            None
        })
        .await;
        let Ok(Some((http, rtmp))) = found else {
            panic!(
                "node {label} printed no `listening http://` and `listening rtmp://` lines \
                 within 20 s; its log:\n{}",
                tail(&log, 40)
            );
        };
        // Keep reading stdout so the node never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Node {
            label,
            child,
            pid,
            http,
            rtmp,
            id: String::new(),
            log,
            alive: true,
        }
    }

    /// `http://127.0.0.1:PORT`, the URL the node should advertise.
    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// `rtmp://127.0.0.1:PORT/live/NAME`.
    pub fn rtmp_url(&self, name: &str) -> String {
        format!("rtmp://{}/live/{name}", self.rtmp)
    }

    /// `kill -9`: the crash case.
    pub async fn crash(&mut self) {
        signal(self.pid, "KILL");
        tokio::time::timeout(10 * SECOND, self.child.wait())
            .await
            .expect("wsrelay dies on SIGKILL")
            .unwrap();
        self.alive = false;
    }

    /// SIGTERM: a clean stop (exit 0 within the shutdown timeout).
    pub async fn terminate(&mut self) {
        signal(self.pid, "TERM");
        let status = tokio::time::timeout(15 * SECOND, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("node {} exits within 15 s of SIGTERM", self.label))
            .unwrap();
        self.alive = false;
        assert!(status.success(), "node {} exited with {status}", self.label);
    }
}

/// Redis and three nodes, A, B and C, in one directory of their own.
pub struct Cluster {
    pub dir: PathBuf,
    pub redis: Redis,
    pub a: Node,
    pub b: Node,
    pub c: Node,
    pub stopped: bool,
}

impl Cluster {
    /// Starts Redis and three nodes with `live.publisher_grace_ms = grace_ms`, and
    /// waits until every node lists all three.
    pub async fn start(test: &str, grace_ms: u64) -> Cluster {
        Cluster::start_with(test, grace_ms, &[]).await
    }

    /// [`Cluster::start`] with more command-line arguments for every node.
    pub async fn start_with(test: &str, grace_ms: u64, extra: &[String]) -> Cluster {
        let dir =
            std::env::temp_dir().join(format!("wsrelay-cluster-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let redis = Redis::start(&dir).await;
        let url = redis.url();
        let a = Node::start("A", &dir, &url, grace_ms, extra).await;
        let b = Node::start("B", &dir, &url, grace_ms, extra).await;
        let c = Node::start("C", &dir, &url, grace_ms, extra).await;
        let mut cluster = Cluster {
            dir,
            redis,
            a,
            b,
            c,
            stopped: false,
        };
        let took = cluster.wait_registered(10 * SECOND).await;
        println!("{test}: 3 nodes registered {took:?} after the last started");
        for node in [&mut cluster.a, &mut cluster.b, &mut cluster.c] {
            let v = json(node.http, "/api/cluster").await;
            assert_eq!(v["enabled"], true, "{v}");
            assert_eq!(v["node"]["url"], node.url(), "derived --node-url: {v}");
            node.id = v["node"]["id"].as_str().expect("node.id").to_owned();
            assert!(!node.id.is_empty(), "{v}");
        }
        let ids = [&cluster.a.id, &cluster.b.id, &cluster.c.id];
        assert!(
            ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
            "{ids:?}"
        );
        cluster
    }

    pub fn alive(&self) -> Vec<&Node> {
        [&self.a, &self.b, &self.c]
            .into_iter()
            .filter(|n| n.alive)
            .collect()
    }

    /// Waits until every live node answers `/api/cluster` with Redis ok and every
    /// live node listed (by URL); returns how long it took.
    pub async fn wait_registered(&self, within: Duration) -> Duration {
        let start = Instant::now();
        let want: Vec<String> = self.alive().iter().map(|n| n.url()).collect();
        loop {
            let mut last = Value::Null;
            let mut all = true;
            for node in self.alive() {
                let v = try_json(node.http, "/api/cluster")
                    .await
                    .unwrap_or(Value::Null);
                let urls: Vec<&str> = v["nodes"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|n| n["url"].as_str()).collect())
                    .unwrap_or_default();
                let ok = v["redis"] == "ok"
                    && urls.len() == want.len()
                    && want.iter().all(|u| urls.contains(&u.as_str()));
                if !ok {
                    all = false;
                    last = v;
                    break;
                }
            }
            if all {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "nodes {want:?} not all registered within {within:?}; last /api/cluster: {last}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM to every live node (each must exit 0), then Redis; removes the
    /// directory.
    pub async fn stop(&mut self) {
        for node in [&mut self.a, &mut self.b, &mut self.c] {
            if node.alive {
                node.terminate().await;
            }
        }
        self.redis.stop("TERM").await;
        self.stopped = true;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in [&self.a, &self.b, &self.c] {
                eprintln!(
                    "---- node {} ({}, {}), last log lines:\n{}",
                    node.label,
                    node.url(),
                    node.id,
                    tail(&node.log, 40)
                );
            }
            eprintln!(
                "---- redis: {}\n{}",
                self.redis.url(),
                tail(&self.redis.log, 10)
            );
            eprintln!("---- logs kept in {}", self.dir.display());
        } else if !self.stopped {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        // The children are killed on drop (kill_on_drop).
    }
}

// ---------------------------------------------------------------------------------
// HTTP and the API

pub async fn try_json(addr: SocketAddr, path: &str) -> Option<Value> {
    let body = tokio::time::timeout(5 * SECOND, super::http_get(addr, path))
        .await
        .ok()?
        .ok()?;
    serde_json::from_str(&body).ok()
}

pub async fn json(addr: SocketAddr, path: &str) -> Value {
    try_json(addr, path)
        .await
        .unwrap_or_else(|| panic!("GET {path} on {addr}: no JSON within 5 s"))
}
