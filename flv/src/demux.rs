//! The incremental (sans-IO) demuxer.

use bytes::{Buf, BytesMut};

use crate::header::check_signature;
use crate::{Error, Header, Tag, TagType};

/// What to do with the PreviousTagSize field that follows every tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PrevTagSizePolicy {
    /// The default. A PreviousTagSize must equal 11 + the previous tag's body size
    /// (0 before the first tag), otherwise [`Error::PrevTagSizeMismatch`]: a wrong
    /// value means bytes were lost or inserted and tag boundaries can no longer be
    /// trusted. A value of 0 is tolerated everywhere, because some live muxers do
    /// not track sizes and write 0; ffmpeg, OBS and librtmp write correct sizes.
    #[default]
    Check,
    /// Skip the field without looking at it (what flv.js does).
    Ignore,
}

/// Limits and policies of a [`Demuxer`].
#[derive(Clone, Debug)]
pub struct DemuxerConfig {
    /// Largest tag body accepted, in bytes; a larger DataSize is
    /// [`Error::TagTooLarge`]. Default 16 MiB: the 24-bit DataSize field cannot
    /// describe more (16 MiB - 1), so the default accepts every valid FLV while
    /// bounding the buffer to one tag. Lower it to bound the memory a publisher can make
    /// the server hold (the buffer never exceeds this + 15 bytes + one `push`).
    pub max_tag_size: usize,
    /// What to do with PreviousTagSize fields. Default [`PrevTagSizePolicy::Check`].
    pub prev_tag_size: PrevTagSizePolicy,
}

impl Default for DemuxerConfig {
    fn default() -> Self {
        DemuxerConfig {
            max_tag_size: 16 * 1024 * 1024,
            prev_tag_size: PrevTagSizePolicy::Check,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for the 9-byte header.
    Header,
    /// Skipping bytes between the header and DataOffset.
    Padding { remaining: u64 },
    /// Waiting for a PreviousTagSize.
    PrevTagSize,
    /// Waiting for a complete tag (header + body).
    Tag,
    /// A previous call failed; the error is returned again.
    Failed(Error),
}

/// Incremental FLV demuxer: feed bytes in any chunking with [`Demuxer::push`], pull
/// tags with [`Demuxer::next_tag`] until it returns `Ok(None)`.
///
/// - Tag bodies are split off the internal buffer (`BytesMut::split_to().freeze()`),
///   never copied.
/// - Zero-length tags and tags of unknown type are returned like any other (unknown
///   types as [`TagType::Unknown`] with the raw type byte), so a relay passes them on.
/// - A tag is returned as soon as its body is complete; its PreviousTagSize is checked
///   on the next call.
/// - After an error the demuxer is failed for good: `next_tag` and `finish` return
///   that same error again and `push` discards its input. There is no resync: a broken
///   FLV byte stream has no reliable way to find the next tag boundary.
///
/// Memory: if `next_tag` is called until `Ok(None)` after every `push`, the buffer
/// never holds more than one incomplete tag (at most
/// [`DemuxerConfig::max_tag_size`] + 15 bytes) plus the last pushed chunk.
#[derive(Debug)]
pub struct Demuxer {
    config: DemuxerConfig,
    buf: BytesMut,
    state: State,
    header: Option<Header>,
    /// Bytes consumed from the stream (buffer start's offset).
    offset: u64,
    /// What the next PreviousTagSize must be.
    expected_prev: u32,
}

impl Demuxer {
    /// A demuxer waiting for the FLV header.
    pub fn new(config: DemuxerConfig) -> Demuxer {
        Demuxer {
            config,
            buf: BytesMut::new(),
            state: State::Header,
            header: None,
            offset: 0,
            expected_prev: 0,
        }
    }

    /// Appends input. Ignored once the demuxer has failed.
    pub fn push(&mut self, data: &[u8]) {
        if matches!(self.state, State::Failed(_)) {
            return;
        }
        self.buf.extend_from_slice(data);
    }

    /// The FLV header, once parsed.
    pub fn header(&self) -> Option<Header> {
        self.header
    }

    /// Bytes of the stream consumed so far (the offset of the first buffered byte).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes pushed but not consumed yet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next tag: `Ok(Some(tag))`, `Ok(None)` when more input is needed, or an error
    /// (after which the demuxer stays failed). Parses the FLV header first.
    pub fn next_tag(&mut self) -> Result<Option<Tag>, Error> {
        loop {
            match self.state {
                State::Failed(ref e) => return Err(e.clone()),
                State::Header => {
                    if let Err(e) = check_signature(&self.buf) {
                        return self.fail(e);
                    }
                    if self.buf.len() < Header::LEN {
                        return Ok(None);
                    }
                    let header = match Header::parse(&self.buf) {
                        Ok(h) => h,
                        Err(e) => return self.fail(e),
                    };
                    let data_offset =
                        u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]);
                    self.consume(Header::LEN);
                    self.header = Some(header);
                    self.state = State::Padding {
                        remaining: u64::from(data_offset) - Header::LEN as u64,
                    };
                }
                State::Padding { remaining } => {
                    let n = remaining.min(self.buf.len() as u64);
                    self.consume(n as usize);
                    if n < remaining {
                        self.state = State::Padding {
                            remaining: remaining - n,
                        };
                        return Ok(None);
                    }
                    self.state = State::PrevTagSize;
                }
                State::PrevTagSize => {
                    if self.buf.len() < Tag::TRAILER_LEN {
                        return Ok(None);
                    }
                    let found =
                        u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
                    if self.config.prev_tag_size == PrevTagSizePolicy::Check
                        && found != self.expected_prev
                        && found != 0
                    {
                        let e = Error::PrevTagSizeMismatch {
                            offset: self.offset,
                            expected: self.expected_prev,
                            found,
                        };
                        return self.fail(e);
                    }
                    self.consume(Tag::TRAILER_LEN);
                    self.state = State::Tag;
                }
                State::Tag => {
                    if self.buf.len() < Tag::HEADER_LEN {
                        return Ok(None);
                    }
                    let h = &self.buf[..Tag::HEADER_LEN];
                    let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
                    if size > self.config.max_tag_size {
                        let e = Error::TagTooLarge {
                            offset: self.offset,
                            size,
                            max: self.config.max_tag_size,
                        };
                        return self.fail(e);
                    }
                    if self.buf.len() < Tag::HEADER_LEN + size {
                        // The buffer grows as bytes arrive, never to the size an
                        // 11-byte header announces: a peer announcing large tags it
                        // never sends must not make us reserve memory.
                        return Ok(None);
                    }
                    let tag_type = TagType::from(h[0]);
                    let timestamp = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
                    let stream_id = u32::from_be_bytes([0, h[8], h[9], h[10]]);
                    self.consume(Tag::HEADER_LEN);
                    let body = self.buf.split_to(size).freeze();
                    self.offset += size as u64;
                    self.expected_prev = (Tag::HEADER_LEN + size) as u32;
                    self.state = State::PrevTagSize;
                    return Ok(Some(Tag {
                        tag_type,
                        timestamp,
                        stream_id,
                        body,
                    }));
                }
            }
        }
    }

    /// Call at the end of the input (after `next_tag` returned `Ok(None)`): `Ok(())` if
    /// the stream ended cleanly after a complete tag and its PreviousTagSize (or after
    /// the header with no tags), [`Error::Truncated`] if a partial header, tag or
    /// PreviousTagSize is buffered or no header arrived at all, or the error the
    /// demuxer failed with.
    pub fn finish(&self) -> Result<(), Error> {
        match self.state {
            State::Failed(ref e) => Err(e.clone()),
            State::Tag if self.buf.is_empty() => Ok(()),
            _ => Err(Error::Truncated {
                offset: self.offset,
                buffered: self.buf.len(),
            }),
        }
    }

    fn consume(&mut self, n: usize) {
        self.buf.advance(n);
        self.offset += n as u64;
    }

    fn fail(&mut self, e: Error) -> Result<Option<Tag>, Error> {
        self.state = State::Failed(e.clone());
        // Nothing more will be parsed: release the memory.
        self.buf = BytesMut::new();
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn tags() -> Vec<Tag> {
        vec![
            Tag::new(
                TagType::Script,
                0,
                Bytes::from_static(b"\x02\x00\x0aonMetaData"),
            ),
            Tag::new(
                TagType::Video,
                0,
                Bytes::from_static(&[0x17, 0, 0, 0, 0, 1]),
            ),
            Tag::new(
                TagType::Audio,
                0,
                Bytes::from_static(&[0xAF, 0, 0x12, 0x10]),
            ),
            Tag::new(
                TagType::Video,
                40,
                Bytes::from_static(&[0x17, 1, 0, 0, 0, 0x65]),
            ),
            Tag::new(TagType::Audio, 0x0123_4567, Bytes::new()),
            Tag {
                tag_type: TagType::Unknown(0x2A),
                timestamp: 0xFF00_0001,
                stream_id: 5,
                body: Bytes::from_static(b"opaque"),
            },
        ]
    }

    fn stream(tags: &[Tag]) -> Vec<u8> {
        let mut out = Header {
            audio: true,
            video: true,
        }
        .encode()
        .to_vec();
        for t in tags {
            t.write_to(&mut out);
        }
        out
    }

    fn demux_all(d: &mut Demuxer) -> Result<Vec<Tag>, Error> {
        let mut out = Vec::new();
        while let Some(t) = d.next_tag()? {
            out.push(t);
        }
        Ok(out)
    }

    #[test]
    fn whole_stream() {
        let tags = tags();
        let bytes = stream(&tags);
        let mut d = Demuxer::new(DemuxerConfig::default());
        assert_eq!(d.header(), None);
        assert_eq!(d.next_tag(), Ok(None));
        d.push(&bytes);
        assert_eq!(d.buffered(), bytes.len());
        assert_eq!(demux_all(&mut d).unwrap(), tags);
        assert_eq!(
            d.header(),
            Some(Header {
                audio: true,
                video: true
            })
        );
        assert_eq!(d.offset(), bytes.len() as u64);
        assert_eq!(d.buffered(), 0);
        assert_eq!(d.finish(), Ok(()));
    }

    #[test]
    fn byte_by_byte_and_zero_copy() {
        let tags = tags();
        let bytes = stream(&tags);
        let mut d = Demuxer::new(DemuxerConfig::default());
        let mut got = Vec::new();
        for b in &bytes {
            d.push(std::slice::from_ref(b));
            got.extend(demux_all(&mut d).unwrap());
        }
        assert_eq!(got, tags);
        d.finish().unwrap();

        // A body is a view into the pushed buffer, not a copy: two tags pushed together
        // share one allocation, adjacent in memory.
        let mut d = Demuxer::new(DemuxerConfig::default());
        d.push(&bytes);
        let got = demux_all(&mut d).unwrap();
        let (kf, seq) = (&got[3].body, &got[2].body);
        let gap = kf.as_ptr() as usize - seq.as_ptr() as usize;
        assert_eq!(gap, seq.len() + Tag::TRAILER_LEN + Tag::HEADER_LEN);
    }

    #[test]
    fn header_only_stream_and_empty_input() {
        let mut d = Demuxer::new(DemuxerConfig::default());
        assert_eq!(
            d.finish(),
            Err(Error::Truncated {
                offset: 0,
                buffered: 0
            })
        );
        d.push(&Header::default().encode());
        assert_eq!(d.next_tag(), Ok(None));
        assert_eq!(d.finish(), Ok(()));
        assert_eq!(d.header(), Some(Header::default()));
    }

    #[test]
    fn truncation_is_reported_with_offset() {
        let tags = tags();
        let bytes = stream(&tags);
        // Cut inside the header.
        let mut d = Demuxer::new(DemuxerConfig::default());
        d.push(&bytes[..5]);
        assert_eq!(d.next_tag(), Ok(None));
        assert_eq!(
            d.finish(),
            Err(Error::Truncated {
                offset: 0,
                buffered: 5
            })
        );
        // Cut inside PreviousTagSize0.
        let mut d = Demuxer::new(DemuxerConfig::default());
        d.push(&bytes[..11]);
        assert_eq!(d.next_tag(), Ok(None));
        assert_eq!(
            d.finish(),
            Err(Error::Truncated {
                offset: 9,
                buffered: 2
            })
        );
        // Cut inside the second tag's body: offset is that tag's start.
        let first = 13 + tags[0].encoded_len();
        let mut d = Demuxer::new(DemuxerConfig::default());
        d.push(&bytes[..first + 14]);
        assert_eq!(demux_all(&mut d).unwrap(), tags[..1]);
        assert_eq!(
            d.finish(),
            Err(Error::Truncated {
                offset: first as u64,
                buffered: 14
            })
        );
        // Cut right after a tag body, before its PreviousTagSize.
        let mut d = Demuxer::new(DemuxerConfig::default());
        d.push(&bytes[..first - 4]);
        assert_eq!(demux_all(&mut d).unwrap(), tags[..1]);
        assert_eq!(
            d.finish(),
            Err(Error::Truncated {
                offset: first as u64 - 4,
                buffered: 0
            })
        );
    }

    #[test]
    fn not_flv() {
        let mut d = Demuxer::new(DemuxerConfig::default());
        // Rejected on the first wrong byte, without waiting for 9 bytes.
        d.push(b"GET");
        assert_eq!(d.next_tag(), Err(Error::NotFlv { offset: 0 }));
        let mut d = Demuxer::new(DemuxerConfig::default());
        d.push(b"FL");
        assert_eq!(d.next_tag(), Ok(None));
        d.push(b"A");
        assert_eq!(d.next_tag(), Err(Error::NotFlv { offset: 2 }));
    }

    #[test]
    fn bad_version_and_data_offset() {
        let mut d = Demuxer::new(DemuxerConfig::default());
        d.push(b"FLV\x02\x05\0\0\0\x09\0\0\0\0");
        assert_eq!(
            d.next_tag(),
            Err(Error::UnsupportedVersion {
                offset: 3,
                version: 2
            })
        );
        let mut d = Demuxer::new(DemuxerConfig::default());
        d.push(b"FLV\x01\x05\0\0\0\x00\0\0\0\0");
        assert_eq!(
            d.next_tag(),
            Err(Error::BadHeader {
                offset: 5,
                data_offset: 0
            })
        );
    }

    #[test]
    fn data_offset_padding_is_skipped() {
        let tag = Tag::new(TagType::Video, 1, Bytes::from_static(&[0x27, 1, 0, 0, 0]));
        let mut bytes = b"FLV\x01\x01\0\0\0\x0C".to_vec();
        bytes.extend_from_slice(b"pad\0\0\0\0");
        tag.write_to(&mut bytes);
        let mut d = Demuxer::new(DemuxerConfig::default());
        for chunk in bytes.chunks(2) {
            d.push(chunk);
            if let Some(t) = d.next_tag().unwrap() {
                assert_eq!(t, tag);
            }
        }
        assert_eq!(
            d.header(),
            Some(Header {
                audio: false,
                video: true
            })
        );
        assert_eq!(d.finish(), Ok(()));
        assert_eq!(d.offset(), bytes.len() as u64);
    }

    #[test]
    fn tag_too_large() {
        let tags = tags();
        let bytes = stream(&tags);
        let config = DemuxerConfig {
            max_tag_size: 5,
            ..DemuxerConfig::default()
        };
        let mut d = Demuxer::new(config);
        d.push(&bytes);
        // The metadata tag (13-byte body) is the first one, at byte 13.
        assert_eq!(
            d.next_tag(),
            Err(Error::TagTooLarge {
                offset: 13,
                size: 13,
                max: 5
            })
        );
        // Refused from the header alone, before the body arrives.
        let mut d = Demuxer::new(DemuxerConfig {
            max_tag_size: 1000,
            ..Default::default()
        });
        d.push(&Header::default().encode());
        d.push(&[9, 0x01, 0x00, 0x00]);
        assert_eq!(d.next_tag(), Ok(None));
        d.push(&[0; 7]);
        assert_eq!(
            d.next_tag(),
            Err(Error::TagTooLarge {
                offset: 13,
                size: 65536,
                max: 1000
            })
        );
    }

    #[test]
    fn prev_tag_size_checked_with_zero_tolerated() {
        let tags = tags();
        let mut bytes = stream(&tags);
        let first_trailer = 13 + tags[0].encoded_len() - 4;
        // Zero is tolerated.
        bytes[first_trailer..first_trailer + 4].copy_from_slice(&[0; 4]);
        let mut d = Demuxer::new(DemuxerConfig::default());
        d.push(&bytes);
        assert_eq!(demux_all(&mut d).unwrap(), tags);
        // A wrong non-zero value is not.
        bytes[first_trailer + 3] = 99;
        let mut d = Demuxer::new(DemuxerConfig::default());
        d.push(&bytes);
        assert_eq!(d.next_tag().unwrap().unwrap(), tags[0]);
        let e = Error::PrevTagSizeMismatch {
            offset: first_trailer as u64,
            expected: 24,
            found: 99,
        };
        assert_eq!(d.next_tag(), Err(e.clone()));
        // The demuxer stays failed: same error, pushes ignored, finish reports it.
        assert_eq!(d.next_tag(), Err(e.clone()));
        assert_eq!(d.buffered(), 0);
        d.push(&bytes);
        assert_eq!(d.buffered(), 0);
        assert_eq!(d.next_tag(), Err(e.clone()));
        assert_eq!(d.finish(), Err(e));
        // PreviousTagSize0 must be 0 too.
        let mut d = Demuxer::new(DemuxerConfig::default());
        d.push(b"FLV\x01\x05\0\0\0\x09\0\0\0\x07");
        assert_eq!(
            d.next_tag(),
            Err(Error::PrevTagSizeMismatch {
                offset: 9,
                expected: 0,
                found: 7
            })
        );
        // Ignore policy: anything goes.
        let mut d = Demuxer::new(DemuxerConfig {
            prev_tag_size: PrevTagSizePolicy::Ignore,
            ..DemuxerConfig::default()
        });
        d.push(&bytes);
        assert_eq!(demux_all(&mut d).unwrap(), tags);
    }

    #[test]
    fn defaults() {
        let c = DemuxerConfig::default();
        assert_eq!(c.max_tag_size, 16 * 1024 * 1024);
        assert_eq!(c.prev_tag_size, PrevTagSizePolicy::Check);
        assert_eq!(PrevTagSizePolicy::default(), PrevTagSizePolicy::Check);
    }
}
