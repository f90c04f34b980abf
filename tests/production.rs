//! Production features over real sockets: publish/play tokens on every path (HTTP,
//! WebSocket and RTMP via ffmpeg), HTTP hooks against a real hook server, https and
//! wss through rustls with a certificate made at test time, `/metrics` moving, the
//! admin API and its kick, `X-Forwarded-For` from trusted proxies only, slow-loris
//! and per-IP limits, and a SIGHUP reload of the real binary.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use signaling::Secret;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::{self, Message};
use wsrelay::access::auth::{mint, unix_now};
use wsrelay::vocab::Action;

const SECOND: Duration = Duration::from_secs(1);
const SECRET: &str = "production-test-secret";

/// A token signed with [`SECRET`]; `age` moves its issue time into the past.
fn token(stream: &str, action: Action, ttl_secs: u64, age_secs: u64) -> String {
    mint(
        &Secret::new(SECRET),
        stream,
        action,
        Duration::from_secs(ttl_secs),
        unix_now() - age_secs,
    )
}

/// The four tokens every path is tried with, besides none at all, and the status
/// each must get.
fn bad_tokens(stream: &str, action: Action) -> Vec<(&'static str, String, u16)> {
    let other = match action {
        Action::Publish => Action::Play,
        Action::Play => Action::Publish,
    };
    vec![
        ("expired", token(stream, action, 60, 3_600), 401),
        ("wrong stream", token("other", action, 600, 0), 403),
        ("wrong action", token(stream, other, 600, 0), 403),
        (
            "bad signature",
            mint(
                &Secret::new("not-the-secret"),
                stream,
                action,
                Duration::from_secs(600),
                unix_now(),
            ),
            401,
        ),
    ]
}

/// Auth on: publishing and playing every stream need a token.
fn with_auth(c: &mut wsrelay::config::Config) {
    c.auth.secrets = vec![Secret::new(SECRET)];
    c.auth.publish_prefixes = vec![String::new()];
    c.auth.play_prefixes = vec![String::new()];
    c.auth.leeway_ms = 0;
}

/// The status of a WebSocket upgrade to `url` (101 when it succeeded).
async fn ws_status(url: &str) -> (u16, Option<WsClient>) {
    match tokio_tungstenite::connect_async(url).await {
        Ok((ws, res)) => (res.status().as_u16(), Some(ws)),
        Err(tungstenite::Error::Http(res)) => (res.status().as_u16(), None),
        Err(e) => panic!("WebSocket to {url} failed: {e}"),
    }
}

type WsClient =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// An HTTP request with extra headers; returns status and body.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(10 * SECOND, s.read_to_end(&mut out))
        .await
        .expect("response in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// `ffmpeg … -f flv -rtmp_playpath KEY rtmp://ADDR/live` (OBS's server + key form).
fn publish_rtmp(rtmp: SocketAddr, key: &str, file: &Path) -> Child {
    ffmpeg_publish(
        &format!("rtmp://{rtmp}/live"),
        file,
        &["-rtmp_playpath", key],
    )
}

/// `ffmpeg -re -i MEDIA -c copy -f flv -method POST http://ADDR/live/NAME.flv?QUERY`.
fn publish_http_query(addr: SocketAddr, name: &str, query: &str) -> Child {
    let url = format!("http://{addr}/live/{name}.flv?{query}");
    ffmpeg_publish(&url, media(), &["-method", "POST"])
}

/// Waits for a refused ffmpeg publisher to give up; returns its stderr.
async fn refused(child: Child) -> String {
    let out = tokio::time::timeout(20 * SECOND, child.wait_with_output())
        .await
        .expect("a refused ffmpeg exits")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "ffmpeg should have been refused");
    stderr
}

/// Whether `name` is in `/api/streams`.
async fn is_listed(addr: SocketAddr, name: &str) -> bool {
    let body = http_get(addr, "/api/streams").await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == name)
}

/// Plays `name` over WS-FLV (with `query`) for a little while: tags arrive in order.
async fn ws_plays(addr: SocketAddr, name: &str, query: &str) -> usize {
    let url = format!("ws://{addr}/live/{name}.flv?{query}");
    let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("play");
    let mut player = WsPlayer {
        ws,
        demux: flv::Demuxer::new(flv::DemuxerConfig::default()),
        bytes: 0,
        started: Instant::now(),
    };
    let mut check = StreamCheck::new();
    while check.video < 25 {
        let tag = player.next(10 * SECOND).await.expect("tags");
        check.tag(&tag, player.started.elapsed());
    }
    check.video
}

/// Reads `/metrics` and returns the value of the sample `series` (exact match of
/// the name with labels), or 0 when it is absent.
async fn metric(addr: SocketAddr, series: &str) -> f64 {
    let text = http_get(addr, "/metrics").await.unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().unwrap())
        })
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_all_three_publish_paths() {
    let server = server(|c| {
        with_auth(c);
        c.rtmp = wsrelay::config::Listen::On("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let addr = server.http_addr().unwrap();
    let rtmp = server.rtmp_addr().unwrap();
    let flv = std::fs::read(media()).unwrap();
    let small = &flv[..64 << 10];

    // HTTP POST: none, expired, wrong stream, wrong action, forged.
    let (status, body) = request(addr, "POST", "/live/h/cam.flv", "", small).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("token is required"), "{body}");
    for (what, t, want) in bad_tokens("h/cam", Action::Publish) {
        let (status, body) = request(
            addr,
            "POST",
            &format!("/live/h/cam.flv?token={t}"),
            "",
            small,
        )
        .await;
        assert_eq!(status, want, "HTTP publish with {what} token: {body}");
        assert!(!body.contains(&t), "the reason never echoes the token");
    }
    // A prefix token for `h/` publishes over HTTP (ffmpeg, real time).
    let good = token("h/", Action::Publish, 600, 0);
    let _http = publish_http_query(addr, "h/cam", &format!("token={good}"));
    wait_live(addr, "h/cam").await;

    // WebSocket publish: refused before the upgrade with the same statuses.
    let (status, _) = ws_status(&format!("ws://{addr}/live/w/cam.flv?publish")).await;
    assert_eq!(status, 401);
    for (what, t, want) in bad_tokens("w/cam", Action::Publish) {
        let (status, _) = ws_status(&format!("ws://{addr}/live/w/cam.flv?publish&token={t}")).await;
        assert_eq!(status, want, "WS publish with {what} token");
    }
    let good = token("w/cam", Action::Publish, 600, 0);
    let (status, ws) = ws_status(&format!("ws://{addr}/live/w/cam.flv?publish&token={good}")).await;
    assert_eq!(status, 101);
    let mut ws = ws.unwrap();
    for chunk in flv.chunks(64 << 10).take(24) {
        ws.send(Message::Binary(Bytes::copy_from_slice(chunk)))
            .await
            .unwrap();
    }
    wait_live(addr, "w/cam").await;

    // RTMP: the token travels in the stream key's query.
    let stderr = refused(publish_rtmp(rtmp, "r", media())).await;
    println!("RTMP without token: {stderr}");
    assert!(!is_listed(addr, "r").await);
    for (what, t, _) in bad_tokens("r", Action::Publish) {
        let stderr = refused(publish_rtmp(rtmp, &format!("r?token={t}"), media())).await;
        println!("RTMP with {what} token: {}", stderr.trim());
        assert!(!is_listed(addr, "r").await, "{what}");
    }
    let good = token("r", Action::Publish, 600, 0);
    let _rtmp = publish_rtmp(rtmp, &format!("r?token={good}"), media());
    wait_live(addr, "r").await;

    let refusals = metric(
        addr,
        "wsrelay_auth_refusals_total{action=\"publish\",reason=\"missing\"}",
    )
    .await;
    assert_eq!(refusals, 3.0, "one missing-token refusal per path");
    ws.close(None).await.ok();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_both_play_paths() {
    let server = server(with_auth).await;
    let addr = server.http_addr().unwrap();
    let publish = token("cam", Action::Publish, 600, 0);
    let _publisher = publish_http_query(addr, "cam", &format!("token={publish}"));
    wait_live(addr, "cam").await;

    // WebSocket-FLV.
    let (status, _) = ws_status(&format!("ws://{addr}/live/cam.flv")).await;
    assert_eq!(status, 401);
    for (what, t, want) in bad_tokens("cam", Action::Play) {
        let (status, _) = ws_status(&format!("ws://{addr}/live/cam.flv?token={t}")).await;
        assert_eq!(status, want, "WS-FLV play with {what} token");
    }
    let play = token("cam", Action::Play, 600, 0);
    assert!(ws_plays(addr, "cam", &format!("token={play}")).await >= 25);

    // HTTP-FLV.
    let (status, head, _) = get_head(addr, "/live/cam.flv", "").await;
    assert_eq!(status, 401, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer")
    );
    for (what, t, want) in bad_tokens("cam", Action::Play) {
        let (status, _, _) = get_head(addr, &format!("/live/cam.flv?token={t}"), "").await;
        assert_eq!(status, want, "HTTP-FLV play with {what} token");
    }
    let (status, head, mut body) = get_head(addr, &format!("/live/cam.flv?token={play}"), "").await;
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("video/x-flv"));
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(5 * SECOND, body.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        buf[..n].windows(3).any(|w| w == b"FLV"),
        "the body starts with the FLV header"
    );
    server.shutdown().await;
}

/// What the hook server saw.
type Seen = Arc<Mutex<Vec<serde_json::Value>>>;

/// A hook server: streams named `deny…` are refused (403), `hang…` never get an
/// answer, plays of `…-private` are refused; everything else is allowed.
async fn hook_server() -> (SocketAddr, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let log = log.clone();
                    async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        log.lock().unwrap().push(event.clone());
                        let stream = event["stream"].as_str().unwrap_or("");
                        let status = if stream.starts_with("hang") {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                            200
                        } else if stream.starts_with("deny")
                            || (event["action"] == "on_play" && stream.ends_with("-private"))
                        {
                            403
                        } else {
                            200
                        };
                        let mut res = Response::new(Full::new(Bytes::new()));
                        *res.status_mut() = StatusCode::from_u16(status).unwrap();
                        Ok::<_, std::convert::Infallible>(res)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_allow_refuse_and_time_out() {
    let (hooks, seen) = hook_server().await;
    let server = server(|c| {
        c.hooks.on_publish = Some(format!("http://{hooks}/on_publish"));
        c.hooks.on_play = Some(format!("http://{hooks}/on_play"));
        c.hooks.on_unpublish = Some(format!("http://{hooks}/on_unpublish"));
        c.hooks.timeout_ms = 700;
        c.rtmp = wsrelay::config::Listen::On("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let addr = server.http_addr().unwrap();
    let rtmp = server.rtmp_addr().unwrap();
    let flv = std::fs::read(media()).unwrap();

    // Allowed: an RTMP publish, with its query passed to the hook.
    let _allowed = publish_rtmp(rtmp, "cam-private?sig=abc", media());
    wait_live(addr, "cam-private").await;
    let _allowed_http = publish_http(addr, "open", media());
    wait_live(addr, "open").await;

    // Refused by the hook: 403 over HTTP, an error status over RTMP.
    let (status, body) = request(addr, "POST", "/live/deny1.flv", "", &flv[..4096]).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("on_publish"), "{body}");
    let stderr = refused(publish_rtmp(rtmp, "deny2", media())).await;
    println!("RTMP refused by hook: {}", stderr.trim());
    assert!(!is_listed(addr, "deny2").await);

    // A hanging hook refuses after the timeout (503), without waiting for it.
    let started = Instant::now();
    let (status, body) = ws_status(&format!("ws://{addr}/live/hang1.flv?publish")).await;
    assert_eq!(status, 503, "{body:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(600) && waited < 3 * SECOND,
        "refused after the hook timeout, took {waited:?}"
    );

    // on_play decides per stream.
    let (status, _) = ws_status(&format!("ws://{addr}/live/cam-private.flv")).await;
    assert_eq!(status, 403);
    let (status, _, _) = get_head(addr, "/live/cam-private.flv", "").await;
    assert_eq!(status, 403);
    assert!(ws_plays(addr, "open", "").await >= 25);

    // A publisher that ends is reported to on_unpublish.
    let (status, body) = request(addr, "POST", "/live/short.flv", "", &flv).await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + 5 * SECOND;
    loop {
        let unpublished = seen
            .lock()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "on_unpublish" && e["stream"] == "short");
        if unpublished {
            break;
        }
        assert!(Instant::now() < deadline, "on_unpublish never called");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let events = seen.lock().unwrap().clone();
    let rtmp_publish = events
        .iter()
        .find(|e| e["action"] == "on_publish" && e["stream"] == "cam-private")
        .expect("on_publish for the RTMP stream");
    assert_eq!(rtmp_publish["protocol"], "rtmp");
    assert_eq!(rtmp_publish["query"], "sig=abc");
    assert!(
        rtmp_publish["client"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "on_play" && e["stream"] == "open" && e["protocol"] == "ws")
    );

    for (series, at_least) in [
        (
            "wsrelay_auth_refusals_total{action=\"publish\",reason=\"hook_refused\"}",
            2.0,
        ),
        (
            "wsrelay_auth_refusals_total{action=\"publish\",reason=\"hook_timeout\"}",
            1.0,
        ),
        (
            "wsrelay_auth_refusals_total{action=\"play\",reason=\"hook_refused\"}",
            2.0,
        ),
        (
            "wsrelay_hook_duration_seconds_count{hook=\"on_publish\",outcome=\"timeout\"}",
            1.0,
        ),
        (
            "wsrelay_hook_duration_seconds_count{hook=\"on_play\",outcome=\"allow\"}",
            1.0,
        ),
    ] {
        let v = metric(addr, series).await;
        assert!(v >= at_least, "{series} = {v}");
    }
    server.shutdown().await;
}

/// A self-signed certificate for `localhost`, written to PEM files.
fn certificate() -> (
    rcgen::CertifiedKey<rcgen::KeyPair>,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = scratch().join(format!("tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (ck, cert, key)
}

/// A TLS connection to `addr` trusting only `ca`.
async fn tls_connect(
    addr: SocketAddr,
    ca: &rcgen::CertifiedKey<rcgen::KeyPair>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    use tokio_rustls::rustls;
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
    connector.connect(name, tcp).await.expect("TLS handshake")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_and_https_playback_through_tls() {
    let (ca, cert, key) = certificate();
    let server = server(|c| {
        c.tls_listen = wsrelay::config::Listen::On("127.0.0.1:0".parse().unwrap());
        c.tls_cert = Some(cert);
        c.tls_key = Some(key);
    })
    .await;
    let addr = server.http_addr().unwrap();
    let tls = server.tls_addr().expect("TLS listener is on");
    let _publisher = publish_http(addr, "secure", media());
    wait_live(addr, "secure").await;

    // wss: tokio-tungstenite over a rustls stream that trusts our certificate.
    let stream = tls_connect(tls, &ca).await;
    let (mut ws, res) = tokio_tungstenite::client_async("wss://localhost/live/secure.flv", stream)
        .await
        .expect("wss upgrade");
    assert_eq!(res.status(), 101);
    let (header, _) = read_ws_flv(&mut ws, 50).await;
    assert!(header.audio && header.video);
    ws.close(None).await.ok();

    // https: a hyper client over rustls plays HTTP-FLV.
    let stream = tls_connect(tls, &ca).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/live/secure.flv")
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
    while check.video < 50 {
        let frame = tokio::time::timeout(5 * SECOND, body.frame())
            .await
            .expect("https data")
            .expect("body continues")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            demux.push(&data);
        }
        while let Some(tag) = demux.next_tag().expect("valid FLV over https") {
            check.tag(&tag, started.elapsed());
        }
    }
    // The plain listener keeps working next to it, and the API answers over TLS too.
    assert!(http_get(addr, "/healthz").await.is_ok());
    server.shutdown().await;
}

/// Joins signaling room `room` as `peer`; returns the socket after `welcome`.
async fn signal_join(addr: SocketAddr, room: &str, peer: &str) -> WsClient {
    signal_join_with(
        addr,
        room,
        serde_json::json!({"type": "join", "peer": peer}),
    )
    .await
    .0
}

/// Sends `join` and returns the socket and the `welcome`.
async fn signal_join_with(
    addr: SocketAddr,
    room: &str,
    join: serde_json::Value,
) -> (WsClient, serde_json::Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/signal/{room}"))
        .await
        .expect("signal connect");
    let join = join.to_string();
    ws.send(Message::text(join)).await.unwrap();
    loop {
        let msg = tokio::time::timeout(5 * SECOND, ws.next())
            .await
            .expect("welcome in time")
            .expect("socket open")
            .unwrap();
        if let Message::Text(t) = msg {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            assert_eq!(v["type"], "welcome", "{v}");
            return (ws, v);
        }
    }
}

/// Polls `series` until `want(value)` holds (metrics move asynchronously).
async fn metric_until(addr: SocketAddr, series: &str, want: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + 10 * SECOND;
    loop {
        let v = metric(addr, series).await;
        if want(v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{series} stuck at {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_streams_and_peers_come_and_go() {
    let server = server(|c| c.live.publisher_grace_ms = 300).await;
    let addr = server.http_addr().unwrap();
    let text = http_get(addr, "/metrics").await.unwrap();
    assert!(text.contains("# TYPE wsrelay_streams gauge"), "{text}");
    // A scrape without `Accept` gets the Prometheus 0.0.4 text format (no `# EOF`).
    assert!(!text.contains("# EOF"), "0.0.4 text by default");
    assert_eq!(metric(addr, "wsrelay_streams").await, 0.0);

    let publisher = publish_http(addr, "m", media());
    wait_live(addr, "m").await;
    assert_eq!(metric(addr, "wsrelay_streams").await, 1.0);
    assert_eq!(
        metric(addr, "wsrelay_publishers{protocol=\"http\"}").await,
        1.0
    );
    let in1 = metric(addr, "wsrelay_bytes_in_total{protocol=\"http\"}").await;
    assert!(in1 > 0.0);

    let url = format!("ws://{addr}/live/m.flv");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let _ = ws.next().await;
    assert_eq!(metric(addr, "wsrelay_players{protocol=\"ws\"}").await, 1.0);
    let (status, _, http_player) = get_head(addr, "/live/m.flv", "").await;
    assert_eq!(status, 200);
    metric_until(addr, "wsrelay_players{protocol=\"http\"}", |v| v == 1.0).await;
    for _ in 0..50 {
        let _ = ws.next().await;
    }
    metric_until(
        addr,
        "wsrelay_time_to_first_frame_seconds_count{protocol=\"ws\"}",
        |v| v == 1.0,
    )
    .await;
    let out1 = metric(addr, "wsrelay_bytes_out_total{protocol=\"ws\"}").await;
    assert!(out1 > 0.0);
    tokio::time::sleep(SECOND).await;
    for _ in 0..50 {
        let _ = ws.next().await;
    }
    assert!(metric(addr, "wsrelay_bytes_out_total{protocol=\"ws\"}").await > out1);
    assert!(metric(addr, "wsrelay_bytes_in_total{protocol=\"http\"}").await > in1);

    // Players leave.
    ws.close(None).await.ok();
    drop(ws);
    drop(http_player);
    metric_until(addr, "wsrelay_players{protocol=\"ws\"}", |v| v == 0.0).await;
    metric_until(addr, "wsrelay_players{protocol=\"http\"}", |v| v == 0.0).await;

    // Signaling rooms and peers.
    let (mut a, welcome) = signal_join_with(
        addr,
        "r1",
        serde_json::json!({"type": "join", "peer": "alice"}),
    )
    .await;
    let b = signal_join(addr, "r1", "bob").await;
    let c = signal_join(addr, "r2", "carol").await;
    assert_eq!(metric(addr, "wsrelay_signal_rooms").await, 2.0);
    assert_eq!(metric(addr, "wsrelay_signal_peers").await, 3.0);
    assert_eq!(
        metric(addr, "wsrelay_signal_messages_total{type=\"join\"}").await,
        3.0
    );
    a.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    a.send(Message::text("{nope")).await.unwrap();
    metric_until(addr, "wsrelay_signal_messages_total{type=\"ping\"}", |v| {
        v == 1.0
    })
    .await;
    metric_until(
        addr,
        "wsrelay_signal_errors_total{code=\"bad-json\"}",
        |v| v == 1.0,
    )
    .await;
    // Alice's connection drops; she resumes her session.
    drop(a);
    let resume = serde_json::json!({"type": "join", "resume": welcome["session"]});
    let (a, again) = signal_join_with(addr, "r1", resume).await;
    assert_eq!(again["resumed"], true, "{again}");
    metric_until(addr, "wsrelay_signal_resumes_total", |v| v == 1.0).await;
    drop((a, b, c));

    // The publisher leaves: the stream ends after the grace period.
    drop(publisher);
    metric_until(addr, "wsrelay_publishers{protocol=\"http\"}", |v| v == 0.0).await;
    metric_until(addr, "wsrelay_streams", |v| v == 0.0).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_needs_its_token_and_a_kick_ends_the_stream_at_once() {
    let server = server(|c| {
        c.admin_token = Some(Secret::new("admin-secret"));
        // A long grace period: the kick must not wait for it.
        c.live.publisher_grace_ms = 60_000;
    })
    .await;
    let addr = server.http_addr().unwrap();
    let bearer = "Authorization: Bearer admin-secret\r\n";

    // The admin routes need the token; the public lists, /healthz and /metrics not.
    for path in ["/api/streams/any", "/api/rooms/any"] {
        let (status, body) = request(addr, "GET", path, "", b"").await;
        assert_eq!(status, 401, "{path}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["code"], "unauthorized");
        let nope = "Authorization: Bearer nope\r\n";
        let (status, _) = request(addr, "GET", path, nope, b"").await;
        assert_eq!(status, 401);
        let (status, _) = request(addr, "GET", path, bearer, b"").await;
        assert_eq!(status, 404, "{path} with the token");
    }
    let (status, _) = request(addr, "DELETE", "/api/streams/any", "", b"").await;
    assert_eq!(status, 401);
    let (status, _) = request(addr, "GET", "/api/streams", "", b"").await;
    assert_eq!(status, 200);
    assert!(http_get(addr, "/healthz").await.is_ok());
    assert!(http_get(addr, "/metrics").await.is_ok());

    let mut publisher = publish_http(addr, "team/kick", media());
    let deadline = Instant::now() + 15 * SECOND;
    loop {
        let (status, _) = request(addr, "GET", "/api/streams/team/kick", bearer, b"").await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "stream never went live");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(SECOND).await;
    let mut ws_player = {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/live/team/kick.flv"))
            .await
            .unwrap();
        WsPlayer {
            ws,
            demux: flv::Demuxer::new(flv::DemuxerConfig::default()),
            bytes: 0,
            started: Instant::now(),
        }
    };
    ws_player.next(5 * SECOND).await.expect("a tag");
    let (status, _, mut http_player) = get_head(addr, "/live/team/kick.flv", "").await;
    assert_eq!(status, 200);

    let (status, body) = request(addr, "GET", "/api/streams/team/kick", bearer, b"").await;
    assert_eq!(status, 200, "{body}");
    let detail: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(detail["name"], "team/kick");
    assert_eq!(detail["video"]["codec"], "h264");
    assert_eq!(detail["publisher_info"]["protocol"], "http");
    assert!(
        detail["publisher_info"]["address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    let players = detail["players_list"].as_array().unwrap();
    let protocols: Vec<&str> = players
        .iter()
        .map(|p| p["protocol"].as_str().unwrap())
        .collect();
    assert_eq!(protocols, ["ws", "http"], "{detail}");
    assert!(
        players[0]["address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );

    // Kick: players get the clean end at once, the publisher is cut off.
    let kicked_at = Instant::now();
    let (status, body) = request(addr, "DELETE", "/api/streams/team/kick", bearer, b"").await;
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["kicked"], true);
    assert_eq!(report["players"], 2);
    let end = loop {
        match ws_player.next(5 * SECOND).await {
            Ok(_) => continue,
            Err(end) => break end,
        }
    };
    assert_eq!(
        end,
        Ended::Close(1000, "stream ended: kicked by operator".into())
    );
    assert!(
        kicked_at.elapsed() < 3 * SECOND,
        "no grace period after a kick"
    );
    // HTTP-FLV: the chunked body ends with its terminator.
    let mut rest = Vec::new();
    tokio::time::timeout(5 * SECOND, async {
        let mut buf = vec![0u8; 64 << 10];
        while !rest.ends_with(b"\r\n0\r\n\r\n") {
            let n = http_player.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "connection closed before the end of the chunked body"
            );
            rest.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("HTTP-FLV body ends cleanly");
    let status = tokio::time::timeout(10 * SECOND, publisher.wait())
        .await
        .expect("the kicked ffmpeg exits")
        .unwrap();
    println!("kicked ffmpeg exited with {status}");

    let (status, body) = request(addr, "GET", "/api/streams/team/kick", bearer, b"").await;
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["code"],
        "not_found"
    );
    let (status, _) = request(addr, "DELETE", "/api/streams/team/kick", bearer, b"").await;
    assert_eq!(status, 404);
    // The name is free again right away.
    let _again = publish_http(addr, "team/kick", media());
    wait_live_with(addr, "team/kick", bearer).await;

    // Rooms.
    let _alice = signal_join(addr, "room-a", "alice").await;
    let (status, body) = request(addr, "GET", "/api/rooms/room-a", bearer, b"").await;
    assert_eq!(status, 200, "{body}");
    let room: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(room["peer_ids"], serde_json::json!(["alice"]));
    let (status, body) = request(addr, "GET", "/api/rooms/nope", bearer, b"").await;
    assert_eq!(status, 404);
    assert!(body.contains("\"code\": \"not_found\""), "{body}");
    let (status, body) = request(addr, "DELETE", "/api/rooms", bearer, b"").await;
    assert_eq!(status, 405);
    assert!(body.contains("method_not_allowed"), "{body}");
    let (status, body) = request(addr, "GET", "/api/streams/a%20b", bearer, b"").await;
    assert_eq!(status, 400);
    assert!(body.contains("bad_request"), "{body}");
    server.shutdown().await;
}

/// `wait_live` through an admin-protected API.
async fn wait_live_with(addr: SocketAddr, name: &str, headers: &str) {
    let deadline = Instant::now() + 15 * SECOND;
    loop {
        let (status, body) =
            request(addr, "GET", &format!("/api/streams/{name}"), headers, b"").await;
        if status == 200 && body.contains("\"video\": {") {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never went live");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let trusting = server(|c| c.trusted_proxies = vec!["127.0.0.1/32".into()]).await;
    let wary = server(|_| {}).await;
    for (srv, want) in [(&trusting, "203.0.113.7:0"), (&wary, "127.0.0.1:")] {
        let addr = srv.http_addr().unwrap();
        let _publisher = publish_http(addr, "xff", media());
        wait_live(addr, "xff").await;
        let (status, _, _player) = get_head(
            addr,
            "/live/xff.flv",
            "X-Forwarded-For: 198.51.100.1, 203.0.113.7\r\n",
        )
        .await;
        assert_eq!(status, 200);
        let body = http_get(addr, "/api/streams/xff").await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let address = v["players_list"][0]["address"].as_str().unwrap().to_owned();
        assert!(address.starts_with(want), "{address} vs {want}");
    }
    trusting.shutdown().await;
    wary.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_is_cut_off_while_players_continue() {
    let server = server(|c| {
        c.header_read_timeout_ms = 1_000;
        c.max_header_bytes = 8 << 10;
    })
    .await;
    let addr = server.http_addr().unwrap();
    let _publisher = publish_http(addr, "steady", media());
    wait_live(addr, "steady").await;
    let mut player = WsPlayer::connect(addr, "steady").await;

    // Ten clients trickle a request head one byte every 200 ms.
    let loris: Vec<_> = (0..10)
        .map(|_| {
            tokio::spawn(async move {
                let started = Instant::now();
                let mut s = TcpStream::connect(addr).await.unwrap();
                let head = format!("GET /live/steady.flv HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ");
                s.write_all(head.as_bytes()).await.unwrap();
                loop {
                    if s.write_all(b"a").await.is_err() {
                        break;
                    }
                    let mut buf = [0u8; 512];
                    let read = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf));
                    if let Ok(Ok(_) | Err(_)) = read.await {
                        break; // closed (or answered 408) by the server
                    }
                    assert!(started.elapsed() < 10 * SECOND, "slow-loris never cut off");
                }
                started.elapsed()
            })
        })
        .collect();

    // Meanwhile the player keeps receiving in real time.
    let mut check = StreamCheck::new();
    let mut worst_gap = Duration::ZERO;
    let mut last = Instant::now();
    let until = Instant::now() + 3 * SECOND;
    while Instant::now() < until {
        let tag = player.next(5 * SECOND).await.expect("player continues");
        check.tag(&tag, player.started.elapsed());
        worst_gap = worst_gap.max(last.elapsed());
        last = Instant::now();
    }
    for l in loris {
        let cut = l.await.unwrap();
        assert!(
            cut >= Duration::from_millis(900) && cut < 3 * SECOND,
            "slow-loris cut off after {cut:?}"
        );
    }
    println!("player's worst gap while under slow-loris: {worst_gap:?}");
    assert!(worst_gap < SECOND, "worst gap {worst_gap:?}");
    assert!(check.video > 50);
    assert!(
        metric(
            addr,
            "wsrelay_connections_refused_total{reason=\"header_timeout\"}"
        )
        .await
            >= 10.0
    );

    // An oversized request head gets 431.
    let big = format!("X-Big: {}\r\n", "b".repeat(10 << 10));
    let (status, _) = request(addr, "GET", "/healthz", &big, b"").await;
    assert_eq!(status, 431);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_connection_limit_answers_503() {
    let server = server(|c| c.max_connections_per_ip = 3).await;
    let addr = server.http_addr().unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        let (status, _, r) = get_head(addr, "/healthz", "").await;
        assert_eq!(status, 200);
        held.push(r); // keep-alive: still open
    }
    let (status, body) = request(addr, "GET", "/healthz", "", b"").await;
    assert_eq!(status, 503);
    assert!(
        body.contains("too many connections from your address"),
        "{body}"
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = request(addr, "GET", "/healthz", "", b"").await;
    assert_eq!(status, 200, "slots are freed when connections close");
    assert!(
        metric(
            addr,
            "wsrelay_connections_refused_total{reason=\"per_ip_limit\"}"
        )
        .await
            >= 1.0
    );
    server.shutdown().await;
}

/// The real binary: `wsrelay --config FILE --http 127.0.0.1:0 --rtmp off`.
async fn spawn_binary(config: &Path) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsrelay"))
        .arg("--config")
        .arg(config)
        .args(["--http", "127.0.0.1:0", "--rtmp", "off"])
        .env("RUST_LOG", "wsrelay=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("run wsrelay");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(15 * SECOND, lines.next_line())
        .await
        .expect("listening line")
        .unwrap()
        .unwrap();
    let addr = line
        .strip_prefix("listening http://")
        .expect("listening line")
        .parse()
        .unwrap();
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_auth_without_dropping_connections() {
    let dir = scratch().join(format!("reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("wsrelay.toml");
    std::fs::write(&file, "[live]\npublisher_grace_ms = 1000\n").unwrap();
    let (mut child, addr) = spawn_binary(&file).await;

    // Auth off: publish and play without tokens.
    let _publisher = publish_http(addr, "before", media());
    wait_live(addr, "before").await;
    let mut player = WsPlayer::connect(addr, "before").await;
    player.next(5 * SECOND).await.expect("a tag");

    // Turn auth on and reload.
    std::fs::write(
        &file,
        format!(
            "[live]\npublisher_grace_ms = 1000\n[auth]\nsecrets = [\"{SECRET}\"]\nplay_prefixes = [\"\"]\n"
        ),
    )
    .unwrap();
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + 10 * SECOND;
    loop {
        let (status, _) = ws_status(&format!("ws://{addr}/live/before.flv")).await;
        if status == 401 {
            break;
        }
        assert!(Instant::now() < deadline, "reload never applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = request(addr, "POST", "/live/after.flv", "", b"FLV").await;
    assert_eq!(status, 401, "new publishers need a token now");

    // The established player and publisher carried on through the reload.
    let mut check = StreamCheck::new();
    let until = Instant::now() + 2 * SECOND;
    while Instant::now() < until {
        let tag = player
            .next(5 * SECOND)
            .await
            .expect("player survives the reload");
        if check.frames > 0 || tag.is_keyframe() {
            check.frames += 1;
        }
    }
    assert!(check.frames > 20);

    // A token minted by the CLI subcommand works against the reloaded server.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsrelay"))
        .args([
            "token", "--stream", "before", "--action", "play", "--ttl", "10m",
        ])
        .env("WSRELAY_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let minted = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(ws_plays(addr, "before", &format!("token={minted}")).await >= 25);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsrelay"))
        .args(["token", "--stream", "x", "--action", "play"])
        .env_remove("WSRELAY_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success(), "no secret, no token");

    // A broken config is refused and the running one stays.
    std::fs::write(&file, "[auth]\nsecrets = 7\n").unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, _) = ws_status(&format!("ws://{addr}/live/before.flv")).await;
    assert_eq!(status, 401, "still the last good config");

    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(10 * SECOND, child.wait())
        .await
        .expect("exits on SIGTERM")
        .unwrap();
    assert!(status.success());
}
