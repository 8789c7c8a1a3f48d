//! TLS for the `SSL` and `SASL_SSL` listeners (rustls, ring provider): the server
//! configuration built from PEM files, kept behind a lock so SIGHUP can swap in renewed
//! certificates while connections are served (a handshake takes the configuration current
//! at its start). Reading the files runs on the blocking pool at reload.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::FromDer;

use crate::config::{Config, TlsClientAuth};

/// The files a TLS configuration is built from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    pub client_auth: TlsClientAuth,
}

impl TlsFiles {
    /// The broker's TLS files, when it has a certificate configured.
    pub fn from_config(config: &Config) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: config.tls_cert_file.clone()?,
            key: config.tls_key_file.clone()?,
            client_ca: config.tls_client_ca_file.clone(),
            client_auth: config.tls_client_auth,
        })
    }

    /// Reads the files and builds the server configuration (TLS 1.2 and 1.3).
    pub fn load(&self) -> Result<Arc<ServerConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certified = self.certified_key(&provider)?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS protocol versions: {e}"))?;
        let builder = match (&self.client_ca, self.client_auth) {
            (_, TlsClientAuth::None) => builder.with_no_client_auth(),
            (None, _) => {
                return Err("client certificates need tls_client_ca_file".into());
            }
            (Some(ca), auth) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(ca)? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("bad CA certificate in {}: {e}", ca.display()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                let verifier = match auth {
                    TlsClientAuth::Requested => verifier.allow_unauthenticated(),
                    _ => verifier,
                };
                builder.with_client_cert_verifier(
                    verifier
                        .build()
                        .map_err(|e| format!("client certificate verifier: {e}"))?,
                )
            }
        };
        Ok(Arc::new(builder.with_cert_resolver(Arc::new(
            OneCertificate(Arc::new(certified)),
        ))))
    }

    /// The certificate chain and its private key, read and checked to belong together.
    fn certified_key(
        &self,
        provider: &rustls::crypto::CryptoProvider,
    ) -> Result<CertifiedKey, String> {
        let certs = read_certs(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| format!("cannot read the private key {}: {e}", self.key.display()))?;
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| format!("unusable private key {}: {e}", self.key.display()))?;
        let certified = CertifiedKey::new(certs, signing);
        self.check_key_fits(&certified)?;
        Ok(certified)
    }

    /// The certificate and key as a TLS client's, for the node's own connections to peers
    /// whose listeners ask for one (mutual TLS).
    pub fn client_certificate(&self) -> Result<Arc<dyn ResolvesClientCert>, String> {
        let certified = self.certified_key(&rustls::crypto::ring::default_provider())?;
        Ok(Arc::new(OneClientCertificate(Arc::new(certified))))
    }

    /// Whether the private key is the certificate's (their public keys compared). rustls's
    /// own check parses the certificate with webpki, which refuses X.509 v1 certificates
    /// (still made by `openssl x509 -req` without extensions, and accepted by Java's and
    /// OpenSSL's TLS); x509-parser reads every version.
    fn check_key_fits(&self, certified: &CertifiedKey) -> Result<(), String> {
        let leaf = certified
            .end_entity_cert()
            .map_err(|e| format!("no certificate in {}: {e}", self.cert.display()))?;
        let (_, cert) = x509_parser::prelude::X509Certificate::from_der(leaf)
            .map_err(|e| format!("cannot read the certificate {}: {e}", self.cert.display()))?;
        let fits = certified
            .key
            .public_key()
            .is_none_or(|spki| spki.as_ref() == cert.public_key().raw);
        if !fits {
            return Err(format!(
                "the private key {} is not the key of the certificate {}",
                self.key.display(),
                self.cert.display()
            ));
        }
        Ok(())
    }
}

/// Sends the one configured certificate to every server that asks for one.
#[derive(Debug)]
struct OneClientCertificate(Arc<CertifiedKey>);

impl ResolvesClientCert for OneClientCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0
            .key
            .choose_scheme(schemes)
            .is_some()
            .then(|| self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Serves the one configured certificate to every client.
#[derive(Debug)]
struct OneCertificate(Arc<CertifiedKey>);

impl ResolvesServerCert for OneCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM in {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", path.display()));
    }
    Ok(certs)
}

/// The TLS configuration new connections use, replaced on reload.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Loads the files once (a broker with a bad certificate does not start).
    pub fn new(files: TlsFiles) -> Result<Tls, String> {
        let current = RwLock::new(files.load()?);
        Ok(Tls { files, current })
    }

    /// The configuration for a handshake starting now.
    pub fn current(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reads the files again (blocking: call it on the blocking pool) and uses them for new
    /// connections; on an error the previous configuration stays.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = self.files.load()?;
        match self.current.write() {
            Ok(mut c) => *c = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }
}
