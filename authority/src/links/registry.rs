//! Which agents exist and where their cursors are: the one question behind receipts,
//! `GET /v1/agents`, `GET /v1/revocations/{seq}`, `DELETE /v1/agents/{id}` and `/v1/status`.
//!
//! [`Registry::Embedded`] answers from this authority's [`Hub`]; [`Registry::Shared`] from the
//! cursors every replica publishes to the shared store (PostgreSQL), so that any replica
//! answers for the whole fleet. The admin API asks the registry and never which backend runs.

use crate::links::hub::{Hub, Level, Receipt};
use crate::store::{AgentRow, CursorStore, Forgotten, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// How often a shared receipt re-reads the cursors while it waits, and how long one read of
/// them serves every caller of this replica.
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
        /// The last read of `cursors`, shared by every request of this replica.
        last: Arc<CursorReads>,
    },
}

/// One read of the shared cursors at a time, reused for [`SHARED_POLL`]: however many requests
/// wait on receipts, this replica reads the cursor table at most once per tick. (Each waiting
/// request reading on its own, 20 times a second, is what exhausted the database's connections
/// under concurrent receipts.)
#[derive(Debug, Default)]
pub struct CursorReads {
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, CursorRead)>>,
}

/// What one read of the shared cursors gave.
type CursorRead = Result<Arc<Vec<AgentRow>>, Arc<StoreError>>;

impl CursorReads {
    /// The cursors as read at most [`SHARED_POLL`] ago, or read now; callers that arrive
    /// during a read wait for it and share its outcome, a failure included.
    async fn read(&self, cursors: &Arc<dyn CursorStore>) -> Result<Arc<Vec<AgentRow>>, StoreError> {
        let mut last = self.last.lock().await;
        let now = tokio::time::Instant::now();
        if let Some((at, outcome)) = last.as_ref() {
            if now.duration_since(*at) < SHARED_POLL {
                return outcome.clone().map_err(StoreError::Shared);
            }
        }
        let outcome = match cursors.clone().agents().await {
            Ok(mut rows) => {
                rows.sort_by(|a, b| a.id.cmp(&b.id));
                Ok(Arc::new(rows))
            }
            Err(e) => Err(Arc::new(e)),
        };
        *last = Some((tokio::time::Instant::now(), outcome.clone()));
        outcome.map_err(StoreError::Shared)
    }

    /// Forgets the last read (an agent was forgotten: the next read must not show it).
    async fn invalidate(&self) {
        *self.last.lock().await = None;
    }
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
    /// A registry over every replica's cursors in `cursors`, with this replica's links in `hub`.
    pub fn shared(hub: Arc<Hub>, cursors: Arc<dyn CursorStore>) -> Self {
        Registry::Shared { hub, cursors, last: Arc::new(CursorReads::default()) }
    }

    /// Every known agent, by id (`replica` is empty for an embedded registry).
    pub async fn agents(&self) -> Result<Vec<AgentRow>, StoreError> {
        match self {
            Registry::Embedded(hub) => Ok(hub.rows()),
            Registry::Shared { cursors, last, .. } => Ok(last.read(cursors).await?.as_ref().clone()),
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
            Registry::Shared { cursors, last, .. } => {
                let deadline = tokio::time::Instant::now() + timeout;
                loop {
                    let rows = last.read(cursors).await?;
                    let r = Receipt::of(seq, rows.iter().map(|r| (r.id.clone(), r.connected, r.applied_seq)));
                    if r.pending.is_empty() || tokio::time::Instant::now() >= deadline {
                        return Ok(r);
                    }
                    tokio::time::sleep(SHARED_POLL).await;
                }
            }
        }
    }

    /// Forgets a departed agent (a connected one cannot be forgotten), with `audit` recorded
    /// durably first (in memory only, an embedded authority's cursors have nothing to commit it
    /// with) or in the same transaction (a shared store).
    pub async fn forget(
        &self,
        id: &str,
        log: &crate::log::Log,
        audit: crate::store::AuditDraft,
    ) -> Result<Forgotten, StoreError> {
        match self {
            Registry::Embedded(hub) => {
                if hub.peek_forget(id) != Forgotten::Removed {
                    return Ok(hub.peek_forget(id));
                }
                log.record_audit(audit).await?;
                Ok(hub.forget(id))
            }
            Registry::Shared { hub, cursors, last } => {
                let local = hub.forget(id);
                if local == Forgotten::Connected {
                    return Ok(local);
                }
                let shared = cursors.clone().forget_agent(id.to_owned(), audit).await?;
                last.invalidate().await;
                Ok(if shared != Forgotten::Unknown || local == Forgotten::Unknown { shared } else { local })
            }
        }
    }
}
