//! What `/api/streams` and `/api/streams/NAME` show about a stream, read from its
//! state without parsing anything under its lock (the metadata summary is parsed
//! once, when `onMetaData` arrives).

use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::Serialize;

use super::stream::{Stream, StreamState};
use crate::vocab::{Protocol, tenths};

/// What `onMetaData` says, parsed once when it arrives (not on every status
/// request).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct MetaSummary {
    pub(super) width: Option<f64>,
    pub(super) height: Option<f64>,
    pub(super) fps: Option<f64>,
    pub(super) sample_rate: Option<f64>,
    pub(super) channels: Option<u8>,
}

impl MetaSummary {
    pub(super) fn parse(body: &[u8]) -> Option<MetaSummary> {
        let m = flv::Metadata::parse(body).ok()?;
        Some(MetaSummary {
            width: m.width,
            height: m.height,
            fps: m.framerate,
            sample_rate: m.audio_sample_rate,
            channels: m.stereo.map(|s| if s { 2 } else { 1 }),
        })
    }
}

/// `GET /api/streams/NAME`: the status plus who publishes and who plays.
#[derive(Debug, Serialize)]
pub struct StreamDetail {
    /// What `/api/streams` shows.
    #[serde(flatten)]
    pub status: StreamStatus,
    /// The connected publisher, if any.
    pub publisher_info: Option<PeerStatus>,
    /// Connected players, oldest first.
    pub players_list: Vec<PeerStatus>,
}

/// A publisher or player in [`StreamDetail`].
#[derive(Debug, Serialize)]
pub struct PeerStatus {
    /// Player id (0 for the publisher).
    pub id: u64,
    /// Transport.
    pub protocol: Protocol,
    /// Client address.
    pub address: String,
    /// Seconds since it connected.
    pub connected_s: f64,
}

/// What `DELETE /api/streams/NAME` did.
#[derive(Debug, Serialize)]
pub struct KickReport {
    /// The stream.
    pub stream: String,
    /// Whether a publisher was connected (and was cut off).
    pub kicked: bool,
    /// Players that got the end of the stream.
    pub players: usize,
    /// Seconds the name or client is banned from publishing (`?ban=`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub banned_s: Option<u64>,
}

/// Status of one stream for `/api/streams`.
#[derive(Debug, Serialize)]
pub struct StreamStatus {
    /// Stream name.
    pub name: String,
    /// `live`, or `reconnecting` during a publisher's grace period.
    pub state: &'static str,
    /// Video track, if any.
    pub video: Option<VideoStatus>,
    /// Audio track, if any.
    pub audio: Option<AudioStatus>,
    /// Incoming bitrate over the last second.
    pub bitrate_kbps: f64,
    /// Connected players.
    pub players: usize,
    /// Seconds since the stream was first published.
    pub uptime_s: f64,
    /// The publisher's transport, when live.
    pub publisher: Option<Protocol>,
    /// Bytes received from publishers.
    pub bytes_in: u64,
    /// The keyframe interval in milliseconds, measured between the last two video
    /// keyframes (`null` until two have arrived, or for audio-only streams).
    pub keyframe_interval_ms: Option<u32>,
    /// Duration of the cached GOP in milliseconds: stream time from the cached
    /// keyframe to the newest tag (what a joining player receives at once).
    pub gop_cache_ms: u32,
    /// Cluster: the nodes pulling this stream from this node (one entry per node).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub edges: Vec<String>,
}

/// Video track status.
#[derive(Debug, Serialize)]
pub struct VideoStatus {
    /// Codec name (`h264`, `hevc`, `av1`, `vp9`, ...).
    pub codec: &'static str,
    /// Width from `onMetaData`.
    pub width: Option<f64>,
    /// Height from `onMetaData`.
    pub height: Option<f64>,
    /// WireTag rate from `onMetaData`.
    pub fps: Option<f64>,
}

/// Audio track status.
#[derive(Debug, Serialize)]
pub struct AudioStatus {
    /// Codec name (`aac`, `mp3`, `opus`, ...).
    pub codec: &'static str,
    /// Sample rate from `onMetaData`.
    pub sample_rate: Option<f64>,
    /// Channels from `onMetaData` (`stereo`).
    pub channels: Option<u8>,
}

pub(super) fn seconds(since: Instant) -> f64 {
    tenths(since.elapsed().as_secs_f64())
}

pub(super) fn status(stream: &Stream) -> Option<StreamStatus> {
    let st = stream.lock()?;
    let meta = st.meta.as_ref();
    let video = st
        .cache
        .video_sequence_header()
        .and_then(|f| f.tag.video())
        .map(|v| VideoStatus {
            codec: v.codec.name(),
            width: meta.and_then(|m| m.width),
            height: meta.and_then(|m| m.height),
            fps: meta.and_then(|m| m.fps),
        });
    let audio = st
        .cache
        .audio_sequence_header()
        .and_then(|f| f.tag.audio())
        .map(|a| AudioStatus {
            codec: a.codec.name(),
            sample_rate: sample_rate(&st),
            channels: channels(&st),
        });
    Some(StreamStatus {
        name: stream.name.clone(),
        state: if st.publisher.is_some() {
            "live"
        } else {
            "reconnecting"
        },
        video,
        audio,
        bitrate_kbps: tenths(st.rate.kbps),
        players: stream.players.load(Ordering::Relaxed),
        uptime_s: tenths(stream.created.elapsed().as_secs_f64()),
        publisher: st.publisher.as_ref().map(|p| p.info.protocol),
        bytes_in: stream.bytes_in.load(Ordering::Relaxed),
        keyframe_interval_ms: st.keyframe_interval_ms,
        gop_cache_ms: st.cache.duration_ms(),
        edges: edges(stream),
    })
}

/// The cluster nodes among the players (edges pulling the stream), sorted, once each.
fn edges(stream: &Stream) -> Vec<String> {
    let roster = stream.roster.lock().unwrap_or_else(|e| e.into_inner());
    let mut edges: Vec<String> = roster
        .values()
        .filter_map(|(info, _)| info.edge.clone())
        .collect();
    edges.sort();
    edges.dedup();
    edges
}

/// From the audio sequence header, else from `onMetaData`.
fn sample_rate(st: &StreamState) -> Option<f64> {
    st.audio_config
        .and_then(|c| c.sample_rate)
        .map(f64::from)
        .or(st.meta.and_then(|m| m.sample_rate))
}

/// From the audio sequence header, else from `onMetaData`.
fn channels(st: &StreamState) -> Option<u8> {
    st.audio_config
        .and_then(|c| c.channels)
        .or(st.meta.and_then(|m| m.channels))
}

/// One line about what is being published, for the log: codecs, resolution,
/// frame rate, audio format and bitrate, as far as they are known.
pub(super) fn summary(st: &StreamState) -> String {
    let meta = st.meta.unwrap_or_default();
    let mut parts = Vec::new();
    if let Some(v) = st.cache.video_sequence_header().and_then(|f| f.tag.video()) {
        let mut s = format!("video {}", v.codec.name());
        if let (Some(w), Some(h)) = (meta.width, meta.height) {
            s += &format!(" {w}x{h}");
        }
        if let Some(fps) = meta.fps {
            s += &format!(" {}fps", tenths(fps));
        }
        parts.push(s);
    }
    if let Some(a) = st.cache.audio_sequence_header().and_then(|f| f.tag.audio()) {
        let mut s = format!("audio {}", a.codec.name());
        if let Some(rate) = sample_rate(st) {
            s += &format!(" {rate}Hz");
        }
        if let Some(ch) = channels(st) {
            s += &format!(" {ch}ch");
        }
        parts.push(s);
    }
    parts.push(format!("{} kbit/s", tenths(st.rate.kbps)));
    parts.join(", ")
}
