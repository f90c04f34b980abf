//! A signaling test client (tokio-tungstenite) and an in-process server on 127.0.0.1:0,
//! shared by tests/signal.rs and tests/signal_webrtc.rs.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wsrelay::app::Server;
use wsrelay::config::{Config, Listen};

/// How long a test waits for any one expected message.
pub const WAIT: Duration = Duration::from_secs(10);

/// A server on a free loopback port, HTTP only.
pub async fn server(tweak: impl FnOnce(&mut Config)) -> Server {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "wsrelay=info".into()),
        )
        .with_test_writer()
        .with_ansi(false)
        .try_init();
    let mut config = Config {
        http: Listen::On("127.0.0.1:0".parse().unwrap()),
        rtmp: Listen::Off,
        ..Config::default()
    };
    tweak(&mut config);
    wsrelay::app::spawn(config).await.expect("server starts")
}

/// One signaling WebSocket.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Peer id once joined.
    pub peer: String,
    /// Session token once joined.
    pub session: String,
}

/// Why `recv` got no message.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// A close frame with this code and reason.
    Frame(u16, String),
    /// The stream ended or failed without a close frame.
    Eof(String),
}

impl Client {
    /// Opens `ws://addr/signal/room`.
    pub async fn connect(addr: SocketAddr, room: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/signal/{room}"))
            .await
            .expect("WebSocket connects");
        Client {
            ws,
            peer: String::new(),
            session: String::new(),
        }
    }

    /// Connects and joins with the given `join` fields; returns the client and the welcome.
    pub async fn join_with(addr: SocketAddr, room: &str, join: Value) -> (Client, Value) {
        let mut c = Client::connect(addr, room).await;
        let mut msg = json!({"type": "join"});
        if let (Some(m), Some(extra)) = (msg.as_object_mut(), join.as_object()) {
            m.extend(extra.clone());
        }
        c.send(msg).await;
        let w = c.recv().await;
        assert_eq!(w["type"], "welcome", "{w}");
        c.peer = w["peer"].as_str().unwrap().to_owned();
        c.session = w["session"].as_str().unwrap().to_owned();
        (c, w)
    }

    /// Connects and joins as `peer`.
    pub async fn join(addr: SocketAddr, room: &str, peer: &str) -> Client {
        Client::join_with(addr, room, json!({"peer": peer})).await.0
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.expect("send");
    }

    /// The next JSON message, or why there is none.
    pub async fn try_recv(&mut self, wait: Duration) -> Result<Value, Closed> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| Closed::Eof("timeout".into()))?;
            match next {
                Some(Ok(Message::Text(t))) => {
                    return Ok(serde_json::from_str(t.as_str()).expect("server sends JSON"));
                }
                Some(Ok(Message::Close(Some(f)))) => {
                    return Err(Closed::Frame(f.code.into(), f.reason.as_str().to_owned()));
                }
                Some(Ok(Message::Close(None))) => return Err(Closed::Frame(1005, String::new())),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(Closed::Eof(e.to_string())),
                None => return Err(Closed::Eof("end of stream".into())),
            }
        }
    }

    /// The next JSON message; panics on close or timeout.
    pub async fn recv(&mut self) -> Value {
        match self.try_recv(WAIT).await {
            Ok(v) => v,
            Err(e) => panic!("{} expected a message, got {e:?}", self.peer),
        }
    }

    /// The next message, which must be of `ty`.
    pub async fn expect(&mut self, ty: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["type"], ty, "{} got {v}", self.peer);
        v
    }

    /// The next message, which must be an error with `code`.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let v = self.expect("error").await;
        assert_eq!(v["code"], code, "{v}");
        v
    }

    /// Reads until the close frame; returns its code. Panics if a text message
    /// of another type than `error` comes first.
    pub async fn expect_close(&mut self) -> Closed {
        loop {
            match self.try_recv(WAIT).await {
                Ok(v) if v["type"] == "error" => continue,
                Ok(v) => panic!("{} expected a close, got {v}", self.peer),
                Err(e) => return e,
            }
        }
    }

    /// True when nothing arrives within `wait`.
    pub async fn silent(&mut self, wait: Duration) -> bool {
        matches!(self.try_recv(wait).await, Err(Closed::Eof(e)) if e == "timeout")
    }
}

/// A raw HTTP/1.1 request with `Connection: close`; returns status and body.
pub async fn http(addr: SocketAddr, method: &str, path: &str, headers: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The HTTP status of a WebSocket upgrade to `path` (101 when it succeeds).
pub async fn upgrade_status(addr: SocketAddr, path: &str) -> u16 {
    match tokio_tungstenite::connect_async(format!("ws://{addr}{path}")).await {
        Ok((_, res)) => res.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => res.status().as_u16(),
        Err(e) => panic!("upgrade to {path} failed without a status: {e}"),
    }
}
