//! The listening socket, with a listen queue long enough for a flood.
//!
//! While every place for connections before their hello is taken by young
//! ones, the accept loop waits (see `hello`), so a flood queues in the
//! kernel. With tokio's default queue of 1,024, a thousand reconnecting
//! connections keep it full, and an honest client's SYN is dropped and
//! retried only after 1, 3, 7, 15 s; with a longer queue it waits its turn
//! (a few seconds) instead.

use std::io;

use tokio::net::{TcpListener, TcpSocket};

/// The listen queue asked for; the kernel caps it at `net.core.somaxconn`
/// (4,096 on current Linux).
const LISTEN_BACKLOG: u32 = 4096;

/// Listens on `address` (`host:port`, a name resolved to its first
/// address that can be bound).
pub async fn listen(address: &str) -> io::Result<TcpListener> {
    let mut last_error = None;
    for resolved in tokio::net::lookup_host(address).await? {
        let socket = if resolved.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // As `TcpListener::bind` does: a silo restarted at once on its
        // address must not wait for the old connections' TIME_WAIT.
        socket.set_reuseaddr(true)?;
        match socket.bind(resolved) {
            Ok(()) => return socket.listen(LISTEN_BACKLOG),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{address} resolves to no address"),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listens_where_asked_and_accepts() {
        let listener = listen("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        assert!(address.ip().is_loopback());
        let (connected, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(address), listener.accept());
        assert_eq!(
            connected.unwrap().local_addr().unwrap(),
            accepted.unwrap().1
        );
    }

    #[tokio::test]
    async fn an_address_in_use_is_an_error() {
        let first = listen("127.0.0.1:0").await.unwrap();
        let taken = first.local_addr().unwrap().to_string();
        assert!(listen(&taken).await.is_err());
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_nothing_is_an_error() {
        assert!(listen("no-such-host.invalid:7000").await.is_err());
    }
}
