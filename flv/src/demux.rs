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
                        // Make room for the whole tag at once rather than growing
                        // the buffer push by push.
                        self.buf.reserve(Tag::HEADER_LEN + size - self.buf.len());
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
