//! Webhooks: each instance's `[[notify]]` endpoints receive its events —
//! push, pull and delete of manifests and blobs, mounts of blobs, and
//! berth's own (a
//! collection finished) — in CNCF Distribution's notification envelope
//! (`application/vnd.docker.distribution.events.v2+json`, the same JSON
//! fields), so receivers written for registry:2 work unchanged.
//!
//! Delivery is at least once and in order per endpoint: an event is
//! appended to the endpoint's queue on disk ([`queue`]) before anything is
//! sent, and leaves it only once the endpoint answered `2xx`
//! ([`deliver`], with exponential backoff in between); a restart delivers
//! what was left. A full queue drops its oldest events (counted, logged),
//! never holds up the request that made the event.
//!
//! Owns the events' shape, the queues and their delivery. Must not decide
//! when something happened (the API and the collections say so).

mod deliver;
mod queue;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::task::JoinHandle;

pub use queue::Queue;

use crate::oci::{Reference, RepoName};

/// Events a queue keeps at most before it drops the oldest.
pub const MAX_PENDING: usize = 10_000;

/// What an event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Push,
    /// A blob linked from another repository (Distribution's `mount`).
    Mount,
    Pull,
    Delete,
    /// A collection finished (berth's own).
    Gc,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "push" => Action::Push,
            "mount" => Action::Mount,
            "pull" => Action::Pull,
            "delete" => Action::Delete,
            "gc" => Action::Gc,
            _ => return None,
        })
    }
}

/// One `[[notify]]` endpoint of an instance.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    /// Sent with every request (may hold secrets: never logged).
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub actions: Vec<Action>,
    pub ignore_media_types: Vec<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .field("actions", &self.actions)
            .field("ignore_media_types", &self.ignore_media_types)
            .finish()
    }
}

/// What an event is about.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub media_type: String,
    pub size: u64,
    pub digest: String,
    pub length: u64,
    pub repository: String,
    /// The repository a mounted blob came from, when the client named it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub from_repository: String,
    pub url: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tag: String,
}

impl Target {
    /// The tag or manifest `reference` names in `repo`.
    pub fn of_reference(repo: &RepoName, reference: &Reference) -> Target {
        let mut target = Target {
            repository: repo.to_string(),
            ..Target::default()
        };
        match reference {
            Reference::Tag(t) => target.tag = t.to_string(),
            Reference::Digest(d) => target.digest = d.to_string(),
        }
        target
    }
}

/// The request that made an event.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Request {
    pub id: String,
    pub addr: String,
    pub host: String,
    pub method: String,
    pub useragent: String,
}

impl Request {
    /// The request of `parts` (its `Host`, `User-Agent`, the client's
    /// address), whose id is `id`.
    pub fn of(parts: &http::request::Parts, id: &str) -> Request {
        let header = |name| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        Request {
            id: id.to_string(),
            addr: parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.to_string())
                .unwrap_or_default(),
            host: header(http::header::HOST),
            method: parts.method.to_string(),
            useragent: header(http::header::USER_AGENT),
        }
    }
}

/// Who made it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Actor {
    pub name: String,
}

/// Which registry it happened in.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Source {
    pub addr: String,
    #[serde(rename = "instanceID")]
    pub instance_id: String,
}

/// One event, as Distribution writes it.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: String,
    pub timestamp: String,
    pub action: Action,
    pub target: Target,
    pub request: Request,
    pub actor: Actor,
    pub source: Source,
}

impl Event {
    /// A new event of `action` on `target`, now.
    pub fn new(action: Action, target: Target, request: Request, actor: &str) -> Event {
        Event {
            id: uuid::Uuid::new_v4().to_string(),
            timestamp: humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
            action,
            target,
            request,
            actor: Actor {
                name: actor.to_string(),
            },
            source: Source::default(),
        }
    }
}

/// The endpoints of one instance with their queues and delivery tasks
/// (stopped when dropped; the queues stay on disk). The default has none.
#[derive(Default)]
pub struct Notifier {
    source: Source,
    sinks: Vec<(Endpoint, Arc<Queue>)>,
    tasks: parking_lot::Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Notifier {
    fn drop(&mut self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
    }
}

impl Notifier {
    /// Opens the queue of each endpoint under `dir`; `instance` names the
    /// source of the events. Nothing is sent before [`Notifier::deliver`].
    pub fn open(instance: &str, endpoints: &[Endpoint], dir: &Path) -> std::io::Result<Notifier> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let source = Source {
            addr: host,
            instance_id: instance.to_string(),
        };
        let mut sinks = Vec::new();
        for e in endpoints {
            let queue = Arc::new(Queue::open(
                &dir.join(queue::dir_name(&e.url)),
                MAX_PENDING,
            )?);
            sinks.push((e.clone(), queue));
        }
        Ok(Notifier {
            source,
            sinks,
            tasks: parking_lot::Mutex::default(),
        })
    }

    /// Starts delivering each queue (once; in the server's runtime).
    pub fn deliver(&self) {
        let mut tasks = self.tasks.lock();
        if !tasks.is_empty() {
            return;
        }
        for (e, queue) in &self.sinks {
            let name = self.source.instance_id.clone();
            tasks.push(tokio::spawn(deliver::run(name, e.clone(), queue.clone())));
        }
    }

    /// Whether any endpoint listens (events are worth making).
    pub fn active(&self) -> bool {
        !self.sinks.is_empty()
    }

    /// The events of a collection: a delete by `retention` for each tag it
    /// deleted (`repo:tag`), then one `gc` event with what it freed.
    pub fn collection(&self, report: &crate::registry::gc::Report) {
        for t in &report.tags {
            let Some((repo, tag)) = t.rsplit_once(':') else {
                continue;
            };
            let target = Target {
                repository: repo.to_string(),
                tag: tag.to_string(),
                ..Target::default()
            };
            self.emit(Event::new(
                Action::Delete,
                target,
                Request::default(),
                "retention",
            ));
        }
        let target = Target {
            size: report.bytes,
            length: report.blobs.len() as u64,
            ..Target::default()
        };
        self.emit(Event::new(
            Action::Gc,
            target,
            Request::default(),
            "retention",
        ));
    }

    /// Queues `event` for every endpoint that wants it; never waits for one.
    pub fn emit(&self, mut event: Event) {
        if self.sinks.is_empty() {
            return;
        }
        event.source = self.source.clone();
        let line = serde_json::to_string(&event).expect("plain data");
        for (e, queue) in &self.sinks {
            let wanted = e.actions.contains(&event.action)
                && !e.ignore_media_types.contains(&event.target.media_type);
            if wanted {
                queue.push(&line);
            }
        }
    }

    /// Events waiting, and events dropped from full queues, over all
    /// endpoints.
    pub fn backlog(&self) -> (u64, u64) {
        self.sinks.iter().fold((0, 0), |(p, d), (_, q)| {
            let (pending, dropped) = q.counts();
            (p + pending, d + dropped)
        })
    }
}
