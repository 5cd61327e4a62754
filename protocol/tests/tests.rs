//! Integration tests of revmesh-protocol: the deterministic delivery simulation and codec properties.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod codec_props;
mod sim;
