//! [`TlsAcceptor`]: the server side of TLS on one listener, with the
//! certificate reloaded when its files change.
//!
//! The current `ServerConfig` sits behind a lock held only to clone or
//! swap an `Arc`. At most once per [`TlsAcceptor::check_every`], an accept
//! looks at the files' size and modification time (in `spawn_blocking`);
//! when they changed, the config is rebuilt from them and new connections
//! get it, connections already open keep theirs. A rebuild that fails (a
//! half-written file, a key that does not match) is logged as a warning and
//! the old config stays in service; the next change of the files is tried
//! again.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

use super::HANDSHAKE_TIMEOUT;
use super::load::{LoadError, TlsFiles, server_config};

/// What a file looked like when it was last read: (size, mtime), or `None`
/// when it could not be looked at.
type Stamp = Option<(u64, SystemTime)>;

fn stamps(files: &TlsFiles) -> Vec<Stamp> {
    files
        .paths()
        .into_iter()
        .map(|p: &Path| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.len(), m.modified().ok()?))
        })
        .collect()
}

#[derive(Debug)]
struct Current {
    config: Arc<ServerConfig>,
    stamps: Vec<Stamp>,
    next_check: Instant,
}

/// TLS handshakes for one listener, from files reloaded when they change.
#[derive(Debug)]
pub struct TlsAcceptor {
    files: TlsFiles,
    alpn: Vec<Vec<u8>>,
    /// Which listener, for logs ("gRPC", "Kafka", "HTTP").
    listener: &'static str,
    check_every: Duration,
    current: Mutex<Current>,
}

impl TlsAcceptor {
    /// Loads `files` for `listener`, offering `alpn`. Fails when a file
    /// cannot be read or used (the broker does not start).
    pub async fn load(
        files: TlsFiles,
        alpn: &[&[u8]],
        listener: &'static str,
    ) -> Result<TlsAcceptor, LoadError> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let (config, stamps) = {
            let files = files.clone();
            let alpn = alpn.clone();
            tokio::task::spawn_blocking(move || build(&files, &alpn))
                .await
                .map_err(|e| LoadError::Unusable {
                    what: "loading the TLS files".into(),
                    message: e.to_string(),
                })??
        };
        let check_every = Duration::from_secs(1);
        Ok(TlsAcceptor {
            files,
            alpn,
            listener,
            check_every,
            current: Mutex::new(Current {
                config: Arc::new(config),
                stamps,
                next_check: Instant::now() + check_every,
            }),
        })
    }

    /// Looks at the files at most this often (default: a second).
    pub fn check_every(mut self, every: Duration) -> Self {
        self.check_every = every;
        self.current.get_mut().next_check = Instant::now() + every;
        self
    }

    /// The config for a new connection: the current one, rebuilt first if
    /// it is time to look at the files and they changed.
    pub async fn config(&self) -> Arc<ServerConfig> {
        let (config, old_stamps) = {
            let mut current = self.current.lock();
            let now = Instant::now();
            if now < current.next_check {
                return current.config.clone();
            }
            current.next_check = now + self.check_every;
            (current.config.clone(), current.stamps.clone())
        };
        let files = self.files.clone();
        let alpn = self.alpn.clone();
        let reloaded = tokio::task::spawn_blocking(move || {
            let now = stamps(&files);
            if now == old_stamps {
                return None;
            }
            Some(build(&files, &alpn).map_err(|e| (e, now)))
        })
        .await;
        match reloaded {
            Ok(None) => config,
            Ok(Some(Ok((config, stamps)))) => {
                tracing::info!(
                    listener = self.listener,
                    cert = %self.files.cert.display(),
                    "TLS files changed: serving the new certificate to new connections"
                );
                let config = Arc::new(config);
                let mut current = self.current.lock();
                current.config = config.clone();
                current.stamps = stamps;
                config
            }
            Ok(Some(Err((e, stamps)))) => {
                tracing::warn!(
                    listener = self.listener,
                    error = %anyhow::Error::from(e).chain().map(ToString::to_string).collect::<Vec<_>>().join(": "),
                    "TLS files changed but cannot be used; still serving the previous certificate (fix the files, they are read again when they change)"
                );
                // Do not try these very files again: wait for the next change.
                self.current.lock().stamps = stamps;
                config
            }
            Err(e) => {
                tracing::warn!(listener = self.listener, error = %e, "cannot look at the TLS files");
                config
            }
        }
    }

    /// The TLS handshake on `stream`, within [`HANDSHAKE_TIMEOUT`]; returns
    /// the TLS stream and the principal of a verified client certificate.
    pub async fn accept<S>(&self, stream: S) -> std::io::Result<(TlsStream<S>, Option<String>)>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let config = self.config().await;
        let handshake = tokio_rustls::TlsAcceptor::from(config)
            .accept(stream)
            .into_fallible();
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no TLS handshake within {}s", HANDSHAKE_TIMEOUT.as_secs()),
                ));
            }
            Ok(Ok(tls)) => tls,
            Ok(Err((e, io))) => {
                linger(io).await;
                return Err(e);
            }
        };
        let principal = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(super::principal::of);
        Ok((tls, principal))
    }
}

/// How long a connection whose handshake failed is kept to let the client
/// read the alert.
const LINGER: Duration = Duration::from_secs(1);

/// Closes a connection whose handshake failed so that the client reads the
/// alert rustls sent (say, "certificate required") instead of a reset:
/// stop writing, then read and drop what the client still sends, until it
/// closes or for [`LINGER`]. Closing with unread data would send a TCP
/// reset, which discards the alert before the client reads it (TLS 1.3
/// clients send their first request before the server has checked their
/// certificate).
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = io.shutdown().await;
    let _ = tokio::time::timeout(LINGER, async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = io.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// The config of `files` and the files' stamps taken before reading them
/// (so a change made while reading is seen at the next check).
fn build(files: &TlsFiles, alpn: &[Vec<u8>]) -> Result<(ServerConfig, Vec<Stamp>), LoadError> {
    let stamps = stamps(files);
    let alpn: Vec<&[u8]> = alpn.iter().map(Vec::as_slice).collect();
    Ok((server_config(files, &alpn)?, stamps))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_certs::TestCerts;
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Connects a rustls client trusting the test CA (and presenting the
    /// client certificate when `mtls`); returns the server certificate's
    /// subject principal and what the server saw.
    async fn handshake(
        acceptor: &TlsAcceptor,
        certs: &TestCerts,
        mtls: bool,
    ) -> (Option<String>, std::io::Result<Option<String>>) {
        let mut roots = rustls::RootCertStore::empty();
        for c in crate::tls::load::read_certs("ca", &certs.ca_cert).expect("ca") {
            roots.add(c).expect("root");
        }
        let builder = rustls::ClientConfig::builder_with_provider(crate::tls::load::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let config = if mtls {
            let chain = crate::tls::load::read_certs("c", &certs.client_cert).expect("cert");
            let key = crate::tls::load::read_key("k", &certs.client_key).expect("key");
            builder.with_client_auth_cert(chain, key).expect("identity")
        } else {
            builder.with_no_client_auth()
        };
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let client = async {
            let name = ServerName::try_from("localhost").expect("name");
            let mut tls = connector.connect(name, client_io).await.ok()?;
            // TLS 1.3: a refused client certificate shows on the first read.
            tls.write_all(b"ping").await.ok()?;
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await.ok()?;
            let cert = tls.get_ref().1.peer_certificates()?.first()?.clone();
            crate::tls::principal::of(&cert)
        };
        let server = async {
            let (mut tls, principal) = acceptor.accept(server_io).await?;
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await?;
            tls.write_all(b"pong").await?;
            tls.flush().await?;
            Ok(principal)
        };
        tokio::join!(client, server)
    }

    fn files(certs: &TestCerts, client_ca: bool) -> TlsFiles {
        TlsFiles {
            cert: certs.server_cert.clone(),
            key: certs.server_key.clone(),
            client_ca: client_ca.then(|| certs.ca_cert.clone()),
            client_auth: client_ca.then_some(crate::config::ClientAuth::Required),
        }
    }

    #[tokio::test]
    async fn a_changed_certificate_is_served_to_new_connections_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = TestCerts::generate(dir.path());
        let acceptor = TlsAcceptor::load(files(&certs, false), &[], "test")
            .await
            .expect("load")
            .check_every(Duration::ZERO);
        let (served, _) = handshake(&acceptor, &certs, false).await;
        assert_eq!(served.as_deref(), Some("strata-broker"));

        certs.write_server("renewed");
        // Some file systems keep mtimes in whole seconds: the size differs
        // anyway only by chance, so make sure the stamp moves.
        bump_mtime(&certs.server_cert);
        let (served, _) = handshake(&acceptor, &certs, false).await;
        assert_eq!(served.as_deref(), Some("renewed"));

        // A broken file keeps the previous certificate in service.
        std::fs::write(&certs.server_key, "not a key").expect("write");
        bump_mtime(&certs.server_key);
        let (served, _) = handshake(&acceptor, &certs, false).await;
        assert_eq!(served.as_deref(), Some("renewed"));
    }

    fn bump_mtime(path: &Path) {
        let file = std::fs::File::options()
            .append(true)
            .open(path)
            .expect("open");
        let later = SystemTime::now() + Duration::from_secs(5);
        file.set_modified(later).expect("set mtime");
    }

    #[tokio::test]
    async fn a_verified_client_certificate_names_the_principal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = TestCerts::generate(dir.path());
        let acceptor = TlsAcceptor::load(files(&certs, true), &[], "test")
            .await
            .expect("load");
        let (_, seen) = handshake(&acceptor, &certs, true).await;
        assert_eq!(seen.expect("handshake").as_deref(), Some("alice"));
        // Without a certificate, the server refuses the client.
        let (client, seen) = handshake(&acceptor, &certs, false).await;
        assert!(client.is_none());
        assert!(seen.is_err(), "{seen:?}");
        // Without a client CA, no principal.
        let plain = TlsAcceptor::load(files(&certs, false), &[], "test")
            .await
            .expect("load");
        let (_, seen) = handshake(&plain, &certs, true).await;
        assert_eq!(seen.expect("handshake"), None);
    }
}
