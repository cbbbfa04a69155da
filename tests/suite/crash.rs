//! Crash consistency: the server is killed with SIGKILL at random moments
//! while several clients push concurrently (monolithic, chunked and streamed
//! blob uploads, image manifests, indexes, tags moved between manifests),
//! then restarted on the same storage. After every kill `berth fsck` must
//! find no problem; at the end every push that got its 201 must be pullable
//! with matching digests, and pushes that were cut off must have left nothing
//! visible: every tag resolves to a complete manifest, every blob that is
//! served matches its digest.
//!
//! Interrupted upload sessions (`_uploads/<id>`) are resumable client state,
//! not corruption: fsck counts them and does not report them. Temp files of
//! writes cut off by the kill are reported by fsck as leftovers (they do not
//! make it fail) and removed by `--repair`; the test checks both.
//!
//! `BERTH_CRASH_ROUNDS` (default 24) sets the number of kills and
//! `BERTH_CRASH_SECS` (default 60) bounds the time spent killing; the full
//! run is e.g. `BERTH_CRASH_ROUNDS=60 BERTH_CRASH_SECS=300 cargo test --test crash`.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{berth_bin, sha256_digest, ConfigDir, Instance, Server};
use crate::common_api::*;
use futures_util::StreamExt;
use rand::Rng;
use serde_json::json;

const WORKERS: usize = 6;
/// Requests in flight while verifying.
const CONCURRENCY: usize = 16;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the clients were told.
#[derive(Default)]
struct Log {
    /// Blobs whose upload got its 201: (repo, digest).
    blobs: Vec<(String, String)>,
    /// Manifests whose PUT got its 201: (repo, digest, bytes).
    manifests: Vec<(String, String, Vec<u8>)>,
    /// Tag PUTs that got their 201, in order: (repo, tag, digest).
    tags: Vec<(String, String, String)>,
    /// Everything that was attempted, answered or not: (repo, digest).
    attempted_blobs: Vec<(String, String)>,
    /// Responses that were neither success nor a dead connection.
    unexpected: Vec<String>,
    /// Operations started, and those answered with success.
    started: u64,
    succeeded: u64,
}

type Shared = Arc<Mutex<Log>>;

/// The outcome of one request against a server that may die at any time.
enum Outcome {
    Ok(reqwest::Response),
    /// The connection broke: the server is gone.
    Dead,
}

async fn send(log: &Shared, what: &str, req: reqwest::RequestBuilder, expect: u16) -> Outcome {
    match req.send().await {
        Ok(resp) if resp.status().as_u16() == expect => Outcome::Ok(resp),
        Ok(resp) => {
            let status = resp.status();
            // A response cut off by the kill is a dead connection too.
            match resp.bytes().await {
                Ok(body) => log.lock().unwrap().unexpected.push(format!(
                    "{what}: {status}: {}",
                    String::from_utf8_lossy(&body)
                )),
                Err(_) => return Outcome::Dead,
            }
            Outcome::Dead
        }
        Err(_) => Outcome::Dead,
    }
}

/// Uploads a blob one of three ways; `true` when it got its 201.
async fn upload(log: &Shared, reg: &Reg, repo: &str, data: &[u8]) -> bool {
    let digest = sha256_digest(data);
    {
        let mut l = log.lock().unwrap();
        l.attempted_blobs.push((repo.to_string(), digest.clone()));
        l.started += 1;
    }
    let way = rand::rng().random_range(0..3);
    let done = if way == 0 {
        let req = reg
            .post(&format!("/v2/{repo}/blobs/uploads/?digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec());
        send(log, "monolithic upload", req, 201).await
    } else {
        let req = reg.post(&format!("/v2/{repo}/blobs/uploads/"));
        let Outcome::Ok(resp) = send(log, "upload start", req, 202).await else {
            return false;
        };
        let mut location = must_header(&resp, "location");
        let mut last = &data[..0];
        if way == 1 {
            // Chunked: Content-Range chunks, the last one with the PUT.
            let chunks: Vec<&[u8]> = data.chunks(data.len() / 3 + 1).collect();
            let mut offset = 0;
            for chunk in &chunks[..chunks.len() - 1] {
                let range = format!("{}-{}", offset, offset + chunk.len() - 1);
                let req = reg
                    .patch(&location)
                    .header("content-type", "application/octet-stream")
                    .header("content-range", range)
                    .body(chunk.to_vec());
                let Outcome::Ok(resp) = send(log, "chunk", req, 202).await else {
                    return false;
                };
                location = must_header(&resp, "location");
                offset += chunk.len();
            }
            last = chunks[chunks.len() - 1];
        } else {
            // Streamed: one PATCH without Content-Range, sent in pieces.
            let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
                data.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
            let body = reqwest::Body::wrap_stream(futures_util::stream::iter(pieces));
            let req = reg.patch(&location).body(body);
            let Outcome::Ok(resp) = send(log, "streamed patch", req, 202).await else {
                return false;
            };
            location = must_header(&resp, "location");
        }
        let req = reg
            .put(&with_query(&location, &format!("digest={digest}")))
            .header("content-type", "application/octet-stream")
            .body(last.to_vec());
        send(log, "upload finish", req, 201).await
    };
    if let Outcome::Ok(_) = done {
        let mut l = log.lock().unwrap();
        l.blobs.push((repo.to_string(), digest));
        l.succeeded += 1;
        true
    } else {
        false
    }
}

async fn put(log: &Shared, reg: &Reg, repo: &str, reference: &str, mt: &str, body: &[u8]) -> bool {
    log.lock().unwrap().started += 1;
    let req = reg
        .put(&format!("/v2/{repo}/manifests/{reference}"))
        .header("content-type", mt)
        .body(body.to_vec());
    if let Outcome::Ok(_) = send(log, "manifest put", req, 201).await {
        let digest = sha256_digest(body);
        let mut l = log.lock().unwrap();
        l.manifests
            .push((repo.to_string(), digest.clone(), body.to_vec()));
        if !reference.starts_with("sha256:") {
            l.tags
                .push((repo.to_string(), reference.to_string(), digest.clone()));
        }
        l.succeeded += 1;
        true
    } else {
        false
    }
}

/// Pushes images until the server dies.
async fn worker(log: Shared, reg: Reg, round: u64, w: usize) {
    let repo = format!("crash/w{w}");
    let mut children: Vec<Desc> = Vec::new();
    for n in 0.. {
        let size = match rand::rng().random_range(0..10) {
            0 => rand::rng().random_range(1 << 20..3 << 20),
            1..=3 => rand::rng().random_range(16 << 10..512 << 10),
            _ => rand::rng().random_range(10..4096),
        };
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "nonce": format!("{round}-{w}-{n}-{}", rand::random::<u64>()),
        }))
        .unwrap();
        let layer = random_bytes(size);
        if !upload(&log, &reg, &repo, &config).await || !upload(&log, &reg, &repo, &layer).await {
            return;
        }
        let manifest = image_manifest(
            OCI_MANIFEST,
            &Desc::of(OCI_CONFIG, &config),
            &[Desc::of(OCI_LAYER, &layer)],
        );
        // A tag of its own, and a tag that keeps moving.
        let tag = format!("r{round}-{n}");
        if !put(&log, &reg, &repo, &tag, OCI_MANIFEST, &manifest).await
            || !put(&log, &reg, &repo, "latest", OCI_MANIFEST, &manifest).await
        {
            return;
        }
        children.push(Desc::of(OCI_MANIFEST, &manifest));
        if children.len() == 2 {
            let index = index_manifest(OCI_INDEX, &children);
            if !put(
                &log,
                &reg,
                &repo,
                &format!("r{round}-{n}-multi"),
                OCI_INDEX,
                &index,
            )
            .await
            {
                return;
            }
            children.clear();
        }
    }
}

fn fsck(config_dir: &Path, repair: bool) -> (i32, String) {
    let mut cmd = Command::new(berth_bin());
    cmd.arg("fsck").arg("--config-dir").arg(config_dir);
    if repair {
        cmd.arg("--repair");
    }
    let out = cmd.output().expect("run berth fsck");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn kill9(server: &mut Server) {
    let ok = Command::new("kill")
        .args(["-9", &server.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -9 failed");
    server.wait_exit();
}

/// Pulls content and checks digests, each object once.
#[derive(Default)]
struct Verifier {
    /// (repo, digest) of blobs and manifests served intact.
    seen: Mutex<HashSet<(String, String)>>,
}

impl Verifier {
    fn known(&self, repo: &str, digest: &str) -> bool {
        self.seen
            .lock()
            .unwrap()
            .contains(&(repo.to_string(), digest.to_string()))
    }

    fn mark(&self, repo: &str, digest: &str) {
        self.seen
            .lock()
            .unwrap()
            .insert((repo.to_string(), digest.to_string()));
    }

    /// A blob is served with bytes matching its digest.
    async fn blob(&self, reg: &Reg, repo: &str, digest: &str) {
        if self.known(repo, digest) {
            return;
        }
        let path = format!("/v2/{repo}/blobs/{digest}");
        let data = reg.expect_status(Method::GET, &path, 200).await;
        assert_eq!(sha256_digest(&data), digest, "{repo} blob");
        self.mark(repo, digest);
    }

    /// A manifest and everything it references are served intact; returns
    /// the manifest's digest.
    async fn manifest(&self, reg: &Reg, repo: &str, reference: &str) -> String {
        let mut todo = vec![reference.to_string()];
        let mut top = None;
        while let Some(r) = todo.pop() {
            if self.known(repo, &r) {
                top.get_or_insert(r);
                continue;
            }
            let resp = get_manifest(reg, repo, &r).await;
            let dcd = must_header(&resp, "docker-content-digest");
            let bytes = expect_status(resp, 200).await;
            assert_eq!(sha256_digest(&bytes), dcd, "{repo}:{r}");
            if self.known(repo, &dcd) {
                top.get_or_insert(dcd);
                continue;
            }
            let (children, blobs) = manifest_refs(&bytes);
            todo.extend(children);
            for b in blobs {
                self.blob(reg, repo, &b).await;
            }
            self.mark(repo, &dcd);
            top.get_or_insert(dcd);
        }
        top.unwrap()
    }
}

/// Runs `f` over `items`, `CONCURRENCY` at a time.
async fn each<T, F, Fut>(items: Vec<T>, f: F)
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    futures_util::stream::iter(items)
        .for_each_concurrent(CONCURRENCY, f)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_pushes_leaves_consistent_storage() {
    let rounds = env_num("BERTH_CRASH_ROUNDS", 24);
    let budget = Duration::from_secs(env_num("BERTH_CRASH_SECS", 60));
    let cfg = ConfigDir::new(&[Instance::new("ci")]);
    let log: Shared = Arc::default();
    let began = Instant::now();
    let mut done_rounds = 0;
    let mut leftovers_seen = 0;
    for round in 0..rounds {
        if began.elapsed() > budget {
            break;
        }
        let mut server = Server::start_in(cfg.path());
        let reg = Reg::for_instance(&server, "ci");
        let tasks: Vec<_> = (0..WORKERS)
            .map(|w| tokio::spawn(worker(log.clone(), reg.clone(), round, w)))
            .collect();
        let delay = rand::rng().random_range(30..900);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        kill9(&mut server);
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("a client hung after the kill")
                .unwrap();
        }
        drop(server);
        done_rounds += 1;
        // Right after the crash, before anything could tidy up.
        let (code, text) = fsck(cfg.path(), false);
        assert_eq!(code, 0, "round {round} (kill after {delay} ms):\n{text}");
        assert!(text.contains("no problems"), "{text}");
        leftovers_seen = text.matches("ci: leftover ").count();
    }
    let elapsed = began.elapsed();

    let server = Server::start_in(cfg.path());
    let reg = Reg::for_instance(&server, "ci");
    let t_verify = Instant::now();
    let log = std::mem::take(&mut *log.lock().unwrap());
    assert!(
        log.unexpected.is_empty(),
        "responses other than success or a dead connection:\n{}",
        log.unexpected.join("\n")
    );
    assert!(
        log.manifests.len() >= done_rounds as usize,
        "too few pushes completed to mean anything: {} manifests in {done_rounds} rounds",
        log.manifests.len()
    );

    // Every 201 holds.
    let v = Verifier::default();
    each(log.blobs.clone(), |(repo, digest)| {
        let (v, reg) = (&v, &reg);
        async move { v.blob(reg, &repo, &digest).await }
    })
    .await;
    each(log.manifests.clone(), |(repo, digest, bytes)| {
        let (v, reg) = (&v, &reg);
        async move {
            assert_eq!(sha256_digest(&bytes), digest);
            assert_eq!(v.manifest(reg, &repo, &digest).await, digest);
        }
    })
    .await;
    // A tag written once points where its 201 said; a tag written many
    // times points at its last 201 or at a later PUT that was cut off.
    let mut last: BTreeMap<(String, String), String> = BTreeMap::new();
    for (repo, tag, digest) in &log.tags {
        last.insert((repo.clone(), tag.clone()), digest.clone());
    }
    each(last.into_iter().collect(), |((repo, tag), digest)| {
        let (v, reg) = (&v, &reg);
        async move {
            let got = v.manifest(reg, &repo, &tag).await;
            if tag != "latest" {
                assert_eq!(got, digest, "{repo}:{tag}");
            }
        }
    })
    .await;
    // Nothing cut off is visible half-way: every tag resolves to a complete
    // manifest, every blob that is served matches its digest.
    let mut all_tags = Vec::new();
    for w in 0..WORKERS {
        let repo = format!("crash/w{w}");
        if log.attempted_blobs.iter().any(|(r, _)| *r == repo) {
            for tag in list_tags(&reg, &repo).await {
                all_tags.push((repo.clone(), tag));
            }
        }
    }
    let tags = all_tags.len();
    each(all_tags, |(repo, tag)| {
        let (v, reg) = (&v, &reg);
        async move {
            v.manifest(reg, &repo, &tag).await;
        }
    })
    .await;
    let served = AtomicUsize::new(0);
    each(log.attempted_blobs.clone(), |(repo, digest)| {
        let (reg, served) = (&reg, &served);
        async move {
            let resp = reg
                .send(Method::GET, &format!("/v2/{repo}/blobs/{digest}"))
                .await;
            match resp.status().as_u16() {
                200 => {
                    let data = resp.bytes().await.unwrap();
                    assert_eq!(sha256_digest(&data), digest, "{repo} blob");
                    served.fetch_add(1, Ordering::Relaxed);
                }
                404 => {}
                s => panic!("GET blob {digest}: {s}"),
            }
        }
    })
    .await;
    let served = served.into_inner();
    server.stop();
    let verified = t_verify.elapsed();

    // Leftovers go with --repair; then nothing at all is reported.
    let (code, text) = fsck(cfg.path(), true);
    assert_eq!(code, 0, "{text}");
    let (code, text) = fsck(cfg.path(), false);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("no problems") && text.contains("; 0 leftover(s);"),
        "{text}"
    );
    let sessions = text
        .split("; ")
        .find(|s| s.contains("upload session(s)"))
        .unwrap_or_default()
        .trim()
        .to_string();
    eprintln!(
        "crash: {done_rounds} kills in {:.1}s; {} operations started, {} acknowledged \
         ({} blobs, {} manifests); {tags} tags and {served} of {} attempted blobs served \
         intact; {leftovers_seen} leftover temp file(s) after the last kill; {sessions}; \
         verified in {:.1}s",
        elapsed.as_secs_f64(),
        log.started,
        log.succeeded,
        log.blobs.len(),
        log.manifests.len(),
        log.attempted_blobs.len(),
        verified.as_secs_f64(),
    );
}
