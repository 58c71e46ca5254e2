//! TLS (rustls, aws-lc-rs provider) on the broker's three listeners and in
//! its calls to other brokers (DESIGN §12), configured by `[tls]`
//! ([`crate::config::TlsConfig`]).
//!
//! - [`load`] reads the PEM files and builds a rustls `ServerConfig`; every
//!   error names the setting, the file and what is wrong.
//! - [`acceptor`]: [`TlsAcceptor`], the server side. It keeps the current
//!   config, looks at the files' size and modification time at most once a
//!   second (on accept) and rebuilds the config when they changed; a
//!   rebuild that fails is logged and the old config kept. Handshakes are
//!   bounded by [`HANDSHAKE_TIMEOUT`].
//! - [`principal`]: the principal a verified client certificate names
//!   (subject CN, else the first DNS name).
//! - [`connection`]: [`Connection`], a plain or TLS stream with its
//!   [`PeerIdentity`] — the gRPC server's connection type, whose
//!   `ConnectInfo` tonic puts in every request's extensions.
//! - [`incoming`]: accepted connections handshaked concurrently (a slow or
//!   bogus client never holds up the others), as the stream tonic serves
//!   and as an axum `Listener`.
//! - [`peer`]: the client side, for calls to other brokers.
//!
//! Where the authentication layer finds a connection's principal: in gRPC
//! handlers, `request.extensions().get::<PeerIdentity>()` (see
//! [`PeerIdentity::of`]); on the Kafka listener, the `tls_principal`
//! argument of the per-connection task.
//!
//! The one thing not to break: a client whose certificate did not verify
//! never gets a principal — only certificates rustls verified against
//! `tls.client_ca` are read.

pub mod acceptor;
pub mod connection;
pub mod incoming;
pub mod load;
pub mod peer;
pub mod principal;

#[cfg(test)]
#[path = "../../tests/common/certs.rs"]
#[allow(dead_code, unreachable_pub)]
pub(crate) mod test_certs;

use std::net::SocketAddr;
use std::time::Duration;

pub use acceptor::TlsAcceptor;
pub use connection::Connection;

/// Longest a TLS handshake may take before the connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The peer's address.
    pub addr: SocketAddr,
    /// From a verified client certificate (mTLS): its subject CN, else its
    /// first DNS name. `None` on plain connections and for TLS clients
    /// without a certificate.
    pub tls_principal: Option<String>,
}

impl PeerIdentity {
    /// The identity of the connection a gRPC request came on.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&PeerIdentity> {
        request.extensions().get::<PeerIdentity>()
    }
}

/// The acceptors of the three listeners, each offering its protocol
/// (ALPN): `h2` for gRPC, `http/1.1` for the admin endpoint, none for
/// Kafka.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// The gRPC listener's.
    pub grpc: std::sync::Arc<TlsAcceptor>,
    /// The admin HTTP listener's.
    pub http: std::sync::Arc<TlsAcceptor>,
    /// The Kafka listener's.
    pub kafka: std::sync::Arc<TlsAcceptor>,
}

impl ListenerTls {
    /// Loads the acceptors of `config`; `None` when TLS is off. Fails when
    /// a file cannot be read or used.
    pub async fn load(
        config: &crate::config::TlsConfig,
    ) -> Result<Option<ListenerTls>, load::LoadError> {
        let Some(files) = load::TlsFiles::from_config(config) else {
            return Ok(None);
        };
        let acceptor = |alpn: &'static [&'static [u8]], listener| {
            let files = files.clone();
            async move {
                TlsAcceptor::load(files, alpn, listener)
                    .await
                    .map(std::sync::Arc::new)
            }
        };
        Ok(Some(ListenerTls {
            grpc: acceptor(&[b"h2"], "gRPC").await?,
            http: acceptor(&[b"http/1.1"], "HTTP").await?,
            kafka: acceptor(&[], "Kafka").await?,
        }))
    }
}
