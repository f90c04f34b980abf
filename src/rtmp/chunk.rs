//! The receiving half of the RTMP chunk stream (RTMP 1.0 §5.3): reassembles messages
//! from interleaved chunks. Sans-IO: [`ChunkReader::push`] bytes, then call
//! [`ChunkReader::next_message`] until it returns `Ok(None)` ("need more bytes").
//!
//! Why not the library's reader: `scuffle-rtmp` 0.2's `ChunkReader` gives a Type 3
//! chunk that starts a new message the previous message's timestamp instead of adding
//! the previous delta (§5.3.1.2.4). ffmpeg sends exactly that header whenever two
//! consecutive messages on a chunk stream have the same size and spacing, so every
//! such AAC frame shifted the whole audio track back by ~23 ms: 438 ms of A/V drift
//! after 20 s of a plain `ffmpeg -c copy` publish. It also saturates Type 1 deltas
//! instead of wrapping at 2^32 ms. `rml_rtmp`'s reader shares one reassembly buffer
//! between chunk streams (interleaved chunks, which the spec allows, corrupt both
//! messages) and has unchecked arithmetic on peer input.
//!
//! Timestamps follow the spec exactly:
//! - Type 0 carries the absolute timestamp; Types 1 and 2 a delta added to the
//!   previous message's timestamp on that chunk stream;
//! - a Type 3 chunk that starts a new message adds the previous header's timestamp
//!   field again (after a Type 0 that is its absolute value, as ffmpeg also reads it);
//! - a timestamp field of `0xFFFFFF` means a 4-byte extended timestamp follows, and
//!   every Type 3 chunk of that chunk stream repeats it until the next header;
//! - arithmetic wraps modulo 2^32 (RTMP timestamps roll over after ~49.7 days), so
//!   the value handed on is the publisher's clock modulo 2^32, like an FLV timestamp.
//!
//! Memory is bounded: one message at most `max_message_bytes`, at most
//! `max_chunk_streams` chunk streams, and all partly received messages together at
//! most [`PARTIAL_BUDGET_MESSAGES`] × `max_message_bytes`. Input is only consumed
//! chunk by chunk, so the unparsed buffer never holds more than one chunk plus what
//! the caller pushed since the last call.

use std::collections::HashMap;

use bytes::{Buf, Bytes, BytesMut};

/// All partly received messages of a connection together may hold this many maximal
/// messages: a large video frame interleaved with audio never comes close to two.
pub const PARTIAL_BUDGET_MESSAGES: usize = 2;

/// Chunk size until the peer sends Set Chunk Size (§5.4.1).
pub const INITIAL_CHUNK_SIZE: u32 = 128;

/// Message type ids the reader itself acts on (§5.4).
pub mod message_type {
    /// Set Chunk Size: applied by the reader as soon as it is complete.
    pub const SET_CHUNK_SIZE: u8 = 1;
    /// Abort Message: drops the partly received message of a chunk stream.
    pub const ABORT: u8 = 2;
    /// Acknowledgement.
    pub const ACKNOWLEDGEMENT: u8 = 3;
    /// User Control Message.
    pub const USER_CONTROL: u8 = 4;
    /// Window Acknowledgement Size.
    pub const WINDOW_ACK_SIZE: u8 = 5;
    /// Set Peer Bandwidth.
    pub const SET_PEER_BANDWIDTH: u8 = 6;
    /// Audio data: an FLV audio tag body.
    pub const AUDIO: u8 = 8;
    /// Video data: an FLV video tag body.
    pub const VIDEO: u8 = 9;
    /// AMF3 data message.
    pub const DATA_AMF3: u8 = 15;
    /// AMF3 command message.
    pub const COMMAND_AMF3: u8 = 17;
    /// AMF0 data message (`@setDataFrame`, `onMetaData`): an FLV script tag body.
    pub const DATA_AMF0: u8 = 18;
    /// AMF0 command message (`connect`, `publish`, ...).
    pub const COMMAND_AMF0: u8 = 20;
    /// Aggregate message.
    pub const AGGREGATE: u8 = 22;
}

/// Limits of a [`ChunkReader`].
#[derive(Clone, Copy, Debug)]
pub struct ChunkReaderConfig {
    /// Largest message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Largest chunk size the peer may set.
    pub max_chunk_size: u32,
    /// Most chunk streams (ids) a peer may use.
    pub max_chunk_streams: usize,
}

/// One reassembled RTMP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Chunk stream it arrived on.
    pub chunk_stream_id: u32,
    /// Message type id (see [`message_type`]).
    pub type_id: u8,
    /// Message stream id (0 for control and NetConnection messages).
    pub stream_id: u32,
    /// Timestamp in milliseconds, modulo 2^32.
    pub timestamp: u32,
    /// The message body.
    pub payload: Bytes,
}

/// Why the chunk stream cannot be read further. The connection must be closed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChunkError {
    /// A Type 1, 2 or 3 chunk on a chunk stream that never had a Type 0 header.
    #[error("chunk stream {0} continued before its first full header")]
    NoPreviousHeader(u32),
    /// A message longer than `max_message_bytes`.
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Partly received messages exceed their memory budget.
    #[error("partly received messages exceed {0} bytes")]
    TooMuchBuffered(usize),
    /// More chunk streams than `max_chunk_streams`.
    #[error("more than {0} chunk streams in use")]
    TooManyChunkStreams(usize),
    /// Set Chunk Size outside `1..=max_chunk_size`, or malformed.
    #[error("invalid chunk size {size} (allowed 1 to {limit})")]
    BadChunkSize {
        /// Requested size.
        size: u32,
        /// Largest allowed.
        limit: u32,
    },
    /// A Type 0, 1 or 2 header in the middle of a message on the same chunk stream.
    #[error("chunk stream {0}: new message header before the previous message ended")]
    HeaderMidMessage(u32),
}

/// What a chunk stream remembers from its last header (§5.3.1.2).
#[derive(Debug)]
struct ChunkStream {
    /// Timestamp of the current (or last) message.
    timestamp: u32,
    /// Timestamp field of the last Type 0/1/2 header, added again by a Type 3 chunk
    /// that starts a new message.
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// The last header used an extended timestamp: Type 3 chunks carry 4 more bytes.
    extended: bool,
    /// Body received so far of the message in progress; empty between messages.
    partial: BytesMut,
    /// A message is in progress (`partial` may still be empty for a 0-byte chunk).
    in_progress: bool,
}

/// A parsed chunk header, before anything is consumed.
#[derive(Debug)]
struct Header {
    fmt: u8,
    csid: u32,
    /// Basic + message header + extended timestamp.
    len: usize,
    /// Timestamp or delta (extended value when the field was 0xFFFFFF).
    time: u32,
    extended: bool,
    length: u32,
    type_id: u8,
    stream_id: u32,
}

/// Reassembles RTMP messages from chunks.
#[derive(Debug)]
pub struct ChunkReader {
    config: ChunkReaderConfig,
    buf: BytesMut,
    chunk_size: u32,
    streams: HashMap<u32, ChunkStream>,
    /// Sum of the `partial` buffers.
    buffered: usize,
}

impl ChunkReader {
    /// A reader at the initial chunk size (128).
    pub fn new(config: ChunkReaderConfig) -> ChunkReader {
        ChunkReader {
            config,
            buf: BytesMut::new(),
            chunk_size: INITIAL_CHUNK_SIZE,
            streams: HashMap::new(),
            buffered: 0,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Changes the largest message accepted from now on (messages already started
    /// keep the length they announced). A session reads with a small limit until a
    /// publish is admitted, then with the largest tag size.
    pub fn set_max_message_bytes(&mut self, max: usize) {
        self.config.max_message_bytes = max;
    }

    /// The peer's current chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// The next complete message, `Ok(None)` when more bytes are needed. Set Chunk
    /// Size and Abort are applied here (and still returned, for logging).
    pub fn next_message(&mut self) -> Result<Option<Message>, ChunkError> {
        loop {
            let Some(header) = self.parse_header()? else {
                return Ok(None);
            };
            let (remaining, starts) = match self.streams.get(&header.csid) {
                Some(s) if s.in_progress => {
                    if header.fmt != 3 {
                        return Err(ChunkError::HeaderMidMessage(header.csid));
                    }
                    (s.length as usize - s.partial.len(), false)
                }
                _ => (header.length as usize, true),
            };
            if starts && header.length as usize > self.config.max_message_bytes {
                return Err(ChunkError::MessageTooLarge {
                    len: header.length as usize,
                    limit: self.config.max_message_bytes,
                });
            }
            let take = remaining.min(self.chunk_size as usize);
            if self.buf.len() < header.len + take {
                return Ok(None);
            }
            if !self.streams.contains_key(&header.csid)
                && self.streams.len() >= self.config.max_chunk_streams
            {
                return Err(ChunkError::TooManyChunkStreams(
                    self.config.max_chunk_streams,
                ));
            }
            self.buf.advance(header.len);
            let stream = apply_header(&mut self.streams, self.chunk_size, &header, starts);
            if starts && take == remaining {
                // The whole message is in this chunk: hand out a slice of the input.
                let payload = self.buf.split_to(take).freeze();
                stream.in_progress = false;
                let msg = Message {
                    chunk_stream_id: header.csid,
                    type_id: stream.type_id,
                    stream_id: stream.stream_id,
                    timestamp: stream.timestamp,
                    payload,
                };
                return self.finish(msg).map(Some);
            }
            let budget = self.config.max_message_bytes * PARTIAL_BUDGET_MESSAGES;
            if self.buffered + take > budget {
                return Err(ChunkError::TooMuchBuffered(budget));
            }
            stream.partial.extend_from_slice(&self.buf[..take]);
            self.buf.advance(take);
            self.buffered += take;
            if stream.partial.len() == stream.length as usize {
                let payload = stream.partial.split().freeze();
                stream.in_progress = false;
                self.buffered -= payload.len();
                let msg = Message {
                    chunk_stream_id: header.csid,
                    type_id: stream.type_id,
                    stream_id: stream.stream_id,
                    timestamp: stream.timestamp,
                    payload,
                };
                return self.finish(msg).map(Some);
            }
        }
    }

    /// Applies the control messages that change how chunks are read.
    fn finish(&mut self, msg: Message) -> Result<Message, ChunkError> {
        match msg.type_id {
            message_type::SET_CHUNK_SIZE => {
                let size = read_u32(&msg.payload).unwrap_or(0) & 0x7FFF_FFFF;
                if size == 0 || size > self.config.max_chunk_size {
                    return Err(ChunkError::BadChunkSize {
                        size,
                        limit: self.config.max_chunk_size,
                    });
                }
                self.chunk_size = size;
            }
            message_type::ABORT => {
                if let Some(s) = read_u32(&msg.payload).and_then(|id| self.streams.get_mut(&id)) {
                    self.buffered -= s.partial.len();
                    s.partial = BytesMut::new();
                    s.in_progress = false;
                }
            }
            _ => {}
        }
        Ok(msg)
    }

    /// Parses the chunk header at the start of the buffer without consuming it.
    fn parse_header(&self) -> Result<Option<Header>, ChunkError> {
        let b = &self.buf[..];
        let Some(&first) = b.first() else {
            return Ok(None);
        };
        let fmt = first >> 6;
        let (csid, mut pos) = match first & 0x3F {
            0 => match b.get(1) {
                Some(&x) => (64 + u32::from(x), 2),
                None => return Ok(None),
            },
            1 => match (b.get(1), b.get(2)) {
                (Some(&x), Some(&y)) => (64 + u32::from(x) + 256 * u32::from(y), 3),
                _ => return Ok(None),
            },
            id => (u32::from(id), 1),
        };
        let header_len = [11, 7, 3, 0][fmt as usize];
        let Some(h) = b.get(pos..pos + header_len) else {
            return Ok(None);
        };
        pos += header_len;
        let previous = self.streams.get(&csid);
        if fmt != 0 && previous.is_none() {
            return Err(ChunkError::NoPreviousHeader(csid));
        }
        let mut header = Header {
            fmt,
            csid,
            len: 0,
            time: 0,
            extended: false,
            length: 0,
            type_id: 0,
            stream_id: 0,
        };
        if fmt <= 2 {
            header.time = u24(&h[0..3]);
        }
        if fmt <= 1 {
            header.length = u24(&h[3..6]);
            header.type_id = h[6];
        }
        if fmt == 0 {
            header.stream_id = u32::from_le_bytes([h[7], h[8], h[9], h[10]]);
        }
        let extended = if fmt <= 2 {
            header.time == 0xFF_FFFF
        } else {
            previous.is_some_and(|p| p.extended)
        };
        if extended {
            let Some(ext) = b.get(pos..pos + 4) else {
                return Ok(None);
            };
            pos += 4;
            if fmt <= 2 {
                header.time = u32::from_be_bytes([ext[0], ext[1], ext[2], ext[3]]);
                header.extended = true;
            }
        }
        if let Some(p) = previous {
            if fmt >= 2 {
                header.length = p.length;
                header.type_id = p.type_id;
            }
            if fmt >= 1 {
                header.stream_id = p.stream_id;
            }
        }
        header.len = pos;
        Ok(Some(header))
    }
}

/// Updates the chunk stream's state from a header that is being consumed.
fn apply_header<'a>(
    streams: &'a mut HashMap<u32, ChunkStream>,
    chunk_size: u32,
    h: &Header,
    starts: bool,
) -> &'a mut ChunkStream {
    let stream = streams.entry(h.csid).or_insert_with(|| ChunkStream {
        timestamp: 0,
        delta: 0,
        length: 0,
        type_id: 0,
        stream_id: 0,
        extended: false,
        partial: BytesMut::new(),
        in_progress: false,
    });
    match h.fmt {
        0 => {
            stream.timestamp = h.time;
            stream.delta = h.time;
            stream.length = h.length;
            stream.type_id = h.type_id;
            stream.stream_id = h.stream_id;
            stream.extended = h.extended;
        }
        1 | 2 => {
            stream.timestamp = stream.timestamp.wrapping_add(h.time);
            stream.delta = h.time;
            stream.extended = h.extended;
            if h.fmt == 1 {
                stream.length = h.length;
                stream.type_id = h.type_id;
            }
        }
        // Type 3: a continuation keeps everything; a new message repeats the delta.
        _ if starts => stream.timestamp = stream.timestamp.wrapping_add(stream.delta),
        _ => {}
    }
    if starts {
        stream.in_progress = true;
        if stream.partial.capacity() == 0 && stream.length as usize > chunk_size as usize {
            // Grow as chunks arrive, not to the announced length: a peer announcing
            // large messages it never sends must not reserve memory.
            stream.partial.reserve((chunk_size as usize) * 4);
        }
    }
    stream
}

fn u24(b: &[u8]) -> u32 {
    u32::from_be_bytes([0, b[0], b[1], b[2]])
}

fn read_u32(b: &[u8]) -> Option<u32> {
    b.get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Encodes messages as chunks the way a publisher might; for tests (unit, property
/// and integration) that need hand-made chunk streams.
#[derive(Debug, Default)]
pub struct ChunkEncoder {
    chunk_size: usize,
}

/// How [`ChunkEncoder::message`] writes the first chunk's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstHeader {
    /// Type 0 with the absolute timestamp.
    Full,
    /// Type 1 with this delta.
    Delta(u32),
    /// Type 2 with this delta (same length and type as before).
    TimeOnly(u32),
    /// Type 3: same length, type and delta as before; the value is that delta (the
    /// previous header's timestamp field), needed to know if it was extended.
    Same(u32),
}

impl ChunkEncoder {
    /// An encoder splitting bodies at `chunk_size` bytes.
    pub fn new(chunk_size: usize) -> ChunkEncoder {
        ChunkEncoder { chunk_size }
    }

    /// Appends one message as chunks to `out`. With `extended`, the timestamp field
    /// is written as an extended timestamp (as encoders do past 0xFFFFFF).
    #[allow(clippy::too_many_arguments)]
    pub fn message(
        &self,
        out: &mut Vec<u8>,
        csid: u8,
        first: FirstHeader,
        timestamp: u32,
        type_id: u8,
        stream_id: u32,
        body: &[u8],
    ) {
        let time = match first {
            FirstHeader::Full => timestamp,
            FirstHeader::Delta(d) | FirstHeader::TimeOnly(d) | FirstHeader::Same(d) => d,
        };
        let extended = time >= 0xFF_FFFF;
        let field = if extended { 0xFF_FFFF } else { time };
        let fmt = match first {
            FirstHeader::Full => 0u8,
            FirstHeader::Delta(_) => 1,
            FirstHeader::TimeOnly(_) => 2,
            FirstHeader::Same(_) => 3,
        };
        out.push((fmt << 6) | (csid & 0x3F));
        if fmt <= 2 {
            out.extend_from_slice(&field.to_be_bytes()[1..]);
        }
        if fmt <= 1 {
            out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            out.push(type_id);
        }
        if fmt == 0 {
            out.extend_from_slice(&stream_id.to_le_bytes());
        }
        if extended {
            out.extend_from_slice(&time.to_be_bytes());
        }
        let mut chunks = body.chunks(self.chunk_size.max(1));
        out.extend_from_slice(chunks.next().unwrap_or(&[]));
        for chunk in chunks {
            out.push(0xC0 | (csid & 0x3F));
            if extended {
                out.extend_from_slice(&time.to_be_bytes());
            }
            out.extend_from_slice(chunk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config() -> ChunkReaderConfig {
        ChunkReaderConfig {
            max_message_bytes: 1 << 20,
            max_chunk_size: 65_536,
            max_chunk_streams: 8,
        }
    }

    fn read_all(input: &[u8], pieces: &[usize]) -> Result<Vec<Message>, ChunkError> {
        let mut r = ChunkReader::new(config());
        let mut out = Vec::new();
        let mut rest = input;
        for &n in pieces.iter().chain(std::iter::once(&usize::MAX)) {
            let n = n.min(rest.len());
            r.push(&rest[..n]);
            rest = &rest[n..];
            while let Some(m) = r.next_message()? {
                out.push(m);
            }
            if rest.is_empty() {
                break;
            }
        }
        Ok(out)
    }

    fn set_chunk_size(out: &mut Vec<u8>, size: u32) {
        ChunkEncoder::new(128).message(out, 2, FirstHeader::Full, 0, 1, 0, &size.to_be_bytes());
    }

    #[test]
    fn type3_new_message_adds_the_previous_delta() {
        let e = ChunkEncoder::new(4096);
        let mut s = Vec::new();
        set_chunk_size(&mut s, 4096);
        e.message(&mut s, 4, FirstHeader::Full, 1000, 8, 1, &[0xAF, 1, 1]);
        e.message(&mut s, 4, FirstHeader::Delta(23), 0, 8, 1, &[0xAF, 1, 2, 3]);
        e.message(&mut s, 4, FirstHeader::Same(23), 0, 8, 1, &[0xAF, 1, 2, 4]);
        e.message(
            &mut s,
            4,
            FirstHeader::TimeOnly(24),
            0,
            8,
            1,
            &[0xAF, 1, 2, 5],
        );
        e.message(&mut s, 4, FirstHeader::Same(24), 0, 8, 1, &[0xAF, 1, 2, 6]);
        let ts: Vec<u32> = read_all(&s, &[])
            .unwrap()
            .iter()
            .skip(1)
            .map(|m| m.timestamp)
            .collect();
        assert_eq!(ts, [1000, 1023, 1046, 1070, 1094]);
    }

    #[test]
    fn type3_after_type0_repeats_the_absolute_timestamp_as_delta() {
        // §5.3.1.2.4, and what ffmpeg's reader does.
        let e = ChunkEncoder::new(128);
        let mut s = Vec::new();
        e.message(&mut s, 5, FirstHeader::Full, 40, 9, 1, &[0x17, 1]);
        e.message(&mut s, 5, FirstHeader::Same(40), 0, 9, 1, &[0x27, 1]);
        let ts: Vec<u32> = read_all(&s, &[])
            .unwrap()
            .iter()
            .map(|m| m.timestamp)
            .collect();
        assert_eq!(ts, [40, 80]);
    }

    #[test]
    fn continuation_chunks_do_not_move_the_timestamp_and_streams_interleave() {
        let e = ChunkEncoder::new(128);
        let video: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut v = Vec::new();
        e.message(&mut v, 6, FirstHeader::Full, 500, 9, 1, &video);
        let mut a = Vec::new();
        e.message(&mut a, 4, FirstHeader::Full, 510, 8, 1, &[0xAF, 1, 9]);
        // Video chunk 1, the whole audio message, video chunks 2 and 3.
        let first = 1 + 11 + 128;
        let mut s = v[..first].to_vec();
        s.extend_from_slice(&a);
        s.extend_from_slice(&v[first..]);
        let msgs = read_all(&s, &[]).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!((msgs[0].type_id, msgs[0].timestamp), (8, 510));
        assert_eq!((msgs[1].type_id, msgs[1].timestamp), (9, 500));
        assert_eq!(&msgs[1].payload[..], &video[..]);
    }

    #[test]
    fn extended_timestamps_and_rollover() {
        let e = ChunkEncoder::new(128);
        let mut s = Vec::new();
        let big = vec![7u8; 200]; // two chunks: the Type 3 repeats the extended field
        e.message(&mut s, 6, FirstHeader::Full, 0xFFFF_FFF0, 9, 1, &big);
        e.message(&mut s, 6, FirstHeader::Delta(0x20), 0, 9, 1, &[1, 2]);
        e.message(&mut s, 6, FirstHeader::Delta(0x0100_0000), 0, 9, 1, &big);
        e.message(&mut s, 6, FirstHeader::Same(0x0100_0000), 0, 9, 1, &big);
        let msgs = read_all(&s, &[]).unwrap();
        let ts: Vec<u32> = msgs.iter().map(|m| m.timestamp).collect();
        assert_eq!(ts, [0xFFFF_FFF0, 0x10, 0x0100_0010, 0x0200_0010]);
        assert!(
            msgs.iter()
                .all(|m| m.payload.len() == 200 || m.payload.len() == 2)
        );
    }

    #[test]
    fn limits_and_malformed_input_are_errors_not_panics() {
        let e = ChunkEncoder::new(128);
        let mut s = Vec::new();
        e.message(&mut s, 4, FirstHeader::Delta(1), 0, 8, 1, &[1]);
        assert_eq!(read_all(&s, &[]), Err(ChunkError::NoPreviousHeader(4)));

        let mut s = Vec::new();
        e.message(
            &mut s,
            4,
            FirstHeader::Full,
            0,
            8,
            1,
            &vec![0; (1 << 20) + 1],
        );
        assert!(matches!(
            read_all(&s, &[]),
            Err(ChunkError::MessageTooLarge { .. })
        ));

        let mut s = Vec::new();
        set_chunk_size(&mut s, 1 << 20);
        assert!(matches!(
            read_all(&s, &[]),
            Err(ChunkError::BadChunkSize { .. })
        ));

        let mut s = Vec::new();
        for csid in 3..20 {
            e.message(&mut s, csid, FirstHeader::Full, 0, 8, 1, &[1]);
        }
        assert_eq!(read_all(&s, &[]), Err(ChunkError::TooManyChunkStreams(8)));

        let mut s = Vec::new();
        e.message(&mut s, 4, FirstHeader::Full, 0, 8, 1, &[0; 300]);
        s.truncate(1 + 11 + 128);
        e.message(&mut s, 4, FirstHeader::Full, 0, 8, 1, &[1]);
        assert_eq!(read_all(&s, &[]), Err(ChunkError::HeaderMidMessage(4)));
    }

    #[test]
    fn abort_drops_the_partial_message() {
        let e = ChunkEncoder::new(128);
        let mut s = Vec::new();
        e.message(&mut s, 4, FirstHeader::Full, 0, 8, 1, &[0; 300]);
        s.truncate(1 + 11 + 128);
        e.message(&mut s, 2, FirstHeader::Full, 0, 2, 0, &4u32.to_be_bytes());
        e.message(&mut s, 4, FirstHeader::Full, 5, 8, 1, &[1]);
        let msgs = read_all(&s, &[]).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!((msgs[1].timestamp, &msgs[1].payload[..]), (5, &[1u8][..]));
    }

    proptest! {
        #[test]
        fn any_split_of_the_input_yields_the_same_messages(
            sizes in proptest::collection::vec(0usize..400, 1..12),
            cuts in proptest::collection::vec(1usize..64, 0..40),
        ) {
            let e = ChunkEncoder::new(128);
            let mut s = Vec::new();
            let mut ts = 0u32;
            for (i, &n) in sizes.iter().enumerate() {
                let body: Vec<u8> = (0..n).map(|j| (i + j) as u8).collect();
                let first = if i == 0 { FirstHeader::Full } else { FirstHeader::Delta(33) };
                ts = if i == 0 { 7 } else { ts + 33 };
                e.message(&mut s, 6, first, 7, 9, 1, &body);
            }
            let whole = read_all(&s, &[]).unwrap();
            let split = read_all(&s, &cuts).unwrap();
            prop_assert_eq!(&whole, &split);
            prop_assert_eq!(whole.len(), sizes.len());
            prop_assert_eq!(whole.last().unwrap().timestamp, ts);
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = read_all(&data, &[]);
        }
    }
}
