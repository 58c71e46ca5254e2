//! Test certificates, generated with rcgen into a directory (never
//! committed): a CA, a server certificate for `localhost` and `127.0.0.1`
//! signed by it (usable as a client certificate too, as brokers present it
//! to each other), and a client certificate for the principal `alice`.
//!
//! Shared by the broker's unit tests (`tls::test_certs`) and its
//! integration tests (`common::certs`).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The files written by [`TestCerts::generate`], and the CA to sign more.
pub struct TestCerts {
    /// The CA's certificate (PEM).
    pub ca_cert: PathBuf,
    /// The server certificate (PEM), for `localhost` and `127.0.0.1`.
    pub server_cert: PathBuf,
    /// Its key (PEM).
    pub server_key: PathBuf,
    /// A client certificate (PEM) with subject CN `alice`.
    pub client_cert: PathBuf,
    /// Its key (PEM).
    pub client_key: PathBuf,
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl TestCerts {
    /// Generates the CA and certificates into `dir`.
    ///
    /// # Panics
    /// When generating or writing fails.
    pub fn generate(dir: &Path) -> TestCerts {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Strata test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let ca_cert = dir.join("ca.pem");
        std::fs::write(&ca_cert, ca.pem()).expect("write ca.pem");
        let certs = TestCerts {
            ca_cert,
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            dir: dir.to_owned(),
            ca,
        };
        certs.write_server("strata-broker");
        let (cert, key) = certs.issue(Some("alice"), &["alice.example"]);
        std::fs::write(&certs.client_cert, cert).expect("write client.pem");
        std::fs::write(&certs.client_key, key).expect("write client.key");
        certs
    }

    /// The directory the files are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// (Re)writes the server certificate and key, with subject CN `cn`.
    pub fn write_server(&self, cn: &str) {
        let (cert, key) = self.issue(Some(cn), &["localhost", "127.0.0.1"]);
        std::fs::write(&self.server_cert, cert).expect("write server.pem");
        std::fs::write(&self.server_key, key).expect("write server.key");
    }

    /// A certificate signed by the CA, with subject CN `cn` (if any) and
    /// `names` as DNS names (or IP addresses); returns (cert PEM, key PEM).
    pub fn issue(&self, cn: Option<&str>, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Strata tests");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        (cert.pem(), key.serialize_pem())
    }
}
