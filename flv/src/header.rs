//! The 9-byte FLV file header.

use crate::Error;

/// The FLV file header: signature `FLV`, version 1, track flags, data offset.
///
/// Only the audio/video flags carry information; a player (flv.js, mpegts.js) uses
/// them to decide which tracks to wait for, so they must describe the tracks the
/// stream really has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Header {
    /// The stream has an audio track (flags bit 2).
    pub audio: bool,
    /// The stream has a video track (flags bit 0).
    pub video: bool,
}

const FLAG_AUDIO: u8 = 0x04;
const FLAG_VIDEO: u8 = 0x01;

impl Header {
    /// Length of the header proper, without PreviousTagSize0.
    pub const LEN: usize = 9;
    /// Length of [`Header::encode`]'s output: the header plus PreviousTagSize0.
    pub const ENCODED_LEN: usize = 13;

    /// Parses the header from the first bytes of a stream.
    ///
    /// Needs at least [`Header::LEN`] bytes ([`Error::Truncated`] otherwise); checks the
    /// `FLV` signature, version 1 and a DataOffset of at least 9. A larger DataOffset is
    /// accepted (the [`Demuxer`](crate::Demuxer) skips the extra bytes). Reserved flag
    /// bits are ignored.
    pub fn parse(buf: &[u8]) -> Result<Header, Error> {
        check_signature(buf)?;
        if buf.len() < Self::LEN {
            return Err(Error::Truncated {
                offset: 0,
                buffered: buf.len(),
            });
        }
        if buf[3] != 1 {
            return Err(Error::UnsupportedVersion {
                offset: 3,
                version: buf[3],
            });
        }
        let data_offset = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]);
        if data_offset < Self::LEN as u32 {
            return Err(Error::BadHeader {
                offset: 5,
                data_offset,
            });
        }
        Ok(Header {
            audio: buf[4] & FLAG_AUDIO != 0,
            video: buf[4] & FLAG_VIDEO != 0,
        })
    }

    /// Writes the header (DataOffset 9) followed by PreviousTagSize0 (0): the first 13
    /// bytes of every FLV stream.
    pub fn encode(&self) -> [u8; 13] {
        let mut flags = 0;
        if self.audio {
            flags |= FLAG_AUDIO;
        }
        if self.video {
            flags |= FLAG_VIDEO;
        }
        [b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0]
    }
}

/// Fails early with [`Error::NotFlv`] if the bytes available so far already differ from
/// the `FLV` signature (so garbage is rejected without waiting for 9 bytes).
pub(crate) fn check_signature(buf: &[u8]) -> Result<(), Error> {
    match buf.iter().zip(b"FLV").position(|(a, b)| a != b) {
        Some(i) => Err(Error::NotFlv { offset: i as u64 }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_flags() {
        for (audio, video) in [(false, false), (true, false), (false, true), (true, true)] {
            let h = Header { audio, video };
            let bytes = h.encode();
            assert_eq!(&bytes[..3], b"FLV");
            assert_eq!(&bytes[9..], &[0, 0, 0, 0]);
            assert_eq!(Header::parse(&bytes).unwrap(), h);
            assert_eq!(Header::parse(&bytes[..9]).unwrap(), h);
        }
        assert_eq!(
            Header {
                audio: true,
                video: true
            }
            .encode()[4],
            0x05
        );
    }

    #[test]
    fn ffmpeg_header_bytes() {
        // What `ffmpeg -f flv` writes for an audio+video stream.
        let bytes = [0x46, 0x4c, 0x56, 0x01, 0x05, 0, 0, 0, 0x09];
        assert_eq!(
            Header::parse(&bytes).unwrap(),
            Header {
                audio: true,
                video: true
            }
        );
    }

    #[test]
    fn errors_carry_offsets() {
        assert_eq!(
            Header::parse(b"GIF89a..."),
            Err(Error::NotFlv { offset: 0 })
        );
        assert_eq!(
            Header::parse(b"FLX\x01\x05\0\0\0\x09"),
            Err(Error::NotFlv { offset: 2 })
        );
        assert_eq!(
            Header::parse(b"FL"),
            Err(Error::Truncated {
                offset: 0,
                buffered: 2
            })
        );
        assert_eq!(
            Header::parse(b""),
            Err(Error::Truncated {
                offset: 0,
                buffered: 0
            })
        );
        assert_eq!(
            Header::parse(b"FLV\x02\x05\0\0\0\x09"),
            Err(Error::UnsupportedVersion {
                offset: 3,
                version: 2
            })
        );
        assert_eq!(
            Header::parse(b"FLV\x01\x05\0\0\0\x08"),
            Err(Error::BadHeader {
                offset: 5,
                data_offset: 8
            })
        );
        // Larger data offsets are legal.
        assert!(Header::parse(b"FLV\x01\x05\0\0\0\x10").is_ok());
    }

    #[test]
    fn reserved_flag_bits_ignored() {
        let h = Header::parse(b"FLV\x01\xfa\0\0\0\x09").unwrap();
        assert_eq!(
            h,
            Header {
                audio: false,
                video: false
            }
        );
    }
}
