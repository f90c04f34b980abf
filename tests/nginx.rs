//! Debian's nginx in front of wsrelay with `examples/nginx.conf`, adapted only where
//! a test must (ports, certificate, a temporary prefix): WS-FLV over wss, HTTP-FLV
//! over https (unbuffered: tags arrive live) and signaling over wss all go through
//! it, and wsrelay sees the client address from `X-Forwarded-For` because nginx is
//! a trusted proxy.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

const SECOND: Duration = Duration::from_secs(1);

/// The nginx binary (root's PATH has /usr/sbin; other users' may not).
fn nginx_bin() -> PathBuf {
    for candidate in ["nginx", "/usr/sbin/nginx"] {
        let ok = std::process::Command::new(candidate)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return PathBuf::from(candidate);
        }
    }
    panic!("`nginx` is required (apt-get install nginx); run the README's test command");
}

/// A free loopback port (bound and released; nginx takes it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx running `examples/nginx.conf` in front of `upstream`; killed on drop.
struct Nginx {
    child: std::process::Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM to the master: it stops its workers (SIGKILL would orphan them).
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + 5 * SECOND;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
            eprintln!("nginx error.log:\n{log}");
        }
    }
}

/// Rewrites the example for a test run; every replaced line must exist, so the
/// test breaks if the example changes shape.
fn adapt(
    example: &str,
    upstream: SocketAddr,
    port: u16,
    cert: &Path,
    key: &Path,
    dir: &Path,
) -> String {
    let d = dir.display();
    let swaps = [
        ("server 127.0.0.1:8080;", format!("server {upstream};")),
        ("listen 443 ssl;", format!("listen 127.0.0.1:{port} ssl;")),
        // The plain-HTTP redirect server gets a free port of its own.
        ("listen 80;", format!("listen 127.0.0.1:{};", free_port())),
        (
            "ssl_certificate     /etc/ssl/live.example.com/fullchain.pem;",
            format!("ssl_certificate     {};", cert.display()),
        ),
        (
            "ssl_certificate_key /etc/ssl/live.example.com/privkey.pem;",
            format!("ssl_certificate_key {};", key.display()),
        ),
        (
            "http {",
            format!(
                "http {{\n    access_log {d}/access.log;\n    client_body_temp_path {d}/body;\n    \
                 proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n    \
                 uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;"
            ),
        ),
        ("worker_processes auto;", "worker_processes 1;".to_owned()),
    ];
    let mut conf = example.to_owned();
    for (from, to) in swaps {
        assert!(
            conf.contains(from),
            "examples/nginx.conf no longer has `{from}`"
        );
        conf = conf.replacen(from, &to, 1);
    }
    conf
}

async fn start_nginx(upstream: SocketAddr, cert: &Path, key: &Path) -> Nginx {
    let bin = nginx_bin();
    let dir = scratch().join(format!("nginx-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/nginx.conf"))
            .unwrap();
    let port = free_port();
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, adapt(&example, upstream, port, cert, key, &dir)).unwrap();
    let globals = format!(
        "daemon off; pid {d}/nginx.pid; error_log {d}/error.log info;",
        d = dir.display()
    );
    let child = std::process::Command::new(bin)
        .arg("-p")
        .arg(&dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&conf)
        .args(["-g", &globals])
        // Everything goes to error.log; no worker may hold the test's pipes.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let nginx = Nginx { child, addr, dir };
    let deadline = Instant::now() + 10 * SECOND;
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "nginx did not start listening");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nginx
}

/// A TLS connection to nginx trusting only the test certificate.
async fn tls(addr: SocketAddr, ca: &rcgen::CertifiedKey<rcgen::KeyPair>) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector
        .connect(name, tcp)
        .await
        .expect("TLS handshake with nginx")
}

async fn wss(
    nginx: SocketAddr,
    ca: &rcgen::CertifiedKey<rcgen::KeyPair>,
    path: &str,
    forwarded_for: &str,
) -> WebSocketStream<TlsStream<TcpStream>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("wss://localhost{path}")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("x-forwarded-for", forwarded_for.parse().unwrap());
    let (ws, res) = tokio_tungstenite::client_async(req, tls(nginx, ca).await)
        .await
        .expect("wss through nginx");
    assert_eq!(res.status(), 101);
    ws
}

/// Next JSON text message.
async fn recv_json(ws: &mut WebSocketStream<TlsStream<TcpStream>>) -> serde_json::Value {
    loop {
        let msg = tokio::time::timeout(5 * SECOND, ws.next())
            .await
            .expect("message in time")
            .expect("socket open")
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plays_and_signals_through_nginx_with_the_example_config() {
    let server = server(|c| c.trusted_proxies = vec!["127.0.0.1/32".into()]).await;
    let upstream = server.http_addr().unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = scratch().join(format!("nginx-cert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ca.cert.pem()).unwrap();
    std::fs::write(&key, ca.signing_key.serialize_pem()).unwrap();
    let nginx = start_nginx(upstream, &cert, &key).await;

    let _publisher = publish_http(upstream, "proxied", media());
    wait_live(upstream, "proxied").await;

    // WS-FLV over wss through nginx.
    let mut ws = wss(nginx.addr, &ca, "/live/proxied.flv", "203.0.113.50").await;
    read_ws_flv(&mut ws, 75).await; // asserts the player-stream rules on the way
    // wsrelay saw the client nginx forwarded for.
    let body = http_get(upstream, "/api/streams/proxied").await.unwrap();
    let detail: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        detail["players_list"][0]["address"], "203.0.113.50:0",
        "{detail}"
    );
    ws.close(None).await.ok();

    // HTTP-FLV over https through nginx, unbuffered: live tags keep arriving at
    // the stream's pace, not in proxy-buffer-sized bursts at the end.
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls(nginx.addr, &ca).await))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/live/proxied.flv")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "video/x-flv");
    let mut body = res.into_body();
    let mut demux = flv::Demuxer::new(flv::DemuxerConfig::default());
    let mut check = StreamCheck::new();
    let started = Instant::now();
    let mut live_since: Option<(Instant, u32)> = None;
    let mut pace = 0.0;
    while started.elapsed() < 4 * SECOND {
        let frame = tokio::time::timeout(2 * SECOND, body.frame())
            .await
            .expect("https data keeps flowing through nginx")
            .expect("body continues")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            demux.push(&data);
        }
        while let Some(tag) = demux.next_tag().expect("valid FLV through nginx") {
            check.tag(&tag, started.elapsed());
            if tag.tag_type == flv::TagType::Video && check.video > 60 {
                let (t0, ts0) = *live_since.get_or_insert((Instant::now(), tag.timestamp));
                if t0.elapsed() > SECOND {
                    pace = f64::from(tag.timestamp - ts0) / 1000.0 / t0.elapsed().as_secs_f64();
                }
            }
        }
    }
    println!(
        "HTTP-FLV through nginx: {} video tags, live pace {pace:.2}x",
        check.video
    );
    assert!(check.video > 50);
    assert!(
        (0.8..1.25).contains(&pace),
        "live tags arrive at real-time pace through nginx, got {pace:.2}x"
    );

    // Signaling over wss through nginx.
    let mut alice = wss(nginx.addr, &ca, "/signal/proxied-room", "198.51.100.7").await;
    alice
        .send(Message::text(r#"{"type":"join","peer":"alice"}"#))
        .await
        .unwrap();
    assert_eq!(recv_json(&mut alice).await["type"], "welcome");
    let mut bob = wss(nginx.addr, &ca, "/signal/proxied-room", "198.51.100.8").await;
    bob.send(Message::text(r#"{"type":"join","peer":"bob"}"#))
        .await
        .unwrap();
    let welcome = recv_json(&mut bob).await;
    assert_eq!(welcome["peers"][0]["peer"], "alice", "{welcome}");
    assert_eq!(recv_json(&mut alice).await["type"], "peer-joined");
    bob.send(Message::text(
        r#"{"type":"offer","to":"alice","sdp":{"type":"offer","sdp":"v=0\r\n"}}"#,
    ))
    .await
    .unwrap();
    let offer = recv_json(&mut alice).await;
    assert_eq!(offer["type"], "offer", "{offer}");
    assert_eq!(offer["from"], "bob");

    // The API and the health check answer through the catch-all location.
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls(nginx.addr, &ca).await))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/api/rooms/proxied-room")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let room: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(room["peer_ids"], serde_json::json!(["alice", "bob"]));

    drop(nginx);
    server.shutdown().await;
}
