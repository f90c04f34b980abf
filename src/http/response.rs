//! HTTP plumbing shared by the routes: the response body type and small builders.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::live::socket::Handoff;

/// Every response body the server sends.
pub(crate) type Body = BoxBody<Chunk, Infallible>;

/// A piece of a response body: one buffer, or several shared buffers that go out
/// together as one HTTP chunk (an HTTP-FLV player's batch of tags) with one vectored
/// write, never copied into one.
#[derive(Debug, Default)]
pub(crate) struct Chunk {
    parts: VecDeque<Bytes>,
    remaining: usize,
}

impl Chunk {
    /// An empty chunk with room for `parts` buffers.
    pub(crate) fn with_capacity(parts: usize) -> Chunk {
        Chunk {
            parts: VecDeque::with_capacity(parts),
            remaining: 0,
        }
    }

    /// Appends a buffer (an empty one is skipped).
    pub(crate) fn push(&mut self, part: Bytes) {
        if !part.is_empty() {
            self.remaining += part.len();
            self.parts.push_back(part);
        }
    }
}

impl From<Vec<Bytes>> for Chunk {
    fn from(parts: Vec<Bytes>) -> Chunk {
        let mut parts = VecDeque::from(parts);
        parts.retain(|p| !p.is_empty());
        let remaining = parts.iter().map(Bytes::len).sum();
        Chunk { parts, remaining }
    }
}

impl From<Bytes> for Chunk {
    fn from(part: Bytes) -> Chunk {
        let mut chunk = Chunk::with_capacity(1);
        chunk.push(part);
        chunk
    }
}

impl Buf for Chunk {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.parts.front().map_or(&[], |p| p)
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.remaining, "advance past the end of a chunk");
        self.remaining -= cnt;
        while cnt > 0 {
            let Some(front) = self.parts.front_mut() else {
                return;
            };
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.parts.pop_front();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, part) in dst.iter_mut().zip(&self.parts) {
            *slot = IoSlice::new(part);
            n += 1;
        }
        n
    }
}

/// A complete body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(Chunk::from(bytes.into())).boxed()
}

/// A plain-text response carrying a one-line reason.
pub(crate) fn text(status: StatusCode, reason: impl std::fmt::Display) -> Response<Body> {
    let mut res = Response::new(full(format!("{reason}\n")));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => {
            let mut res = Response::new(full(body));
            *res.status_mut() = status;
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            res
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("serialization failed: {e}"),
        ),
    }
}

/// Turns hyper-tungstenite's upgrade response into ours.
pub(crate) fn boxed(res: Response<Full<Bytes>>) -> Response<Body> {
    res.map(|body| body.map_frame(|f| f.map_data(Chunk::from)).boxed())
}

/// A streaming body fed by a bounded channel: the HTTP-FLV player body, one HTTP
/// chunk per message. Dropping the sender ends the body (the chunked terminator is
/// written); when hyper stops polling it (the client is slow), the channel fills
/// and the writer waits.
#[derive(Debug)]
pub(crate) struct ChannelBody {
    rx: mpsc::Receiver<Vec<Bytes>>,
    /// Asks hyper for the socket: the sender's side writes the chunks itself.
    handoff: Option<Arc<Handoff>>,
}

impl ChannelBody {
    /// A body and the sender that feeds it, holding at most `capacity` chunks (each
    /// message's buffers become one chunk).
    pub(crate) fn channel(capacity: usize) -> (mpsc::Sender<Vec<Bytes>>, ChannelBody) {
        let (tx, rx) = mpsc::channel(capacity);
        (tx, ChannelBody { rx, handoff: None })
    }

    /// The same body, asking hyper for the connection's socket through `handoff`
    /// ([`crate::live::socket`]): whenever the body has nothing for hyper, it says
    /// so, and once hyper has flushed, the sender's side writes to the socket.
    pub(crate) fn handing_off(mut self, handoff: Arc<Handoff>) -> ChannelBody {
        handoff.want();
        self.handoff = Some(handoff);
        self
    }
}

impl http_body::Body for ChannelBody {
    type Data = Chunk;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Chunk>, Infallible>>> {
        let polled = self.rx.poll_recv(cx);
        if polled.is_pending()
            && let Some(handoff) = &self.handoff
        {
            handoff.body_idle();
        }
        polled.map(|parts| parts.map(|p| Ok(http_body::Frame::data(Chunk::from(p)))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_reads_its_parts_in_order_across_advances() {
        let mut chunk = Chunk::from(vec![
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"cde"),
            Bytes::from_static(b"f"),
        ]);
        assert_eq!(chunk.remaining(), 6);
        let mut slices = [IoSlice::new(&[]); 8];
        assert_eq!(
            chunk.chunks_vectored(&mut slices),
            3,
            "the empty part is dropped"
        );
        chunk.advance(3);
        assert_eq!(chunk.chunk(), b"de");
        assert_eq!(chunk.remaining(), 3);
        let mut out = Vec::new();
        while chunk.has_remaining() {
            out.extend_from_slice(chunk.chunk());
            let n = chunk.chunk().len();
            chunk.advance(n);
        }
        assert_eq!(out, b"def");
        assert_eq!(chunk.chunk(), b"");
    }
}
