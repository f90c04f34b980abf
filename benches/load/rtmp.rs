//! The RTMP publisher's wire format, without I/O: the plain handshake, chunk
//! writing, an incremental chunk reader for what servers answer, and the few AMF0
//! values the commands need. The async publisher (`publisher.rs`) drives these.
//!
//! What a publisher sends after the handshake: Set Chunk Size ([`CHUNK_SIZE`]),
//! `connect`, `createStream`, `publish`, then one message per FLV tag (audio 8,
//! video 9, data 18 with `@setDataFrame` before `onMetaData`), each written with a
//! type-0 header (absolute timestamp) and type-3 continuation chunks.

use bytes::{Buf, BytesMut};

/// RTMP handshake packet size (C1, C2, S1, S2).
pub const HANDSHAKE_SIZE: usize = 1536;

/// The chunk size the publisher announces and uses: a 2.5 Mbit/s keyframe (~100 KB)
/// is two chunks. wsrelay accepts up to `rtmp_settings.max_chunk_size` (65,536).
pub const CHUNK_SIZE: u32 = 60_000;

/// Largest message the reader accepts from a server: responses are a few hundred
/// bytes; more is a bug or not RTMP.
const MAX_MESSAGE: usize = 1 << 20;

/// Chunk streams the reader keeps state for (servers use 2 to 6).
const MAX_CHUNK_STREAMS: usize = 64;

/// Timestamps from here on need the extended field; the harness never gets there
/// (4.6 hours of stream time) and refuses rather than writing it.
pub const MAX_TIMESTAMP: u32 = 0x00ff_ffff;

/// Message type ids.
pub mod kind {
    /// Set Chunk Size.
    pub const SET_CHUNK_SIZE: u8 = 1;
    /// User Control (stream begin, ping request 6 / response 7).
    pub const USER_CONTROL: u8 = 4;
    /// Audio.
    pub const AUDIO: u8 = 8;
    /// Video.
    pub const VIDEO: u8 = 9;
    /// AMF0 data.
    pub const DATA_AMF0: u8 = 18;
    /// AMF0 command.
    pub const COMMAND_AMF0: u8 = 20;
}

/// Chunk stream ids the publisher uses.
pub mod csid {
    /// Protocol control.
    pub const CONTROL: u32 = 2;
    /// Commands.
    pub const COMMAND: u32 = 3;
    /// Audio.
    pub const AUDIO: u32 = 4;
    /// Data (metadata).
    pub const DATA: u32 = 5;
    /// Video.
    pub const VIDEO: u32 = 6;
}

/// C0 + C1: version 3, time 0, zero, then 1528 random bytes (a plain handshake:
/// no digest, which every server answers with the plain handshake).
pub fn c0c1() -> Vec<u8> {
    let mut out = vec![0u8; 1 + HANDSHAKE_SIZE];
    out[0] = 3;
    rand::fill(&mut out[9..]);
    out
}

/// Appends one message as chunks: a type-0 chunk, then type-3 continuation chunks
/// of `chunk_size` bytes.
pub fn write_message(
    out: &mut Vec<u8>,
    csid: u32,
    msg_type: u8,
    stream_id: u32,
    timestamp: u32,
    payload: &[u8],
    chunk_size: usize,
) -> Result<(), String> {
    if timestamp >= MAX_TIMESTAMP {
        return Err(format!(
            "RTMP timestamp {timestamp} needs the extended field (the harness stops before)"
        ));
    }
    if payload.len() > 0x00ff_ffff {
        return Err(format!("RTMP message of {} bytes", payload.len()));
    }
    basic_header(out, 0, csid);
    out.extend_from_slice(&timestamp.to_be_bytes()[1..]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(msg_type);
    out.extend_from_slice(&stream_id.to_le_bytes());
    let mut rest = payload;
    loop {
        let n = rest.len().min(chunk_size);
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        if rest.is_empty() {
            break;
        }
        basic_header(out, 3, csid);
    }
    Ok(())
}

fn basic_header(out: &mut Vec<u8>, fmt: u8, csid: u32) {
    match csid {
        2..=63 => out.push(fmt << 6 | csid as u8),
        64..=319 => out.extend_from_slice(&[fmt << 6, (csid - 64) as u8]),
        _ => {
            let id = csid - 64;
            out.extend_from_slice(&[fmt << 6 | 1, id as u8, (id >> 8) as u8]);
        }
    }
}

/// A complete message from the server.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// Message type id.
    pub msg_type: u8,
    /// Message stream id.
    pub stream_id: u32,
    /// Timestamp (absolute).
    pub timestamp: u32,
    /// Payload.
    pub payload: Vec<u8>,
}

#[derive(Clone, Debug, Default)]
struct ChunkStream {
    timestamp: u32,
    delta: u32,
    length: usize,
    msg_type: u8,
    stream_id: u32,
    extended: bool,
    partial: Vec<u8>,
    /// Whether a header has been seen on this chunk stream.
    known: bool,
}

/// Incremental chunk-stream reader: `push` bytes, then `next_message` until
/// `Ok(None)` (more bytes needed). Applies the peer's Set Chunk Size itself.
#[derive(Debug)]
pub struct ChunkReader {
    buf: BytesMut,
    chunk_size: usize,
    streams: Vec<(u32, ChunkStream)>,
}

impl Default for ChunkReader {
    fn default() -> Self {
        ChunkReader {
            buf: BytesMut::new(),
            chunk_size: 128,
            streams: Vec::new(),
        }
    }
}

impl ChunkReader {
    /// Adds received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete message, `Ok(None)` if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, String> {
        loop {
            let Some((used, done)) = self.chunk()? else {
                return Ok(None);
            };
            self.buf.advance(used);
            if let Some(msg) = done {
                if msg.msg_type == kind::SET_CHUNK_SIZE && msg.payload.len() >= 4 {
                    let p = &msg.payload;
                    let size = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff;
                    if size == 0 {
                        return Err("protocol: Set Chunk Size 0".into());
                    }
                    self.chunk_size = size as usize;
                }
                return Ok(Some(msg));
            }
        }
    }

    /// Parses one chunk from the start of the buffer: bytes used and the message it
    /// completed, or `None` if the chunk is not all there yet (nothing consumed).
    fn chunk(&mut self) -> Result<Option<(usize, Option<Message>)>, String> {
        let b = &self.buf[..];
        let Some(&b0) = b.first() else {
            return Ok(None);
        };
        let fmt = b0 >> 6;
        let (id, mut at) = match b0 & 0x3f {
            0 if b.len() >= 2 => (64 + u32::from(b[1]), 2),
            1 if b.len() >= 3 => (64 + u32::from(b[1]) + (u32::from(b[2]) << 8), 3),
            0 | 1 => return Ok(None),
            n => (u32::from(n), 1),
        };
        let header_len = [11, 7, 3, 0][usize::from(fmt)];
        if b.len() < at + header_len {
            return Ok(None);
        }
        let h = &b[at..at + header_len];
        at += header_len;
        let u24 = |x: &[u8]| u32::from_be_bytes([0, x[0], x[1], x[2]]);
        let index = match self.streams.iter().position(|(i, _)| *i == id) {
            Some(i) => i,
            None if self.streams.len() < MAX_CHUNK_STREAMS => {
                self.streams.push((id, ChunkStream::default()));
                self.streams.len() - 1
            }
            None => {
                return Err(format!(
                    "protocol: more than {MAX_CHUNK_STREAMS} chunk streams"
                ));
            }
        };
        let mut cs = self.streams[index].1.clone();
        if fmt != 0 && !cs.known {
            return Err(format!(
                "protocol: chunk type {fmt} first on chunk stream {id}"
            ));
        }
        let starts_message = cs.partial.is_empty();
        // Types 0–2 start with a timestamp (delta); type 3 repeats the last one's
        // extended field, if it had one.
        let mut field = if fmt < 3 { u24(&h[..3]) } else { 0 };
        if fmt < 3 {
            cs.extended = field == 0x00ff_ffff;
        }
        if cs.extended {
            if b.len() < at + 4 {
                return Ok(None);
            }
            field = u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            at += 4;
        }
        match fmt {
            0 => {
                cs.timestamp = field;
                cs.delta = 0;
                cs.length = u24(&h[3..6]) as usize;
                cs.msg_type = h[6];
                cs.stream_id = u32::from_le_bytes([h[7], h[8], h[9], h[10]]);
            }
            1 => {
                cs.delta = field;
                cs.length = u24(&h[3..6]) as usize;
                cs.msg_type = h[6];
            }
            2 => cs.delta = field,
            _ => {}
        }
        if cs.length > MAX_MESSAGE {
            return Err(format!("protocol: server message of {} bytes", cs.length));
        }
        if starts_message && fmt != 0 {
            cs.timestamp = cs.timestamp.wrapping_add(cs.delta);
        }
        cs.known = true;
        let n = (cs.length - cs.partial.len()).min(self.chunk_size);
        if b.len() < at + n {
            return Ok(None);
        }
        cs.partial.extend_from_slice(&b[at..at + n]);
        at += n;
        let done = (cs.partial.len() == cs.length).then(|| Message {
            msg_type: cs.msg_type,
            stream_id: cs.stream_id,
            timestamp: cs.timestamp,
            payload: std::mem::take(&mut cs.partial),
        });
        self.streams[index].1 = cs;
        Ok(Some((at, done)))
    }
}

/// An AMF0 value (the subset RTMP commands use).
#[derive(Clone, Debug, PartialEq)]
pub enum Amf {
    /// Number (0x00).
    Number(f64),
    /// Boolean (0x01).
    Bool(bool),
    /// String (0x02) or long string (0x0c).
    Str(String),
    /// Object (0x03) or ECMA array (0x08): key/value pairs in order.
    Object(Vec<(String, Amf)>),
    /// Null (0x05) or undefined (0x06).
    Null,
    /// Strict array (0x0a).
    Array(Vec<Amf>),
}

impl Amf {
    /// Appends the AMF0 encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Amf::Number(n) => {
                out.push(0);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Amf::Bool(b) => out.extend_from_slice(&[1, u8::from(*b)]),
            Amf::Str(s) => {
                out.push(2);
                key(out, s);
            }
            Amf::Object(pairs) => {
                out.push(3);
                for (k, v) in pairs {
                    key(out, k);
                    v.encode(out);
                }
                out.extend_from_slice(&[0, 0, 9]);
            }
            Amf::Null => out.push(5),
            Amf::Array(items) => {
                out.push(0x0a);
                out.extend_from_slice(&(items.len() as u32).to_be_bytes());
                for v in items {
                    v.encode(out);
                }
            }
        }
    }

    /// A string's text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Amf::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// A property of an object.
    pub fn get(&self, name: &str) -> Option<&Amf> {
        match self {
            Amf::Object(pairs) => pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Decodes every value of a command or data message.
    pub fn decode_all(mut b: &[u8]) -> Result<Vec<Amf>, String> {
        let mut out = Vec::new();
        while !b.is_empty() {
            out.push(decode(&mut b, 0)?);
        }
        Ok(out)
    }
}

/// A UTF-8 string with a u16 length (object keys, short strings); longer ones are
/// cut (the harness writes only short ones).
fn key(out: &mut Vec<u8>, s: &str) {
    let s = &s.as_bytes()[..s.len().min(0xffff)];
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if b.len() < n {
        return Err("AMF0: truncated".into());
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Ok(head)
}

fn string(b: &mut &[u8], long: bool) -> Result<String, String> {
    let n = if long {
        let l = take(b, 4)?;
        u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize
    } else {
        let l = take(b, 2)?;
        usize::from(u16::from_be_bytes([l[0], l[1]]))
    };
    Ok(String::from_utf8_lossy(take(b, n)?).into_owned())
}

fn decode(b: &mut &[u8], depth: usize) -> Result<Amf, String> {
    if depth > 16 {
        return Err("AMF0: nested too deep".into());
    }
    let marker = take(b, 1)?[0];
    Ok(match marker {
        0 => {
            let x = take(b, 8)?;
            Amf::Number(f64::from_be_bytes(x.try_into().expect("8 bytes")))
        }
        1 => Amf::Bool(take(b, 1)?[0] != 0),
        2 => Amf::Str(string(b, false)?),
        0x0c => Amf::Str(string(b, true)?),
        3 | 8 => {
            if marker == 8 {
                take(b, 4)?;
            }
            let mut pairs = Vec::new();
            loop {
                let k = string(b, false)?;
                if k.is_empty() && b.first() == Some(&9) {
                    take(b, 1)?;
                    break;
                }
                pairs.push((k, decode(b, depth + 1)?));
            }
            Amf::Object(pairs)
        }
        5 | 6 => Amf::Null,
        0x0a => {
            let l = take(b, 4)?;
            let n = u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize;
            let mut items = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                items.push(decode(b, depth + 1)?);
            }
            Amf::Array(items)
        }
        other => return Err(format!("AMF0: marker {other:#04x} not supported")),
    })
}

/// A command message payload: name, transaction id, then the arguments.
pub fn command(name: &str, txn: f64, args: &[Amf]) -> Vec<u8> {
    let mut out = Vec::new();
    Amf::Str(name.to_owned()).encode(&mut out);
    Amf::Number(txn).encode(&mut out);
    for a in args {
        a.encode(&mut out);
    }
    out
}

/// `connect` to application `app` at `tc_url`, transaction 1.
pub fn connect(app: &str, tc_url: &str) -> Vec<u8> {
    let obj = Amf::Object(vec![
        ("app".into(), Amf::Str(app.into())),
        ("type".into(), Amf::Str("nonprivate".into())),
        (
            "flashVer".into(),
            Amf::Str("FMLE/3.0 (compatible; wsrelay-load)".into()),
        ),
        ("tcUrl".into(), Amf::Str(tc_url.into())),
    ]);
    command("connect", 1.0, &[obj])
}

/// The payload of the Set Chunk Size message.
pub fn set_chunk_size(size: u32) -> [u8; 4] {
    size.to_be_bytes()
}

/// A script tag body as an RTMP data message: `@setDataFrame` before it, as
/// encoders send `onMetaData`.
pub fn data_frame(script_body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(script_body.len() + 16);
    Amf::Str("@setDataFrame".into()).encode(&mut out);
    out.extend_from_slice(script_body);
    out
}

/// Checks the reader against the writer at every split, and AMF0 round trips
/// (`load self-test`).
pub fn self_test() -> Result<(), String> {
    let big: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let mut wire = Vec::new();
    write_message(
        &mut wire,
        csid::CONTROL,
        kind::SET_CHUNK_SIZE,
        0,
        0,
        &set_chunk_size(300),
        128,
    )?;
    write_message(&mut wire, csid::VIDEO, kind::VIDEO, 1, 40, &big, 300)?;
    write_message(&mut wire, 400, kind::AUDIO, 1, 41, &big[..10], 300)?;
    // A type-1 then a type-2 and a type-3 header on chunk stream 3 (deltas 10, 5, 5).
    wire.extend_from_slice(&[3, 0, 0, 100, 0, 0, 1, 20, 1, 0, 0, 0, 0xaa]);
    wire.extend_from_slice(&[0x43, 0, 0, 10, 0, 0, 1, 20, 0xbb]);
    wire.extend_from_slice(&[0x83, 0, 0, 5, 0xcc]);
    wire.extend_from_slice(&[0xc3, 0xdd]);
    let want = [
        (kind::SET_CHUNK_SIZE, 0, 4),
        (kind::VIDEO, 40, 1000),
        (kind::AUDIO, 41, 10),
        (kind::COMMAND_AMF0, 100, 1),
        (kind::COMMAND_AMF0, 110, 1),
        (kind::COMMAND_AMF0, 115, 1),
        (kind::COMMAND_AMF0, 120, 1),
    ];
    for split in 1..wire.len() {
        let mut r = ChunkReader::default();
        let mut got = Vec::new();
        for part in wire.chunks(split) {
            r.push(part);
            while let Some(m) = r.next_message()? {
                got.push(m);
            }
        }
        let shape: Vec<(u8, u32, usize)> = got
            .iter()
            .map(|m| (m.msg_type, m.timestamp, m.payload.len()))
            .collect();
        if shape != want || got[1].payload != big || got[3].payload != [0xaa] {
            return Err(format!(
                "RTMP chunk reader failed at split {split}: {shape:?}"
            ));
        }
    }
    let values = vec![
        Amf::Str("_result".into()),
        Amf::Number(2.0),
        Amf::Null,
        Amf::Object(vec![
            ("code".into(), Amf::Str("NetStream.Publish.Start".into())),
            ("ok".into(), Amf::Bool(true)),
            ("list".into(), Amf::Array(vec![Amf::Number(1.5)])),
        ]),
    ];
    let mut enc = Vec::new();
    for v in &values {
        v.encode(&mut enc);
    }
    if Amf::decode_all(&enc)? != values {
        return Err("AMF0 round trip failed".into());
    }
    if Amf::decode_all(&connect("live", "rtmp://h/live"))?[2].get("app")
        != Some(&Amf::Str("live".into()))
    {
        return Err("AMF0: connect object".into());
    }
    Ok(())
}
