//! The control channel between the supervisor and each worker (and, at a
//! binary upgrade, between the old supervisor and the new one): the
//! messages and their encoding (`protocol`), and the `SOCK_SEQPACKET`
//! socket they travel over (`socket`). Both ends run in this crate: the
//! supervisor process and the worker processes it starts from the same
//! binary.

pub(crate) mod protocol;
mod socket;

pub(crate) use socket::{recv_with_fd, ControlSocket};

#[cfg(test)]
mod fuzz_tests;
