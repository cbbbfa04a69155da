//! The mirror workload: berth as a pull-through mirror of the reference
//! registry (its one upstream, which it logs in to with the benchmark's
//! user), beside berth mirroring nothing and the reference itself, each
//! on its own directory of the data directory's disk. Two comparisons,
//! alternating which server goes first in each round: a pull of a blob
//! the mirror holds against the same pull from berth mirroring nothing
//! (at least as fast), and a cold pull through the mirror (a new blob
//! each round, fetched from the upstream while it is served) against a
//! pull of the same blob from the upstream itself (at least 90 % of its
//! speed).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

use crate::http::Blob;
use crate::report::{Results, Row};
use crate::servers::{self, RssSampler, Server, Setup, Storage, Wire};
use crate::workloads::{self, Upload};
use crate::{
    mbps, mib, next_seed, order, remove_blob, say, start_servers, sync_disk, Opts, Plan, PASSWORD,
    USER,
};

/// What the keys of the mirror's metrics start with.
pub const KEY_PREFIX: &str = "mirror_";
/// The two columns of its rows: the pull through the mirror, and the same
/// pull without it.
pub const NAMES: [&str; 2] = ["mirror", "direct"];
/// The repository pulled, on every server.
const REPO: &str = "bench/mirror";

/// Whether a row of the report is one of the mirror's.
pub fn row(r: &Row) -> bool {
    r.metric.key.starts_with(KEY_PREFIX)
}

/// The settings of the mirror workload, for the README.
pub fn settings(plan: &Plan) -> String {
    format!(
        "Settings: {} rounds per comparison, alternating which server goes first, medians \
         (peaks: max). mirror: berth with one `[[mirror.upstream]]`, the reference (htpasswd, \
         Basic credentials from a `credentials_file`); cached: a blob the mirror fetched \
         before, against the same blob pushed to berth mirroring nothing (direct); cold: a new \
         blob each round pushed to the reference (untimed), then pulled through the mirror, \
         which fetches it as it serves it, stores it and checks its digest before the last \
         byte, and straight from the reference (direct); the three servers on the same disk; \
         MB/s = 10^6 bytes/s; one client (bench/src/http.rs) for all.",
        plan.rounds
    )
}

/// Starts berth, the reference and berth mirroring the reference in
/// `dir`, and runs the mirror's comparisons.
pub async fn run(
    opts: &Opts,
    plan: &Plan,
    dir: &Path,
    htpasswd: &Path,
    auth: &str,
    res: &mut Results,
) -> Result<()> {
    let dir = dir.join("mirror");
    std::fs::create_dir_all(&dir)?;
    let root = |name: &str| dir.join(format!("{name}-data"));
    let mut servers = start_servers(opts, &dir, htpasswd, Wire::Plain, |name| {
        Storage::Dir(root(name))
    })
    .await?;
    let upstream = servers.get(1).context("the mirror needs the reference")?;
    let credentials = dir.join("upstream-credentials");
    std::fs::write(&credentials, format!("{USER}:{PASSWORD}\n"))?;
    std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o600))?;
    let table = format!(
        "\n[mirror]\n[[mirror.upstream]]\nregistry = \"reference.local\"\nurl = \"{}\"\n\
         credentials_file = {:?}\n",
        upstream.addr,
        credentials.display().to_string()
    );
    let lines = std::fs::read_to_string(htpasswd)?;
    let mirror = servers::start_berth(
        "mirror",
        &opts.berth,
        &dir,
        Storage::Dir(root("mirror")),
        &lines,
        Setup {
            extra: &table,
            ..Setup::PLAIN
        },
    )?;
    say(&format!(
        "mirror (pid {}) on {}, upstream {}",
        mirror.pid(),
        mirror.addr,
        upstream.addr
    ));
    servers.push(mirror);
    cached(plan, &mut servers, auth, res).await?;
    cold(plan, &mut servers, auth, res).await?;
    // Servers stop here (Drop), before the data directory goes.
    drop(servers);
    Ok(())
}

/// Pulls of a blob the mirror holds, through it and from berth on its own.
async fn cached(plan: &Plan, servers: &mut [Server], auth: &str, res: &mut Results) -> Result<()> {
    let blob = Blob::new(Blob::base_block(), 0xCAC4E, plan.big);
    let digest = blob.digest();
    for s in &servers[..2] {
        workloads::push(Upload::Mono, &s.addr, auth, REPO, &blob, &digest).await?;
    }
    // The mirror fetches it; then both read it once, from the page cache
    // after that.
    for s in [&servers[2], &servers[2], &servers[0]] {
        workloads::pull(&s.addr, auth, REPO, &digest, plan.big)
            .await
            .with_context(|| format!("{}: first pull", s.name))?;
    }
    sync_disk();
    for round in 0..plan.rounds {
        for i in order(round, 2) {
            let s = &mut servers[[2, 0][i]];
            let d = workloads::pull(&s.addr, auth, REPO, &digest, plan.big)
                .await
                .with_context(|| format!("{}: cached pull", s.name))?;
            res.add("mirror_pull_cached", i, mbps(plan.big, d));
            say(&format!(
                "mirror cached     round {} {:>9}: {:8.0} MB/s",
                round + 1,
                s.name,
                mbps(plan.big, d)
            ));
            s.check_alive()?;
        }
    }
    Ok(())
}

/// Pulls of a blob new to the mirror, through it and from its upstream.
async fn cold(plan: &Plan, servers: &mut [Server], auth: &str, res: &mut Results) -> Result<()> {
    let base = Blob::base_block();
    for round in 0..plan.rounds {
        let blob = Blob::new(base.clone(), next_seed(), plan.big);
        let digest = blob.digest();
        let upstream = &servers[1];
        workloads::push(Upload::Mono, &upstream.addr, auth, REPO, &blob, &digest).await?;
        sync_disk();
        for i in order(round, 2) {
            let s = &mut servers[[2, 1][i]];
            let sampler = (i == 0).then(|| RssSampler::start(s.pid()));
            let d = workloads::pull(&s.addr, auth, REPO, &digest, plan.big)
                .await
                .with_context(|| format!("{}: cold pull", s.name))?;
            if let Some(sampler) = sampler {
                res.add("mirror_rss_cold", 0, mib(sampler.stop()));
            }
            res.add("mirror_pull_cold", i, mbps(plan.big, d));
            say(&format!(
                "mirror cold       round {} {:>9}: {:8.0} MB/s",
                round + 1,
                s.name,
                mbps(plan.big, d)
            ));
            s.check_alive()?;
        }
        for s in &servers[1..] {
            remove_blob(s, REPO, &digest);
        }
    }
    Ok(())
}
