//! SASL/PLAIN (RFC 4616) message parsing, with the rules of Kafka's PlainSaslServer.
//! Checking the password is the caller's job (see `scram::Credential::verify_password`).

use std::fmt;

/// Longest SASL/PLAIN message accepted, in bytes.
pub const MAX_MESSAGE_LEN: usize = 4096;

/// The identity and password a client sent.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainAuth {
    /// The authentication identity (authcid).
    pub username: String,
    /// The password, as sent.
    pub password: String,
}

impl fmt::Debug for PlainAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why a SASL/PLAIN message was refused; the texts are Kafka's where it has one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlainError {
    /// Longer than [`MAX_MESSAGE_LEN`].
    #[error("Invalid SASL/PLAIN response: too long")]
    TooLong,
    /// Not valid UTF-8.
    #[error("Invalid SASL/PLAIN response: not UTF-8")]
    NotUtf8,
    /// Not exactly three NUL-separated fields (the count found).
    #[error("Invalid SASL/PLAIN response: expected 3 tokens, got {0}")]
    Fields(usize),
    /// The user name field is empty.
    #[error("Authentication failed: username not specified")]
    NoUsername,
    /// The password field is empty.
    #[error("Authentication failed: password not specified")]
    NoPassword,
    /// The client asked to act as another user.
    #[error(
        "Authentication failed: Client requested an authorization id that is different from username"
    )]
    AuthzidDiffers,
}

/// Parses `[authzid] NUL authcid NUL passwd`.
pub fn parse(msg: &[u8]) -> Result<PlainAuth, PlainError> {
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(PlainError::TooLong);
    }
    let text = std::str::from_utf8(msg).map_err(|_| PlainError::NotUtf8)?;
    let fields = text.split('\0').count();
    let mut parts = text.split('\0');
    let (Some(authzid), Some(username), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(PlainError::Fields(fields));
    };
    if username.is_empty() {
        return Err(PlainError::NoUsername);
    }
    if password.is_empty() {
        return Err(PlainError::NoPassword);
    }
    if !authzid.is_empty() && authzid != username {
        return Err(PlainError::AuthzidDiffers);
    }
    Ok(PlainAuth {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(username: &str, password: &str) -> PlainAuth {
        PlainAuth {
            username: username.to_owned(),
            password: password.to_owned(),
        }
    }

    #[test]
    fn valid_messages() {
        assert_eq!(parse(b"\0alice\0secret"), Ok(auth("alice", "secret")));
        assert_eq!(parse(b"alice\0alice\0secret"), Ok(auth("alice", "secret")));
        assert_eq!(
            parse("\0j\u{f6}rg\0p\u{e4}ss word".as_bytes()),
            Ok(auth("j\u{f6}rg", "p\u{e4}ss word"))
        );
    }

    #[test]
    fn field_count_must_be_three() {
        assert_eq!(parse(b""), Err(PlainError::Fields(1)));
        assert_eq!(parse(b"alice"), Err(PlainError::Fields(1)));
        assert_eq!(parse(b"alice\0secret"), Err(PlainError::Fields(2)));
        assert_eq!(parse(b"\0alice\0secret\0"), Err(PlainError::Fields(4)));
        assert_eq!(parse(b"\0\0\0\0"), Err(PlainError::Fields(5)));
    }

    #[test]
    fn empty_username_or_password_is_refused() {
        assert_eq!(parse(b"\0\0secret"), Err(PlainError::NoUsername));
        assert_eq!(parse(b"\0\0"), Err(PlainError::NoUsername));
        assert_eq!(parse(b"\0alice\0"), Err(PlainError::NoPassword));
    }

    #[test]
    fn another_authzid_is_refused() {
        let err = parse(b"admin\0alice\0secret").unwrap_err();
        assert_eq!(err, PlainError::AuthzidDiffers);
        assert_eq!(
            err.to_string(),
            "Authentication failed: Client requested an authorization id that is different \
             from username"
        );
    }

    #[test]
    fn bad_encoding_and_size_are_refused() {
        assert_eq!(parse(b"\0al\xffice\0secret"), Err(PlainError::NotUtf8));
        let mut long = b"\0alice\0".to_vec();
        long.resize(MAX_MESSAGE_LEN + 1, b'x');
        assert_eq!(parse(&long), Err(PlainError::TooLong));
        long.truncate(MAX_MESSAGE_LEN);
        assert!(parse(&long).is_ok());
    }

    #[test]
    fn debug_hides_the_password() {
        let shown = format!("{:?}", auth("alice", "secret"));
        assert!(shown.contains("alice") && !shown.contains("secret"));
    }

    #[test]
    fn random_input_never_panics() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut accepted = 0;
        for _ in 0..5000 {
            let mut msg = Vec::new();
            for _ in 0..x % 24 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                msg.push(match x % 4 {
                    0 => 0,
                    1 => (x >> 8) as u8,
                    _ => b'a' + (x >> 8) as u8 % 3,
                });
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if parse(&msg).is_ok() {
                accepted += 1;
            }
        }
        assert!(accepted > 0);
    }
}
