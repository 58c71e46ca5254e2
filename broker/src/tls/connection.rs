//! [`Connection`]: an accepted stream, plain or TLS, with who is on the
//! other end. The gRPC server serves it (tonic puts its [`PeerIdentity`]
//! in every request's extensions), axum serves it on the admin endpoint,
//! and each Kafka connection task reads and writes one.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

use super::PeerIdentity;

/// An accepted connection, plain or TLS.
#[derive(Debug)]
pub struct Connection<S> {
    io: Io<S>,
    peer: PeerIdentity,
}

#[derive(Debug)]
enum Io<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
}

impl<S> Connection<S> {
    /// A connection without TLS from `peer`.
    pub fn plain(stream: S, peer: std::net::SocketAddr) -> Self {
        Connection {
            io: Io::Plain(stream),
            peer: PeerIdentity {
                addr: peer,
                tls_principal: None,
            },
        }
    }

    /// A TLS connection from `peer`, with the principal its verified
    /// client certificate names.
    pub fn tls(
        stream: TlsStream<S>,
        peer: std::net::SocketAddr,
        tls_principal: Option<String>,
    ) -> Self {
        Connection {
            io: Io::Tls(Box::new(stream)),
            peer: PeerIdentity {
                addr: peer,
                tls_principal,
            },
        }
    }

    /// Who is on the other end.
    pub fn peer(&self) -> &PeerIdentity {
        &self.peer
    }
}

impl<S> Connected for Connection<S> {
    type ConnectInfo = PeerIdentity;

    fn connect_info(&self) -> PeerIdentity {
        self.peer.clone()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Connection<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Connection<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}
