//! What travels from a publisher to players: a [`WireTag`] (a tag as players receive
//! it) on a stream's ring, or the stream's [`EndReason`].

use bytes::Bytes;
use flv::Tag;

/// One tag as players receive it, without copying its body: the 11-byte FLV tag
/// header and the 4-byte PreviousTagSize (one 15-byte allocation per tag, shared by
/// every player) around the publisher's body (a slice of what the publisher sent).
/// Players write the three parts with vectored writes ([`WireTag::parts`]).
#[derive(Clone, Debug)]
pub struct WireTag {
    /// The tag as the stream has it (its timestamp is the stream's).
    pub tag: Tag,
    /// The tag header (bytes 0..11) and PreviousTagSize (bytes 11..15).
    frame: Bytes,
}

impl WireTag {
    /// Encodes `tag` at `timestamp`: writes 15 bytes, shares the body.
    pub fn encode(tag: &Tag, timestamp: u32) -> WireTag {
        let tag = Tag {
            tag_type: tag.tag_type,
            timestamp,
            stream_id: 0,
            body: tag.body.clone(),
        };
        let mut frame = [0u8; Tag::HEADER_LEN + Tag::TRAILER_LEN];
        frame[..Tag::HEADER_LEN].copy_from_slice(&tag.encode_header(timestamp));
        frame[Tag::HEADER_LEN..].copy_from_slice(&tag.trailer());
        WireTag {
            tag,
            frame: Bytes::copy_from_slice(&frame),
        }
    }

    /// The same tag at another timestamp (a new header; the body is shared).
    pub fn with_timestamp(&self, timestamp: u32) -> WireTag {
        WireTag::encode(&self.tag, timestamp)
    }

    /// Header, body and PreviousTagSize: what a player writes, in order. Each is
    /// a cheap clone of shared bytes.
    pub fn parts(&self) -> [Bytes; 3] {
        [
            self.frame.slice(..Tag::HEADER_LEN),
            self.tag.body.clone(),
            self.frame.slice(Tag::HEADER_LEN..),
        ]
    }

    /// The encoded length (header + body + PreviousTagSize).
    pub fn len(&self) -> usize {
        self.frame.len() + self.tag.body.len()
    }

    /// Never: a tag has at least its header (for clippy's `len` without `is_empty`).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The encoded tag as one buffer (a copy: for tests and benches, not players).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.len());
        for part in self.parts() {
            out.extend_from_slice(&part);
        }
        out.into()
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
