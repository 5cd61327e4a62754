//! revmesh-protocol: the sans-IO core shared by the authority and the agent.
//!
//! Nothing in this crate opens a socket, spawns a task or reads a clock. It holds the
//! revocation model ([`model`]), the frames of the authority–agent link ([`frame`]) and
//! their byte layout ([`codec`], the only module that uses bincode), the in-memory
//! revocation set ([`set`]), and the two delivery state machines ([`authority`] and
//! [`agent`]) that drivers feed with frames and the current time ([`time`]).

pub mod agent;
pub mod authority;
pub mod codec;
pub mod conf;
pub mod frame;
pub mod model;
pub mod set;
pub mod time;

pub use model::{Entry, EntryView, Kind, LogId, Revocation, RevocationView, TokenRef, Verdict, Withdrawn};
pub use set::RevocationSet;
pub use time::Now;
