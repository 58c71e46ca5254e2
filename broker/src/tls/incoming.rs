//! [`Incoming`]: the connections a listener hands to its server, plain or
//! TLS. With TLS, a task takes the accepted streams and runs each
//! handshake in a task of its own (bounded by the handshake timeout), so a
//! slow or bogus client never holds up the others; finished handshakes
//! queue for the server. The task ends when the server drops the
//! [`Incoming`] (shutdown), and with it the listener.
//!
//! [`Incoming`] is both the stream of connections tonic serves and an axum
//! `Listener`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::{Connection, TlsAcceptor};

/// Handshaked connections waiting for the server to take them.
const READY_QUEUE: usize = 64;

/// The connections of one listener, ready to serve.
pub struct Incoming<S> {
    inner: BoxStream<'static, std::io::Result<Connection<S>>>,
    local_addr: SocketAddr,
    listener: &'static str,
}

impl<S> std::fmt::Debug for Incoming<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("local_addr", &self.local_addr)
            .field("listener", &self.listener)
            .finish()
    }
}

/// The peer address of an accepted stream (unspecified when unknown).
fn peer_of<S: Connected<ConnectInfo = TcpConnectInfo>>(stream: &S) -> SocketAddr {
    stream
        .connect_info()
        .remote_addr()
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// The connections of `accepted` (bound at `local_addr`), through `tls`
/// when it is set; `listener` names the listener in logs.
pub fn incoming<S>(
    accepted: impl Stream<Item = std::io::Result<S>> + Send + 'static,
    tls: Option<Arc<TlsAcceptor>>,
    local_addr: SocketAddr,
    listener: &'static str,
) -> Incoming<S>
where
    S: AsyncRead + AsyncWrite + Connected<ConnectInfo = TcpConnectInfo> + Send + Unpin + 'static,
{
    let inner = match tls {
        None => accepted
            .map(|r| {
                r.map(|s| {
                    let peer = peer_of(&s);
                    Connection::plain(s, peer)
                })
            })
            .boxed(),
        Some(acceptor) => {
            let (tx, rx) = mpsc::channel(READY_QUEUE);
            tokio::spawn(handshake_all(accepted, acceptor, tx, listener));
            ReceiverStream::new(rx).boxed()
        }
    };
    Incoming {
        inner,
        local_addr,
        listener,
    }
}

/// Starts a handshake for every accepted stream until the server is gone.
async fn handshake_all<S>(
    accepted: impl Stream<Item = std::io::Result<S>> + Send + 'static,
    acceptor: Arc<TlsAcceptor>,
    tx: mpsc::Sender<std::io::Result<Connection<S>>>,
    listener: &'static str,
) where
    S: AsyncRead + AsyncWrite + Connected<ConnectInfo = TcpConnectInfo> + Send + Unpin + 'static,
{
    let mut accepted = std::pin::pin!(accepted);
    loop {
        let next = tokio::select! {
            next = accepted.next() => next,
            () = tx.closed() => return,
        };
        let stream = match next {
            None => return,
            Some(Err(e)) => {
                if tx.send(Err(e)).await.is_err() {
                    return;
                }
                continue;
            }
            Some(Ok(stream)) => stream,
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let peer = peer_of(&stream);
            match acceptor.accept(stream).await {
                Ok((tls, principal)) => {
                    let _ = tx.send(Ok(Connection::tls(tls, peer, principal))).await;
                }
                Err(e) => log_failed_handshake(listener, peer, &e),
            }
        });
    }
}

/// Logs a failed handshake: a certificate problem (a client that is
/// misconfigured, or not allowed in) as a warning, the rest (scanners,
/// clients that went away) at debug.
pub fn log_failed_handshake(listener: &'static str, peer: SocketAddr, e: &std::io::Error) {
    let certificate_problem = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|tls| {
            matches!(
                tls,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            )
        });
    if certificate_problem {
        tracing::warn!(listener, %peer, error = %e, "TLS handshake failed: the client's certificate is missing or not accepted; closing the connection");
    } else {
        tracing::debug!(listener, %peer, error = %e, "TLS handshake failed; closing the connection");
    }
}

impl<S> Stream for Incoming<S> {
    type Item = std::io::Result<Connection<S>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl<S> axum::serve::Listener for Incoming<S>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Io = Connection<S>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection<S>, SocketAddr) {
        loop {
            match self.inner.next().await {
                Some(Ok(connection)) => {
                    let addr = connection.peer().addr;
                    return (connection, addr);
                }
                Some(Err(e)) => {
                    // Out of file descriptors, most likely: let some close.
                    tracing::warn!(listener = self.listener, error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}
