//! The change feed: `GET /v1/revocations/stream`, Server-Sent Events with one event per entry
//! (`id: <seq>`, `event: revocation`, `data:` the entry as the list endpoint shows it), for
//! consumers that cannot run an agent (other languages' caches, SIEMs).
//!
//! A consumer resumes with `Last-Event-ID` (or `?after=SEQ`) and sees every seq exactly once.
//! A cursor below the compaction floor gets one `event: reset` and the stream ends: entries
//! after it may be gone, and the consumer must reread from the list endpoint.

use crate::api::{entry_json, AdminState, ApiError};
use crate::log::Log;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Entries read from the log per step.
const PAGE: usize = 512;

/// `?after=SEQ`.
#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    after: Option<u64>,
}

/// Where a stream starts: `Last-Event-ID` wins over `?after=`; without either, at the head.
pub fn start_cursor(last_event_id: Option<&str>, after: Option<u64>, head: u64) -> Result<u64, ApiError> {
    match last_event_id {
        Some(id) => id.trim().parse().map_err(|_| {
            ApiError::bad("Last-Event-ID", "`Last-Event-ID` must be a seq (a non-negative integer)")
        }),
        None => Ok(after.unwrap_or(head)),
    }
}

/// What the stream sends next from `cursor`.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Entries after the cursor may have been compacted away: reset and end.
    Reset,
    /// Send what follows the cursor (possibly nothing yet).
    Entries,
}

/// A cursor strictly below the floor may have missed compacted entries.
pub fn next(cursor: u64, floor: u64) -> Next {
    if cursor < floor {
        Next::Reset
    } else {
        Next::Entries
    }
}

/// `GET /v1/revocations/stream`, behind the admin token.
pub(crate) fn routes(state: AdminState) -> axum::Router {
    let auth = axum::middleware::from_fn_with_state(state.clone(), crate::api::auth);
    axum::Router::new()
        .route("/v1/revocations/stream", axum::routing::get(stream))
        .route_layer(auth)
        .with_state(state)
}

/// `GET /v1/revocations/stream`.
pub async fn stream(
    State(s): State<AdminState>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad("query", e.body_text()))?;
    let last = match headers.get("last-event-id").map(|v| v.to_str()) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => return Err(ApiError::bad("Last-Event-ID", "`Last-Event-ID` is not text")),
    };
    let cursor = start_cursor(last, q.after, s.log.view().head)?;
    let events = events(s.log.clone(), cursor, s.shutdown.clone());
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(s.heartbeat).text("heartbeat")).into_response())
}

struct Feed {
    log: Arc<Log>,
    cursor: u64,
    changes: watch::Receiver<revmesh_protocol::authority::LogView>,
    pending: std::vec::IntoIter<Event>,
    done: bool,
    shutdown: CancellationToken,
}

fn events(
    log: Arc<Log>,
    cursor: u64,
    shutdown: CancellationToken,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let changes = log.subscribe();
    let feed = Feed { log, cursor, changes, pending: Vec::new().into_iter(), done: false, shutdown };
    futures::stream::unfold(feed, |mut f| async move {
        loop {
            if let Some(e) = f.pending.next() {
                return Some((Ok(e), f));
            }
            if f.done {
                return None;
            }
            let view = f.log.view();
            if next(f.cursor, view.floor) == Next::Reset {
                f.done = true;
                let data = serde_json::json!({"after": f.cursor, "floor": view.floor, "head": view.head});
                f.pending = vec![Event::default().event("reset").data(data.to_string())].into_iter();
                continue;
            }
            let log_id = view.log_id.to_string();
            let page = f.log.list(f.cursor, PAGE);
            if let Some(last) = page.last() {
                f.cursor = last.seq;
                let batch: Vec<Event> = page
                    .iter()
                    .map(|e| {
                        Event::default()
                            .id(e.seq.to_string())
                            .event("revocation")
                            .data(entry_json(e, &log_id).to_string())
                    })
                    .collect();
                f.pending = batch.into_iter();
                continue;
            }
            // Caught up: wait for the head or the floor to move.
            f.changes.borrow_and_update();
            if f.log.view().head > f.cursor {
                continue;
            }
            tokio::select! {
                r = f.changes.changed() => if r.is_err() { return None },
                _ = f.shutdown.cancelled() => return None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_start_where_the_consumer_says_and_reset_below_the_floor() {
        assert_eq!(start_cursor(Some("17"), Some(3), 99).ok(), Some(17), "Last-Event-ID wins");
        assert_eq!(start_cursor(None, Some(3), 99).ok(), Some(3));
        assert_eq!(start_cursor(None, None, 99).ok(), Some(99), "new consumers start at the head");
        assert!(start_cursor(Some("x"), None, 99).is_err());
        assert_eq!(next(10, 10), Next::Entries, "at the floor nothing after it is missing");
        assert_eq!(next(9, 10), Next::Reset);
        assert_eq!(next(0, 0), Next::Entries);
    }
}
