//! The keys checks verify with: the files (`--hs256-secret-file`, `--public-key-file`,
//! `--jwks-file`, re-read on SIGHUP) and every `--jwks-url` set (refreshed on schedule and on
//! an unknown `kid`), composed into one set that checks load without a lock.
//!
//! Architecture invariant: a check never waits for a fetch. An unknown `kid` starts at most
//! one background refresh per URL, and only when the URL's minimum refresh interval has
//! passed, so tokens with random `kid`s cannot make the agent flood the identity provider.

use crate::jwt::Keys;
use arc_swap::ArcSwap;
use revmesh_jwt::remote::RemoteKeys;
use std::sync::Arc;

/// File keys plus remote sets.
#[derive(Debug)]
pub struct KeyRing {
    files: ArcSwap<Keys>,
    remotes: Vec<Arc<RemoteKeys>>,
    composed: ArcSwap<Keys>,
    metrics: Option<crate::metrics::Metrics>,
}

impl KeyRing {
    /// A ring of `files` and `remotes` (whose current sets are included at once).
    pub fn new(files: Arc<Keys>, remotes: Vec<Arc<RemoteKeys>>) -> Arc<Self> {
        Self::with_metrics(files, remotes, None)
    }

    /// The same, keeping `revmesh_agent_keys{source}` up to date in `metrics`.
    pub fn with_metrics(
        files: Arc<Keys>,
        remotes: Vec<Arc<RemoteKeys>>,
        metrics: Option<crate::metrics::Metrics>,
    ) -> Arc<Self> {
        let ring =
            Arc::new(Self { files: ArcSwap::new(files), remotes, composed: ArcSwap::default(), metrics });
        ring.recompose();
        ring
    }

    /// The keys in force.
    pub fn load(&self) -> arc_swap::Guard<Arc<Keys>> {
        self.composed.load()
    }

    /// The remote sets.
    pub fn remotes(&self) -> &[Arc<RemoteKeys>] {
        &self.remotes
    }

    /// Replaces the file keys (SIGHUP).
    pub fn set_files(&self, files: Arc<Keys>) {
        self.files.store(files);
        self.recompose();
    }

    /// Rebuilds the composed set (after a reload or a fetch).
    pub fn recompose(&self) {
        let mut keys = (**self.files.load()).clone();
        for r in &self.remotes {
            keys = keys.merged(&r.keys());
        }
        self.composed.store(Arc::new(keys));
        if let Some(m) = &self.metrics {
            let (files, urls) = self.counts();
            m.keys.with_label_values(&["file"]).set(files as i64);
            m.keys.with_label_values(&["url"]).set(urls as i64);
            m.set_configured_kids(self.composed.load().kids().map(str::to_owned).collect());
        }
    }

    /// Keys in use, by source (`file`, `url`).
    pub fn counts(&self) -> (usize, usize) {
        (self.files.load().len(), self.remotes.iter().map(|r| r.keys().len()).sum())
    }

    /// A token named a key nobody has: refresh, in the background, every URL that is due.
    /// Never blocks; does nothing outside a runtime or without URLs.
    pub fn unknown_key(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        for r in self.remotes.iter().filter(|r| r.due()) {
            let (r, ring) = (r.clone(), self.clone());
            rt.spawn(async move {
                if r.refresh().await.is_ok() {
                    ring.recompose();
                }
            });
        }
    }
}
