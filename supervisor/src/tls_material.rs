//! The certificate chain and key as the supervisor hands them to its
//! workers: read from `--certfile` and `--keyfile` by the supervisor
//! (root, before any worker drops privileges), checked (they parse, the key
//! is the certificate's), and put in a sealed memfd that travels to each
//! worker over its control channel (`SCM_RIGHTS`). A worker never opens
//! the key file: one running as `--user nobody` needs no read access to it.
//!
//! With them go the fleet's session-ticket keys (the supervisor draws them
//! and rotates them), so that every worker opens every other's tickets.
//!
//! The memfd holds `u32 LE chain, key and CA lengths | chain PEM | key PEM
//! | client CAs PEM | ticket keys (48 bytes each, the current one first)`; it is
//! sealed against writes, so what a worker reads is what was checked.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use drover_worker::{CertifiedPair, ClientAuth, TicketKey};

use crate::args::CertReqs;
use crate::control::protocol::{SupervisorMessage, MAX_DATAGRAM};
use crate::control::{recv_with_fd, ControlSocket};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};

/// The largest certificate chain plus key taken (far above any real one).
const MAX_MATERIAL: u64 = 1 << 20;

/// Where the certificate and key are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    /// `--ca-certs`: the CAs client certificates are verified against.
    pub(crate) ca: Option<PathBuf>,
    pub(crate) cert_reqs: CertReqs,
}

/// A checked pair, as read.
pub(crate) struct Material {
    chain: Vec<u8>,
    key: Vec<u8>,
    /// The client CAs (PEM; empty: clients are not asked).
    ca: Vec<u8>,
    /// The end-entity certificate (DER), for the log.
    leaf: Vec<u8>,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material").finish_non_exhaustive()
    }
}

/// The fleet's session-ticket keys: tickets are sealed with the current
/// one, and the previous one still opens them.
#[derive(Debug, Clone)]
pub(crate) struct TicketKeys {
    pub(crate) current: TicketKey,
    pub(crate) previous: Option<TicketKey>,
}

impl TicketKeys {
    pub(crate) fn new() -> Result<Self, String> {
        Ok(Self {
            current: TicketKey::generate().ok_or("no random source for a ticket key")?,
            previous: None,
        })
    }

    /// `tls` seals tickets with these keys from now on.
    pub(crate) fn install(&self, tls: &drover_worker::Tls) {
        tls.set_ticket_keys(&self.current, self.previous.as_ref());
    }

    /// A new current key; the current one becomes the previous.
    pub(crate) fn rotate(&mut self) -> Result<(), String> {
        let next = TicketKey::generate().ok_or("no random source for a ticket key")?;
        self.previous = Some(std::mem::replace(&mut self.current, next));
        Ok(())
    }
}

/// What a worker gets: the pair, the client CAs and the ticket keys.
pub(crate) struct Handed {
    pub(crate) pair: CertifiedPair,
    /// The client CAs (PEM; empty: clients are not asked).
    pub(crate) ca: Vec<u8>,
    pub(crate) tickets: TicketKeys,
}

impl Handed {
    /// How clients are asked for certificates, from `--cert-reqs` and the
    /// CAs handed over.
    pub(crate) fn client_auth(&self, reqs: CertReqs) -> Result<ClientAuth, String> {
        match reqs {
            CertReqs::None => Ok(ClientAuth::None),
            reqs => ClientAuth::from_pem(&self.ca, reqs == CertReqs::Required)
                .map_err(|e| format!("--ca-certs: {e}")),
        }
    }
}

impl Material {
    /// The pair and `tickets` in a sealed memfd, for the workers.
    pub(crate) fn seal(&self, tickets: &TicketKeys) -> std::io::Result<OwnedFd> {
        let keys = std::iter::once(&tickets.current).chain(tickets.previous.as_ref());
        let keys: Vec<u8> = keys.flat_map(|k| k.as_bytes().to_vec()).collect();
        seal(&self.chain, &self.key, &self.ca, &keys)
    }

    /// Whether `other` asks clients for certificates of the same CAs.
    pub(crate) fn same_client_cas(&self, other: &Material) -> bool {
        self.ca == other.ca
    }

    /// What the log says of the served certificate.
    pub(crate) fn facts(&self) -> CertificateFacts {
        CertificateFacts::of(&self.leaf)
    }
}

/// Below this much validity left, every load warns.
pub(crate) const EXPIRY_WARNING: std::time::Duration = std::time::Duration::from_secs(14 * 86_400);

/// The served certificate, as an operator reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertificateFacts {
    pub(crate) subject: String,
    /// As the certificate says it (`Mar  1 12:00:00 2027 +00:00`).
    pub(crate) not_after: String,
    /// `None` once it has expired.
    pub(crate) valid_for: Option<std::time::Duration>,
}

impl CertificateFacts {
    fn of(der: &[u8]) -> Self {
        match x509_parser::parse_x509_certificate(der) {
            Ok((_, cert)) => Self {
                subject: cert.subject().to_string(),
                not_after: cert.validity().not_after.to_string(),
                valid_for: cert
                    .validity()
                    .time_to_expiration()
                    .and_then(|left| std::time::Duration::try_from(left).ok()),
            },
            // rustls took it; only its contents are past this parser.
            Err(_) => Self {
                subject: "?".into(),
                not_after: "?".into(),
                valid_for: None,
            },
        }
    }
}

impl TlsFiles {
    /// Reads and checks the pair; the error is one line for the operator.
    pub(crate) fn load(&self) -> Result<Material, String> {
        let read = |path: &PathBuf, what: &str| {
            std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
        };
        let chain = read(&self.cert, "--certfile")?;
        let key = read(&self.key, "--keyfile")?;
        let ca = match (&self.ca, self.cert_reqs) {
            (_, CertReqs::None) => Vec::new(),
            (Some(path), _) => {
                let ca = read(path, "--ca-certs")?;
                let required = self.cert_reqs == CertReqs::Required;
                ClientAuth::from_pem(&ca, required)
                    .map_err(|e| format!("--ca-certs {}: {e}", path.display()))?;
                ca
            }
            (None, _) => return Err("--cert-reqs optional or required needs --ca-certs".into()),
        };
        let pair = CertifiedPair::from_pem(&chain, &key).map_err(|e| {
            let (cert, key) = (self.cert.display(), self.key.display());
            format!("--certfile {cert} / --keyfile {key}: {e}")
        })?;
        Ok(Material {
            leaf: pair.leaf_der().to_vec(),
            chain,
            key,
            ca,
        })
    }
}

fn seal(chain: &[u8], key: &[u8], ca: &[u8], tickets: &[u8]) -> std::io::Result<OwnedFd> {
    let fd = memfd_create(
        c"drover-tls",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )?;
    let mut file = std::fs::File::from(fd);
    for part in [chain, key, ca] {
        let len = u32::try_from(part.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        file.write_all(&len.to_le_bytes())?;
    }
    for part in [chain, key, ca, tickets] {
        file.write_all(part)?;
    }
    let seals = SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_SEAL;
    fcntl(&file, FcntlArg::F_ADD_SEALS(seals))?;
    Ok(file.into())
}

/// The material waiting on `channel` now (a `SupervisorMessage::Tls` and
/// its memfd), unpacked: `Ok(None)` when nothing waits there, an error
/// when what waits is something else or does not unpack.
pub(crate) fn take_waiting(channel: &ControlSocket) -> Result<Option<Handed>, String> {
    use std::os::fd::AsFd;
    let mut buffer = [0u8; MAX_DATAGRAM];
    let (len, fd) = match recv_with_fd(channel.as_fd(), &mut buffer) {
        Ok(received) => received,
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
        Err(error) => return Err(format!("reading the certificate: {error}")),
    };
    let (Ok(SupervisorMessage::Tls), Some(fd)) = (SupervisorMessage::decode(&buffer[..len]), fd)
    else {
        return Err("a message that is not the certificate".into());
    };
    unpack(fd).map(Some)
}

/// A worker's side: the pair (checked again: what the worker serves is
/// what it parsed itself), the client CAs and the ticket keys, from a
/// memfd the supervisor sent.
pub(crate) fn unpack(fd: OwnedFd) -> Result<Handed, String> {
    let file = std::fs::File::from(fd);
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    if !(12..=MAX_MATERIAL).contains(&size) {
        return Err(format!("TLS material of {size} bytes"));
    }
    let mut bytes = vec![0u8; size as usize];
    file.read_exact_at(&mut bytes, 0)
        .map_err(|e| e.to_string())?;
    let length = |at: usize| {
        u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize
    };
    let (chain_len, key_len, ca_len) = (length(0), length(4), length(8));
    let rest = &bytes[12..];
    if chain_len.saturating_add(key_len).saturating_add(ca_len) > rest.len() {
        return Err("TLS material cut short".into());
    }
    let (chain, rest) = rest.split_at(chain_len);
    let (key, rest) = rest.split_at(key_len);
    let (ca, tickets) = rest.split_at(ca_len);
    let pair = CertifiedPair::from_pem(chain, key).map_err(|e| e.to_string())?;
    let mut keys = tickets.chunks_exact(TicketKey::LEN).map(|chunk| {
        let mut bytes = [0u8; TicketKey::LEN];
        bytes.copy_from_slice(chunk);
        TicketKey::from_bytes(bytes)
    });
    let current = keys.next().ok_or("TLS material without a ticket key")?;
    Ok(Handed {
        pair,
        ca: ca.to_vec(),
        tickets: TicketKeys {
            current,
            previous: keys.next(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem() -> (String, String) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        (made.cert.pem(), made.signing_key.serialize_pem())
    }

    fn files(dir: &str, cert: &str, key: &str) -> TlsFiles {
        let dir = std::env::temp_dir().join(format!("drover-tls-{dir}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = TlsFiles {
            ca: None,
            cert_reqs: CertReqs::None,
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
        files
    }

    #[test]
    fn a_checked_pair_travels_sealed_and_is_read_back_whole() {
        let (cert, key) = pem();
        let material = files("ok", &cert, &key).load().unwrap();
        assert!(!material.leaf.is_empty());
        let mut tickets = TicketKeys::new().unwrap();
        tickets.rotate().unwrap();
        let sealed = material.seal(&tickets).unwrap();
        let copy = sealed.try_clone().unwrap();
        // Sealed: nobody rewrites what was checked.
        let mut writer = std::fs::File::from(sealed);
        assert!(writer.write_all(b"x").is_err());
        let handed = unpack(copy).unwrap();
        assert_eq!(handed.pair.leaf_der(), material.leaf.as_slice());
        assert_eq!(handed.tickets.current, tickets.current);
        assert_eq!(handed.tickets.previous, tickets.previous);
        let facts = material.facts();
        assert!(facts.subject.contains("rcgen"), "{facts:?}");
        assert!(
            facts.valid_for.unwrap() > EXPIRY_WARNING,
            "rcgen's default: years"
        );
    }

    #[test]
    fn a_mismatched_pair_or_a_missing_file_is_one_line_naming_the_files() {
        let (cert, _) = pem();
        let (_, other) = pem();
        let error = files("mismatch", &cert, &other).load().unwrap_err();
        assert!(
            error.contains("does not match") && error.contains("--certfile"),
            "{error}"
        );
        let mut missing = files("missing", &cert, &other);
        missing.key = missing.key.with_file_name("nope.pem");
        let error = missing.load().unwrap_err();
        assert!(
            error.starts_with("--keyfile") && !error.contains('\n'),
            "{error}"
        );
    }
}
