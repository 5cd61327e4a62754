//! The agent's listeners: binding the Unix sockets safely and admitting connections on them
//! and on TCP, with the limits every connection shares (a client cap, `--allow-uid`). What a
//! connection says is the business of a front end (`front/`); what is decided, of `decide.rs`.
//! This module knows no front end.

use crate::decide::Checker;
use revmesh_runtime::net::accept;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the socket servers share.
#[derive(Debug)]
pub struct Server {
    /// The decision every front end asks for.
    pub checker: Checker,
    /// Cookie read for the token when a check has no bearer header.
    pub token_cookie: Option<String>,
    /// Peer uid allow list (empty: anyone who can open the socket).
    pub allow_uid: Vec<u32>,
    /// Client cap across both sockets.
    pub clients: Arc<Semaphore>,
    /// Idle timeout.
    pub idle: Duration,
    /// Shutdown.
    pub shutdown: CancellationToken,
    /// Connection tasks.
    pub tracker: TaskTracker,
}

/// Who may connect to the agent's Unix sockets, beside `--allow-uid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketAccess {
    /// File mode (default 0660).
    pub mode: u32,
    /// Group to give the socket (default: the agent's own).
    pub gid: Option<u32>,
}

impl Default for SocketAccess {
    fn default() -> Self {
        Self { mode: 0o660, gid: None }
    }
}

/// Why a socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The path is a symlink (it could point anywhere).
    #[error("{} is a symlink; refusing to use it", .0.display())]
    Symlink(PathBuf),
    /// Something other than a socket is there.
    #[error("{} exists and is not a socket; refusing to replace it", .0.display())]
    NotSocket(PathBuf),
    /// Another process answers on it.
    #[error("{} is live (another agent is running?)", .0.display())]
    Live(PathBuf),
    /// A file operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// Binds a Unix socket safely: refuses symlinks and non-sockets, refuses a live socket, removes a
/// stale one, then sets its group and mode.
pub fn bind_socket(path: &Path, access: SocketAccess) -> Result<UnixListener, BindError> {
    let io = |action: &'static str, p: &Path| {
        let path = p.to_owned();
        move |source| BindError::Io { action, path, source }
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            let ft = meta.file_type();
            if ft.is_symlink() {
                return Err(BindError::Symlink(path.to_owned()));
            }
            if !ft.is_socket() {
                return Err(BindError::NotSocket(path.to_owned()));
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(BindError::Live(path.to_owned()));
            }
            std::fs::remove_file(path).map_err(io("removing stale", path))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("inspecting", path)(e)),
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
    }
    let l = UnixListener::bind(path).map_err(io("binding", path))?;
    if let Some(gid) = access.gid {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(io("chgrp", path))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(access.mode))
        .map_err(io("chmod", path))?;
    Ok(l)
}

impl Server {
    fn peer_allowed(&self, s: &UnixStream) -> bool {
        if self.allow_uid.is_empty() {
            return true;
        }
        s.peer_cred().map(|c| self.allow_uid.contains(&c.uid())).unwrap_or(false)
    }

    /// The next connection on `listener` this server admits: one over the client cap, or
    /// from a uid not in `--allow-uid`, is closed at once (never queued). `None` at shutdown.
    pub async fn next_unix(&self, listener: &UnixListener) -> Option<Slot<UnixStream>> {
        loop {
            let (stream, _) = accept(|| listener.accept(), &self.shutdown, "unix").await?;
            if let Some(slot) = self.admit(stream, |s| self.peer_allowed(s)) {
                return Some(slot);
            }
        }
    }

    /// As [`Self::next_unix`], on a TCP listener (no uid check).
    pub async fn next_tcp(&self, listener: &TcpListener) -> Option<Slot<TcpStream>> {
        loop {
            let (stream, _) = accept(|| listener.accept(), &self.shutdown, "tcp").await?;
            let _ = stream.set_nodelay(true);
            if let Some(slot) = self.admit(stream, |_| true) {
                return Some(slot);
            }
        }
    }

    fn admit<S>(&self, stream: S, allowed: impl Fn(&S) -> bool) -> Option<Slot<S>> {
        let permit = self.clients.clone().try_acquire_owned().ok()?;
        allowed(&stream).then_some(Slot { stream, _permit: permit })
    }
}

/// An admitted connection; its client slot is released when it drops.
#[derive(Debug)]
pub struct Slot<S> {
    stream: S,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl<S: AsyncRead + Unpin> AsyncRead for Slot<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Slot<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl<S> tonic::transport::server::Connected for Slot<S> {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}
