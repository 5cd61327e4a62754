//! Which agents exist and where their cursors are: the one question behind receipts,
//! `GET /v1/agents`, `GET /v1/revocations/{seq}`, `DELETE /v1/agents/{id}` and `/v1/status`.
//!
//! [`Registry::Embedded`] answers from this authority's [`Hub`]; [`Registry::Shared`] from the
//! cursors every replica publishes to the shared store (PostgreSQL), so that any replica
//! answers for the whole fleet. The admin API asks the registry and never which backend runs.

use crate::hub::{Hub, Level, Receipt};
use crate::store::{AgentRow, CursorStore, Forgotten, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// How often a shared receipt re-reads the cursors while it waits.
const SHARED_POLL: Duration = Duration::from_millis(50);

/// The agents an authority can answer for.
#[derive(Clone)]
pub enum Registry {
    /// This process's links only.
    Embedded(Arc<Hub>),
    /// Every replica's links, from the shared cursor store; `hub` holds this replica's own.
    Shared {
        /// This replica's links.
        hub: Arc<Hub>,
        /// Every replica's published cursors.
        cursors: Arc<dyn CursorStore>,
    },
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Registry::Embedded(_) => "Registry::Embedded",
            Registry::Shared { .. } => "Registry::Shared",
        })
    }
}

impl Registry {
    /// Every known agent, by id (`replica` is empty for an embedded registry).
    pub async fn agents(&self) -> Result<Vec<AgentRow>, StoreError> {
        match self {
            Registry::Embedded(hub) => Ok(hub.rows()),
            Registry::Shared { cursors, .. } => {
                let cursors = cursors.clone();
                let mut rows = tokio::task::spawn_blocking(move || cursors.agents()).await??;
                rows.sort_by(|a, b| a.id.cmp(&b.id));
                Ok(rows)
            }
        }
    }

    /// The receipt for `seq` at `level`, once every connected agent has applied it or
    /// `timeout` passes (`Duration::ZERO`: at once).
    ///
    /// Replicas publish durable cursors only, so a shared registry answers the applied level
    /// with them: the stronger promise, and no sooner than a durable receipt.
    pub async fn receipt(&self, seq: u64, timeout: Duration, level: Level) -> Result<Receipt, StoreError> {
        match self {
            Registry::Embedded(hub) => Ok(hub.wait_all(seq, timeout, level).await),
            Registry::Shared { .. } => {
                let deadline = tokio::time::Instant::now() + timeout;
                loop {
                    let rows = self.agents().await?;
                    let r = Receipt::of(seq, rows.into_iter().map(|r| (r.id, r.connected, r.applied_seq)));
                    if r.pending.is_empty() || tokio::time::Instant::now() >= deadline {
                        return Ok(r);
                    }
                    tokio::time::sleep(SHARED_POLL).await;
                }
            }
        }
    }

    /// Forgets a departed agent (a connected one cannot be forgotten).
    pub async fn forget(&self, id: &str) -> Result<Forgotten, StoreError> {
        match self {
            Registry::Embedded(hub) => Ok(hub.forget(id)),
            Registry::Shared { hub, cursors } => {
                let local = hub.forget(id);
                if local == Forgotten::Connected {
                    return Ok(local);
                }
                let (cursors, shared_id) = (cursors.clone(), id.to_owned());
                let shared = tokio::task::spawn_blocking(move || cursors.forget_agent(&shared_id)).await??;
                Ok(if shared != Forgotten::Unknown || local == Forgotten::Unknown { shared } else { local })
            }
        }
    }
}
