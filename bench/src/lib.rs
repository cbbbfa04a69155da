//! `berth-bench`: berth against CNCF Distribution (Debian's `docker-registry`)
//! side by side on 127.0.0.1, same client, same data, same disk; berth as
//! a pull-through mirror of it ([`mirror`]); then both again with their S3
//! drivers on one Garage bucket ([`garage`]).
//!
//! `cargo run --release -p berth-bench -- [--quick] [--berth PATH]
//! [--reference PATH] [--rounds N] [--duration SECS] [--skip-reference]
//! [--baseline PATH] [--s3] [--tls] [--only LIST] [--data-dir DIR]
//! [--out DIR] [--keep]`; [`run`] is the same with the arguments given
//! (the binary is a thin wrapper, the test suite calls it). With
//! `--baseline`, another berth binary (an
//! earlier build) takes the reference's place, and every workload must be
//! within [`NOT_WORSE`] of it. The metrics workload ([`admin`]) runs berth
//! alone, with and without its admin listener.

mod admin;
pub mod garage;
mod h2;
mod http;
mod layout;
mod link;
mod mirror;
mod report;
mod s3;
mod servers;
mod tls;
mod workloads;

/// Stopping a server child by its PID, for the tests' servers too.
pub use servers::stop;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::http::{basic_auth, Blob, Body, Conn};
use crate::report::{
    Agg, Better, Limits, Metric, Results, Target, METRICS_RESULTS, MIRROR_RESULTS, RESULTS,
    S3_RESULTS, TLS_RESULTS,
};
use crate::servers::{proc_file_kib, proc_status_kib, RssSampler, Server, Storage, Wire};
use crate::workloads::{Request, Upload};

const MIB: u64 = 1 << 20;
const USER: &str = "bench";
const PASSWORD: &str = "bench-password-7";
/// bcrypt cost of the htpasswd entry: `htpasswd -B`'s default.
const BCRYPT_COST: u32 = 5;

struct Opts {
    quick: bool,
    berth: PathBuf,
    reference: PathBuf,
    skip_reference: bool,
    /// Another berth binary to compare with, in the reference's place.
    baseline: Option<PathBuf>,
    rounds: Option<usize>,
    duration: Option<f64>,
    data_dir: Option<PathBuf>,
    /// Where the JSON results go instead of `bench/results` (and then
    /// `bench/README.md` is left alone).
    out: Option<PathBuf>,
    keep: bool,
    /// Workloads to run (all when empty).
    only: Vec<String>,
    /// berth's `part_size` and `parallel_parts` on S3 (its defaults when
    /// not given).
    s3_part_size: Option<String>,
    s3_parallel_parts: Option<usize>,
    /// berth's blob `cache` on S3 ([`s3::DEFAULT_CACHE`] when not given).
    s3_cache: Option<String>,
}

impl Opts {
    fn wants(&self, workload: &str) -> bool {
        let known = known_workload(workload);
        known && (self.only.is_empty() || self.only.iter().any(|w| w == workload))
    }

    /// Whether every one of `workloads` runs.
    fn wants_all(&self, workloads: &[&str]) -> bool {
        workloads.iter().all(|w| self.wants(w))
    }

    fn wants_any(&self, workloads: &[&str]) -> bool {
        workloads.iter().any(|w| self.wants(w))
    }

    /// Whether berth runs on S3 with other settings than its defaults.
    fn s3_tuned(&self) -> bool {
        self.s3_part_size.is_some() || self.s3_parallel_parts.is_some() || self.s3_cache.is_some()
    }

    /// Whether a second server runs beside berth (the reference, or the
    /// baseline).
    fn compared(&self) -> bool {
        self.baseline.is_some() || !self.skip_reference
    }

    /// What the second server is called in the results.
    fn rival(&self) -> &'static str {
        match self.baseline {
            Some(_) => "baseline",
            None => "reference",
        }
    }
}

/// How much worse than the baseline a workload may be (`--baseline`).
pub const NOT_WORSE: f64 = 0.05;

/// Sizes and counts of one run.
struct Plan {
    big: u64,
    conc_push: (usize, u64),
    conc_pull: (usize, u64),
    tags: usize,
    repos: usize,
    rounds: usize,
    duration: Duration,
    conns: usize,
    list_conns: usize,
    catalog_page: usize,
    /// Requests of each UI page per round, spread over `ui_conns`
    /// connections.
    ui_requests: usize,
    ui_conns: usize,
    /// How long the UI's connections idle after their warm-up, before the
    /// clock starts: longer than berth keeps a repository's facts fresh.
    ui_idle: Duration,
    /// Scrapes of `/metrics` timed by the metrics workload.
    scrapes: usize,
    limit_bytes: u64,
    /// Whether any workload on disk runs.
    disk: bool,
    /// Whether the workloads on S3 run (wanted, and Garage is there).
    s3: bool,
    /// Whether the workloads over TLS run (wanted, and Caddy is there).
    tls: bool,
    /// Whether the metrics workload runs.
    metrics: bool,
    /// Whether the mirror workload runs (wanted, and the reference is there
    /// to be its upstream).
    mirror: bool,
}

impl Plan {
    fn new(o: &Opts) -> Plan {
        let mut p = if o.quick {
            Plan {
                big: 8 * MIB,
                conc_push: (8, MIB),
                conc_pull: (32, MIB),
                tags: 200,
                repos: 300,
                rounds: 1,
                duration: Duration::from_millis(500),
                conns: 32,
                list_conns: 8,
                catalog_page: 100,
                ui_requests: 100,
                ui_conns: 4,
                ui_idle: Duration::ZERO,
                scrapes: 100,
                limit_bytes: 16 * MIB,
                disk: o.wants_any(&WORKLOADS),
                s3: false,
                tls: false,
                metrics: o.wants(METRICS),
                mirror: false,
            }
        } else {
            Plan {
                big: 512 * MIB,
                conc_push: (8, 64 * MIB),
                conc_pull: (32, 64 * MIB),
                tags: 5000,
                repos: 10_000,
                rounds: 5,
                duration: Duration::from_secs(3),
                conns: 32,
                list_conns: 8,
                catalog_page: 1000,
                ui_requests: 1000,
                ui_conns: 4,
                ui_idle: Duration::from_secs(6),
                scrapes: 1000,
                limit_bytes: 512 * MIB,
                disk: o.wants_any(&WORKLOADS),
                s3: false,
                tls: false,
                metrics: o.wants(METRICS),
                mirror: false,
            }
        };
        if let Some(r) = o.rounds {
            p.rounds = r.max(1);
        }
        if let Some(d) = o.duration {
            p.duration = Duration::from_secs_f64(d.max(0.1));
        }
        p
    }
}

fn usage() -> &'static str {
    "usage: berth-bench [--quick] [--berth PATH] [--reference PATH] [--skip-reference]\n\
     \x20                  [--baseline PATH] [--rounds N] [--duration SECS] [--only LIST]\n\
     \x20                  [--s3] [--s3-part-size SIZE] [--s3-parallel-parts N] [--tls]\n\
     \x20                  [--data-dir DIR] [--out DIR] [--keep]\n\
     \n\
     --quick           small sizes, one round: a sanity run of every workload\n\
     --berth PATH      berth binary (default: $CARGO_TARGET_DIR or target, /release/berth)\n\
     --reference PATH  docker-registry binary (default: /usr/bin/docker-registry)\n\
     --skip-reference  run berth alone (no ratios)\n\
     --baseline PATH   compare with another berth binary instead of the reference:\n\
     \x20                 every workload within 5 % of it, rate workloads 5 rounds too;\n\
     \x20                 results in ab.json\n\
     --rounds N        rounds per workload (default 5; quick 1)\n\
     --duration SECS   duration of each rate measurement (default 3; quick 0.5)\n\
     --data-dir DIR    where the temporary data directory goes (default: <checkout>/target)\n\
     --out DIR         write the JSON results into DIR (created if missing) instead of\n\
     \x20                 bench/results, and leave bench/README.md alone\n\
     --keep            keep the temporary data directory (logs, storage)\n\
     --only LIST       run only these workloads (comma-separated): push-mono,\n\
     \x20                 push-chunked, push-concurrent, pull, manifest-get, tags, catalog,\n\
     \x20                 ui (berth only), mirror (berth mirroring the reference),\n\
     \x20                 metrics (berth with and without its admin listener),\n\
     \x20                 s3-push-mono, s3-push-concurrent, s3-pull,\n\
     \x20                 tls-push-mono, tls-push-chunked, tls-push-concurrent, tls-pull,\n\
     \x20                 tls-manifest-get, tls-h2-pull, tls-h2-manifest-get\n\
     --s3              run only the workloads on S3 (the s3-* ones; without --s3 or\n\
     \x20                 --only they run when Garage is installed, see bench/README.md)\n\
     --tls             run only the workloads over TLS (the tls-* ones; without --tls or\n\
     \x20                 --only they run when Caddy is installed)\n\
     --s3-part-size SIZE, --s3-parallel-parts N\n\
     \x20                 berth's part_size and parallel_parts on S3 (default: its\n\
     \x20                 defaults, 8MiB and 4)\n\
     --s3-cache SIZE   berth's blob cache on S3 (default: 2GiB; 0 turns it off)"
}

/// The workloads on disk (the servers' filesystem drivers).
const WORKLOADS: [&str; 8] = [
    "push-mono",
    "push-chunked",
    "push-concurrent",
    "pull",
    "manifest-get",
    "tags",
    "catalog",
    "ui",
];

/// The workloads on S3: the servers' S3 drivers on one Garage bucket.
const S3_WORKLOADS: [&str; 3] = ["s3-push-mono", "s3-push-concurrent", "s3-pull"];

/// The workloads over TLS: berth's https listener against Caddy in front
/// of the reference.
const TLS_WORKLOADS: [&str; 7] = [
    "tls-push-mono",
    "tls-push-chunked",
    "tls-push-concurrent",
    "tls-pull",
    "tls-manifest-get",
    "tls-h2-pull",
    "tls-h2-manifest-get",
];

/// The metrics workload: berth with and without its admin listener.
const METRICS: &str = "metrics";

/// berth as a pull-through mirror of the reference ([`mirror`]).
const MIRROR_WORKLOADS: [&str; 1] = ["mirror"];

fn known_workload(w: &str) -> bool {
    [
        &WORKLOADS[..],
        &S3_WORKLOADS,
        &TLS_WORKLOADS,
        &MIRROR_WORKLOADS,
    ]
    .iter()
    .any(|list| list.contains(&w))
        || w == METRICS
}

fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_path_buf()
}

/// The options in `args` (without the program name); `None` for `--help`.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Opts>> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join("target"));
    let mut o = Opts {
        quick: false,
        berth: target.join("release/berth"),
        reference: PathBuf::from("/usr/bin/docker-registry"),
        skip_reference: false,
        baseline: None,
        rounds: None,
        duration: None,
        data_dir: None,
        out: None,
        keep: false,
        only: Vec::new(),
        s3_part_size: None,
        s3_parallel_parts: None,
        s3_cache: None,
    };
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{a} needs a value\n{}", usage()))
        };
        match a.as_str() {
            "--quick" => o.quick = true,
            "--berth" => o.berth = PathBuf::from(value()?),
            "--reference" => o.reference = PathBuf::from(value()?),
            "--skip-reference" => o.skip_reference = true,
            "--baseline" => o.baseline = Some(PathBuf::from(value()?)),
            "--rounds" => o.rounds = Some(value()?.parse().context("--rounds")?),
            "--duration" => o.duration = Some(value()?.parse().context("--duration")?),
            "--data-dir" => o.data_dir = Some(PathBuf::from(value()?)),
            "--out" => o.out = Some(PathBuf::from(value()?)),
            "--keep" => o.keep = true,
            "--only" => {
                let v = value()?;
                for w in v.split(',') {
                    ensure!(
                        known_workload(w),
                        "unknown workload {w:?} (one of {WORKLOADS:?}, {MIRROR_WORKLOADS:?}, \
                         {S3_WORKLOADS:?}, {TLS_WORKLOADS:?} or {METRICS:?})"
                    );
                    o.only.push(w.to_string());
                }
            }
            "--s3" => o.only.extend(S3_WORKLOADS.map(String::from)),
            "--tls" => o.only.extend(TLS_WORKLOADS.map(String::from)),
            "--s3-part-size" => o.s3_part_size = Some(value()?),
            "--s3-cache" => o.s3_cache = Some(value()?),
            "--s3-parallel-parts" => {
                o.s3_parallel_parts = Some(value()?.parse().context("--s3-parallel-parts")?)
            }
            "-h" | "--help" => return Ok(None),
            _ => bail!("unknown argument {a:?}\n{}", usage()),
        }
    }
    Ok(Some(o))
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn say(msg: &str) {
    println!("{msg}");
    let _ = std::io::stdout().flush();
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.lines().next().unwrap_or_default().trim().to_string()
        })
        .unwrap_or_default()
}

fn machine(reference: &Path) -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let sha_ni = cpuinfo
        .lines()
        .any(|l| l.starts_with("flags") && l.contains(" sha_ni"));
    let ram_kib = proc_file_kib("/proc/meminfo", "MemTotal:");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    let git = first_line(
        "git",
        &[
            "-C",
            &workspace_dir().to_string_lossy(),
            "rev-parse",
            "--short",
            "HEAD",
        ],
    );
    json!({
        "date": first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        "nproc": nproc,
        "cpu": cpu,
        "sha_ni": sha_ni,
        "ram": format!("{:.1} GiB", ram_kib as f64 / 1024.0 / 1024.0),
        "kernel": kernel,
        "berth_commit": git,
        "reference_version": first_line(&reference.to_string_lossy(), &["--version"]),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Single-core sha256 (the sha2 crate) over `bytes`, MB/s.
fn sha256_speed(bytes: u64) -> f64 {
    let buf = vec![0x5au8; (64 * MIB).min(bytes) as usize];
    let runs: Vec<f64> = (0..3)
        .map(|_| {
            let t = Instant::now();
            let mut h = Sha256::new();
            let mut left = bytes;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                h.update(&buf[..n]);
                left -= n as u64;
            }
            std::hint::black_box(h.finalize());
            mbps(bytes, t.elapsed())
        })
        .collect();
    median(runs)
}

/// Sequential write of `bytes` in 1 MiB writes, then fsync, MB/s.
fn fsync_write_speed(dir: &Path, bytes: u64) -> Result<f64> {
    let buf = Blob::base_block();
    let mut runs = Vec::new();
    for i in 0..3 {
        let path = dir.join(format!("fsync-test-{i}"));
        let t = Instant::now();
        let mut f = std::fs::File::create(&path)?;
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            f.write_all(&buf[..n])?;
            left -= n as u64;
        }
        f.sync_all()?;
        drop(f);
        runs.push(mbps(bytes, t.elapsed()));
        std::fs::remove_file(&path)?;
    }
    Ok(median(runs))
}

fn htpasswd_line() -> Result<String> {
    let hash =
        bcrypt::hash_with_result(PASSWORD, BCRYPT_COST)?.format_for_version(bcrypt::Version::TwoA);
    Ok(format!("{USER}:{hash}\n"))
}

/// The repository of the tags workload, and of the UI's tags page.
const TAGS_REPO: &str = "bench/tags";

/// Whether [`TAGS_REPO`] is populated.
fn wants_tags_repo(opts: &Opts) -> bool {
    opts.wants_any(&["tags", "ui"])
}

/// Whether the `plan.repos` repositories are populated.
fn wants_repos(opts: &Opts) -> bool {
    opts.wants_any(&["catalog", "ui", METRICS])
}

/// How many repositories [`populate`] writes.
fn populated_repos(plan: &Plan, opts: &Opts) -> usize {
    1 + usize::from(wants_tags_repo(opts)) + plan.repos * usize::from(wants_repos(opts))
}

/// Writes the image used by manifest-get and, when their workloads run,
/// the tags (each its own manifest) and repositories (each with one tag)
/// to list and browse.
fn populate(root: &Path, plan: &Plan, opts: &Opts) -> Result<()> {
    let l = layout::Layout::new(root, layout::Image::sample())?;
    l.repo("bench/app", ["latest".to_string()])?;
    if wants_tags_repo(opts) {
        l.repo_per_tag(TAGS_REPO, plan.tags)?;
    }
    if wants_repos(opts) {
        for i in 0..plan.repos {
            l.repo(&format!("catalog/r{i:05}"), ["latest".to_string()])?;
        }
    }
    ensure!(!l.image().manifest.is_empty());
    Ok(())
}

/// [`populate`]s each of `roots` at once (a thread each), syncs the disk
/// and says how long it took to populate `what`.
fn populate_all(roots: &[PathBuf], plan: &Plan, opts: &Opts, what: &str) -> Result<()> {
    let t = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = roots
            .iter()
            .map(|r| s.spawn(|| populate(r, plan, opts)))
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("populate thread"))
    })?;
    sync_disk();
    say(&format!(
        "populated {what} in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Deletes a pushed blob from disk (untimed), so every push writes a new
/// blob and the disk does not fill up. Blobs in a bucket stay (the bucket
/// goes with the data directory).
fn remove_blob(s: &Server, repo: &str, digest: &str) {
    let hex = digest.trim_start_matches("sha256:");
    let Some(v2) = s.v2() else {
        return;
    };
    let _ = std::fs::remove_dir_all(v2.join(format!("blobs/sha256/{}/{hex}", &hex[..2])));
    let _ = std::fs::remove_dir_all(v2.join(format!("repositories/{repo}/_layers/sha256/{hex}")));
}

/// The seed of the blob the pull workloads pull.
const PULL_SEED: u64 = 0xB16;

static SEED: AtomicU64 = AtomicU64::new(1);

fn next_seed() -> u64 {
    (u64::from(std::process::id()) << 32) | SEED.fetch_add(1, Ordering::Relaxed)
}

/// The data directory of server `name` in `dir`.
fn data_root(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}-data"))
}

fn sync_disk() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Server order of a round: alternating which one goes first.
fn order(round: usize, n: usize) -> Vec<usize> {
    if n == 1 {
        vec![0]
    } else if round.is_multiple_of(2) {
        vec![0, 1]
    } else {
        vec![1, 0]
    }
}

/// The metrics of a run (those on disk when any workload on disk runs,
/// then those on S3 when they run): against the reference with berth's
/// targets, or against a baseline with [`NOT_WORSE`] for each.
fn metrics(plan: &Plan, baseline: bool) -> Vec<Metric> {
    let mut all = reference_metrics(plan);
    if baseline {
        for m in &mut all {
            m.target = Target::NotWorse(NOT_WORSE);
        }
    }
    // berth with and without its admin listener, whatever it runs beside.
    all.extend(admin::metrics(plan).into_iter().filter(|_| plan.metrics));
    all
}

fn reference_metrics(plan: &Plan) -> Vec<Metric> {
    let size = |b: u64| {
        if b >= MIB {
            format!("{} MiB", b / MIB)
        } else {
            format!("{} KiB", b / 1024)
        }
    };
    let m = |key, label: String, unit, better, agg, target| Metric {
        key,
        label,
        unit,
        better,
        agg,
        target,
        servers: None,
    };
    use Agg::*;
    use Better::*;
    // The kinds of metric: throughput, request rate, latency and memory.
    let mbps = |key, label, target| m(key, label, "MB/s", Higher, Median, target);
    let rps = |key, label, target| m(key, label, "req/s", Higher, Median, target);
    let ms = |key, label: &str, target| m(key, label.into(), "ms", Lower, Median, target);
    let rss = |key, label, agg, target| m(key, label, "MiB", Lower, agg, target);
    let push = Target::RatioAndLimit(4.0, 0.6);
    let big = size(plan.big);
    let (push_n, push_size) = (plan.conc_push.0, size(plan.conc_push.1));
    let (pull_n, pull_size) = (plan.conc_pull.0, size(plan.conc_pull.1));
    let s3 = [
        mbps(
            "s3_push_mono",
            format!("S3: push-mono {big} (POST + PUT)"),
            Target::Ratio(2.0),
        ),
        mbps(
            "s3_push_conc",
            format!("S3: push-chunked {push_n}×{push_size} concurrent"),
            Target::Ratio(2.0),
        ),
        mbps(
            "s3_pull_first",
            format!("S3: first pull {big} (berth's blob cache empty)"),
            Target::None,
        ),
        mbps("s3_pull", format!("S3: pull {big}"), Target::Ratio(1.5)),
        rss(
            "s3_rss_push_conc",
            format!("S3: peak RSS, {push_n}×{push_size} pushes"),
            Max,
            Target::None,
        ),
        rss(
            "s3_rss_pull",
            "S3: peak RSS, pull".into(),
            Max,
            Target::None,
        ),
    ];
    let mut disk = vec![
        mbps("push_mono", format!("push-mono {big} (POST + PUT)"), push),
        mbps(
            "push_stream",
            format!("push-chunked {big} (streamed PATCH)"),
            push,
        ),
        mbps(
            "push_conc",
            format!("push-chunked {push_n}×{push_size} concurrent"),
            push,
        ),
        mbps("pull", format!("pull {big}"), Target::Ratio(1.5)),
        mbps(
            "pull_conc",
            format!("pull {pull_n}×{pull_size} concurrent"),
            Target::Ratio(1.5),
        ),
        rps(
            "manifest_rps",
            format!("manifest GET by tag, {} conns", plan.conns),
            Target::Ratio(20.0),
        ),
        ms("manifest_p50", "manifest GET p50", Target::None),
        ms("manifest_p99", "manifest GET p99", Target::AtMost(10.0)),
        rps(
            "tags_rps",
            format!("tags/list, {} tags, {} conns", plan.tags, plan.list_conns),
            Target::Ratio(5.0),
        ),
        rps(
            "catalog_rps",
            format!(
                "_catalog pages (n={}), {} repos, {} conns",
                plan.catalog_page, plan.repos, plan.list_conns
            ),
            Target::Ratio(5.0),
        ),
    ];
    // berth's web UI (the reference has none): p50 and p99 of each page.
    let ui_pages = [
        format!("UI home page, {} repos", plan.repos),
        format!("UI tags page, {} tags", plan.tags),
        format!("UI tags page by push time, {} tags", plan.tags),
    ];
    for ((_, [p50, p99]), page) in ui_requests().into_iter().zip(ui_pages) {
        disk.push(ms(p50, &format!("{page}, p50"), Target::None));
        disk.push(ms(p99, &format!("{page}, p99"), Target::AtMost(20.0)));
    }
    disk.extend([
        rss("rss_idle", "RSS idle".into(), Median, Target::AtMost(15.0)),
        rss(
            "rss_push_stream",
            format!("peak RSS, push-chunked {big}"),
            Max,
            Target::None,
        ),
        rss(
            "rss_push_conc",
            format!("peak RSS, {push_n}×{push_size} pushes"),
            Max,
            Target::AtMost(64.0),
        ),
        rss("rss_pull", "peak RSS, pulls".into(), Max, Target::None),
        rss(
            "rss_after",
            "RSS after the workloads".into(),
            Median,
            Target::None,
        ),
        rss(
            "vmhwm",
            "VmHWM (peak RSS since start)".into(),
            Max,
            Target::None,
        ),
    ]);
    // Through the mirror, against the same pull without it.
    let mirror = [
        mbps(
            "mirror_pull_cached",
            format!("mirror: pull {big}, cached (direct: berth mirroring nothing)"),
            Target::Ratio(1.0),
        ),
        mbps(
            "mirror_pull_cold",
            format!("mirror: cold pull {big} (direct: from the upstream)"),
            Target::Ratio(0.9),
        ),
    ]
    .into_iter()
    .chain(mirror::LINKS.iter().map(|wan| {
        mbps(
            wan.key,
            format!("mirror: cold pull {big}, upstream over {} Gbit/s", wan.gbit),
            Target::Ratio(0.9),
        )
    }))
    .chain([rss(
        "mirror_rss_cold",
        "mirror: peak RSS, cold pulls".into(),
        Max,
        Target::None,
    )])
    .map(|m| Metric {
        servers: Some(mirror::NAMES),
        ..m
    });
    let disk = disk.into_iter().filter(|_| plan.disk);
    let tls_push = Target::Ratio(4.0);
    let tls = [
        mbps(
            "tls_push_mono",
            format!("TLS: push-mono {big} (POST + PUT)"),
            tls_push,
        ),
        mbps(
            "tls_push_stream",
            format!("TLS: push-chunked {big} (streamed PATCH)"),
            tls_push,
        ),
        mbps(
            "tls_push_conc",
            format!("TLS: push-chunked {push_n}×{push_size} concurrent"),
            tls_push,
        ),
        mbps("tls_pull", format!("TLS: pull {big}"), Target::Ratio(3.0)),
        mbps(
            "tls_pull_conc",
            format!("TLS: pull {pull_n}×{pull_size} concurrent"),
            Target::Ratio(3.0),
        ),
        rps(
            "tls_manifest_rps",
            format!("TLS: manifest GET by tag, {} conns", plan.conns),
            Target::Ratio(50.0),
        ),
        ms("tls_manifest_p50", "TLS: manifest GET p50", Target::None),
        ms(
            "tls_manifest_p99",
            "TLS: manifest GET p99",
            Target::AtMost(5.0),
        ),
        mbps(
            "tls_h2_pull",
            format!("TLS, HTTP/2: pull {big}"),
            Target::Ratio(3.0),
        ),
        rps(
            "tls_h2_manifest_rps",
            format!(
                "TLS, HTTP/2: manifest GET, {} streams on {} conns",
                tls::H2_CONNS * tls::H2_STREAMS,
                tls::H2_CONNS
            ),
            Target::Ratio(50.0),
        ),
        ms(
            "tls_h2_manifest_p50",
            "TLS, HTTP/2: manifest GET p50",
            Target::None,
        ),
        ms(
            "tls_h2_manifest_p99",
            "TLS, HTTP/2: manifest GET p99",
            Target::AtMost(5.0),
        ),
    ];
    let mirror = mirror.into_iter().filter(|_| plan.mirror);
    disk.chain(mirror)
        .chain(s3.into_iter().filter(|_| plan.s3))
        .chain(tls.into_iter().filter(|_| plan.tls))
        .collect()
}

/// Runs the benchmark with command-line `args` (without the program name).
pub fn run(args: impl IntoIterator<Item = String>) -> Result<()> {
    let Some(opts) = parse_args(args)? else {
        println!("{}", usage());
        return Ok(());
    };
    let mut plan = Plan::new(&opts);
    // Without Garage the workloads on S3 are left out of a default run;
    // asked for by name, they are an error.
    let mut s3_skipped = None;
    if opts.wants_any(&S3_WORKLOADS) {
        match garage::garage_bin() {
            Ok(_) => plan.s3 = true,
            Err(e) if opts.only.is_empty() => {
                let why = format!("the workloads on S3 are skipped: no Garage ({e:#})");
                say(&why);
                s3_skipped = Some(why);
            }
            Err(e) => return Err(e.context("the workloads on S3 need Garage")),
        }
    }
    // The same for the workloads over TLS and Caddy.
    let mut tls_skipped = None;
    if opts.wants_any(&TLS_WORKLOADS) {
        match tls::caddy_version() {
            Some(_) => plan.tls = true,
            None if opts.only.is_empty() => {
                let why = format!("the workloads over TLS are skipped: no {}", tls::CADDY);
                say(&why);
                tls_skipped = Some(why);
            }
            None => bail!("the workloads over TLS need Caddy ({})", tls::CADDY),
        }
    }
    // The mirror's upstream is the reference: it runs when the reference
    // does (left out of a default run otherwise, an error when asked for).
    let mut mirror_skipped = None;
    if opts.wants_any(&MIRROR_WORKLOADS) {
        if opts.baseline.is_none() && !opts.skip_reference {
            plan.mirror = true;
        } else if opts.only.is_empty() {
            let why = "the mirror workload is skipped: it needs the reference as its upstream \
                       (no --baseline, no --skip-reference)";
            say(why);
            mirror_skipped = Some(why);
        } else {
            bail!("the mirror workload needs the reference as its upstream: no --baseline, no --skip-reference");
        }
    }
    ensure!(
        opts.berth.is_file(),
        "no berth binary at {} (cargo build --release, or --berth PATH)",
        opts.berth.display()
    );
    if let Some(b) = &opts.baseline {
        ensure!(b.is_file(), "no baseline berth binary at {}", b.display());
    } else if !opts.skip_reference {
        ensure!(
            opts.reference.is_file(),
            "no reference registry at {} (apt-get install docker-registry, or --skip-reference)",
            opts.reference.display()
        );
    }
    let parent = opts
        .data_dir
        .clone()
        .unwrap_or_else(|| workspace_dir().join("target"));
    std::fs::create_dir_all(&parent)?;
    let tmp = tempfile::Builder::new()
        .prefix("berth-bench-")
        .tempdir_in(&parent)
        .with_context(|| format!("temp dir in {}", parent.display()))?;
    let dir = tmp.path().to_path_buf();
    say(&format!(
        "berth-bench{}: data in {}",
        if opts.quick { " --quick" } else { "" },
        dir.display()
    ));

    let mut machine = machine(&opts.reference);
    if let Some(b) = &opts.baseline {
        machine["baseline"] = json!(b.display().to_string());
    }
    if plan.s3 {
        machine["garage_version"] = json!(s3::garage_version());
    }
    if let Some(v) = tls::caddy_version().filter(|_| plan.tls) {
        machine["caddy_version"] = json!(v);
    }
    say(&format!("machine: {machine}"));

    say("limits: sha256 and fsync'd write ...");
    let limits = Limits {
        sha256_mbps: sha256_speed(plan.limit_bytes),
        write_mbps: fsync_write_speed(&dir, plan.limit_bytes)?,
    };
    say(&format!(
        "limits: sha256 {:.0} MB/s, fsync'd write {:.0} MB/s",
        limits.sha256_mbps, limits.write_mbps
    ));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let results = {
        let r = rt.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                r = bench(&opts, &plan, &dir) => r,
                _ = tokio::signal::ctrl_c() => bail!("interrupted"),
                _ = term.recv() => bail!("terminated"),
            }
        });
        rt.shutdown_timeout(Duration::from_secs(5));
        r?
    };

    let settings_text = format!(
        "Settings: {} rounds per workload, alternating which server goes first, medians \
         (peaks: max); rate workloads run {:.1} s each; htpasswd bcrypt cost {BCRYPT_COST}; \
         MB/s = 10^6 bytes/s; one client (bench/src/http.rs) for both servers.",
        plan.rounds,
        plan.duration.as_secs_f64()
    );
    let (s3_settings_text, s3_settings) = match &s3_skipped {
        Some(why) => (String::new(), json!({ "skipped": why })),
        None => s3::settings(&opts, &plan),
    };
    let (tls_settings_text, tls_settings) = match &tls_skipped {
        Some(why) => (String::new(), json!({ "skipped": why })),
        None => tls::settings(&plan),
    };
    let settings = json!({
        "quick": opts.quick,
        "rounds": plan.rounds,
        "duration_s": plan.duration.as_secs_f64(),
        "big_bytes": plan.big,
        "concurrent_push": [plan.conc_push.0, plan.conc_push.1],
        "concurrent_pull": [plan.conc_pull.0, plan.conc_pull.1],
        "tags": plan.tags,
        "repositories": plan.repos,
        "manifest_connections": plan.conns,
        "list_connections": plan.list_conns,
        "catalog_page": plan.catalog_page,
        "ui_requests": plan.ui_requests,
        "ui_connections": plan.ui_conns,
        "ui_idle_s": plan.ui_idle.as_secs_f64(),
        "bcrypt_cost": BCRYPT_COST,
        "metrics_scrapes": plan.scrapes,
        "mirror": match mirror_skipped {
            Some(why) => json!({ "skipped": why }),
            None => json!(plan.mirror),
        },
        "s3": s3_settings,
        "tls": tls_settings,
    });
    let all = report::rows(metrics(&plan, opts.baseline.is_some()), &results, limits);
    // On disk and on S3 (berth and the reference or a baseline), then the
    // metrics workload (berth with and without its admin listener).
    let (rows, metrics_rows) = all.split_at(all.iter().take_while(|r| !admin::row(r)).count());
    let names = ["berth", opts.rival()];
    let ratio = format!("berth/{}", &names[1][..3]);
    // The mirror's rows compare servers of their own.
    let (mirror_rows, others): (Vec<&report::Row>, Vec<&report::Row>) =
        rows.iter().partition(|r| mirror::row(r));
    let mirror_ratio = format!("{}/{}", mirror::NAMES[0], mirror::NAMES[1]);
    for (rows, names, ratio) in [
        (&others, names, ratio.as_str()),
        (&mirror_rows, mirror::NAMES, mirror_ratio.as_str()),
    ] {
        if !rows.is_empty() {
            report::print_table(rows.iter().copied(), names, ratio);
        }
    }
    if !metrics_rows.is_empty() {
        report::print_table(metrics_rows, admin::NAMES, admin::RATIO);
    }
    say(&format!(
        "\nlimits: sha256 (one core) {:.0} MB/s, fsync'd sequential write {:.0} MB/s",
        limits.sha256_mbps, limits.write_mbps
    ));
    for why in [
        s3_skipped.as_deref(),
        tls_skipped.as_deref(),
        mirror_skipped,
    ]
    .into_iter()
    .flatten()
    {
        say(&format!("\n{why}"));
    }

    let bench_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_dir = opts
        .out
        .clone()
        .unwrap_or_else(|| bench_dir.join("results"));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    // The mirror's and the admin listener's rows compare servers of their
    // own.
    let names_of = |r: &report::Row| r.metric.servers.unwrap_or(names);
    let out = report::json(&all, &results, limits, machine.clone(), settings, names_of);
    // A full run, one of every workload on S3 with berth's defaults there,
    // or one of the metrics workload: results to keep (latest.json,
    // s3.json, metrics.json, and the README).
    let measured = !opts.quick && opts.compared();
    let on_disk = measured && opts.wants_all(&WORKLOADS);
    let on_s3 = measured && plan.s3 && opts.wants_all(&S3_WORKLOADS) && !opts.s3_tuned();
    let on_tls = measured && plan.tls && opts.wants_all(&TLS_WORKLOADS);
    let on_metrics = !opts.quick && plan.metrics && opts.baseline.is_none();
    let on_mirror = measured && plan.mirror;
    let name = match (
        &opts.baseline,
        on_disk,
        on_s3,
        on_tls,
        on_metrics,
        on_mirror,
    ) {
        (Some(_), ..) => "ab.json",
        (None, true, ..) => "latest.json",
        (None, false, true, ..) => "s3.json",
        (None, false, false, true, ..) => "tls.json",
        (None, false, false, false, true, _) => "metrics.json",
        (None, false, false, false, false, true) => "mirror.json",
        (None, false, false, false, false, false) => "quick.json",
    };
    let json_path = out_dir.join(name);
    std::fs::write(&json_path, serde_json::to_string_pretty(&out)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    say(&format!("\nwrote {}", json_path.display()));
    if opts.out.is_none() && opts.baseline.is_none() {
        let readme = bench_dir.join("README.md");
        // The rows come on disk, the mirror's, on S3, then over TLS.
        let at = |pick: fn(&report::Row) -> bool| rows.iter().position(pick).unwrap_or(rows.len());
        let mirror_at = at(|r| mirror::row(r) || s3::row(r) || tls::row(r));
        let (s3_at, tls_at) = (at(|r| s3::row(r) || tls::row(r)), at(tls::row));
        let metrics_settings = admin::settings(&plan);
        let mirror_settings = mirror::settings(&plan);
        let mirror_ratio = format!("{}/{}", mirror::NAMES[0], mirror::NAMES[1]);
        for (write, section, rows, settings, names, ratio) in [
            (
                on_disk,
                &RESULTS,
                &rows[..mirror_at],
                &settings_text,
                names,
                &ratio,
            ),
            (
                on_mirror,
                &MIRROR_RESULTS,
                &rows[mirror_at..s3_at],
                &mirror_settings,
                mirror::NAMES,
                &mirror_ratio,
            ),
            (
                on_s3,
                &S3_RESULTS,
                &rows[s3_at..tls_at],
                &s3_settings_text,
                names,
                &ratio,
            ),
            (
                on_tls,
                &TLS_RESULTS,
                &rows[tls_at..],
                &tls_settings_text,
                names,
                &ratio,
            ),
            (
                on_metrics,
                &METRICS_RESULTS,
                metrics_rows,
                &metrics_settings,
                admin::NAMES,
                &admin::RATIO.to_string(),
            ),
        ] {
            if write {
                let md = report::markdown(rows, limits, &machine, settings, names, ratio);
                report::update_readme(&readme, section, &md)?;
                say(&format!("wrote {} ({})", readme.display(), section.heading));
            }
        }
    }
    if opts.keep {
        let kept = tmp.keep();
        say(&format!("kept {}", kept.display()));
    } else {
        say(&format!("removing {}", dir.display()));
    }
    Ok(())
}

async fn bench(opts: &Opts, plan: &Plan, dir: &Path) -> Result<Results> {
    let htpasswd = dir.join("htpasswd");
    std::fs::write(&htpasswd, htpasswd_line()?)?;
    let auth = basic_auth(USER, PASSWORD);
    let mut res = Results::default();
    if plan.disk {
        on_disk(opts, plan, dir, &htpasswd, &auth, &mut res).await?;
    }
    if plan.mirror {
        mirror::run(opts, plan, dir, &htpasswd, &auth, &mut res).await?;
    }
    if plan.s3 {
        s3::run(opts, plan, dir, &htpasswd, &auth, &mut res).await?;
    }
    if plan.tls {
        tls::run(opts, plan, dir, &htpasswd, &auth, &mut res).await?;
    }
    if plan.metrics {
        admin::run(opts, plan, dir, &htpasswd, &auth, &mut res).await?;
    }
    Ok(res)
}

/// Starts berth and the server it is compared with (the baseline or the
/// reference), if any, their configs and logs in `dir`, each on
/// `storage(its name)`.
async fn start_servers(
    opts: &Opts,
    dir: &Path,
    htpasswd: &Path,
    wire: Wire,
    storage: impl Fn(&str) -> Storage,
) -> Result<Vec<Server>> {
    let lines = std::fs::read_to_string(htpasswd)?;
    let setup = servers::Setup {
        wire,
        ..servers::Setup::PLAIN
    };
    let berth = &opts.berth;
    let mut servers = vec![servers::start_berth(
        "berth",
        berth,
        dir,
        storage("berth"),
        &lines,
        setup,
    )?];
    if let Some(b) = &opts.baseline {
        let baseline = storage("baseline");
        servers.push(servers::start_berth(
            "baseline", b, dir, baseline, &lines, setup,
        )?);
    } else if !opts.skip_reference {
        let reference = storage("reference");
        servers
            .push(servers::start_reference(&opts.reference, dir, reference, htpasswd, wire).await?);
    }
    for s in &servers {
        say(&format!("{} (pid {}) on {}", s.name, s.pid(), s.addr));
    }
    Ok(servers)
}

/// The workloads on disk: both servers' filesystem drivers on the
/// populated layout.
async fn on_disk(
    opts: &Opts,
    plan: &Plan,
    dir: &Path,
    htpasswd: &Path,
    auth: &str,
    res: &mut Results,
) -> Result<()> {
    let root = |name: &str| data_root(dir, name);
    let mut roots = vec![root("berth")];
    if opts.compared() {
        roots.push(root(opts.rival()));
    }
    populate_all(&roots, plan, opts, "the servers' storage")?;

    let mut servers = start_servers(opts, dir, htpasswd, Wire::Plain, |name| {
        Storage::Dir(root(name))
    })
    .await?;

    // Idle RSS: after one authenticated request and a short settle.
    for (i, s) in servers.iter().enumerate() {
        let mut c = Conn::new(&s.addr, auth);
        let r = c.send("GET", "/v2/", &[], Body::Empty, false).await?;
        ensure!(
            r.status == 200,
            "{}: GET /v2/ answered {}",
            s.name,
            r.status
        );
        tokio::time::sleep(Duration::from_millis(1000)).await;
        res.add("rss_idle", i, mib(proc_status_kib(s.pid(), "VmRSS:")));
    }

    // Checks that both serve the populated data the same way.
    let manifest = Request::manifest("bench/app", "latest");
    let tags = Request::tags(TAGS_REPO);
    let catalog = Request::CatalogWalk {
        n: plan.catalog_page,
    };
    for s in &servers {
        let body = workloads::probe(&s.addr, auth, &manifest).await?;
        workloads::check_manifest(&body)?;
        if opts.wants("tags") {
            let body = workloads::probe(&s.addr, auth, &tags).await?;
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            let n = v["tags"].as_array().map_or(0, Vec::len);
            ensure!(
                n == plan.tags,
                "{}: tags/list has {n} tags, not {}",
                s.name,
                plan.tags
            );
        }
        if opts.wants("catalog") {
            let body = workloads::probe(&s.addr, auth, &catalog).await?;
            let names: Vec<String> = serde_json::from_slice(&body)?;
            let populated = populated_repos(plan, opts);
            ensure!(
                names.len() >= populated,
                "{}: _catalog lists {} repositories, not {populated}",
                s.name,
                names.len(),
            );
        }
    }
    say("both servers serve the populated data");

    blob_workloads(opts, plan, Setup::Disk, &mut servers, auth, res).await?;

    // Rate workloads.
    // Against a baseline, as many rounds as the others: differences of a
    // few percent need them.
    let rate_rounds = match opts.baseline {
        Some(_) => plan.rounds,
        None => plan.rounds.min(3),
    };
    for (name, req, conns, key) in [
        ("manifest-get", &manifest, plan.conns, "manifest"),
        ("tags", &tags, plan.list_conns, "tags"),
        ("catalog", &catalog, plan.list_conns, "catalog"),
    ] {
        let rounds = rate_rounds * usize::from(opts.wants(name));
        let rate = RateWorkload {
            name,
            req,
            conns,
            key,
        };
        rate.run(&mut servers, plan, auth, rounds, Setup::Disk, res)
            .await?;
    }

    if opts.wants("ui") {
        ui_pages(plan, opts, &mut servers, auth, res).await?;
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    for (i, s) in servers.iter().enumerate() {
        res.add("rss_after", i, mib(proc_status_kib(s.pid(), "VmRSS:")));
        res.add("vmhwm", i, mib(proc_status_kib(s.pid(), "VmHWM:")));
    }
    // Servers stop here (Drop), before the data directory goes.
    drop(servers);
    Ok(())
}

/// A workload of requests repeated on many connections for a while.
struct RateWorkload<'a> {
    name: &'a str,
    req: &'a workloads::Request,
    conns: usize,
    /// Its metrics' keys: `KEY_rps`, `KEY_p50` and `KEY_p99`.
    key: &'a str,
}

impl RateWorkload<'_> {
    /// `rounds` rounds of `plan.duration` per server, alternating which
    /// goes first.
    async fn run(
        &self,
        servers: &mut [Server],
        plan: &Plan,
        auth: &str,
        rounds: usize,
        setup: Setup,
        res: &mut Results,
    ) -> Result<()> {
        let (name, key) = (setup.workload(self.name), setup.key(self.key));
        for round in 0..rounds {
            for i in order(round, servers.len()) {
                let s = &mut servers[i];
                let until = workloads::Until::Elapsed(plan.duration);
                let r = workloads::rate(&s.addr, auth, self.req, self.conns, until)
                    .await
                    .with_context(|| format!("{}: {name}", s.name))?;
                record_rate(res, (&key, &name), (round, i, s.name), &r);
                s.check_alive()?;
            }
        }
        Ok(())
    }
}

/// Adds a round of a rate workload to `res` under `KEY_rps`, `KEY_p50` and
/// `KEY_p99` (`key` and the workload's `name`), the `round`'s result of
/// server `i` (called `server`), and says it.
fn record_rate(
    res: &mut Results,
    (key, name): (&str, &str),
    (round, i, server): (usize, usize, &str),
    r: &workloads::Rate,
) {
    res.add(&format!("{key}_rps"), i, r.per_sec);
    res.add(&format!("{key}_p50"), i, r.p50_ms);
    res.add(&format!("{key}_p99"), i, r.p99_ms);
    say(&format!(
        "{name:<17} round {} {server:>9}: {:8.0} req/s ({} requests, p50 {:.2} ms, p99 {:.2} ms)",
        round + 1,
        r.per_sec,
        r.requests,
        r.p50_ms,
        r.p99_ms
    ));
}

/// The pages of berth's web UI the ui workload times, with their metric
/// keys (p50, p99): the home page, and the tags page of [`TAGS_REPO`] as it
/// first shows (by tag) and sorted by push time, newest first.
fn ui_requests() -> [(Request, [&'static str; 2]); 3] {
    let tags = format!("/r/{TAGS_REPO}");
    [
        (Request::page("/"), ["ui_home_p50", "ui_home_p99"]),
        (Request::page(&tags), ["ui_tags_p50", "ui_tags_p99"]),
        (
            Request::page(&format!("{tags}?sort=pushed&order=desc")),
            ["ui_pushed_p50", "ui_pushed_p99"],
        ),
    ]
}

/// The ui workload: each page of [`ui_requests`] `plan.ui_requests` times
/// over `plan.ui_conns` connections, after one request on each and
/// `plan.ui_idle` without any, per round; on berth and a baseline, not on
/// the reference (which has no UI).
async fn ui_pages(
    plan: &Plan,
    opts: &Opts,
    servers: &mut [Server],
    auth: &str,
    res: &mut Results,
) -> Result<()> {
    // What the first row of each page shows: the first repository by
    // name, the first tag, the tag pushed last.
    let newest = (0..plan.tags)
        .min_by_key(|&i| layout::pushed_ago(i, plan.tags))
        .unwrap_or_default();
    let first_rows = [
        "data-repo=\"bench/app\"".to_string(),
        format!("data-tag=\"{}\"", layout::tag_name(0)),
        format!("data-tag=\"{}\"", layout::tag_name(newest)),
    ];
    let pages = ui_requests();
    for s in servers.iter().filter(|s| s.name != "reference") {
        for ((req, _), first_row) in pages.iter().zip(&first_rows) {
            let body = String::from_utf8(workloads::probe(&s.addr, auth, req).await?)?;
            check_ui_page(&body, first_row, populated_repos(plan, opts))
                .with_context(|| format!("{}: UI page {}", s.name, req.path()))?;
        }
    }
    let per_conn = plan.ui_requests.div_ceil(plan.ui_conns) as u64;
    for round in 0..plan.rounds {
        for i in order(round, servers.len()) {
            let s = &mut servers[i];
            if s.name == "reference" {
                continue;
            }
            for (req, [p50, p99]) in &pages {
                let until = workloads::Until::Requests {
                    each: per_conn,
                    idle: plan.ui_idle,
                };
                let r = workloads::rate(&s.addr, auth, req, plan.ui_conns, until)
                    .await
                    .with_context(|| format!("{}: UI page {}", s.name, req.path()))?;
                res.add(p50, i, r.p50_ms);
                res.add(p99, i, r.p99_ms);
                say(&format!(
                    "ui             round {} {:>9}: {:<36} p50 {:.2} ms, p99 {:.2} ms ({} requests, {:.0} req/s)",
                    round + 1,
                    s.name,
                    req.path(),
                    r.p50_ms,
                    r.p99_ms,
                    r.requests,
                    r.per_sec,
                ));
            }
            s.check_alive()?;
        }
    }
    Ok(())
}

/// Checks that a UI page shows what was populated: `first_row` (a `data-`
/// attribute) in its first row, and on the home page at least `repos`
/// repositories in all.
fn check_ui_page(body: &str, first_row: &str, repos: usize) -> Result<()> {
    let row = body
        .split_once("<tr data-")
        .and_then(|(_, rest)| rest.split(['>', ' ']).next())
        .map(|attr| format!("data-{attr}"));
    ensure!(
        row.as_deref() == Some(first_row),
        "first row {row:?}, not {first_row:?}"
    );
    if first_row.starts_with("data-repo=") {
        let shown = body
            .split_once(" repositories")
            .and_then(|(before, _)| before.rsplit('>').next())
            .and_then(|count| count.trim().parse::<usize>().ok());
        ensure!(
            shown.is_some_and(|n| n >= repos),
            "{shown:?} repositories shown, not {repos}"
        );
    }
    Ok(())
}

/// What the push and pull workloads run on.
#[derive(Clone, Copy, PartialEq)]
enum Setup {
    /// The servers' filesystem drivers, over plain HTTP.
    Disk,
    /// Their S3 drivers (one Garage bucket), over plain HTTP.
    S3,
    /// Their filesystem drivers, over TLS (berth's own, Caddy in front of
    /// the reference).
    Tls,
}

impl Setup {
    /// The name of workload `name` here (as `--only` knows it).
    fn workload(self, name: &str) -> String {
        match self {
            Setup::Disk => name.to_string(),
            Setup::S3 => format!("s3-{name}"),
            Setup::Tls => format!("tls-{name}"),
        }
    }

    /// The key of metric `key` here.
    fn key(self, key: &str) -> String {
        match self {
            Setup::Disk => key.to_string(),
            Setup::S3 => format!("{}{key}", s3::KEY_PREFIX),
            Setup::Tls => format!("{}{key}", tls::KEY_PREFIX),
        }
    }
}

/// The push and pull workloads on `store`, those of them wanted: one
/// push-mono and one push-chunked of `plan.big`, `plan.conc_push` streamed
/// pushes at once, a pull of `plan.big` and (not on S3) `plan.conc_pull`
/// pulls at once.
async fn blob_workloads(
    opts: &Opts,
    plan: &Plan,
    store: Setup,
    servers: &mut [Server],
    auth: &str,
    res: &mut Results,
) -> Result<()> {
    let base = Blob::base_block();
    let n = servers.len();
    let wanted = |name: &str| usize::from(opts.wants(&store.workload(name)));

    // push-mono, and push-chunked: one streamed upload
    for (name, how, key, rss_key) in [
        ("push-mono", Upload::Mono, "push_mono", None),
        (
            "push-chunked",
            Upload::Streamed,
            "push_stream",
            Some("rss_push_stream"),
        ),
    ] {
        let rounds = plan.rounds * wanted(name);
        let name = store.workload(name);
        for round in 0..rounds {
            for i in order(round, n) {
                let s = &mut servers[i];
                let blob = Blob::new(base.clone(), next_seed(), plan.big);
                let digest = blob.digest();
                sync_disk();
                let sampler = rss_key.map(|_| RssSampler::start(s.pid()));
                let d = workloads::push(how, &s.addr, auth, "bench/push", &blob, &digest)
                    .await
                    .with_context(|| format!("{}: {name}", s.name))?;
                if let (Some(rss_key), Some(sampler)) = (rss_key, sampler) {
                    res.add(&store.key(rss_key), i, mib(sampler.stop()));
                }
                res.add(&store.key(key), i, mbps(plan.big, d));
                say(&format!(
                    "{name:<17} round {} {:>9}: {:8.0} MB/s",
                    round + 1,
                    s.name,
                    mbps(plan.big, d)
                ));
                remove_blob(s, "bench/push", &digest);
                s.check_alive()?;
            }
        }
    }

    // push-chunked: concurrent streamed uploads
    let (cn, csize) = plan.conc_push;
    let name = store.workload(&format!("push-{cn}x"));
    for round in 0..plan.rounds * wanted("push-concurrent") {
        for i in order(round, n) {
            let s = &mut servers[i];
            let blobs: Vec<(Blob, String)> = (0..cn)
                .map(|_| {
                    let b = Blob::new(base.clone(), next_seed(), csize);
                    let d = b.digest();
                    (b, d)
                })
                .collect();
            sync_disk();
            let sampler = RssSampler::start(s.pid());
            let d = workloads::push_concurrent(&s.addr, auth, "bench/push8", &blobs)
                .await
                .with_context(|| format!("{}: concurrent pushes", s.name))?;
            res.add(&store.key("rss_push_conc"), i, mib(sampler.stop()));
            let total = cn as u64 * csize;
            res.add(&store.key("push_conc"), i, mbps(total, d));
            say(&format!(
                "{name:<17} round {} {:>9}: {:8.0} MB/s",
                round + 1,
                s.name,
                mbps(total, d)
            ));
            for (_, digest) in &blobs {
                remove_blob(s, "bench/push8", digest);
            }
            s.check_alive()?;
        }
    }

    // pull: the same blobs pushed (untimed) to both servers; on S3 one
    // pull only (many at once would measure Garage more than the servers)
    let pull_rounds = plan.rounds * wanted("pull");
    let big = Blob::new(base.clone(), PULL_SEED, plan.big);
    let (pn, psize) = plan.conc_pull;
    let small = (store != Setup::S3).then(|| Blob::new(base.clone(), 0x5A11, psize));
    let blobs: Vec<(&Blob, String)> = [Some(&big), small.as_ref()]
        .into_iter()
        .flatten()
        .map(|b| (b, b.digest()))
        .collect();
    for s in servers.iter().take(pull_rounds.min(1) * n) {
        for (blob, digest) in &blobs {
            workloads::push(Upload::Mono, &s.addr, auth, "bench/pull", blob, digest).await?;
        }
    }
    sync_disk();
    // One read of each first so both pull from the page cache (and berth
    // on S3 from its blob cache): timed on S3.
    for (i, s) in servers.iter().take(pull_rounds.min(1) * n).enumerate() {
        for (blob, digest) in &blobs {
            let d = workloads::pull(&s.addr, auth, "bench/pull", digest, blob.size).await?;
            if store == Setup::S3 {
                res.add(&store.key("pull_first"), i, mbps(blob.size, d));
            }
        }
    }
    let name = store.workload("pull");
    for round in 0..pull_rounds {
        for i in order(round, n) {
            let s = &mut servers[i];
            let sampler = RssSampler::start(s.pid());
            let d = workloads::pull(&s.addr, auth, "bench/pull", &blobs[0].1, plan.big)
                .await
                .with_context(|| format!("{}: pull", s.name))?;
            res.add(&store.key("pull"), i, mbps(plan.big, d));
            let mut line = format!(
                "{name:<17} round {} {:>9}: {:8.0} MB/s",
                round + 1,
                s.name,
                mbps(plan.big, d)
            );
            if let Some((_, small_digest)) = blobs.get(1) {
                let dc = workloads::pull_concurrent(
                    &s.addr,
                    auth,
                    "bench/pull",
                    small_digest,
                    psize,
                    pn,
                )
                .await
                .with_context(|| format!("{}: concurrent pulls", s.name))?;
                let total = pn as u64 * psize;
                res.add(&store.key("pull_conc"), i, mbps(total, dc));
                line.push_str(&format!(", {pn}x: {:8.0} MB/s", mbps(total, dc)));
            }
            res.add(&store.key("rss_pull"), i, mib(sampler.stop()));
            say(&line);
            s.check_alive()?;
        }
    }
    Ok(())
}
