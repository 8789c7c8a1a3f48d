//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), server side, as Kafka's broker
//! runs them: the stored [`Credential`] and one authentication exchange ([`ScramServer`]).
//!
//! Like Kafka, passwords are used as their UTF-8 bytes (no SASLprep), the only extension
//! understood is `tokenauth`, and channel binding is not offered (`n` or `y` only).

use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac, pbkdf2};

/// Longest SCRAM message accepted from a client, in bytes.
pub const MAX_MESSAGE_LEN: usize = 4096;

/// Length of the salts [`Credential::random_salt`] makes, in bytes.
const SALT_LEN: usize = 32;

/// Random bytes behind the server's part of the nonce (sent base64-encoded).
const SERVER_NONCE_LEN: usize = 24;

/// Kafka's text for a client asking to act as another user.
const AUTHZID_DIFFERS: &str =
    "Authentication failed: Client requested an authorization id that is different from username";

/// A SCRAM mechanism: the hash function behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// SCRAM-SHA-256 (RFC 7677).
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl Mechanism {
    /// Fewest iterations Kafka accepts for a credential.
    pub const MIN_ITERATIONS: i32 = 4096;
    /// Most iterations Kafka accepts for a credential.
    pub const MAX_ITERATIONS: i32 = 16384;

    /// The SASL mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism with this SASL name (case-sensitive, as in Kafka).
    pub fn from_name(name: &str) -> Option<Mechanism> {
        match name {
            "SCRAM-SHA-256" => Some(Mechanism::Sha256),
            "SCRAM-SHA-512" => Some(Mechanism::Sha512),
            _ => None,
        }
    }

    /// Kafka's ScramMechanism id, as in the user SCRAM credential APIs.
    pub fn kafka_type(self) -> i8 {
        match self {
            Mechanism::Sha256 => 1,
            Mechanism::Sha512 => 2,
        }
    }

    /// The mechanism with this Kafka ScramMechanism id (0 is Kafka's "unknown").
    pub fn from_kafka_type(t: i8) -> Option<Mechanism> {
        match t {
            1 => Some(Mechanism::Sha256),
            2 => Some(Mechanism::Sha512),
            _ => None,
        }
    }

    pub(crate) fn digest(self) -> &'static digest::Algorithm {
        match self {
            Mechanism::Sha256 => &digest::SHA256,
            Mechanism::Sha512 => &digest::SHA512,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Mechanism::Sha256 => hmac::HMAC_SHA256,
            Mechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Mechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Mechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }
}

/// Why a SCRAM step or a credential was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The client's message does not follow the SCRAM grammar.
    #[error("Invalid SCRAM message: {0}")]
    Malformed(&'static str),
    /// Unknown user or wrong proof (deliberately one error, so they look the same).
    #[error("Authentication failed: Invalid user credentials")]
    InvalidCredentials,
    /// A valid request this server does not support (channel binding, another authzid).
    #[error("{0}")]
    Unsupported(&'static str),
    /// A step called twice, out of sequence, or after the exchange ended.
    #[error("SCRAM step out of order")]
    OutOfOrder,
    /// A credential outside Kafka's bounds (for example "Too few iterations").
    #[error("{0}")]
    UnacceptableCredential(&'static str),
    /// The system random source failed.
    #[error("random source failure")]
    Random,
}

/// What a server keeps for a user and mechanism (RFC 5802 section 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// The salt the client hashes its password with.
    pub salt: Vec<u8>,
    /// H(ClientKey): checks the client's proof.
    pub stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key"): signs the server-final-message.
    pub server_key: Vec<u8>,
    /// PBKDF2 iteration count.
    pub iterations: i32,
}

impl Credential {
    /// From the salted password an admin client sends in AlterUserScramCredentials.
    /// Iterations outside Kafka's bounds are refused.
    pub fn from_salted_password(
        m: Mechanism,
        salt: &[u8],
        salted_password: &[u8],
        iterations: i32,
    ) -> Result<Credential, ScramError> {
        check_iterations(iterations)?;
        let client_key = hmac_sign(m, salted_password, b"Client Key");
        Ok(Credential {
            salt: salt.to_vec(),
            stored_key: digest::digest(m.digest(), client_key.as_ref())
                .as_ref()
                .to_vec(),
            server_key: hmac_sign(m, salted_password, b"Server Key")
                .as_ref()
                .to_vec(),
            iterations,
        })
    }

    /// From a plaintext password: SaltedPassword = Hi(password, salt, iterations).
    /// Iterations outside Kafka's bounds are refused.
    pub fn from_password(
        m: Mechanism,
        password: &str,
        salt: &[u8],
        iterations: i32,
    ) -> Result<Credential, ScramError> {
        let rounds = check_iterations(iterations)?;
        let salted = hi(m, password.as_bytes(), salt, rounds);
        Credential::from_salted_password(m, salt, &salted, iterations)
    }

    /// A fresh random salt for a new credential.
    pub fn random_salt() -> Result<Vec<u8>, ScramError> {
        random_bytes(SALT_LEN)
    }

    /// Whether `password` matches this credential (for SASL/PLAIN), compared in constant
    /// time. False, without hashing, if the iterations are outside Kafka's bounds.
    pub fn verify_password(&self, m: Mechanism, password: &str) -> bool {
        let Ok(rounds) = check_iterations(self.iterations) else {
            return false;
        };
        let salted = hi(m, password.as_bytes(), &self.salt, rounds);
        let client_key = hmac_sign(m, &salted, b"Client Key");
        let stored_key = digest::digest(m.digest(), client_key.as_ref());
        constant_time_eq(stored_key.as_ref(), &self.stored_key)
    }
}

/// What the client-first-message says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientFirst {
    /// The user name, unescaped.
    pub username: String,
    /// Whether the client sent `tokenauth=true` (a Kafka delegation token).
    pub token_auth: bool,
}

/// The server side of one SCRAM exchange: call [`ScramServer::client_first`],
/// [`ScramServer::server_first`] and [`ScramServer::client_final`] in that order. Any error
/// ends the exchange.
pub struct ScramServer {
    mechanism: Mechanism,
    server_nonce: String,
    state: State,
}

/// Where an exchange stands.
enum State {
    Start,
    GotClientFirst(FirstMessage),
    SentServerFirst {
        first: FirstMessage,
        server_first: String,
        credential: Credential,
        known_user: bool,
    },
    Ended,
}

/// The parts of the client-first-message later steps need.
struct FirstMessage {
    gs2_header: String,
    bare: String,
    nonce: String,
    username: String,
}

impl ScramServer {
    /// A new exchange with a fresh random server nonce.
    pub fn new(m: Mechanism) -> Result<ScramServer, ScramError> {
        let nonce = BASE64.encode(random_bytes(SERVER_NONCE_LEN)?);
        Ok(ScramServer::with_nonce(m, nonce))
    }

    /// An exchange with a given server nonce (tests and the fuzz targets: deterministic).
    pub(crate) fn with_nonce(mechanism: Mechanism, server_nonce: String) -> ScramServer {
        ScramServer {
            mechanism,
            server_nonce,
            state: State::Start,
        }
    }

    /// The mechanism of this exchange.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Parses the client-first-message: `gs2-header n=saslname,r=nonce[,extensions]`.
    pub fn client_first(&mut self, msg: &[u8]) -> Result<ClientFirst, ScramError> {
        let State::Start = std::mem::replace(&mut self.state, State::Ended) else {
            return Err(ScramError::OutOfOrder);
        };
        let (first, token_auth) = parse_client_first(to_text(msg)?)?;
        let out = ClientFirst {
            username: first.username.clone(),
            token_auth,
        };
        self.state = State::GotClientFirst(first);
        Ok(out)
    }

    /// The server-first-message for the user's credential. `None` (unknown user) still
    /// gets a plausible answer (random salt, default iterations); `client_final` then fails
    /// as for a wrong password.
    pub fn server_first(&mut self, credential: Option<Credential>) -> Result<Vec<u8>, ScramError> {
        let State::GotClientFirst(first) = std::mem::replace(&mut self.state, State::Ended) else {
            return Err(ScramError::OutOfOrder);
        };
        let known_user = credential.is_some();
        let credential = match credential {
            Some(c) => c,
            None => self.decoy_credential()?,
        };
        let server_first = format!(
            "r={}{},s={},i={}",
            first.nonce,
            self.server_nonce,
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        let out = server_first.as_bytes().to_vec();
        self.state = State::SentServerFirst {
            first,
            server_first,
            credential,
            known_user,
        };
        Ok(out)
    }

    /// Checks the client-final-message (`c=biws` or `c=eSws`, the full nonce, the proof) and
    /// returns the server-final-message (`v=ServerSignature`) and the authenticated user.
    pub fn client_final(&mut self, msg: &[u8]) -> Result<(Vec<u8>, String), ScramError> {
        let State::SentServerFirst {
            first,
            server_first,
            credential,
            known_user,
        } = std::mem::replace(&mut self.state, State::Ended)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let m = self.mechanism;
        let text = to_text(msg)?;
        let (without_proof, proof) = text
            .rsplit_once(',')
            .ok_or(ScramError::Malformed("missing proof"))?;
        let proof = proof
            .strip_prefix("p=")
            .ok_or(ScramError::Malformed("missing proof"))?;
        let mut attrs = without_proof.split(',');
        let binding = attribute(attrs.next(), "c=", "missing channel binding")?;
        let nonce = attribute(attrs.next(), "r=", "missing nonce")?;
        for ext in attrs {
            parse_extension(ext)?;
        }
        let binding = decode_base64(binding, "bad channel binding")?;
        if binding != first.gs2_header.as_bytes() {
            return Err(ScramError::Malformed(
                "channel binding does not match the gs2 header",
            ));
        }
        if nonce.strip_prefix(first.nonce.as_str()) != Some(self.server_nonce.as_str()) {
            return Err(ScramError::Malformed("nonce does not match"));
        }
        let proof = decode_base64(proof, "bad proof")?;
        if proof.len() != m.digest().output_len() {
            return Err(ScramError::Malformed("proof has the wrong length"));
        }

        let auth_message = format!("{},{},{}", first.bare, server_first, without_proof);
        let signature = hmac_sign(m, &credential.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof
            .iter()
            .zip(signature.as_ref())
            .map(|(p, s)| p ^ s)
            .collect();
        let stored_key = digest::digest(m.digest(), &client_key);
        let proof_ok = constant_time_eq(stored_key.as_ref(), &credential.stored_key);
        if !(proof_ok && known_user) {
            return Err(ScramError::InvalidCredentials);
        }
        let server_signature = hmac_sign(m, &credential.server_key, auth_message.as_bytes());
        let server_final = format!("v={}", BASE64.encode(server_signature.as_ref()));
        Ok((server_final.into_bytes(), first.username))
    }

    /// A random credential for an unknown user: looks real, matches no password.
    fn decoy_credential(&self) -> Result<Credential, ScramError> {
        let len = self.mechanism.digest().output_len();
        Ok(Credential {
            salt: random_bytes(SALT_LEN)?,
            stored_key: random_bytes(len)?,
            server_key: random_bytes(len)?,
            iterations: Mechanism::MIN_ITERATIONS,
        })
    }
}

/// The client side of one SCRAM exchange, as brokers authenticate to each other
/// (`inter_broker_sasl_mechanism`): [`ScramClient::first`], then [`ScramClient::finish`]
/// with the server-first-message, then [`ScramClient::check_final`] with the server's last.
pub struct ScramClient {
    m: Mechanism,
    password: String,
    gs2_header: String,
    bare: String,
    nonce: String,
}

impl ScramClient {
    /// A client for `user` with a random nonce.
    pub fn new(m: Mechanism, user: &str, password: &str) -> Result<ScramClient, ScramError> {
        let nonce = BASE64.encode(random_bytes(SERVER_NONCE_LEN)?);
        let saslname = user.replace('=', "=3D").replace(',', "=2C");
        Ok(ScramClient::with_nonce(m, &saslname, password, &nonce))
    }

    /// A client with the given nonce (printable, without `,`) for a user name already
    /// escaped as a saslname (`=2C`, `=3D`).
    pub fn with_nonce(m: Mechanism, saslname: &str, password: &str, nonce: &str) -> ScramClient {
        ScramClient {
            m,
            password: password.to_owned(),
            // No channel binding, no authzid.
            gs2_header: "n,,".to_owned(),
            bare: format!("n={saslname},r={nonce}"),
            nonce: nonce.to_owned(),
        }
    }

    /// The client that sent `first` (any client-first-message: authzid, `y` flag,
    /// extensions), to compute its final message; None when `first` has no `n=` or nonce.
    pub fn of_first_message(m: Mechanism, first: &str, password: &str) -> Option<ScramClient> {
        let (gs2, bare) = first.split_at(first.find("n=")?);
        let nonce = bare.split(',').find_map(|a| a.strip_prefix("r="))?;
        Some(ScramClient {
            m,
            password: password.to_owned(),
            gs2_header: gs2.to_owned(),
            bare: bare.to_owned(),
            nonce: nonce.to_owned(),
        })
    }

    /// The client's nonce.
    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    /// The client-first-message.
    pub fn first(&self) -> Vec<u8> {
        format!("{}{}", self.gs2_header, self.bare).into_bytes()
    }

    /// The client-final-message answering `server_first`, and the server-final-message a
    /// server that knows the password must send.
    pub fn finish(&self, server_first: &[u8]) -> Result<(Vec<u8>, Vec<u8>), ScramError> {
        let server_first = to_text(server_first)?;
        let mut attrs = server_first.split(',');
        let nonce = attribute(attrs.next(), "r=", "no nonce")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::Malformed(
                "the server's nonce does not extend ours",
            ));
        }
        let salt = decode_base64(attribute(attrs.next(), "s=", "no salt")?, "bad salt")?;
        let iterations: i32 = attribute(attrs.next(), "i=", "no iteration count")?
            .parse()
            .map_err(|_| ScramError::Malformed("bad iteration count"))?;
        let salted = hi(
            self.m,
            self.password.as_bytes(),
            &salt,
            check_iterations(iterations)?,
        );
        let client_key = hmac_sign(self.m, &salted, b"Client Key");
        let stored_key = digest::digest(self.m.digest(), client_key.as_ref());
        let without_proof = format!("c={},r={nonce}", BASE64.encode(&self.gs2_header));
        let auth = format!("{},{server_first},{without_proof}", self.bare);
        let signature = hmac_sign(self.m, stored_key.as_ref(), auth.as_bytes());
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(signature.as_ref())
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac_sign(self.m, &salted, b"Server Key");
        let server_signature = hmac_sign(self.m, server_key.as_ref(), auth.as_bytes());
        Ok((
            format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes(),
            format!("v={}", BASE64.encode(server_signature.as_ref())).into_bytes(),
        ))
    }

    /// Whether the server's final message proves it knows the credential (`expected` from
    /// [`ScramClient::finish`]).
    pub fn check_final(server_final: &[u8], expected: &[u8]) -> Result<(), ScramError> {
        if constant_time_eq(server_final, expected) {
            Ok(())
        } else {
            Err(ScramError::InvalidCredentials)
        }
    }
}

/// Parses `gs2-cbind-flag "," [authzid] "," client-first-message-bare`.
fn parse_client_first(text: &str) -> Result<(FirstMessage, bool), ScramError> {
    let mut parts = text.splitn(3, ',');
    let (Some(flag), Some(authz), Some(bare)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ScramError::Malformed("bad gs2 header"));
    };
    match flag {
        "n" | "y" => {}
        _ if flag.starts_with("p=") => {
            return Err(ScramError::Unsupported("channel binding is not supported"));
        }
        _ => return Err(ScramError::Malformed("bad gs2 header")),
    }
    let authzid = if authz.is_empty() {
        None
    } else {
        let authzid = attribute(Some(authz), "a=", "bad authzid")?;
        Some(unescape_saslname(authzid)?)
    };

    if bare.starts_with("m=") {
        return Err(ScramError::Unsupported(
            "mandatory extensions (m=) are not supported",
        ));
    }
    let mut attrs = bare.split(',');
    let username = unescape_saslname(attribute(attrs.next(), "n=", "missing user name")?)?;
    let nonce = attribute(attrs.next(), "r=", "missing nonce")?;
    if nonce.is_empty() || !nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(ScramError::Malformed("bad nonce"));
    }
    let mut token_auth = false;
    for ext in attrs {
        let (key, value) = parse_extension(ext)?;
        if key == "tokenauth" && value.eq_ignore_ascii_case("true") {
            token_auth = true;
        }
    }
    if authzid.is_some_and(|a| a != username) {
        return Err(ScramError::Unsupported(AUTHZID_DIFFERS));
    }
    let first = FirstMessage {
        gs2_header: format!("{flag},{authz},"),
        bare: bare.to_owned(),
        nonce: nonce.to_owned(),
        username,
    };
    Ok((first, token_auth))
}

/// The value of `part` if it starts with `prefix` (such as `"n="`), else `Malformed(why)`.
fn attribute<'a>(
    part: Option<&'a str>,
    prefix: &str,
    why: &'static str,
) -> Result<&'a str, ScramError> {
    part.and_then(|p| p.strip_prefix(prefix))
        .ok_or(ScramError::Malformed(why))
}

/// Splits an extension `key=value`; the key is letters, digits and `_`.
fn parse_extension(ext: &str) -> Result<(&str, &str), ScramError> {
    let (key, value) = ext
        .split_once('=')
        .ok_or(ScramError::Malformed("bad extension"))?;
    let key_ok = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !key_ok {
        return Err(ScramError::Malformed("bad extension"));
    }
    Ok((key, value))
}

/// Unescapes a saslname: `=2C` is `,`, `=3D` is `=`, any other `=` is an error.
fn unescape_saslname(name: &str) -> Result<String, ScramError> {
    if name.is_empty() {
        return Err(ScramError::Malformed("empty user name"));
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let escaped = match rest.get(at..at + 3) {
            Some("=2C") => ',',
            Some("=3D") => '=',
            _ => return Err(ScramError::Malformed("bad escape in user name")),
        };
        out.push(escaped);
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A client message as text: bounded, UTF-8, without NUL (no SCRAM attribute allows it).
fn to_text(msg: &[u8]) -> Result<&str, ScramError> {
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(ScramError::Malformed("message too long"));
    }
    let text = std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    if text.contains('\0') {
        return Err(ScramError::Malformed("NUL in message"));
    }
    Ok(text)
}

fn decode_base64(value: &str, why: &'static str) -> Result<Vec<u8>, ScramError> {
    BASE64.decode(value).map_err(|_| ScramError::Malformed(why))
}

fn check_iterations(iterations: i32) -> Result<NonZeroU32, ScramError> {
    if iterations < Mechanism::MIN_ITERATIONS {
        return Err(ScramError::UnacceptableCredential("Too few iterations"));
    }
    if iterations > Mechanism::MAX_ITERATIONS {
        return Err(ScramError::UnacceptableCredential("Too many iterations"));
    }
    u32::try_from(iterations)
        .ok()
        .and_then(NonZeroU32::new)
        .ok_or(ScramError::UnacceptableCredential("Too few iterations"))
}

/// Hi(password, salt, i) of RFC 5802: PBKDF2 with the mechanism's HMAC.
pub(crate) fn hi(m: Mechanism, password: &[u8], salt: &[u8], iterations: NonZeroU32) -> Vec<u8> {
    let mut out = vec![0; m.digest().output_len()];
    pbkdf2::derive(m.pbkdf2(), iterations, salt, password, &mut out);
    out
}

pub(crate) fn hmac_sign(m: Mechanism, key: &[u8], data: &[u8]) -> hmac::Tag {
    hmac::sign(&hmac::Key::new(m.hmac(), key), data)
}

fn random_bytes(len: usize) -> Result<Vec<u8>, ScramError> {
    let mut out = vec![0; len];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| ScramError::Random)?;
    Ok(out)
}

/// Equality whose time depends on the lengths only, not on where the bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client, with a fixed nonce (the RFC's examples) and panics for test failures.
    struct Client(ScramClient);

    impl Client {
        fn new(m: Mechanism, user: &str, password: &str, nonce: &str) -> Client {
            Client(ScramClient::with_nonce(m, user, password, nonce))
        }

        fn first(&self) -> Vec<u8> {
            self.0.first()
        }

        /// The client-final-message for `server_first`, and the server-final expected.
        fn finish(&self, server_first: &[u8]) -> (Vec<u8>, Vec<u8>) {
            self.0.finish(server_first).expect("server-first-message")
        }
    }

    fn credential(m: Mechanism, password: &str) -> Credential {
        Credential::from_password(m, password, b"some salt", 4096).unwrap()
    }

    /// A server that has answered `client_first` for "user" with `cred`.
    fn server_after_first(cred: Option<Credential>) -> (ScramServer, Vec<u8>) {
        let mut s = ScramServer::with_nonce(Mechanism::Sha256, "SERVERNONCE".to_owned());
        s.client_first(b"n,,n=user,r=CLIENT").unwrap();
        let sf = s.server_first(cred).unwrap();
        (s, sf)
    }

    const RFC_PROOF: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";

    fn rfc_server() -> ScramServer {
        let mut s = ScramServer::with_nonce(
            Mechanism::Sha256,
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".to_owned(),
        );
        let first = s.client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        assert_eq!(
            first,
            ClientFirst {
                username: "user".to_owned(),
                token_auth: false
            }
        );
        s
    }

    fn rfc_credential(password: &str) -> Credential {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        Credential::from_password(Mechanism::Sha256, password, &salt, 4096).unwrap()
    }

    #[test]
    fn mechanism_names_and_kafka_ids() {
        for m in [Mechanism::Sha256, Mechanism::Sha512] {
            assert_eq!(Mechanism::from_name(m.name()), Some(m));
            assert_eq!(Mechanism::from_kafka_type(m.kafka_type()), Some(m));
        }
        assert_eq!(Mechanism::Sha256.kafka_type(), 1);
        assert_eq!(Mechanism::Sha512.name(), "SCRAM-SHA-512");
        assert_eq!(Mechanism::from_name("scram-sha-256"), None);
        assert_eq!(Mechanism::from_kafka_type(0), None);
    }

    #[test]
    fn rfc_7677_example() {
        let mut s = rfc_server();
        let sf = s.server_first(Some(rfc_credential("pencil"))).unwrap();
        assert_eq!(
            sf,
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let (server_final, user) = s.client_final(RFC_PROOF.as_bytes()).unwrap();
        assert_eq!(
            server_final,
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        assert_eq!(user, "user");
        assert_eq!(
            s.client_final(RFC_PROOF.as_bytes()),
            Err(ScramError::OutOfOrder)
        );
    }

    #[test]
    fn sha512_round_trip() {
        let m = Mechanism::Sha512;
        let salt = Credential::random_salt().unwrap();
        let cred = Credential::from_password(m, "s3cr3t ünïcode", &salt, 8192).unwrap();
        let client = Client::new(m, "alice", "s3cr3t ünïcode", "fyko+d2lbbFgONRv9qkxdawL");
        let mut s = ScramServer::new(m).unwrap();
        assert_eq!(s.client_first(&client.first()).unwrap().username, "alice");
        let sf = s.server_first(Some(cred)).unwrap();
        let (client_final, expected) = client.finish(&sf);
        let (server_final, user) = s.client_final(&client_final).unwrap();
        assert_eq!(server_final, expected);
        assert_eq!(user, "alice");
    }

    #[test]
    fn escaped_names_authzid_and_y_flag() {
        let m = Mechanism::Sha256;
        let mut client = Client::new(m, "a=2Cb=3Dc", "pw", "nonce");
        client.0.gs2_header = "y,a=a=2Cb=3Dc,".to_owned();
        let mut s = ScramServer::new(m).unwrap();
        assert_eq!(s.client_first(&client.first()).unwrap().username, "a,b=c");
        let sf = s.server_first(Some(credential(m, "pw"))).unwrap();
        let (client_final, expected) = client.finish(&sf);
        assert_eq!(
            s.client_final(&client_final).unwrap(),
            (expected, "a,b=c".to_owned())
        );

        let mut s = ScramServer::new(m).unwrap();
        assert_eq!(
            s.client_first(b"n,a=admin,n=user,r=abc"),
            Err(ScramError::Unsupported(AUTHZID_DIFFERS))
        );
    }

    #[test]
    fn token_auth_is_reported() {
        for (msg, token) in [
            (&b"n,,n=tok,r=abc,tokenauth=true"[..], true),
            (b"n,,n=tok,r=abc,tokenauth=TRUE", true),
            (b"n,,n=tok,r=abc,tokenauth=false", false),
            (b"n,,n=tok,r=abc,other=x", false),
        ] {
            let mut s = ScramServer::new(Mechanism::Sha256).unwrap();
            assert_eq!(s.client_first(msg).unwrap().token_auth, token);
        }
    }

    #[test]
    fn wrong_password_and_unknown_user_fail_alike() {
        let mut s = rfc_server();
        s.server_first(Some(rfc_credential("pen"))).unwrap();
        let wrong = s.client_final(RFC_PROOF.as_bytes());
        assert_eq!(wrong, Err(ScramError::InvalidCredentials));

        let mut s = rfc_server();
        let sf = String::from_utf8(s.server_first(None).unwrap()).unwrap();
        let mut attrs = sf.split(',');
        assert_eq!(
            attrs.next(),
            Some("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
        );
        let salt = attrs.next().unwrap().strip_prefix("s=").unwrap();
        assert_eq!(BASE64.decode(salt).unwrap().len(), SALT_LEN);
        assert_eq!(attrs.next(), Some("i=4096"));
        assert_eq!(attrs.next(), None);
        let unknown = s.client_final(RFC_PROOF.as_bytes());
        assert_eq!(unknown, wrong);
        assert_eq!(
            unknown.unwrap_err().to_string(),
            wrong.unwrap_err().to_string()
        );
    }

    #[test]
    fn malformed_client_first_is_refused() {
        let cases: &[&[u8]] = &[
            b"",
            b"n",
            b"n,",
            b"n,,",
            b"x,,n=user,r=abc",
            b"n,x=user,n=user,r=abc",
            b"n,a=,n=user,r=abc",
            b"n,,r=abc",
            b"n,,n=user",
            b"n,,n=,r=abc",
            b"n,,n=user,r=",
            b"n,,n=user,r=a b",
            b"n,,n=user,x=abc",
            b"n,,n=us=er,r=abc",
            b"n,,n=user=2,r=abc",
            b"n,,n=user=2c,r=abc",
            b"n,,n=user,r=abc,",
            b"n,,n=user,r=abc,=x",
            b"n,,n=user,r=abc,ext",
            b"n,,n=user,r=abc,b-d=x",
            b"n,,n=us\0er,r=abc",
            b"n,,n=\xff,r=abc",
        ];
        for &msg in cases {
            let mut s = ScramServer::new(Mechanism::Sha256).unwrap();
            let err = s.client_first(msg).unwrap_err();
            assert!(matches!(err, ScramError::Malformed(_)), "{msg:?}: {err:?}");
        }
        for msg in [&b"p=tls-unique,,n=user,r=abc"[..], b"n,,m=ext,n=user,r=abc"] {
            let mut s = ScramServer::new(Mechanism::Sha256).unwrap();
            let err = s.client_first(msg).unwrap_err();
            assert!(
                matches!(err, ScramError::Unsupported(_)),
                "{msg:?}: {err:?}"
            );
        }
        let mut s = ScramServer::new(Mechanism::Sha256).unwrap();
        let long = format!("n,,n={},r=abc", "u".repeat(MAX_MESSAGE_LEN));
        assert!(s.client_first(long.as_bytes()).is_err());
    }

    #[test]
    fn malformed_client_final_is_refused() {
        let cred = credential(Mechanism::Sha256, "pw");
        let (_, sf) = server_after_first(Some(cred.clone()));
        let client = Client::new(Mechanism::Sha256, "user", "pw", "CLIENT");
        let (good, _) = client.finish(&sf);
        let good = String::from_utf8(good).unwrap();
        let proof = good.rsplit_once(",p=").unwrap().1.to_owned();
        let cases = [
            String::new(),
            "c=biws".to_owned(),
            "c=biws,r=CLIENTSERVERNONCE".to_owned(),
            format!("r=CLIENTSERVERNONCE,p={proof}"),
            format!("c=biws,p={proof}"),
            format!("c=biws,r=CLIENTSERVERNONCE,p={proof},x=y"),
            format!("c=biws,r=CLIENTSERVERNONCE,p=!!{proof}"),
            "c=biws,r=CLIENTSERVERNONCE,p=AAAA".to_owned(),
            format!("c=bi*s,r=CLIENTSERVERNONCE,p={proof}"),
            format!("c=eSws,r=CLIENTSERVERNONCE,p={proof}"),
            format!("c=cD10bHMtdW5pcXVlLCw=,r=CLIENTSERVERNONCE,p={proof}"),
            format!("c=biws,r=CLIENTSERVERNONC,p={proof}"),
            format!("c=biws,r=CLIENTSERVERNONCEX,p={proof}"),
            format!("c=biws,r=OTHERSERVERNONCE,p={proof}"),
            format!("c=biws,r=CLIENTSERVERNONCE,=x,p={proof}"),
        ];
        for msg in &cases {
            let (mut s, _) = server_after_first(Some(cred.clone()));
            let err = s.client_final(msg.as_bytes()).unwrap_err();
            assert!(matches!(err, ScramError::Malformed(_)), "{msg:?}: {err:?}");
        }
        // Extensions before the proof are allowed (and ignored), but they are part of
        // the AuthMessage, so this proof no longer matches.
        let (mut s, _) = server_after_first(Some(cred.clone()));
        let with_ext = format!("c=biws,r=CLIENTSERVERNONCE,x=y,p={proof}");
        assert_eq!(
            s.client_final(with_ext.as_bytes()),
            Err(ScramError::InvalidCredentials)
        );
        let (mut s, _) = server_after_first(Some(cred));
        assert_eq!(s.client_final(good.as_bytes()).unwrap().1, "user");
    }

    #[test]
    fn steps_out_of_order_are_refused() {
        let cred = credential(Mechanism::Sha256, "pw");
        let mut s = ScramServer::new(Mechanism::Sha256).unwrap();
        assert_eq!(s.server_first(None), Err(ScramError::OutOfOrder));
        let mut s = ScramServer::new(Mechanism::Sha256).unwrap();
        assert_eq!(s.client_final(b"c=biws"), Err(ScramError::OutOfOrder));

        let mut s = ScramServer::new(Mechanism::Sha256).unwrap();
        s.client_first(b"n,,n=user,r=abc").unwrap();
        assert_eq!(
            s.client_first(b"n,,n=user,r=abc"),
            Err(ScramError::OutOfOrder)
        );
        let mut s = ScramServer::new(Mechanism::Sha256).unwrap();
        s.client_first(b"n,,n=user,r=abc").unwrap();
        assert_eq!(s.client_final(b"c=biws"), Err(ScramError::OutOfOrder));

        let (mut s, _) = server_after_first(Some(cred.clone()));
        assert_eq!(s.server_first(Some(cred)), Err(ScramError::OutOfOrder));

        // A failed step ends the exchange.
        let mut s = ScramServer::new(Mechanism::Sha256).unwrap();
        assert!(s.client_first(b"garbage").is_err());
        assert_eq!(
            s.client_first(b"n,,n=user,r=abc"),
            Err(ScramError::OutOfOrder)
        );
    }

    #[test]
    fn verify_password_and_credential_constructors() {
        for m in [Mechanism::Sha256, Mechanism::Sha512] {
            let salt = Credential::random_salt().unwrap();
            let cred = Credential::from_password(m, "hunter2", &salt, 4096).unwrap();
            assert!(cred.verify_password(m, "hunter2"));
            assert!(!cred.verify_password(m, "hunter3"));
            assert!(!cred.verify_password(m, ""));

            let salted = hi(m, b"hunter2", &salt, NonZeroU32::new(4096).unwrap());
            let from_salted = Credential::from_salted_password(m, &salt, &salted, 4096).unwrap();
            assert_eq!(cred, from_salted);
            assert_eq!(cred.stored_key.len(), m.digest().output_len());

            let mut weak = cred.clone();
            weak.iterations = 1;
            assert!(!weak.verify_password(m, "hunter2"));
        }
        assert!(!credential(Mechanism::Sha256, "pw").verify_password(Mechanism::Sha512, "pw"));
    }

    #[test]
    fn iterations_outside_kafka_bounds_are_refused() {
        for i in [i32::MIN, -1, 0, 1, 4095, 16385, i32::MAX] {
            let err = Credential::from_password(Mechanism::Sha256, "pw", b"salt", i).unwrap_err();
            assert!(matches!(err, ScramError::UnacceptableCredential(_)), "{i}");
            let err = Credential::from_salted_password(Mechanism::Sha512, b"s", b"p", i);
            assert!(err.is_err(), "{i}");
        }
        assert!(Credential::from_salted_password(Mechanism::Sha256, b"s", b"p", 16384).is_ok());
    }

    #[test]
    fn random_salts_differ() {
        let a = Credential::random_salt().unwrap();
        assert_eq!(a.len(), SALT_LEN);
        assert_ne!(a, Credential::random_salt().unwrap());
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        /// Random bytes, often from SCRAM's own alphabet, or `seed` with a few mutations.
        fn message(&mut self, seed: &[u8]) -> Vec<u8> {
            const ALPHABET: &[u8] = b"nyacrpmsiv=,23CDbiwsAB/+\0\xff";
            let mut out = if self.next() & 1 == 0 {
                seed.to_vec()
            } else {
                Vec::new()
            };
            if out.is_empty() {
                let len = (self.next() % 64) as usize;
                for _ in 0..len {
                    out.push(self.byte(ALPHABET));
                }
            } else {
                for _ in 0..=self.next() % 4 {
                    let at = (self.next() as usize) % out.len();
                    match self.next() % 3 {
                        0 => out[at] = self.byte(ALPHABET),
                        1 => out.insert(at, self.byte(ALPHABET)),
                        _ => out.truncate(at),
                    }
                    if out.is_empty() {
                        break;
                    }
                }
            }
            out
        }

        fn byte(&mut self, alphabet: &[u8]) -> u8 {
            let r = self.next();
            if r & 3 == 0 {
                (r >> 8) as u8
            } else {
                alphabet[(r >> 8) as usize % alphabet.len()]
            }
        }
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let cred = credential(Mechanism::Sha256, "pw");
        let (_, sf) = server_after_first(Some(cred.clone()));
        let (good_final, _) = Client::new(Mechanism::Sha256, "user", "pw", "CLIENT").finish(&sf);
        let mut accepted = 0;
        for _ in 0..3000 {
            let msg = rng.message(b"n,a=u=2C,n=u=2C,r=abc,tokenauth=true");
            let mut s = ScramServer::with_nonce(Mechanism::Sha256, "S".to_owned());
            if s.client_first(&msg).is_ok() {
                accepted += 1;
                assert!(s.server_first(None).is_ok());
            }

            let msg = rng.message(&good_final);
            let (mut s, _) = server_after_first(Some(cred.clone()));
            let _ = s.client_final(&msg);
        }
        assert!(accepted > 0);
    }
}
