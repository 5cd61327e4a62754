//! The measured scenarios, one file each. Every figure comes with a baseline measured in the
//! same run.

mod checks;
mod common;
mod ha;
mod ingest;
mod memory;
mod propagation;
mod redis;
mod ssf;
mod storm;

pub(crate) use checks::{checks, echo_server, Checks};
pub(crate) use common::{post_backlog, sequential, sequential_with, throughput_with, Fleet};
pub(crate) use ha::ha;
pub(crate) use ingest::ingest;
pub(crate) use memory::{memory_probe, set_memory};
pub(crate) use propagation::{commit_alone, propagation, propagation_procs, ProcPropagation};
pub(crate) use redis::redis;
pub(crate) use ssf::ssf;
pub(crate) use storm::reconnect_storm;
