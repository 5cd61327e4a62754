//! A TCP relay that the soak can slow down: while slow, every chunk is delivered [`LATENCY`]
//! after it was read (each way), and each direction is capped at [`RATE`] bytes a second. A
//! slow link, not a broken one: nothing is dropped or reordered.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Added to each chunk, each way, while slow.
pub const LATENCY: Duration = Duration::from_millis(250);
/// Bytes a second, each way, while slow.
pub const RATE: u64 = 64 * 1024;
/// Largest chunk read at once (so the rate cap paces a large write).
const CHUNK: usize = 16 * 1024;

/// A relay listening on `addr`, forwarding to `upstream`.
#[derive(Debug)]
pub struct Relay {
    /// Where it listens.
    pub addr: String,
    slow: Arc<AtomicBool>,
}

impl Relay {
    /// Listens on `listen` (port 0 for a free one) and forwards each connection to `upstream`.
    pub fn start(listen: &str, upstream: String) -> anyhow::Result<Relay> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?.to_string();
        let slow = Arc::new(AtomicBool::new(false));
        let flag = slow.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(down) = conn else { continue };
                let Ok(up) = TcpStream::connect_timeout(
                    &match upstream.parse() {
                        Ok(a) => a,
                        Err(_) => return,
                    },
                    Duration::from_secs(5),
                ) else {
                    let _ = down.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = (down.set_nodelay(true), up.set_nodelay(true));
                for (from, to) in [(down.try_clone(), up.try_clone()), (up.try_clone(), down.try_clone())] {
                    if let (Ok(from), Ok(to)) = (from, to) {
                        let flag = flag.clone();
                        std::thread::spawn(move || pipe(from, to, flag));
                    }
                }
            }
        });
        Ok(Relay { addr, slow })
    }

    /// Slows the relay down, or lets it run at full speed again.
    pub fn set_slow(&self, slow: bool) {
        self.slow.store(slow, Ordering::Release);
    }
}

/// One direction: a reader stamps chunks, a writer delivers each when it is due and paces the
/// bytes; either end closing closes both.
fn pipe(mut from: TcpStream, to: TcpStream, slow: Arc<AtomicBool>) {
    // Bounded: a slowed relay holds back its sender (TCP's own backpressure), not memory.
    let (tx, rx) = mpsc::sync_channel::<(Instant, Vec<u8>)>(32);
    let writer = std::thread::spawn(move || {
        let mut to = to;
        for (due, chunk) in rx {
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
    let mut buf = vec![0u8; CHUNK];
    // When the last chunk will have been paced out at RATE (slow mode only).
    let mut paced = Instant::now();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let now = Instant::now();
        let due = if slow.load(Ordering::Acquire) {
            paced = paced.max(now) + Duration::from_secs_f64(n as f64 / RATE as f64);
            paced + LATENCY
        } else {
            now
        };
        if tx.send((due, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = from.shutdown(Shutdown::Both);
    let _ = writer.join();
}
