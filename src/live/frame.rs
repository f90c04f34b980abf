//! What travels from a publisher to players: a [`WireTag`] (a tag as players receive
//! it) on a stream's ring, or the stream's [`EndReason`].

use bytes::Bytes;
use flv::Tag;

/// One tag as players receive it: the 11-byte FLV tag header, the body and the
/// 4-byte PreviousTagSize in one buffer, encoded once per tag and shared by every
/// player. The tag's body is a slice of that buffer, so the body is held once.
///
/// One buffer rather than three parts around the publisher's own body: the copy is
/// made once per tag, while every player writes the tag as one iovec and takes one
/// reference to it instead of three (at 1,000 players that is 1,000 writes and
/// reference-count updates per tag against one copy).
#[derive(Clone, Debug)]
pub struct WireTag {
    /// The tag as the stream has it (its timestamp is the stream's; its body a
    /// slice of `wire`).
    pub tag: Tag,
    /// Header, body and PreviousTagSize.
    wire: Bytes,
}

impl WireTag {
    /// Encodes `tag` at `timestamp` (one copy of the body).
    pub fn encode(tag: &Tag, timestamp: u32) -> WireTag {
        let len = tag.body.len();
        let mut wire = Vec::with_capacity(Tag::HEADER_LEN + len + Tag::TRAILER_LEN);
        wire.extend_from_slice(&tag.encode_header(timestamp));
        wire.extend_from_slice(&tag.body);
        wire.extend_from_slice(&tag.trailer());
        let wire = Bytes::from(wire);
        WireTag {
            tag: Tag {
                tag_type: tag.tag_type,
                timestamp,
                stream_id: 0,
                body: wire.slice(Tag::HEADER_LEN..Tag::HEADER_LEN + len),
            },
            wire,
        }
    }

    /// The same tag at another timestamp (a new buffer).
    pub fn with_timestamp(&self, timestamp: u32) -> WireTag {
        WireTag::encode(&self.tag, timestamp)
    }

    /// The encoded tag, as a player writes it (a cheap clone).
    pub fn wire(&self) -> &Bytes {
        &self.wire
    }

    /// The encoded length (header + body + PreviousTagSize).
    pub fn len(&self) -> usize {
        self.wire.len()
    }

    /// Never: a tag has at least its header (for clippy's `len` without `is_empty`).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The encoded tag (a cheap clone of [`WireTag::wire`]).
    pub fn to_bytes(&self) -> Bytes {
        self.wire.clone()
    }
}

impl AsRef<Tag> for WireTag {
    fn as_ref(&self) -> &Tag {
        &self.tag
    }
}

/// What travels on a stream's ring.
#[derive(Clone, Debug)]
pub enum Entry {
    /// A tag for every player.
    Tag(WireTag),
    /// The stream is over; players close with this reason.
    End(EndReason),
}

impl Entry {
    /// The tag's bytes as players receive them; `None` for the end.
    pub fn wire(&self) -> Option<&Bytes> {
        match self {
            Entry::Tag(t) => Some(t.wire()),
            Entry::End(_) => None,
        }
    }
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
    /// The publisher stopped on purpose (RTMP `FCUnpublish`/`deleteStream`).
    Unpublished,
}

impl EndReason {
    /// A short human reason, used in WebSocket close frames and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::PublisherGone => "stream ended: publisher gone",
            EndReason::Shutdown => "server shutting down",
            EndReason::Kicked => "stream ended: kicked by operator",
            EndReason::Failed => "stream ended: internal error",
            EndReason::Unpublished => "stream ended: publisher stopped",
        }
    }
}
