//! A TCP relay the tests control, to put a network partition between the authority and its
//! PostgreSQL without touching the server (which other sessions on the machine may use).

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// `(black_holed, epoch)`: while black-holed, connections stay open and nothing crosses; when
/// the partition heals the epoch moves and every connection from before is closed.
type Mode = (bool, u64);

pub struct Relay {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(upstream: SocketAddr) -> Relay {
        Self::start_delayed(upstream, std::time::Duration::ZERO).await
    }

    /// A relay that holds every chunk `delay` before passing it on, in each direction: a
    /// server that far away.
    pub async fn start_delayed(upstream: SocketAddr, delay: std::time::Duration) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, rx) = watch::channel((false, 0));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream, rx.clone(), delay));
            }
        });
        Relay { addr, mode, task }
    }

    /// Stop forwarding: connections stay open, nothing gets through in either direction.
    pub fn black_hole(&self) {
        self.mode.send_modify(|m| m.0 = true);
    }

    /// End the partition: connections from before it are closed, new ones are forwarded.
    pub fn heal(&self) {
        self.mode.send_modify(|m| *m = (false, m.1 + 1));
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn until_healed(mut mode: watch::Receiver<Mode>, epoch: u64) {
    while mode.borrow_and_update().1 == epoch {
        if mode.changed().await.is_err() {
            return;
        }
    }
}

async fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    delay: std::time::Duration,
) {
    let (black, epoch) = *mode.borrow_and_update();
    if black {
        // Accepted (the kernel did it anyway), never answered.
        return until_healed(mode, epoch).await;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
    let (mut a, mut b) = (vec![0u8; 16 << 10], vec![0u8; 16 << 10]);
    loop {
        if mode.borrow_and_update().0 {
            // Held open, silent, until the partition heals; then both sides are closed.
            let _keep = (&client, &server);
            return until_healed(mode, epoch).await;
        }
        tokio::select! {
            r = client.read(&mut a) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    tokio::time::sleep(delay).await;
                    if server.write_all(&a[..n]).await.is_err() { return }
                }
            },
            r = server.read(&mut b) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    tokio::time::sleep(delay).await;
                    if client.write_all(&b[..n]).await.is_err() { return }
                }
            },
            r = mode.changed() => if r.is_err() { return },
        }
    }
}
