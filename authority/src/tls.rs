//! TLS for the agent endpoint and the admin API (rustls), with optional mutual TLS in which an
//! agent's client certificate must name the agent id it claims.

use revmesh_runtime::pem::{self, PemError};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use std::path::PathBuf;
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
    /// CA bundle for client certificates that may be presented but are not required (the
    /// admin port with `--admin-client-ca`: operators with tokens need none).
    pub optional_client_ca: Option<PathBuf>,
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

/// TLS material that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file was unreadable, empty or refused.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// The client CA cannot verify client certificates.
    #[error("{}: {source}", path.display())]
    ClientCa {
        /// The CA file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
}

fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let chain = pem::certs(&files.cert)?;
    let key = pem::private_key(&files.key)?;
    let builder = rustls::ServerConfig::builder();
    let builder = match (&files.client_ca, &files.optional_client_ca) {
        (Some(ca), _) => {
            let verifier = WebPkiClientVerifier::builder(Arc::new(pem::roots(ca)?))
                .build()
                .map_err(|source| TlsError::ClientCa { path: ca.clone(), source })?;
            builder.with_client_cert_verifier(verifier)
        }
        (None, Some(ca)) => {
            let verifier = WebPkiClientVerifier::builder(Arc::new(pem::roots(ca)?))
                .allow_unauthenticated()
                .build()
                .map_err(|source| TlsError::ClientCa { path: ca.clone(), source })?;
            builder.with_client_cert_verifier(verifier)
        }
        (None, None) => builder.with_no_client_auth(),
    };
    let cfg = builder.with_single_cert(chain, key).map_err(|e| PemError::refused(&files.cert, e))?;
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

impl ServerTls {
    /// Loads the files.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let a = acceptor(&files)?;
        Ok(Self { files, acceptor: Arc::new(RwLock::new(a)) })
    }

    /// Re-reads the files; on error the previous configuration stays in force.
    pub fn reload(&self) -> Result<(), TlsError> {
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

/// TLS for both listeners, loaded once by configuration validation: the agent endpoint
/// (client certificates required when a client CA is set) and the admin API (client
/// certificates accepted, not required, when `--admin-client-ca` is set: operators named by
/// certificate use them, the others their tokens).
#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// The agent endpoint.
    pub agent: ServerTls,
    /// The admin API.
    pub admin: ServerTls,
}

impl ListenerTls {
    /// Loads the files for both listeners.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let admin = ServerTls::load(TlsFiles { client_ca: None, ..files.clone() })?;
        let agent = ServerTls::load(TlsFiles { optional_client_ca: None, ..files })?;
        Ok(Self { agent, admin })
    }
}

/// True when `cert` (already verified against the client CA) is valid for `agent_id` as a DNS name.
pub fn names_agent(cert: &CertificateDer<'_>, agent_id: &str) -> bool {
    let Ok(name) = ServerName::try_from(agent_id) else { return false };
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else { return false };
    ee.verify_is_valid_for_subject_name(&name).is_ok()
}
