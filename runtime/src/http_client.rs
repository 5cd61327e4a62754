//! Outbound HTTP/1.1 for both binaries: the operator commands talking to the admin API, and key
//! sets fetched from identity providers. hyper frames the request and reads the answer (status
//! line, headers, `Content-Length` or chunked bodies, a TLS stream cut short without
//! `close_notify` reported as an error rather than taken as the whole body), rustls speaks TLS,
//! `http::Uri` parses the URL.
//!
//! Every call is bounded: a connect timeout, one deadline for the whole exchange, and a body
//! limit. Redirects are never followed: a key set's or an admin API's address is configured
//! exactly, and a 3xx is reported as the answer it is.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use http::{Method, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;

/// Why a call failed (no answer, or one that could not be read).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not `http://` or `https://` with a host.
    #[error("`{0}`: {1}")]
    Url(String, &'static str),
    /// An `https://` URL without a TLS configuration.
    #[error("an https:// URL needs trust roots (a CA file)")]
    NoTls,
    /// The host is not a valid TLS server name.
    #[error("`{0}` is not a valid TLS server name")]
    ServerName(String),
    /// No TCP connection within the connect timeout.
    #[error("cannot reach {0}: no connection within {1:?}")]
    ConnectTimeout(String, Duration),
    /// The TCP connection or the TLS handshake failed.
    #[error("cannot reach {0}: {1}")]
    Connect(String, #[source] std::io::Error),
    /// The exchange did not finish by the deadline.
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    /// The answer's body is larger than the limit.
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    /// A header given for the request is not a valid field.
    #[error("invalid request header `{0}`")]
    Header(String),
    /// The thread or runtime a blocking call runs on could not be started or failed.
    #[error("the request's worker failed: {0}")]
    Worker(String),
    /// hyper refused to send the request or to read the answer (a malformed answer, a
    /// connection closed before the body was complete).
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

/// An answer: status, headers, the whole body.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body (at most the client's limit).
    pub body: Bytes,
}

impl Answer {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A bounded one-request-per-connection client.
#[derive(Debug, Clone)]
pub struct Client {
    tls: Option<Arc<rustls::ClientConfig>>,
    connect_timeout: Duration,
    timeout: Duration,
    max_body: usize,
}

impl Client {
    /// A client that gives up on connecting after `connect_timeout` and on the whole exchange
    /// after `timeout`, reads at most `max_body` bytes of answer, and speaks TLS with `tls`.
    pub fn new(
        tls: Option<Arc<rustls::ClientConfig>>,
        connect_timeout: Duration,
        timeout: Duration,
        max_body: usize,
    ) -> Self {
        Self { tls, connect_timeout, timeout, max_body }
    }

    /// One request; `headers` are added to `Host` (and `Content-Length` for a body).
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Answer, ClientError> {
        let uri: Uri = url.parse().map_err(|_| ClientError::Url(url.to_owned(), "not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(ClientError::Url(url.to_owned(), "only http:// and https:// URLs")),
        };
        let authority = uri.authority().ok_or(ClientError::Url(url.to_owned(), "no host"))?.clone();
        let host = authority.host().trim_matches(['[', ']']).to_owned();
        if host.is_empty() {
            return Err(ClientError::Url(url.to_owned(), "no host"));
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let mut req = hyper::Request::builder().method(method).uri(
            uri.path_and_query()
                .map_or("/", |p| p.as_str())
                .parse::<Uri>()
                .map_err(|_| ClientError::Url(url.to_owned(), "bad path"))?,
        );
        let mut map = HeaderMap::new();
        map.insert(
            HOST,
            HeaderValue::from_str(authority.as_str()).map_err(|_| ClientError::Header("host".into()))?,
        );
        for (k, v) in headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| ClientError::Header((*k).into()))?;
            let value = HeaderValue::from_str(v).map_err(|_| ClientError::Header((*k).into()))?;
            map.append(name, value);
        }
        if let Some(h) = req.headers_mut() {
            *h = map;
        }
        let req = req.body(Full::new(body)).map_err(|_| ClientError::Url(url.to_owned(), "bad request"))?;
        let exchange = self.exchange(host, port, tls, req);
        tokio::time::timeout(self.timeout, exchange).await.map_err(|_| ClientError::Timeout(self.timeout))?
    }

    async fn exchange(
        &self,
        host: String,
        port: u16,
        tls: bool,
        req: hyper::Request<Full<Bytes>>,
    ) -> Result<Answer, ClientError> {
        let target = format!("{host}:{port}");
        let tcp =
            tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect((host.as_str(), port)))
                .await
                .map_err(|_| ClientError::ConnectTimeout(target.clone(), self.connect_timeout))?
                .map_err(|e| ClientError::Connect(target.clone(), e))?;
        // A request is written as one piece; Nagle would only delay it.
        let _ = tcp.set_nodelay(true);
        if tls {
            let cfg = self.tls.clone().ok_or(ClientError::NoTls)?;
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|_| ClientError::ServerName(host.clone()))?;
            let stream = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
                .map_err(|e| ClientError::Connect(target, e))?;
            self.over(stream, req).await
        } else {
            self.over(tcp, req).await
        }
    }

    async fn over<S>(&self, stream: S, req: hyper::Request<Full<Bytes>>) -> Result<Answer, ClientError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // The connection is driven beside the request, in this task, and dropped with it:
        // nothing outlives the call.
        let asked = async {
            let resp = send.send_request(req).await?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, self.max_body).collect().await.map_err(|e| {
                match e.downcast::<hyper::Error>() {
                    Ok(h) => ClientError::Http(*h),
                    Err(_) => ClientError::TooLarge(self.max_body),
                }
            })?;
            Ok(Answer { status: parts.status.as_u16(), headers: parts.headers, body: body.to_bytes() })
        };
        tokio::pin!(asked, conn);
        tokio::select! {
            r = &mut asked => r,
            ended = &mut conn => {
                // The connection ended first: its error, or the request's own outcome.
                ended?;
                asked.await
            }
        }
    }

    /// [`Self::send`] from synchronous code (the operator commands, tests): runs on a thread of
    /// its own with a current-thread runtime, so it works inside and outside a runtime alike.
    pub fn send_blocking(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Answer, ClientError> {
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| ClientError::Worker(e.to_string()))?;
                rt.block_on(self.send(method, url, headers, body))
            })
            .join()
            .unwrap_or_else(|_| Err(ClientError::Worker("it panicked".into())))
        })
    }
}

/// A TLS client configuration trusting the CA certificates in `ca_file`, or without one the
/// platform's trust store (`rustls-native-certs`: on Linux the distribution's bundle, and the
/// files `SSL_CERT_FILE` / `SSL_CERT_DIR` name when set), so operators manage trust where the
/// rest of the host does.
pub fn tls_config(ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    Ok(Arc::new(
        rustls::ClientConfig::builder().with_root_certificates(roots(ca_file)?).with_no_client_auth(),
    ))
}

/// [`tls_config`] presenting a client certificate (`cert` chain and `key`, PEM): mutual TLS.
pub fn tls_config_with_identity(
    ca_file: Option<&std::path::Path>,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let chain = crate::pem::certs(cert).map_err(|e| e.to_string())?;
    let key_der = crate::pem::private_key(key).map_err(|e| e.to_string())?;
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots(ca_file)?)
        .with_client_auth_cert(chain, key_der)
        .map_err(|e| crate::pem::PemError::refused(cert, e).to_string())?;
    Ok(Arc::new(cfg))
}

/// The CA certificates in `ca_file`, or else the platform's trust store.
fn roots(ca_file: Option<&std::path::Path>) -> Result<rustls::RootCertStore, String> {
    match ca_file {
        Some(f) => crate::pem::roots(f).map_err(|e| e.to_string()),
        None => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found.errors.first().map_or_else(|| "none found".to_owned(), |e| e.to_string());
                return Err(format!(
                    "no usable certificates in the platform's trust store ({why}); give a CA file"
                ));
            }
            Ok(roots)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server on a free port that answers one connection with `answer` (raw bytes), then
    /// closes it; the request it read comes back through the handle.
    async fn one_shot(answer: &'static [u8]) -> (String, tokio::task::JoinHandle<String>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", l.local_addr().expect("addr"));
        let h = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(answer).await.expect("write");
            String::from_utf8_lossy(&got).into_owned()
        });
        (url, h)
    }

    fn client(max_body: usize) -> Client {
        Client::new(None, Duration::from_secs(2), Duration::from_secs(5), max_body)
    }

    #[tokio::test]
    async fn chunked_and_sized_answers_are_read_whole() {
        let (url, h) = one_shot(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .await;
        let a = client(1024)
            .send(Method::GET, &format!("{url}/x?y=1"), &[("authorization", "Bearer t")], Bytes::new())
            .await
            .expect("answer");
        assert_eq!((a.status, a.text().as_str()), (200, "abcde"));
        let req = h.await.expect("server");
        assert!(
            req.starts_with("GET /x?y=1 HTTP/1.1\r\n") && req.contains("authorization: Bearer t"),
            "{req}"
        );
    }

    // The operator CLI's hand-written de-chunker sliced text at chunk boundaries and panicked
    // when one fell inside a UTF-8 character.
    #[tokio::test]
    async fn a_chunk_boundary_inside_a_character_is_just_bytes() {
        let (url, _h) = one_shot(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\na\xc3\r\n2\r\n\xa9b\r\n0\r\n\r\n",
        )
        .await;
        let a = client(1024).send(Method::GET, &url, &[], Bytes::new()).await.expect("answer");
        assert_eq!(a.text(), "a\u{e9}b");
    }

    // The hand-written client read until the connection ended and took whatever it had: a
    // body cut short read as a complete (wrong) answer.
    #[tokio::test]
    async fn a_body_cut_short_is_an_error_not_an_answer() {
        let (url, _h) = one_shot(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part").await;
        let e = client(1024).send(Method::GET, &url, &[], Bytes::new()).await.expect_err("incomplete");
        assert!(matches!(e, ClientError::Http(_)), "{e}");
    }

    #[tokio::test]
    async fn answers_over_the_limit_are_refused() {
        let (url, _h) = one_shot(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789").await;
        let e = client(4).send(Method::GET, &url, &[], Bytes::new()).await.expect_err("too large");
        assert!(matches!(e, ClientError::TooLarge(4)), "{e}");
    }

    #[tokio::test]
    async fn redirects_are_answers_not_followed() {
        let (url, _h) =
            one_shot(b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/\r\nContent-Length: 0\r\n\r\n")
                .await;
        let a = client(1024).send(Method::GET, &url, &[], Bytes::new()).await.expect("answer");
        assert_eq!(a.status, 302);
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", l.local_addr().expect("addr"));
        let c = Client::new(None, Duration::from_secs(2), Duration::from_millis(200), 1024);
        let e = c.send(Method::GET, &url, &[], Bytes::new()).await.expect_err("timeout");
        assert!(matches!(e, ClientError::Timeout(_)), "{e}");
        drop(l);
    }

    #[test]
    fn urls_are_checked_before_connecting() {
        let c = client(1024);
        for bad in ["ftp://x/y", "not a url", "/just/a/path"] {
            assert!(
                matches!(c.send_blocking(Method::GET, bad, &[], Bytes::new()), Err(ClientError::Url(..))),
                "{bad}"
            );
        }
        let e = c.send_blocking(Method::GET, "https://127.0.0.1:1/", &[], Bytes::new()).expect_err("no tls");
        assert!(matches!(e, ClientError::NoTls | ClientError::Connect(..)), "{e}");
    }

    #[test]
    fn the_platform_trust_store_loads() {
        assert!(tls_config(None).is_ok(), "ca-certificates is installed on Debian");
    }
}
