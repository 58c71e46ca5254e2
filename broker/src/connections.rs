//! A bound on the gRPC listener's open connections: each accepted
//! connection holds a permit until it closes, and a connection accepted
//! while `grpc.max_connections` are open is closed at once (logged, at
//! most once a second), so a client that opens connections in a loop
//! cannot exhaust the broker's memory or file descriptors. Streams per
//! connection, keepalive and request timeouts are set on the server
//! builder (`crate::server`).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// A connection counted against the limit until it is dropped.
#[derive(Debug)]
pub struct Counted {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Connected for Counted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// `incoming` with at most `max` connections open at once.
pub fn limit(
    incoming: impl Stream<Item = std::io::Result<TcpStream>> + Send + 'static,
    max: usize,
) -> impl Stream<Item = std::io::Result<Counted>> + Send + 'static {
    let permits = Arc::new(Semaphore::new(max));
    let last_warning = Arc::new(AtomicU64::new(0));
    incoming.filter_map(move |accepted| {
        let permits = permits.clone();
        let last_warning = last_warning.clone();
        async move {
            let stream = match accepted {
                Ok(s) => s,
                Err(e) => return Some(Err(e)),
            };
            match permits.try_acquire_owned() {
                Ok(permit) => Some(Ok(Counted {
                    stream,
                    _permit: permit,
                })),
                Err(_) => {
                    let now = crate::service::now_ms() as u64 / 1000;
                    if last_warning.swap(now, Ordering::Relaxed) != now {
                        tracing::warn!(
                            peer = ?stream.peer_addr().ok(),
                            max,
                            "refusing a gRPC connection: grpc.max_connections are open"
                        );
                    }
                    None
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_over_the_limit_are_closed_and_room_comes_back() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let mut limited = Box::pin(limit(incoming, 2));
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(TcpStream::connect(addr).await.expect("connect"));
        }
        let a = limited.next().await.expect("first").expect("ok");
        let _b = limited.next().await.expect("second").expect("ok");
        // The third is accepted and dropped: its client reads EOF.
        let mut third = clients.pop().expect("third");
        let pending = tokio::time::timeout(std::time::Duration::from_millis(200), limited.next());
        assert!(pending.await.is_err(), "no third connection is handed out");
        let mut buf = [0u8; 1];
        let n = tokio::io::AsyncReadExt::read(&mut third, &mut buf)
            .await
            .unwrap_or(0);
        assert_eq!(n, 0, "the refused connection is closed");
        // Closing one makes room for the next.
        drop(a);
        let _c = TcpStream::connect(addr).await.expect("connect");
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), limited.next())
            .await
            .expect("room again");
        assert!(next.expect("stream").is_ok());
    }
}
