// The build script both binaries share.
include!("../build-support/commit.rs");
