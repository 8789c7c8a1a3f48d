//! SASL/OAUTHBEARER (RFC 7628) on the server side, with the rules of Kafka's
//! `OAuthBearerSaslServer`, and two token validators: Kafka's default one for unsecured
//! JWTs (`"alg":"none"`) and a KIP-768 style one for signed JWTs checked against a JWK Set.
//! No I/O: the caller reads the JWKS file and supplies the clock.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Longest client initial response accepted, in bytes.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;
/// Longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Most SASL extensions accepted in one client initial response.
pub const MAX_EXTENSIONS: usize = 64;
/// Largest JWK Set document accepted, in bytes.
pub const MAX_JWKS_LEN: usize = 1024 * 1024;
/// Most keys accepted in one JWK Set.
pub const MAX_JWKS_KEYS: usize = 256;

/// The key-value separator of RFC 7628 (`%x01`); also the client's reply to an error.
const KVSEP: char = '\u{1}';

/// JWK members are base64url; tolerate padding there (tokens must not have any).
const JWK_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why an OAUTHBEARER exchange, a token or a key set was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    /// The input does not parse (client message, token or JWK Set).
    #[error("malformed OAUTHBEARER input: {0}")]
    Malformed(String),
    /// The token parses but fails validation.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// The token is valid but lacks some of these required scopes.
    #[error("insufficient scope: requires {}", .0.join(" "))]
    InsufficientScope(Vec<String>),
    /// A feature this implementation does not offer (an algorithm, channel binding, JWE).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The client asked for an authorization id other than the token's principal.
    #[error("authorization id {authzid:?} differs from the token's principal {principal:?}")]
    AuthzidMismatch {
        /// The authorization id the client sent.
        authzid: String,
        /// The principal the token names.
        principal: String,
    },
    /// A message arrived when the exchange expected none.
    #[error("OAUTHBEARER message out of order")]
    OutOfOrder,
}

fn malformed(reason: &str) -> OAuthError {
    OAuthError::Malformed(reason.to_owned())
}

fn invalid(reason: &str) -> OAuthError {
    OAuthError::InvalidToken(reason.to_owned())
}

fn unsupported(reason: &str) -> OAuthError {
    OAuthError::Unsupported(reason.to_owned())
}

// ---------------------------------------------------------------------------
// Client initial response
// ---------------------------------------------------------------------------

/// What the client sent in its initial response.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientInitialResponse {
    /// The bearer token (`auth=Bearer <token>`).
    pub token: String,
    /// The authorization id from the GS2 header, unescaped; `None` when absent.
    pub authzid: Option<String>,
    /// The other key-value pairs (SASL extensions).
    pub extensions: BTreeMap<String, String>,
}

impl fmt::Debug for ClientInitialResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientInitialResponse")
            .field("token", &"<redacted>")
            .field("authzid", &self.authzid)
            .field("extensions", &self.extensions)
            .finish()
    }
}

/// Parses an RFC 7628 client initial response:
/// `n,[a=authzid],` `%x01` then `key=value%x01` pairs, one of them `auth=Bearer <token>`,
/// then a final `%x01`. Keys are letters, values printable ASCII (plus SP, HTAB, CR, LF)
/// and non-empty, as Kafka requires.
pub fn parse_client_initial_response(msg: &[u8]) -> Result<ClientInitialResponse, OAuthError> {
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(malformed("client initial response too long"));
    }
    let text =
        std::str::from_utf8(msg).map_err(|_| malformed("client initial response is not UTF-8"))?;
    let (authzid, body) = parse_gs2_header(text)?;
    let pairs = body
        .strip_prefix(KVSEP)
        .and_then(|rest| rest.strip_suffix(KVSEP))
        .ok_or_else(|| malformed("key-value pairs must be enclosed in %x01 separators"))?;
    let mut auth = None;
    let mut extensions = BTreeMap::new();
    if !pairs.is_empty() {
        let pairs = pairs
            .strip_suffix(KVSEP)
            .ok_or_else(|| malformed("key-value pair not terminated by %x01"))?;
        for pair in pairs.split(KVSEP) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| malformed("key-value pair without '='"))?;
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(malformed("invalid key in key-value pair"));
            }
            if value.is_empty() || !value.bytes().all(is_kv_value_byte) {
                return Err(malformed("invalid value in key-value pair"));
            }
            if key == "auth" {
                if auth.replace(value).is_some() {
                    return Err(malformed("duplicate key in key-value pairs"));
                }
            } else {
                if extensions.len() >= MAX_EXTENSIONS {
                    return Err(malformed("too many extensions"));
                }
                if extensions
                    .insert(key.to_owned(), value.to_owned())
                    .is_some()
                {
                    return Err(malformed("duplicate key in key-value pairs"));
                }
            }
        }
    }
    let auth = auth.ok_or_else(|| malformed("'auth' not specified"))?;
    let token = parse_auth_value(auth)?;
    Ok(ClientInitialResponse {
        token: token.to_owned(),
        authzid,
        extensions,
    })
}

/// Splits `gs2-cbind-flag "," [authzid] ","` off the message.
fn parse_gs2_header(text: &str) -> Result<(Option<String>, &str), OAuthError> {
    let rest = if let Some(rest) = text.strip_prefix("n,").or_else(|| text.strip_prefix("y,")) {
        rest
    } else if text.starts_with("p=") {
        return Err(unsupported("channel binding"));
    } else {
        return Err(malformed("invalid GS2 header"));
    };
    let (authzid, body) = rest
        .split_once(',')
        .ok_or_else(|| malformed("invalid GS2 header"))?;
    if authzid.is_empty() {
        return Ok((None, body));
    }
    let name = authzid
        .strip_prefix("a=")
        .ok_or_else(|| malformed("invalid GS2 header"))?;
    Ok((Some(unescape_saslname(name)?), body))
}

/// RFC 5801 `saslname`: no NUL, ',' or bare '='; "=2C" is ',' and "=3D" is '='.
fn unescape_saslname(name: &str) -> Result<String, OAuthError> {
    if name.is_empty() {
        return Err(malformed("empty authorization id"));
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(pos) = rest.find(['=', '\0', KVSEP]) {
        let (plain, tail) = rest.split_at(pos);
        out.push_str(plain);
        if let Some(after) = tail.strip_prefix("=2C") {
            out.push(',');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("=3D") {
            out.push('=');
            rest = after;
        } else {
            return Err(malformed("invalid character or escape in authorization id"));
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_kv_value_byte(b: u8) -> bool {
    matches!(b, 0x21..=0x7e | b' ' | b'\t' | b'\r' | b'\n')
}

/// `"Bearer" 1*SP b64token` (scheme case-insensitive), returning the token.
fn parse_auth_value(auth: &str) -> Result<&str, OAuthError> {
    let (scheme, token) = auth
        .split_once(' ')
        .ok_or_else(|| malformed("invalid 'auth' format"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(malformed("invalid scheme in 'auth'"));
    }
    let token = token.trim_start_matches(' ');
    if token.len() > MAX_TOKEN_LEN {
        return Err(malformed("token too long"));
    }
    if !is_b64token(token) {
        return Err(malformed("invalid 'auth' format"));
    }
    Ok(token)
}

/// RFC 6750 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

// ---------------------------------------------------------------------------
// JSON Web Key Set
// ---------------------------------------------------------------------------

/// A JWS algorithm this module verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
}

impl Alg {
    fn from_name(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            "PS256" => Alg::Ps256,
            "PS384" => Alg::Ps384,
            "PS512" => Alg::Ps512,
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            _ => return None,
        })
    }

    fn rsa_params(self) -> Option<&'static signature::RsaParameters> {
        Some(match self {
            Alg::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Alg::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Alg::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Alg::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
            Alg::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
            Alg::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
            Alg::Es256 | Alg::Es384 => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

impl Curve {
    fn alg(self) -> Alg {
        match self {
            Curve::P256 => Alg::Es256,
            Curve::P384 => Alg::Es384,
        }
    }

    fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }

    fn verification(self) -> &'static signature::EcdsaVerificationAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED,
            Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED,
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
enum KeyMaterial {
    /// Modulus and exponent, big-endian without leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// Uncompressed point `0x04 || x || y`.
    Ec { curve: Curve, point: Vec<u8> },
}

#[derive(Clone, PartialEq, Eq)]
struct Jwk {
    kid: Option<String>,
    alg: Option<Alg>,
    material: KeyMaterial,
}

impl fmt::Debug for Jwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kty = match self.material {
            KeyMaterial::Rsa { .. } => "RSA",
            KeyMaterial::Ec {
                curve: Curve::P256, ..
            } => "EC P-256",
            KeyMaterial::Ec {
                curve: Curve::P384, ..
            } => "EC P-384",
        };
        f.debug_struct("Jwk")
            .field("kid", &self.kid)
            .field("kty", &kty)
            .field("alg", &self.alg)
            .finish()
    }
}

/// The members of a JWK this module reads (RFC 7517, RFC 7518 section 6).
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    key_use: Option<String>,
    key_ops: Option<Vec<String>>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

impl Jwk {
    /// The key, or `None` when it is unusable here (other kty/alg/use, bad members).
    fn from_value(value: Value) -> Option<Jwk> {
        let raw: RawJwk = serde_json::from_value(value).ok()?;
        if raw.key_use.as_deref().is_some_and(|u| u != "sig") {
            return None;
        }
        if raw
            .key_ops
            .as_ref()
            .is_some_and(|ops| !ops.iter().any(|op| op == "verify"))
        {
            return None;
        }
        let alg = match raw.alg.as_deref() {
            None => None,
            Some(name) => Some(Alg::from_name(name)?),
        };
        let material = match raw.kty.as_str() {
            "RSA" => {
                let n = decode_unsigned(raw.n.as_deref()?)?;
                let e = decode_unsigned(raw.e.as_deref()?)?;
                // ring verifies 2048..=8192-bit moduli and exponents of at most 33 bits.
                if !(256..=1024).contains(&n.len()) || e.len() > 5 {
                    return None;
                }
                if alg.is_some_and(|a| a.rsa_params().is_none()) {
                    return None;
                }
                KeyMaterial::Rsa { n, e }
            }
            "EC" => {
                let curve = match raw.crv.as_deref()? {
                    "P-256" => Curve::P256,
                    "P-384" => Curve::P384,
                    _ => return None,
                };
                if alg.is_some_and(|a| a != curve.alg()) {
                    return None;
                }
                let x = JWK_BASE64.decode(raw.x.as_deref()?).ok()?;
                let y = JWK_BASE64.decode(raw.y.as_deref()?).ok()?;
                let len = curve.coordinate_len();
                if x.len() != len || y.len() != len {
                    return None;
                }
                let mut point = Vec::with_capacity(1 + 2 * len);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                KeyMaterial::Ec { curve, point }
            }
            _ => return None,
        };
        Some(Jwk {
            kid: raw.kid,
            alg,
            material,
        })
    }

    /// Whether this key may verify a token signed with `alg`.
    fn accepts(&self, alg: Alg) -> bool {
        if self.alg.is_some_and(|a| a != alg) {
            return false;
        }
        match self.material {
            KeyMaterial::Rsa { .. } => alg.rsa_params().is_some(),
            KeyMaterial::Ec { curve, .. } => curve.alg() == alg,
        }
    }

    fn verify(&self, alg: Alg, message: &[u8], sig: &[u8]) -> bool {
        match &self.material {
            KeyMaterial::Rsa { n, e } => alg.rsa_params().is_some_and(|params| {
                RsaPublicKeyComponents { n, e }
                    .verify(params, message, sig)
                    .is_ok()
            }),
            KeyMaterial::Ec { curve, point } => UnparsedPublicKey::new(curve.verification(), point)
                .verify(message, sig)
                .is_ok(),
        }
    }
}

/// A base64url big-endian integer with its leading zero bytes removed; `None` if zero.
fn decode_unsigned(b64: &str) -> Option<Vec<u8>> {
    let bytes = JWK_BASE64.decode(b64).ok()?;
    let start = bytes.iter().position(|&b| b != 0)?;
    Some(bytes.get(start..)?.to_vec())
}

/// The usable signature-verification keys of a JWK Set (RFC 7517).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Jwks {
    keys: Vec<Jwk>,
}

impl Jwks {
    /// Parses a JWK Set document (`{"keys":[...]}`). Keys of other types, algorithms or
    /// uses, and keys with bad members, are skipped; fails when none is usable.
    /// Supported: RSA (RS256/384/512, PS256/384/512) and EC P-256/P-384 (ES256/ES384).
    pub fn parse(json: &[u8]) -> Result<Jwks, OAuthError> {
        #[derive(Deserialize)]
        struct RawSet {
            keys: Vec<Value>,
        }
        if json.len() > MAX_JWKS_LEN {
            return Err(malformed("JWK Set too large"));
        }
        let set: RawSet = serde_json::from_slice(json)
            .map_err(|_| malformed("JWK Set is not a JSON object with a \"keys\" array"))?;
        if set.keys.len() > MAX_JWKS_KEYS {
            return Err(malformed("too many keys in JWK Set"));
        }
        let keys: Vec<Jwk> = set.keys.into_iter().filter_map(Jwk::from_value).collect();
        if keys.is_empty() {
            return Err(unsupported("no usable key in JWK Set"));
        }
        Ok(Jwks { keys })
    }

    /// How many usable keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no key (never true for a parsed set).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

// ---------------------------------------------------------------------------
// JWT parsing
// ---------------------------------------------------------------------------

/// A JSON object whose top-level member names are unique (RFC 7515 section 5.2 allows
/// rejecting duplicates; doing so avoids parser-differential tricks).
struct JsonObject(Map<String, Value>);

impl<'de> Deserialize<'de> for JsonObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = JsonObject;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<JsonObject, A::Error> {
                let mut map = Map::new();
                while let Some(key) = access.next_key::<String>()? {
                    if map.contains_key(&key) {
                        return Err(de::Error::custom("duplicate member name"));
                    }
                    let value: Value = access.next_value()?;
                    map.insert(key, value);
                }
                Ok(JsonObject(map))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// A JWS in compact serialization, split and decoded (signature not yet checked).
struct Jws<'a> {
    /// `base64url(header) "." base64url(payload)`, the signed bytes.
    signing_input: &'a [u8],
    header: Map<String, Value>,
    claims: Map<String, Value>,
    /// The third part, still base64url.
    signature: &'a str,
}

fn parse_jws(token: &str) -> Result<Jws<'_>, OAuthError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(malformed("token too long"));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed(
            "token is not a three-part JWS compact serialization",
        ));
    };
    match parts.count() {
        0 => {}
        2 => return Err(unsupported("encrypted (JWE) tokens")),
        _ => {
            return Err(malformed(
                "token is not a three-part JWS compact serialization",
            ))
        }
    }
    if header.is_empty() || payload.is_empty() {
        return Err(malformed("empty JWS header or payload"));
    }
    let signing_input = token
        .as_bytes()
        .get(..header.len() + 1 + payload.len())
        .ok_or_else(|| malformed("token is not a three-part JWS compact serialization"))?;
    Ok(Jws {
        signing_input,
        header: decode_json_object(header, "JWS header")?,
        claims: decode_json_object(payload, "JWT claims")?,
        signature,
    })
}

fn decode_json_object(b64: &str, what: &str) -> Result<Map<String, Value>, OAuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| OAuthError::Malformed(format!("{what} is not base64url")))?;
    let JsonObject(map) = serde_json::from_slice(&bytes)
        .map_err(|_| OAuthError::Malformed(format!("{what} is not a JSON object")))?;
    Ok(map)
}

/// A NumericDate claim (seconds, possibly fractional) in milliseconds, rounded.
fn numeric_date_ms(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, OAuthError> {
    let number = match claims.get(name) {
        None => return Ok(None),
        Some(Value::Number(number)) => number,
        Some(_) => return Err(OAuthError::InvalidToken(format!("{name} is not a number"))),
    };
    let ms = match number.as_i64() {
        Some(secs) => secs.checked_mul(1000),
        None => number.as_f64().and_then(|secs| {
            let ms = (secs * 1000.0).round();
            // Within ±2^62, so the conversion is exact enough and cannot saturate.
            (ms.is_finite() && ms.abs() < 4.6e18).then_some(ms as i64)
        }),
    };
    ms.map(Some)
        .ok_or_else(|| OAuthError::InvalidToken(format!("{name} out of range")))
}

/// The principal claim: a string that is not blank.
fn principal(claims: &Map<String, Value>, name: &str, trim: bool) -> Result<String, OAuthError> {
    match claims.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => {
            Ok(if trim { s.trim() } else { s.as_str() }.to_owned())
        }
        Some(Value::String(_)) | None => Err(OAuthError::InvalidToken(format!("missing {name}"))),
        Some(_) => Err(OAuthError::InvalidToken(format!("{name} is not a string"))),
    }
}

/// The scope claim: a space-separated string or an array of strings; sorted, deduplicated.
fn scopes(claims: &Map<String, Value>, name: &str) -> Result<Vec<String>, OAuthError> {
    let mut set = BTreeSet::new();
    match claims.get(name) {
        None => {}
        Some(Value::String(s)) => set.extend(s.split_ascii_whitespace()),
        Some(Value::Array(items)) => {
            for item in items {
                let Value::String(s) = item else {
                    return Err(OAuthError::InvalidToken(format!(
                        "{name} holds a non-string"
                    )));
                };
                let s = s.trim();
                if !s.is_empty() {
                    set.insert(s);
                }
            }
        }
        Some(_) => {
            return Err(OAuthError::InvalidToken(format!(
                "{name} is neither a string nor an array"
            )))
        }
    }
    Ok(set.into_iter().map(str::to_owned).collect())
}

fn require_scopes(have: &[String], required: &[String]) -> Result<(), OAuthError> {
    if required
        .iter()
        .all(|r| have.binary_search_by(|h| h.as_str().cmp(r)).is_ok())
    {
        Ok(())
    } else {
        Err(OAuthError::InsufficientScope(required.to_vec()))
    }
}

/// Checks `exp` (required), `iat` and optionally `nbf`; returns `exp` in ms.
fn check_times(
    claims: &Map<String, Value>,
    now_ms: i64,
    skew_ms: u64,
    check_nbf: bool,
) -> Result<i64, OAuthError> {
    let skew = i64::try_from(skew_ms).unwrap_or(i64::MAX);
    let iat = numeric_date_ms(claims, "iat")?;
    if iat.is_some_and(|iat| iat > now_ms.saturating_add(skew)) {
        return Err(invalid("issued in the future"));
    }
    let exp = numeric_date_ms(claims, "exp")?.ok_or_else(|| invalid("missing exp"))?;
    if now_ms.saturating_sub(skew) >= exp {
        return Err(invalid("expired"));
    }
    if iat.is_some_and(|iat| iat > exp) {
        return Err(invalid("issued after it expires"));
    }
    if check_nbf {
        let nbf = numeric_date_ms(claims, "nbf")?;
        if nbf.is_some_and(|nbf| now_ms.saturating_add(skew) < nbf) {
            return Err(invalid("not yet valid"));
        }
    }
    Ok(exp)
}

/// A configured claim name, or Kafka's default when blank.
fn claim_name<'a>(configured: &'a str, default: &'a str) -> &'a str {
    match configured.trim() {
        "" => default,
        name => name,
    }
}

// ---------------------------------------------------------------------------
// Validators
// ---------------------------------------------------------------------------

/// A token that passed validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidToken {
    /// The principal name (the principal claim's value).
    pub principal: String,
    /// When the token expires (`exp`), in ms since the epoch.
    pub lifetime_ms: i64,
    /// The token's scopes, sorted and deduplicated.
    pub scopes: Vec<String>,
}

/// How bearer tokens are validated.
#[derive(Clone, Debug)]
pub enum Validator {
    /// Kafka's default (`OAuthBearerUnsecuredValidatorCallbackHandler`): an unsecured JWS
    /// (`"alg":"none"`, empty signature), with a non-blank string principal claim, a
    /// numeric `exp` (required) and `iat` (optional), and the required scopes.
    Unsecured {
        /// Claim naming the principal (Kafka's default: "sub").
        principal_claim: String,
        /// Claim holding the scopes (Kafka's default: "scope").
        scope_claim: String,
        /// Scopes the token must all have.
        required_scopes: Vec<String>,
        /// Clock skew allowed for `exp`/`iat` (Kafka's default: 0).
        allowable_clock_skew_ms: u64,
    },
    /// KIP-768 style: a JWT signed with a key of the JWK Set, chosen by `kid` (or the only
    /// candidate key when the token has no `kid`); `exp` required, `iat`/`nbf` honoured.
    Jwks {
        /// The verification keys.
        keys: Jwks,
        /// When non-empty, `aud` must contain one of these. When empty, a token that has
        /// an `aud` claim is refused (as jose4j does in Kafka, and RFC 7519 requires).
        expected_audience: Vec<String>,
        /// When set, `iss` must equal it.
        expected_issuer: Option<String>,
        /// Claim naming the principal, trimmed as Kafka does (Kafka's default: "sub").
        principal_claim: String,
        /// Claim holding the scopes (Kafka's default: "scope").
        scope_claim: String,
        /// Scopes the token must all have (Kafka checks none here).
        required_scopes: Vec<String>,
        /// Clock skew allowed for `exp`/`iat`/`nbf` (Kafka's default: 30 s).
        allowable_clock_skew_ms: u64,
    },
}

impl Validator {
    /// Kafka's default unsecured validator with its default options.
    pub fn unsecured() -> Validator {
        Validator::Unsecured {
            principal_claim: "sub".to_owned(),
            scope_claim: "scope".to_owned(),
            required_scopes: Vec::new(),
            allowable_clock_skew_ms: 0,
        }
    }

    /// A JWKS validator with Kafka's defaults: "sub", "scope", no audience or issuer
    /// expected, 30 s clock skew.
    pub fn jwks(keys: Jwks) -> Validator {
        Validator::Jwks {
            keys,
            expected_audience: Vec::new(),
            expected_issuer: None,
            principal_claim: "sub".to_owned(),
            scope_claim: "scope".to_owned(),
            required_scopes: Vec::new(),
            allowable_clock_skew_ms: 30_000,
        }
    }

    /// Validates a compact-serialized JWT at time `now_ms` (ms since the epoch).
    pub fn validate(&self, token: &str, now_ms: i64) -> Result<ValidToken, OAuthError> {
        match self {
            Validator::Unsecured {
                principal_claim,
                scope_claim,
                required_scopes,
                allowable_clock_skew_ms,
            } => {
                let jws = parse_jws(token)?;
                match jws.header.get("alg") {
                    Some(Value::String(alg)) if alg == "none" => {}
                    Some(_) => return Err(invalid("alg must be \"none\" for an unsecured token")),
                    None => return Err(invalid("missing alg")),
                }
                if !jws.signature.is_empty() {
                    return Err(invalid("unsecured token must have an empty signature"));
                }
                let claims = &jws.claims;
                let principal = principal(claims, claim_name(principal_claim, "sub"), false)?;
                let lifetime_ms = check_times(claims, now_ms, *allowable_clock_skew_ms, false)?;
                let scopes = scopes(claims, claim_name(scope_claim, "scope"))?;
                require_scopes(&scopes, required_scopes)?;
                Ok(ValidToken {
                    principal,
                    lifetime_ms,
                    scopes,
                })
            }
            Validator::Jwks {
                keys,
                expected_audience,
                expected_issuer,
                principal_claim,
                scope_claim,
                required_scopes,
                allowable_clock_skew_ms,
            } => {
                let jws = parse_jws(token)?;
                verify_signature(&jws, keys)?;
                let claims = &jws.claims;
                let lifetime_ms = check_times(claims, now_ms, *allowable_clock_skew_ms, true)?;
                check_issuer(claims, expected_issuer.as_deref())?;
                check_audience(claims, expected_audience)?;
                let principal = principal(claims, claim_name(principal_claim, "sub"), true)?;
                let scopes = scopes(claims, claim_name(scope_claim, "scope"))?;
                require_scopes(&scopes, required_scopes)?;
                Ok(ValidToken {
                    principal,
                    lifetime_ms,
                    scopes,
                })
            }
        }
    }
}

fn verify_signature(jws: &Jws<'_>, keys: &Jwks) -> Result<(), OAuthError> {
    let alg = match jws.header.get("alg") {
        Some(Value::String(name)) if name == "none" => {
            return Err(invalid("unsecured tokens are not accepted"))
        }
        Some(Value::String(name)) => {
            Alg::from_name(name).ok_or_else(|| unsupported("JWS algorithm"))?
        }
        Some(_) => return Err(malformed("alg is not a string")),
        None => return Err(invalid("missing alg")),
    };
    if jws.header.contains_key("crit") {
        return Err(unsupported("crit header parameters"));
    }
    let kid = match jws.header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.as_str()),
        Some(_) => return Err(malformed("kid is not a string")),
    };
    let candidates: Vec<&Jwk> = match kid {
        Some(kid) => {
            let named: Vec<&Jwk> = keys
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect();
            if named.is_empty() {
                return Err(invalid("unknown kid"));
            }
            named.into_iter().filter(|k| k.accepts(alg)).collect()
        }
        None => {
            let usable: Vec<&Jwk> = keys.keys.iter().filter(|k| k.accepts(alg)).collect();
            if usable.len() > 1 {
                return Err(invalid("no kid and several candidate keys"));
            }
            usable
        }
    };
    if candidates.is_empty() {
        return Err(invalid("alg does not match the key"));
    }
    let sig = URL_SAFE_NO_PAD
        .decode(jws.signature)
        .map_err(|_| malformed("JWS signature is not base64url"))?;
    if candidates
        .iter()
        .any(|k| k.verify(alg, jws.signing_input, &sig))
    {
        Ok(())
    } else {
        Err(invalid("bad signature"))
    }
}

fn check_issuer(claims: &Map<String, Value>, expected: Option<&str>) -> Result<(), OAuthError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    match claims.get("iss") {
        Some(Value::String(iss)) if iss == expected => Ok(()),
        Some(Value::String(_)) => Err(invalid("issuer mismatch")),
        Some(_) => Err(invalid("iss is not a string")),
        None => Err(invalid("missing iss")),
    }
}

fn check_audience(claims: &Map<String, Value>, expected: &[String]) -> Result<(), OAuthError> {
    let audiences: Vec<&str> = match claims.get("aud") {
        None => {
            return if expected.is_empty() {
                Ok(())
            } else {
                Err(invalid("missing aud"))
            }
        }
        Some(Value::String(aud)) => vec![aud.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .ok_or_else(|| invalid("aud holds a non-string"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid("aud is neither a string nor an array")),
    };
    if expected.is_empty() {
        return Err(invalid("aud present but no audience is expected"));
    }
    if audiences
        .iter()
        .any(|aud| expected.iter().any(|e| e == aud))
    {
        Ok(())
    } else {
        Err(invalid("audience mismatch"))
    }
}

// ---------------------------------------------------------------------------
// Server exchange
// ---------------------------------------------------------------------------

/// What to do after a client message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OAuthStep {
    /// Authenticated (the server sends an empty response).
    Done(ValidToken),
    /// Send this RFC 7628 error to the client; its next message must be `%x01`, which
    /// `step` then answers with the validation error.
    Challenge(Vec<u8>),
}

#[derive(Clone, Debug)]
enum State {
    Initial,
    Challenged(OAuthError),
    Done,
    Failed,
}

/// One server-side OAUTHBEARER exchange.
#[derive(Clone, Debug)]
pub struct OAuthServer {
    validator: Arc<Validator>,
    now_ms: i64,
    state: State,
    extensions: BTreeMap<String, String>,
}

impl OAuthServer {
    /// Starts an exchange; tokens are validated at time `now_ms` (ms since the epoch).
    pub fn new(validator: Arc<Validator>, now_ms: i64) -> OAuthServer {
        OAuthServer {
            validator,
            now_ms,
            state: State::Initial,
            extensions: BTreeMap::new(),
        }
    }

    /// Handles one client message: first the initial response, then (after a
    /// [`OAuthStep::Challenge`]) the client's `%x01`. Any `Err` ends the exchange.
    pub fn step(&mut self, msg: &[u8]) -> Result<OAuthStep, OAuthError> {
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Initial => {
                let response = parse_client_initial_response(msg)?;
                let token = match self.validator.validate(&response.token, self.now_ms) {
                    Ok(token) => token,
                    Err(err) => {
                        let challenge = error_challenge(&err);
                        self.state = State::Challenged(err);
                        return Ok(OAuthStep::Challenge(challenge));
                    }
                };
                if let Some(authzid) = response.authzid {
                    if authzid != token.principal {
                        return Err(OAuthError::AuthzidMismatch {
                            authzid,
                            principal: token.principal,
                        });
                    }
                }
                self.extensions = response.extensions;
                self.state = State::Done;
                Ok(OAuthStep::Done(token))
            }
            State::Challenged(err) => {
                if msg == b"\x01" {
                    Err(err)
                } else {
                    Err(malformed("expected %x01 after the error challenge"))
                }
            }
            State::Done | State::Failed => Err(OAuthError::OutOfOrder),
        }
    }

    /// Whether the exchange ended in success.
    pub fn is_complete(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The client's SASL extensions, once the exchange has succeeded (else empty).
    pub fn extensions(&self) -> &BTreeMap<String, String> {
        &self.extensions
    }
}

/// The RFC 7628 error JSON for a failed validation, as Kafka builds it: `status`, and
/// `scope` for missing scopes (space-separated here; Kafka prints a Java list).
fn error_challenge(err: &OAuthError) -> Vec<u8> {
    let json = match err {
        OAuthError::InsufficientScope(required) => format!(
            "{{\"status\":\"insufficient_scope\",\"scope\":{}}}",
            json_string(&required.join(" "))
        ),
        _ => "{\"status\":\"invalid_token\"}".to_owned(),
    };
    json.into_bytes()
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair};
    use serde_json::json;

    const NOW_MS: i64 = 1_700_000_000_000;
    const NOW_S: i64 = NOW_MS / 1000;

    /// A throwaway RSA-2048 key (PKCS#8, DER, base64) made for these tests only.
    const TEST_RSA_PKCS8: &str = concat!(
        "MIIEvwIBADANBgkqhkiG9w0BAQEFAASCBKkwggSlAgEAAoIBAQCYRxZf6/hJqcXCzKDn74D6rStv",
        "h03PscrjYr5CYtK50Myv0ZJxkulD+HRCJnA3lfVAGZCQpXayCuo3yI8wrumY7ZYH17F5arKMCh9E",
        "Kwixy0Acr5rxo3vUhLCU5tb7Tk6AT66EEhdg0FV6Um8nl9uzAqJJScvjAJiUPbV/j/fXyqh+Fp6C",
        "Ql9zekpDwY3QI/YvY+rUmtTFKg/DSipu9FzwLjea6rqIEu41BVC59jXcxQm3W2LhjINV7okHv6IF",
        "Be2KT5VSwEZJ0gzR3uwVpvnUvlyTtkefeJsYzXci4h3VQpDDbbohpPnMzGs6s7VqWAMmFN+IkcN+",
        "LOFG8fvbaBD5AgMBAAECggEADTrv6LmZwtyrP/eDa2NVs3HkOjZpPkhWNldX7HClmltXzVbKAHAh",
        "MDSf9TddvJaczkrqUobtvx5PpzUXq8UmqpDJ3jiRRNlOVfhzKvsKMFhWY6emMKRhl99HcEh2GTN+",
        "gotpwDPKMDEpnA0Zdzksb2slKnTs7/YXS5no8QJTKD5i5h8wmxP1Opq+A/YAFAOq21+qlU8I+nBs",
        "eHRCcQeMy2DpJ62FJ351bLxji2ZnR8yxM4NDkgtKf30QktIW/eSBzQdyTJCxesJKePZdqma+qrBq",
        "lGNaxVgK8lewFYCNG5fAn9Pi8vGhIhqpj8RK/b6yaqN+NCaF232ycIogfasOGQKBgQDV335WRRLi",
        "A5CzXamKcQ8P50FxV0NlnZaTHubn2lvaHh0S8NYKwRmMCKsyymqN7xLJOk78Phgw5q3f4LA0snOx",
        "EW0UdgWXPGYPasNd+Pa7ooXebyvoHOzSRkleIhLSJMbPsfgVen3197ukWI/1BHTUwwy3vwmMfcZB",
        "pPuB0fOG7wKBgQC2RaknfxIpm29FfYRdMzZmdbM/FpS/BshRiAfFn+0LAaXBdP+EqQxnsczuYMGT",
        "sANQZRvog1CCgZ2iae4qVWGajG5bopjIQSK9gPd4IyTo+mwMoObZDKAX2A/+J1tFv40ZTD5l2hxP",
        "pWrkFnqrWu5p8XfMFe5F1m269RzTbQQmlwKBgQCBmIvVesWWbtKf3YF+gkO+P0NIirgsOvGi9Ha2",
        "x3ohEV5Mu+L3YUs5r4cNn9oxZ0za4po5/uZpu15g6qXbSMcR5J1UaK+6lL7DWM5JgzL/P9wejP7u",
        "B5j5Ud3jTIJbFC3kbNMHMNJi2Vq6m2+f6LNiuU5biUcf+pbH8FD2uWH3wQKBgQCQEzIpGSVnJAjp",
        "WdS1wtReWuzrklLTSG4xHCBgkxBQ4eV+rJeI6gL3ODCvwGVi8v87niBYQuvxrLjId4kdh03WVuio",
        "oDa6G9p1BqsWGFmFmuSresfeiz9EebHyiHN6B3Zlp8GuyqAUSMHcNvSR3BeWQJscA73LEDq+TB+T",
        "85kTUwKBgQC2lxhuvaod0hv8Bi/Yo1JGVTE4qUQBkDX3WArzarlJ48en8WRhCOsDFJ783bEjY8EL",
        "lbEQj/aDaD1s7fkX+NTVe4BzT7DQ+HQl22GOUznQ8DX87KzpmPMt+DDo6zaEL9HauuWTlsutZATD",
        "NbHqWp3uZmHZ9Hz06ivD4dSb9lrA7g==",
    );

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn unsecured_token(header: &Value, claims: &Value) -> String {
        format!(
            "{}.{}.",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        )
    }

    fn none_token(claims: &Value) -> String {
        unsecured_token(&json!({"alg": "none"}), claims)
    }

    fn cir(token: &str) -> Vec<u8> {
        format!("n,,\x01auth=Bearer {token}\x01\x01").into_bytes()
    }

    fn invalid_reason(result: Result<ValidToken, OAuthError>) -> String {
        match result {
            Err(OAuthError::InvalidToken(reason)) => reason,
            other => panic!("expected InvalidToken, got {other:?}"),
        }
    }

    // --- client initial response -------------------------------------------------

    #[test]
    fn parses_minimal_initial_response() {
        let r = parse_client_initial_response(b"n,,\x01auth=Bearer abc.def.\x01\x01").unwrap();
        assert_eq!(r.token, "abc.def.");
        assert_eq!(r.authzid, None);
        assert!(r.extensions.is_empty());
        assert!(!format!("{r:?}").contains("abc.def"));
    }

    #[test]
    fn parses_authzid_and_extensions() {
        let msg =
            b"n,a=us=2Cer=3Dx,\x01traceId=ab c=1\x01auth=bEaReR   t-o_k.e~n+/==\x01x=\t\x01\x01";
        let r = parse_client_initial_response(msg).unwrap();
        assert_eq!(r.token, "t-o_k.e~n+/==");
        assert_eq!(r.authzid.as_deref(), Some("us,er=x"));
        assert_eq!(r.extensions.len(), 2);
        assert_eq!(r.extensions["traceId"], "ab c=1");
        assert_eq!(r.extensions["x"], "\t");
        // "y" (client supports channel binding, server does not) is accepted too.
        let r = parse_client_initial_response(b"y,,\x01auth=Bearer t\x01\x01").unwrap();
        assert_eq!(r.token, "t");
        // Kafka's client sends exactly this shape.
        let r = parse_client_initial_response(b"n,,\x01auth=Bearer t\x01logicalCluster=lc\x01\x01")
            .unwrap();
        assert_eq!(r.extensions["logicalCluster"], "lc");
    }

    #[test]
    fn rejects_malformed_initial_responses() {
        let long_token = "a".repeat(MAX_TOKEN_LEN + 1);
        let long_token_msg = cir(&long_token);
        let long_msg = vec![b'n'; MAX_MESSAGE_LEN + 1];
        let cases: Vec<&[u8]> = vec![
            b"",
            b"n",
            b"n,,",
            b"n,,\x01",
            b"n,,\x01\x01",                                   // no auth
            b"n,,\x01host=x\x01\x01",                         // no auth
            b"n,,auth=Bearer t\x01\x01",                      // no leading kvsep
            b"n,,\x01auth=Bearer t\x01",                      // no final kvsep
            b"n,,\x01auth=Bearer t",                          // no separators
            b"n,,\x01auth=Bearer t\x01\x01x",                 // trailing data
            b"n,,\x01auth=Bearer t\x01\x01\x01",              // empty pair
            b"n,,\x01\x01auth=Bearer t\x01\x01",              // empty pair
            b"n,,\x01auth=Basic t\x01\x01",                   // wrong scheme
            b"n,,\x01auth=Bearer\x01\x01",                    // no token
            b"n,,\x01auth=Bearer \x01\x01",                   // empty token
            b"n,,\x01auth=Bearer a b\x01\x01",                // space in token
            b"n,,\x01auth=Bearer a=b\x01\x01",                // '=' inside token
            b"n,,\x01auth=Bearer t \x01\x01",                 // trailing space
            b"n,,\x01auth=Bearer t\x01auth=Bearer u\x01\x01", // duplicate auth
            b"n,,\x01auth=Bearer t\x01k=1\x01k=2\x01\x01",    // duplicate extension
            b"n,,\x01auth=Bearer t\x01k1=v\x01\x01",          // key not letters
            b"n,,\x01auth=Bearer t\x01=v\x01\x01",            // empty key
            b"n,,\x01auth=Bearer t\x01k=\x01\x01",            // empty value
            b"n,,\x01auth=Bearer t\x01k=\x7f\x01\x01",        // DEL in value
            b"n,,\x01auth=Bearer t\x01kv\x01\x01",            // no '='
            b"n,,\x01auth=Bearer t\x01k=\xc3\xa9\x01\x01",    // non-ASCII value
            b"n,,\x01auth=Bearer \xff\x01\x01",               // not UTF-8
            b"x,,\x01auth=Bearer t\x01\x01",                  // bad cbind flag
            b"n\x01auth=Bearer t\x01\x01",                    // no gs2 header
            b"n,a=,\x01auth=Bearer t\x01\x01",                // empty authzid
            b"n,b=x,\x01auth=Bearer t\x01\x01",               // not "a="
            b"n,a=x=2c,\x01auth=Bearer t\x01\x01",            // lowercase escape
            b"n,a=x=,\x01auth=Bearer t\x01\x01",              // bare '='
            b"n,a=x\x00y,\x01auth=Bearer t\x01\x01",          // NUL in authzid
            b"n,a=x\x01auth=Bearer t\x01\x01",                // header not closed
            b"F,n,,\x01auth=Bearer t\x01\x01",                // non-standard flag
            &long_token_msg,
            &long_msg,
        ];
        for msg in cases {
            let err = parse_client_initial_response(msg).unwrap_err();
            assert!(matches!(err, OAuthError::Malformed(_)), "{msg:?}: {err:?}");
        }
        let err =
            parse_client_initial_response(b"p=tls-unique,,\x01auth=Bearer t\x01\x01").unwrap_err();
        assert!(matches!(err, OAuthError::Unsupported(_)));

        let mut many = String::from("n,,\x01auth=Bearer t\x01");
        for i in 0..=MAX_EXTENSIONS {
            let key: String = format!("{i:03}")
                .bytes()
                .map(|b| char::from(b'a' + (b - b'0')))
                .collect();
            many.push_str(&format!("{key}=v\x01"));
        }
        many.push('\x01');
        assert!(parse_client_initial_response(many.as_bytes()).is_err());
    }

    // --- unsecured validator ---------------------------------------------------------

    #[test]
    fn unsecured_valid_token() {
        let token = none_token(&json!({
            "sub": "alice", "exp": NOW_S + 3600, "iat": NOW_S, "scope": "write read read"
        }));
        let v = Validator::unsecured().validate(&token, NOW_MS).unwrap();
        assert_eq!(v.principal, "alice");
        assert_eq!(v.lifetime_ms, (NOW_S + 3600) * 1000);
        assert_eq!(v.scopes, vec!["read", "write"]);

        let token =
            none_token(&json!({"sub": "bob", "exp": 1_700_000_100.5, "scope": ["a", " b ", ""]}));
        let v = Validator::unsecured().validate(&token, NOW_MS).unwrap();
        assert_eq!(v.lifetime_ms, 1_700_000_100_500);
        assert_eq!(v.scopes, vec!["a", "b"]);
    }

    #[test]
    fn unsecured_expired() {
        let token = none_token(&json!({"sub": "alice", "exp": NOW_S - 1}));
        assert_eq!(
            invalid_reason(Validator::unsecured().validate(&token, NOW_MS)),
            "expired"
        );
        // Expiry is "on or after" exp.
        let token = none_token(&json!({"sub": "alice", "exp": NOW_S}));
        assert_eq!(
            invalid_reason(Validator::unsecured().validate(&token, NOW_MS)),
            "expired"
        );
    }

    #[test]
    fn server_challenges_then_fails_on_kvsep() {
        let validator = Arc::new(Validator::unsecured());
        let token = none_token(&json!({"sub": "alice", "exp": NOW_S - 10}));
        let mut server = OAuthServer::new(validator, NOW_MS);
        let step = server.step(&cir(&token)).unwrap();
        let OAuthStep::Challenge(challenge) = step else {
            panic!("expected a challenge, got {step:?}");
        };
        assert_eq!(challenge, br#"{"status":"invalid_token"}"#);
        let parsed: Value = serde_json::from_slice(&challenge).unwrap();
        assert_eq!(parsed["status"], "invalid_token");
        assert!(!server.is_complete());
        assert_eq!(server.step(b"\x01"), Err(invalid("expired")));
        assert_eq!(server.step(b"\x01"), Err(OAuthError::OutOfOrder));
    }

    #[test]
    fn server_rejects_anything_but_kvsep_after_challenge() {
        let token = none_token(&json!({"exp": NOW_S + 10}));
        let mut server = OAuthServer::new(Arc::new(Validator::unsecured()), NOW_MS);
        assert!(matches!(
            server.step(&cir(&token)),
            Ok(OAuthStep::Challenge(_))
        ));
        assert!(matches!(
            server.step(&cir(&token)),
            Err(OAuthError::Malformed(_))
        ));
        assert_eq!(server.step(b"\x01"), Err(OAuthError::OutOfOrder));
    }

    #[test]
    fn server_success_authzid_and_extensions() {
        let validator = Arc::new(Validator::unsecured());
        let token = none_token(&json!({"sub": "alice", "exp": NOW_S + 60}));

        let mut server = OAuthServer::new(validator.clone(), NOW_MS);
        let msg = format!("n,a=alice,\x01auth=Bearer {token}\x01traceId=42\x01\x01");
        let Ok(OAuthStep::Done(v)) = server.step(msg.as_bytes()) else {
            panic!("expected success");
        };
        assert_eq!(v.principal, "alice");
        assert!(server.is_complete());
        assert_eq!(server.extensions()["traceId"], "42");
        assert_eq!(server.step(b"\x01"), Err(OAuthError::OutOfOrder));

        let mut server = OAuthServer::new(validator.clone(), NOW_MS);
        let msg = format!("n,a=mallory,\x01auth=Bearer {token}\x01\x01");
        assert_eq!(
            server.step(msg.as_bytes()),
            Err(OAuthError::AuthzidMismatch {
                authzid: "mallory".into(),
                principal: "alice".into()
            })
        );
        assert!(server.extensions().is_empty());

        let mut server = OAuthServer::new(validator, NOW_MS);
        assert!(matches!(
            server.step(b"n,,\x01\x01"),
            Err(OAuthError::Malformed(_))
        ));
        assert_eq!(server.step(&cir(&token)), Err(OAuthError::OutOfOrder));
    }

    #[test]
    fn unsecured_principal_checks() {
        let v = Validator::unsecured();
        let cases = [
            (json!({"exp": NOW_S + 60}), "missing sub"),
            (json!({"sub": "  ", "exp": NOW_S + 60}), "missing sub"),
            (json!({"sub": 7, "exp": NOW_S + 60}), "sub is not a string"),
        ];
        for (claims, reason) in cases {
            assert_eq!(
                invalid_reason(v.validate(&none_token(&claims), NOW_MS)),
                reason
            );
        }
        let custom = Validator::Unsecured {
            principal_claim: "client_id".into(),
            scope_claim: "scp".into(),
            required_scopes: vec!["kafka".into()],
            allowable_clock_skew_ms: 0,
        };
        let token = none_token(&json!({"client_id": "svc", "exp": NOW_S + 60, "scp": ["kafka"]}));
        assert_eq!(custom.validate(&token, NOW_MS).unwrap().principal, "svc");
    }

    #[test]
    fn unsecured_rejects_other_algs_and_signatures() {
        let v = Validator::unsecured();
        let claims = json!({"sub": "alice", "exp": NOW_S + 60});
        let hs = unsecured_token(&json!({"alg": "HS256"}), &claims);
        assert!(invalid_reason(v.validate(&hs, NOW_MS)).contains("alg"));
        let no_alg = unsecured_token(&json!({"typ": "JWT"}), &claims);
        assert_eq!(invalid_reason(v.validate(&no_alg, NOW_MS)), "missing alg");
        let signed = format!("{}c2ln", none_token(&claims));
        assert!(invalid_reason(v.validate(&signed, NOW_MS)).contains("signature"));
    }

    #[test]
    fn unsecured_required_scopes() {
        let v = Validator::Unsecured {
            principal_claim: "sub".into(),
            scope_claim: "scope".into(),
            required_scopes: vec!["read".into(), "write".into()],
            allowable_clock_skew_ms: 0,
        };
        let missing = none_token(&json!({"sub": "a", "exp": NOW_S + 60, "scope": "read"}));
        assert_eq!(
            v.validate(&missing, NOW_MS),
            Err(OAuthError::InsufficientScope(vec![
                "read".into(),
                "write".into()
            ]))
        );
        let none = none_token(&json!({"sub": "a", "exp": NOW_S + 60}));
        assert!(matches!(
            v.validate(&none, NOW_MS),
            Err(OAuthError::InsufficientScope(_))
        ));
        let bad = none_token(&json!({"sub": "a", "exp": NOW_S + 60, "scope": 3}));
        assert!(matches!(
            v.validate(&bad, NOW_MS),
            Err(OAuthError::InvalidToken(_))
        ));
        for scope in [json!("write other read"), json!(["read", "write"])] {
            let ok = none_token(&json!({"sub": "a", "exp": NOW_S + 60, "scope": scope}));
            assert!(v.validate(&ok, NOW_MS).is_ok());
        }

        let mut server = OAuthServer::new(Arc::new(v), NOW_MS);
        assert_eq!(
            server.step(&cir(&missing)),
            Ok(OAuthStep::Challenge(
                br#"{"status":"insufficient_scope","scope":"read write"}"#.to_vec()
            ))
        );
        assert!(matches!(
            server.step(b"\x01"),
            Err(OAuthError::InsufficientScope(_))
        ));
    }

    #[test]
    fn unsecured_clock_skew() {
        let skewed = |ms| Validator::Unsecured {
            principal_claim: "sub".into(),
            scope_claim: "scope".into(),
            required_scopes: Vec::new(),
            allowable_clock_skew_ms: ms,
        };
        let expired = none_token(&json!({"sub": "a", "exp": NOW_S - 5}));
        assert_eq!(
            invalid_reason(skewed(5_000).validate(&expired, NOW_MS)),
            "expired"
        );
        assert!(skewed(5_001).validate(&expired, NOW_MS).is_ok());

        let future = none_token(&json!({"sub": "a", "iat": NOW_S + 5, "exp": NOW_S + 60}));
        assert_eq!(
            invalid_reason(skewed(0).validate(&future, NOW_MS)),
            "issued in the future"
        );
        assert!(skewed(5_000).validate(&future, NOW_MS).is_ok());
        assert!(skewed(u64::MAX).validate(&future, NOW_MS).is_ok());

        let inverted = none_token(&json!({"sub": "a", "iat": NOW_S - 10, "exp": NOW_S - 20}));
        assert!(skewed(60_000).validate(&inverted, NOW_MS).is_err());
    }

    #[test]
    fn unsecured_time_claim_types() {
        let v = Validator::unsecured();
        let cases = [
            (json!({"sub": "a"}), "missing exp"),
            (json!({"sub": "a", "exp": "soon"}), "exp is not a number"),
            (json!({"sub": "a", "exp": null}), "exp is not a number"),
            (json!({"sub": "a", "exp": 1e300}), "exp out of range"),
            (json!({"sub": "a", "exp": u64::MAX}), "exp out of range"),
            (json!({"sub": "a", "exp": i64::MAX}), "exp out of range"),
            (
                json!({"sub": "a", "exp": NOW_S + 60, "iat": "x"}),
                "iat is not a number",
            ),
        ];
        for (claims, reason) in cases {
            assert_eq!(
                invalid_reason(v.validate(&none_token(&claims), NOW_MS)),
                reason
            );
        }
        // Kafka's unsecured validator does not look at nbf.
        let nbf = none_token(&json!({"sub": "a", "exp": NOW_S + 60, "nbf": NOW_S + 30}));
        assert!(v.validate(&nbf, NOW_MS).is_ok());
    }

    #[test]
    fn malformed_tokens() {
        let v = Validator::unsecured();
        let h = b64(br#"{"alg":"none"}"#);
        let c = b64(br#"{"sub":"a","exp":9999999999}"#);
        let dup = b64(br#"{"sub":"a","sub":"b","exp":9999999999}"#);
        let cases = [
            String::new(),
            "abc".into(),
            format!("{h}.{c}"),
            format!("{h}..{c}"),
            format!(".{c}."),
            format!("{h}.."),
            format!("{h}.{c}.."),
            format!("{h}.{c}.a.b.c.d"),
            format!("{h}=.{c}."),
            format!("{h}.{c}=."),
            format!("{h}.!{c}."),
            format!("{}.{c}.", b64(b"[1,2]")),
            format!("{}.{c}.", b64(b"{\"alg\":\"none\"")),
            format!("{h}.{}.", b64(b"\"text\"")),
            format!("{h}.{dup}."),
            format!("{h}.{}.", b64(&[0xff, 0xfe])),
            format!(
                "{h}.{}.",
                b64(format!("{}1{}", "[".repeat(200), "]".repeat(200)).as_bytes())
            ),
            "a".repeat(MAX_TOKEN_LEN + 1),
        ];
        for token in &cases {
            let err = v.validate(token, NOW_MS).unwrap_err();
            assert!(
                matches!(err, OAuthError::Malformed(_)),
                "{token:?}: {err:?}"
            );
        }
        let jwe = format!("{h}.{c}.a.b.c");
        assert!(matches!(
            v.validate(&jwe, NOW_MS),
            Err(OAuthError::Unsupported(_))
        ));
    }

    // --- JWKS validator ----------------------------------------------------------------

    struct Keys {
        rsa: RsaKeyPair,
        p256: EcdsaKeyPair,
        p384: EcdsaKeyPair,
        rng: SystemRandom,
    }

    fn keys() -> Keys {
        let rng = SystemRandom::new();
        let der = base64::engine::general_purpose::STANDARD
            .decode(TEST_RSA_PKCS8)
            .unwrap();
        let rsa = RsaKeyPair::from_pkcs8(&der).unwrap();
        let gen = |alg| {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
            EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap()
        };
        let p256 = gen(&signature::ECDSA_P256_SHA256_FIXED_SIGNING);
        let p384 = gen(&signature::ECDSA_P384_SHA384_FIXED_SIGNING);
        Keys {
            rsa,
            p256,
            p384,
            rng,
        }
    }

    impl Keys {
        fn rsa_jwk(&self) -> Value {
            let c: RsaPublicKeyComponents<Vec<u8>> = self.rsa.public().into();
            json!({"kty": "RSA", "kid": "rsa1", "use": "sig", "n": b64(&c.n), "e": b64(&c.e)})
        }

        fn ec_jwk(pair: &EcdsaKeyPair, kid: &str, crv: &str) -> Value {
            let point = pair.public_key().as_ref();
            let len = (point.len() - 1) / 2;
            json!({
                "kty": "EC", "kid": kid, "crv": crv,
                "x": b64(&point[1..=len]), "y": b64(&point[1 + len..])
            })
        }

        fn jwks_json(&self) -> Value {
            json!({"keys": [
                self.rsa_jwk(),
                Keys::ec_jwk(&self.p256, "ec1", "P-256"),
                Keys::ec_jwk(&self.p384, "ec2", "P-384"),
            ]})
        }

        fn jwks(&self) -> Jwks {
            Jwks::parse(self.jwks_json().to_string().as_bytes()).unwrap()
        }

        /// Signs with the key of the given family; `header` is used as is.
        fn sign(&self, signer: Alg, header: &Value, claims: &Value) -> String {
            let input = format!(
                "{}.{}",
                b64(header.to_string().as_bytes()),
                b64(claims.to_string().as_bytes())
            );
            let sig = match signer {
                Alg::Es256 => self
                    .p256
                    .sign(&self.rng, input.as_bytes())
                    .unwrap()
                    .as_ref()
                    .to_vec(),
                Alg::Es384 => self
                    .p384
                    .sign(&self.rng, input.as_bytes())
                    .unwrap()
                    .as_ref()
                    .to_vec(),
                rsa => {
                    let padding: &'static dyn signature::RsaEncoding = match rsa {
                        Alg::Rs256 => &signature::RSA_PKCS1_SHA256,
                        Alg::Rs384 => &signature::RSA_PKCS1_SHA384,
                        Alg::Rs512 => &signature::RSA_PKCS1_SHA512,
                        Alg::Ps256 => &signature::RSA_PSS_SHA256,
                        Alg::Ps384 => &signature::RSA_PSS_SHA384,
                        _ => &signature::RSA_PSS_SHA512,
                    };
                    let mut sig = vec![0; self.rsa.public().modulus_len()];
                    self.rsa
                        .sign(padding, &self.rng, input.as_bytes(), &mut sig)
                        .unwrap();
                    sig
                }
            };
            format!("{input}.{}", b64(&sig))
        }
    }

    fn claims() -> Value {
        json!({"sub": "alice", "iat": NOW_S, "exp": NOW_S + 300, "scope": "kafka"})
    }

    #[test]
    fn jwks_parse_skips_unusable_keys() {
        let k = keys();
        let mut set = k.jwks_json();
        let keys = set["keys"].as_array_mut().unwrap();
        let mut enc = k.rsa_jwk();
        enc["use"] = json!("enc");
        let mut oaep = k.rsa_jwk();
        oaep["alg"] = json!("RSA-OAEP");
        let mut wrong_ops = k.rsa_jwk();
        wrong_ops["key_ops"] = json!(["sign"]);
        let mut es_on_rsa = k.rsa_jwk();
        es_on_rsa["alg"] = json!("ES256");
        let mut p256_as_384 = Keys::ec_jwk(&k.p256, "x", "P-384");
        p256_as_384["alg"] = json!("ES384");
        keys.extend([
            json!({"kty": "oct", "k": "c2VjcmV0", "alg": "HS256"}),
            json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}),
            json!({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}),
            json!({"kty": "RSA", "n": "!!", "e": "AQAB"}),
            json!({"kty": "RSA", "n": b64(&[0xff; 128]), "e": "AQAB"}),
            json!({"kty": "RSA", "kid": 5, "n": "AQAB", "e": "AQAB"}),
            json!({"n": "AQAB"}),
            json!("not an object"),
            enc,
            oaep,
            wrong_ops,
            es_on_rsa,
            p256_as_384,
        ]);
        let jwks = Jwks::parse(set.to_string().as_bytes()).unwrap();
        assert_eq!(jwks.len(), 3);
        assert!(!jwks.is_empty());
        assert!(format!("{jwks:?}").contains("rsa1"));

        let bad: [&[u8]; 6] = [
            b"",
            b"not json",
            b"{}",
            b"{\"keys\":{}}",
            b"{\"keys\":[]}",
            b"{\"keys\":[{\"kty\":\"oct\",\"k\":\"AA\"}]}",
        ];
        for doc in bad {
            assert!(Jwks::parse(doc).is_err(), "{doc:?}");
        }
        let too_many = json!({"keys": vec![k.rsa_jwk(); MAX_JWKS_KEYS + 1]});
        assert!(Jwks::parse(too_many.to_string().as_bytes()).is_err());
        assert!(Jwks::parse(&vec![b' '; MAX_JWKS_LEN + 1]).is_err());
    }

    #[test]
    fn jwks_accepts_signed_tokens() {
        let k = keys();
        let v = Validator::jwks(k.jwks());
        let cases = [
            (Alg::Rs256, "RS256", "rsa1"),
            (Alg::Rs384, "RS384", "rsa1"),
            (Alg::Rs512, "RS512", "rsa1"),
            (Alg::Ps256, "PS256", "rsa1"),
            (Alg::Ps384, "PS384", "rsa1"),
            (Alg::Ps512, "PS512", "rsa1"),
            (Alg::Es256, "ES256", "ec1"),
            (Alg::Es384, "ES384", "ec2"),
        ];
        for (signer, alg, kid) in cases {
            let token = k.sign(
                signer,
                &json!({"alg": alg, "kid": kid, "typ": "JWT"}),
                &claims(),
            );
            let valid = v
                .validate(&token, NOW_MS)
                .unwrap_or_else(|e| panic!("{alg}: {e}"));
            assert_eq!(valid.principal, "alice");
            assert_eq!(valid.lifetime_ms, (NOW_S + 300) * 1000);
            assert_eq!(valid.scopes, vec!["kafka"]);
        }
        // Through the SASL exchange.
        let token = k.sign(
            Alg::Rs256,
            &json!({"alg": "RS256", "kid": "rsa1"}),
            &claims(),
        );
        let mut server = OAuthServer::new(Arc::new(v), NOW_MS);
        assert!(matches!(server.step(&cir(&token)), Ok(OAuthStep::Done(_))));
    }

    #[test]
    fn jwks_rejects_tampering() {
        let k = keys();
        let v = Validator::jwks(k.jwks());
        for (signer, alg, kid) in [(Alg::Rs256, "RS256", "rsa1"), (Alg::Es256, "ES256", "ec1")] {
            let token = k.sign(signer, &json!({"alg": alg, "kid": kid}), &claims());
            let parts: Vec<&str> = token.split('.').collect();
            let mut evil = claims();
            evil["sub"] = json!("admin");
            let tampered = format!(
                "{}.{}.{}",
                parts[0],
                b64(evil.to_string().as_bytes()),
                parts[2]
            );
            assert_eq!(
                invalid_reason(v.validate(&tampered, NOW_MS)),
                "bad signature"
            );
            let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
            sig[5] ^= 1;
            let bad_sig = format!("{}.{}.{}", parts[0], parts[1], b64(&sig));
            assert_eq!(
                invalid_reason(v.validate(&bad_sig, NOW_MS)),
                "bad signature"
            );
            let no_sig = format!("{}.{}.", parts[0], parts[1]);
            assert_eq!(invalid_reason(v.validate(&no_sig, NOW_MS)), "bad signature");
        }
        // The server hides the reason behind invalid_token, then reports it.
        let token = k.sign(
            Alg::Rs256,
            &json!({"alg": "RS256", "kid": "rsa1"}),
            &claims(),
        );
        let mut forged = token.into_bytes();
        let at = forged.len() - 10;
        forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        let mut server = OAuthServer::new(Arc::new(v), NOW_MS);
        assert_eq!(
            server.step(&cir(&forged)),
            Ok(OAuthStep::Challenge(
                br#"{"status":"invalid_token"}"#.to_vec()
            ))
        );
        assert!(server.step(b"\x01").is_err());
    }

    #[test]
    fn jwks_key_selection() {
        let k = keys();
        let v = Validator::jwks(k.jwks());
        let token = k.sign(
            Alg::Rs256,
            &json!({"alg": "RS256", "kid": "nope"}),
            &claims(),
        );
        assert_eq!(invalid_reason(v.validate(&token, NOW_MS)), "unknown kid");
        // Header claims RS256 but names the EC key, and the reverse.
        let token = k.sign(
            Alg::Rs256,
            &json!({"alg": "RS256", "kid": "ec1"}),
            &claims(),
        );
        assert_eq!(
            invalid_reason(v.validate(&token, NOW_MS)),
            "alg does not match the key"
        );
        let token = k.sign(
            Alg::Es256,
            &json!({"alg": "ES256", "kid": "rsa1"}),
            &claims(),
        );
        assert_eq!(
            invalid_reason(v.validate(&token, NOW_MS)),
            "alg does not match the key"
        );
        let token = k.sign(
            Alg::Es384,
            &json!({"alg": "ES384", "kid": "ec1"}),
            &claims(),
        );
        assert_eq!(
            invalid_reason(v.validate(&token, NOW_MS)),
            "alg does not match the key"
        );
        // A key pinned to RS256 refuses RS384.
        let mut pinned = k.rsa_jwk();
        pinned["alg"] = json!("RS256");
        let pinned = Jwks::parse(json!({"keys": [pinned]}).to_string().as_bytes()).unwrap();
        let pv = Validator::jwks(pinned);
        let token = k.sign(
            Alg::Rs384,
            &json!({"alg": "RS384", "kid": "rsa1"}),
            &claims(),
        );
        assert_eq!(
            invalid_reason(pv.validate(&token, NOW_MS)),
            "alg does not match the key"
        );
        // No kid: the only candidate key is used; several candidates are refused.
        let token = k.sign(Alg::Rs256, &json!({"alg": "RS256"}), &claims());
        assert!(pv.validate(&token, NOW_MS).is_ok());
        assert!(
            v.validate(&token, NOW_MS).is_ok(),
            "one RSA key among EC keys"
        );
        let two_rsa = json!({"keys": [k.rsa_jwk(), k.rsa_jwk()]});
        let two = Validator::jwks(Jwks::parse(two_rsa.to_string().as_bytes()).unwrap());
        assert!(invalid_reason(two.validate(&token, NOW_MS)).contains("several"));
        // A leading zero byte in n is tolerated.
        let c: RsaPublicKeyComponents<Vec<u8>> = k.rsa.public().into();
        let mut n = vec![0];
        n.extend_from_slice(&c.n);
        let padded = json!({"keys": [{"kty": "RSA", "n": b64(&n), "e": b64(&c.e)}]});
        let padded = Validator::jwks(Jwks::parse(padded.to_string().as_bytes()).unwrap());
        assert!(padded.validate(&token, NOW_MS).is_ok());
    }

    #[test]
    fn jwks_header_checks() {
        let k = keys();
        let v = Validator::jwks(k.jwks());
        let none = none_token(&claims());
        assert!(invalid_reason(v.validate(&none, NOW_MS)).contains("unsecured"));
        let hs = k.sign(
            Alg::Rs256,
            &json!({"alg": "HS256", "kid": "rsa1"}),
            &claims(),
        );
        assert!(matches!(
            v.validate(&hs, NOW_MS),
            Err(OAuthError::Unsupported(_))
        ));
        let crit = k.sign(
            Alg::Rs256,
            &json!({"alg": "RS256", "kid": "rsa1", "crit": ["exp"]}),
            &claims(),
        );
        assert!(matches!(
            v.validate(&crit, NOW_MS),
            Err(OAuthError::Unsupported(_))
        ));
        let bad_kid = k.sign(Alg::Rs256, &json!({"alg": "RS256", "kid": 1}), &claims());
        assert!(matches!(
            v.validate(&bad_kid, NOW_MS),
            Err(OAuthError::Malformed(_))
        ));
        let no_alg = k.sign(Alg::Rs256, &json!({"kid": "rsa1"}), &claims());
        assert_eq!(invalid_reason(v.validate(&no_alg, NOW_MS)), "missing alg");
    }

    #[test]
    fn jwks_audience_and_issuer() {
        let k = keys();
        let v = Validator::Jwks {
            keys: k.jwks(),
            expected_audience: vec!["kafka".into(), "broker".into()],
            expected_issuer: Some("https://idp.example".into()),
            principal_claim: "sub".into(),
            scope_claim: "scope".into(),
            required_scopes: Vec::new(),
            allowable_clock_skew_ms: 0,
        };
        let sign = |extra: Value| {
            let mut c = claims();
            for (name, value) in extra.as_object().unwrap() {
                c[name] = value.clone();
            }
            k.sign(Alg::Es256, &json!({"alg": "ES256", "kid": "ec1"}), &c)
        };
        let iss = "https://idp.example";
        assert!(v
            .validate(&sign(json!({"iss": iss, "aud": "kafka"})), NOW_MS)
            .is_ok());
        assert!(v
            .validate(&sign(json!({"iss": iss, "aud": ["x", "broker"]})), NOW_MS)
            .is_ok());
        let cases = [
            (json!({"iss": iss, "aud": "other"}), "audience mismatch"),
            (json!({"iss": iss, "aud": []}), "audience mismatch"),
            (json!({"iss": iss}), "missing aud"),
            (
                json!({"iss": iss, "aud": 1}),
                "aud is neither a string nor an array",
            ),
            (json!({"iss": iss, "aud": [1]}), "aud holds a non-string"),
            (
                json!({"iss": "https://evil.example", "aud": "kafka"}),
                "issuer mismatch",
            ),
            (json!({"aud": "kafka"}), "missing iss"),
            (json!({"iss": 1, "aud": "kafka"}), "iss is not a string"),
        ];
        for (extra, reason) in cases {
            assert_eq!(invalid_reason(v.validate(&sign(extra), NOW_MS)), reason);
        }
        // Nothing expected: no iss check, and (as jose4j in Kafka) any aud is refused.
        let open = Validator::jwks(k.jwks());
        assert!(open
            .validate(&sign(json!({"iss": "anyone"})), NOW_MS)
            .is_ok());
        assert_eq!(
            invalid_reason(open.validate(&sign(json!({"aud": "kafka"})), NOW_MS)),
            "aud present but no audience is expected"
        );
    }

    #[test]
    fn jwks_time_and_claims() {
        let k = keys();
        let with_skew = |ms| Validator::Jwks {
            keys: k.jwks(),
            expected_audience: Vec::new(),
            expected_issuer: None,
            principal_claim: "sub".into(),
            scope_claim: "scope".into(),
            required_scopes: vec!["kafka".into()],
            allowable_clock_skew_ms: ms,
        };
        let sign = |c: Value| k.sign(Alg::Es256, &json!({"alg": "ES256", "kid": "ec1"}), &c);
        let mut c = claims();
        c["nbf"] = json!(NOW_S + 10);
        assert_eq!(
            invalid_reason(with_skew(0).validate(&sign(c.clone()), NOW_MS)),
            "not yet valid"
        );
        assert!(with_skew(10_000).validate(&sign(c), NOW_MS).is_ok());

        let mut c = claims();
        c["iat"] = json!(NOW_S - 60);
        c["exp"] = json!(NOW_S - 1);
        assert_eq!(
            invalid_reason(with_skew(0).validate(&sign(c.clone()), NOW_MS)),
            "expired"
        );
        assert!(with_skew(30_000).validate(&sign(c), NOW_MS).is_ok());

        let mut c = claims();
        c["iat"] = json!(NOW_S + 60);
        assert_eq!(
            invalid_reason(with_skew(0).validate(&sign(c), NOW_MS)),
            "issued in the future"
        );

        let mut c = claims();
        c.as_object_mut().unwrap().remove("exp");
        assert_eq!(
            invalid_reason(with_skew(0).validate(&sign(c), NOW_MS)),
            "missing exp"
        );

        let mut c = claims();
        c["sub"] = json!("  bob  ");
        assert_eq!(
            with_skew(0).validate(&sign(c), NOW_MS).unwrap().principal,
            "bob"
        );
        let mut c = claims();
        c.as_object_mut().unwrap().remove("sub");
        assert_eq!(
            invalid_reason(with_skew(0).validate(&sign(c), NOW_MS)),
            "missing sub"
        );

        let mut c = claims();
        c["scope"] = json!(["other"]);
        assert_eq!(
            with_skew(0).validate(&sign(c), NOW_MS),
            Err(OAuthError::InsufficientScope(vec!["kafka".into()]))
        );
    }

    #[test]
    fn json_string_escapes() {
        assert_eq!(json_string("a\"b\\c\u{1}"), r#""a\"b\\c\u0001""#);
    }

    // --- robustness ------------------------------------------------------------------------

    struct XorShift(u64);

    impl XorShift {
        fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next_u64() % n as u64) as usize
        }
    }

    #[test]
    fn random_input_never_panics() {
        let k = keys();
        let unsecured = Arc::new(Validator::unsecured());
        let jwks = Arc::new(Validator::jwks(k.jwks()));
        let good = none_token(&json!({"sub": "alice", "exp": NOW_S + 60}));
        let signed = k.sign(
            Alg::Es256,
            &json!({"alg": "ES256", "kid": "ec1"}),
            &claims(),
        );
        let seeds: Vec<Vec<u8>> = vec![
            cir(&good),
            cir(&signed),
            b"n,a=x=2Cy,\x01k=v\x01auth=Bearer a.b.c\x01\x01".to_vec(),
        ];
        let pieces: [&[u8]; 14] = [
            b"n", b",", b"a=", b"=2C", b"=3D", b"\x01", b"auth=", b"Bearer ", b".", b"=", b"eyJ",
            b"\xff", b"\x00", b"p=",
        ];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for i in 0..5000 {
            let msg: Vec<u8> = match i % 3 {
                0 => (0..rng.below(64)).map(|_| rng.next_u64() as u8).collect(),
                1 => {
                    let mut m = Vec::new();
                    for _ in 0..rng.below(12) {
                        m.extend_from_slice(pieces[rng.below(pieces.len())]);
                    }
                    m
                }
                _ => {
                    let mut m = seeds[rng.below(seeds.len())].clone();
                    for _ in 0..=rng.below(4) {
                        let at = rng.below(m.len());
                        match rng.below(3) {
                            0 => m[at] = rng.next_u64() as u8,
                            1 => {
                                m.remove(at);
                            }
                            _ => m.insert(at, rng.next_u64() as u8),
                        }
                    }
                    m
                }
            };
            let _ = parse_client_initial_response(&msg);
            for validator in [&unsecured, &jwks] {
                let mut server = OAuthServer::new(validator.clone(), NOW_MS);
                let _ = server.step(&msg);
                let _ = server.step(b"\x01");
                let _ = server.step(&msg);
                if let Ok(text) = std::str::from_utf8(&msg) {
                    let _ = validator.validate(text, NOW_MS);
                }
            }
            let _ = Jwks::parse(&msg);
        }
    }
}
