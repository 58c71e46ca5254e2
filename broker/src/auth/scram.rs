//! SCRAM (RFC 5802, RFC 7677) and PLAIN (RFC 4616) on the server side.
//!
//! - [`Credential`]: what is stored for a user and a mechanism: salt,
//!   iteration count, `StoredKey` and `ServerKey`, never the password.
//! - [`ServerExchange`]: the two-round SCRAM exchange: client-first →
//!   server-first, client-final → server-final (or an error).
//! - [`parse_plain`]: the one PLAIN message.
//!
//! The exchange leaks nothing about which users exist: an unknown user
//! gets a server-first message with a salt derived from its name and then
//! the same "invalid proof" error as a wrong password.

use std::num::NonZeroU32;

use aws_lc_rs::{constant_time, digest, hmac, pbkdf2};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

/// The iteration count of new credentials (Kafka's minimum, and its
/// tools' default).
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Fewer iterations are refused in stored credentials.
pub const MIN_ITERATIONS: u32 = 4096;

/// The SCRAM mechanisms served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// SCRAM-SHA-256.
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl Mechanism {
    /// Both, in the order they are offered.
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha256, Mechanism::Sha512];

    /// The SASL mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism called `name` (case-insensitive).
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Mechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Mechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Mechanism::Sha256 => hmac::HMAC_SHA256,
            Mechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Mechanism::Sha256 => &digest::SHA256,
            Mechanism::Sha512 => &digest::SHA512,
        }
    }

    fn len(self) -> usize {
        match self {
            Mechanism::Sha256 => 32,
            Mechanism::Sha512 => 64,
        }
    }

    fn mac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(self.hmac(), key), data)
            .as_ref()
            .to_vec()
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest(), data).as_ref().to_vec()
    }

    fn salted_password(self, password: &[u8], salt: &[u8], iterations: NonZeroU32) -> Vec<u8> {
        let mut out = vec![0u8; self.len()];
        pbkdf2::derive(self.pbkdf2(), iterations, salt, password, &mut out);
        out
    }
}

/// A user's stored SCRAM credential for one mechanism.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// Random salt, base64.
    #[serde(with = "b64")]
    pub salt: Vec<u8>,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// `H(HMAC(SaltedPassword, "Client Key"))`, base64.
    #[serde(with = "b64")]
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`, base64.
    #[serde(with = "b64")]
    pub server_key: Vec<u8>,
}

impl Credential {
    /// A credential for `password` with a fresh random salt.
    pub fn new(mechanism: Mechanism, password: &str, iterations: u32) -> Credential {
        let mut salt = vec![0u8; 24];
        rand::Rng::fill(&mut rand::rng(), &mut salt[..]);
        Credential::with_salt(mechanism, password, salt, iterations)
    }

    fn with_salt(mechanism: Mechanism, password: &str, salt: Vec<u8>, iterations: u32) -> Self {
        let iterations = iterations.max(MIN_ITERATIONS);
        let n = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
        let salted = mechanism.salted_password(password.as_bytes(), &salt, n);
        let client_key = mechanism.mac(&salted, b"Client Key");
        Credential {
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.mac(&salted, b"Server Key"),
            salt,
            iterations,
        }
    }

    /// True when `password` is this credential's (PLAIN, HTTP basic):
    /// costs one PBKDF2, so callers cache and run it off the async runtime.
    pub fn verify_password(&self, mechanism: Mechanism, password: &str) -> bool {
        let Some(n) = NonZeroU32::new(self.iterations) else {
            return false;
        };
        let salted = mechanism.salted_password(password.as_bytes(), &self.salt, n);
        let stored = mechanism.hash(&mechanism.mac(&salted, b"Client Key"));
        constant_time::verify_slices_are_equal(&stored, &self.stored_key).is_ok()
    }

    /// False for a credential that cannot have come from [`Credential::new`]
    /// (a hand-edited or truncated object).
    pub fn is_well_formed(&self, mechanism: Mechanism) -> bool {
        self.iterations >= MIN_ITERATIONS
            && !self.salt.is_empty()
            && self.stored_key.len() == mechanism.len()
            && self.server_key.len() == mechanism.len()
    }
}

/// Why an exchange failed. The message goes to the client as the SASL
/// error, so it never says whether the user exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The client's message does not follow RFC 5802.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// Channel binding or extensions this server does not do.
    #[error("unsupported SCRAM feature: {0}")]
    Unsupported(&'static str),
    /// Wrong password, unknown user, or a tampered exchange.
    #[error("authentication failed: invalid user name or password")]
    InvalidProof,
}

/// The client-first message, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The user name (SCRAM escapes `=2C` / `=3D` undone).
    pub user: String,
    nonce: String,
    /// `gs2-header`: `n,,` or `n,a=...,` (no channel binding).
    gs2_header: String,
    /// The message without the gs2 header.
    bare: String,
}

/// Parses a client-first message.
pub fn client_first(message: &[u8]) -> Result<ClientFirst, ScramError> {
    let message = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    let (cbind, rest) = message
        .split_once(',')
        .ok_or(ScramError::Malformed("no gs2 header"))?;
    match cbind {
        "n" | "y" => {}
        c if c.starts_with("p=") => return Err(ScramError::Unsupported("channel binding")),
        _ => return Err(ScramError::Malformed("bad channel-binding flag")),
    }
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or(ScramError::Malformed("no gs2 header"))?;
    if !(authzid.is_empty() || authzid.starts_with("a=")) {
        return Err(ScramError::Malformed("bad authzid"));
    }
    let gs2_header = format!("{cbind},{authzid},");
    let mut user = None;
    let mut nonce = None;
    for (i, attr) in bare.split(',').enumerate() {
        match (i, attr.split_at_checked(2)) {
            (0, Some(("m=", _))) => return Err(ScramError::Unsupported("mandatory extension")),
            (0, Some(("n=", v))) => user = Some(unescape_name(v)?),
            (1, Some(("r=", v))) if !v.is_empty() && v.bytes().all(printable) => {
                nonce = Some(v.to_owned())
            }
            // Kafka's delegation tokens (`tokenauth=true`) are not served.
            (_, _) if attr.starts_with("tokenauth=") => {
                return Err(ScramError::Unsupported("delegation tokens"));
            }
            (i, _) if i >= 2 => {} // extensions: ignored
            _ => return Err(ScramError::Malformed("expected n=user,r=nonce")),
        }
    }
    let user = user.ok_or(ScramError::Malformed("no user name"))?;
    if let Some(a) = authzid.strip_prefix("a=")
        && unescape_name(a)? != user
    {
        return Err(ScramError::Unsupported(
            "an authorization id other than the user",
        ));
    }
    Ok(ClientFirst {
        user,
        nonce: nonce.ok_or(ScramError::Malformed("no nonce"))?,
        gs2_header,
        bare: bare.to_owned(),
    })
}

fn printable(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b','
}

/// Undoes SCRAM's `=2C` (`,`) and `=3D` (`=`) escapes.
fn unescape_name(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in user name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(ScramError::Malformed("empty user name"));
    }
    Ok(out)
}

/// The server's side of one SCRAM exchange, between its two rounds.
#[derive(Debug)]
pub struct ServerExchange {
    mechanism: Mechanism,
    user: String,
    /// `client-first-bare + "," + server-first`, the start of AuthMessage.
    transcript: String,
    gs2_header: String,
    nonce: String,
    credential: Option<Credential>,
}

impl ServerExchange {
    /// Answers `first` for a user whose credential is `credential` (`None`
    /// for an unknown user: the exchange then fails at the proof, like a
    /// wrong password). Returns the exchange and the server-first message.
    pub fn start(
        mechanism: Mechanism,
        first: ClientFirst,
        credential: Option<Credential>,
    ) -> (ServerExchange, String) {
        let mut server_nonce = [0u8; 18];
        rand::Rng::fill(&mut rand::rng(), &mut server_nonce[..]);
        let nonce = format!("{}{}", first.nonce, B64.encode(server_nonce));
        let credential = credential.filter(|c| c.is_well_formed(mechanism));
        let (salt, iterations) = match &credential {
            Some(c) => (c.salt.clone(), c.iterations),
            // A salt that looks real and stays the same for the name.
            None => (
                mechanism.hash(format!("strata-unknown-user:{}", first.user).as_bytes())[..24]
                    .to_vec(),
                DEFAULT_ITERATIONS,
            ),
        };
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(salt));
        let exchange = ServerExchange {
            mechanism,
            transcript: format!("{},{server_first}", first.bare),
            user: first.user,
            gs2_header: first.gs2_header,
            nonce,
            credential,
        };
        (exchange, server_first)
    }

    /// The user the exchange is for.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Checks the client-final message; on success returns the
    /// server-final message (`v=...`) and the authenticated user.
    pub fn finish(self, message: &[u8]) -> Result<(String, String), ScramError> {
        let message =
            std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = message
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut attrs = without_proof.split(',');
        let binding = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed("expected c=..."))?;
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("expected r=..."))?;
        let binding = B64
            .decode(binding)
            .map_err(|_| ScramError::Malformed("channel binding is not base64"))?;
        if binding != self.gs2_header.as_bytes() {
            return Err(ScramError::Malformed(
                "channel binding does not match the first message",
            ));
        }
        if nonce != self.nonce {
            return Err(ScramError::Malformed("nonce does not match"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        let Some(credential) = self.credential else {
            return Err(ScramError::InvalidProof);
        };
        let m = self.mechanism;
        let auth_message = format!("{},{without_proof}", self.transcript);
        let client_signature = m.mac(&credential.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err(ScramError::InvalidProof);
        }
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        if constant_time::verify_slices_are_equal(&m.hash(&client_key), &credential.stored_key)
            .is_err()
        {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = m.mac(&credential.server_key, auth_message.as_bytes());
        Ok((format!("v={}", B64.encode(server_signature)), self.user))
    }
}

/// A PLAIN message (`authzid NUL user NUL password`): the user and the
/// password.
pub fn parse_plain(message: &[u8]) -> Result<(String, String), ScramError> {
    let message = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    let mut parts = message.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ScramError::Malformed(
            "PLAIN expects authzid NUL user NUL password",
        ));
    };
    if user.is_empty() {
        return Err(ScramError::Malformed("empty user name"));
    }
    if !authzid.is_empty() && authzid != user {
        return Err(ScramError::Unsupported(
            "an authorization id other than the user",
        ));
    }
    Ok((user.to_owned(), password.to_owned()))
}

/// Serde as base64 strings.
mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// RFC 7677's example exchange, with the server nonce forced.
    #[test]
    fn rfc7677_sha256_example() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credential = Credential::with_salt(Mechanism::Sha256, "pencil", salt, 4096);
        let first = client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        assert_eq!(first.user, "user");
        let (mut exchange, _) = ServerExchange::start(Mechanism::Sha256, first, Some(credential));
        // The RFC's server nonce instead of our random one.
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        exchange.nonce = nonce.to_owned();
        exchange.transcript =
            format!("n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
        let (server_final, user) = exchange
            .finish(
                format!("c=biws,r={nonce},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
                    .as_bytes(),
            )
            .unwrap();
        assert_eq!(
            server_final,
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        assert_eq!(user, "user");
    }

    /// A client written from the RFC, to run whole exchanges.
    fn client_final(
        m: Mechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> String {
        let attrs: Vec<&str> = server_first.split(',').collect();
        let nonce = attrs[0].strip_prefix("r=").unwrap();
        let salt = B64.decode(attrs[1].strip_prefix("s=").unwrap()).unwrap();
        let iterations: u32 = attrs[2].strip_prefix("i=").unwrap().parse().unwrap();
        let salted = m.salted_password(
            password.as_bytes(),
            &salt,
            NonZeroU32::new(iterations).unwrap(),
        );
        let client_key = m.mac(&salted, b"Client Key");
        let stored_key = m.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = m.mac(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    fn run(
        m: Mechanism,
        stored: Option<Credential>,
        user: &str,
        password: &str,
    ) -> Result<String, ScramError> {
        let bare = format!("n={user},r=abcdefghijkl");
        let first = client_first(format!("n,,{bare}").as_bytes())?;
        let (exchange, server_first) = ServerExchange::start(m, first, stored);
        let last = client_final(m, password, &bare, &server_first);
        exchange.finish(last.as_bytes()).map(|(_, u)| u)
    }

    #[test]
    fn both_mechanisms_accept_the_password_and_refuse_others() {
        for m in Mechanism::ALL {
            let c = Credential::new(m, "s3cret", DEFAULT_ITERATIONS);
            assert!(c.is_well_formed(m));
            assert_eq!(run(m, Some(c.clone()), "alice", "s3cret").unwrap(), "alice");
            assert_eq!(
                run(m, Some(c.clone()), "alice", "wrong"),
                Err(ScramError::InvalidProof)
            );
            assert_eq!(
                run(m, None, "nobody", "s3cret"),
                Err(ScramError::InvalidProof)
            );
            assert!(c.verify_password(m, "s3cret"));
            assert!(!c.verify_password(m, "s3cret "));
        }
    }

    #[test]
    fn an_unknown_user_looks_like_a_known_one() {
        let first = client_first(b"n,,n=ghost,r=nonce").unwrap();
        let (_, a) = ServerExchange::start(Mechanism::Sha256, first.clone(), None);
        let (_, b) = ServerExchange::start(Mechanism::Sha256, first, None);
        let salt = |s: &str| s.split(',').nth(1).map(str::to_owned);
        assert_eq!(salt(&a), salt(&b), "the same fake salt every time");
        assert!(a.ends_with(",i=4096"));
    }

    #[test]
    fn malformed_messages_are_refused() {
        for bad in [
            &b""[..],
            b"n,,",
            b"x,,n=a,r=b",
            b"p=tls-unique,,n=a,r=b",
            b"n,,r=b,n=a",
            b"n,,n=a",
            b"n,,n=a=,r=b",
            b"n,,n=a,r=b,tokenauth=true",
            b"n,a=other,n=a,r=b",
            b"n,,m=ext,n=a,r=b",
            &[0xff, 0xfe],
        ] {
            assert!(
                client_first(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let first = client_first(b"n,,n=a=2Cb=3Dc,r=xyz").unwrap();
        assert_eq!(first.user, "a,b=c");
        let c = Credential::new(Mechanism::Sha256, "p", DEFAULT_ITERATIONS);
        let (exchange, server_first) = ServerExchange::start(Mechanism::Sha256, first, Some(c));
        let nonce = server_first
            .split(',')
            .next()
            .unwrap()
            .strip_prefix("r=")
            .unwrap();
        assert_eq!(
            exchange
                .finish(format!("c=biws,r={nonce}x,p=AAAA").as_bytes())
                .unwrap_err(),
            ScramError::Malformed("nonce does not match")
        );
    }

    #[test]
    fn plain_messages() {
        assert_eq!(
            parse_plain(b"\0alice\0pw").unwrap(),
            ("alice".to_owned(), "pw".to_owned())
        );
        assert_eq!(parse_plain(b"alice\0alice\0pw").unwrap().0, "alice");
        assert!(parse_plain(b"bob\0alice\0pw").is_err());
        assert!(parse_plain(b"\0alice").is_err());
        assert!(parse_plain(b"\0\0pw").is_err());
    }

    proptest::proptest! {
        /// Whatever a client sends, the server answers with an error or a
        /// step; it never panics, and garbage never authenticates.
        #[test]
        fn arbitrary_client_messages_never_panic_or_pass(
            first in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            last in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let _ = parse_plain(&first);
            if let Ok(f) = client_first(&first) {
                let c = Credential::with_salt(Mechanism::Sha256, "pw", vec![7; 16], MIN_ITERATIONS);
                let (exchange, _) = ServerExchange::start(Mechanism::Sha256, f, Some(c));
                proptest::prop_assert!(exchange.finish(&last).is_err());
            }
        }

        /// Well-formed messages with any user name and nonce parse back.
        #[test]
        fn well_formed_first_messages_parse(user in "[a-zA-Z0-9_=,.@-]{1,40}", nonce in "[!-+--~]{1,40}") {
            let escaped = user.replace('=', "=3D").replace(',', "=2C");
            let f = client_first(format!("n,,n={escaped},r={nonce}").as_bytes());
            proptest::prop_assert_eq!(f.map(|f| f.user), Ok(user));
        }
    }

    #[test]
    fn credentials_round_trip_as_json() {
        let c = Credential::new(Mechanism::Sha512, "pw", DEFAULT_ITERATIONS);
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains("pw\""));
        let back: Credential = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
    }
}
