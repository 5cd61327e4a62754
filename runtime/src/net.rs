//! The one accept loop step every listener of both binaries uses, so that running out of file
//! descriptors behaves the same on each: the listener pauses instead of spinning a core on a
//! failing `accept`, and shutdown is never delayed by the pause.

use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a listener rests after an `accept` that failed because the process or the system
/// is out of descriptors or memory: nothing can succeed until a connection closes, and
/// retrying at once only burns the core that would serve the open ones.
pub const EXHAUSTED_PAUSE: Duration = Duration::from_millis(100);

/// The next accepted connection from `accept` (called again after each failure), or `None` at
/// `shutdown`. A failed accept is logged and retried: at once when one peer gave up before it
/// was accepted, after [`EXHAUSTED_PAUSE`] when descriptors or memory ran out, after a short
/// pause otherwise.
pub async fn accept<S, A, F>(
    mut accept: impl FnMut() -> F,
    shutdown: &CancellationToken,
    what: &str,
) -> Option<(S, A)>
where
    F: Future<Output = std::io::Result<(S, A)>>,
{
    loop {
        let failed = tokio::select! {
            biased;
            () = shutdown.cancelled() => return None,
            r = accept() => match r {
                Ok(conn) => return Some(conn),
                Err(e) => e,
            },
        };
        let pause = pause_after(&failed);
        tracing::warn!(listener = what, error = %failed, pause_ms = pause.as_millis() as u64, "accept failed");
        if !pause.is_zero() {
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// The pause after a failed accept (see [`accept`]).
pub fn pause_after(e: &std::io::Error) -> Duration {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => EXHAUSTED_PAUSE,
        _ if matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::Interrupted
        ) =>
        {
            Duration::ZERO
        }
        _ => Duration::from_millis(20),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    #[test]
    fn exhaustion_pauses_and_a_vanished_peer_does_not() {
        assert_eq!(pause_after(&Error::from_raw_os_error(libc::EMFILE)), EXHAUSTED_PAUSE);
        assert_eq!(pause_after(&Error::from_raw_os_error(libc::ENFILE)), EXHAUSTED_PAUSE);
        assert_eq!(pause_after(&Error::from(ErrorKind::ConnectionAborted)), Duration::ZERO);
        assert_eq!(pause_after(&Error::from_raw_os_error(libc::EPROTO)), Duration::from_millis(20));
    }

    // Virtual time: a listener out of descriptors tries again every EXHAUSTED_PAUSE, not in a
    // tight loop, and stops at shutdown.
    #[tokio::test(start_paused = true)]
    async fn an_exhausted_listener_retries_at_the_pause_and_stops_at_shutdown() {
        let stop = CancellationToken::new();
        let calls = std::cell::Cell::new(0u32);
        let t0 = tokio::time::Instant::now();
        let failing = || {
            calls.set(calls.get() + 1);
            if calls.get() == 5 {
                stop.cancel();
            }
            async { Err::<((), ()), _>(Error::from_raw_os_error(libc::EMFILE)) }
        };
        assert!(accept(failing, &stop, "test").await.is_none());
        assert_eq!(calls.get(), 5);
        assert_eq!(t0.elapsed(), EXHAUSTED_PAUSE * 4);
    }
}
