//! How the client connects to brokers: [`ConnectOptions`] (TLS and
//! credentials), the one place a gRPC [`Endpoint`] is built from a broker
//! URL, the [`Authorize`] interceptor that puts the credentials on every
//! request, and the translation of TLS failures into errors that say what
//! to change.
//!
//! `https://` URLs use TLS, verified against the CA given in
//! [`TlsOptions::ca_pem`] or, when none is given, the system's roots;
//! `http://` URLs stay plain whatever the options say. The server name
//! checked is the URL's host (a DNS name or an IP address in the broker's
//! certificate).
//!
//! The one thing not to break: every connection the client makes (the
//! eager bootstrap one and the lazy per-broker ones) goes through
//! [`ConnectOptions::endpoint`], so no request bypasses the TLS settings.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::error::{Error, Result};

/// How long establishing a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to connect to the brokers. `Default` is plain `http://` URLs and
/// system roots for `https://` ones.
///
/// Build it from `default()` with the `with_*` methods (or struct update
/// syntax), so that fields added later do not break your code:
///
/// ```no_run
/// # fn demo() -> strata_client::Result<()> {
/// use strata_client::{ConnectOptions, TlsOptions};
/// let options = ConnectOptions::default()
///     .with_tls(TlsOptions::from_files(Some("ca.pem".as_ref()), None, None)?);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// TLS settings for `https://` brokers; `None`: the system's roots, no
    /// client certificate.
    pub tls: Option<TlsOptions>,
    /// The user to authenticate as, for brokers with authentication on;
    /// `None`: anonymous (or the client certificate's name, with mTLS).
    pub credentials: Option<Credentials>,
}

/// A user name and password (sent on every request as HTTP basic
/// authentication: use `https://` beyond loopback).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
}

impl Credentials {
    /// `user` with `password`.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Puts an `authorization` header on every request (the credentials of
/// [`ConnectOptions`]; brokers use it with their cluster secret).
#[derive(Debug, Clone, Default)]
pub struct Authorize {
    header: Option<MetadataValue<Ascii>>,
}

impl Authorize {
    /// Sends `value` as the `authorization` header (e.g. `Basic ...`);
    /// `None` when it is not a valid header value.
    pub fn header(value: &str) -> Option<Self> {
        Some(Self {
            header: Some(value.parse().ok()?),
        })
    }
}

impl Interceptor for Authorize {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(h) = &self.header {
            request.metadata_mut().insert("authorization", h.clone());
        }
        Ok(request)
    }
}

/// A channel to one broker whose requests carry the credentials.
pub type AuthChannel = InterceptedService<Channel, Authorize>;

/// TLS settings: whom to trust, and which certificate to present.
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// PEM certificates of the CAs that sign the brokers' certificates;
    /// `None`: the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate chain to present to brokers that ask for one (mTLS);
    /// needs `client_key_pem`.
    pub client_cert_pem: Option<Vec<u8>>,
    /// PEM private key of `client_cert_pem`.
    pub client_key_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .field(
                "client_cert_pem",
                &self.client_cert_pem.as_ref().map(|_| "<pem>"),
            )
            .field(
                "client_key_pem",
                &self.client_key_pem.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl TlsOptions {
    /// Reads the CA bundle, client certificate and client key from PEM
    /// files; the error names the file that cannot be read.
    pub fn from_files(
        ca: Option<&Path>,
        client_cert: Option<&Path>,
        client_key: Option<&Path>,
    ) -> Result<TlsOptions> {
        let read = |what: &str, path: Option<&Path>| -> Result<Option<Vec<u8>>> {
            path.map(|p| {
                std::fs::read(p).map_err(|e| {
                    Error::Config(format!(
                        "cannot read the {what} file {}: {}",
                        p.display(),
                        e.to_string().to_lowercase()
                    ))
                })
            })
            .transpose()
        };
        let options = TlsOptions {
            ca_pem: read("TLS CA", ca)?,
            client_cert_pem: read("TLS client certificate", client_cert)?,
            client_key_pem: read("TLS client key", client_key)?,
        };
        options.validate()?;
        Ok(options)
    }

    fn validate(&self) -> Result<()> {
        match (&self.client_cert_pem, &self.client_key_pem) {
            (Some(_), None) => Err(Error::Config(
                "a TLS client certificate needs its private key: give the key too (--tls-key)"
                    .into(),
            )),
            (None, Some(_)) => Err(Error::Config(
                "a TLS client key needs its certificate: give the certificate too (--tls-cert)"
                    .into(),
            )),
            _ => Ok(()),
        }
    }

    fn client_config(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new();
        config = match &self.ca_pem {
            Some(ca) => config.ca_certificate(Certificate::from_pem(ca)),
            None => config.with_native_roots(),
        };
        if let (Some(cert), Some(key)) = (&self.client_cert_pem, &self.client_key_pem) {
            config = config.identity(Identity::from_pem(cert, key));
        }
        config
    }
}

impl ConnectOptions {
    /// These options with `tls`.
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// These options with `credentials`.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// The interceptor that adds these options' credentials to requests.
    ///
    /// # Errors
    /// [`Error::Config`] when the user name holds a `:` or the pair is not
    /// printable ASCII once encoded (never for base64).
    pub fn authorize(&self) -> Result<Authorize> {
        let Some(c) = &self.credentials else {
            return Ok(Authorize::default());
        };
        if c.user.contains(':') || c.user.is_empty() {
            return Err(Error::Config(format!(
                "invalid user name {:?}: it must not be empty or contain ':'",
                c.user
            )));
        }
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.user, c.password));
        Authorize::header(&format!("Basic {token}"))
            .ok_or_else(|| Error::Config("the credentials cannot be sent as a header".into()))
    }

    /// A channel to `url` whose requests carry the credentials; connects on
    /// first use.
    pub fn channel(&self, url: &str) -> Result<AuthChannel> {
        Ok(InterceptedService::new(
            self.endpoint(url)?.connect_lazy(),
            self.authorize()?,
        ))
    }

    /// The gRPC endpoint of the broker at `url` (`http://` or `https://`),
    /// with the client's timeouts and keepalive, and TLS for `https://`.
    /// For callers that speak the raw protocol ([`crate::proto`]) next to
    /// the client.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint> {
        let invalid = || Error::InvalidUrl {
            url: url.to_owned(),
        };
        check_url(url)?;
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|_| invalid())?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if !url.starts_with("https://") {
            return Ok(endpoint);
        }
        let tls = self.tls.clone().unwrap_or_default();
        tls.validate()?;
        endpoint.tls_config(tls.client_config()).map_err(|e| {
            Error::Config(format!(
                "cannot set up TLS for {url}: {}; check the CA and client certificate files",
                innermost(&e)
            ))
        })
    }
}

/// Checks that `url` has a scheme the client speaks.
pub(crate) fn check_url(url: &str) -> Result<()> {
    let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
    if scheme_ok && url.parse::<tonic::transport::Uri>().is_ok() {
        Ok(())
    } else {
        Err(Error::InvalidUrl {
            url: url.to_owned(),
        })
    }
}

/// The message of the innermost error under `e`, lowercase.
pub(crate) fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message = s.to_string();
        source = s.source();
    }
    message.to_lowercase()
}

/// What went wrong with TLS under `e`, said so that the reader knows what
/// to change; `None` when the failure is not a TLS one.
///
/// Read from the errors' text: rustls errors reach here as text (HTTP/2
/// keeps I/O errors as their kind and message only), and rustls words them
/// the same way in both cases.
pub(crate) fn tls_problem(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(e);
    while let Some(err) = next {
        // An I/O error's `source()` skips the error it wraps: look inside.
        let inner = err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .map(ToString::to_string);
        for text in [Some(err.to_string()), inner].into_iter().flatten() {
            if let Some(said) = classify(&text.to_lowercase()) {
                return Some(said.to_owned());
            }
        }
        next = err.source();
    }
    None
}

/// What to say about a rustls error, from its text (lowercase).
fn classify(text: &str) -> Option<&'static str> {
    let certificate = text.contains("invalid peer certificate");
    let alert = text.contains("received fatal alert");
    Some(if certificate && text.contains("unknownissuer") {
        "the broker's certificate is not signed by a CA this client trusts: give the CA's \
         certificate with --tls-ca FILE (TlsOptions::ca_pem)"
    } else if certificate
        && (text.contains("notvalidforname") || text.contains("not valid for name"))
    {
        "the broker's certificate is not valid for the host in the URL: connect by a name (or \
         IP address) the certificate lists"
    } else if certificate && text.contains("expired") {
        "the broker's certificate has expired: renew it on the broker"
    } else if certificate {
        "the broker's certificate is not accepted: check it, and the CA given with --tls-ca"
    } else if alert && (text.contains("certificaterequired") || text.contains("handshakefailure")) {
        "the broker requires a client certificate: give one with --tls-cert FILE --tls-key FILE \
         (TlsOptions::client_cert_pem, client_key_pem)"
    } else if alert && text.contains("certificateexpired") {
        "the broker says this client's certificate has expired: renew it"
    } else if alert
        && [
            "badcertificate",
            "unknownca",
            "certificateunknown",
            "decrypterror",
        ]
        .iter()
        .any(|a| text.contains(a))
    {
        "the broker does not accept this client's certificate: use one signed by the CA the \
         broker trusts (its tls.client_ca)"
    } else if text.contains("received corrupt message") {
        "the broker does not speak TLS at this address: use an http:// URL, or enable TLS on \
         the broker"
    } else {
        return None;
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let o = ConnectOptions::default();
        assert!(matches!(
            o.endpoint("127.0.0.1:50051"),
            Err(Error::InvalidUrl { .. })
        ));
        assert!(o.endpoint("http://127.0.0.1:50051").is_ok());
        assert!(o.endpoint("https://127.0.0.1:50051").is_ok());
    }

    #[test]
    fn a_certificate_without_its_key_is_refused() {
        let o = ConnectOptions::default().with_tls(TlsOptions {
            client_cert_pem: Some(b"x".to_vec()),
            ..TlsOptions::default()
        });
        let e = o.endpoint("https://b:1").unwrap_err();
        assert!(e.to_string().contains("private key"), "{e}");
        // Plain URLs ignore the TLS settings.
        assert!(o.endpoint("http://b:1").is_ok());
    }

    #[test]
    fn missing_files_are_named() {
        let e = TlsOptions::from_files(Some(Path::new("/no/such/ca.pem")), None, None).unwrap_err();
        assert!(e.to_string().contains("/no/such/ca.pem"), "{e}");
    }

    #[test]
    fn tls_failures_say_what_to_do() {
        // As rustls words them.
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "invalid peer certificate: UnknownIssuer",
        );
        let said = tls_problem(&io).unwrap();
        assert!(said.contains("--tls-ca"), "{said}");
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "received fatal alert: CertificateRequired",
        );
        assert!(tls_problem(&io).unwrap().contains("--tls-cert"));
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(tls_problem(&plain), None);
    }
}
