//! FLV format.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
