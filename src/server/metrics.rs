//! The metrics the admin listener's `/metrics` serves, in the Prometheus
//! text format (prometheus-client), labelled by instance as
//! `registry="NAME"` (Prometheus sets `instance` to the scrape target
//! itself). Requests are counted as they end ([`Metrics::request`]: by
//! method, route class and status, with a latency histogram and the bytes
//! received and sent), while an admin listener is configured (without one
//! nothing reads them, and requests cost nothing more); everything else is
//! read when scraped from what the process already keeps — each
//! instance's usage as last measured (never a walk of the store), its
//! upload sessions open, its certificate's end and failed ACME orders, its
//! collections, failed logins and webhook queues, the open connections,
//! the process's RSS and open files — so a scrape costs the same whatever
//! the store holds.
//!
//! Owns the metric names and labels. Must not measure anything itself.

use std::sync::atomic::{AtomicI64, Ordering};

use axum::http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::Snapshot;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    registry: String,
    method: &'static str,
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    registry: String,
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegistryLabel {
    registry: String,
}

type Histograms = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The process's metrics; one for its lifetime (reloads keep it).
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histograms,
    received: Family<RegistryLabel, Counter>,
    sent: Family<RegistryLabel, Counter>,
    connections: Gauge,
    open: AtomicI64,
    storage_bytes: Family<RegistryLabel, Gauge>,
    blobs: Family<RegistryLabel, Gauge>,
    repositories: Family<RegistryLabel, Gauge>,
    tags: Family<RegistryLabel, Gauge>,
    usage_time: Family<RegistryLabel, Gauge>,
    uploads: Family<RegistryLabel, Gauge>,
    cert_expiry: Family<RegistryLabel, Gauge>,
    acme_failures: Family<RegistryLabel, Counter>,
    gc_runs: Family<RegistryLabel, Counter>,
    gc_seconds: Family<RegistryLabel, Counter<f64>>,
    gc_tags: Family<RegistryLabel, Counter>,
    gc_manifests: Family<RegistryLabel, Counter>,
    gc_blobs: Family<RegistryLabel, Counter>,
    gc_bytes: Family<RegistryLabel, Counter>,
    login_failures: Family<RegistryLabel, Counter>,
    logins_throttled: Family<RegistryLabel, Counter>,
    rss: Gauge,
    fds: Gauge,
    notify_pending: Family<RegistryLabel, Gauge>,
    notify_dropped: Family<RegistryLabel, Counter>,
    /// One scrape at a time: each refills the families read from the
    /// instances.
    rendering: parking_lot::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("berth");
        let m = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            received: Family::default(),
            sent: Family::default(),
            connections: Gauge::default(),
            open: AtomicI64::new(0),
            storage_bytes: Family::default(),
            blobs: Family::default(),
            repositories: Family::default(),
            tags: Family::default(),
            usage_time: Family::default(),
            uploads: Family::default(),
            cert_expiry: Family::default(),
            acme_failures: Family::default(),
            gc_runs: Family::default(),
            gc_seconds: Family::default(),
            gc_tags: Family::default(),
            gc_manifests: Family::default(),
            gc_blobs: Family::default(),
            gc_bytes: Family::default(),
            login_failures: Family::default(),
            logins_throttled: Family::default(),
            rss: Gauge::default(),
            fds: Gauge::default(),
            notify_pending: Family::default(),
            notify_dropped: Family::default(),
            rendering: parking_lot::Mutex::new(()),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "http_requests",
            "Requests answered, by method, route class and status",
            m.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "From the request's head to its response sent",
            m.latency.clone(),
        );
        r.register(
            "http_received_bytes",
            "Request body bytes received",
            m.received.clone(),
        );
        r.register(
            "http_sent_bytes",
            "Response body bytes sent",
            m.sent.clone(),
        );
        r.register(
            "open_connections",
            "Client connections open now",
            m.connections.clone(),
        );
        r.register(
            "storage_bytes",
            "Bytes of the blobs an instance holds, as last measured",
            m.storage_bytes.clone(),
        );
        r.register(
            "storage_blobs",
            "Blobs an instance holds, as last measured",
            m.blobs.clone(),
        );
        r.register(
            "storage_repositories",
            "Repositories of an instance, as last measured",
            m.repositories.clone(),
        );
        r.register(
            "storage_tags",
            "Tags of an instance, as last measured",
            m.tags.clone(),
        );
        r.register(
            "storage_measured_timestamp_seconds",
            "When an instance's usage was last measured",
            m.usage_time.clone(),
        );
        r.register(
            "uploads_in_progress",
            "Upload sessions open (as this process knows them)",
            m.uploads.clone(),
        );
        r.register(
            "certificate_expiry_timestamp_seconds",
            "When the certificate an instance serves ends",
            m.cert_expiry.clone(),
        );
        r.register(
            "acme_order_failures",
            "ACME orders that failed",
            m.acme_failures.clone(),
        );
        r.register("gc_runs", "Collections this process ran", m.gc_runs.clone());
        r.register(
            "gc_duration_seconds",
            "Time spent in those collections",
            m.gc_seconds.clone(),
        );
        r.register(
            "gc_deleted_tags",
            "Tags deleted by retention",
            m.gc_tags.clone(),
        );
        r.register(
            "gc_deleted_manifests",
            "Manifests deleted by collections",
            m.gc_manifests.clone(),
        );
        r.register(
            "gc_deleted_blobs",
            "Blobs deleted by collections",
            m.gc_blobs.clone(),
        );
        r.register(
            "gc_reclaimed_bytes",
            "Bytes of the blobs deleted by collections",
            m.gc_bytes.clone(),
        );
        r.register(
            "login_failures",
            "Refused logins (wrong user or password)",
            m.login_failures.clone(),
        );
        r.register(
            "logins_throttled",
            "Logins refused for too many failures",
            m.logins_throttled.clone(),
        );
        r.register(
            "notify_pending",
            "Webhook events waiting in the queues on disk",
            m.notify_pending.clone(),
        );
        r.register(
            "notify_dropped",
            "Webhook events dropped from full queues",
            m.notify_dropped.clone(),
        );
        r.register(
            "process_resident_memory_bytes",
            "Resident memory of the process",
            m.rss.clone(),
        );
        r.register(
            "process_open_fds",
            "Open file descriptors of the process",
            m.fds.clone(),
        );
        Metrics { registry, ..m }
    }
}

/// What kind of request a path is, in few enough values to label by.
pub fn route_class(path: &str) -> &'static str {
    let Some(rest) = path.strip_prefix("/v2") else {
        return "ui";
    };
    if rest.is_empty() || rest == "/" {
        "base"
    } else if rest == "/_catalog" {
        "catalog"
    } else if rest.contains("/blobs/uploads") {
        "upload"
    } else if rest.contains("/blobs/") {
        "blob"
    } else if rest.contains("/manifests/") {
        "manifest"
    } else if rest.ends_with("/tags/list") {
        "tags"
    } else if rest.contains("/referrers/") {
        "referrers"
    } else {
        "other"
    }
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "other",
    }
}

/// One request as it ended.
pub struct Ended<'a> {
    pub instance: &'a str,
    pub method: &'a Method,
    pub path: &'a str,
    pub status: u16,
    pub received: u64,
    pub sent: u64,
    pub seconds: f64,
}

impl Metrics {
    /// Counts a request that ended.
    pub fn request(&self, r: &Ended<'_>) {
        let registry = r.instance.to_string();
        let route = route_class(r.path);
        self.requests
            .get_or_create(&RequestLabels {
                registry: registry.clone(),
                method: method_label(r.method),
                route,
                status: r.status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                registry: registry.clone(),
                route,
            })
            .observe(r.seconds);
        let label = RegistryLabel { registry };
        self.received.get_or_create(&label).inc_by(r.received);
        self.sent.get_or_create(&label).inc_by(r.sent);
    }

    /// A connection opened; the returned guard closes it when dropped.
    pub fn connection(&self) -> OpenConnection<'_> {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self)
    }

    /// The metrics now, in the Prometheus text format.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let _one_at_a_time = self.rendering.lock();
        self.connections.set(self.open.load(Ordering::Relaxed));
        // Filled again from the instances served now: an instance a reload
        // removed (or whose certificate went) leaves no series behind.
        for f in [
            &self.storage_bytes,
            &self.blobs,
            &self.repositories,
            &self.tags,
            &self.usage_time,
            &self.uploads,
            &self.cert_expiry,
            &self.notify_pending,
        ] {
            f.clear();
        }
        for f in [
            &self.acme_failures,
            &self.gc_runs,
            &self.gc_tags,
            &self.gc_manifests,
            &self.gc_blobs,
            &self.gc_bytes,
            &self.login_failures,
            &self.logins_throttled,
            &self.notify_dropped,
        ] {
            f.clear();
        }
        self.gc_seconds.clear();
        for (name, inst) in &snapshot.instances {
            let label = RegistryLabel {
                registry: name.clone(),
            };
            // Totals the process already keeps, copied into the families.
            let count = |f: &Family<RegistryLabel, Counter>, v: u64| {
                f.get_or_create(&label).inner().store(v, Ordering::Relaxed)
            };
            let gauge = |f: &Family<RegistryLabel, Gauge>, v: u64| {
                f.get_or_create(&label).set(v as i64);
            };
            if let Some(m) = inst.registry.usage() {
                let u = &m.usage;
                gauge(&self.storage_bytes, u.bytes);
                gauge(&self.blobs, u.blobs as u64);
                gauge(&self.repositories, u.repositories as u64);
                gauge(&self.tags, u.tags as u64);
                let at = m.at.duration_since(std::time::UNIX_EPOCH);
                gauge(&self.usage_time, at.map_or(0, |d| d.as_secs()));
            }
            let ttl = inst.config.retention.upload_ttl;
            gauge(
                &self.uploads,
                inst.registry.uploads().in_progress(ttl) as u64,
            );
            if let Some(tls) = &inst.tls {
                let status = tls.status();
                if let Some(t) = status.not_after {
                    self.cert_expiry.get_or_create(&label).set(t);
                }
                if matches!(inst.config.tls, crate::config::Tls::Acme { .. }) {
                    count(&self.acme_failures, status.order_failures);
                }
            }
            let gc = inst.registry.gc_totals();
            count(&self.gc_runs, gc.runs);
            count(&self.gc_tags, gc.tags);
            count(&self.gc_manifests, gc.manifests);
            count(&self.gc_blobs, gc.blobs);
            count(&self.gc_bytes, gc.bytes);
            self.gc_seconds
                .get_or_create(&label)
                .inner()
                .store(gc.seconds.to_bits(), Ordering::Relaxed);
            let (pending, dropped) = inst.notifier.backlog();
            gauge(&self.notify_pending, pending);
            count(&self.notify_dropped, dropped);
            let (failed, throttled) = inst.auth.login_counts();
            count(&self.login_failures, failed);
            count(&self.logins_throttled, throttled);
        }
        let (rss, fds) = process_facts();
        self.rss.set(rss);
        self.fds.set(fds);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

/// Keeps a connection counted while it is open.
pub struct OpenConnection<'a>(&'a Metrics);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resident bytes and open file descriptors of this process.
fn process_facts() -> (i64, i64) {
    let page = rustix::param::page_size() as i64;
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<i64>().ok())
        .map_or(0, |pages| pages * page);
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64);
    (rss, fds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_few() {
        for (path, class) in [
            ("/v2/", "base"),
            ("/v2", "base"),
            ("/v2/_catalog", "catalog"),
            ("/v2/a/b/blobs/uploads/123", "upload"),
            ("/v2/a/blobs/sha256:00", "blob"),
            ("/v2/a/manifests/v1", "manifest"),
            ("/v2/a/tags/list", "tags"),
            ("/v2/a/referrers/sha256:00", "referrers"),
            ("/v2/a/nothing", "other"),
            ("/r/app", "ui"),
        ] {
            assert_eq!(route_class(path), class, "{path}");
        }
    }

    #[test]
    fn a_request_shows_in_the_text() {
        let m = Metrics::default();
        m.request(&Ended {
            instance: "ci",
            method: &Method::PUT,
            path: "/v2/app/blobs/uploads/1",
            status: 201,
            received: 1000,
            sent: 0,
            seconds: 0.01,
        });
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &m.registry).unwrap();
        assert!(
            out.contains(
                "berth_http_requests_total{registry=\"ci\",method=\"PUT\",route=\"upload\",status=\"201\"} 1"
            ),
            "{out}"
        );
        assert!(
            out.contains("berth_http_received_bytes_total{registry=\"ci\"} 1000"),
            "{out}"
        );
        assert!(
            out.contains("berth_http_request_duration_seconds_bucket"),
            "{out}"
        );
    }
}
