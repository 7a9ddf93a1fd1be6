//! What one client may hold of the service before its signature is checked: a connection
//! out of `MAX_CONNECTIONS`, request headers of at most [`MAX_HEADER_BYTES`] that must
//! arrive within `HEADER_TIMEOUT`, and (in [`routes`](crate::http::routes)) one of
//! `MAX_CONCURRENT_REQUESTS` webhook requests, whose body must arrive within
//! `BODY_TIMEOUT`. poem's server closes connections idle for `IDLE_TIMEOUT`.
//!
//! Together they bound the memory anyone who can reach the port can make the service
//! hold, so a flood of slow uploads is refused instead of getting the pod killed with the
//! deliveries it was working on.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use poem::http::uri::Scheme;
use poem::listener::{Acceptor, TcpAcceptor};
use poem::web::{LocalAddr, RemoteAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// The most a request's line and headers may take: the senders' take about 1 KB.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// The most one read takes from the socket. hyper grows a connection's read buffer
/// while reads fill it, up to ~400 KiB; reads this small keep it at its first 8 KiB.
const READ_CHUNK: usize = 4 * 1024;

/// A TCP acceptor that refuses connections beyond its limit and guards each one it keeps.
pub struct LimitedAcceptor {
    inner: TcpAcceptor,
    connections: Arc<Semaphore>,
    limit: usize,
    header_timeout: Duration,
    refused: AtomicU64,
}

impl LimitedAcceptor {
    pub fn new(inner: TcpAcceptor, max_connections: usize, header_timeout: Duration) -> Self {
        Self {
            inner,
            connections: Arc::new(Semaphore::new(max_connections)),
            limit: max_connections,
            header_timeout,
            refused: AtomicU64::new(0),
        }
    }
}

impl Acceptor for LimitedAcceptor {
    type Io = Guarded;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Guarded, LocalAddr, RemoteAddr, Scheme)> {
        loop {
            let (io, local, remote, scheme) = self.inner.accept().await?;
            match self.connections.clone().try_acquire_owned() {
                Ok(permit) => {
                    let io = Guarded::new(io, permit, self.header_timeout);
                    return Ok((io, local, remote, scheme));
                }
                Err(_) => {
                    // Closed at once: a client waiting in the backlog would hold its
                    // sender's timeout for nothing.
                    let refused = self.refused.fetch_add(1, Ordering::Relaxed);
                    if refused.is_power_of_two() || refused == 0 {
                        tracing::warn!(
                            peer = %remote,
                            limit = self.limit,
                            refused = refused + 1,
                            "connection refused: MAX_CONNECTIONS are open"
                        );
                    }
                }
            }
        }
    }
}

/// Where a connection is in its current request, as far as headers go.
enum Phase {
    /// Between requests: the next byte read starts one.
    Idle,
    /// Reading a request's headers: `read` bytes so far, the last four in `tail`.
    Headers {
        read: usize,
        tail: u32,
        deadline: Pin<Box<Sleep>>,
    },
    /// Headers done; the body, then the response.
    Body,
    /// HTTP/2 with prior knowledge: its frames are not scanned; h2 limits its own headers.
    Http2,
}

const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// A connection that holds one of `MAX_CONNECTIONS` while open, and fails its reads once
/// a request's headers take longer than `HEADER_TIMEOUT` or more than [`MAX_HEADER_BYTES`].
pub struct Guarded {
    io: TcpStream,
    _permit: OwnedSemaphorePermit,
    header_timeout: Duration,
    phase: Phase,
    /// Bytes seen before the phase is known, to recognise the HTTP/2 preface.
    first: bool,
}

impl Guarded {
    fn new(io: TcpStream, permit: OwnedSemaphorePermit, header_timeout: Duration) -> Self {
        Self {
            io,
            _permit: permit,
            header_timeout,
            phase: Phase::Idle,
            first: true,
        }
    }

    /// Follows the bytes a read returned through the request's headers.
    fn scan(&mut self, bytes: &[u8]) -> io::Result<()> {
        if std::mem::take(&mut self.first) && bytes.starts_with(HTTP2_PREFACE) {
            self.phase = Phase::Http2;
        }
        if let Phase::Idle = self.phase {
            self.phase = Phase::Headers {
                read: 0,
                tail: 0,
                deadline: Box::pin(tokio::time::sleep(self.header_timeout)),
            };
        }
        let Phase::Headers { read, tail, .. } = &mut self.phase else {
            return Ok(());
        };
        for (i, &b) in bytes.iter().enumerate() {
            *tail = (*tail << 8) | u32::from(b);
            if *tail == u32::from_be_bytes(*b"\r\n\r\n") {
                *read += i + 1;
                self.phase = Phase::Body;
                return Ok(());
            }
        }
        *read += bytes.len();
        if *read > MAX_HEADER_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("request headers exceed {MAX_HEADER_BYTES} bytes"),
            ));
        }
        Ok(())
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Phase::Headers { deadline, .. } = &mut self.phase
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request headers not received within HEADER_TIMEOUT",
            )));
        }
        let mut chunk = [0u8; READ_CHUNK];
        let room = buf.remaining().min(READ_CHUNK);
        let mut limited = ReadBuf::new(&mut chunk[..room]);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut limited))?;
        let new = limited.filled();
        if !new.is_empty() {
            self.scan(new)?;
            buf.put_slice(new);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // The response has begun: the next bytes read are the next request's. An interim
        // `100 Continue` is not the response, its body is still to come.
        let interim = buf.starts_with(b"HTTP/1.1 1") || buf.starts_with(b"HTTP/1.0 1");
        if matches!(self.phase, Phase::Body | Phase::Headers { .. }) && !interim {
            self.phase = Phase::Idle;
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
