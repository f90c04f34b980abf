//! Codec inspection of audio and video tag bodies: keyframes, sequence headers, codecs.
//!
//! Covers legacy FLV (video codec ids, 7 = AVC, 12 = HEVC as the common extension;
//! audio SoundFormat, AAC packet type) and Enhanced RTMP/FLV v1 and v2 (the ExHeader
//! bit, FourCC codecs, packet types, ModEx prefixes, multitrack). Parsing reads at most a
//! few header bytes, never allocates and returns small `Copy` structs.
//!
//! # Multitrack limits
//! For an Enhanced multitrack tag only the first track is inspected: `codec` and
//! `packet_type` describe that track (the packet type is shared by all tracks anyway
//! unless they have different codecs), and `multitrack` is set. Per-track sizes and
//! the remaining tracks are not parsed.
//!
//! # Beyond the tag header
//! [`AudioConfig`] reads the sample rate and channel count from an audio sequence
//! header (AAC AudioSpecificConfig, Opus ID header, FLAC STREAMINFO), and
//! [`for_browser_players`] says which tags browser players must not receive.

use crate::tag::{Tag, TagType};

/// A video codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    /// H.264 / AVC: legacy codec id 7 or FourCC `avc1`.
    Avc,
    /// H.265 / HEVC: legacy codec id 12 (the common extension) or FourCC `hvc1`.
    Hevc,
    /// AV1: FourCC `av01`.
    Av1,
    /// VP9: FourCC `vp09`.
    Vp9,
    /// VP8: FourCC `vp08`.
    Vp8,
    /// Another legacy codec id (2 Sorenson H.263, 3 screen video, 4 VP6, 5 VP6 alpha,
    /// 6 screen video v2, ...).
    Legacy(u8),
    /// Another Enhanced FourCC (e.g. `vvc1`). An Enhanced command frame, which carries
    /// no FourCC, reports `FourCc([0; 4])`.
    FourCc([u8; 4]),
}

impl VideoCodec {
    /// A short lowercase name for logs and the status API: `h264`, `hevc`, `av1`,
    /// `vp9`, `vp8`, `h263`, `vp6`, `vvc`, ... or `unknown`.
    pub fn name(&self) -> &'static str {
        match self {
            VideoCodec::Avc => "h264",
            VideoCodec::Hevc => "hevc",
            VideoCodec::Av1 => "av1",
            VideoCodec::Vp9 => "vp9",
            VideoCodec::Vp8 => "vp8",
            VideoCodec::Legacy(2) => "h263",
            VideoCodec::Legacy(3) => "screen",
            VideoCodec::Legacy(4) => "vp6",
            VideoCodec::Legacy(5) => "vp6a",
            VideoCodec::Legacy(6) => "screen2",
            VideoCodec::FourCc([b'v', b'v', b'c', b'1']) => "vvc",
            _ => "unknown",
        }
    }

    fn from_legacy(id: u8) -> VideoCodec {
        match id {
            7 => VideoCodec::Avc,
            12 => VideoCodec::Hevc,
            other => VideoCodec::Legacy(other),
        }
    }

    fn from_fourcc(f: [u8; 4]) -> VideoCodec {
        match &f {
            b"avc1" => VideoCodec::Avc,
            b"hvc1" => VideoCodec::Hevc,
            b"av01" => VideoCodec::Av1,
            b"vp09" => VideoCodec::Vp9,
            b"vp08" => VideoCodec::Vp8,
            _ => VideoCodec::FourCc(f),
        }
    }

    /// Whether CodedFrames packets of this codec carry an SI24 composition time.
    fn has_composition_time(&self) -> bool {
        matches!(self, VideoCodec::Avc | VideoCodec::Hevc)
    }
}

/// The video FrameType field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// 1: keyframe (a seekable frame; for AVC an IDR).
    Key,
    /// 2: inter frame.
    Inter,
    /// 3: disposable inter frame (H.263 only).
    DisposableInter,
    /// 4: generated keyframe (server use only).
    Generated,
    /// 5: video info / command frame: no picture.
    Command,
    /// 0, 6 or 7: reserved.
    Other(u8),
}

impl From<u8> for FrameType {
    fn from(v: u8) -> FrameType {
        match v {
            1 => FrameType::Key,
            2 => FrameType::Inter,
            3 => FrameType::DisposableInter,
            4 => FrameType::Generated,
            5 => FrameType::Command,
            other => FrameType::Other(other),
        }
    }
}

/// Video packet type: Enhanced `VideoPacketType`, or legacy `AVCPacketType` mapped onto
/// it (0 sequence header = `SequenceStart`, 1 NALU = `CodedFrames`, 2 end of sequence =
/// `SequenceEnd`). Legacy codecs without a packet type report `CodedFrames`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VideoPacketType {
    /// 0: decoder configuration (AVCDecoderConfigurationRecord, HEVC/AV1/VP9 config).
    SequenceStart,
    /// 1: coded frames (with a composition time for AVC/HEVC).
    CodedFrames,
    /// 2: end of sequence.
    SequenceEnd,
    /// 3: coded frames, composition time implicitly 0.
    CodedFramesX,
    /// 4: AMF metadata about the video (e.g. HDR colour info), no picture.
    Metadata,
    /// 5: decoder configuration for a bitstream carried as in MPEG-2 TS (AV1).
    Mpeg2TsSequenceStart,
    /// 6: multitrack. [`VideoInfo::parse`] reports the first track's packet type
    /// instead (and sets [`VideoInfo::multitrack`]), so this value only comes out of
    /// `VideoPacketType::from(6)`.
    Multitrack,
    /// Reserved values (8-15; 7 = ModEx is resolved by the parser) and unknown
    /// legacy AVCPacketType values.
    Other(u8),
}

impl From<u8> for VideoPacketType {
    fn from(v: u8) -> VideoPacketType {
        match v {
            0 => VideoPacketType::SequenceStart,
            1 => VideoPacketType::CodedFrames,
            2 => VideoPacketType::SequenceEnd,
            3 => VideoPacketType::CodedFramesX,
            4 => VideoPacketType::Metadata,
            5 => VideoPacketType::Mpeg2TsSequenceStart,
            6 => VideoPacketType::Multitrack,
            other => VideoPacketType::Other(other),
        }
    }
}

/// What the first bytes of a video tag body say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VideoInfo {
    /// Frame type.
    pub frame_type: FrameType,
    /// Codec (see [`VideoCodec`] for command frames).
    pub codec: VideoCodec,
    /// Packet type.
    pub packet_type: VideoPacketType,
    /// Composition time offset (PTS - DTS) in ms for AVC/HEVC coded frames, else 0.
    pub composition_time: i32,
    /// The Enhanced RTMP ExHeader bit was set.
    pub enhanced: bool,
    /// An Enhanced multitrack tag; the other fields describe its first track.
    pub multitrack: bool,
}

/// Reads an Enhanced packet type, resolving ModEx (7) prefixes: returns the real packet
/// type and the position after the last ModEx trailer byte.
fn resolve_mod_ex(body: &[u8], mut packet_type: u8, mut pos: usize) -> Option<(u8, usize)> {
    const MOD_EX: u8 = 7;
    while packet_type == MOD_EX {
        let mut size = usize::from(*body.get(pos)?) + 1;
        pos += 1;
        if size == 256 {
            let hi = *body.get(pos)?;
            let lo = *body.get(pos + 1)?;
            size = usize::from(u16::from_be_bytes([hi, lo])) + 1;
            pos += 2;
        }
        pos += size;
        packet_type = *body.get(pos)? & 0x0F;
        pos += 1;
    }
    Some((packet_type, pos))
}

fn fourcc(body: &[u8], pos: usize) -> Option<[u8; 4]> {
    body.get(pos..pos + 4)?.try_into().ok()
}

fn si24(b: &[u8]) -> Option<i32> {
    let b = b.get(..3)?;
    // Sign-extend 24 bits.
    Some(i32::from_be_bytes([b[0], b[1], b[2], 0]) >> 8)
}

/// Multitrack layout (shared by audio and video): after the packet-type byte comes
/// `multitrackType UB[4] | packetType UB[4]`, then a FourCC unless every track has its
/// own (type 2), then per track: [FourCC], trackId UI8, [size UI24 unless OneTrack].
/// Returns (inner packet type, fourcc of the first track, position of its payload).
fn multitrack_first(body: &[u8], pos: usize) -> Option<(u8, [u8; 4], usize)> {
    const ONE_TRACK: u8 = 0;
    let b = *body.get(pos)?;
    let (mt_type, packet_type) = (b >> 4, b & 0x0F);
    let mut pos = pos + 1;
    // Shared FourCC, or for ManyTracksManyCodecs (2) the first track's own: either way
    // the next 4 bytes name the first track's codec.
    let fourcc = fourcc(body, pos)?;
    pos += 4;
    pos += 1; // trackId
    if mt_type != ONE_TRACK {
        pos += 3; // sizeOfTrack
    }
    if pos > body.len() {
        return None;
    }
    Some((packet_type, fourcc, pos))
}

impl VideoInfo {
    /// Parses the video tag header at the start of a video tag body.
    ///
    /// `None` if the body is too short for the fields its first byte announces (e.g. an
    /// AVC tag without AVCPacketType and composition time, an Enhanced tag without its
    /// FourCC).
    pub fn parse(body: &[u8]) -> Option<VideoInfo> {
        let b0 = *body.first()?;
        let enhanced = b0 & 0x80 != 0;
        if !enhanced {
            let frame_type = FrameType::from((b0 >> 4) & 0x07);
            let codec = VideoCodec::from_legacy(b0 & 0x0F);
            if frame_type == FrameType::Command {
                // UI8 command follows; no AVCPacketType.
                return Some(VideoInfo {
                    frame_type,
                    codec,
                    packet_type: VideoPacketType::CodedFrames,
                    composition_time: 0,
                    enhanced,
                    multitrack: false,
                });
            }
            let (packet_type, composition_time) = match codec {
                VideoCodec::Avc | VideoCodec::Hevc => {
                    let pt = VideoPacketType::from(*body.get(1)?);
                    let pt = match pt {
                        VideoPacketType::SequenceStart
                        | VideoPacketType::CodedFrames
                        | VideoPacketType::SequenceEnd => pt,
                        _ => VideoPacketType::Other(body[1]),
                    };
                    let ct = si24(body.get(2..)?)?;
                    let ct = if pt == VideoPacketType::CodedFrames {
                        ct
                    } else {
                        0
                    };
                    (pt, ct)
                }
                _ => (VideoPacketType::CodedFrames, 0),
            };
            return Some(VideoInfo {
                frame_type,
                codec,
                packet_type,
                composition_time,
                enhanced,
                multitrack: false,
            });
        }

        const MULTITRACK: u8 = 6;
        let frame_type = FrameType::from((b0 >> 4) & 0x07);
        let (mut packet_type, mut pos) = resolve_mod_ex(body, b0 & 0x0F, 1)?;
        if frame_type == FrameType::Command && packet_type != 4 {
            // videoCommand UI8, no FourCC.
            body.get(pos)?;
            return Some(VideoInfo {
                frame_type,
                codec: VideoCodec::FourCc([0; 4]),
                packet_type: VideoPacketType::from(packet_type),
                composition_time: 0,
                enhanced,
                multitrack: false,
            });
        }
        let multitrack = packet_type == MULTITRACK;
        let codec;
        if multitrack {
            let (pt, f, p) = multitrack_first(body, pos)?;
            packet_type = pt;
            codec = VideoCodec::from_fourcc(f);
            pos = p;
        } else {
            codec = VideoCodec::from_fourcc(fourcc(body, pos)?);
            pos += 4;
        }
        let packet_type = VideoPacketType::from(packet_type);
        let composition_time =
            if packet_type == VideoPacketType::CodedFrames && codec.has_composition_time() {
                si24(body.get(pos..)?)?
            } else {
                0
            };
        Some(VideoInfo {
            frame_type,
            codec,
            packet_type,
            composition_time,
            enhanced,
            multitrack,
        })
    }

    /// A keyframe carrying coded picture data: frame type Key (1) and packet type
    /// CodedFrames or CodedFramesX. Sequence headers, sequence ends, metadata and
    /// command frames are not keyframes; generated keyframes (4) are not either (they
    /// are a server-side seeking artefact, not something a decoder can start from).
    pub fn is_keyframe(&self) -> bool {
        self.frame_type == FrameType::Key
            && matches!(
                self.packet_type,
                VideoPacketType::CodedFrames | VideoPacketType::CodedFramesX
            )
    }

    /// Decoder configuration a player needs before any frame: packet type SequenceStart
    /// or MPEG2TSSequenceStart (never for command frames).
    pub fn is_sequence_header(&self) -> bool {
        self.frame_type != FrameType::Command
            && matches!(
                self.packet_type,
                VideoPacketType::SequenceStart | VideoPacketType::Mpeg2TsSequenceStart
            )
    }
}

/// An audio codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    /// AAC: SoundFormat 10 or FourCC `mp4a`.
    Aac,
    /// MP3: SoundFormat 2 or 14 (8 kHz), or FourCC `.mp3`.
    Mp3,
    /// Opus: FourCC `Opus`.
    Opus,
    /// FLAC: FourCC `fLaC`.
    Flac,
    /// AC-3: FourCC `ac-3`.
    Ac3,
    /// E-AC-3: FourCC `ec-3`.
    Eac3,
    /// Linear PCM: SoundFormat 0 (platform endian) or 3 (little endian).
    Pcm,
    /// Speex: SoundFormat 11.
    Speex,
    /// Another legacy SoundFormat (1 ADPCM, 4-6 Nellymoser, 7 G.711 A-law, 8 G.711
    /// mu-law, 15 device-specific, ...).
    Legacy(u8),
    /// Another Enhanced FourCC.
    FourCc([u8; 4]),
}

impl AudioCodec {
    /// A short lowercase name for logs and the status API: `aac`, `mp3`, `opus`,
    /// `flac`, `ac3`, `eac3`, `pcm`, `speex`, `adpcm`, `nellymoser`, `pcm_alaw`,
    /// `pcm_mulaw` or `unknown`.
    pub fn name(&self) -> &'static str {
        match self {
            AudioCodec::Aac => "aac",
            AudioCodec::Mp3 => "mp3",
            AudioCodec::Opus => "opus",
            AudioCodec::Flac => "flac",
            AudioCodec::Ac3 => "ac3",
            AudioCodec::Eac3 => "eac3",
            AudioCodec::Pcm => "pcm",
            AudioCodec::Speex => "speex",
            AudioCodec::Legacy(1) => "adpcm",
            AudioCodec::Legacy(4..=6) => "nellymoser",
            AudioCodec::Legacy(7) => "pcm_alaw",
            AudioCodec::Legacy(8) => "pcm_mulaw",
            _ => "unknown",
        }
    }

    fn from_legacy(format: u8) -> AudioCodec {
        match format {
            10 => AudioCodec::Aac,
            2 | 14 => AudioCodec::Mp3,
            0 | 3 => AudioCodec::Pcm,
            11 => AudioCodec::Speex,
            other => AudioCodec::Legacy(other),
        }
    }

    fn from_fourcc(f: [u8; 4]) -> AudioCodec {
        match &f {
            b"mp4a" => AudioCodec::Aac,
            b".mp3" => AudioCodec::Mp3,
            b"Opus" => AudioCodec::Opus,
            b"fLaC" => AudioCodec::Flac,
            b"ac-3" => AudioCodec::Ac3,
            b"ec-3" => AudioCodec::Eac3,
            _ => AudioCodec::FourCc(f),
        }
    }
}

/// Audio packet type: Enhanced `AudioPacketType`, or legacy `AACPacketType` mapped onto
/// it (0 = `SequenceStart`, 1 = `CodedFrames`). Legacy formats without a packet type
/// report `CodedFrames`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AudioPacketType {
    /// 0: decoder configuration (AudioSpecificConfig, Opus ID header, FLAC STREAMINFO).
    SequenceStart,
    /// 1: coded frames.
    CodedFrames,
    /// 2: end of sequence.
    SequenceEnd,
    /// 4: channel layout of a multichannel stream.
    MultichannelConfig,
    /// 5: multitrack. [`AudioInfo::parse`] reports the first track's packet type
    /// instead (and sets [`AudioInfo::multitrack`]), so this value only comes out of
    /// `AudioPacketType::from(5)`.
    Multitrack,
    /// Reserved values (3, 6, 8-15; 7 = ModEx is resolved by the parser) and unknown
    /// AACPacketType values.
    Other(u8),
}

impl From<u8> for AudioPacketType {
    fn from(v: u8) -> AudioPacketType {
        match v {
            0 => AudioPacketType::SequenceStart,
            1 => AudioPacketType::CodedFrames,
            2 => AudioPacketType::SequenceEnd,
            4 => AudioPacketType::MultichannelConfig,
            5 => AudioPacketType::Multitrack,
            other => AudioPacketType::Other(other),
        }
    }
}

/// What the first bytes of an audio tag body say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AudioInfo {
    /// Codec.
    pub codec: AudioCodec,
    /// Packet type.
    pub packet_type: AudioPacketType,
    /// SoundFormat 9 (Enhanced audio, FourCC follows).
    pub enhanced: bool,
    /// An Enhanced multitrack tag; the other fields describe its first track.
    pub multitrack: bool,
    /// Legacy SoundRate bits (0 = 5.5 kHz, 1 = 11 kHz, 2 = 22 kHz, 3 = 44 kHz; AAC
    /// always says 3 whatever its real rate); `None` for Enhanced audio.
    pub sound_rate: Option<u8>,
    /// Legacy SoundSize bit: 16-bit samples; `None` for Enhanced audio.
    pub sound_16bit: Option<bool>,
    /// Legacy SoundType bit: stereo; `None` for Enhanced audio.
    pub stereo: Option<bool>,
}

impl AudioInfo {
    /// Parses the audio tag header at the start of an audio tag body.
    ///
    /// `None` if the body is too short for the fields its first byte announces (AAC
    /// without AACPacketType, Enhanced audio without its FourCC).
    pub fn parse(body: &[u8]) -> Option<AudioInfo> {
        AudioInfo::parse_with_payload(body).map(|(info, _)| info)
    }

    /// [`AudioInfo::parse`], plus where the packet's payload starts (after the
    /// AACPacketType, the FourCC, or the first track's header). The position may equal
    /// the body length (an empty payload).
    fn parse_with_payload(body: &[u8]) -> Option<(AudioInfo, usize)> {
        const EX_HEADER: u8 = 9;
        const MULTITRACK: u8 = 5;
        let b0 = *body.first()?;
        let format = b0 >> 4;
        if format != EX_HEADER {
            let codec = AudioCodec::from_legacy(format);
            let (packet_type, payload) = if codec == AudioCodec::Aac {
                let pt = match *body.get(1)? {
                    0 => AudioPacketType::SequenceStart,
                    1 => AudioPacketType::CodedFrames,
                    other => AudioPacketType::Other(other),
                };
                (pt, 2)
            } else {
                (AudioPacketType::CodedFrames, 1)
            };
            let info = AudioInfo {
                codec,
                packet_type,
                enhanced: false,
                multitrack: false,
                sound_rate: Some((b0 >> 2) & 0x03),
                sound_16bit: Some(b0 & 0x02 != 0),
                stereo: Some(b0 & 0x01 != 0),
            };
            return Some((info, payload));
        }
        let (mut packet_type, pos) = resolve_mod_ex(body, b0 & 0x0F, 1)?;
        let multitrack = packet_type == MULTITRACK;
        let (codec, payload) = if multitrack {
            let (pt, f, payload) = multitrack_first(body, pos)?;
            packet_type = pt;
            (AudioCodec::from_fourcc(f), payload)
        } else {
            (AudioCodec::from_fourcc(fourcc(body, pos)?), pos + 4)
        };
        let info = AudioInfo {
            codec,
            packet_type: AudioPacketType::from(packet_type),
            enhanced: true,
            multitrack,
            sound_rate: None,
            sound_16bit: None,
            stereo: None,
        };
        Some((info, payload))
    }

    /// Decoder configuration a player needs before any frame: packet type
    /// SequenceStart (AAC AudioSpecificConfig, Opus/FLAC headers) or an Enhanced
    /// MultichannelConfig (channel layout). The [`GopCache`](crate::GopCache) keeps the
    /// two in separate slots (see [`AudioInfo::is_multichannel_config`]).
    pub fn is_sequence_header(&self) -> bool {
        matches!(
            self.packet_type,
            AudioPacketType::SequenceStart | AudioPacketType::MultichannelConfig
        )
    }

    /// An Enhanced MultichannelConfig packet (channel layout, also needed by a player
    /// that joins late).
    pub fn is_multichannel_config(&self) -> bool {
        self.packet_type == AudioPacketType::MultichannelConfig
    }

    /// The legacy SoundRate in Hz (5512, 11025, 22050, 44100), if present.
    pub fn sample_rate_hz(&self) -> Option<u32> {
        self.sound_rate.map(|r| match r {
            0 => 5512,
            1 => 11025,
            2 => 22050,
            _ => 44100,
        })
    }
}

/// Sample rate and channel count as an audio sequence header states them, for a
/// status page when `onMetaData` lacks them (and for legacy AAC, whose tag header
/// always says 44 kHz stereo whatever the stream is).
///
/// Read from the decoder configuration ([`AudioConfig::parse`]):
/// - AAC (legacy SoundFormat 10 or Enhanced `mp4a`): the AudioSpecificConfig's
///   sampling frequency (index or explicit 24-bit value) and channel configuration.
///   With explicit SBR/PS signalling (audio object type 5 or 29) the rate is the
///   extension (output) rate and PS makes a mono configuration stereo, as decoders
///   report them; implicit SBR (signalled only in the bitstream) reports the core rate.
///   Channel configuration 0 (layout in a program config element) gives no channel
///   count.
/// - Opus (Enhanced `Opus`): the `OpusHead` channel count; the sample rate is always
///   48 000 (Opus decodes at 48 kHz; the header's input rate is informational).
/// - FLAC (Enhanced `fLaC`): the STREAMINFO sample rate and channels (with or without
///   the `fLaC` marker and the metadata block header in front).
/// - An Enhanced MultichannelConfig packet: its channel count (no rate).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AudioConfig {
    /// Output sample rate in Hz, when the configuration states it.
    pub sample_rate: Option<u32>,
    /// Channel count, when the configuration states it.
    pub channels: Option<u8>,
}

/// MPEG-4 Audio sampling frequencies by `samplingFrequencyIndex` (13 and 14 are
/// reserved; 15 means an explicit 24-bit value follows).
const MPEG4_SAMPLE_RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// Reads bits most significant first (for the AudioSpecificConfig).
struct BitReader<'a> {
    data: &'a [u8],
    bit: usize,
}

impl BitReader<'_> {
    /// The next `n` (at most 32) bits, or `None` past the end.
    fn bits(&mut self, n: usize) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.bit / 8)?;
            let b = (byte >> (7 - self.bit % 8)) & 1;
            v = (v << 1) | u32::from(b);
            self.bit += 1;
        }
        Some(v)
    }

    /// An MPEG-4 sampling frequency: a 4-bit index, or 15 and an explicit 24-bit value.
    fn sample_rate(&mut self) -> Option<Option<u32>> {
        let index = self.bits(4)?;
        Some(match index {
            15 => Some(self.bits(24)?).filter(|&r| r > 0),
            i => MPEG4_SAMPLE_RATES.get(i as usize).copied(),
        })
    }
}

impl AudioConfig {
    /// Reads an audio tag body that is a sequence header (see the type docs for what
    /// each codec gives). `None` if the tag is not a sequence header, its codec has no
    /// configuration read here (MP3, PCM, AC-3, ...: see
    /// [`AudioInfo::sample_rate_hz`] for the legacy tag header's rate), or the
    /// configuration is truncated or malformed.
    pub fn parse(body: &[u8]) -> Option<AudioConfig> {
        let (info, pos) = AudioInfo::parse_with_payload(body)?;
        let payload = body.get(pos..)?;
        match info.packet_type {
            AudioPacketType::MultichannelConfig => {
                // AudioChannelOrder UI8, channelCount UI8, then the mapping.
                let channels = *payload.get(1)?;
                Some(AudioConfig {
                    sample_rate: None,
                    channels: Some(channels).filter(|&c| c > 0),
                })
            }
            AudioPacketType::SequenceStart => match info.codec {
                AudioCodec::Aac => Self::aac(payload),
                AudioCodec::Opus => Self::opus(payload),
                AudioCodec::Flac => Self::flac(payload),
                _ => None,
            },
            _ => None,
        }
    }

    /// AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1).
    fn aac(asc: &[u8]) -> Option<AudioConfig> {
        const SBR: u32 = 5;
        const PS: u32 = 29;
        let mut r = BitReader { data: asc, bit: 0 };
        let mut object_type = r.bits(5)?;
        if object_type == 31 {
            object_type = 32 + r.bits(6)?;
        }
        let mut sample_rate = r.sample_rate()?;
        let config = r.bits(4)?;
        let mut channels = match config {
            1..=6 => Some(config as u8),
            7 | 12 | 14 => Some(8),
            11 => Some(7),
            13 => Some(24),
            _ => None, // 0: program config element; 8-10, 15: reserved
        };
        if object_type == SBR || object_type == PS {
            // Explicit SBR: the extension sampling frequency is the output rate.
            if let Some(rate) = r.sample_rate()? {
                sample_rate = Some(rate);
            }
            if object_type == PS && config == 1 {
                channels = Some(2);
            }
        }
        Some(AudioConfig {
            sample_rate,
            channels,
        })
    }

    /// `OpusHead` identification header (RFC 7845 5.1): magic, version, channel count.
    fn opus(head: &[u8]) -> Option<AudioConfig> {
        if head.get(..8)? != b"OpusHead" {
            return None;
        }
        let channels = *head.get(9)?;
        Some(AudioConfig {
            sample_rate: Some(48_000),
            channels: Some(channels).filter(|&c| c > 0),
        })
    }

    /// FLAC STREAMINFO, optionally behind the `fLaC` marker and its metadata block
    /// header (type 0, length 34).
    fn flac(mut data: &[u8]) -> Option<AudioConfig> {
        if let Some(rest) = data.strip_prefix(b"fLaC") {
            data = rest;
        }
        if let [kind, 0, 0, 34, rest @ ..] = data
            && kind & 0x7F == 0
        {
            data = rest;
        }
        // min/max block size (2+2), min/max frame size (3+3), then 20 bits of sample
        // rate, 3 bits of channels - 1.
        let b = data.get(10..13)?;
        let rate = (u32::from(b[0]) << 12) | (u32::from(b[1]) << 4) | (u32::from(b[2]) >> 4);
        let channels = ((b[2] >> 1) & 0x07) + 1;
        Some(AudioConfig {
            sample_rate: Some(rate).filter(|&r| r > 0),
            channels: Some(channels),
        })
    }
}

/// Whether a tag may go to browser players. mpegts.js 1.8 treats some tags that carry
/// nothing it needs as a fatal error and stops playing (flv.js 1.6 plays no Enhanced
/// FLV at all, and skips unknown tag types). `false` for:
///
/// - a tag of unknown type (neither audio, video nor script data): no player can use
///   it;
/// - an Enhanced audio **MultichannelConfig** packet (AudioPacketType 4), which ffmpeg
///   7+ sends before every Opus and FLAC sequence start: mpegts.js fails with
///   `Invalid video packet type 4`. The channel count is also in the Opus and FLAC
///   headers, so a browser loses nothing;
/// - an Enhanced video **Metadata** packet (VideoPacketType 4, the `colorInfo` HDR
///   description ffmpeg 7+ sends before HEVC, AV1 and VP9 video): mpegts.js fails
///   with the same message. The colour description is also in the bitstream;
/// - an Enhanced video **command frame** (frame type 5 with the ExHeader bit; no
///   picture): mpegts.js reads its command byte as a FourCC and fails with
///   `Unsupported codec`.
///
/// Everything else goes through, including what a browser cannot decode at all
/// (HEVC in flv.js, VP9, AC-3): that is the page's to explain, not a tag to hide.
/// ModEx-prefixed and multitrack packets also go through: they carry media, and
/// dropping them would break the stream for every player.
///
/// A relay that serves browsers and other players the same bytes can drop these
/// tags for everyone: ffmpeg, VLC and GStreamer decode the stream without them (an
/// HDR stream's mastering metadata then comes only from the bitstream).
pub fn for_browser_players(tag: &Tag) -> bool {
    match tag.tag_type {
        TagType::Unknown(_) => false,
        TagType::Audio => !tag.audio().is_some_and(|a| a.is_multichannel_config()),
        TagType::Video => !tag.video().is_some_and(|v| {
            v.enhanced
                && (v.frame_type == FrameType::Command
                    || v.packet_type == VideoPacketType::Metadata)
        }),
        TagType::Script => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn video(body: &[u8]) -> VideoInfo {
        VideoInfo::parse(body).expect("parses")
    }

    fn audio(body: &[u8]) -> AudioInfo {
        AudioInfo::parse(body).expect("parses")
    }

    #[test]
    fn legacy_avc() {
        let seq = video(&[0x17, 0x00, 0, 0, 0, 0x01, 0x64, 0x00, 0x1f]);
        assert_eq!(
            seq,
            VideoInfo {
                frame_type: FrameType::Key,
                codec: VideoCodec::Avc,
                packet_type: VideoPacketType::SequenceStart,
                composition_time: 0,
                enhanced: false,
                multitrack: false,
            }
        );
        assert!(seq.is_sequence_header());
        assert!(!seq.is_keyframe());

        let key = video(&[0x17, 0x01, 0x00, 0x00, 0x50, 0, 0, 0, 1, 0x65]);
        assert!(key.is_keyframe());
        assert!(!key.is_sequence_header());
        assert_eq!(key.composition_time, 80);

        let inter = video(&[0x27, 0x01, 0xFF, 0xFF, 0xD8, 0x41]);
        assert_eq!(inter.frame_type, FrameType::Inter);
        assert_eq!(inter.composition_time, -40, "SI24 is sign-extended");
        assert!(!inter.is_keyframe());

        let eos = video(&[0x17, 0x02, 0, 0, 0]);
        assert_eq!(eos.packet_type, VideoPacketType::SequenceEnd);
        assert!(!eos.is_keyframe() && !eos.is_sequence_header());

        assert_eq!(
            video(&[0x17, 0x09, 0, 0, 0]).packet_type,
            VideoPacketType::Other(9)
        );
        assert_eq!(seq.codec.name(), "h264");
    }

    #[test]
    fn legacy_hevc_codec_id_12() {
        let seq = video(&[0x1C, 0x00, 0, 0, 0, 0x01]);
        assert_eq!(seq.codec, VideoCodec::Hevc);
        assert!(seq.is_sequence_header());
        let key = video(&[0x1C, 0x01, 0, 0, 0x21, 0xAA]);
        assert!(key.is_keyframe());
        assert_eq!(key.composition_time, 0x21);
        assert_eq!(key.codec.name(), "hevc");
    }

    #[test]
    fn legacy_other_codecs_and_commands() {
        let h263 = video(&[0x22, 0xAA]);
        assert_eq!(h263.codec, VideoCodec::Legacy(2));
        assert_eq!(h263.packet_type, VideoPacketType::CodedFrames);
        assert_eq!(h263.codec.name(), "h263");
        assert_eq!(video(&[0x34, 0xAA]).frame_type, FrameType::DisposableInter);
        assert!(
            video(&[0x14]).is_keyframe(),
            "VP6 keyframe needs no extra header"
        );
        assert_eq!(video(&[0x4A]).frame_type, FrameType::Generated);
        assert!(
            !video(&[0x47, 1, 0, 0, 0]).is_keyframe(),
            "generated keyframes excluded"
        );
        assert_eq!(video(&[0x0F]).frame_type, FrameType::Other(0));
        assert_eq!(video(&[0x0F]).codec.name(), "unknown");

        // Command frame (start seek) with AVC: no packet type / CT.
        let cmd = video(&[0x57, 0x00]);
        assert_eq!(cmd.frame_type, FrameType::Command);
        assert!(!cmd.is_keyframe() && !cmd.is_sequence_header());
    }

    #[test]
    fn truncated_video_is_none() {
        assert_eq!(VideoInfo::parse(&[]), None);
        assert_eq!(VideoInfo::parse(&[0x17]), None);
        assert_eq!(VideoInfo::parse(&[0x17, 0x01, 0x00]), None);
        assert_eq!(VideoInfo::parse(&[0x90, b'h', b'v', b'c']), None);
        // hvc1 CodedFrames needs its composition time.
        assert_eq!(VideoInfo::parse(&[0x91, b'h', b'v', b'c', b'1', 0]), None);
        // ModEx with a size running past the end.
        assert_eq!(VideoInfo::parse(&[0x97, 0x05, 1, 2]), None);
        assert_eq!(VideoInfo::parse(&[0x97, 0xFF, 0x01]), None);
        // Multitrack without its track header.
        assert_eq!(
            VideoInfo::parse(&[0x96, 0x00, b'a', b'v', b'0', b'1']),
            None
        );
        // Enhanced command frame without its command byte.
        assert_eq!(VideoInfo::parse(&[0xD1]), None);
    }

    #[test]
    fn enhanced_hevc() {
        // hvc1 SequenceStart, keyframe: HEVCDecoderConfigurationRecord follows.
        let seq = video(&[0x90, b'h', b'v', b'c', b'1', 0x01, 0x01, 0x60]);
        assert_eq!(
            seq,
            VideoInfo {
                frame_type: FrameType::Key,
                codec: VideoCodec::Hevc,
                packet_type: VideoPacketType::SequenceStart,
                composition_time: 0,
                enhanced: true,
                multitrack: false,
            }
        );
        assert!(seq.is_sequence_header() && !seq.is_keyframe());

        let key = video(&[
            0x91, b'h', b'v', b'c', b'1', 0x00, 0x00, 0x28, 0, 0, 0, 5, 0x26,
        ]);
        assert!(key.is_keyframe());
        assert_eq!(key.packet_type, VideoPacketType::CodedFrames);
        assert_eq!(key.composition_time, 40);

        let x = video(&[0xA3, b'h', b'v', b'c', b'1', 0, 0, 0, 5, 0x02]);
        assert_eq!(x.frame_type, FrameType::Inter);
        assert_eq!(x.packet_type, VideoPacketType::CodedFramesX);
        assert_eq!(x.composition_time, 0);
        assert!(!x.is_keyframe());
        assert!(video(&[0x93, b'h', b'v', b'c', b'1', 0xAA]).is_keyframe());

        let end = video(&[0x92, b'h', b'v', b'c', b'1']);
        assert_eq!(end.packet_type, VideoPacketType::SequenceEnd);
        assert!(!end.is_keyframe() && !end.is_sequence_header());
    }

    #[test]
    fn enhanced_av1_vp9_vp8_avc() {
        let av1 = video(&[0x90, b'a', b'v', b'0', b'1', 0x81, 0x08, 0x0C, 0x00]);
        assert_eq!(av1.codec, VideoCodec::Av1);
        assert!(av1.is_sequence_header());
        assert_eq!(av1.codec.name(), "av1");
        let ts = video(&[0x95, b'a', b'v', b'0', b'1', 0x00]);
        assert_eq!(ts.packet_type, VideoPacketType::Mpeg2TsSequenceStart);
        assert!(ts.is_sequence_header());
        // AV1 CodedFrames carries no composition time: the OBU starts right away.
        let av1_key = video(&[0x91, b'a', b'v', b'0', b'1', 0x12, 0x00]);
        assert!(av1_key.is_keyframe());
        assert_eq!(av1_key.composition_time, 0);

        let vp9 = video(&[0x90, b'v', b'p', b'0', b'9', 0x01, 0x00]);
        assert_eq!(vp9.codec, VideoCodec::Vp9);
        assert!(vp9.is_sequence_header());
        assert!(video(&[0x91, b'v', b'p', b'0', b'9', 0x82]).is_keyframe());
        assert!(!video(&[0xA1, b'v', b'p', b'0', b'9', 0x86]).is_keyframe());
        assert_eq!(vp9.codec.name(), "vp9");

        assert_eq!(
            video(&[0x91, b'v', b'p', b'0', b'8', 0]).codec,
            VideoCodec::Vp8
        );
        let avc = video(&[0x91, b'a', b'v', b'c', b'1', 0xFF, 0xFF, 0xFF, 0]);
        assert_eq!(avc.codec, VideoCodec::Avc);
        assert_eq!(avc.composition_time, -1);

        let vvc = video(&[0x90, b'v', b'v', b'c', b'1']);
        assert_eq!(vvc.codec, VideoCodec::FourCc(*b"vvc1"));
        assert_eq!(vvc.codec.name(), "vvc");
        assert_eq!(
            video(&[0x90, b'x', b'y', b'z', b'w']).codec.name(),
            "unknown"
        );
    }

    #[test]
    fn enhanced_metadata_and_command() {
        // Metadata packet (HDR colorInfo): carries a FourCC, is neither key nor header.
        let meta = video(&[0x94, b'h', b'v', b'c', b'1', 0x02, 0x00, 0x09]);
        assert_eq!(meta.packet_type, VideoPacketType::Metadata);
        assert_eq!(meta.codec, VideoCodec::Hevc);
        assert!(!meta.is_keyframe() && !meta.is_sequence_header());
        // Command frame: frame type 5, a command byte, no FourCC.
        let cmd = video(&[0xD1, 0x00]);
        assert_eq!(cmd.frame_type, FrameType::Command);
        assert_eq!(cmd.codec, VideoCodec::FourCc([0; 4]));
        assert!(!cmd.is_keyframe() && !cmd.is_sequence_header());
        // Reserved packet types.
        assert_eq!(
            video(&[0x98, b'h', b'v', b'c', b'1']).packet_type,
            VideoPacketType::Other(8)
        );
    }

    #[test]
    fn enhanced_mod_ex_prefix() {
        // ModEx (7), size 3 (UI8 2 + 1), TimestampOffsetNano, then CodedFrames hvc1.
        let body = [
            0x97, 0x02, 0x00, 0x01, 0x00, 0x01, b'h', b'v', b'c', b'1', 0, 0, 0x10, 0xAA,
        ];
        let v = video(&body);
        assert!(v.is_keyframe());
        assert_eq!(v.codec, VideoCodec::Hevc);
        assert_eq!(v.composition_time, 16);
        // Two chained ModEx, the second with the 16-bit size escape (0xFF => UI16 + 1).
        let mut body = vec![0x97, 0x00, 0xEE, 0x07, 0xFF, 0x00, 0x02];
        body.extend_from_slice(&[1, 2, 3]); // 3 bytes of data
        body.extend_from_slice(&[0x00, b'a', b'v', b'0', b'1']);
        let v = video(&body);
        assert!(v.is_sequence_header());
        assert_eq!(v.codec, VideoCodec::Av1);
    }

    #[test]
    fn enhanced_multitrack() {
        // OneTrack (0), inner CodedFrames (1), shared FourCC, trackId, then the CT.
        let one = video(&[0x96, 0x01, b'h', b'v', b'c', b'1', 0x00, 0, 0, 0x05, 0xAA]);
        assert!(one.multitrack);
        assert_eq!(one.packet_type, VideoPacketType::CodedFrames);
        assert_eq!(one.codec, VideoCodec::Hevc);
        assert_eq!(one.composition_time, 5);
        assert!(one.is_keyframe());
        // ManyTracks (1), SequenceStart, shared av01, trackId 0, size UI24, config...
        let many = video(&[
            0x96, 0x10, b'a', b'v', b'0', b'1', 0x00, 0, 0, 2, 0x81, 0x00,
        ]);
        assert!(many.multitrack && many.is_sequence_header());
        assert_eq!(many.codec, VideoCodec::Av1);
        // ManyTracksManyCodecs (2): per-track FourCC.
        let mixed = video(&[0x96, 0x21, b'v', b'p', b'0', b'9', 0x01, 0, 0, 1, 0x82]);
        assert_eq!(mixed.codec, VideoCodec::Vp9);
        assert!(mixed.is_keyframe());
        // The enum still maps raw value 6.
        assert_eq!(VideoPacketType::from(6), VideoPacketType::Multitrack);
    }

    #[test]
    fn legacy_audio() {
        let seq = audio(&[0xAF, 0x00, 0x12, 0x10]);
        assert_eq!(
            seq,
            AudioInfo {
                codec: AudioCodec::Aac,
                packet_type: AudioPacketType::SequenceStart,
                enhanced: false,
                multitrack: false,
                sound_rate: Some(3),
                sound_16bit: Some(true),
                stereo: Some(true),
            }
        );
        assert!(seq.is_sequence_header());
        assert_eq!(seq.sample_rate_hz(), Some(44100));
        let raw = audio(&[0xAF, 0x01, 0x21, 0x10]);
        assert_eq!(raw.packet_type, AudioPacketType::CodedFrames);
        assert!(!raw.is_sequence_header());
        assert_eq!(audio(&[0xAF, 0x05]).packet_type, AudioPacketType::Other(5));
        assert_eq!(AudioInfo::parse(&[0xAF]), None, "AAC needs its packet type");
        assert_eq!(AudioInfo::parse(&[]), None);

        let mp3 = audio(&[0x2E, 0xFF, 0xFB]);
        assert_eq!(mp3.codec, AudioCodec::Mp3);
        assert_eq!(mp3.packet_type, AudioPacketType::CodedFrames);
        assert_eq!(mp3.stereo, Some(false));
        assert_eq!(mp3.sample_rate_hz(), Some(44100));
        assert_eq!(audio(&[0xE2]).codec, AudioCodec::Mp3);
        assert_eq!(audio(&[0x02]).codec, AudioCodec::Pcm);
        assert_eq!(audio(&[0x32]).codec, AudioCodec::Pcm);
        assert_eq!(audio(&[0xB2]).codec, AudioCodec::Speex);
        assert_eq!(audio(&[0x72]).codec.name(), "pcm_alaw");
        assert_eq!(audio(&[0x82]).codec.name(), "pcm_mulaw");
        assert_eq!(audio(&[0x52]).codec.name(), "nellymoser");
        assert_eq!(audio(&[0x12]).codec.name(), "adpcm");
        assert_eq!(audio(&[0xF2]).codec.name(), "unknown");
        assert_eq!(audio(&[0x02]).sample_rate_hz(), Some(5512));
        assert_eq!(audio(&[0x06]).sample_rate_hz(), Some(11025));
        assert_eq!(audio(&[0x0A]).sample_rate_hz(), Some(22050));
        assert_eq!(seq.codec.name(), "aac");
    }

    #[test]
    fn enhanced_audio() {
        let cases: [(&[u8; 4], AudioCodec, &str); 6] = [
            (b"Opus", AudioCodec::Opus, "opus"),
            (b"fLaC", AudioCodec::Flac, "flac"),
            (b"mp4a", AudioCodec::Aac, "aac"),
            (b"ac-3", AudioCodec::Ac3, "ac3"),
            (b"ec-3", AudioCodec::Eac3, "eac3"),
            (b".mp3", AudioCodec::Mp3, "mp3"),
        ];
        for (fourcc, codec, name) in cases {
            let mut seq = vec![0x90];
            seq.extend_from_slice(fourcc);
            seq.extend_from_slice(b"OpusHead");
            let info = audio(&seq);
            assert_eq!(info.codec, codec);
            assert_eq!(info.codec.name(), name);
            assert!(info.enhanced);
            assert!(info.is_sequence_header());
            assert_eq!(info.sample_rate_hz(), None);
            let mut frame = vec![0x91];
            frame.extend_from_slice(fourcc);
            frame.push(0xFC);
            let info = audio(&frame);
            assert_eq!(info.packet_type, AudioPacketType::CodedFrames);
            assert!(!info.is_sequence_header());
        }
        let mc = audio(&[0x94, b'O', b'p', b'u', b's', 0x01, 0x02]);
        assert_eq!(mc.packet_type, AudioPacketType::MultichannelConfig);
        assert!(mc.is_multichannel_config() && mc.is_sequence_header());
        assert_eq!(
            audio(&[0x92, b'f', b'L', b'a', b'C']).packet_type,
            AudioPacketType::SequenceEnd
        );
        assert_eq!(
            audio(&[0x93, b'f', b'L', b'a', b'C']).packet_type,
            AudioPacketType::Other(3)
        );
        assert_eq!(
            audio(&[0x90, b'a', b'b', b'c', b'd']).codec.name(),
            "unknown"
        );
        assert_eq!(AudioInfo::parse(&[0x90, b'O', b'p', b'u']), None);

        // ModEx then CodedFrames.
        let m = audio(&[0x97, 0x02, 0, 0, 1, 0x01, b'O', b'p', b'u', b's', 0xFC]);
        assert_eq!(m.codec, AudioCodec::Opus);
        assert_eq!(m.packet_type, AudioPacketType::CodedFrames);
        // Multitrack, OneTrack, SequenceStart, Opus, track 0.
        let mt = audio(&[0x95, 0x00, b'O', b'p', b'u', b's', 0x00, b'O']);
        assert!(mt.multitrack && mt.is_sequence_header());
        assert_eq!(mt.codec, AudioCodec::Opus);
        // ManyTracks: needs the UI24 size.
        assert_eq!(
            AudioInfo::parse(&[0x95, 0x11, b'O', b'p', b'u', b's', 0x00, 0]),
            None
        );
        assert_eq!(AudioPacketType::from(5), AudioPacketType::Multitrack);
    }

    fn config(body: &[u8]) -> Option<AudioConfig> {
        AudioConfig::parse(body)
    }

    fn both(sample_rate: u32, channels: u8) -> Option<AudioConfig> {
        Some(AudioConfig {
            sample_rate: Some(sample_rate),
            channels: Some(channels),
        })
    }

    #[test]
    fn aac_audio_specific_config() {
        // AAC-LC, index 4 (44.1 kHz), 2 channels.
        assert_eq!(config(&[0xAF, 0x00, 0x12, 0x10]), both(44_100, 2));
        // AAC-LC 48 kHz mono: the legacy tag header (0xAF) says 44 kHz stereo anyway.
        let body = [0xAF, 0x00, 0x11, 0x88];
        assert_eq!(audio(&body).sample_rate_hz(), Some(44_100));
        assert_eq!(config(&body), both(48_000, 1));
        // 7.1 (channel configuration 7 = 8 channels).
        assert_eq!(config(&[0xAF, 0x00, 0x11, 0xB8]), both(48_000, 8));
        // HE-AAC with explicit SBR: core 24 kHz, output (extension) 48 kHz.
        assert_eq!(config(&[0xAF, 0x00, 0x2B, 0x11, 0x88]), both(48_000, 2));
        // HE-AACv2 (PS): a mono configuration decodes to stereo.
        assert_eq!(config(&[0xAF, 0x00, 0xEB, 0x09, 0x88]), both(48_000, 2));
        // Explicit 24-bit frequency (index 15).
        assert_eq!(
            config(&[0xAF, 0x00, 0x17, 0x80, 0x56, 0x22, 0x10]),
            both(44_100, 2)
        );
        // Escaped object type (31 + 6 bits).
        assert_eq!(config(&[0xAF, 0x00, 0xF8, 0x08, 0x40]), both(44_100, 2));
        // Channel configuration 0: the layout is in a program config element.
        assert_eq!(
            config(&[0xAF, 0x00, 0x12, 0x00]),
            Some(AudioConfig {
                sample_rate: Some(44_100),
                channels: None,
            })
        );
        // Reserved frequency index 13.
        assert_eq!(
            config(&[0xAF, 0x00, 0x16, 0x90]).map(|c| c.sample_rate),
            Some(None)
        );
        // Enhanced `mp4a` carries the same AudioSpecificConfig after the FourCC.
        assert_eq!(
            config(&[0x90, b'm', b'p', b'4', b'a', 0x11, 0x88]),
            both(48_000, 1)
        );
    }

    #[test]
    fn opus_and_flac_headers() {
        const HEAD: &[u8] = b"OpusHead\x01\x02\x38\x01\x44\xAC\x00\x00\x00\x00\x00";
        let mut seq = vec![0x90, b'O', b'p', b'u', b's'];
        seq.extend_from_slice(HEAD);
        // Opus decodes at 48 kHz whatever input rate (here 44.1 kHz) the header notes.
        assert_eq!(config(&seq), both(48_000, 2));
        let mut six = seq.clone();
        six[5 + 9] = 6;
        assert_eq!(config(&six), both(48_000, 6));
        let mut bad = seq.clone();
        bad[5] = b'X';
        assert_eq!(config(&bad), None, "not an OpusHead");
        assert_eq!(config(&seq[..5 + 9]), None, "truncated before the count");
        // Multitrack OneTrack: the first track's header is read.
        let mut mt = vec![0x95, 0x00, b'O', b'p', b'u', b's', 0x00];
        mt.extend_from_slice(HEAD);
        assert_eq!(config(&mt), both(48_000, 2));

        // FLAC: `fLaC`, STREAMINFO block header, STREAMINFO (44.1 kHz, 2 channels).
        const STREAMINFO: [u8; 18] = [
            0x10, 0x00, 0x10, 0x00, 0x00, 0x00, 0x0E, 0x00, 0x30, 0x5C, 0x0A, 0xC4, 0x42, 0xF0,
            0x00, 0x00, 0xAC, 0x44,
        ];
        let mut flac = vec![0x90, b'f', b'L', b'a', b'C', b'f', b'L', b'a', b'C'];
        flac.extend_from_slice(&[0x80, 0x00, 0x00, 0x22]);
        flac.extend_from_slice(&STREAMINFO);
        assert_eq!(config(&flac), both(44_100, 2));
        // Bare STREAMINFO, 96 kHz 6 channels: rate 0x17700, channels-1 = 5.
        let mut bare = vec![0x90, b'f', b'L', b'a', b'C'];
        let mut info = STREAMINFO;
        info[10..13].copy_from_slice(&[0x17, 0x70, 0x0A]);
        bare.extend_from_slice(&info);
        assert_eq!(config(&bare), both(96_000, 6));
    }

    #[test]
    fn audio_config_of_other_packets() {
        // MultichannelConfig: order (1 = native), channel count, mask.
        assert_eq!(
            config(&[0x94, b'O', b'p', b'u', b's', 0x01, 0x02, 0, 0, 0, 0x03]),
            Some(AudioConfig {
                sample_rate: None,
                channels: Some(2),
            })
        );
        // Not sequence headers, or no configuration to read.
        assert_eq!(config(&[0xAF, 0x01, 0x21, 0x10]), None, "AAC raw frame");
        assert_eq!(config(&[0x91, b'O', b'p', b'u', b's', 0xFC]), None);
        assert_eq!(config(&[0x2E, 0xFF, 0xFB, 0x90, 0x00]), None, "MP3");
        assert_eq!(config(&[0x90, b'a', b'c', b'-', b'3', 0x01]), None, "AC-3");
        assert_eq!(config(&[0xAF, 0x00, 0x12]), None, "truncated ASC");
        assert_eq!(config(&[0xAF, 0x00]), None, "empty ASC");
        assert_eq!(config(&[]), None);
        // Through the tag: only audio tags are read.
        let body = Bytes::from_static(&[0xAF, 0x00, 0x11, 0x88]);
        assert_eq!(
            Tag::new(TagType::Audio, 0, body.clone()).audio_config(),
            both(48_000, 1)
        );
        assert_eq!(Tag::new(TagType::Video, 0, body).audio_config(), None);
    }

    #[test]
    fn what_browser_players_must_not_receive() {
        let tag = |t: TagType, body: &'static [u8]| Tag::new(t, 0, Bytes::from_static(body));
        let audio_tag = |body| tag(TagType::Audio, body);
        let video_tag = |body| tag(TagType::Video, body);
        let dropped = [
            // Unknown tag type (e.g. an encrypted tag's Filter bit).
            tag(TagType::Unknown(0x28), &[1, 2, 3]),
            // ffmpeg 7+: Opus MultichannelConfig, stereo, native order, mask FL|FR.
            audio_tag(&[0x94, b'O', b'p', b'u', b's', 0x01, 0x02, 0, 0, 0, 0x03]),
            audio_tag(&[0x94, b'f', b'L', b'a', b'C', 0x00, 0x01]),
            // ffmpeg 7+: HEVC colorInfo metadata (frame type 5 + packet type 4), AMF.
            video_tag(&[0xD4, b'h', b'v', b'c', b'1', 0x02, 0x00, 0x09, b'c']),
            // The same packet type with another frame type, and for AV1.
            video_tag(&[0x94, b'a', b'v', b'0', b'1', 0x02, 0x00]),
            // Enhanced command frame (no FourCC).
            video_tag(&[0xD1, 0x00]),
        ];
        for t in &dropped {
            assert!(!for_browser_players(t), "{t:?} must not reach browsers");
        }
        let kept = [
            tag(TagType::Script, &[0x02, 0x00, 0x0A, b'o']),
            audio_tag(&[0xAF, 0x00, 0x12, 0x10]),
            audio_tag(&[0xAF, 0x01, 0x21]),
            audio_tag(&[0x2E, 0xFF, 0xFB]),
            audio_tag(&[0x90, b'O', b'p', b'u', b's', b'O', b'p', b'u', b's']),
            audio_tag(&[0x91, b'O', b'p', b'u', b's', 0xFC]),
            audio_tag(&[0x92, b'O', b'p', b'u', b's']),
            // ModEx then coded frames: media, kept.
            audio_tag(&[0x97, 0x02, 0, 0, 1, 0x01, b'O', b'p', b'u', b's', 0xFC]),
            video_tag(&[0x17, 0x00, 0, 0, 0, 0x01]),
            video_tag(&[0x17, 0x01, 0, 0, 0, 0x65]),
            // A legacy command frame: mpegts.js ignores it.
            video_tag(&[0x57, 0x00]),
            video_tag(&[0x90, b'h', b'v', b'c', b'1', 0x01]),
            video_tag(&[0x91, b'h', b'v', b'c', b'1', 0, 0, 0, 0x26]),
            video_tag(&[0xA3, b'a', b'v', b'0', b'1', 0x12]),
            video_tag(&[0x92, b'h', b'v', b'c', b'1']),
            // Too short to inspect: passed on as it came.
            video_tag(&[0x17]),
            audio_tag(&[]),
        ];
        for t in &kept {
            assert!(for_browser_players(t), "{t:?} must reach browsers");
        }
    }

    #[test]
    fn never_panics_on_short_bodies() {
        // Every prefix of every fixture, and every single byte.
        let fixtures: [&[u8]; 5] = [
            &[
                0x97, 0xFF, 0x00, 0x02, 1, 2, 3, 0x06, 0x21, b'v', b'p', b'0', b'9', 1, 0, 0, 1,
            ],
            &[0x96, 0x11, b'h', b'v', b'c', b'1', 0, 0, 0, 9, 0, 0, 0],
            &[
                0x97, 0x02, 0, 0, 1, 0x05, 0x10, b'O', b'p', b'u', b's', 0, 0, 0, 1,
            ],
            &[0x17, 0x01, 0x00, 0x00, 0x50],
            &[0xAF, 0x00, 0x12, 0x10],
        ];
        for f in fixtures {
            for end in 0..=f.len() {
                let _ = VideoInfo::parse(&f[..end]);
                let _ = AudioInfo::parse(&f[..end]);
                let _ = AudioConfig::parse(&f[..end]);
            }
        }
        for b in 0..=255u8 {
            let _ = VideoInfo::parse(&[b]);
            let _ = AudioInfo::parse(&[b]);
        }
    }
}
