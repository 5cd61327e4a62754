//! TLS for the agent endpoint and the admin API (rustls), with optional mutual TLS in which an
//! agent's client certificate must name the agent id it claims.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio_rustls::TlsAcceptor;

/// Where the TLS material lives (re-read on SIGHUP).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// CA bundle for client certificates: mutual TLS when set.
    pub client_ca: Option<PathBuf>,
}

/// The current acceptor, swappable at run time.
#[derive(Clone)]
pub struct ServerTls {
    files: TlsFiles,
    acceptor: Arc<RwLock<TlsAcceptor>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("files", &self.files).finish()
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", path.display()));
    }
    Ok(certs)
}

fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, String> {
    let chain = certs(&files.cert)?;
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|e| format!("{}: {e}", files.key.display()))?;
    let builder = rustls::ServerConfig::builder();
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca)? {
                roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let cfg = builder.with_single_cert(chain, key).map_err(|e| format!("{}: {e}", files.cert.display()))?;
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

impl ServerTls {
    /// Loads the files.
    pub fn load(files: TlsFiles) -> Result<Self, String> {
        let a = acceptor(&files)?;
        Ok(Self { files, acceptor: Arc::new(RwLock::new(a)) })
    }

    /// Re-reads the files; on error the previous configuration stays in force.
    pub fn reload(&self) -> Result<(), String> {
        let a = acceptor(&self.files)?;
        *self.acceptor.write().unwrap_or_else(|p| p.into_inner()) = a;
        Ok(())
    }

    /// The acceptor for a new connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// True when client certificates are required.
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }
}

/// True when `cert` (already verified against the client CA) is valid for `agent_id` as a DNS name.
pub fn names_agent(cert: &CertificateDer<'_>, agent_id: &str) -> bool {
    let Ok(name) = ServerName::try_from(agent_id) else { return false };
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else { return false };
    ee.verify_is_valid_for_subject_name(&name).is_ok()
}
