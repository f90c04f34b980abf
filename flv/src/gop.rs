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
                    Some(a) if a.is_multichannel_config() => {
                        self.audio_multichannel_config = Some(item);
                    }
                    Some(a) if a.is_sequence_header() => self.audio_sequence_header = Some(item),
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

    /// The latest audio sequence header (SequenceStart; an Enhanced MultichannelConfig
    /// is kept apart, see [`GopCache::audio_multichannel_config`]).
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn meta(audio: bool, video: bool) -> Tag {
        let mut props = Vec::new();
        if video {
            props.push(("videocodecid".to_string(), amf::amf0::Value::Number(7.0)));
        }
        if audio {
            props.push(("audiocodecid".to_string(), amf::amf0::Value::Number(10.0)));
        }
        Tag::new(
            TagType::Script,
            0,
            Metadata::from_properties(props).encode(),
        )
    }
    fn vseq(ts: u32) -> Tag {
        Tag::new(
            TagType::Video,
            ts,
            Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 0x64]),
        )
    }
    fn key(ts: u32, size: usize) -> Tag {
        let mut b = vec![0x17, 1, 0, 0, 0];
        b.resize(5 + size, 0x65);
        Tag::new(TagType::Video, ts, Bytes::from(b))
    }
    fn inter(ts: u32) -> Tag {
        Tag::new(
            TagType::Video,
            ts,
            Bytes::from_static(&[0x27, 1, 0, 0, 0, 0x41]),
        )
    }
    fn aseq(ts: u32) -> Tag {
        Tag::new(
            TagType::Audio,
            ts,
            Bytes::from_static(&[0xAF, 0, 0x12, 0x10]),
        )
    }
    fn aac(ts: u32) -> Tag {
        Tag::new(TagType::Audio, ts, Bytes::from_static(&[0xAF, 1, 0x21]))
    }

    fn joined<T: AsRef<Tag> + Clone>(c: &GopCache<T>) -> Vec<Tag> {
        c.join().map(|t| t.as_ref().clone()).collect()
    }

    #[test]
    fn join_order_and_gop_replacement() {
        let mut c = GopCache::new(GopCacheConfig::default());
        assert_eq!(c.join().count(), 0);
        assert_eq!(c.header(), Header::default());
        assert!(!c.has_keyframe());
        // Before the first keyframe, media is not kept.
        for t in [meta(true, true), vseq(0), aseq(0), aac(0), inter(0)] {
            c.push(t);
        }
        assert_eq!(joined(&c), vec![meta(true, true), vseq(0), aseq(0)]);
        c.push(key(40, 10));
        c.push(aac(46));
        c.push(inter(80));
        assert!(c.has_keyframe());
        assert_eq!(
            joined(&c),
            vec![
                meta(true, true),
                vseq(0),
                aseq(0),
                key(40, 10),
                aac(46),
                inter(80)
            ]
        );
        assert_eq!(c.gop().count(), 3);
        assert_eq!(c.duration_ms(), 40);
        assert_eq!(
            c.bytes(),
            key(40, 10).encoded_len() + aac(46).encoded_len() + inter(80).encoded_len()
        );
        // The next keyframe replaces the GOP.
        c.push(key(1040, 10));
        c.push(aac(1046));
        assert_eq!(
            joined(&c),
            vec![meta(true, true), vseq(0), aseq(0), key(1040, 10), aac(1046)]
        );
        assert_eq!(
            c.header(),
            Header {
                audio: true,
                video: true
            }
        );
    }

    #[test]
    fn sequence_header_and_metadata_change() {
        let mut c: GopCache = GopCache::new(GopCacheConfig::default());
        c.push(meta(true, true));
        c.push(vseq(0));
        c.push(aseq(0));
        c.push(key(0, 4));
        let new_vseq = Tag::new(
            TagType::Video,
            500,
            Bytes::from_static(&[0x17, 0, 0, 0, 0, 2]),
        );
        let new_aseq = Tag::new(
            TagType::Audio,
            500,
            Bytes::from_static(&[0xAF, 0, 0x11, 0x90]),
        );
        c.push(new_vseq.clone());
        c.push(new_aseq.clone());
        c.push(meta(false, true));
        assert_eq!(c.video_sequence_header(), Some(&new_vseq));
        assert_eq!(c.audio_sequence_header(), Some(&new_aseq));
        assert_eq!(c.metadata(), Some(&meta(false, true)));
        // Sequence headers are not part of the GOP.
        assert_eq!(c.gop().cloned().collect::<Vec<_>>(), vec![key(0, 4)]);
        assert_eq!(
            joined(&c),
            vec![meta(false, true), new_vseq, new_aseq, key(0, 4)]
        );
        // clear_gop keeps metadata and headers.
        c.clear_gop();
        assert!(!c.has_keyframe());
        assert_eq!(c.bytes(), 0);
        assert_eq!(c.join().count(), 3);
        // Until the next keyframe nothing is cached.
        c.push(inter(600));
        assert_eq!(c.gop().count(), 0);
        c.reset();
        assert_eq!(c.join().count(), 0);
        assert_eq!(c.header(), Header::default());
    }

    #[test]
    fn eviction_by_bytes_drops_the_whole_gop() {
        let config = GopCacheConfig {
            max_bytes: 1000,
            max_duration_ms: 10_000,
        };
        let mut c: GopCache = GopCache::new(config);
        c.push(vseq(0));
        c.push(key(0, 500));
        c.push(inter(40));
        assert_eq!(c.gop().count(), 2);
        // Crossing the byte limit drops the GOP; inter frames then wait for a keyframe.
        c.push(key(80, 0));
        c.push(Tag::new(TagType::Video, 120, Bytes::from(vec![0x27; 600])));
        assert!(c.bytes() <= 1000);
        c.push(Tag::new(TagType::Video, 160, Bytes::from(vec![0x27; 600])));
        assert_eq!(c.gop().count(), 0);
        assert_eq!(c.bytes(), 0);
        assert!(!c.has_keyframe());
        c.push(inter(200));
        assert_eq!(c.gop().count(), 0);
        assert_eq!(c.join().count(), 1, "the sequence header survives");
        c.push(key(240, 10));
        assert_eq!(c.gop().count(), 1);
        // A keyframe that alone exceeds the bound is not cached.
        c.push(key(280, 2000));
        assert_eq!(c.gop().count(), 0);
    }

    #[test]
    fn eviction_by_duration() {
        let config = GopCacheConfig {
            max_bytes: usize::MAX,
            max_duration_ms: 1000,
        };
        let mut c: GopCache = GopCache::new(config);
        c.push(key(0, 1));
        for ts in (40..=1000).step_by(40) {
            c.push(inter(ts));
        }
        assert_eq!(c.duration_ms(), 1000);
        assert!(c.has_keyframe());
        c.push(inter(1040));
        assert!(!c.has_keyframe());
        assert_eq!(c.duration_ms(), 0);
        assert_eq!(c.gop().count(), 0);
    }

    #[test]
    fn audio_only_stream() {
        let config = GopCacheConfig {
            max_bytes: usize::MAX,
            max_duration_ms: 100,
        };
        let mut c: GopCache = GopCache::new(config);
        c.push(meta(true, false));
        assert_eq!(
            c.header(),
            Header {
                audio: true,
                video: false
            }
        );
        c.push(aseq(0));
        for ts in (0..=230).step_by(23) {
            c.push(aac(ts));
        }
        assert_eq!(
            c.header(),
            Header {
                audio: true,
                video: false
            }
        );
        assert!(!c.has_keyframe());
        // Trimmed tag by tag to 100 ms.
        let kept: Vec<u32> = c.gop().map(|t| t.timestamp).collect();
        assert_eq!(kept, vec![138, 161, 184, 207, 230]);
        assert_eq!(c.duration_ms(), 92);
        assert_eq!(c.join().count(), 2 + 5);
        // Video shows up: the audio buffer goes, audio waits for a keyframe.
        c.push(vseq(240));
        assert_eq!(c.gop().count(), 0);
        c.push(aac(253));
        assert_eq!(c.gop().count(), 0);
        c.push(key(260, 1));
        c.push(aac(276));
        assert_eq!(c.gop().count(), 2);
        assert_eq!(
            c.header(),
            Header {
                audio: true,
                video: true
            }
        );
    }

    #[test]
    fn video_only_stream() {
        let mut c: GopCache = GopCache::new(GopCacheConfig::default());
        c.push(vseq(0));
        c.push(key(0, 1));
        c.push(inter(40));
        assert_eq!(
            c.header(),
            Header {
                audio: false,
                video: true
            }
        );
        assert_eq!(c.audio_sequence_header(), None);
        assert_eq!(joined(&c), vec![vseq(0), key(0, 1), inter(40)]);
    }

    #[test]
    fn header_flags_from_metadata_hints() {
        let mut c: GopCache = GopCache::new(GopCacheConfig::default());
        c.push(meta(true, true));
        assert_eq!(
            c.header(),
            Header {
                audio: true,
                video: true
            }
        );
        // Metadata without hints, no media yet.
        let mut c: GopCache = GopCache::new(GopCacheConfig::default());
        c.push(meta(false, false));
        assert_eq!(c.header(), Header::default());
        c.push(aac(0));
        assert_eq!(
            c.header(),
            Header {
                audio: true,
                video: false
            }
        );
    }

    #[test]
    fn enhanced_stream_with_multichannel_config() {
        let mut c: GopCache = GopCache::new(GopCacheConfig::default());
        let hseq = Tag::new(TagType::Video, 0, Bytes::from_static(b"\x90hvc1\x01"));
        let hkey = Tag::new(TagType::Video, 0, Bytes::from_static(b"\x91hvc1\0\0\0\x26"));
        let oseq = Tag::new(TagType::Audio, 0, Bytes::from_static(b"\x90OpusOpusHead"));
        let omc = Tag::new(TagType::Audio, 0, Bytes::from_static(b"\x94Opus\x01\x02"));
        let opus = Tag::new(TagType::Audio, 20, Bytes::from_static(b"\x91Opus\xfc"));
        for t in [&hseq, &omc, &oseq, &hkey, &opus] {
            c.push(t.clone());
        }
        assert_eq!(c.audio_multichannel_config(), Some(&omc));
        assert_eq!(joined(&c), vec![hseq, omc, oseq, hkey, opus]);
    }

    /// The server's own item type: a tag plus its pre-encoded wire bytes.
    #[derive(Clone, Debug, PartialEq)]
    struct Wire {
        tag: Tag,
        wire: Bytes,
    }
    impl AsRef<Tag> for Wire {
        fn as_ref(&self) -> &Tag {
            &self.tag
        }
    }

    #[test]
    fn generic_item_type() {
        let wrap = |tag: Tag| {
            let mut w = Vec::new();
            tag.write_to(&mut w);
            Wire {
                tag,
                wire: Bytes::from(w),
            }
        };
        let mut c = GopCache::new(GopCacheConfig::default());
        c.push(wrap(vseq(0)));
        c.push(wrap(key(0, 3)));
        let wire: Vec<u8> = c.join().flat_map(|w| w.wire.to_vec()).collect();
        let mut expected = Vec::new();
        vseq(0).write_to(&mut expected);
        key(0, 3).write_to(&mut expected);
        assert_eq!(wire, expected);
        assert!(format!("{c:?}").contains("gop_tags: 1"));
    }

    #[test]
    fn defaults() {
        let c = GopCacheConfig::default();
        assert_eq!(c.max_bytes, 8 * 1024 * 1024);
        assert_eq!(c.max_duration_ms, 10_000);
    }
}
