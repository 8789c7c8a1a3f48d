//! One connection's authentication state, as Kafka's `SaslServerAuthenticator` steps it:
//! a `SASL_*` connection may send ApiVersions and SaslHandshake, then SaslAuthenticate until
//! the mechanism's exchange ends; only then any other request. Plain and TLS listeners start
//! authenticated (`User:ANONYMOUS`, or the client certificate's subject). With
//! `connections_max_reauth_ms` a session expires and the client re-authenticates on the same
//! connection (KIP-368) with the same principal.

use std::time::Instant;

use super::oauthbearer::OAuthServer;
use super::scram::{Mechanism, ScramServer};

/// Kafka's principal for connections that did not authenticate.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// A mechanism chosen by SaslHandshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sasl {
    Plain,
    Scram(Mechanism),
    OAuthBearer,
}

impl Sasl {
    pub fn from_name(name: &str) -> Option<Sasl> {
        match name {
            "PLAIN" => Some(Sasl::Plain),
            "OAUTHBEARER" => Some(Sasl::OAuthBearer),
            other => Mechanism::from_name(other).map(Sasl::Scram),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Sasl::Plain => "PLAIN",
            Sasl::OAuthBearer => "OAUTHBEARER",
            Sasl::Scram(m) => m.name(),
        }
    }
}

/// Where the exchange stands.
enum Stage {
    /// Authenticated (or a listener without SASL).
    Done,
    /// A SASL connection before its SaslHandshake.
    Handshake,
    /// The mechanism is chosen; its first token comes next. `raw`: SaslHandshake v0, so
    /// tokens come as bare size-prefixed frames, not in SaslAuthenticate requests.
    Chosen { sasl: Sasl, raw: bool },
    /// A SCRAM exchange after the client-first message of `user`.
    Scram {
        server: Box<ScramServer>,
        raw: bool,
        user: String,
    },
    /// An OAUTHBEARER exchange that answered the token with an error challenge: the
    /// client's `%x01` acknowledgement comes next, and the exchange fails.
    OAuth { server: Box<OAuthServer>, raw: bool },
}

/// What a request may do on this connection now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Any request.
    Open,
    /// Only ApiVersions and SaslHandshake (before the handshake, or re-authenticating).
    Handshake,
    /// Only SaslAuthenticate.
    Authenticate,
    /// The next frame is a bare SASL token (after SaslHandshake v0).
    RawToken,
    /// The session expired: only a re-authentication (SaslHandshake) may follow.
    Expired,
}

/// One connection's authentication.
pub struct Authentication {
    stage: Stage,
    /// The authenticated principal (`User:NAME`).
    principal: String,
    /// When the current session ends (re-authentication), if it does.
    expires: Option<Instant>,
    /// Whether this connection authenticates with SASL at all.
    sasl: bool,
    /// Whether the exchange in progress re-authenticates an authenticated connection.
    reauthenticating: bool,
}

impl Authentication {
    /// A connection of a listener without SASL: authenticated as `principal` from the start.
    pub fn open(principal: String) -> Authentication {
        Authentication {
            stage: Stage::Done,
            principal,
            expires: None,
            sasl: false,
            reauthenticating: false,
        }
    }

    /// A connection of a `SASL_*` listener: it must authenticate first.
    pub fn sasl() -> Authentication {
        Authentication {
            stage: Stage::Handshake,
            principal: ANONYMOUS.to_string(),
            expires: None,
            sasl: true,
            reauthenticating: false,
        }
    }

    /// Whether the connection has authenticated (at least once: a re-authentication in
    /// progress keeps the principal it had).
    pub fn authenticated(&self) -> bool {
        matches!(self.stage, Stage::Done) || self.reauthenticating
    }

    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// Whether an exchange has just completed (or none was needed): no exchange in progress.
    pub fn done(&self) -> bool {
        matches!(self.stage, Stage::Done)
    }

    /// When the current session ends, if it does.
    pub fn expires(&self) -> Option<Instant> {
        self.expires
    }

    /// What the next request may be, at `now`.
    pub fn gate(&self, now: Instant) -> Gate {
        match &self.stage {
            Stage::Done if self.expires.is_some_and(|e| now >= e) => Gate::Expired,
            Stage::Done => Gate::Open,
            Stage::Handshake => Gate::Handshake,
            Stage::Chosen { raw: true, .. }
            | Stage::Scram { raw: true, .. }
            | Stage::OAuth { raw: true, .. } => Gate::RawToken,
            Stage::Chosen { .. } | Stage::Scram { .. } | Stage::OAuth { .. } => Gate::Authenticate,
        }
    }

    /// SaslHandshake chose `sasl` (`raw`: v0). Allowed before authenticating, and after it
    /// on a SASL connection to re-authenticate (v1 only, as KIP-368 requires).
    pub fn handshake(&mut self, sasl: Sasl, raw: bool) -> Result<(), &'static str> {
        match self.stage {
            Stage::Handshake => {}
            Stage::Done if self.sasl && !raw => self.reauthenticating = true,
            Stage::Done if self.sasl => {
                return Err("re-authentication needs SaslHandshake v1 or later")
            }
            Stage::Done => return Err("this listener does not use SASL"),
            _ => return Err("SaslHandshake already received"),
        }
        self.stage = Stage::Chosen { sasl, raw };
        Ok(())
    }

    /// The chosen mechanism and whether its tokens are raw, while a first token is awaited.
    pub fn chosen(&self) -> Option<(Sasl, bool)> {
        match self.stage {
            Stage::Chosen { sasl, raw } => Some((sasl, raw)),
            _ => None,
        }
    }

    /// A SCRAM exchange continues after the first message, of `user`.
    pub fn continue_scram(&mut self, server: ScramServer, raw: bool, user: String) {
        self.stage = Stage::Scram {
            server: Box::new(server),
            raw,
            user,
        };
    }

    /// The SCRAM exchange in progress and the user it names, taken out (the caller finishes
    /// or fails it).
    pub fn take_scram(&mut self) -> Option<(ScramServer, String)> {
        match std::mem::replace(&mut self.stage, Stage::Handshake) {
            Stage::Scram { server, user, .. } => Some((*server, user)),
            other => {
                self.stage = other;
                None
            }
        }
    }

    /// An OAUTHBEARER exchange waits for the client's acknowledgement of its challenge.
    pub fn continue_oauth(&mut self, server: OAuthServer, raw: bool) {
        self.stage = Stage::OAuth {
            server: Box::new(server),
            raw,
        };
    }

    /// The OAUTHBEARER exchange in progress, taken out.
    pub fn take_oauth(&mut self) -> Option<OAuthServer> {
        match std::mem::replace(&mut self.stage, Stage::Handshake) {
            Stage::OAuth { server, .. } => Some(*server),
            other => {
                self.stage = other;
                None
            }
        }
    }

    /// The exchange succeeded for `user`: the session lasts until `expires`. A
    /// re-authentication must keep the principal (Kafka refuses a change).
    pub fn succeed(&mut self, user: &str, expires: Option<Instant>) -> Result<(), String> {
        let principal = format!("User:{user}");
        if self.reauthenticating && principal != self.principal {
            return Err(format!(
                "re-authentication as {principal} on a connection of {}",
                self.principal
            ));
        }
        self.principal = principal;
        self.stage = Stage::Done;
        self.expires = expires;
        self.reauthenticating = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_sasl_connection_steps_through_handshake_and_authenticate() {
        let now = Instant::now();
        let mut a = Authentication::sasl();
        assert_eq!(a.gate(now), Gate::Handshake);
        assert!(!a.authenticated());
        a.handshake(Sasl::Plain, false).unwrap();
        assert_eq!(a.gate(now), Gate::Authenticate);
        assert!(a.handshake(Sasl::Plain, false).is_err());
        a.succeed("alice", Some(now + Duration::from_secs(1)))
            .unwrap();
        assert_eq!(a.principal(), "User:alice");
        assert_eq!(a.gate(now), Gate::Open);
        assert_eq!(a.gate(now + Duration::from_secs(2)), Gate::Expired);
        // Re-authentication keeps the principal and is authenticated meanwhile.
        a.handshake(Sasl::Plain, false).unwrap();
        assert!(a.authenticated());
        assert!(a.succeed("mallory", None).is_err());
        a.handshake(Sasl::Plain, false).unwrap_err();
    }

    #[test]
    fn v0_handshakes_take_raw_tokens_and_plain_listeners_refuse_sasl() {
        let mut a = Authentication::sasl();
        a.handshake(Sasl::Scram(Mechanism::Sha256), true).unwrap();
        assert_eq!(a.gate(Instant::now()), Gate::RawToken);
        let mut open = Authentication::open(ANONYMOUS.into());
        assert_eq!(open.gate(Instant::now()), Gate::Open);
        assert!(open.handshake(Sasl::Plain, false).is_err());
    }
}
