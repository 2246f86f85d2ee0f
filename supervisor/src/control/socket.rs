//! The control channel's socket: one `SOCK_SEQPACKET` Unix socketpair per
//! worker (and one between an old supervisor and the new one of a binary
//! upgrade), so every message is one datagram and EOF means the other side
//! is gone.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};

use drover_shared::env::{CONTROL_FD, UPGRADE_FD};

use super::protocol::MAX_DATAGRAM;

/// One end of a worker's control channel. Close-on-exec unless it is the
/// end handed to a worker.
#[derive(Debug)]
pub(crate) struct ControlSocket(OwnedFd);

impl ControlSocket {
    /// A connected pair (supervisor end, worker end), both close-on-exec.
    pub(crate) fn pair() -> io::Result<(Self, Self)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )?;
        Ok((Self(a), Self(b)))
    }

    /// Sends one message datagram without blocking; a peer that is gone is
    /// an error (never SIGPIPE).
    pub(crate) fn send(&self, datagram: &[u8]) -> io::Result<()> {
        let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
        whole(send(self.0.as_raw_fd(), datagram, flags)?, datagram)
    }

    /// Receives one datagram without blocking: `Ok(Some(len))`,
    /// `Ok(None)` at EOF (the peer is gone), `WouldBlock` when none waits.
    /// A datagram longer than the buffer is cut (and then fails to decode).
    pub(crate) fn recv(&self, buffer: &mut [u8; MAX_DATAGRAM]) -> io::Result<Option<usize>> {
        match recv(self.0.as_raw_fd(), buffer, MsgFlags::MSG_DONTWAIT)? {
            0 => Ok(None),
            len => Ok(Some(len)),
        }
    }

    /// Sends one datagram with a descriptor alongside (`SCM_RIGHTS`): the
    /// peer gets its own copy of it. Without blocking, as [`send`](Self::send).
    pub(crate) fn send_with_fd(&self, datagram: &[u8], fd: BorrowedFd<'_>) -> io::Result<()> {
        send_with_fd(self.0.as_fd(), datagram, fd)
    }

    /// Another descriptor for the same socket (close-on-exec), e.g. for an
    /// event loop to wait on while this one sends.
    pub(crate) fn try_clone(&self) -> io::Result<OwnedFd> {
        self.0.try_clone()
    }

    /// The worker's end, from the descriptor named by `DROVER_CONTROL_FD`.
    /// Taken once per process; `None` when the variable is not set (not
    /// running under drover).
    pub(crate) fn from_env() -> io::Result<Option<Self>> {
        static TAKEN: AtomicBool = AtomicBool::new(false);
        Self::from_env_var(CONTROL_FD, &TAKEN)
    }

    /// A new supervisor's end of the channel to the supervisor it replaces
    /// (binary upgrade), from the descriptor named by `DROVER_UPGRADE_FD`.
    /// Taken once per process; `None` when the variable is not set.
    pub(crate) fn upgrade_from_env() -> io::Result<Option<Self>> {
        static TAKEN: AtomicBool = AtomicBool::new(false);
        Self::from_env_var(UPGRADE_FD, &TAKEN)
    }

    fn from_env_var(var: &str, taken: &AtomicBool) -> io::Result<Option<Self>> {
        let Ok(value) = std::env::var(var) else {
            return Ok(None);
        };
        let fd: RawFd = value.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{var}={value:?} is not a descriptor number"),
            )
        })?;
        if taken.swap(true, Ordering::AcqRel) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("the socket of {var} was already taken"),
            ));
        }
        if !drover_shared::is_open(fd) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{var}={fd} is not an open descriptor"),
            ));
        }
        // SAFETY: open (checked); by drover's convention the parent passed
        // this descriptor for this process to own, and `taken` makes sure
        // it is taken once.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let socket = socket2::SockRef::from(&owned);
        if socket.r#type()? != socket2::Type::SEQPACKET {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{var}={fd} is not a control socket"),
            ));
        }
        socket.set_cloexec(true)?;
        socket.set_nonblocking(true)?;
        Ok(Some(Self(owned)))
    }
}

/// [`ControlSocket::send_with_fd`] on any control socket descriptor.
pub(crate) fn send_with_fd(
    socket: BorrowedFd<'_>,
    datagram: &[u8],
    fd: BorrowedFd<'_>,
) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, UnixAddr};
    let fds = [fd.as_raw_fd()];
    let rights = [ControlMessage::ScmRights(&fds)];
    let iov = [io::IoSlice::new(datagram)];
    let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
    let sent = sendmsg::<UnixAddr>(socket.as_raw_fd(), &iov, &rights, flags, None)?;
    whole(sent, datagram)
}

/// A datagram goes whole or is an error.
fn whole(sent: usize, datagram: &[u8]) -> io::Result<()> {
    if sent == datagram.len() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "datagram cut short",
        ))
    }
}

/// Receives one datagram and the descriptor sent alongside it, if any,
/// without blocking: `(0, None)` at EOF; `WouldBlock` when none waits.
/// Descriptors beyond the first are closed.
pub(crate) fn recv_with_fd(
    socket: BorrowedFd<'_>,
    buffer: &mut [u8; MAX_DATAGRAM],
) -> io::Result<(usize, Option<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, UnixAddr};
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let mut iov = [io::IoSliceMut::new(buffer)];
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
    let message = recvmsg::<UnixAddr>(socket.as_raw_fd(), &mut iov, Some(&mut space), flags)?;
    let mut received = None;
    for cmsg in message.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: the kernel just installed this descriptor in this
                // process for us (SCM_RIGHTS); nothing else owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                received.get_or_insert(owned);
            }
        }
    }
    Ok((message.bytes, received))
}

impl AsFd for ControlSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for ControlSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl From<ControlSocket> for OwnedFd {
    fn from(socket: ControlSocket) -> Self {
        socket.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::{WorkerCounters, WorkerMessage};

    #[test]
    fn one_message_per_datagram_and_eof_when_the_peer_goes() {
        let (supervisor, worker) = ControlSocket::pair().unwrap();
        worker.send(&WorkerMessage::Ready.encode()).unwrap();
        let beat = WorkerMessage::Heartbeat(WorkerCounters {
            requests: 1,
            in_flight: 0,
            connections: 2,
            tls_handshake_failures: 1,
        });
        worker.send(&beat.encode()).unwrap();
        let mut buffer = [0u8; MAX_DATAGRAM];
        let len = supervisor.recv(&mut buffer).unwrap().unwrap();
        assert_eq!(
            WorkerMessage::decode(&buffer[..len]),
            Ok(WorkerMessage::Ready)
        );
        let len = supervisor.recv(&mut buffer).unwrap().unwrap();
        assert_eq!(WorkerMessage::decode(&buffer[..len]), Ok(beat));
        let empty = supervisor.recv(&mut buffer).unwrap_err();
        assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);
        drop(worker);
        assert_eq!(supervisor.recv(&mut buffer).unwrap(), None);
        assert!(supervisor.send(b"x").is_err(), "no SIGPIPE, an error");
    }

    #[test]
    fn a_descriptor_travels_with_its_datagram() {
        use std::io::{Read, Seek, Write};
        let (supervisor, worker) = ControlSocket::pair().unwrap();
        let mut file = tempfile_with(b"pem bytes");
        file.seek(std::io::SeekFrom::Start(0)).unwrap();
        supervisor.send_with_fd(b"\x01\x42", file.as_fd()).unwrap();
        let mut buffer = [0u8; MAX_DATAGRAM];
        let (len, fd) = recv_with_fd(worker.as_fd(), &mut buffer).unwrap();
        assert_eq!(&buffer[..len], b"\x01\x42");
        let mut received = std::fs::File::from(fd.expect("the descriptor"));
        let mut text = String::new();
        received.read_to_string(&mut text).unwrap();
        assert_eq!(text, "pem bytes");
        file.write_all(b"!").unwrap();
        supervisor.send(b"\x01\x01").unwrap();
        let (_, none) = recv_with_fd(worker.as_fd(), &mut buffer).unwrap();
        assert!(none.is_none(), "a plain datagram carries none");
    }

    fn tempfile_with(bytes: &[u8]) -> std::fs::File {
        use std::io::Write;
        let path = std::env::temp_dir().join(format!("drover-fd-{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        file.write_all(bytes).unwrap();
        file
    }
}
