//! The FLV format, pure and sans-IO: header, tags, an incremental demuxer, codec
//! inspection (legacy and Enhanced RTMP/FLV), `onMetaData`, and the GOP cache a live
//! relay needs to start new players.
//!
//! No I/O, no clock, no async: bytes go in with [`Demuxer::push`], tags come out of
//! [`Demuxer::next_tag`], and writing a tag appends to any [`bytes::BufMut`].
//!
//! # Driving the demuxer
//!
//! ```
//! use bytes::Bytes;
//! use flv::{Demuxer, DemuxerConfig, GopCache, GopCacheConfig, Header, Tag, TagType};
//!
//! // An FLV stream: header, an AVC sequence header, a keyframe, an AAC frame.
//! let mut stream = Vec::new();
//! stream.extend_from_slice(&Header { audio: true, video: true }.encode());
//! Tag::new(TagType::Video, 0, Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 0x64])).write_to(&mut stream);
//! Tag::new(TagType::Video, 0, Bytes::from_static(&[0x17, 1, 0, 0, 0, 0x65])).write_to(&mut stream);
//! Tag::new(TagType::Audio, 23, Bytes::from_static(&[0xAF, 1, 0x21])).write_to(&mut stream);
//!
//! let mut demuxer = Demuxer::new(DemuxerConfig::default());
//! let mut cache: GopCache = GopCache::new(GopCacheConfig::default());
//! // Bytes arrive in arbitrary pieces (here 5 at a time).
//! for chunk in stream.chunks(5) {
//!     demuxer.push(chunk);
//!     while let Some(tag) = demuxer.next_tag()? {
//!         cache.push(tag); // a server would also fan the tag out to its players
//!     }
//! }
//! demuxer.finish()?; // the input ended cleanly
//! assert_eq!(demuxer.header(), Some(Header { audio: true, video: true }));
//!
//! // What a player joining now receives, after `cache.header().encode()`:
//! let mut out = Vec::new();
//! out.extend_from_slice(&cache.header().encode());
//! for tag in cache.join() {
//!     tag.write_to(&mut out);
//! }
//! assert_eq!(out, stream);
//! # Ok::<(), flv::Error>(())
//! ```
//!
//! # Panics
//!
//! No input makes this crate panic: every parser bounds-checks and returns an
//! [`Error`] or `None`. A panic is a bug.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod codec;
mod demux;
mod error;
mod gop;
mod header;
pub mod script;
mod tag;

pub use codec::{
    AudioCodec, AudioConfig, AudioInfo, AudioPacketType, FrameType, VideoCodec, VideoInfo,
    VideoPacketType, for_browser_players,
};
pub use demux::{Demuxer, DemuxerConfig, PrevTagSizePolicy};
pub use error::Error;
pub use gop::{GopCache, GopCacheConfig};
pub use header::Header;
pub use script::{Metadata, is_metadata, strip_set_data_frame};
pub use tag::{Tag, TagType};

/// The README's example is compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
