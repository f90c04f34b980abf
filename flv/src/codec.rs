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
        const EX_HEADER: u8 = 9;
        const MULTITRACK: u8 = 5;
        let b0 = *body.first()?;
        let format = b0 >> 4;
        if format != EX_HEADER {
            let codec = AudioCodec::from_legacy(format);
            let packet_type = if codec == AudioCodec::Aac {
                match *body.get(1)? {
                    0 => AudioPacketType::SequenceStart,
                    1 => AudioPacketType::CodedFrames,
                    other => AudioPacketType::Other(other),
                }
            } else {
                AudioPacketType::CodedFrames
            };
            return Some(AudioInfo {
                codec,
                packet_type,
                enhanced: false,
                multitrack: false,
                sound_rate: Some((b0 >> 2) & 0x03),
                sound_16bit: Some(b0 & 0x02 != 0),
                stereo: Some(b0 & 0x01 != 0),
            });
        }
        let (mut packet_type, pos) = resolve_mod_ex(body, b0 & 0x0F, 1)?;
        let multitrack = packet_type == MULTITRACK;
        let codec = if multitrack {
            let (pt, f, _) = multitrack_first(body, pos)?;
            packet_type = pt;
            AudioCodec::from_fourcc(f)
        } else {
            AudioCodec::from_fourcc(fourcc(body, pos)?)
        };
        Some(AudioInfo {
            codec,
            packet_type: AudioPacketType::from(packet_type),
            enhanced: true,
            multitrack,
            sound_rate: None,
            sound_16bit: None,
            stereo: None,
        })
    }

    /// Decoder configuration a player needs before any frame: packet type
    /// SequenceStart (AAC AudioSpecificConfig, Opus/FLAC headers). A
    /// MultichannelConfig is not counted here (the [`GopCache`](crate::GopCache) keeps
    /// it separately, see [`AudioInfo::is_multichannel_config`]).
    pub fn is_sequence_header(&self) -> bool {
        self.packet_type == AudioPacketType::SequenceStart
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
