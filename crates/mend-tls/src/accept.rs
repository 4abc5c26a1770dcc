//! The server side of every agent connection: accept TCP, bound the number
//! of connections, finish the TLS handshake within a deadline (so idle or
//! garbage connections cost a task for at most that long), parse the
//! caller's identity once, and hand tonic a stream of ready connections.
//!
//! Each connection carries a [`ConnInfo`] that tonic puts into the
//! extensions of every request made on it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

use crate::identity::Identity;
use crate::reload::TlsSource;

/// Default most connections open at once (TLS handshakes in progress
/// included). Each costs a task and its buffers (tens of KiB).
pub const CONNECTIONS_MAX_DEFAULT: usize = 1024;

/// Default deadline of the TLS handshake, in ms: a connection that has not
/// finished it by then is closed.
pub const TLS_HANDSHAKE_TIMEOUT_MS_DEFAULT: u64 = 5_000;

/// Depth of the queue of handshaken connections waiting for tonic.
const READY_DEPTH: usize = 64;

/// How the server accepts connections.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Mutual TLS with the current set of `TlsSource`.
    Tls(Arc<TlsSource>),
    /// Plaintext (loopback only; the caller has no identity).
    Plaintext,
}

/// Limits of the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct AcceptLimits {
    /// Most connections open at once; further ones are closed at accept.
    pub connections_max: usize,
    /// Deadline of the TLS handshake.
    pub handshake_timeout: Duration,
}

impl Default for AcceptLimits {
    fn default() -> Self {
        AcceptLimits {
            connections_max: CONNECTIONS_MAX_DEFAULT,
            handshake_timeout: Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS_DEFAULT),
        }
    }
}

/// Why a connection was closed before serving anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `connections_max` connections were already open.
    ConnectionsMax,
    /// The TLS handshake failed (no client certificate, another CA,
    /// garbage bytes, a protocol error).
    Handshake,
    /// The TLS handshake did not finish within its deadline.
    HandshakeTimeout,
    /// The client certificate's names could not be parsed.
    BadIdentity,
}

impl Refusal {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::ConnectionsMax => "connections_max",
            Refusal::Handshake => "tls_handshake",
            Refusal::HandshakeTimeout => "tls_handshake_timeout",
            Refusal::BadIdentity => "bad_identity",
        }
    }
}

/// What every request on a connection knows about its caller.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The caller's address.
    pub remote: Option<SocketAddr>,
    /// The caller's certificate identity; `None` on a plaintext connection.
    pub identity: Option<Arc<Identity>>,
}

/// A served connection: plaintext or TLS, holding its connection permit.
pub struct Conn {
    io: Io,
    info: ConnInfo,
    _permit: OwnedSemaphorePermit,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
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

/// A stream of ready connections for `serve_with_incoming`.
pub type Incoming = tokio_stream::wrappers::ReceiverStream<Result<Conn, io::Error>>;

/// Accepts on `listener` until the returned stream is dropped. `on_refuse`
/// is told of every connection closed before serving.
pub fn incoming(
    listener: TcpListener,
    mode: Mode,
    limits: AcceptLimits,
    on_refuse: impl Fn(Refusal) + Send + Sync + 'static,
) -> Incoming {
    let (tx, rx) = mpsc::channel(READY_DEPTH);
    let permits = Arc::new(Semaphore::new(limits.connections_max));
    let on_refuse = Arc::new(on_refuse);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                on_refuse(Refusal::ConnectionsMax);
                drop(tcp);
                continue;
            };
            // Nagle off: the exchange is a chain of small request/response
            // messages, and delayed ACKs would add ~40 ms to each round trip.
            let _ = tcp.set_nodelay(true);
            let tx = tx.clone();
            let mode = mode.clone();
            let on_refuse = on_refuse.clone();
            tokio::spawn(async move {
                match ready(tcp, remote, mode, limits.handshake_timeout).await {
                    Ok((io, identity)) => {
                        let conn = Conn {
                            io,
                            info: ConnInfo {
                                remote: Some(remote),
                                identity,
                            },
                            _permit: permit,
                        };
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Err(r) => on_refuse(r),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn ready(
    tcp: TcpStream,
    remote: SocketAddr,
    mode: Mode,
    timeout: Duration,
) -> Result<(Io, Option<Arc<Identity>>), Refusal> {
    let src = match mode {
        Mode::Plaintext => return Ok((Io::Plain(tcp), None)),
        Mode::Tls(src) => src,
    };
    let acceptor = TlsAcceptor::from(src.current().server.clone());
    let tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Err(_) => return Err(Refusal::HandshakeTimeout),
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "TLS handshake failed");
            return Err(Refusal::Handshake);
        }
        Ok(Ok(t)) => t,
    };
    // The verifier required a client certificate, so there is one.
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or(Refusal::Handshake)?;
    let identity = Identity::from_der(leaf).map_err(|e| {
        tracing::warn!(%remote, error = %e, "client certificate names refused");
        Refusal::BadIdentity
    })?;
    Ok((Io::Tls(Box::new(tls)), Some(Arc::new(identity))))
}
