//! FLV tags: type, timestamp, stream id and a shared body.

use bytes::{BufMut, Bytes};

use crate::codec::{AudioConfig, AudioInfo, VideoInfo};

/// The type of an FLV tag (the TagType byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TagType {
    /// 8: audio.
    Audio,
    /// 9: video.
    Video,
    /// 18: script data (AMF0), e.g. `onMetaData`.
    Script,
    /// Any other byte, kept verbatim (including the Filter bit 0x20 of encrypted
    /// tags and the reserved bits), so such a tag is relayed unchanged.
    Unknown(u8),
}

impl From<u8> for TagType {
    fn from(b: u8) -> TagType {
        match b {
            8 => TagType::Audio,
            9 => TagType::Video,
            18 => TagType::Script,
            other => TagType::Unknown(other),
        }
    }
}

impl From<TagType> for u8 {
    fn from(t: TagType) -> u8 {
        match t {
            TagType::Audio => 8,
            TagType::Video => 9,
            TagType::Script => 18,
            TagType::Unknown(b) => b,
        }
    }
}

/// One FLV tag. The body is a reference-counted [`Bytes`]: cloning a `Tag` never copies
/// the payload, so one tag can be shared by every player.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    /// What the body holds.
    pub tag_type: TagType,
    /// Decoding timestamp in milliseconds (24 bits + the extended byte = 32 bits).
    pub timestamp: u32,
    /// StreamID field; always 0 in valid FLV, 24 bits on the wire.
    pub stream_id: u32,
    /// The tag body (what follows the 11-byte tag header). At most
    /// [`Tag::MAX_BODY_LEN`] bytes can be written.
    pub body: Bytes,
}

impl AsRef<Tag> for Tag {
    fn as_ref(&self) -> &Tag {
        self
    }
}

impl Tag {
    /// Length of the tag header.
    pub const HEADER_LEN: usize = 11;
    /// Length of the PreviousTagSize field that follows every tag.
    pub const TRAILER_LEN: usize = 4;
    /// The largest body the 24-bit DataSize field can describe (16 MiB - 1).
    pub const MAX_BODY_LEN: usize = 0xFF_FFFF;

    /// A tag with stream id 0.
    pub fn new(tag_type: TagType, timestamp: u32, body: Bytes) -> Tag {
        Tag {
            tag_type,
            timestamp,
            stream_id: 0,
            body,
        }
    }

    /// Bytes [`Tag::write_to`] produces: header + body + PreviousTagSize.
    pub fn encoded_len(&self) -> usize {
        Self::HEADER_LEN + self.body.len() + Self::TRAILER_LEN
    }

    /// The 11-byte tag header with `timestamp` instead of the tag's own (players may
    /// need rebased timestamps while the body stays shared).
    ///
    /// DataSize is the body length; a body longer than [`Tag::MAX_BODY_LEN`] cannot be
    /// represented in FLV and its size is written modulo 2^24 (the
    /// [`Demuxer`](crate::Demuxer) never produces such a tag).
    pub fn encode_header(&self, timestamp: u32) -> [u8; 11] {
        let size = self.body.len() as u32;
        let ts = timestamp.to_be_bytes();
        let sid = self.stream_id.to_be_bytes();
        let sz = size.to_be_bytes();
        [
            u8::from(self.tag_type),
            sz[1],
            sz[2],
            sz[3],
            ts[1],
            ts[2],
            ts[3],
            ts[0],
            sid[1],
            sid[2],
            sid[3],
        ]
    }

    /// The PreviousTagSize written after this tag: 11 + body length.
    pub fn trailer(&self) -> [u8; 4] {
        ((Self::HEADER_LEN + self.body.len()) as u32).to_be_bytes()
    }

    /// Writes header (own timestamp), body and PreviousTagSize.
    pub fn write_to(&self, out: &mut impl BufMut) {
        self.write_with_timestamp(self.timestamp, out);
    }

    /// Writes header (with `timestamp`), body and PreviousTagSize.
    pub fn write_with_timestamp(&self, timestamp: u32, out: &mut impl BufMut) {
        out.put_slice(&self.encode_header(timestamp));
        out.put_slice(&self.body);
        out.put_slice(&self.trailer());
    }

    /// Codec information, if this is a video tag whose body parses.
    pub fn video(&self) -> Option<VideoInfo> {
        match self.tag_type {
            TagType::Video => VideoInfo::parse(&self.body),
            _ => None,
        }
    }

    /// Codec information, if this is an audio tag whose body parses.
    pub fn audio(&self) -> Option<AudioInfo> {
        match self.tag_type {
            TagType::Audio => AudioInfo::parse(&self.body),
            _ => None,
        }
    }

    /// Sample rate and channel count, if this is an audio sequence header that states
    /// them (see [`AudioConfig::parse`]).
    pub fn audio_config(&self) -> Option<AudioConfig> {
        match self.tag_type {
            TagType::Audio => AudioConfig::parse(&self.body),
            _ => None,
        }
    }

    /// A video keyframe carrying coded data (see [`VideoInfo::is_keyframe`]).
    pub fn is_keyframe(&self) -> bool {
        self.video().is_some_and(|v| v.is_keyframe())
    }

    /// A video or audio sequence header (decoder configuration; see
    /// [`VideoInfo::is_sequence_header`] and [`AudioInfo::is_sequence_header`]).
    pub fn is_sequence_header(&self) -> bool {
        match self.tag_type {
            TagType::Video => self.video().is_some_and(|v| v.is_sequence_header()),
            TagType::Audio => self.audio().is_some_and(|a| a.is_sequence_header()),
            _ => false,
        }
    }

    /// A script tag named `onMetaData` (possibly wrapped in `@setDataFrame`).
    pub fn is_metadata(&self) -> bool {
        self.tag_type == TagType::Script && crate::script::is_metadata(&self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_type_round_trip() {
        for b in 0..=255u8 {
            assert_eq!(u8::from(TagType::from(b)), b);
        }
        assert_eq!(TagType::from(8), TagType::Audio);
        assert_eq!(TagType::from(9), TagType::Video);
        assert_eq!(TagType::from(18), TagType::Script);
        assert_eq!(TagType::from(0x28), TagType::Unknown(0x28));
    }

    #[test]
    fn header_layout() {
        let tag = Tag {
            tag_type: TagType::Video,
            timestamp: 0x1234_5678,
            stream_id: 0x00AB_CDEF,
            body: Bytes::from_static(&[1, 2, 3]),
        };
        assert_eq!(
            tag.encode_header(tag.timestamp),
            [9, 0, 0, 3, 0x34, 0x56, 0x78, 0x12, 0xAB, 0xCD, 0xEF]
        );
        // Another timestamp, same body.
        assert_eq!(
            tag.encode_header(0x0000_0102),
            [9, 0, 0, 3, 0, 1, 2, 0, 0xAB, 0xCD, 0xEF]
        );
        assert_eq!(tag.trailer(), [0, 0, 0, 14]);
        assert_eq!(tag.encoded_len(), 18);
        let mut out = Vec::new();
        tag.write_with_timestamp(7, &mut out);
        assert_eq!(
            out,
            [
                9, 0, 0, 3, 0, 0, 7, 0, 0xAB, 0xCD, 0xEF, 1, 2, 3, 0, 0, 0, 14
            ]
        );
        let mut own = Vec::new();
        tag.write_to(&mut own);
        assert_eq!(own.len(), tag.encoded_len());
        assert_eq!(&own[4..8], &[0x34, 0x56, 0x78, 0x12]);
    }

    #[test]
    fn empty_body() {
        let tag = Tag::new(TagType::Script, 0, Bytes::new());
        let mut out = Vec::new();
        tag.write_to(&mut out);
        assert_eq!(out, [18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 11]);
        assert!(!tag.is_metadata());
        assert!(!tag.is_keyframe());
        assert!(!tag.is_sequence_header());
        assert_eq!(tag.video(), None);
        assert_eq!(tag.audio(), None);
    }

    #[test]
    fn predicates_check_the_tag_type() {
        // An AVC keyframe body in an audio tag is not a keyframe.
        let body = Bytes::from_static(&[0x17, 1, 0, 0, 0, 0xAA]);
        assert!(Tag::new(TagType::Video, 0, body.clone()).is_keyframe());
        assert!(!Tag::new(TagType::Audio, 0, body.clone()).is_keyframe());
        assert!(!Tag::new(TagType::Script, 0, body).is_keyframe());
        let seq = Bytes::from_static(&[0x17, 0, 0, 0, 0, 1]);
        assert!(Tag::new(TagType::Video, 0, seq).is_sequence_header());
        let aac_seq = Bytes::from_static(&[0xAF, 0, 0x12, 0x10]);
        assert!(Tag::new(TagType::Audio, 0, aac_seq.clone()).is_sequence_header());
        assert!(!Tag::new(TagType::Video, 0, aac_seq).is_sequence_header());
    }
}
