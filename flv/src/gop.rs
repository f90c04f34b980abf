//! The state a live stream needs to start a new player.

use std::collections::VecDeque;
use std::fmt;

use crate::{Header, Metadata, Tag, TagType};

/// Bounds of a [`GopCache`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GopCacheConfig {
    /// Most bytes of cached GOP (counted as [`Tag::encoded_len`]), default 8 MiB: a 10 s
    /// GOP at 6 Mbit/s. Metadata and sequence headers are not counted.
    pub max_bytes: usize,
    /// Longest cached GOP, from its keyframe's timestamp to the latest tag's, default
    /// 10 000 ms. A longer GOP would make a joining player start far behind live.
    pub max_duration_ms: u32,
}

impl Default for GopCacheConfig {
    fn default() -> Self {
        GopCacheConfig {
            max_bytes: 8 * 1024 * 1024,
            max_duration_ms: 10_000,
        }
    }
}

/// What a player that joins a live stream must receive, kept up to date as tags are
/// pushed: the latest `onMetaData`, the latest video and audio sequence headers, and
/// the tags from the last video keyframe on.
///
/// Generic over the stored item so the server can keep its own frame type (for example
/// a [`Tag`] plus its pre-encoded wire bytes); items are only moved and borrowed, never
/// cloned by the cache.
///
/// Rules of [`GopCache::push`]:
/// - `onMetaData` replaces the stored metadata; video/audio sequence headers (and an
///   Enhanced audio MultichannelConfig) replace the stored one. None of them enter the
///   GOP.
/// - A video keyframe starts a new GOP; the previous GOP is dropped (only the GOP from
///   the last keyframe is kept).
/// - Other tags (inter frames, audio, other script tags, unknown tags) are appended
///   when a GOP is open. Before the first keyframe of a stream that has video they are
///   not kept: a player could not decode them.
/// - Audio-only stream (no video tag seen yet): recent audio is kept, trimmed tag by
///   tag from the front to the bounds; the first video tag discards it.
/// - When the GOP exceeds [`GopCacheConfig::max_bytes`] or
///   [`GopCacheConfig::max_duration_ms`] it is dropped as a whole: a joining player
///   then waits for the next keyframe (it gets only metadata and sequence headers
///   until then, and live tags from the next keyframe on).
///
/// Multitrack streams keep only the latest sequence header per media type.
pub struct GopCache<T = Tag>
where
    T: AsRef<Tag> + Clone,
{
    config: GopCacheConfig,
    metadata: Option<T>,
    /// Track hints from the latest metadata: (audio, video).
    metadata_hint: (bool, bool),
    video_sequence_header: Option<T>,
    audio_sequence_header: Option<T>,
    audio_multichannel_config: Option<T>,
    gop: VecDeque<T>,
    gop_bytes: usize,
    /// The GOP starts with a video keyframe (false: empty, or audio-only buffer).
    keyed: bool,
    seen_audio: bool,
    seen_video: bool,
}

impl<T: AsRef<Tag> + Clone> fmt::Debug for GopCache<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GopCache")
            .field("config", &self.config)
            .field("metadata", &self.metadata.is_some())
            .field(
                "video_sequence_header",
                &self.video_sequence_header.is_some(),
            )
            .field(
                "audio_sequence_header",
                &self.audio_sequence_header.is_some(),
            )
            .field("gop_tags", &self.gop.len())
            .field("gop_bytes", &self.gop_bytes)
            .field("keyed", &self.keyed)
            .field("seen_audio", &self.seen_audio)
            .field("seen_video", &self.seen_video)
            .finish()
    }
}

impl<T: AsRef<Tag> + Clone> GopCache<T> {
    /// An empty cache.
    pub fn new(config: GopCacheConfig) -> Self {
        GopCache {
            config,
            metadata: None,
            metadata_hint: (false, false),
            video_sequence_header: None,
            audio_sequence_header: None,
            audio_multichannel_config: None,
            gop: VecDeque::new(),
            gop_bytes: 0,
            keyed: false,
            seen_audio: false,
            seen_video: false,
        }
    }

    /// The bounds this cache was made with.
    pub fn config(&self) -> &GopCacheConfig {
        &self.config
    }

    /// Feeds one tag of the live stream, in stream order (see the type docs).
    pub fn push(&mut self, item: T) {
        let tag = item.as_ref();
        match tag.tag_type {
            TagType::Script if tag.is_metadata() => {
                self.metadata_hint = match Metadata::parse(&tag.body) {
                    Ok(m) => (m.has_audio(), m.has_video()),
                    Err(_) => (false, false),
                };
                self.metadata = Some(item);
            }
            TagType::Video => {
                if !self.seen_video {
                    self.seen_video = true;
                    if !self.keyed {
                        // Drop an audio-only buffer: from now on a GOP starts at a keyframe.
                        self.clear_gop();
                    }
                }
                match tag.video() {
                    Some(v) if v.is_sequence_header() => self.video_sequence_header = Some(item),
                    Some(v) if v.is_keyframe() => {
                        self.clear_gop();
                        self.keyed = true;
                        self.append(item);
                    }
                    _ => self.append(item),
                }
            }
            TagType::Audio => {
                self.seen_audio = true;
                match tag.audio() {
                    Some(a) if a.is_sequence_header() => self.audio_sequence_header = Some(item),
                    Some(a) if a.is_multichannel_config() => {
                        self.audio_multichannel_config = Some(item);
                    }
                    _ if !self.seen_video => self.append_audio_only(item),
                    _ => self.append(item),
                }
            }
            _ => self.append(item),
        }
    }

    /// Appends to an open GOP, dropping the GOP if it grows past the bounds.
    fn append(&mut self, item: T) {
        if !self.keyed {
            return;
        }
        self.gop_bytes += item.as_ref().encoded_len();
        self.gop.push_back(item);
        if self.over_bounds() {
            self.clear_gop();
        }
    }

    /// Appends to the audio-only buffer, trimming its front to the bounds.
    fn append_audio_only(&mut self, item: T) {
        self.gop_bytes += item.as_ref().encoded_len();
        self.gop.push_back(item);
        while self.over_bounds() {
            match self.gop.pop_front() {
                Some(old) => self.gop_bytes -= old.as_ref().encoded_len(),
                None => break,
            }
        }
    }

    fn over_bounds(&self) -> bool {
        self.gop_bytes > self.config.max_bytes || self.duration_ms() > self.config.max_duration_ms
    }

    /// Header flags for a joining player: a track is announced if a tag of it (or its
    /// sequence header) has been seen, or if the latest `onMetaData` announces it
    /// (`videocodecid`/`width`/`height`, `audiocodecid`/`audiosamplerate`), so a player
    /// that joins between the metadata and the first media tag still gets the right
    /// flags.
    pub fn header(&self) -> Header {
        Header {
            audio: self.seen_audio || self.metadata_hint.0,
            video: self.seen_video || self.metadata_hint.1,
        }
    }

    /// The latest `onMetaData` tag.
    pub fn metadata(&self) -> Option<&T> {
        self.metadata.as_ref()
    }

    /// The latest video sequence header.
    pub fn video_sequence_header(&self) -> Option<&T> {
        self.video_sequence_header.as_ref()
    }

    /// The latest audio sequence header.
    pub fn audio_sequence_header(&self) -> Option<&T> {
        self.audio_sequence_header.as_ref()
    }

    /// The latest Enhanced audio MultichannelConfig.
    pub fn audio_multichannel_config(&self) -> Option<&T> {
        self.audio_multichannel_config.as_ref()
    }

    /// The cached GOP, from its keyframe (audio-only stream: the cached audio).
    pub fn gop(&self) -> impl Iterator<Item = &T> {
        self.gop.iter()
    }

    /// Everything a joining player receives after the FLV header, in order: metadata,
    /// video sequence header, audio MultichannelConfig, audio sequence header, then the
    /// GOP.
    pub fn join(&self) -> impl Iterator<Item = &T> {
        self.metadata
            .iter()
            .chain(self.video_sequence_header.iter())
            .chain(self.audio_multichannel_config.iter())
            .chain(self.audio_sequence_header.iter())
            .chain(self.gop.iter())
    }

    /// Bytes of the cached GOP (sum of [`Tag::encoded_len`]; metadata and sequence
    /// headers not included).
    pub fn bytes(&self) -> usize {
        self.gop_bytes
    }

    /// Timestamp span of the cached GOP in ms (0 if it holds fewer than two tags or
    /// timestamps went backwards).
    pub fn duration_ms(&self) -> u32 {
        match (self.gop.front(), self.gop.back()) {
            (Some(first), Some(last)) => last
                .as_ref()
                .timestamp
                .saturating_sub(first.as_ref().timestamp),
            _ => 0,
        }
    }

    /// Whether the cached GOP starts with a video keyframe.
    pub fn has_keyframe(&self) -> bool {
        self.keyed && !self.gop.is_empty()
    }

    /// Drops the GOP (e.g. when a publisher restarts), keeping metadata, sequence
    /// headers and the tracks seen. Until the next keyframe nothing is cached (or, for
    /// an audio-only stream, until the next audio tag).
    pub fn clear_gop(&mut self) {
        self.gop.clear();
        self.gop_bytes = 0;
        self.keyed = false;
    }

    /// Forgets everything, as if newly created.
    pub fn reset(&mut self) {
        *self = GopCache::new(self.config.clone());
    }
}
