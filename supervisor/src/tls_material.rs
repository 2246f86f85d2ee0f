//! The certificate chain and key as the supervisor hands them to its
//! workers: read from `--certfile` and `--keyfile` by the supervisor
//! (root, before any worker drops privileges), checked (they parse, the key
//! is the certificate's), and put in a sealed memfd that travels to each
//! worker over its control channel (`SCM_RIGHTS`). A worker never opens
//! the key file: one running as `--user nobody` needs no read access to it.
//!
//! The memfd holds `u32 LE chain length | chain PEM | key PEM`; it is
//! sealed against writes, so what a worker reads is what was checked.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use drover_worker::CertifiedPair;
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};

/// The largest certificate chain plus key taken (far above any real one).
const MAX_MATERIAL: u64 = 1 << 20;

/// Where the certificate and key are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// A checked pair, ready to hand over.
#[derive(Debug)]
pub(crate) struct Material {
    memfd: OwnedFd,
    /// The end-entity certificate (DER), for the log.
    pub(crate) leaf: Vec<u8>,
}

impl Material {
    /// The descriptor each worker gets a copy of.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.memfd.as_fd()
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
        let pair = CertifiedPair::from_pem(&chain, &key).map_err(|e| {
            format!(
                "--certfile {} / --keyfile {}: {e}",
                self.cert.display(),
                self.key.display()
            )
        })?;
        let memfd = seal(&chain, &key).map_err(|e| format!("cannot hand the key over: {e}"))?;
        Ok(Material {
            memfd,
            leaf: pair.leaf_der().to_vec(),
        })
    }
}

fn seal(chain: &[u8], key: &[u8]) -> std::io::Result<OwnedFd> {
    let fd = memfd_create(
        c"drover-tls",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )?;
    let mut file = std::fs::File::from(fd);
    let len = u32::try_from(chain.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    file.write_all(&len.to_le_bytes())?;
    file.write_all(chain)?;
    file.write_all(key)?;
    let seals = SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_SEAL;
    fcntl(&file, FcntlArg::F_ADD_SEALS(seals))?;
    Ok(file.into())
}

/// A worker's side: the pair in a memfd the supervisor sent, checked
/// again (what the worker serves is what it parsed itself).
pub(crate) fn unpack(fd: OwnedFd) -> Result<CertifiedPair, String> {
    let file = std::fs::File::from(fd);
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    if !(4..=MAX_MATERIAL).contains(&size) {
        return Err(format!("TLS material of {size} bytes"));
    }
    let mut bytes = vec![0u8; size as usize];
    file.read_exact_at(&mut bytes, 0)
        .map_err(|e| e.to_string())?;
    let (len, rest) = bytes.split_at(4);
    let chain_len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if chain_len > rest.len() {
        return Err("TLS material cut short".into());
    }
    let (chain, key) = rest.split_at(chain_len);
    CertifiedPair::from_pem(chain, key).map_err(|e| e.to_string())
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
        let copy = material.fd().try_clone_to_owned().unwrap();
        // Sealed: nobody rewrites what was checked.
        let mut writer = std::fs::File::from(material.fd().try_clone_to_owned().unwrap());
        assert!(writer.write_all(b"x").is_err());
        let pair = unpack(copy).unwrap();
        assert_eq!(pair.leaf_der(), material.leaf.as_slice());
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
