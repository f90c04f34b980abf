//! Minimal incremental decoders for what players receive, light on CPU: HTTP/1.1
//! chunked bodies, server-to-client WebSocket frames, and FLV tag headers (bodies are
//! skipped, never copied). Plus the few encoders the ceiling server needs.

/// One FLV tag as a player sees it: header fields and the two body bytes that say
/// whether it is a keyframe or a sequence header.
#[derive(Clone, Copy, Debug, Default)]
pub struct TagInfo {
    /// 8 audio, 9 video, 18 script.
    pub tag_type: u8,
    /// Timestamp in ms (with the extended byte).
    pub timestamp: u32,
    /// Bytes on the wire: 11-byte header, body, 4-byte PreviousTagSize.
    pub wire_len: u32,
    /// A video keyframe (not a sequence header).
    pub keyframe: bool,
    /// An audio or video sequence header.
    pub seq: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scan {
    FileHeader,
    TagHeader,
    BodyPrefix,
    Skip,
}

/// Incremental FLV scanner: parses the file header and tag headers, skips bodies.
#[derive(Debug)]
pub struct FlvScanner {
    state: Scan,
    buf: [u8; 13],
    have: usize,
    need: usize,
    skip: u64,
    body_len: u32,
    cur: TagInfo,
    /// Bytes of FLV seen so far.
    pub bytes: u64,
}

impl Default for FlvScanner {
    fn default() -> Self {
        FlvScanner {
            state: Scan::FileHeader,
            buf: [0; 13],
            have: 0,
            need: 13,
            skip: 0,
            body_len: 0,
            cur: TagInfo::default(),
            bytes: 0,
        }
    }
}

impl FlvScanner {
    /// Feeds FLV bytes; calls `on_tag` for every completed tag.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        on_tag: &mut impl FnMut(&TagInfo),
    ) -> Result<(), String> {
        self.bytes += input.len() as u64;
        while !input.is_empty() {
            if self.state == Scan::Skip {
                let n = (self.skip as usize).min(input.len());
                input = &input[n..];
                self.skip -= n as u64;
                if self.skip == 0 {
                    on_tag(&self.cur);
                    self.start(Scan::TagHeader, 11);
                }
                continue;
            }
            let n = (self.need - self.have).min(input.len());
            self.buf[self.have..self.have + n].copy_from_slice(&input[..n]);
            self.have += n;
            input = &input[n..];
            if self.have < self.need {
                continue;
            }
            match self.state {
                Scan::FileHeader => {
                    if &self.buf[..3] != b"FLV" {
                        return Err("protocol: body is not FLV".into());
                    }
                    self.start(Scan::TagHeader, 11);
                }
                Scan::TagHeader => {
                    let b = &self.buf;
                    self.body_len = u32::from_be_bytes([0, b[1], b[2], b[3]]);
                    self.cur = TagInfo {
                        tag_type: b[0] & 0x1f,
                        timestamp: u32::from_be_bytes([b[7], b[4], b[5], b[6]]),
                        wire_len: 11 + self.body_len + 4,
                        keyframe: false,
                        seq: false,
                    };
                    let prefix = self.body_len.min(2) as usize;
                    if prefix == 0 {
                        self.state = Scan::Skip;
                        self.skip = 4;
                    } else {
                        self.start(Scan::BodyPrefix, prefix);
                    }
                }
                Scan::BodyPrefix => {
                    let b0 = self.buf[0];
                    let b1 = if self.need > 1 { self.buf[1] } else { 0xff };
                    match self.cur.tag_type {
                        9 if b0 & 0x80 != 0 => {
                            // Enhanced FLV: frame type in bits 4-6, packet type in 0-3.
                            let seq = b0 & 0x0f == 0;
                            self.cur.seq = seq;
                            self.cur.keyframe = (b0 >> 4) & 7 == 1 && !seq;
                        }
                        9 => {
                            let codec = b0 & 0x0f;
                            let seq = matches!(codec, 7 | 12) && b1 == 0;
                            self.cur.seq = seq;
                            self.cur.keyframe = b0 >> 4 == 1 && !seq;
                        }
                        8 => self.cur.seq = b0 >> 4 == 10 && b1 == 0,
                        _ => {}
                    }
                    self.state = Scan::Skip;
                    self.skip = u64::from(self.body_len) - self.need as u64 + 4;
                }
                Scan::Skip => unreachable!("handled above"),
            }
        }
        Ok(())
    }

    fn start(&mut self, state: Scan, need: usize) {
        self.state = state;
        self.have = 0;
        self.need = need;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    Size,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    Done,
}

/// Incremental HTTP/1.1 chunked transfer-coding decoder.
#[derive(Debug)]
pub struct Chunked {
    state: Chunk,
    size: u64,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: Chunk::Size,
            size: 0,
        }
    }
}

impl Chunked {
    /// Whether the terminating zero-size chunk was seen.
    pub fn is_done(&self) -> bool {
        self.state == Chunk::Done
    }

    /// Feeds body bytes; calls `out` with the decoded data.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        out: &mut impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        while !input.is_empty() {
            if self.state == Chunk::Data {
                let n = (self.size as usize).min(input.len());
                out(&input[..n])?;
                input = &input[n..];
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = Chunk::DataCr;
                }
                continue;
            }
            let c = input[0];
            input = &input[1..];
            self.state = match (self.state, c) {
                (Chunk::Size, b'\r') => Chunk::SizeLf,
                (Chunk::Size, b';' | b' ') => Chunk::Ext,
                (Chunk::Size, c) => {
                    let d = (c as char)
                        .to_digit(16)
                        .ok_or_else(|| format!("protocol: bad chunk size byte {c:#x}"))?;
                    if self.size > u64::from(u32::MAX) {
                        return Err("protocol: chunk too large".into());
                    }
                    self.size = self.size * 16 + u64::from(d);
                    Chunk::Size
                }
                (Chunk::Ext, b'\r') => Chunk::SizeLf,
                (Chunk::Ext, _) => Chunk::Ext,
                (Chunk::SizeLf, b'\n') if self.size == 0 => Chunk::Done,
                (Chunk::SizeLf, b'\n') => Chunk::Data,
                (Chunk::DataCr, b'\r') => Chunk::DataLf,
                (Chunk::DataLf, b'\n') => Chunk::Size,
                (Chunk::Done, _) => return Ok(()),
                (state, c) => {
                    return Err(format!("protocol: chunked {state:?}: unexpected {c:#x}"));
                }
            };
        }
        Ok(())
    }
}

/// A WebSocket control frame a player must react to.
#[derive(Debug)]
pub enum Control {
    /// Close frame: code and reason.
    Close(u16, String),
    /// Ping with its payload (answer with a pong).
    Ping(Vec<u8>),
}

/// Incremental decoder of server-to-client WebSocket frames (unmasked).
#[derive(Debug, Default)]
pub struct WsDecoder {
    hdr: [u8; 14],
    have: usize,
    need: usize,
    remaining: u64,
    opcode: u8,
    in_payload: bool,
    ctrl: Vec<u8>,
    /// Control frames seen, for the caller to drain.
    pub controls: Vec<Control>,
}

impl WsDecoder {
    /// Feeds socket bytes; calls `out` with data-frame payload bytes.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        out: &mut impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        while !input.is_empty() {
            if self.in_payload {
                let n = (self.remaining as usize).min(input.len());
                if self.opcode >= 8 {
                    self.ctrl.extend_from_slice(&input[..n]);
                } else {
                    out(&input[..n])?;
                }
                input = &input[n..];
                self.remaining -= n as u64;
                if self.remaining == 0 {
                    self.end_frame();
                }
                continue;
            }
            if self.need == 0 {
                self.need = 2;
            }
            let n = (self.need - self.have).min(input.len());
            self.hdr[self.have..self.have + n].copy_from_slice(&input[..n]);
            self.have += n;
            input = &input[n..];
            if self.have < self.need {
                continue;
            }
            if self.have == 2 {
                if self.hdr[1] & 0x80 != 0 {
                    return Err("protocol: masked frame from the server".into());
                }
                let extra = match self.hdr[1] & 0x7f {
                    126 => 2,
                    127 => 8,
                    _ => 0,
                };
                if extra > 0 {
                    self.need = 2 + extra;
                    continue;
                }
            }
            let len = match self.hdr[1] & 0x7f {
                126 => u64::from(u16::from_be_bytes([self.hdr[2], self.hdr[3]])),
                127 => u64::from_be_bytes(self.hdr[2..10].try_into().expect("8 bytes")),
                n => u64::from(n),
            };
            self.opcode = self.hdr[0] & 0x0f;
            if !matches!(self.opcode, 0 | 1 | 2 | 8 | 9 | 10) {
                return Err(format!("protocol: WebSocket opcode {}", self.opcode));
            }
            self.remaining = len;
            self.in_payload = true;
            self.ctrl.clear();
            if len == 0 {
                self.end_frame();
            }
        }
        Ok(())
    }

    fn end_frame(&mut self) {
        match self.opcode {
            8 => {
                let code = if self.ctrl.len() >= 2 {
                    u16::from_be_bytes([self.ctrl[0], self.ctrl[1]])
                } else {
                    1005
                };
                let reason =
                    String::from_utf8_lossy(self.ctrl.get(2..).unwrap_or(&[])).into_owned();
                self.controls.push(Control::Close(code, reason));
            }
            9 => self
                .controls
                .push(Control::Ping(std::mem::take(&mut self.ctrl))),
            _ => {}
        }
        self.in_payload = false;
        self.have = 0;
        self.need = 2;
    }
}

/// A masked client frame (pong or close) with an all-zero mask (any key is valid).
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len().min(125);
    let mut f = vec![0x80 | opcode, 0x80 | len as u8, 0, 0, 0, 0];
    f.extend_from_slice(&payload[..len]);
    f
}

/// Header of an unmasked binary frame of `len` bytes; returns it and its length.
pub fn ws_binary_header(len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x82;
    if len < 126 {
        h[1] = len as u8;
        (h, 2)
    } else if len <= 0xffff {
        h[1] = 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        (h, 4)
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 10)
    }
}

/// Finds the end of an HTTP head (`\r\n\r\n`); returns the index after it.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// A header value from an HTTP head (case-insensitive name).
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Checks the decoders on every split of a small stream (`load self-test`).
pub fn self_test() -> Result<(), String> {
    let mut flv = b"FLV\x01\x05\0\0\0\x09\0\0\0\0".to_vec();
    let tag = flv::Tag::new(
        flv::TagType::Video,
        70_000,
        bytes::Bytes::from_static(&[0x17, 1, 9, 9, 9]),
    );
    tag.write_to(&mut flv);
    let mut http = format!("{:x}\r\n", flv.len()).into_bytes();
    http.extend_from_slice(&flv);
    http.extend_from_slice(b"\r\n0\r\n\r\n");
    for split in 1..http.len() {
        let mut c = Chunked::default();
        let mut s = FlvScanner::default();
        let mut tags = Vec::new();
        for part in http.chunks(split) {
            c.feed(part, &mut |d| s.feed(d, &mut |t| tags.push(*t)))?;
        }
        let ok = c.is_done()
            && tags.len() == 1
            && tags[0].timestamp == 70_000
            && tags[0].keyframe
            && !tags[0].seq
            && tags[0].wire_len as usize == tag.encoded_len();
        if !ok {
            return Err(format!(
                "chunked/FLV decode failed at split {split}: {tags:?}"
            ));
        }
    }
    let (h, n) = ws_binary_header(flv.len());
    let mut ws = h[..n].to_vec();
    ws.extend_from_slice(&flv);
    ws.extend_from_slice(&[0x88, 4, 0x03, 0xe8, b'o', b'k']);
    for split in 1..ws.len() {
        let mut d = WsDecoder::default();
        let mut s = FlvScanner::default();
        let mut count = 0;
        for part in ws.chunks(split) {
            d.feed(part, &mut |x| s.feed(x, &mut |_| count += 1))?;
        }
        if count != 1 || !matches!(&d.controls[..], [Control::Close(1000, r)] if r == "ok") {
            return Err(format!("WebSocket decode failed at split {split}"));
        }
    }
    for len in [0, 125, 126, 65_535, 65_536] {
        let (h, n) = ws_binary_header(len);
        let mut frame = h[..n].to_vec();
        frame.resize(n + len, 0);
        let mut d = WsDecoder::default();
        let mut got = 0;
        d.feed(&frame, &mut |x| {
            got += x.len();
            Ok(())
        })?;
        if got != len {
            return Err(format!("WebSocket frame of {len} bytes decoded as {got}"));
        }
    }
    Ok(())
}
