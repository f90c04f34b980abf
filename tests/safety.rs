//! placeholder
mod common;

#[test]
fn placeholder() {}
