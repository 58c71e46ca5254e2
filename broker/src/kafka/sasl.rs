//! SASL on the Kafka listener: SaslHandshake (v1) picks the mechanism,
//! SaslAuthenticate carries its messages. Mechanisms: PLAIN,
//! SCRAM-SHA-256 and SCRAM-SHA-512, against the users in the bucket
//! ([`crate::auth::users`]); over TLS or not, as the client's
//! `security.protocol` says.
//!
//! A connection starts unauthenticated (or authenticated by its client
//! certificate, with mTLS). With `auth.enabled`, it may send only
//! ApiVersions, SaslHandshake and SaslAuthenticate until it has
//! authenticated; anything else closes it (as Kafka brokers do). A failed
//! authentication is answered with `SASL_AUTHENTICATION_FAILED` and a
//! message, then the connection is closed. With authentication off a
//! client may still log in (its principal is then only logged).

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::auth::scram::{self, Mechanism, ScramError, ServerExchange};
use crate::auth::{Caller, Principal};
use crate::metrics::BrokerMetrics;
use crate::service::Shared;

/// The mechanisms offered, in Kafka's spelling.
pub const MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// Where a connection's authentication stands.
#[derive(Debug)]
enum State {
    /// No handshake yet (or authenticated by a client certificate).
    Start,
    /// PLAIN chosen: the next SaslAuthenticate carries the password.
    Plain,
    /// SCRAM chosen: the next SaslAuthenticate is the client-first message.
    ScramFirst(Mechanism),
    /// Between SCRAM's rounds.
    ScramFinal(ServerExchange),
    /// Done (successfully): nothing more to say.
    Done,
}

/// One connection's caller and authentication state.
#[derive(Debug)]
pub struct Session {
    /// Who the connection acts for.
    pub caller: Caller,
    authenticated: bool,
    state: State,
}

/// What a SaslAuthenticate leads to.
#[derive(Debug)]
pub struct Outcome {
    /// The response.
    pub response: SaslAuthenticateResponse,
    /// Close the connection once the response is written.
    pub close: bool,
}

impl Session {
    /// A new connection from `host`; `tls_principal` is the name in its
    /// verified client certificate (mTLS), which authenticates it.
    pub fn new(host: Option<std::net::IpAddr>, tls_principal: Option<String>) -> Self {
        let authenticated = tls_principal.is_some();
        Session {
            caller: Caller {
                principal: tls_principal.map_or(Principal::Anonymous, Principal::User),
                host,
            },
            authenticated,
            state: State::Start,
        }
    }

    /// True once the connection has authenticated (SASL or mTLS).
    pub fn authenticated(&self) -> bool {
        self.authenticated
    }

    /// True while a SASL exchange is under way (handshake done, not
    /// finished).
    pub fn in_exchange(&self) -> bool {
        !matches!(self.state, State::Start | State::Done)
    }
}

/// Answers SaslHandshake: picks the mechanism, or lists those served.
pub fn handshake(session: &mut Session, req: &SaslHandshakeRequest) -> SaslHandshakeResponse {
    let mut r = SaslHandshakeResponse::default();
    r.mechanisms = MECHANISMS
        .iter()
        .map(|m| StrBytes::from_static_str(m))
        .collect();
    let asked = req.mechanism.as_str();
    let state = if asked.eq_ignore_ascii_case("PLAIN") {
        Some(State::Plain)
    } else {
        Mechanism::from_name(asked).map(State::ScramFirst)
    };
    match state {
        Some(s) if matches!(session.state, State::Start) => session.state = s,
        Some(_) => r.error_code = ResponseError::IllegalSaslState.code(),
        None => r.error_code = ResponseError::UnsupportedSaslMechanism.code(),
    }
    r
}

/// Answers SaslAuthenticate: one step of the chosen mechanism.
pub async fn authenticate(
    shared: &Shared,
    session: &mut Session,
    req: SaslAuthenticateRequest,
    peer: std::net::SocketAddr,
) -> Outcome {
    let state = std::mem::replace(&mut session.state, State::Done);
    let step = match state {
        State::Plain => plain(shared, &req.auth_bytes).await,
        State::ScramFirst(m) => {
            scram_first(shared, m, &req.auth_bytes)
                .await
                .map(|(exchange, first)| {
                    session.state = State::ScramFinal(exchange);
                    Step::Continue(first)
                })
        }
        State::ScramFinal(exchange) => exchange
            .finish(&req.auth_bytes)
            .map(|(last, user)| Step::Done(last, user))
            .map_err(Failure::Scram),
        State::Start | State::Done => Err(Failure::State),
    };
    let mut response = SaslAuthenticateResponse::default();
    match step {
        Ok(Step::Continue(message)) => {
            response.auth_bytes = Bytes::from(message.into_bytes());
            Outcome {
                response,
                close: false,
            }
        }
        Ok(Step::Done(message, user)) => {
            tracing::debug!(%peer, user, "kafka connection authenticated");
            response.auth_bytes = Bytes::from(message.into_bytes());
            session.caller.principal = Principal::User(user);
            session.authenticated = true;
            Outcome {
                response,
                close: false,
            }
        }
        Err(failure) => {
            BrokerMetrics::add(&shared.metrics.auth_failures, 1);
            let message = failure.to_string();
            tracing::info!(%peer, reason = %message, "kafka connection: SASL authentication failed; closing it");
            response.error_code = match failure {
                Failure::State => ResponseError::IllegalSaslState.code(),
                _ => ResponseError::SaslAuthenticationFailed.code(),
            };
            response.error_message = Some(StrBytes::from_string(message));
            Outcome {
                response,
                close: true,
            }
        }
    }
}

/// A step that went well.
enum Step {
    /// More to come: this message goes back.
    Continue(String),
    /// Authenticated as the user: this message goes back.
    Done(String, String),
}

/// Why authentication failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Scram(#[from] ScramError),
    #[error("authentication failed: invalid user name or password")]
    Wrong,
    #[error("SaslAuthenticate without a SaslHandshake first, or after authentication finished")]
    State,
    #[error("cannot check the credentials now: {0}; retry")]
    Unavailable(String),
}

async fn plain(shared: &Shared, message: &[u8]) -> Result<Step, Failure> {
    let (user, password) = scram::parse_plain(message)?;
    match shared.auth.users.verify_password(&user, &password).await {
        Ok(true) => Ok(Step::Done(String::new(), user)),
        Ok(false) => Err(Failure::Wrong),
        Err(e) => Err(Failure::Unavailable(e.to_string())),
    }
}

async fn scram_first(
    shared: &Shared,
    mechanism: Mechanism,
    message: &[u8],
) -> Result<(ServerExchange, String), Failure> {
    let first = scram::client_first(message)?;
    let credential = match shared.auth.users.get(&first.user).await {
        Ok(user) => user.map(|u| u.credential(mechanism).clone()),
        Err(e) => return Err(Failure::Unavailable(e.to_string())),
    };
    Ok(ServerExchange::start(mechanism, first, credential))
}
