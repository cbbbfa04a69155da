//! Limits every connection and request gets, whatever the instance: how
//! long a client may take to send headers and body or to take a response,
//! and how large the request line and headers may be.
//!
//! Two layers: hyper refuses what it cannot even parse into a request
//! (more than 100 header fields, or more than its read buffer, ~400 KiB,
//! of request head: a bare 431 or 414, then the connection closes); requests
//! it parsed are checked against the tighter [`MAX_URI_BYTES`] and
//! [`MAX_HEADER_BYTES`] here and get an OCI error.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::Request;
use hyper::body::{Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::oci::RegistryError;

/// Longest request target (path and query). The longest legitimate one
/// (a 255-character name, a digest, a `last=` or `from=` name) is far
/// shorter.
pub const MAX_URI_BYTES: usize = 8 << 10;
/// Largest request head: request line and every header line.
pub const MAX_HEADER_BYTES: usize = 64 << 10;

/// Refuses a request whose target or headers are larger than allowed.
pub fn check_request(req: &Request<Body>) -> Result<(), RegistryError> {
    let uri = req.uri();
    let target = uri.path_and_query().map_or(0, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    if target > MAX_URI_BYTES {
        return Err(RegistryError::UriTooLong(format!(
            "the request target has {target} bytes; at most {MAX_URI_BYTES} are accepted"
        )));
    }
    // "Name: value\r\n" per field, plus the request line.
    let head = target
        + req
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    if head > MAX_HEADER_BYTES {
        return Err(RegistryError::HeadersTooLarge(format!(
            "the request headers have {head} bytes; at most {MAX_HEADER_BYTES} are accepted"
        )));
    }
    Ok(())
}

/// The HTTP/1.1 + h2 connection builder: headers must arrive within
/// `header_timeout` (which also closes idle keep-alive connections), and the
/// head sizes are bounded as described above.
pub fn connection_builder(header_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    builder
}

/// The error a stalled request body ends with.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no data for {}", humantime::format_duration(*.0))]
pub struct BodyStalled(pub Duration);

/// A request body that fails with [`BodyStalled`] when the client sends
/// nothing for `timeout` while the server waits for it. Time the server
/// spends elsewhere (writing, hashing, waiting for a lock) does not count.
pub struct IdleTimeout {
    inner: Body,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    /// Whether the last poll was left waiting for the client (the deadline
    /// is armed).
    waiting: bool,
}

/// `inner` with an [`IdleTimeout`] (bodies already at their end as they are).
pub fn idle_timeout(inner: Body, timeout: Duration) -> Body {
    if hyper::body::Body::is_end_stream(&inner) {
        return inner;
    }
    Body::new(IdleTimeout {
        inner,
        timeout,
        sleep: Box::pin(tokio::time::sleep(timeout)),
        waiting: false,
    })
}

impl hyper::body::Body for IdleTimeout {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if !this.waiting {
            this.sleep.as_mut().reset(Instant::now() + this.timeout);
            this.waiting = true;
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(BodyStalled(this.timeout).into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection whose writes fail with `TimedOut` once the client has taken
/// no data for `timeout` while the server had some to send: a client that
/// stops reading a download does not hold its connection, file and buffers
/// for ever. Time with nothing to send does not count.
pub struct WriteTimeout<I> {
    io: I,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    /// Whether the last write was left waiting (the deadline is armed).
    stalled: bool,
}

impl<I> WriteTimeout<I> {
    pub fn new(io: I, timeout: Duration) -> Self {
        WriteTimeout {
            io,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            stalled: false,
        }
    }

    /// After a write: progress disarms the deadline, waiting arms it.
    fn check<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.stalled = false;
            return r;
        }
        if !self.stalled {
            self.stalled = true;
            self.sleep.as_mut().reset(Instant::now() + self.timeout);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client took no data for {}",
                    humantime::format_duration(self.timeout)
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteTimeout<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.check(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.check(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.check(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn request(path: &str, headers: &[(&str, String)]) -> Request<Body> {
        let mut b = Request::builder().uri(path);
        for (k, v) in headers {
            b = b.header(*k, v);
        }
        b.body(Body::empty()).unwrap()
    }

    #[test]
    fn sizes() {
        assert!(check_request(&request("/v2/", &[])).is_ok());
        let long = format!("/v2/{}", "a".repeat(MAX_URI_BYTES));
        assert!(matches!(
            check_request(&request(&long, &[])),
            Err(RegistryError::UriTooLong(_))
        ));
        let big = "x".repeat(MAX_HEADER_BYTES / 2);
        let two = [("a", big.clone()), ("b", big.clone())];
        assert!(matches!(
            check_request(&request("/v2/", &two)),
            Err(RegistryError::HeadersTooLarge(_))
        ));
        assert!(check_request(&request("/v2/", &two[..1])).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn stalled_body_fails_and_flowing_body_does_not() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Bytes, std::io::Error>>();
        let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        });
        let mut body = idle_timeout(Body::from_stream(chunks), Duration::from_secs(5));
        tx.send(Ok(Bytes::from_static(b"abc"))).unwrap();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "abc");
        // Time passing while nobody reads the body does not count.
        tokio::time::advance(Duration::from_secs(60)).await;
        tx.send(Ok(Bytes::from_static(b"de"))).unwrap();
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "de"
        );
        // Nothing arrives: the paused clock runs ahead to the deadline.
        let err = body.frame().await.unwrap().unwrap_err();
        assert_eq!(err.to_string(), "the client sent no data for 5s");
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn stalled_writes_fail_and_slow_reads_do_not() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (server, mut client) = tokio::io::duplex(1024);
        let mut server = WriteTimeout::new(server, Duration::from_secs(5));
        let data = vec![7u8; 4096];
        // A client that reads, slowly, keeps the connection.
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(3)).await;
                client.read_exact(&mut buf[..1024]).await.unwrap();
            }
            client
        });
        server.write_all(&data).await.unwrap();
        let client = reader.await.unwrap();
        // A client that stops reading loses it after the timeout.
        let err = tokio::time::timeout(Duration::from_secs(60), server.write_all(&data))
            .await
            .expect("the write must fail by itself")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(err.to_string(), "the client took no data for 5s");
        drop(client);
    }
}
