//! A user's first hour (issue 16): the built binary, copied alone into an empty
//! directory, serves the whole web UI; a wrong `--static-dir` is a startup error;
//! `/metrics` passes `promtool check metrics`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures_util::SinkExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

/// A fresh empty directory under target/ for this test.
fn empty_dir(name: &str) -> PathBuf {
    let dir = common::scratch().join(format!("firsthour-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The wsrelay binary cargo built for this test, copied into `dir`, once it can run.
///
/// Another test thread that forks while the copy's write descriptor is open hands
/// that descriptor to its child until the child's exec; meanwhile the kernel refuses
/// to run the copy ("text file busy"). Once one run succeeds no writer is left, so
/// the callers' own runs cannot meet that race.
fn copy_binary(dir: &Path) -> PathBuf {
    let bin = dir.join("wsrelay");
    std::fs::copy(env!("CARGO_BIN_EXE_wsrelay"), &bin).expect("copy the binary");
    for _ in 0..100 {
        match std::process::Command::new(&bin).arg("--version").output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("run the copied binary: {e}"),
            Ok(_) => return bin,
        }
    }
    panic!("the copied binary stayed busy for 2 s");
}

/// Starts `bin` in `cwd` and waits for its `listening http://ADDR` line.
async fn start(bin: &Path, cwd: &Path, args: &[&str]) -> (Child, SocketAddr) {
    let mut child = Command::new(bin)
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the copied binary");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if let Some(addr) = line.strip_prefix("listening http://") {
                return addr.parse::<SocketAddr>().expect("an address");
            }
        }
        panic!("wsrelay exited without a `listening http://` line");
    })
    .await
    .expect("`listening http://ADDR` within 20 s");
    // Keep reading stdout so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

/// A raw HTTP/1.1 GET: (status, head in lowercase, body).
async fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> (u16, String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{accept}\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("response within 10 s")
        .expect("read response");
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&out[..split]).to_ascii_lowercase();
    let status = head[9..12].parse().expect("a status code");
    let mut body = out[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = common::dechunk(&body).0;
    }
    (status, head, body)
}

fn content_type(head: &str) -> &str {
    head.lines()
        .find_map(|l| l.strip_prefix("content-type:"))
        .map_or("", str::trim)
}

#[tokio::test]
async fn a_copied_binary_serves_the_whole_ui_from_an_empty_directory() {
    let dir = empty_dir("copied");
    let bin = copy_binary(&dir);
    let (mut child, addr) = start(&bin, &dir, &["--http", "127.0.0.1:0", "--rtmp", "off"]).await;
    for (path, kind, marker) in [
        ("/", "text/html", "<title>wsrelay</title>"),
        ("/index.html", "text/html", "/js/index.js"),
        ("/player.html", "text/html", "/js/player.js"),
        ("/call.html", "text/html", "/js/call.js"),
        ("/js/live-player.js", "text/javascript", "LivePlayer"),
        ("/css/wsrelay.css", "text/css", "--accent"),
        (
            "/vendor/mpegts.js/dist/mpegts.js",
            "text/javascript",
            "exports.mpegts",
        ),
        (
            "/vendor/flv.js/dist/flv.min.js",
            "text/javascript",
            "exports.flvjs",
        ),
        ("/vendor/mpegts.js/LICENSE", "text/plain", "Apache License"),
    ] {
        let (status, head, body) = get(addr, path, None).await;
        assert_eq!(status, 200, "{path}: {head}");
        assert!(
            content_type(&head).starts_with(kind),
            "{path}: content type {:?}, want {kind}",
            content_type(&head)
        );
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains(marker), "{path} lacks {marker:?}");
        assert!(head.contains("etag: \""), "{path}: no ETag in {head}");
    }
    let (status, _, _) = get(addr, "/nope.html", None).await;
    assert_eq!(status, 404);
    let (status, _, _) = get(addr, "/vendor/../Cargo.toml", None).await;
    assert_eq!(status, 404);
    // Nothing was written next to the binary.
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, vec!["wsrelay"], "files appeared beside the binary");
    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_explicit_static_dir_replaces_the_embedded_pages() {
    let dir = empty_dir("devpages");
    let pages = dir.join("pages");
    std::fs::create_dir_all(&pages).unwrap();
    std::fs::write(pages.join("index.html"), "<p>my page</p>").unwrap();
    let bin = copy_binary(&dir);
    let (mut child, addr) = start(
        &bin,
        &dir,
        &[
            "--http",
            "127.0.0.1:0",
            "--rtmp",
            "off",
            "--static-dir",
            "pages",
        ],
    )
    .await;
    let (status, _, body) = get(addr, "/", None).await;
    assert_eq!((status, body.as_slice()), (200, &b"<p>my page</p>"[..]));
    let (status, _, body) = get(addr, "/vendor/mpegts.js/dist/mpegts.js", None).await;
    assert_eq!(status, 404);
    assert!(
        String::from_utf8_lossy(&body).contains("player library not in static_dir"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_missing_static_dir_is_a_startup_error() {
    let dir = empty_dir("nodir");
    let bin = copy_binary(&dir);
    std::fs::write(dir.join("a-file"), "x").unwrap();
    for (arg, why) in [
        ("/nonexistent/wsrelay-pages", "does not exist"),
        ("a-file", "is not a directory"),
    ] {
        let out = Command::new(&bin)
            .args([
                "--http",
                "127.0.0.1:0",
                "--rtmp",
                "off",
                "--static-dir",
                arg,
            ])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(20), out)
            .await
            .expect("wsrelay exits at once")
            .expect("wsrelay runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "started with --static-dir {arg}");
        assert!(
            !stdout.contains("listening"),
            "listened with --static-dir {arg}: {stdout}"
        );
        assert!(
            stderr.contains(&format!("static_dir {arg}: {why}")),
            "--static-dir {arg}: unclear error: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `promtool` is required, loudly: Debian's `prometheus` package ships it.
fn require_promtool() {
    let ok = std::process::Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "`promtool` is required (apt-get install prometheus); run the README's test \
         command (scripts/test.sh) to install it"
    );
}

#[tokio::test]
async fn metrics_pass_promtool_with_streams_players_and_peers() {
    require_promtool();
    let server = common::server(|_| {}).await;
    let addr = server.http_addr().unwrap();
    let _publisher = common::publish_http(addr, "cam1", common::media());
    common::wait_live(addr, "cam1").await;
    // A WebSocket player and an HTTP-FLV player (first-frame histogram, bytes out).
    let mut ws = common::WsPlayer::connect(addr, "cam1").await;
    for _ in 0..10 {
        ws.next(Duration::from_secs(5)).await.expect("a tag");
    }
    let http_player = tokio::spawn(common::ffmpeg_play(addr, "cam1", 2));
    // A signaling peer (rooms, peers, message types) and an error code.
    let (mut peer, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/signal/room1"))
        .await
        .expect("signal connect");
    peer.send(Message::text(r#"{"type":"join","peer":"alice"}"#))
        .await
        .unwrap();
    peer.send(Message::text("not json")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (status, head, body) = get(addr, "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(
        content_type(&head).starts_with("text/plain; version=0.0.4"),
        "{head}"
    );
    let text = String::from_utf8(body).unwrap();
    for family in [
        "wsrelay_bytes_in_total",
        "wsrelay_bytes_out_total",
        "wsrelay_players",
        "wsrelay_time_to_first_frame_seconds",
        "wsrelay_signal_messages_total",
        "wsrelay_signal_errors_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{text}"
        );
    }
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    {
        use std::io::Write;
        promtool
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}\n--- /metrics ---\n{text}"
    );

    // A scraper that prefers OpenMetrics gets it.
    let (status, head, body) = get(
        addr,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        content_type(&head).starts_with("application/openmetrics-text"),
        "{head}"
    );
    assert!(String::from_utf8_lossy(&body).ends_with("# EOF\n"));
    let (frames, _) = http_player.await.unwrap();
    assert!(frames > 0, "the HTTP-FLV player decoded nothing");
}
