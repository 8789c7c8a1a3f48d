//! Authentication: TLS configurations for the `SSL` / `SASL_SSL` listeners, SASL mechanisms
//! (PLAIN, SCRAM-SHA-256/512), their credentials, and each connection's authentication
//! state. No sockets and no broker state: the server layer drives the exchanges, the
//! metadata image keeps the credentials.

pub mod acl;
pub mod oauthbearer;
pub mod plain;
pub mod principal;
pub mod scram;
pub mod session;
pub mod tls;
