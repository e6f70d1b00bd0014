//! A connection that ends when its peer stalls: a write that makes no
//! progress for `write_stall` (a client that does not read its response), or
//! no byte either way for `idle` (an idle keep-alive connection).
use std::{
    future::Future as _,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{sleep, Sleep},
};

pub struct Watchdog<T> {
    io: T,
    write_stall: Duration,
    idle: Duration,
    write_timer: Option<Pin<Box<Sleep>>>,
    read_timer: Option<Pin<Box<Sleep>>>,
}

impl<T> Watchdog<T> {
    pub fn new(io: T, write_stall: Duration, idle: Duration) -> Self {
        Self {
            io,
            write_stall,
            idle,
            write_timer: None,
            read_timer: None,
        }
    }
}

/// Arms `timer` on the first Pending, and reports whether it has expired.
fn expired(timer: &mut Option<Pin<Box<Sleep>>>, after: Duration, cx: &mut Context<'_>) -> bool {
    timer
        .get_or_insert_with(|| Box::pin(sleep(after)))
        .as_mut()
        .poll(cx)
        .is_ready()
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_owned())
}

impl<T: AsyncRead + Unpin> AsyncRead for Watchdog<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending => {
                if expired(&mut this.read_timer, this.idle, cx) {
                    return Poll::Ready(Err(timed_out("idle connection")));
                }
                Poll::Pending
            }
            ready => {
                this.read_timer = None;
                ready
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> Watchdog<T> {
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match op(Pin::new(&mut self.io), cx) {
            Poll::Pending => {
                if expired(&mut self.write_timer, self.write_stall, cx) {
                    return Poll::Ready(Err(timed_out("the client does not read")));
                }
                Poll::Pending
            }
            ready => {
                // Progress: a client reading a long response is not idle.
                self.write_timer = None;
                self.read_timer = None;
                ready
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watchdog<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.watch(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.watch(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.watch(cx, AsyncWrite::poll_flush)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.watch(cx, AsyncWrite::poll_shutdown)
    }
}
