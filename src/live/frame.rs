//! What travels from a publisher to players: a [`Frame`] (a tag as players receive
//! it) on a stream's ring, or the stream's [`EndReason`].

use bytes::{Bytes, BytesMut};
use flv::Tag;

/// One tag as players receive it: the parsed [`Tag`] and its FLV encoding (11-byte
/// header, body, PreviousTagSize). `tag.body` is a slice of `wire`: one allocation.
#[derive(Clone, Debug)]
pub struct Frame {
    /// The tag; its body shares `wire`'s allocation.
    pub tag: Tag,
    /// The encoded tag, written to players as is.
    pub wire: Bytes,
}

impl Frame {
    /// Encodes `tag` with `timestamp` (the body is copied once, here, for all players).
    pub fn encode(tag: &Tag, timestamp: u32) -> Frame {
        let mut buf = BytesMut::with_capacity(tag.encoded_len());
        tag.write_with_timestamp(timestamp, &mut buf);
        let wire = buf.freeze();
        let body = wire.slice(Tag::HEADER_LEN..Tag::HEADER_LEN + tag.body.len());
        let tag = Tag {
            tag_type: tag.tag_type,
            timestamp,
            stream_id: 0,
            body,
        };
        Frame { tag, wire }
    }

    /// The same frame with another timestamp (re-encoded; used for the few
    /// preamble tags a joining player may need moved).
    pub fn with_timestamp(&self, timestamp: u32) -> Frame {
        Frame::encode(&self.tag, timestamp)
    }
}

impl AsRef<Tag> for Frame {
    fn as_ref(&self) -> &Tag {
        &self.tag
    }
}

/// What travels on a stream's broadcast ring.
#[derive(Clone, Debug)]
pub enum Event {
    /// A tag for every player.
    Frame(Frame),
    /// The stream is over; players close with this reason.
    End(EndReason),
}

/// Why a stream ended for its players.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The publisher left and did not come back within the grace period.
    PublisherGone,
    /// The server is shutting down.
    Shutdown,
    /// An operator ended the stream (`DELETE /api/streams/NAME`).
    Kicked,
    /// A bug (a panic inside the stream's state update) ended the stream.
    Failed,
}

impl EndReason {
    /// A short human reason, used in WebSocket close frames and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::PublisherGone => "stream ended: publisher gone",
            EndReason::Shutdown => "server shutting down",
            EndReason::Kicked => "stream ended: kicked by operator",
            EndReason::Failed => "stream ended: internal error",
        }
    }
}
