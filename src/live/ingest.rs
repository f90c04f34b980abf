//! Publishers over HTTP (POST/PUT body) and WebSocket (binary messages): an FLV byte
//! stream, demuxed as it arrives and pushed to the hub tag by tag.

use std::time::Duration;

use flv::{Demuxer, DemuxerConfig};
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use hyper::StatusCode;
use hyper::body::Incoming;
use hyper_tungstenite::tungstenite::Message;
use hyper_tungstenite::tungstenite::protocol::CloseFrame;
use hyper_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use crate::config::LiveConfig;
use crate::live::egress::Ws;
use crate::live::{Publisher, PushError};

/// Why a publisher was cut off.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The bytes are not a valid FLV stream (HTTP 400, WebSocket close 1007).
    #[error("invalid FLV: {0}")]
    Flv(#[from] flv::Error),
    /// The stream was taken over or ended (HTTP 409, WebSocket close 1008).
    #[error("{0}")]
    Push(#[from] PushError),
    /// No bytes for `live.publisher_idle_timeout_ms` (HTTP 408, close 1008).
    #[error("no data for {0} ms")]
    Idle(u64),
    /// The connection failed mid-stream (nothing can be sent back).
    #[error("connection lost: {0}")]
    Transport(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A WebSocket publisher sent a text message (close 1003).
    #[error("text message: a publisher sends the FLV stream as binary messages")]
    TextMessage,
    /// A WebSocket message larger than `live.max_publish_message_bytes` (close 1009).
    #[error("message too large (limit {0} bytes)")]
    MessageTooLarge(usize),
    /// The server is shutting down (HTTP 503, close 1001).
    #[error("server shutting down")]
    Shutdown,
}

impl IngestError {
    /// The HTTP status an HTTP publisher gets, when the response can still be sent.
    pub fn status(&self) -> StatusCode {
        match self {
            IngestError::Flv(_) | IngestError::TextMessage | IngestError::MessageTooLarge(_) => {
                StatusCode::BAD_REQUEST
            }
            IngestError::Push(_) => StatusCode::CONFLICT,
            IngestError::Idle(_) => StatusCode::REQUEST_TIMEOUT,
            IngestError::Transport(_) => StatusCode::BAD_REQUEST,
            IngestError::Shutdown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn close_code(&self) -> CloseCode {
        match self {
            IngestError::Flv(_) => CloseCode::Invalid,
            IngestError::TextMessage => CloseCode::Unsupported,
            IngestError::MessageTooLarge(_) => CloseCode::Size,
            IngestError::Shutdown => CloseCode::Away,
            IngestError::Push(_) | IngestError::Idle(_) | IngestError::Transport(_) => {
                CloseCode::Policy
            }
        }
    }
}

/// What a publisher sent.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Bytes received.
    pub bytes: u64,
    /// Tags pushed to the hub.
    pub tags: u64,
}

/// Demuxes an FLV byte stream into a publisher: the one ingest path of HTTP
/// bodies, WebSocket messages and a cluster edge's pull from its origin.
#[derive(Debug)]
pub(crate) struct FlvIngest {
    demux: Demuxer,
    publisher: Publisher,
    stats: IngestStats,
}

impl FlvIngest {
    pub(crate) fn new(publisher: Publisher, config: &LiveConfig) -> FlvIngest {
        FlvIngest {
            demux: Demuxer::new(DemuxerConfig {
                max_tag_size: config.max_tag_bytes,
                ..DemuxerConfig::default()
            }),
            publisher,
            stats: IngestStats::default(),
        }
    }

    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<(), IngestError> {
        self.stats.bytes += data.len() as u64;
        self.demux.push(data);
        while let Some(tag) = self.demux.next_tag()? {
            self.publisher.push(tag)?;
            self.stats.tags += 1;
        }
        Ok(())
    }

    fn finish(self) -> Result<IngestStats, IngestError> {
        self.demux.finish()?;
        Ok(self.stats)
    }

    /// The publisher (to end the stream explicitly, [`Publisher::finish`]).
    pub(crate) fn into_publisher(self) -> Publisher {
        self.publisher
    }
}

/// Reads an HTTP request body as an FLV stream until it ends.
pub async fn http_publish(
    mut body: Incoming,
    publisher: Publisher,
    config: &LiveConfig,
    shutdown: CancellationToken,
) -> Result<IngestStats, IngestError> {
    let idle = Duration::from_millis(config.publisher_idle_timeout_ms);
    let mut ingest = FlvIngest::new(publisher, config);
    loop {
        let frame = tokio::select! {
            _ = shutdown.cancelled() => return Err(IngestError::Shutdown),
            _ = ingest.publisher.stopped() => return Err(PushError::Replaced.into()),
            frame = tokio::time::timeout(idle, body.frame()) => frame,
        };
        let frame = frame.map_err(|_| IngestError::Idle(config.publisher_idle_timeout_ms))?;
        match frame {
            None => return ingest.finish(),
            Some(Err(e)) => return Err(IngestError::Transport(Box::new(e))),
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    ingest.feed(data)?;
                }
            }
        }
    }
}

/// Reads binary WebSocket messages as an FLV stream until the client closes.
pub async fn ws_publish(
    mut ws: Ws,
    publisher: Publisher,
    config: &LiveConfig,
    shutdown: CancellationToken,
) -> Result<IngestStats, IngestError> {
    let idle = Duration::from_millis(config.publisher_idle_timeout_ms);
    let mut ingest = FlvIngest::new(publisher, config);
    let result = loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => break Err(IngestError::Shutdown),
            _ = ingest.publisher.stopped() => break Err(PushError::Replaced.into()),
            msg = tokio::time::timeout(idle, ws.next()) => msg,
        };
        let Ok(msg) = msg else {
            break Err(IngestError::Idle(config.publisher_idle_timeout_ms));
        };
        match msg {
            None | Some(Ok(Message::Close(_))) => break Ok(()),
            Some(Ok(Message::Binary(data))) => {
                if let Err(e) = ingest.feed(&data) {
                    break Err(e);
                }
            }
            Some(Ok(Message::Text(_))) => break Err(IngestError::TextMessage),
            Some(Ok(_)) => {} // ping/pong: tungstenite answers pings itself
            Some(Err(hyper_tungstenite::tungstenite::Error::Capacity(_))) => {
                break Err(IngestError::MessageTooLarge(
                    config.max_publish_message_bytes,
                ));
            }
            Some(Err(e)) => break Err(IngestError::Transport(Box::new(e))),
        }
    };
    match result {
        Ok(()) => {
            // The client closed (its close reply is queued) or the stream ended:
            // send what tungstenite queued, then our close if it is still needed.
            let _ = tokio::time::timeout(crate::vocab::CLOSE_TIMEOUT, async {
                let _ = ws.flush().await;
                let _ = ws.close(None).await;
            })
            .await;
            ingest.finish()
        }
        Err(e) => {
            let frame = CloseFrame {
                code: e.close_code(),
                reason: truncate_reason(&e.to_string()).into(),
            };
            let _ = tokio::time::timeout(crate::vocab::CLOSE_TIMEOUT, ws.close(Some(frame))).await;
            Err(e)
        }
    }
}

/// A WebSocket close reason must fit in a control frame (123 bytes).
pub fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(120);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}
