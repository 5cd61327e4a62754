//! Every front end's bounded read: one idle timer and one shutdown wait per connection.

use bytes::BytesMut;
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

/// A connection's reads, bounded by its idle timeout and the agent's shutdown. One timer and
/// one shutdown wait serve the connection's life, not one of each per read: arming and
/// cancelling a timer, and adding and removing a waiter, for every request would be locks on
/// the hot path. When the timer fires on a connection that was busy since it was set, it
/// moves to `idle` after the last read, so a quiet connection closes exactly `idle` after it.
#[derive(Debug)]
pub struct Reader {
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    stopping: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    last_read: tokio::time::Instant,
}

impl Reader {
    /// Reads that give up after `idle` without a byte, or at `shutdown`.
    pub fn new(idle: Duration, shutdown: &CancellationToken) -> Self {
        Self {
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            stopping: Box::pin(shutdown.clone().cancelled_owned()),
            last_read: tokio::time::Instant::now(),
        }
    }

    /// One read into `buf`: the bytes read, or `None` at end of stream, on an error, after
    /// `idle` without a byte, or at shutdown.
    pub async fn read<S: AsyncRead + Unpin>(&mut self, s: &mut S, buf: &mut BytesMut) -> Option<usize> {
        loop {
            // Shutdown first, so a client that never pauses cannot keep its connection past
            // it; the timer last, as only a quiet connection needs it.
            tokio::select! {
                biased;
                () = self.stopping.as_mut() => return None,
                r = s.read_buf(buf) => {
                    return match r {
                        Ok(0) | Err(_) => None,
                        Ok(n) => {
                            self.last_read = tokio::time::Instant::now();
                            Some(n)
                        }
                    };
                }
                () = self.timer.as_mut() => {
                    let quiet_until = self.last_read + self.idle;
                    if quiet_until <= tokio::time::Instant::now() {
                        return None;
                    }
                    self.timer.as_mut().reset(quiet_until);
                }
            }
        }
    }
}
