//! The stream's timeline: publisher timestamps (32-bit, any origin, several
//! publishers one after another) mapped to what players need (monotonic per track,
//! continuous across publishers and wraps). Pure: no clock, no I/O.

use flv::TagType;

/// A publisher timestamp step larger than this (forward or back) is a
/// discontinuity (an encoder restart, a clock jump), not stream time: the stream
/// continues 1 ms after where players are instead of jumping. Real streams step
/// tens of milliseconds; interleaved audio and video differ by well under a second.
pub const TIMESTAMP_JUMP_MS: i64 = 10_000;

/// Maps a publisher's 32-bit timestamps onto the stream's 64-bit timeline, per
/// stream, across publishers.
///
/// - Steps are read with serial-number arithmetic (RFC 1982): the step from `last`
///   to `ts` is `(ts - last) mod 2^32` as a signed 32-bit value, so a wrap at 2^32
///   (49.7 days of a 24/7 stream, or an encoder that starts high) is a small step
///   forward, not a jump back.
/// - Small backward steps are clamped per track (players need monotonic
///   timestamps per track); steps over [`TIMESTAMP_JUMP_MS`] and a new publisher
///   rebase: the stream continues 1 ms after its newest tag.
/// - Players get the timeline modulo 2^32 (an FLV timestamp). A stream whose first
///   timestamp is within 2^31 ms of the wrap starts at 0, so no player sees the
///   wrap within 24 days of it.
#[derive(Debug, Default)]
pub(super) struct Timeline {
    /// The publisher's previous A/V timestamp (raw) and where it landed (64-bit).
    pub(super) anchor: Option<(u32, i64)>,
    /// A publisher resumed the stream: rebase on its first A/V tag.
    pub(super) rebase_pending: bool,
    pub(super) last_video: Option<i64>,
    pub(super) last_audio: Option<i64>,
}

impl Timeline {
    /// The newest A/V time on the timeline.
    pub(super) fn edge(&self) -> Option<i64> {
        self.last_video.max(self.last_audio)
    }

    /// Maps a publisher timestamp to the stream's timeline (as sent to players).
    pub(super) fn map(&mut self, tag_type: TagType, ts: u32) -> u32 {
        if !matches!(tag_type, TagType::Audio | TagType::Video) {
            // Script data (`onMetaData`) is stamped 0: ffmpeg's FLV demuxer reads a
            // script tag at 0 as stream metadata and any other as a data track (an
            // extra "Subtitle: text" stream); flv.js and mpegts.js ignore its time.
            // It never moves the A/V timeline.
            return 0;
        }
        let mapped = match self.anchor {
            Some((last_raw, last)) if !self.rebase_pending => {
                let step = i64::from(ts.wrapping_sub(last_raw) as i32);
                if step.abs() > TIMESTAMP_JUMP_MS {
                    self.edge().map_or(0, |e| e + 1)
                } else {
                    last + step
                }
            }
            _ => match self.edge() {
                // A new publisher continues right after where players are.
                Some(edge) => edge + 1,
                None if ts >= 1 << 31 => 0,
                None => i64::from(ts),
            },
        };
        self.rebase_pending = false;
        self.anchor = Some((ts, mapped));
        let last = match tag_type {
            TagType::Video => &mut self.last_video,
            _ => &mut self.last_audio,
        };
        let out = last.map_or(mapped, |l| mapped.max(l));
        *last = Some(out);
        // The FLV timestamp is the timeline modulo 2^32.
        out as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_rebases_a_resumed_publisher_and_stays_monotonic() {
        let mut t = Timeline::default();
        assert_eq!(t.map(TagType::Video, 0), 0);
        assert_eq!(t.map(TagType::Audio, 23), 23);
        assert_eq!(t.map(TagType::Video, 5000), 5000);
        // A publisher going back in time on one track is clamped.
        assert_eq!(t.map(TagType::Video, 4000), 5000);
        // A new publisher starting from 0 continues right after the last tag.
        t.rebase_pending = true;
        assert_eq!(t.map(TagType::Script, 0), 0);
        assert_eq!(t.map(TagType::Video, 0), 5001);
        assert_eq!(t.map(TagType::Audio, 21), 5022);
        assert_eq!(t.map(TagType::Video, 40), 5041);
    }

    #[test]
    fn timeline_continues_through_a_32_bit_wrap() {
        let mut t = Timeline::default();
        // A stream that starts low and runs for 49.7 days crosses the wrap...
        let start = u32::MAX - 2_000;
        // (an encoder that starts this high is moved to 0 at once)
        assert_eq!(t.map(TagType::Video, start), 0);
        let mut last = 0;
        for i in 1..200u32 {
            let ts = start.wrapping_add(i * 40);
            let out = t.map(TagType::Video, ts);
            assert_eq!(out, i * 40, "monotonic through the wrap at step {i}");
            assert!(out > last);
            last = out;
        }
        // ...and a running stream crosses it the same way.
        let mut t = Timeline::default();
        assert_eq!(t.map(TagType::Audio, 1_000), 1_000);
        t.anchor = Some((u32::MAX - 9, (1i64 << 32) - 10));
        t.last_audio = Some((1i64 << 32) - 10);
        assert_eq!(t.map(TagType::Audio, 12), 12, "2^32 + 12 on the timeline");
    }

    #[test]
    fn timeline_rebases_big_jumps_and_clamps_small_steps_back() {
        let mut t = Timeline::default();
        assert_eq!(t.map(TagType::Video, 20_000), 20_000);
        assert_eq!(t.map(TagType::Audio, 19_990), 19_990);
        // A small step back on a track is clamped.
        assert_eq!(t.map(TagType::Video, 19_000), 20_000);
        // An encoder restart from 0 mid-stream: a jump back, rebased.
        assert_eq!(t.map(TagType::Video, 0), 20_001);
        assert_eq!(t.map(TagType::Video, 40), 20_041);
        // A jump far ahead: rebased too.
        assert_eq!(t.map(TagType::Video, 3_000_000), 20_042);
        assert_eq!(t.map(TagType::Video, 3_000_040), 20_082);
        // Metadata is stamped 0 and moves nothing.
        assert_eq!(t.map(TagType::Script, 77_000), 0);
        assert_eq!(t.map(TagType::Video, 3_000_080), 20_122);
    }
}
