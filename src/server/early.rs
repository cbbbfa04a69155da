//! Answers given before the request body was read (a `401` challenge, a
//! `403`, a `413`, any error found from the headers): the connection must
//! stay usable for the next request, or the client must be told it is not.
//!
//! HTTP/1.1 has no way to skip the rest of a body but to read it. So after
//! such an answer, a small rest (at most [`DRAIN_BYTES`], arriving within
//! [`DRAIN_TIME`]) is read and dropped and the connection is kept; a larger
//! or unknown rest, or one the client only sends after `100 Continue`
//! (which an early answer never sends), gets `Connection: close` on the
//! answer. When the connection then closes, [`Lingering`] shuts down the
//! sending side first and keeps reading for up to [`LINGER_TIME`]: closing
//! a socket with unread data makes the kernel send a reset, which can
//! destroy the answer before the client has read it.
//!
//! HTTP/2 needs none of this: a stream whose body is not read is reset on
//! its own, and the connection goes on.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, Request, Response, Version};
use hyper::body::{Body as _, Frame, SizeHint};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// The largest rest of a body that is read to keep the connection (what
/// Go's server reads, too).
pub const DRAIN_BYTES: u64 = 256 << 10;
/// How long reading that rest may take.
pub const DRAIN_TIME: Duration = Duration::from_secs(2);
/// How long a closing connection keeps reading what the client still sends.
pub const LINGER_TIME: Duration = Duration::from_secs(5);

struct Shared {
    body: Body,
    /// Whether the handler asked for body data (which sends `100 Continue`).
    polled: bool,
    ended: bool,
}

/// The request body as the handler sees it; [`Unread`] keeps hold of it.
struct Tracked(Arc<Mutex<Shared>>);

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut s = self.0.lock();
        s.polled = true;
        let frame = ready!(Pin::new(&mut s.body).poll_frame(cx));
        if frame.is_none() {
            s.ended = true;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.0.lock().body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.lock().body.size_hint()
    }
}

/// What is left of an HTTP/1 request's body once its answer is ready.
pub struct Unread {
    shared: Arc<Mutex<Shared>>,
    expects_continue: bool,
}

/// Hands the body of `req` to the handler through a tracker; `None` for
/// requests without a body and for HTTP/2.
pub fn track(req: Request<Body>) -> (Request<Body>, Option<Unread>) {
    if req.version() >= Version::HTTP_2 || hyper::body::Body::is_end_stream(req.body()) {
        return (req, None);
    }
    let expects_continue = req
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let (parts, body) = req.into_parts();
    let shared = Arc::new(Mutex::new(Shared {
        body,
        polled: false,
        ended: false,
    }));
    let req = Request::from_parts(parts, Body::new(Tracked(shared.clone())));
    let unread = Unread {
        shared,
        expects_continue,
    };
    (req, Some(unread))
}

impl Unread {
    /// Whether the body was read to its end.
    fn ended(&self) -> bool {
        let s = self.shared.lock();
        s.ended || s.body.is_end_stream()
    }

    /// Reads a small rest of the body, or marks `resp` as the connection's
    /// last.
    pub async fn settle(self, resp: &mut Response<Body>) {
        if self.ended() || self.drain().await {
            return;
        }
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }

    /// Whether the rest was small enough and came in time.
    async fn drain(&self) -> bool {
        let (rest, polled) = {
            let s = self.shared.lock();
            (s.body.size_hint().upper(), s.polled)
        };
        if (self.expects_continue && !polled) || rest.is_none_or(|n| n > DRAIN_BYTES) {
            return false;
        }
        let read_all = async {
            loop {
                let frame = std::future::poll_fn(|cx| {
                    Pin::new(&mut self.shared.lock().body).poll_frame(cx)
                })
                .await;
                match frame {
                    None => return true,
                    Some(Ok(_)) => {}
                    Some(Err(_)) => return false,
                }
            }
        };
        tokio::time::timeout(DRAIN_TIME, read_all)
            .await
            .unwrap_or(false)
    }
}

/// A connection that, when closed, stops sending and reads (and drops)
/// what the client still sends for up to [`LINGER_TIME`], so that the
/// client reads the last answer before it sees the connection end.
pub struct Lingering<I> {
    io: I,
    /// Set once the sending side is shut down.
    linger: Option<Pin<Box<Sleep>>>,
}

impl<I> Lingering<I> {
    pub fn new(io: I) -> Self {
        Lingering { io, linger: None }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Lingering<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lingering<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.linger.is_none() {
            ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            this.linger = Some(Box::pin(tokio::time::sleep(LINGER_TIME)));
        }
        let mut buf = [0u8; 16 << 10];
        loop {
            if this
                .linger
                .as_mut()
                .is_some_and(|s| s.as_mut().poll(cx).is_ready())
            {
                return Poll::Ready(Ok(()));
            }
            let mut read = ReadBuf::new(&mut buf);
            match ready!(Pin::new(&mut this.io).poll_read(cx, &mut read)) {
                Ok(()) if !read.filled().is_empty() => continue,
                // The client closed (or broke) its side: done.
                _ => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn lingering_reads_until_the_client_closes_or_time_is_up() {
        let (server, mut client) = tokio::io::duplex(64);
        let mut server = Lingering::new(server);
        let writer = tokio::spawn(async move {
            // More than the pipe holds: only a reading server lets it through.
            client.write_all(&[1u8; 4096]).await.unwrap();
            let mut end = Vec::new();
            client.read_to_end(&mut end).await.unwrap();
            assert!(end.is_empty(), "the server only shut down");
        });
        server.shutdown().await.unwrap();
        writer.await.unwrap();

        let (server, _client) = tokio::io::duplex(64);
        let mut server = Lingering::new(server);
        // A client that sends nothing and keeps its side open: time ends it.
        tokio::time::timeout(LINGER_TIME * 2, server.shutdown())
            .await
            .expect("lingering is bounded")
            .unwrap();
    }
}
