//! Authentication of gRPC calls: a tower layer in front of every service
//! that turns a call's credentials into a [`Caller`], put in the
//! request's extensions for the services' ACL checks ([`caller`]).
//!
//! - `authorization: Basic base64(user:password)`: a user (checked against
//!   the SCRAM credentials in the bucket; see [`super::users`]).
//! - `authorization: Cluster base64(secret)`: another broker of the
//!   cluster (the secret in the bucket; see [`super::Auth::cluster_secret`]).
//! - no header: the name in the client's verified certificate (mTLS), else
//!   anonymous.
//!
//! Wrong credentials are refused whether authentication is on or not;
//! missing ones only when it is on. The gRPC health service answers
//! everyone (load balancers probe it without credentials).

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures::future::BoxFuture;
use strata_proto::ErrorInfo;
use strata_proto::v1::ErrorReason;
use tower::{Layer, Service};

use super::{Caller, Principal};
use crate::metrics::BrokerMetrics;
use crate::service::Shared;
use crate::tls::PeerIdentity;

/// The header brokers present to each other: `Cluster base64(secret)`.
pub fn cluster_header(secret: &[u8]) -> String {
    format!("Cluster {}", B64.encode(secret))
}

/// The caller of a gRPC request (anonymous if the layer did not run).
pub fn caller<T>(request: &tonic::Request<T>) -> Caller {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(|| Caller::anonymous(None))
}

/// The layer: see the module docs.
#[derive(Debug, Clone)]
pub struct Authenticate {
    shared: Arc<Shared>,
}

impl Authenticate {
    /// Authenticates calls against `shared.auth`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl<S> Layer<S> for Authenticate {
    type Service = AuthenticateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthenticateService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// [`Authenticate`] around a service.
#[derive(Debug, Clone)]
pub struct AuthenticateService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, B> Service<http::Request<B>> for AuthenticateService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone that was made ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        let call = Call {
            authorization: request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.to_str().unwrap_or_default().to_owned()),
            peer: request.extensions().get::<PeerIdentity>().cloned(),
            path: request.uri().path().to_owned(),
        };
        Box::pin(async move {
            match authenticate(&shared, call).await {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

/// What authentication needs of a request.
struct Call {
    authorization: Option<String>,
    peer: Option<PeerIdentity>,
    path: String,
}

/// The caller of `call`, or the refusal.
async fn authenticate(shared: &Shared, call: Call) -> Result<Caller, tonic::Status> {
    let peer = call.peer.as_ref();
    let host = peer.map(|p| p.addr.ip());
    let auth = &shared.auth;
    let refuse = |message: String| {
        BrokerMetrics::add(&shared.metrics.auth_failures, 1);
        tracing::info!(peer = ?peer.map(|p| p.addr), path = call.path, "gRPC call refused: {message}");
        ErrorInfo::new(ErrorReason::Unauthenticated, message).into_status()
    };
    let header = call.authorization.as_deref();
    let principal = match header.map(|h| h.split_once(' ').unwrap_or((h, ""))) {
        Some(("Basic", token)) => {
            let decoded = B64
                .decode(token.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            let Some((user, password)) = decoded.as_deref().and_then(|s| s.split_once(':')) else {
                return Err(refuse(
                    "malformed basic credentials; pass --user NAME --password-file FILE".into(),
                ));
            };
            match auth.users.verify_password(user, password).await {
                Ok(true) => Principal::User(user.to_owned()),
                Ok(false) => {
                    return Err(refuse(format!(
                        "authentication failed: invalid user name or password (user {user})"
                    )));
                }
                Err(e) => {
                    return Err(ErrorInfo::new(
                        ErrorReason::BrokerUnavailable,
                        format!("cannot check the credentials now: {e}; retry"),
                    )
                    .into_status());
                }
            }
        }
        Some(("Cluster", token)) if auth.enabled() => match B64.decode(token.trim()) {
            Ok(secret) if auth.is_cluster_secret(&secret) => Principal::Cluster,
            _ => return Err(refuse("invalid cluster secret".into())),
        },
        // Authentication off: brokers need not prove anything.
        Some(("Cluster", _)) => Principal::Cluster,
        Some((scheme, _)) => {
            return Err(refuse(format!(
                "unsupported authorization scheme {scheme:?}: use Basic (--user NAME --password-file FILE)"
            )));
        }
        None => match peer.and_then(|p| p.tls_principal.clone()) {
            Some(name) => Principal::User(name),
            None if auth.enabled() && !is_health(&call.path) => {
                return Err(refuse(
                    "this broker requires authentication: pass --user NAME --password-file FILE \
                     (or STRATA_USER and STRATA_PASSWORD), or a client certificate"
                        .into(),
                ));
            }
            None => Principal::Anonymous,
        },
    };
    Ok(Caller { principal, host })
}

fn is_health(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
}
