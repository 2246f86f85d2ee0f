//! TLS session tickets sealed with keys the caller can share: every
//! process given the same keys opens the others' tickets, so a client
//! that resumes its session on another worker resumes instead of doing a
//! full handshake (rustls's own ticketer draws its keys at random, per
//! process). Tickets are sealed with AES-256-GCM under the current key
//! and its 16-byte name; the previous key still opens them, so a rotation
//! loses no session.

use std::fmt;
use std::sync::RwLock;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

/// How long a client may keep a ticket (its hint; the keys' rotation is
/// what ends a ticket's use).
pub(crate) const TICKET_LIFETIME_SECS: u32 = 12 * 3600;

const NAME_LEN: usize = 16;
const KEY_LEN: usize = 32;

/// One session-ticket key: a random name (which key sealed a ticket) and
/// a random AES-256-GCM key.
#[derive(Clone, PartialEq, Eq)]
pub struct TicketKey([u8; TicketKey::LEN]);

impl fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TicketKey(..)")
    }
}

impl TicketKey {
    /// Its length as bytes.
    pub const LEN: usize = NAME_LEN + KEY_LEN;

    /// A new key from the system's random source; `None` if that fails.
    pub fn generate() -> Option<Self> {
        let mut bytes = [0u8; Self::LEN];
        SystemRandom::new().fill(&mut bytes).ok()?;
        Some(Self(bytes))
    }

    /// The key as bytes, to hand to another process.
    pub fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    /// The key another process handed over.
    pub fn from_bytes(bytes: [u8; Self::LEN]) -> Self {
        Self(bytes)
    }

    fn name(&self) -> &[u8] {
        &self.0[..NAME_LEN]
    }

    fn sealer(&self) -> Sealer {
        let key = UnboundKey::new(&AES_256_GCM, &self.0[NAME_LEN..]).expect("32 bytes");
        let mut name = [0u8; NAME_LEN];
        name.copy_from_slice(self.name());
        Sealer {
            name,
            key: LessSafeKey::new(key),
        }
    }
}

struct Sealer {
    name: [u8; NAME_LEN],
    key: LessSafeKey,
}

struct Keys {
    current: Sealer,
    previous: Option<Sealer>,
}

/// The ticketer a [`Tls`](crate::Tls) uses: the keys set last.
pub(crate) struct SharedTicketer {
    keys: RwLock<Keys>,
    random: SystemRandom,
}

impl fmt::Debug for SharedTicketer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedTicketer").finish_non_exhaustive()
    }
}

impl SharedTicketer {
    pub(crate) fn new(current: &TicketKey) -> Self {
        Self {
            keys: RwLock::new(Keys {
                current: current.sealer(),
                previous: None,
            }),
            random: SystemRandom::new(),
        }
    }

    /// Seals new tickets with `current`; `previous` (if any) still opens
    /// the tickets it sealed.
    pub(crate) fn set_keys(&self, current: &TicketKey, previous: Option<&TicketKey>) {
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Keys {
            current: current.sealer(),
            previous: previous.map(TicketKey::sealer),
        };
    }
}

impl ProducesTickets for SharedTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        TICKET_LIFETIME_SECS
    }

    /// `name | nonce | AES-256-GCM(plain, aad = name)`.
    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).ok()?;
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let sealer = &keys.current;
        let mut body = plain.to_vec();
        sealer
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&sealer.name),
                &mut body,
            )
            .ok()?;
        let mut ticket = Vec::with_capacity(NAME_LEN + NONCE_LEN + body.len());
        ticket.extend_from_slice(&sealer.name);
        ticket.extend_from_slice(&nonce);
        ticket.extend_from_slice(&body);
        Some(ticket)
    }

    /// `None` for a ticket no key here sealed, or one tampered with.
    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        if cipher.len() < NAME_LEN + NONCE_LEN + AES_256_GCM.tag_len() {
            return None;
        }
        let (name, rest) = cipher.split_at(NAME_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let sealer = [Some(&keys.current), keys.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|s| s.name == name)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = sealed.to_vec();
        let plain = sealer
            .key
            .open_in_place(nonce, Aad::from(&sealer.name), &mut body)
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_in_any_process_with_the_key_and_after_one_rotation() {
        let first = TicketKey::generate().unwrap();
        let here = SharedTicketer::new(&first);
        let elsewhere = SharedTicketer::new(&TicketKey::from_bytes(*first.as_bytes()));
        let ticket = here.encrypt(b"session state").unwrap();
        assert_eq!(elsewhere.decrypt(&ticket).unwrap(), b"session state");
        let second = TicketKey::generate().unwrap();
        elsewhere.set_keys(&second, Some(&first));
        assert_eq!(
            elsewhere.decrypt(&ticket).unwrap(),
            b"session state",
            "the previous key opens it"
        );
        let third = TicketKey::generate().unwrap();
        elsewhere.set_keys(&third, Some(&second));
        assert_eq!(
            elsewhere.decrypt(&ticket),
            None,
            "two rotations on, it is gone"
        );
    }

    #[test]
    fn a_tampered_or_short_ticket_opens_nowhere() {
        let ticketer = SharedTicketer::new(&TicketKey::generate().unwrap());
        let mut ticket = ticketer.encrypt(b"state").unwrap();
        let last = ticket.len() - 1;
        ticket[last] ^= 1;
        assert_eq!(ticketer.decrypt(&ticket), None);
        assert_eq!(ticketer.decrypt(b"short"), None);
        let stranger = SharedTicketer::new(&TicketKey::generate().unwrap());
        assert_eq!(stranger.decrypt(&ticketer.encrypt(b"x").unwrap()), None);
    }
}
