//! Reading the PEM files of `[tls]` and building rustls configurations
//! from them. Blocking file IO: callers on the runtime run it in
//! `spawn_blocking`.
//!
//! Every error names the setting (and its flag), the file, and what is
//! wrong with it, so that a broker that does not start says which file to
//! fix.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ClientAuth, TlsConfig};

/// A TLS file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file cannot be read.
    #[error("cannot read {setting}: {}", path.display())]
    Read {
        /// The setting that names the file.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no PEM section of the expected kind.
    #[error("{setting} holds no {what} (a PEM \"-----BEGIN ...-----\" section): {}", path.display())]
    Empty {
        /// The setting that names the file.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// What was expected: "certificate", "private key".
        what: &'static str,
    },
    /// The file is not valid PEM.
    #[error("{setting} is not valid PEM ({message}): {}", path.display())]
    Pem {
        /// The setting that names the file.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// The files parse but do not make a usable configuration (a key that
    /// is not the certificate's, a CA certificate rustls rejects).
    #[error("{what}: {message}")]
    Unusable {
        /// Which files, and what was being done with them.
        what: String,
        /// What rustls said.
        message: String,
    },
}

/// The setting names used in errors (with their flags).
pub const CERT: &str = "tls.cert (--tls-cert)";
/// See [`CERT`].
pub const KEY: &str = "tls.key (--tls-key)";
/// See [`CERT`].
pub const CLIENT_CA: &str = "tls.client_ca (--tls-client-ca)";
/// See [`CERT`].
pub const PEER_CA: &str = "tls.peer_ca";

/// The files a TLS listener serves from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `tls.cert`.
    pub cert: PathBuf,
    /// `tls.key`.
    pub key: PathBuf,
    /// `tls.client_ca`.
    pub client_ca: Option<PathBuf>,
    /// The effective `tls.client_auth`; `None` without `client_ca`.
    pub client_auth: Option<ClientAuth>,
}

impl TlsFiles {
    /// The files of `config`; `None` when TLS is off.
    pub fn from_config(config: &TlsConfig) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: config.cert.clone()?,
            key: config.key.clone()?,
            client_ca: config.client_ca.clone(),
            client_auth: config.client_auth(),
        })
    }

    /// Every file, for change detection.
    pub fn paths(&self) -> Vec<&Path> {
        let mut out = vec![self.cert.as_path(), self.key.as_path()];
        out.extend(self.client_ca.as_deref());
        out
    }
}

/// The crypto provider of every TLS config here: aws-lc-rs, the one
/// reqwest and object_store already build.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The bytes of the file at `path`, which `setting` names.
pub fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|source| LoadError::Read {
        setting,
        path: path.to_owned(),
        source,
    })
}

fn pem_error(setting: &'static str, path: &Path, e: rustls_pki_types::pem::Error) -> LoadError {
    LoadError::Pem {
        setting,
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// The certificates in the PEM file at `path` (at least one).
pub fn read_certs(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let pem = read(setting, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(setting, path, e))?;
    if certs.is_empty() {
        return Err(LoadError::Empty {
            setting,
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The private key in the PEM file at `path` (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(setting: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, LoadError> {
    let pem = read(setting, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => LoadError::Empty {
            setting,
            path: path.to_owned(),
            what: "private key",
        },
        e => pem_error(setting, path, e),
    })
}

/// The CA certificates in the PEM file at `path`, as trust roots.
pub fn read_roots(setting: &'static str, path: &Path) -> Result<RootCertStore, LoadError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(setting, path)? {
        roots.add(cert).map_err(|e| LoadError::Unusable {
            what: format!(
                "{setting} holds a certificate that cannot be a CA ({})",
                path.display()
            ),
            message: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The server config of `files`, offering `alpn` (e.g. `h2` for gRPC).
pub fn server_config(files: &TlsFiles, alpn: &[&[u8]]) -> Result<ServerConfig, LoadError> {
    let provider = provider();
    let certs = read_certs(CERT, &files.cert)?;
    let key = read_key(KEY, &files.key)?;
    let unusable = |what: String| {
        move |e: rustls::Error| LoadError::Unusable {
            what,
            message: e.to_string(),
        }
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(unusable(
            "the TLS provider offers no protocol version".into(),
        ))?;
    let builder = match (&files.client_ca, files.client_auth) {
        (Some(ca), Some(auth)) => {
            let roots = read_roots(CLIENT_CA, ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match auth {
                ClientAuth::Required => verifier,
                ClientAuth::Requested => verifier.allow_unauthenticated(),
            };
            let verifier = verifier.build().map_err(|e| LoadError::Unusable {
                what: format!(
                    "cannot verify client certificates with {CLIENT_CA} {}",
                    ca.display()
                ),
                message: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(unusable(format!(
            "{CERT} {} and {KEY} {} do not go together (is the key the certificate's?)",
            files.cert.display(),
            files.key.display()
        )))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_certs::TestCerts;

    fn files(certs: &TestCerts) -> TlsFiles {
        TlsFiles {
            cert: certs.server_cert.clone(),
            key: certs.server_key.clone(),
            client_ca: None,
            client_auth: None,
        }
    }

    #[test]
    fn good_files_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = TestCerts::generate(dir.path());
        let config = server_config(&files(&certs), &[b"h2"]).expect("loads");
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
        let mtls = TlsFiles {
            client_ca: Some(certs.ca_cert.clone()),
            client_auth: Some(ClientAuth::Required),
            ..files(&certs)
        };
        server_config(&mtls, &[]).expect("loads with a client CA");
    }

    #[test]
    fn errors_name_the_setting_and_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = TestCerts::generate(dir.path());
        let missing = dir.path().join("missing.pem");
        let err = server_config(
            &TlsFiles {
                cert: missing.clone(),
                ..files(&certs)
            },
            &[],
        )
        .expect_err("missing");
        let msg = format!("{:#}", anyhow::Error::from(err));
        assert!(
            msg.contains("tls.cert") && msg.contains("missing.pem") && msg.contains("No such file"),
            "{msg}"
        );

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").expect("write");
        let err = server_config(
            &TlsFiles {
                cert: garbage.clone(),
                ..files(&certs)
            },
            &[],
        )
        .expect_err("no certificate");
        let msg = err.to_string();
        assert!(
            msg.contains("tls.cert")
                && msg.contains("no certificate")
                && msg.contains("garbage.pem"),
            "{msg}"
        );

        // A certificate where the key should be.
        let err = server_config(
            &TlsFiles {
                key: certs.server_cert.clone(),
                ..files(&certs)
            },
            &[],
        )
        .expect_err("no key");
        assert!(err.to_string().contains("no private key"), "{err}");

        // Someone else's key.
        let err = server_config(
            &TlsFiles {
                key: certs.client_key.clone(),
                ..files(&certs)
            },
            &[],
        )
        .expect_err("wrong key");
        assert!(err.to_string().contains("do not go together"), "{err}");

        let err = server_config(
            &TlsFiles {
                client_ca: Some(garbage),
                client_auth: Some(ClientAuth::Required),
                ..files(&certs)
            },
            &[],
        )
        .expect_err("bad client CA");
        assert!(err.to_string().contains("tls.client_ca"), "{err}");
    }
}
