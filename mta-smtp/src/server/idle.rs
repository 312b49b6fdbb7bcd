//! A bound on how long any single read may wait, for the DATA phase: a client that stops
//! sending mid-message is dropped after `limits.command_timeout`, not only when the whole
//! `limits.data_timeout` has passed (RFC 5321 §4.5.3.2.5 has a per-block timeout for the
//! same reason). The whole phase is bounded separately by the connection loop.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep, sleep};

/// Wraps a buffered reader; a read that waits longer than `limit` for data fails with
/// [`io::ErrorKind::TimedOut`]. Each read that gets data (or the end) starts the clock again.
pub struct IdleLimit<'a, R> {
    inner: &'a mut R,
    limit: Duration,
    timer: Pin<Box<Sleep>>,
}

impl<'a, R: AsyncBufRead + Unpin> IdleLimit<'a, R> {
    /// Limits each read of `inner` to `limit`.
    pub fn new(inner: &'a mut R, limit: Duration) -> Self {
        IdleLimit {
            inner,
            limit,
            timer: Box::pin(sleep(limit)),
        }
    }
}

/// The error a stalled read ends with.
pub fn is_stalled(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::TimedOut
}

impl<R: AsyncBufRead + Unpin> AsyncBufRead for IdleLimit<'_, R> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let me = self.get_mut();
        match Pin::new(&mut *me.inner).poll_fill_buf(cx) {
            Poll::Ready(result) => {
                me.timer.as_mut().reset(Instant::now() + me.limit);
                Poll::Ready(result)
            }
            Poll::Pending => match me.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no data from the client within the read timeout",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        Pin::new(&mut *self.get_mut().inner).consume(amt);
    }
}

impl<R: AsyncBufRead + Unpin> AsyncRead for IdleLimit<'_, R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let available = match self.as_mut().poll_fill_buf(cx) {
            Poll::Ready(Ok(available)) => available,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        let n = available.len().min(buf.remaining());
        buf.put_slice(&available[..n]);
        self.consume(n);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, duplex};

    #[tokio::test]
    async fn a_stalled_read_fails_and_a_steady_one_does_not() {
        let (mut client, server) = duplex(64);
        let mut reader = BufReader::new(server);
        let limit = Duration::from_millis(300);
        let writer = tokio::spawn(async move {
            // Six lines, 100 ms apart: 500 ms in all, each wait far below the limit.
            for _ in 0..6 {
                client.write_all(b"line\r\n").await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            client // then silence, with the stream still open
        });
        let mut idle = IdleLimit::new(&mut reader, limit);
        let mut line = String::new();
        for _ in 0..6 {
            line.clear();
            idle.read_line(&mut line).await.unwrap();
            assert_eq!(line, "line\r\n");
        }
        let err = idle.read_line(&mut line).await.unwrap_err();
        assert!(is_stalled(&err), "{err}");
        drop(writer.await.unwrap());
    }
}
