//! TLS on a server's TCP listeners: rustls (with the `ring` provider),
//! ALPN `h2` and `http/1.1`, and a certificate (and client CAs) that can be
//! swapped while serving: new handshakes get the new ones, open
//! connections keep theirs.
//!
//! `ring` rather than `aws-lc-rs`: it builds with a C compiler alone (no
//! cmake, no Go), in a fraction of the time, and has what a web server
//! needs (ECDSA and RSA keys, AES-GCM and ChaCha20-Poly1305, X25519).

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::tls_tickets::{SharedTicketer, TicketKey};

/// The lowest TLS version a server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3 (the default).
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// Why a certificate and key cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file holds no PEM certificate.
    #[error("no certificate in the certificate file")]
    NoCertificate,
    /// A certificate that does not parse.
    #[error("a certificate does not parse: {0}")]
    BadCertificate(String),
    /// The key file holds no PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[error("no private key in the key file: {0}")]
    NoKey(String),
    /// A key rustls cannot use.
    #[error("the private key cannot be used: {0}")]
    BadKey(String),
    /// The key is not the certificate's.
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    /// The TLS configuration itself (a version the provider lacks).
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// A certificate chain and its key, checked: they parse and match.
#[derive(Clone)]
pub struct CertifiedPair(Arc<CertifiedKey>);

impl fmt::Debug for CertifiedPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertifiedPair")
            .field("chain_len", &self.0.cert.len())
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl CertifiedPair {
    /// Parses a PEM certificate chain (the server's certificate first) and
    /// a PEM private key, and checks that the key is the certificate's.
    pub fn from_pem(chain: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain)
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
        if certs.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::NoKey(e.to_string()))?;
        let certified = CertifiedKey::from_der(certs, key, &provider()).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch,
            other => TlsError::BadKey(other.to_string()),
        })?;
        Ok(Self(Arc::new(certified)))
    }

    /// The end-entity certificate, DER.
    pub fn leaf_der(&self) -> &[u8] {
        self.0.cert.first().map_or(&[], |c| c.as_ref())
    }
}

/// Whether clients are asked for a certificate, and which ones are
/// taken: those a CA of the given roots signed.
#[derive(Clone, Debug, Default)]
pub enum ClientAuth {
    /// Clients are not asked (the default).
    #[default]
    None,
    /// Asked; one without a certificate is served, one with a certificate
    /// the roots did not sign is refused.
    Optional(Arc<rustls::RootCertStore>),
    /// Asked; one without a valid certificate is refused at the handshake.
    Required(Arc<rustls::RootCertStore>),
}

impl ClientAuth {
    /// The CA certificates in `ca` (PEM), `required` or optional.
    pub fn from_pem(ca: &[u8], required: bool) -> Result<Self, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca) {
            let cert = cert.map_err(|e| TlsError::BadCertificate(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        let roots = Arc::new(roots);
        Ok(if required {
            Self::Required(roots)
        } else {
            Self::Optional(roots)
        })
    }
}

/// The certificate a client presented, verified against the roots of
/// [`ClientAuth`]: in the extensions of every request on its connection.
#[derive(Clone, Debug)]
pub struct ClientCertificate(Arc<CertificateDer<'static>>);

impl ClientCertificate {
    pub(crate) fn new(der: CertificateDer<'static>) -> Self {
        Self(Arc::new(der))
    }

    /// The certificate, DER (parse it with the X.509 crate of your choice).
    pub fn der(&self) -> &[u8] {
        self.0.as_ref()
    }
}

/// The certificate new handshakes get, swappable while serving.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A poisoned lock still holds a whole Arc.
        Some(Arc::clone(
            &self.0.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// TLS for a server's TCP listeners ([`Builder::tls`](crate::Builder::tls)).
/// Cheap to clone: clones share the certificate, so [`replace`](Self::replace)
/// (and [`set_client_auth`](Self::set_client_auth)) on any of them is seen
/// by every connection's next handshake.
#[derive(Clone)]
pub struct Tls {
    /// What new handshakes are made with: replaced whole when the client
    /// CAs change (the certificate and ticket keys are shared by every
    /// config built here, so they change in place).
    config: Arc<RwLock<Arc<rustls::ServerConfig>>>,
    min: TlsVersion,
    current: Arc<Current>,
    tickets: Arc<SharedTicketer>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl Tls {
    /// Serves `pair`, accepting `min` and later versions, with ALPN `h2`
    /// and `http/1.1`. Session tickets are sealed with a key of this
    /// process's own until [`set_ticket_keys`](Self::set_ticket_keys)
    /// gives one that other processes share.
    pub fn new(pair: CertifiedPair, min: TlsVersion) -> Result<Self, TlsError> {
        Self::with_client_auth(pair, min, ClientAuth::None)
    }

    /// As [`new`](Self::new), asking clients for certificates as `auth`
    /// says.
    pub fn with_client_auth(
        pair: CertifiedPair,
        min: TlsVersion,
        auth: ClientAuth,
    ) -> Result<Self, TlsError> {
        let current = Arc::new(Current(RwLock::new(pair.0)));
        let own = TicketKey::generate()
            .ok_or_else(|| TlsError::Config("no random source for a ticket key".into()))?;
        let tickets = Arc::new(SharedTicketer::new(&own));
        let config = server_config(min, auth, &current, &tickets)?;
        Ok(Self {
            config: Arc::new(RwLock::new(Arc::new(config))),
            min,
            current,
            tickets,
        })
    }

    /// New handshakes ask for client certificates as `auth` says from now
    /// on; connections open already keep what they were made with. The
    /// certificate and the ticket keys stay; the session cache starts
    /// empty, since a resumed session skips the client's verification.
    /// Session *tickets* resume while their key opens them: to refuse
    /// sessions made under the old CAs, also give new ticket keys without
    /// the previous one ([`set_ticket_keys`](Self::set_ticket_keys), as
    /// drover's supervisor does when the CAs change).
    pub fn set_client_auth(&self, auth: ClientAuth) -> Result<(), TlsError> {
        let config = server_config(self.min, auth, &self.current, &self.tickets)?;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        Ok(())
    }

    /// Session tickets are sealed with `current` from now on, and opened
    /// with it or `previous`: processes given the same keys resume each
    /// other's sessions.
    pub fn set_ticket_keys(&self, current: &TicketKey, previous: Option<&TicketKey>) {
        self.tickets.set_keys(current, previous);
    }

    /// New handshakes get `pair` from now on; connections open already
    /// keep the certificate they were made with.
    pub fn replace(&self, pair: CertifiedPair) {
        *self.current.0.write().unwrap_or_else(|e| e.into_inner()) = pair.0;
    }

    /// The handshake on an accepted connection, bounded by `within`.
    pub(crate) async fn handshake(
        &self,
        tcp: TcpStream,
        within: Option<Duration>,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let config = Arc::clone(&self.config.read().unwrap_or_else(|e| e.into_inner()));
        let accept = TlsAcceptor::from(config).accept(tcp);
        match within {
            Some(limit) => tokio::time::timeout(limit, accept).await.map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
            })?,
            None => accept.await,
        }
    }
}

/// A rustls config accepting `min` and later, asking clients as `auth`
/// says, serving `current` with ALPN `h2` and `http/1.1`, its tickets
/// sealed by `tickets`.
fn server_config(
    min: TlsVersion,
    auth: ClientAuth,
    current: &Arc<Current>,
    tickets: &Arc<SharedTicketer>,
) -> Result<rustls::ServerConfig, TlsError> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match min {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let optional = matches!(auth, ClientAuth::Optional(_));
    let builder = match auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Optional(roots) | ClientAuth::Required(roots) => {
            let mut verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider());
            if optional {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::clone(current) as Arc<dyn ResolvesServerCert>);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = Arc::clone(tickets) as Arc<dyn rustls::server::ProducesTickets>;
    // One TLS 1.3 ticket per handshake (rustls sends two by default), as
    // OpenSSL sends on a resumption: every resumption brings the client its
    // next ticket, and a second one is a seal here and a record for the
    // client to read on every new connection.
    config.send_tls13_tickets = 1;
    Ok(config)
}
