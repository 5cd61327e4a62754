//! What wakes a link task besides its socket and its timer: the log grew, a newer link with the
//! same agent id replaced it, or the authority is shutting down.
//!
//! One atomic word and one waker per link, raised by one fan-out task (log growth, shutdown)
//! and by the hub (replacement). A `watch` receiver and two cancellation tokens did the same
//! job, but each takes a mutex every time the link's `select!` polls it while it is pending
//! (tokio's `Notified` locks its waiter list, a token locks its tree node), a fresh `changed()`
//! future registered and unregistered itself on every loop turn, and a link's loop turns at
//! least twice per revocation (the batch out, the ack in). Polling a [`Signal`] is one load.

use futures::task::AtomicWaker;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

/// The log's view changed: read [`crate::log::Log::view`] again. Taken by the poll that sees it.
pub const LOG_GREW: u8 = 1;
/// A newer link with the same agent id took over. Stays raised.
pub const REPLACED: u8 = 2;
/// The authority is shutting down. Stays raised.
pub const SHUTDOWN: u8 = 4;

/// One link's flags and waker.
#[derive(Debug, Default)]
pub struct Signal {
    flags: AtomicU8,
    waker: AtomicWaker,
}

impl Signal {
    /// Raises `bits` and wakes the link task.
    pub fn raise(&self, bits: u8) {
        self.flags.fetch_or(bits, Ordering::AcqRel);
        self.waker.wake();
    }

    /// Ready with every raised bit once any is; [`LOG_GREW`] is taken, the others stay.
    pub fn poll_raised(&self, cx: &mut Context<'_>) -> Poll<u8> {
        if let Some(bits) = self.take() {
            return Poll::Ready(bits);
        }
        self.waker.register(cx.waker());
        // A raise between the first look and the registration found no waker to wake.
        match self.take() {
            Some(bits) => Poll::Ready(bits),
            None => Poll::Pending,
        }
    }

    /// Resolves with the raised bits (see [`Self::poll_raised`]).
    pub fn raised(&self) -> impl std::future::Future<Output = u8> + '_ {
        std::future::poll_fn(|cx| self.poll_raised(cx))
    }

    fn take(&self) -> Option<u8> {
        if self.flags.load(Ordering::Acquire) == 0 {
            return None;
        }
        Some(self.flags.fetch_and(!LOG_GREW, Ordering::AcqRel))
    }
}

/// Every live link's [`Signal`], for the raises that reach all of them.
#[derive(Debug, Default)]
pub struct Signals {
    inner: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    links: HashMap<u64, Arc<Signal>>,
    next: u64,
    /// Bits every link registered from now on starts with ([`SHUTDOWN`] once raised).
    sticky: u8,
}

impl Signals {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A signal for a new link, listed until the returned guard drops. Register before reading
    /// the log's view, so no growth after the read goes unseen.
    pub fn register(self: &Arc<Self>) -> Registered {
        let signal = Arc::new(Signal::default());
        let mut r = self.lock();
        r.next += 1;
        let key = r.next;
        if r.sticky != 0 {
            signal.flags.fetch_or(r.sticky, Ordering::AcqRel);
        }
        r.links.insert(key, signal.clone());
        Registered { signals: self.clone(), key, signal }
    }

    /// Raises `bits` on every listed link; [`SHUTDOWN`] also on every link listed later.
    pub fn raise_all(&self, bits: u8) {
        let mut r = self.lock();
        r.sticky |= bits & SHUTDOWN;
        for s in r.links.values() {
            s.raise(bits);
        }
    }

    #[cfg(test)]
    fn listed(&self) -> usize {
        self.lock().links.len()
    }
}

/// A listed link's signal; unlisted on drop.
#[derive(Debug)]
pub struct Registered {
    signals: Arc<Signals>,
    key: u64,
    /// The link's signal.
    pub signal: Arc<Signal>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.signals.lock().links.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Wake, Waker};

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn growth_is_taken_once_and_wakes_the_registered_waker() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let s = Signal::default();
        assert_eq!(s.poll_raised(&mut cx), Poll::Pending);
        s.raise(LOG_GREW);
        s.raise(LOG_GREW);
        assert!(count.0.load(Ordering::SeqCst) >= 1, "the pending poll's waker was woken");
        assert_eq!(s.poll_raised(&mut cx), Poll::Ready(LOG_GREW));
        assert_eq!(s.poll_raised(&mut cx), Poll::Pending, "two raises before a poll are one growth");
    }

    #[test]
    fn replacement_and_shutdown_stay_raised() {
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        let s = Signal::default();
        s.raise(LOG_GREW | REPLACED);
        assert_eq!(s.poll_raised(&mut cx), Poll::Ready(LOG_GREW | REPLACED));
        assert_eq!(s.poll_raised(&mut cx), Poll::Ready(REPLACED));
    }

    #[test]
    fn shutdown_reaches_links_listed_before_and_after_it_and_dropped_links_leave() {
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        let signals = Arc::new(Signals::default());
        let before = signals.register();
        let gone = signals.register();
        drop(gone);
        assert_eq!(signals.listed(), 1);
        signals.raise_all(LOG_GREW);
        assert_eq!(before.signal.poll_raised(&mut cx), Poll::Ready(LOG_GREW));
        signals.raise_all(SHUTDOWN);
        let after = signals.register();
        assert_eq!(before.signal.poll_raised(&mut cx), Poll::Ready(SHUTDOWN));
        assert_eq!(after.signal.poll_raised(&mut cx), Poll::Ready(SHUTDOWN));
        drop((before, after));
        assert_eq!(signals.listed(), 0);
    }
}
