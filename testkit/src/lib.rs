//! Test-only helpers shared by the integration tests of the authority and the agent: a small
//! PKI (rcgen) and a JWKS server over HTTPS that the test controls (the document it serves,
//! and misbehaviour: down, never answering, oversized, garbage), counting every fetch; and a
//! throwaway PostgreSQL cluster ([`pg::Cluster`]).

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod pg;

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    SanType,
};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// A test certificate authority.
#[allow(missing_debug_implementations)]
pub struct Ca {
    /// Its certificate.
    pub cert: rcgen::Certificate,
    key: KeyPair,
}

/// A self-signed CA named `name`.
pub fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    Ca { cert: p.self_signed(&key).unwrap(), key }
}

/// Writes `name.pem` and `name.key` signed by `ca`; returns their paths.
pub fn leaf(dir: &Path, ca: &Ca, name: &str, dns: &str, client: bool, expired: bool) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec![dns.to_owned()]).unwrap();
    p.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    p.extended_key_usages =
        vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
    if expired {
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2021, 1, 1);
    }
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let (c, k) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

/// How the JWKS server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// 200 with the published document.
    Serve = 0,
    /// Closes the connection at once.
    Down = 1,
    /// Reads the request and never answers.
    Hang = 2,
    /// 200 with 10 MB of JSON-looking bytes.
    Huge = 3,
    /// 200 with something that is not a JWKS.
    Garbage = 4,
}

/// A JWKS over HTTPS under its own CA; stops with the process.
#[derive(Debug)]
pub struct JwksServer {
    /// Address.
    pub addr: std::net::SocketAddr,
    body: Arc<Mutex<String>>,
    mode: Arc<AtomicU8>,
    fetches: Arc<AtomicU64>,
    /// The CA file to trust.
    pub ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl JwksServer {
    /// Serves `body` at any path.
    pub fn start(body: String) -> JwksServer {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca("jwks test CA");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.cert.pem()).unwrap();
        let (cert, key) = leaf(dir.path(), &ca, "idp", "localhost", false, false);
        let chain = revmesh_runtime::pem::certs(&cert).unwrap();
        let key = revmesh_runtime::pem::private_key(&key).unwrap();
        let cfg = Arc::new(
            rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(chain, key).unwrap(),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let body = Arc::new(Mutex::new(body));
        let mode = Arc::new(AtomicU8::new(Mode::Serve as u8));
        let fetches = Arc::new(AtomicU64::new(0));
        let (b, m, f) = (body.clone(), mode.clone(), fetches.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(tcp) = stream else { return };
                let (cfg, b, m, f) = (cfg.clone(), b.clone(), m.clone(), f.clone());
                std::thread::spawn(move || serve_one(tcp, cfg, &b, &m, &f));
            }
        });
        JwksServer { addr, body, mode, fetches, ca_file, _dir: dir }
    }

    /// The URL of the document.
    pub fn url(&self) -> String {
        format!("https://localhost:{}/realms/shop/protocol/openid-connect/certs", self.addr.port())
    }

    /// Requests answered or refused so far.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Serves `body` from now on.
    pub fn publish(&self, body: &str) {
        body.clone_into(&mut self.body.lock().unwrap());
    }

    /// Answers as `mode` from now on.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }
}

fn serve_one(
    mut tcp: std::net::TcpStream,
    cfg: Arc<rustls::ServerConfig>,
    body: &Mutex<String>,
    mode: &AtomicU8,
    fetches: &AtomicU64,
) {
    let mode = mode.load(Ordering::SeqCst);
    fetches.fetch_add(1, Ordering::SeqCst);
    if mode == Mode::Down as u8 {
        return;
    }
    let Ok(conn) = rustls::ServerConnection::new(cfg) else { return };
    let mut tls = rustls::StreamOwned::new(conn, &mut tcp);
    let mut req = Vec::new();
    let mut byte = [0u8; 1];
    while !req.ends_with(b"\r\n\r\n") && req.len() < 8192 {
        if tls.read(&mut byte).unwrap_or(0) == 0 {
            return;
        }
        req.push(byte[0]);
    }
    let body = match mode {
        m if m == Mode::Hang as u8 => {
            std::thread::sleep(std::time::Duration::from_secs(60));
            return;
        }
        m if m == Mode::Huge as u8 => format!("{{\"keys\":[\"{}\"]}}", "a".repeat(10 << 20)),
        m if m == Mode::Garbage as u8 => "<html>not a key set</html>".to_owned(),
        _ => body.lock().unwrap().clone(),
    };
    let head = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nCache-Control: public, max-age=3600\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let _ = tls.write_all(head.as_bytes());
    let _ = tls.write_all(body.as_bytes());
    tls.conn.send_close_notify();
    let _ = tls.flush();
}
