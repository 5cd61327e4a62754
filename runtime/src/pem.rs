//! PEM files for TLS: certificate chains, private keys and CA bundles, with errors that name
//! the file.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};

/// A PEM file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// Unreadable, or not PEM.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// Holds no certificate.
    #[error("{}: no certificate found", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused what it holds.
    #[error("{}: {source}", path.display())]
    Refused {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
}

impl PemError {
    /// rustls refused the material of `path`.
    pub fn refused(path: &Path, source: rustls::Error) -> Self {
        PemError::Refused { path: path.to_owned(), source }
    }
}

fn read(path: &Path) -> impl FnOnce(rustls::pki_types::pem::Error) -> PemError + '_ {
    move |source| PemError::Read { path: path.to_owned(), source }
}

/// Every certificate in `path` (at least one).
pub fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(read(path))?
        .collect::<Result<_, _>>()
        .map_err(read(path))?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate { path: path.to_owned() });
    }
    Ok(certs)
}

/// The first private key in `path`.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_file(path).map_err(read(path))
}

/// A trust store of every CA certificate in `path` (at least one).
pub fn roots(path: &Path) -> Result<rustls::RootCertStore, PemError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(path)? {
        roots.add(c).map_err(|e| PemError::refused(path, e))?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("revmesh-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").ok();
        let e = roots(&empty).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("empty.pem") && e.contains("no certificate"), "{e}");
        let missing = dir.join("missing.pem");
        let e = certs(&missing).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("missing.pem"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
