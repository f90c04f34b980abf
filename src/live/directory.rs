//! Where a stream's publisher is: the seam a cluster fills in.
//!
//! A player asks the [`Directory`] before it is refused with 404: on a single node
//! the only answer is "here, or nowhere" ([`Local`]); a cluster answers with the
//! node that holds the stream's origin lease, and the edge pulls the stream from it
//! (an FLV byte stream fed through [`super::ingest`] into a local [`super::Publisher`],
//! like any other source).

use super::Streams;

/// Where a stream is published.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// Live on this node (or in its publisher's grace period).
    Here,
    /// Not live anywhere this node knows of.
    Nowhere,
}

/// Answers where a stream's publisher is.
pub trait Directory: Send + Sync + std::fmt::Debug {
    /// Where `name` is published.
    fn locate(&self, name: &str) -> Location;
}

/// The single-node directory: a stream is here or nowhere.
#[derive(Debug)]
pub struct Local<'a>(pub &'a Streams);

impl Directory for Local<'_> {
    fn locate(&self, name: &str) -> Location {
        if self.0.is_live(name) {
            Location::Here
        } else {
            Location::Nowhere
        }
    }
}
