//! A plain TCP connection's socket, shared between hyper, which serves the
//! connection, and the writers of a player on it.
//!
//! A WebSocket-FLV player takes the socket out of hyper's upgrade
//! ([`crate::live::egress::PlayerIo`]). An HTTP-FLV player cannot: hyper owns the
//! connection until the response ends. So hyper serves every plain TCP connection
//! through a [`SharedTcp`], and an HTTP-FLV player's response body asks hyper for
//! the socket with a [`Handoff`]: once hyper has written the response head and has
//! nothing of its own left to write, the player's task and the stream's writer
//! shards write the body's chunks to the socket themselves, one vectored write per
//! batch, without waking hyper's connection task. At the end the task gives the
//! socket back between two chunks and ends the body; hyper writes the last chunk.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// A plain TCP socket that hyper reads and writes through, and that a player's
/// writers may share ([`Handoff`]).
#[derive(Clone, Debug)]
pub struct SharedTcp {
    socket: Arc<TcpStream>,
    handoff: Arc<Handoff>,
}

impl SharedTcp {
    /// Wraps an accepted connection.
    pub fn new(socket: TcpStream) -> SharedTcp {
        SharedTcp {
            socket: Arc::new(socket),
            handoff: Arc::default(),
        }
    }

    /// The socket.
    pub fn socket(&self) -> &Arc<TcpStream> {
        &self.socket
    }

    /// How a response body takes the socket over from hyper.
    pub fn handoff(&self) -> &Arc<Handoff> {
        &self.handoff
    }
}

/// Who writes a connection's bytes: hyper, or an HTTP-FLV player's writers.
///
/// hyper writes until a response body asks for the socket ([`Handoff::want`]).
/// The body then reports each time it has nothing to give hyper
/// ([`Handoff::body_idle`]); hyper polls the body only after it has buffered the
/// response head, and flushes only whole chunks. hyper calls the socket's flush
/// only once its write buffer is empty, so the first flush after the body went
/// idle means every byte hyper had was written: the socket is the player's
/// ([`Handoff::taken`]) until it gives it back ([`Handoff::give_back`]).
#[derive(Debug, Default)]
pub struct Handoff {
    state: AtomicU8,
    taken: Notify,
}

/// hyper writes.
const HYPER: u8 = 0;
/// A body asked for the socket; hyper may still be writing the head.
const WANTED: u8 = 1;
/// The body has nothing for hyper; at the next flush hyper is done.
const IDLE: u8 = 2;
/// The player's writers write.
const TAKEN: u8 = 3;

impl Handoff {
    /// A response body asks for the socket (before hyper polls it).
    pub fn want(&self) {
        let _ = self
            .state
            .compare_exchange(HYPER, WANTED, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The body that asked has nothing to give hyper now.
    pub fn body_idle(&self) {
        let _ = self
            .state
            .compare_exchange(WANTED, IDLE, Ordering::AcqRel, Ordering::Acquire);
    }

    /// hyper flushed with an empty write buffer.
    fn flushed(&self) {
        if self
            .state
            .compare_exchange(IDLE, TAKEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.taken.notify_one();
        }
    }

    /// Resolves once the socket is the player's.
    pub async fn taken(&self) {
        loop {
            let notified = self.taken.notified();
            if self.state.load(Ordering::Acquire) == TAKEN {
                return;
            }
            notified.await;
        }
    }

    /// The player wrote its last whole chunk: hyper writes again (the body's end).
    pub fn give_back(&self) {
        self.state.store(HYPER, Ordering::Release);
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        read_shared(&self.socket, cx, buf)
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        write_shared(&self.socket, cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        write_shared(&self.socket, cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // A TCP socket has nothing to flush; hyper flushing is the handoff's signal.
        self.handoff.flushed();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(shutdown_write(&self.socket))
    }
}

/// Reads from a socket shared by reference.
pub(crate) fn read_shared(
    socket: &TcpStream,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<std::io::Result<()>> {
    loop {
        ready!(socket.poll_read_ready(cx))?;
        match socket.try_read(buf.initialize_unfilled()) {
            Ok(n) => {
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

/// Writes to a socket shared by reference.
pub(crate) fn write_shared(
    socket: &TcpStream,
    cx: &mut Context<'_>,
    bufs: &[IoSlice<'_>],
) -> Poll<std::io::Result<usize>> {
    loop {
        ready!(socket.poll_write_ready(cx))?;
        match socket.try_write_vectored(bufs) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            done => return Poll::Ready(done),
        }
    }
}

/// Shuts down the sending side of a socket shared by reference.
pub(crate) fn shutdown_write(socket: &TcpStream) -> std::io::Result<()> {
    socket2::SockRef::from(socket).shutdown(std::net::Shutdown::Write)
}

/// Writes all of `bufs` to a socket shared by reference.
pub(crate) async fn write_all_shared(
    socket: &TcpStream,
    mut bufs: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    while !bufs.is_empty() {
        let n = bufs.len().min(crate::live::writer::MAX_IOVECS);
        let written = std::future::poll_fn(|cx| write_shared(socket, cx, &bufs[..n])).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, written);
    }
    Ok(())
}
