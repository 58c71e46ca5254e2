//! How this broker connects to other brokers (nudges, forwarded drains):
//! the one place its client-side TLS is built, as the client library's
//! [`ConnectOptions`].
//!
//! With TLS on, other brokers are at `https://` URLs. They are verified
//! against `tls.peer_ca`, else `tls.client_ca` (one CA for the cluster),
//! else the system's roots. When `tls.client_ca` is set, the listeners ask
//! for client certificates, so a broker presents its own `tls.cert` and
//! `tls.key` to the others.
//!
//! The files are read once, at start; a renewed broker certificate is
//! presented to other brokers after a restart (their listeners accept the
//! old one while it is valid).

use strata_client::{ConnectOptions, TlsOptions};

use super::load::{self, LoadError};
use crate::config::TlsConfig;

/// The options for calls to other brokers under `config`; each file is
/// checked as it is read.
pub fn connect_options(config: &TlsConfig) -> Result<ConnectOptions, LoadError> {
    if !config.enabled() {
        return Ok(ConnectOptions::default());
    }
    let ca = match (&config.peer_ca, &config.client_ca) {
        (Some(p), _) => Some((load::PEER_CA, p)),
        (None, Some(p)) => Some((load::CLIENT_CA, p)),
        (None, None) => None,
    };
    let ca_pem = match ca {
        Some((setting, path)) => {
            load::read_roots(setting, path)?;
            Some(load::read(setting, path)?)
        }
        None => None,
    };
    let (client_cert_pem, client_key_pem) = match (&config.client_ca, &config.cert, &config.key) {
        (Some(_), Some(cert), Some(key)) => {
            load::read_certs(load::CERT, cert)?;
            load::read_key(load::KEY, key)?;
            (
                Some(load::read(load::CERT, cert)?),
                Some(load::read(load::KEY, key)?),
            )
        }
        _ => (None, None),
    };
    Ok(ConnectOptions::default().with_tls(TlsOptions {
        ca_pem,
        client_cert_pem,
        client_key_pem,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_certs::TestCerts;

    #[test]
    fn peers_trust_the_client_ca_and_present_the_broker_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = TestCerts::generate(dir.path());
        assert!(
            connect_options(&TlsConfig::default())
                .expect("off")
                .tls
                .is_none()
        );
        let mut config = TlsConfig {
            cert: Some(certs.server_cert.clone()),
            key: Some(certs.server_key.clone()),
            ..TlsConfig::default()
        };
        let tls = connect_options(&config).expect("system roots").tls;
        let tls = tls.expect("tls");
        assert!(tls.ca_pem.is_none() && tls.client_cert_pem.is_none());
        config.client_ca = Some(certs.ca_cert.clone());
        let tls = connect_options(&config).expect("cluster CA").tls;
        let tls = tls.expect("tls");
        assert!(tls.ca_pem.is_some() && tls.client_cert_pem.is_some());
        config.peer_ca = Some(dir.path().join("missing.pem"));
        let err = connect_options(&config).expect_err("missing peer CA");
        assert!(err.to_string().contains("tls.peer_ca"), "{err}");
    }
}
