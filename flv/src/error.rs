//! The crate's error type.

/// Everything that can go wrong while reading FLV.
///
/// Every variant carries `offset`: for the [`Demuxer`](crate::Demuxer) it is the
/// absolute byte offset in the input stream (byte 0 is the `F` of `FLV`) where the
/// offending field starts; for [`Metadata::parse`](crate::Metadata::parse) it is the
/// offset inside the script tag body.
///
/// The server maps these to what the publisher is told: every variant means "this is
/// not a valid FLV stream (any more)", so an HTTP publisher gets `400 Bad Request`
/// (or `413 Payload Too Large` for [`Error::TagTooLarge`]) and the connection is closed.
#[non_exhaustive]
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The stream does not start with the `FLV` signature.
    #[error("not an FLV stream: bad signature at byte {offset}")]
    NotFlv {
        /// Offset of the first byte that differs from `FLV`.
        offset: u64,
    },
    /// The FLV header's version byte is not 1 (the only version that exists).
    #[error("unsupported FLV version {version} at byte {offset}")]
    UnsupportedVersion {
        /// Offset of the version byte (3).
        offset: u64,
        /// The version found.
        version: u8,
    },
    /// The FLV header's DataOffset field is smaller than the header itself (9).
    #[error("bad FLV header at byte {offset}: data offset {data_offset} is smaller than 9")]
    BadHeader {
        /// Offset of the DataOffset field (5).
        offset: u64,
        /// The DataOffset found.
        data_offset: u32,
    },
    /// A tag's DataSize exceeds [`DemuxerConfig::max_tag_size`](crate::DemuxerConfig::max_tag_size).
    #[error("tag at byte {offset} has a {size}-byte body, more than the limit of {max}")]
    TagTooLarge {
        /// Offset of the tag's first header byte.
        offset: u64,
        /// The body size the tag header announces.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// A PreviousTagSize field does not match the size of the tag before it
    /// (only with [`PrevTagSizePolicy::Check`](crate::PrevTagSizePolicy::Check)).
    /// It means the byte stream lost or gained bytes: the tag boundaries are no longer
    /// trustworthy.
    #[error("PreviousTagSize at byte {offset} is {found}, expected {expected}")]
    PrevTagSizeMismatch {
        /// Offset of the PreviousTagSize field.
        offset: u64,
        /// 11 + the previous tag's body size (0 before the first tag).
        expected: u32,
        /// The value in the stream.
        found: u32,
    },
    /// The input ended in the middle of the header, a tag or a PreviousTagSize
    /// (returned by [`Demuxer::finish`](crate::Demuxer::finish)), or a buffer passed
    /// to a parser is too short.
    #[error("input truncated: {buffered} bytes of an incomplete element at byte {offset}")]
    Truncated {
        /// Offset where the incomplete element starts.
        offset: u64,
        /// How many of its bytes are there.
        buffered: usize,
    },
    /// A script data (AMF0) tag body could not be decoded.
    #[error("bad script data at byte {offset} of the tag body: {reason}")]
    Script {
        /// Offset inside the tag body.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
}

impl Error {
    /// The byte offset carried by every variant (see the type's docs for what it is
    /// relative to).
    pub fn offset(&self) -> u64 {
        match *self {
            Error::NotFlv { offset }
            | Error::UnsupportedVersion { offset, .. }
            | Error::BadHeader { offset, .. }
            | Error::TagTooLarge { offset, .. }
            | Error::PrevTagSizeMismatch { offset, .. }
            | Error::Truncated { offset, .. }
            | Error::Script { offset, .. } => offset,
        }
    }
}
