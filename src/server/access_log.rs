//! The access log: one line per request (target `access`), written when
//! its response has been sent or given up on, with the bytes of the request
//! body received, the bytes of the response body sent, and the time from
//! the request's head to that moment in milliseconds to the microsecond.
//!
//! Owns counting those bytes and writing that line (and handing the same
//! facts to the metrics). Must not decide what a
//! request is answered (`handler`) nor touch connections (`listen`).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{Method, Request, Response};
use hyper::body::{Frame, SizeHint};

use super::metrics::{Ended, Metrics};

/// Bytes of a request body read so far (also those read and dropped after
/// an early answer).
#[derive(Clone, Default)]
pub(super) struct Received(Arc<AtomicU64>);

/// The body of `req`, counted into the returned [`Received`].
pub(super) fn count_received(req: Request<Body>) -> (Request<Body>, Received) {
    let received = Received::default();
    let counter = received.0.clone();
    let req = req.map(|inner| {
        Body::new(Counted {
            inner,
            counter,
            line: None,
        })
    });
    (req, received)
}

/// A body whose data frames are counted as they pass; a response body
/// writes its request's access line, with that count, when dropped.
struct Counted {
    inner: Body,
    counter: Arc<AtomicU64>,
    line: Option<(Entry, u16, tracing::Span)>,
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &frame {
            if let Some(data) = f.data_ref() {
                this.counter.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What the access line of one request says besides its byte counts.
pub(super) struct Entry {
    pub instance: Option<String>,
    /// The user the request was authenticated as, or the name a refused
    /// login gave.
    pub user: Option<String>,
    pub method: Method,
    pub path: String,
    pub started: Instant,
    pub received: Received,
    /// Where the request is counted once it ends, if anywhere.
    pub metrics: Option<Arc<Metrics>>,
}

/// `resp`, whose body writes the access line of `entry` once it has been
/// sent (or dropped unsent: a HEAD, a client gone), in the current span.
pub(super) fn when_sent(resp: Response<Body>, entry: Entry) -> Response<Body> {
    let status = resp.status().as_u16();
    let span = tracing::Span::current();
    resp.map(|inner| {
        Body::new(Counted {
            inner,
            counter: Arc::default(),
            line: Some((entry, status, span)),
        })
    })
}

/// Milliseconds to the microsecond (a float of more digits only looks
/// more precise).
pub(super) fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

impl Drop for Counted {
    fn drop(&mut self) {
        let Some((entry, status, span)) = self.line.take() else {
            return;
        };
        let _in_span = span.enter();
        let (received, sent) = (
            entry.received.0.load(Ordering::Relaxed),
            self.counter.load(Ordering::Relaxed),
        );
        let elapsed = entry.started.elapsed();
        if let (Some(instance), Some(metrics)) = (&entry.instance, &entry.metrics) {
            metrics.request(&Ended {
                instance,
                method: &entry.method,
                path: &entry.path,
                status,
                received,
                sent,
                seconds: elapsed.as_secs_f64(),
            });
        }
        tracing::info!(
            target: "access",
            instance = entry.instance.as_deref().unwrap_or("-"),
            user = entry.user.as_deref().unwrap_or("-"),
            method = %entry.method,
            path = entry.path,
            status,
            bytes_in = received,
            bytes_out = sent,
            duration_ms = millis(elapsed),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::millis;
    use std::time::Duration;

    #[test]
    fn durations_have_at_most_three_decimals() {
        for (d, text) in [
            (Duration::from_nanos(53_100_999), "53.101"),
            (Duration::from_nanos(53_100), "0.053"),
            (Duration::from_micros(52_100), "52.1"),
            (Duration::from_secs(2), "2000"),
        ] {
            assert_eq!(millis(d).to_string(), text);
        }
    }
}
