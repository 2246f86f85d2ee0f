//! Which already-open listeners [`Server::from_sockets`](crate::Server::from_sockets) adopts.

use std::io;

use drover_shared::Listener;

/// A listening socket the server can adopt.
pub trait IntoListener {
    /// Converts into the server's listener type (tokio listeners are
    /// deregistered from their runtime first).
    fn into_listener(self) -> io::Result<Listener>;
}

impl IntoListener for Listener {
    fn into_listener(self) -> io::Result<Listener> {
        Ok(self)
    }
}

impl IntoListener for std::net::TcpListener {
    fn into_listener(self) -> io::Result<Listener> {
        Ok(self.into())
    }
}

impl IntoListener for std::os::unix::net::UnixListener {
    fn into_listener(self) -> io::Result<Listener> {
        Ok(self.into())
    }
}

impl IntoListener for tokio::net::TcpListener {
    fn into_listener(self) -> io::Result<Listener> {
        self.into_std().map(Into::into)
    }
}

impl IntoListener for tokio::net::UnixListener {
    fn into_listener(self) -> io::Result<Listener> {
        self.into_std().map(Into::into)
    }
}
