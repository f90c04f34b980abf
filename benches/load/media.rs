//! The stream the publisher replays: an FLV file generated with ffmpeg (cached under
//! the output directory) or given with `--file`, parsed once into tags.

use std::path::{Path, PathBuf};
use std::process::Command;

use flv::{Demuxer, DemuxerConfig, Header, Tag, TagType};

/// How to generate the test stream.
#[derive(Clone, Debug)]
pub struct MediaSpec {
    /// Video size, `WxH`.
    pub size: String,
    /// Frames per second.
    pub fps: u32,
    /// Total bitrate (video + 128 kbit/s audio), kbit/s.
    pub kbps: u32,
    /// Keyframe interval, ms.
    pub gop_ms: u32,
    /// Length of the file (the publisher loops it).
    pub secs: u32,
}

/// Audio bitrate of the generated stream, kbit/s.
const AUDIO_KBPS: u32 = 128;

/// The options that choose the stream a publisher replays (shared by `live` and
/// `cluster`).
#[derive(Debug, clap::Args)]
pub struct MediaArgs {
    /// FLV file to replay instead of generating one.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Generated video size.
    #[arg(long, default_value = "1280x720")]
    pub size: String,
    /// Generated frame rate.
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// Generated total bitrate, kbit/s (H.264 CBR + 128 kbit/s AAC).
    #[arg(long, default_value_t = 2500)]
    pub kbps: u32,
    /// Generated keyframe interval, ms.
    #[arg(long, default_value_t = 1000)]
    pub gop_ms: u32,
    /// Length of the generated file, s (the publisher loops it).
    #[arg(long, default_value_t = 20)]
    pub media_secs: u32,
}

impl MediaArgs {
    /// `--file`, or the generated stream (made once under `out_dir/media`).
    pub fn media(&self, out_dir: &Path) -> Result<Media, String> {
        match &self.file {
            Some(file) => Media::load(file),
            None => {
                let spec = MediaSpec {
                    size: self.size.clone(),
                    fps: self.fps,
                    kbps: self.kbps,
                    gop_ms: self.gop_ms,
                    secs: self.media_secs,
                };
                tokio::task::block_in_place(|| Media::generate(&spec, &out_dir.join("media")))
            }
        }
    }
}

/// A parsed FLV stream, ready to replay.
#[derive(Debug)]
pub struct Media {
    /// The FLV header (track flags).
    pub header: Header,
    /// Metadata and sequence headers (sent once, not on later loops).
    pub preamble: Vec<Tag>,
    /// Audio/video tags after the preamble, timestamps from 0.
    pub tags: Vec<Tag>,
    /// Length of one loop in ms (last timestamp + one frame).
    pub loop_ms: u32,
    /// Where it came from.
    pub path: PathBuf,
}

impl Media {
    /// Average bitrate of one loop in kbit/s (tag bytes on the wire).
    pub fn kbps(&self) -> f64 {
        let bytes: usize = self.tags.iter().map(Tag::encoded_len).sum();
        bytes as f64 * 8.0 / f64::from(self.loop_ms.max(1))
    }

    /// Loads `path`.
    pub fn load(path: &Path) -> Result<Media, String> {
        let data =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut demux = Demuxer::new(DemuxerConfig::default());
        demux.push(&data);
        let mut preamble = Vec::new();
        let mut tags = Vec::new();
        loop {
            match demux.next_tag() {
                Ok(Some(tag)) => {
                    if tag.is_metadata() || tag.is_sequence_header() {
                        if tags.is_empty() {
                            preamble.push(tag);
                        }
                    } else if tag
                        .video()
                        .is_some_and(|v| v.packet_type == flv::VideoPacketType::SequenceEnd)
                    {
                        // ffmpeg ends a file with an end-of-sequence tag at the last
                        // frame's timestamp: looped, it would end the sequence
                        // mid-stream every loop, and its (type, timestamp) key would
                        // repeat the frame before it in the send table.
                    } else if matches!(tag.tag_type, TagType::Audio | TagType::Video) {
                        tags.push(tag);
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(format!("{}: bad FLV: {e}", path.display())),
            }
        }
        let header = demux
            .header()
            .ok_or_else(|| format!("{}: no FLV header", path.display()))?;
        let first = tags.first().map_or(0, |t| t.timestamp);
        if !tags
            .first()
            .is_some_and(|t| t.is_keyframe() || t.tag_type == TagType::Audio)
        {
            // Fine for a replay, but players then wait for the second keyframe.
            eprintln!("note: {} does not start with a keyframe", path.display());
        }
        for tag in &mut tags {
            tag.timestamp -= first.min(tag.timestamp);
        }
        let last = tags.iter().map(|t| t.timestamp).max().unwrap_or(0);
        if tags.is_empty() {
            return Err(format!("{}: no audio or video tags", path.display()));
        }
        Ok(Media {
            header,
            preamble,
            tags,
            loop_ms: last + 40,
            path: path.to_owned(),
        })
    }

    /// Generates (or reuses) a test stream with ffmpeg under `dir`.
    pub fn generate(spec: &MediaSpec, dir: &Path) -> Result<Media, String> {
        let name = format!(
            "bench-{}-{}fps-{}k-gop{}-{}s.flv",
            spec.size, spec.fps, spec.kbps, spec.gop_ms, spec.secs
        );
        let path = dir.join(name);
        if !path.exists() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let video_kbps = spec.kbps.saturating_sub(AUDIO_KBPS).max(100);
            let gop_frames = (spec.fps * spec.gop_ms / 1000).max(1);
            let tmp = path.with_extension("tmp.flv");
            eprintln!(
                "generating {} with ffmpeg ({}s of {} H.264 {} kbit/s + AAC {} kbit/s, GOP {} ms)",
                path.display(),
                spec.secs,
                spec.size,
                video_kbps,
                AUDIO_KBPS,
                spec.gop_ms
            );
            let status = Command::new("ffmpeg")
                .args(["-hide_banner", "-loglevel", "error", "-y"])
                .args(["-f", "lavfi", "-i"])
                .arg(format!("testsrc2=size={}:rate={}", spec.size, spec.fps))
                .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
                .arg("-t")
                .arg(spec.secs.to_string())
                .args([
                    "-c:v",
                    "libx264",
                    "-preset",
                    "ultrafast",
                    "-tune",
                    "zerolatency",
                ])
                .args(["-pix_fmt", "yuv420p"])
                .arg("-b:v")
                .arg(format!("{video_kbps}k"))
                .arg("-minrate")
                .arg(format!("{video_kbps}k"))
                .arg("-maxrate")
                .arg(format!("{video_kbps}k"))
                .arg("-bufsize")
                .arg(format!("{}k", video_kbps / 2))
                .args(["-x264-params", "nal-hrd=cbr:force-cfr=1"])
                .arg("-g")
                .arg(gop_frames.to_string())
                .arg("-keyint_min")
                .arg(gop_frames.to_string())
                .args(["-sc_threshold", "0"])
                .args(["-c:a", "aac", "-b:a"])
                .arg(format!("{AUDIO_KBPS}k"))
                .args(["-ar", "44100", "-ac", "2", "-f", "flv"])
                .arg(&tmp)
                .status()
                .map_err(|e| {
                    format!(
                        "cannot run ffmpeg ({e}): install it (`apt-get install ffmpeg`) \
                         or pass --file FILE.flv"
                    )
                })?;
            if !status.success() {
                return Err(format!(
                    "ffmpeg failed ({status}) generating {}",
                    path.display()
                ));
            }
            std::fs::rename(&tmp, &path)
                .map_err(|e| format!("cannot rename {}: {e}", tmp.display()))?;
        }
        Media::load(&path)
    }
}
