//! The metrics workload (`--only metrics`, berth alone): what berth's admin
//! listener costs. berth runs twice on copies of the same data (the
//! manifest-get image and `plan.repos` repositories): with `[listen]
//! admin`, scraped every second while it serves (as a Prometheus would,
//! more often than most do), and without (then requests are not counted
//! at all). Timed: `plan.scrapes` scrapes of `/metrics` in a row on one
//! connection once the instance's usage is measured (p50, p99); then
//! manifest GETs and push-mono on both, alternating which goes first.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

use crate::http::{Blob, Body, Conn, Endpoint};
use crate::report::{Agg, Better, Metric, Results, Row, Target};
use crate::servers::{self, Admin, Setup, Storage};
use crate::workloads::{self, Request, Upload};
use crate::{
    data_root, mbps, next_seed, order, populate_all, populated_repos, remove_blob, say, sync_disk,
    Opts, Plan, NOT_WORSE,
};

/// What the keys of this workload's metrics start with.
pub const KEY_PREFIX: &str = "metrics_";

/// Its two servers, as the columns of its table name them.
pub const NAMES: [&str; 2] = ["admin on", "admin off"];

/// The header of their ratio.
pub const RATIO: &str = "on/off";

/// How often the server with the admin listener is scraped while timed.
const SCRAPE_EVERY: Duration = Duration::from_secs(1);

/// How long the usage of the populated repositories may take to be
/// measured after the start.
const MEASURED_WITHIN: Duration = Duration::from_secs(300);

/// Whether a row of the report is one of this workload's.
pub fn row(r: &Row) -> bool {
    r.metric.key.starts_with(KEY_PREFIX)
}

/// The rows of this workload.
pub fn metrics(plan: &Plan) -> Vec<Metric> {
    let m = |key, label: String, unit, better, target| Metric {
        key,
        label,
        unit,
        better,
        agg: Agg::Median,
        target,
        servers: Some(NAMES),
    };
    let scrape = format!("scrape of /metrics, {} repos", plan.repos);
    let manifest = format!("manifest GET by tag, {} conns", plan.conns);
    let same = Target::NotWorse(NOT_WORSE);
    vec![
        m(
            "metrics_scrape_p50",
            format!("{scrape}, p50"),
            "ms",
            Better::Lower,
            Target::None,
        ),
        m(
            "metrics_scrape_p99",
            format!("{scrape}, p99"),
            "ms",
            Better::Lower,
            Target::AtMost(10.0),
        ),
        m(
            "metrics_manifest_rps",
            manifest.clone(),
            "req/s",
            Better::Higher,
            same,
        ),
        m(
            "metrics_manifest_p99",
            format!("{manifest}, p99"),
            "ms",
            Better::Lower,
            Target::None,
        ),
        m(
            "metrics_push_mono",
            format!("push-mono {} MiB (POST + PUT)", plan.big >> 20),
            "MB/s",
            Better::Higher,
            same,
        ),
    ]
}

/// The settings of this workload, a sentence for the README.
pub fn settings(plan: &Plan) -> String {
    format!(
        "Settings: berth twice on copies of the same data (one image, {} repositories), with \
         `[listen] admin` (scraped every {} s while timed) and without; {} scrapes of /metrics \
         in a row on one keep-alive connection once the usage is measured; then {} rounds of \
         manifest GETs ({:.1} s, {} connections) and one push-mono each, alternating which \
         server goes first; medians; MB/s = 10^6 bytes/s; one client (bench/src/http.rs).",
        plan.repos,
        SCRAPE_EVERY.as_secs(),
        plan.scrapes,
        plan.rounds,
        plan.duration.as_secs_f64(),
        plan.conns,
    )
}

/// One scrape; the body.
async fn scrape(c: &mut Conn) -> Result<Vec<u8>> {
    let r = c.send("GET", "/metrics", &[], Body::Empty, true).await?;
    ensure!(r.status == 200, "GET /metrics answered {}", r.status);
    Ok(r.body)
}

/// The value of `series` (name and labels) in a scrape.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until the admin listener at `admin` shows the usage of at least
/// `repos` repositories (measured by the server after its start): what a
/// scrape then serves is the full set of series.
async fn wait_for_usage(admin: SocketAddr, auth: &str, repos: usize) -> Result<()> {
    let series = "berth_storage_repositories{registry=\"bench\"}";
    let deadline = Instant::now() + MEASURED_WITHIN;
    let mut c = Conn::new(&Endpoint::plain(admin), auth);
    loop {
        let text = String::from_utf8(scrape(&mut c).await?)?;
        if value(&text, series).is_some_and(|n| n >= repos as f64) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "no usage of {repos} repositories in /metrics after {} s",
            MEASURED_WITHIN.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Scrapes `admin` every [`SCRAPE_EVERY`] until aborted.
async fn keep_scraping(admin: SocketAddr, auth: String) -> Result<()> {
    let mut c = Conn::new(&Endpoint::plain(admin), &auth);
    loop {
        tokio::time::sleep(SCRAPE_EVERY).await;
        scrape(&mut c).await?;
    }
}

/// Runs the workload, its servers and data in `dir`.
pub async fn run(
    opts: &Opts,
    plan: &Plan,
    dir: &Path,
    htpasswd: &Path,
    auth: &str,
    res: &mut Results,
) -> Result<()> {
    let root = |name: &str| data_root(dir, name);
    let names = ["admin-on", "admin-off"];
    let roots: Vec<PathBuf> = names.iter().map(|n| root(n)).collect();
    populate_all(&roots, plan, opts, "two copies for the metrics workload")?;
    let lines = std::fs::read_to_string(htpasswd)?;
    let mut servers = Vec::new();
    for (name, admin) in names.into_iter().zip([Admin::On, Admin::Off]) {
        let storage = Storage::Dir(root(name));
        let s = servers::start_berth(
            name,
            &opts.berth,
            dir,
            storage,
            &lines,
            Setup {
                admin,
                ..Setup::PLAIN
            },
        )?;
        say(&format!("{name} (pid {}) on http://{}", s.pid(), s.addr));
        servers.push(s);
    }
    let admin = servers[0].admin.context("the admin listener")?;

    let repos = populated_repos(plan, opts);
    wait_for_usage(admin, auth, repos).await?;
    let mut c = Conn::new(&Endpoint::plain(admin), auth);
    let size = scrape(&mut c).await?.len();
    let mut lat = Vec::with_capacity(plan.scrapes);
    for _ in 0..plan.scrapes {
        let t = Instant::now();
        scrape(&mut c).await?;
        lat.push(t.elapsed().as_micros() as u32);
    }
    lat.sort_unstable();
    let (p50, p99) = (
        workloads::percentile(&lat, 0.50),
        workloads::percentile(&lat, 0.99),
    );
    res.add("metrics_scrape_p50", 0, p50);
    res.add("metrics_scrape_p99", 0, p99);
    say(&format!(
        "metrics: {} scrapes of {size} bytes ({repos} repositories measured): p50 {p50:.2} ms, p99 {p99:.2} ms",
        plan.scrapes
    ));

    let manifest = Request::manifest("bench/app", "latest");
    let base = Blob::base_block();
    for round in 0..plan.rounds {
        for i in order(round, servers.len()) {
            let s = &mut servers[i];
            let scraper = s
                .admin
                .map(|a| tokio::spawn(keep_scraping(a, auth.to_string())));
            let until = workloads::Until::Elapsed(plan.duration);
            let r = workloads::rate(&s.addr, auth, &manifest, plan.conns, until)
                .await
                .with_context(|| format!("{}: manifest-get", s.name))?;
            res.add("metrics_manifest_rps", i, r.per_sec);
            res.add("metrics_manifest_p99", i, r.p99_ms);
            let blob = Blob::new(base.clone(), next_seed(), plan.big);
            let digest = blob.digest();
            sync_disk();
            let d = workloads::push(Upload::Mono, &s.addr, auth, "bench/push", &blob, &digest)
                .await
                .with_context(|| format!("{}: push-mono", s.name))?;
            res.add("metrics_push_mono", i, mbps(plan.big, d));
            remove_blob(s, "bench/push", &digest);
            if let Some(scraper) = scraper {
                // Only a scrape that failed ends it, with its error.
                match scraper.is_finished() {
                    true => scraper
                        .await?
                        .with_context(|| format!("{}: scraping", s.name))?,
                    false => scraper.abort(),
                }
            }
            say(&format!(
                "metrics round {} {:>9}: manifest GET {:8.0} req/s (p99 {:.2} ms), push-mono {:6.0} MB/s",
                round + 1,
                s.name,
                r.per_sec,
                r.p99_ms,
                mbps(plan.big, d)
            ));
            s.check_alive()?;
        }
    }
    // Servers stop here (Drop), before the data directory goes.
    drop(servers);
    Ok(())
}
