//! Script data tags: `onMetaData` and the `@setDataFrame` wrapper.
//!
//! Decoding uses a small bounded AMF0 reader of this crate rather than
//! `amf::amf0::Value::read_from`, because that one trusts length fields (a 5-byte long
//! string header makes it allocate 4 GiB) and recurses without limit. Values are
//! still returned as [`amf::amf0::Value`].

use amf::Pair;
use amf::amf0::Value;
use bytes::{BufMut, Bytes, BytesMut};

use crate::Error;

/// Most values (of any nesting level) one script tag may contain. A real
/// `onMetaData` has tens; a file's keyframe index a few thousand. Each decoded value
/// costs ~100 bytes, so this bounds the memory one hostile tag can make us allocate
/// to about 10 MB.
pub const MAX_VALUES: usize = 100_000;
/// Deepest nesting of objects/arrays accepted (bounds recursion).
pub const MAX_DEPTH: usize = 32;

const SET_DATA_FRAME: &[u8] = b"@setDataFrame";
const ON_META_DATA: &[u8] = b"onMetaData";
/// `@setDataFrame` as an AMF0 string: marker, u16 length, bytes.
const SET_DATA_FRAME_AMF: &[u8] = b"\x02\x00\x0d@setDataFrame";

mod marker {
    pub const NUMBER: u8 = 0x00;
    pub const BOOLEAN: u8 = 0x01;
    pub const STRING: u8 = 0x02;
    pub const OBJECT: u8 = 0x03;
    pub const NULL: u8 = 0x05;
    pub const UNDEFINED: u8 = 0x06;
    pub const REFERENCE: u8 = 0x07;
    pub const ECMA_ARRAY: u8 = 0x08;
    pub const OBJECT_END: u8 = 0x09;
    pub const STRICT_ARRAY: u8 = 0x0A;
    pub const DATE: u8 = 0x0B;
    pub const LONG_STRING: u8 = 0x0C;
    pub const XML_DOCUMENT: u8 = 0x0F;
    pub const TYPED_OBJECT: u8 = 0x10;
    pub const AVMPLUS: u8 = 0x11;
}

/// A decoded `onMetaData`: the common fields typed, and every property in order.
///
/// The typed fields are a read-only summary of `properties`; [`Metadata::encode`]
/// writes `properties` only. Codec ids are kept as `f64`: legacy ids (7 = AVC,
/// 10 = AAC) or, with Enhanced RTMP, a FourCC as a number (`hvc1` = 0x68766331).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata {
    /// `width` in pixels.
    pub width: Option<f64>,
    /// `height` in pixels.
    pub height: Option<f64>,
    /// `framerate` (or `videoframerate`), frames per second.
    pub framerate: Option<f64>,
    /// `videocodecid`.
    pub video_codec_id: Option<f64>,
    /// `audiocodecid`.
    pub audio_codec_id: Option<f64>,
    /// `videodatarate`, kbit/s.
    pub video_data_rate: Option<f64>,
    /// `audiodatarate`, kbit/s.
    pub audio_data_rate: Option<f64>,
    /// `audiosamplerate`, Hz.
    pub audio_sample_rate: Option<f64>,
    /// `stereo`.
    pub stereo: Option<bool>,
    /// `encoder` (e.g. `Lavf61.7.100`, `obs-output module`).
    pub encoder: Option<String>,
    /// The full object (ECMA array or object) in order.
    pub properties: Vec<(String, Value)>,
}

impl Metadata {
    /// Decodes an `onMetaData` script tag body, with or without the `@setDataFrame`
    /// wrapper. A body that names `onMetaData` but has no object after it (seen from
    /// some RTMP publishers) gives empty metadata. Errors carry the offset inside
    /// `body`.
    pub fn parse(body: &[u8]) -> Result<Metadata, Error> {
        let mut r = Reader::new(body);
        let mut name = r.name()?;
        if name == SET_DATA_FRAME {
            name = r.name()?;
        }
        if name != ON_META_DATA {
            return Err(Error::Script {
                offset: 0,
                reason: "not an onMetaData tag",
            });
        }
        if r.at_end() {
            return Ok(Metadata::default());
        }
        let start = r.pos;
        let properties = match r.value(0)? {
            Value::EcmaArray { entries } | Value::Object { entries, .. } => entries,
            _ => {
                return Err(Error::Script {
                    offset: start as u64,
                    reason: "onMetaData value is not an object or ECMA array",
                });
            }
        };
        Ok(Metadata::from_properties(
            properties.into_iter().map(|p| (p.key, p.value)).collect(),
        ))
    }

    /// Builds the typed summary from a property list.
    pub fn from_properties(properties: Vec<(String, Value)>) -> Metadata {
        let get = |key: &str| properties.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        let num = |key: &str| get(key).and_then(Value::try_as_f64);
        Metadata {
            width: num("width"),
            height: num("height"),
            framerate: num("framerate").or_else(|| num("videoframerate")),
            video_codec_id: num("videocodecid"),
            audio_codec_id: num("audiocodecid"),
            video_data_rate: num("videodatarate"),
            audio_data_rate: num("audiodatarate"),
            audio_sample_rate: num("audiosamplerate"),
            stereo: match get("stereo") {
                Some(Value::Boolean(b)) => Some(*b),
                _ => None,
            },
            encoder: get("encoder")
                .and_then(Value::try_as_str)
                .map(str::to_owned),
            properties,
        }
    }

    /// Whether the metadata announces a video track (`videocodecid`, `width` or
    /// `height` present).
    pub fn has_video(&self) -> bool {
        self.video_codec_id.is_some() || self.width.is_some() || self.height.is_some()
    }

    /// Whether the metadata announces an audio track (`audiocodecid` or
    /// `audiosamplerate` present).
    pub fn has_audio(&self) -> bool {
        self.audio_codec_id.is_some() || self.audio_sample_rate.is_some()
    }

    /// Encodes a plain script tag body: the string `onMetaData` and an ECMA array of
    /// `properties` (no `@setDataFrame`). Keys longer than 65535 bytes cannot be
    /// written in AMF0 and are skipped.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64 + self.properties.len() * 24);
        write_value_str(&mut out, "onMetaData");
        out.put_u8(marker::ECMA_ARRAY);
        let count = self
            .properties
            .iter()
            .filter(|(k, _)| k.len() <= 0xFFFF)
            .count();
        out.put_u32(u32::try_from(count).unwrap_or(u32::MAX));
        write_pairs(
            &mut out,
            self.properties.iter().map(|(k, v)| (k.as_str(), v)),
        );
        out.freeze()
    }
}

/// Whether a script tag body is `onMetaData` (or `@setDataFrame` + `onMetaData`).
/// Looks at the leading AMF0 strings only; allocates nothing.
pub fn is_metadata(body: &[u8]) -> bool {
    let Some((first, next)) = amf_str(body, 0) else {
        return false;
    };
    if first == ON_META_DATA {
        return true;
    }
    first == SET_DATA_FRAME && amf_str(body, next).is_some_and(|(s, _)| s == ON_META_DATA)
}

/// Removes a leading AMF0 `@setDataFrame` string (what RTMP publishers wrap
/// `onMetaData` in), returning the rest as a zero-copy slice; any other body is returned
/// unchanged. Never panics: `@setDataFrame` with nothing after it gives an empty body.
pub fn strip_set_data_frame(body: Bytes) -> Bytes {
    if body.starts_with(SET_DATA_FRAME_AMF) {
        body.slice(SET_DATA_FRAME_AMF.len()..)
    } else {
        body
    }
}

/// Decodes every AMF0 value in `body`, in order: what an RTMP command or data message
/// carries (`"connect", 1.0, {app: ...}`). Bounded like the script tag reader: at most
/// [`MAX_VALUES`] values in all and [`MAX_DEPTH`] levels of nesting, and nothing is
/// allocated for a count or a length before the bytes it announces are present
/// (a strict array announcing 2^32 elements in a 30-byte message is an error, not an
/// allocation). Errors carry the offset inside `body`.
pub fn read_values(body: &[u8]) -> Result<Vec<Value>, Error> {
    let mut r = Reader::new(body);
    let mut values = Vec::new();
    while !r.at_end() {
        values.push(r.value(0)?);
    }
    Ok(values)
}

/// An AMF0 short string at `pos`: its bytes and the position after it.
fn amf_str(body: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    if *body.get(pos)? != marker::STRING {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([
        *body.get(pos + 1)?,
        *body.get(pos + 2)?,
    ]));
    let start = pos + 3;
    Some((body.get(start..start + len)?, start + len))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    values: usize,
}

fn script_err(offset: usize, reason: &'static str) -> Error {
    Error::Script {
        offset: offset as u64,
        reason,
    }
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            values: 0,
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| script_err(self.pos, "truncated value"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Error> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f64(&mut self) -> Result<f64, Error> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(f64::from_be_bytes(a))
    }

    fn utf8(&mut self, len: usize) -> Result<String, Error> {
        // `take` checks the length against the input before anything is allocated.
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }

    /// The tag name: an AMF0 string value.
    fn name(&mut self) -> Result<&'a [u8], Error> {
        let at = self.pos;
        if self.u8()? != marker::STRING {
            return Err(script_err(
                at,
                "script tag does not start with a name string",
            ));
        }
        let len = usize::from(self.u16()?);
        self.take(len)
    }

    fn value(&mut self, depth: usize) -> Result<Value, Error> {
        let at = self.pos;
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(script_err(at, "too many values"));
        }
        let m = self.u8()?;
        Ok(match m {
            marker::NUMBER => Value::Number(self.f64()?),
            marker::BOOLEAN => Value::Boolean(self.u8()? != 0),
            marker::STRING => {
                let len = usize::from(self.u16()?);
                Value::String(self.utf8(len)?)
            }
            marker::LONG_STRING => {
                let len = self.u32()? as usize;
                Value::String(self.utf8(len)?)
            }
            marker::XML_DOCUMENT => {
                let len = self.u32()? as usize;
                Value::XmlDocument(self.utf8(len)?)
            }
            marker::NULL => Value::Null,
            marker::UNDEFINED => Value::Undefined,
            marker::OBJECT => Value::Object {
                class_name: None,
                entries: self.pairs(depth + 1)?,
            },
            marker::TYPED_OBJECT => {
                let len = usize::from(self.u16()?);
                let class_name = Some(self.utf8(len)?);
                Value::Object {
                    class_name,
                    entries: self.pairs(depth + 1)?,
                }
            }
            marker::ECMA_ARRAY => {
                // The count is advisory (often wrong); the end marker terminates.
                let _count = self.u32()?;
                Value::EcmaArray {
                    entries: self.pairs(depth + 1)?,
                }
            }
            marker::STRICT_ARRAY => {
                let count = self.u32()? as usize;
                if depth + 1 > MAX_DEPTH {
                    return Err(script_err(at, "nested too deeply"));
                }
                // Every value takes at least one byte: a count beyond the remaining
                // input is a lie, caught before allocating.
                if count > self.buf.len() - self.pos {
                    return Err(script_err(at, "strict array count exceeds the data"));
                }
                let mut entries = Vec::with_capacity(count.min(1024));
                for _ in 0..count {
                    entries.push(self.value(depth + 1)?);
                }
                Value::Array { entries }
            }
            marker::DATE => {
                let millis = self.f64()?;
                let _time_zone = self.u16()?;
                if !(millis.is_finite() && millis >= 0.0) {
                    return Err(script_err(at, "invalid date"));
                }
                Value::Date {
                    unix_time: std::time::Duration::from_millis(millis as u64),
                    time_zone: 0,
                }
            }
            marker::REFERENCE => return Err(script_err(at, "AMF0 references are not supported")),
            marker::AVMPLUS => return Err(script_err(at, "AMF3 values are not supported")),
            marker::OBJECT_END => return Err(script_err(at, "unexpected object end")),
            _ => return Err(script_err(at, "unknown or unsupported AMF0 marker")),
        })
    }

    /// Key/value pairs up to the empty-key + object-end marker. Input that ends exactly
    /// where a key would start is accepted as the end (some writers omit the marker).
    fn pairs(&mut self, depth: usize) -> Result<Vec<Pair<String, Value>>, Error> {
        if depth > MAX_DEPTH {
            return Err(script_err(self.pos, "nested too deeply"));
        }
        let mut entries = Vec::new();
        loop {
            if self.at_end() {
                return Ok(entries);
            }
            let len = usize::from(self.u16()?);
            if len == 0 && self.buf.get(self.pos) == Some(&marker::OBJECT_END) {
                self.pos += 1;
                return Ok(entries);
            }
            let key = self.utf8(len)?;
            let value = self.value(depth)?;
            entries.push(Pair { key, value });
        }
    }
}

fn write_str_body(out: &mut BytesMut, s: &str) {
    out.put_u16(s.len() as u16);
    out.put_slice(s.as_bytes());
}

fn write_value_str(out: &mut BytesMut, s: &str) {
    if s.len() <= 0xFFFF {
        out.put_u8(marker::STRING);
        write_str_body(out, s);
    } else {
        out.put_u8(marker::LONG_STRING);
        write_long_str(out, s);
    }
}

fn write_long_str(out: &mut BytesMut, s: &str) {
    // AMF0 cannot describe more than 4 GiB; longer strings are cut.
    let len = s.len().min(u32::MAX as usize);
    out.put_u32(len as u32);
    out.put_slice(&s.as_bytes()[..len]);
}

fn write_pairs<'v>(out: &mut BytesMut, pairs: impl Iterator<Item = (&'v str, &'v Value)>) {
    for (k, v) in pairs {
        if k.len() > 0xFFFF {
            continue;
        }
        write_str_body(out, k);
        write_value(out, v);
    }
    out.put_u16(0);
    out.put_u8(marker::OBJECT_END);
}

fn write_value(out: &mut BytesMut, v: &Value) {
    match v {
        Value::Number(n) => {
            out.put_u8(marker::NUMBER);
            out.put_f64(*n);
        }
        Value::Boolean(b) => {
            out.put_u8(marker::BOOLEAN);
            out.put_u8(u8::from(*b));
        }
        Value::String(s) => write_value_str(out, s),
        Value::Object {
            class_name,
            entries,
        } => {
            match class_name {
                Some(c) if c.len() <= 0xFFFF => {
                    out.put_u8(marker::TYPED_OBJECT);
                    write_str_body(out, c);
                }
                _ => out.put_u8(marker::OBJECT),
            }
            write_pairs(out, entries.iter().map(|p| (p.key.as_str(), &p.value)));
        }
        Value::Null => out.put_u8(marker::NULL),
        Value::Undefined => out.put_u8(marker::UNDEFINED),
        Value::EcmaArray { entries } => {
            out.put_u8(marker::ECMA_ARRAY);
            let count = entries.iter().filter(|p| p.key.len() <= 0xFFFF).count();
            out.put_u32(u32::try_from(count).unwrap_or(u32::MAX));
            write_pairs(out, entries.iter().map(|p| (p.key.as_str(), &p.value)));
        }
        Value::Array { entries } => {
            out.put_u8(marker::STRICT_ARRAY);
            out.put_u32(u32::try_from(entries.len()).unwrap_or(u32::MAX));
            for e in entries.iter().take(u32::MAX as usize) {
                write_value(out, e);
            }
        }
        Value::Date {
            unix_time,
            time_zone,
        } => {
            out.put_u8(marker::DATE);
            out.put_f64(unix_time.as_millis() as f64);
            out.put_i16(*time_zone);
        }
        Value::XmlDocument(s) => {
            out.put_u8(marker::XML_DOCUMENT);
            write_long_str(out, s);
        }
        Value::AvmPlus(_) => {
            // Delegate the AMF3 payload to the amf crate; writing to a Vec cannot fail.
            let mut buf = Vec::new();
            if v.write_to(&mut buf).is_ok() {
                out.put_slice(&buf);
            } else {
                out.put_u8(marker::UNDEFINED);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ffmpeg_like_metadata() -> Metadata {
        Metadata::from_properties(vec![
            ("duration".into(), Value::Number(0.0)),
            ("width".into(), Value::Number(640.0)),
            ("height".into(), Value::Number(360.0)),
            ("videodatarate".into(), Value::Number(0.0)),
            ("framerate".into(), Value::Number(25.0)),
            ("videocodecid".into(), Value::Number(7.0)),
            ("audiodatarate".into(), Value::Number(125.0)),
            ("audiosamplerate".into(), Value::Number(44100.0)),
            ("audiosamplesize".into(), Value::Number(16.0)),
            ("stereo".into(), Value::Boolean(false)),
            ("audiocodecid".into(), Value::Number(10.0)),
            ("encoder".into(), Value::String("Lavf59.27.100".into())),
            ("filesize".into(), Value::Number(0.0)),
        ])
    }

    #[test]
    fn encode_parse_round_trip() {
        let m = ffmpeg_like_metadata();
        assert_eq!(m.width, Some(640.0));
        assert_eq!(m.height, Some(360.0));
        assert_eq!(m.framerate, Some(25.0));
        assert_eq!(m.video_codec_id, Some(7.0));
        assert_eq!(m.audio_codec_id, Some(10.0));
        assert_eq!(m.audio_data_rate, Some(125.0));
        assert_eq!(m.video_data_rate, Some(0.0));
        assert_eq!(m.audio_sample_rate, Some(44100.0));
        assert_eq!(m.stereo, Some(false));
        assert_eq!(m.encoder.as_deref(), Some("Lavf59.27.100"));
        assert!(m.has_audio() && m.has_video());
        let body = m.encode();
        assert!(body.starts_with(b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x0d"));
        assert!(body.ends_with(b"\x00\x00\x09"));
        assert!(is_metadata(&body));
        let back = Metadata::parse(&body).unwrap();
        assert_eq!(back, m);
        // Byte-exact re-encoding.
        assert_eq!(back.encode(), body);
        // The amf crate decodes what we write.
        let mut r = &body[..];
        assert_eq!(
            Value::read_from(&mut r).unwrap(),
            Value::String("onMetaData".into())
        );
        match Value::read_from(&mut r).unwrap() {
            Value::EcmaArray { entries } => assert_eq!(entries.len(), 13),
            other => panic!("not an ECMA array: {other:?}"),
        }
    }

    #[test]
    fn all_value_kinds_round_trip() {
        let nested = Value::Object {
            class_name: None,
            entries: vec![Pair {
                key: "filepositions".into(),
                value: Value::Array {
                    entries: vec![Value::Number(1.0), Value::Number(2.0)],
                },
            }],
        };
        let props = vec![
            ("keyframes".to_string(), nested),
            (
                "typed".into(),
                Value::Object {
                    class_name: Some("Cls".into()),
                    entries: vec![Pair {
                        key: "a".into(),
                        value: Value::Null,
                    }],
                },
            ),
            (
                "ecma".into(),
                Value::EcmaArray {
                    entries: vec![Pair {
                        key: "u".into(),
                        value: Value::Undefined,
                    }],
                },
            ),
            (
                "date".into(),
                Value::Date {
                    unix_time: std::time::Duration::from_millis(1_700_000_000_000),
                    time_zone: 0,
                },
            ),
            ("xml".into(), Value::XmlDocument("<a/>".into())),
            ("long".into(), Value::String("x".repeat(70_000))),
            ("t".into(), Value::Boolean(true)),
            (
                "videocodecid".into(),
                Value::Number(f64::from(u32::from_be_bytes(*b"hvc1"))),
            ),
        ];
        let m = Metadata::from_properties(props);
        assert_eq!(m.video_codec_id, Some(1_752_589_105.0));
        let back = Metadata::parse(&m.encode()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn set_data_frame_wrapper() {
        let plain = ffmpeg_like_metadata().encode();
        let mut wrapped = SET_DATA_FRAME_AMF.to_vec();
        wrapped.extend_from_slice(&plain);
        let wrapped = Bytes::from(wrapped);
        assert!(is_metadata(&wrapped));
        assert_eq!(Metadata::parse(&wrapped).unwrap(), ffmpeg_like_metadata());
        let stripped = strip_set_data_frame(wrapped.clone());
        assert_eq!(stripped, plain);
        // Zero-copy: the result points into the same allocation.
        assert_eq!(stripped.as_ptr(), wrapped[16..].as_ptr());
        // Unchanged when there is no wrapper.
        assert_eq!(strip_set_data_frame(plain.clone()), plain);
        // The rml_rtmp case: @setDataFrame and nothing else.
        assert_eq!(
            strip_set_data_frame(Bytes::from_static(SET_DATA_FRAME_AMF)),
            Bytes::new()
        );
        // Truncated wrappers, empty input: unchanged, no panic.
        for n in 0..SET_DATA_FRAME_AMF.len() {
            let b = Bytes::copy_from_slice(&SET_DATA_FRAME_AMF[..n]);
            assert_eq!(strip_set_data_frame(b.clone()), b);
        }
        // @setDataFrame + onMetaData without an object: empty metadata.
        let mut bare = SET_DATA_FRAME_AMF.to_vec();
        bare.extend_from_slice(b"\x02\x00\x0aonMetaData");
        assert_eq!(Metadata::parse(&bare).unwrap(), Metadata::default());
        assert!(is_metadata(&bare));
        assert!(!is_metadata(SET_DATA_FRAME_AMF));
    }

    #[test]
    fn is_metadata_cases() {
        assert!(!is_metadata(b""));
        assert!(!is_metadata(b"\x02\x00\x0aonCuePoint"));
        assert!(!is_metadata(b"\x02\x00\x0aonMetaDat"));
        assert!(!is_metadata(b"\x00\x00\x0aonMetaData"));
        assert!(is_metadata(b"\x02\x00\x0aonMetaData"));
        assert!(!is_metadata(
            b"\x02\x00\x0d@setDataFrame\x02\x00\x0aonTextData"
        ));
    }

    #[test]
    fn object_instead_of_ecma_array_and_missing_end_marker() {
        let mut body = b"\x02\x00\x0aonMetaData\x03".to_vec();
        body.extend_from_slice(b"\x00\x05width\x00");
        body.extend_from_slice(&320f64.to_be_bytes());
        body.extend_from_slice(b"\x00\x00\x09");
        assert_eq!(Metadata::parse(&body).unwrap().width, Some(320.0));
        // Without the end marker, ending on a key boundary.
        body.truncate(body.len() - 3);
        assert_eq!(Metadata::parse(&body).unwrap().width, Some(320.0));
    }

    #[test]
    fn errors_carry_offsets() {
        let err = |body: &[u8]| Metadata::parse(body).unwrap_err();
        assert_eq!(
            err(b""),
            Error::Script {
                offset: 0,
                reason: "truncated value"
            }
        );
        assert_eq!(
            err(b"\x00"),
            Error::Script {
                offset: 0,
                reason: "script tag does not start with a name string"
            }
        );
        assert_eq!(err(b"\x02\x00\x0aonCuePoint\x03\x00\x00\x09").offset(), 0);
        assert_eq!(
            err(b"\x02\x00\x0aonMetaData\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
            Error::Script {
                offset: 13,
                reason: "onMetaData value is not an object or ECMA array"
            }
        );
        // A key whose value is truncated: offset of the value's missing bytes.
        let e = err(b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x01\x00\x01w\x00\x40");
        assert_eq!(
            e,
            Error::Script {
                offset: 22,
                reason: "truncated value"
            }
        );
        let e = err(b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x01\x00\x01w\x07\x00\x00");
        assert_eq!(
            e,
            Error::Script {
                offset: 21,
                reason: "AMF0 references are not supported"
            }
        );
        let e = err(b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x01\x00\x01w\x11\x01");
        assert_eq!(e.offset(), 21);
        let e = err(b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x01\x00\x01w\x0D");
        assert_eq!(
            e,
            Error::Script {
                offset: 21,
                reason: "unknown or unsupported AMF0 marker"
            }
        );
        let e = err(b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x01\x00\x01w\x09");
        assert_eq!(
            e,
            Error::Script {
                offset: 21,
                reason: "unexpected object end"
            }
        );
        let mut date = b"\x02\x00\x0aonMetaData\x03\x00\x01d\x0B".to_vec();
        date.extend_from_slice(&(-1f64).to_be_bytes());
        date.extend_from_slice(&[0, 0]);
        assert_eq!(
            err(&date),
            Error::Script {
                offset: 17,
                reason: "invalid date"
            }
        );
    }

    #[test]
    fn hostile_lengths_do_not_allocate() {
        // A long string claiming 4 GiB: rejected before allocating.
        let e = Metadata::parse(b"\x02\x00\x0aonMetaData\x03\x00\x01s\x0C\xFF\xFF\xFF\xFF abc");
        assert_eq!(
            e,
            Err(Error::Script {
                offset: 22,
                reason: "truncated value"
            })
        );
        // A strict array claiming 4 billion entries.
        let e = Metadata::parse(b"\x02\x00\x0aonMetaData\x03\x00\x01s\x0A\xFF\xFF\xFF\xFF\x05");
        assert_eq!(
            e,
            Err(Error::Script {
                offset: 17,
                reason: "strict array count exceeds the data"
            })
        );
    }

    #[test]
    fn deep_nesting_and_value_count_are_bounded() {
        // 100 000 nested objects: would overflow the stack of a naive recursive decoder.
        let mut body = b"\x02\x00\x0aonMetaData".to_vec();
        for _ in 0..100_000 {
            body.extend_from_slice(b"\x03\x00\x01k");
        }
        let e = Metadata::parse(&body).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Script {
                    reason: "nested too deeply",
                    ..
                }
            ),
            "{e:?}"
        );
        // Nesting within the limit is fine.
        let mut ok = b"\x02\x00\x0aonMetaData".to_vec();
        for _ in 0..MAX_DEPTH - 1 {
            ok.extend_from_slice(b"\x03\x00\x01k");
        }
        ok.push(marker::NULL);
        assert!(Metadata::parse(&ok).is_ok());
        // More than MAX_VALUES nulls in one array.
        let mut many = b"\x02\x00\x0aonMetaData\x03\x00\x01a\x0A".to_vec();
        let n = MAX_VALUES as u32 + 10;
        many.extend_from_slice(&n.to_be_bytes());
        many.resize(many.len() + n as usize, marker::NULL);
        let e = Metadata::parse(&many).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Script {
                    reason: "too many values",
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_not_rejected() {
        let body = b"\x02\x00\x0aonMetaData\x03\x00\x07encoder\x02\x00\x02\xFF\xFE\x00\x00\x09";
        let m = Metadata::parse(body).unwrap();
        assert_eq!(m.encoder.as_deref(), Some("\u{FFFD}\u{FFFD}"));
    }

    #[test]
    fn long_keys_are_skipped_on_encode() {
        let m = Metadata::from_properties(vec![
            ("k".repeat(70_000), Value::Null),
            ("width".into(), Value::Number(2.0)),
        ]);
        let back = Metadata::parse(&m.encode()).unwrap();
        assert_eq!(
            back.properties,
            vec![("width".to_string(), Value::Number(2.0))]
        );
    }

    #[test]
    fn read_values_decodes_a_command_and_refuses_hostile_counts_and_nesting() {
        // "connect", 1.0, { app: "live" }
        let mut body = Vec::new();
        body.extend_from_slice(b"\x02\x00\x07connect");
        body.push(marker::NUMBER);
        body.extend_from_slice(&1.0f64.to_be_bytes());
        body.extend_from_slice(b"\x03\x00\x03app\x02\x00\x04live\x00\x00\x09");
        let values = read_values(&body).unwrap();
        assert_eq!(values.len(), 3);
        assert_eq!(values[0].try_as_str(), Some("connect"));
        assert_eq!(values[1].try_as_f64(), Some(1.0));

        // A strict array announcing 2^32 - 1 elements in a few bytes: an error at
        // once, not a 240 GB allocation.
        let mut hostile = b"\x02\x00\x07connect".to_vec();
        hostile.push(marker::STRICT_ARRAY);
        hostile.extend_from_slice(&u32::MAX.to_be_bytes());
        hostile.extend_from_slice(&[marker::NULL; 16]);
        assert!(read_values(&hostile).is_err());
        // An ECMA array's count is advisory: a huge one with a proper end is fine.
        let mut ecma = vec![marker::ECMA_ARRAY];
        ecma.extend_from_slice(&u32::MAX.to_be_bytes());
        ecma.extend_from_slice(&[0, 0, marker::OBJECT_END]);
        assert_eq!(read_values(&ecma).unwrap().len(), 1);

        // 3,000 nested objects: refused at MAX_DEPTH, no stack overflow.
        let mut deep = Vec::new();
        for _ in 0..3000 {
            deep.extend_from_slice(&[marker::OBJECT, 0, 1, b'k']);
        }
        assert!(read_values(&deep).is_err());
        let mut arrays = Vec::new();
        for _ in 0..3000 {
            arrays.extend_from_slice(&[marker::STRICT_ARRAY, 0, 0, 0, 1]);
        }
        assert!(read_values(&arrays).is_err());
    }
}
