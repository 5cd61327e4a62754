//! Process glue both revmesh binaries share, kept out of the sans-IO `revmesh-protocol`
//! crate because it reads clocks, files and signals: one clock, the shutdown signals, logging
//! set-up, the open-file limit, PEM loading and configuration errors.

pub mod clock;
pub mod config;
pub mod form;
pub mod http_client;
pub mod metrics;
pub mod net;
pub mod pem;
pub mod process;

pub use clock::Clock;
