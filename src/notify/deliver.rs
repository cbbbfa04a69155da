//! Sends one endpoint's queue, oldest event first, one event per request in
//! Distribution's envelope; an event leaves the queue only on a `2xx`.
//! Failures back off exponentially (1 s to a minute), logged once per
//! streak rather than per attempt.

use std::sync::Arc;
use std::time::Duration;

use super::{Endpoint, Queue};

/// Content type of Distribution's notifications.
pub const ENVELOPE: &str = "application/vnd.docker.distribution.events.v2+json";
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Delivers `queue` to `endpoint` until aborted.
pub(super) async fn run(instance: String, endpoint: Endpoint, queue: Arc<Queue>) {
    let client = match reqwest::Client::builder().timeout(endpoint.timeout).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(instance, url = endpoint.url, "webhook client: {e}");
            return;
        }
    };
    let mut backoff = FIRST_BACKOFF;
    let mut failing = false;
    loop {
        let woken = queue.wake.notified();
        let next = match queue.next() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(
                    instance,
                    url = endpoint.url,
                    "webhook queue unreadable: {e}"
                );
                tokio::time::sleep(MAX_BACKOFF).await;
                continue;
            }
        };
        let Some((event, after)) = next else {
            woken.await;
            continue;
        };
        let mut req = client
            .post(&endpoint.url)
            .header(reqwest::header::CONTENT_TYPE, ENVELOPE)
            .body(format!("{{\"events\":[{event}]}}"));
        for (k, v) in &endpoint.headers {
            req = req.header(k, v);
        }
        let outcome = match req.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("answered {}", r.status())),
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) => {
                if std::mem::take(&mut failing) {
                    tracing::info!(
                        instance,
                        url = endpoint.url,
                        "webhook endpoint takes events again"
                    );
                }
                backoff = FIRST_BACKOFF;
                if let Err(e) = queue.ack(after) {
                    tracing::warn!(instance, url = endpoint.url, "webhook queue: {e}");
                }
            }
            Err(why) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(
                        instance,
                        url = endpoint.url,
                        "webhook not delivered ({why}); retrying with backoff, events wait on disk"
                    );
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
