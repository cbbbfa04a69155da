//! The mirror workload: berth as a pull-through mirror of the reference
//! registry (its one upstream, which it logs in to with the benchmark's
//! user), beside berth mirroring nothing and the reference itself, each
//! on its own directory of the data directory's disk. Two comparisons,
//! alternating which server goes first in each round: a pull of a blob
//! the mirror holds against the same pull from berth mirroring nothing
//! (at least as fast), and a cold pull through the mirror (a new blob
//! each round, fetched from the upstream while it is served) against a
//! pull of the same blob from the upstream itself (at least 90 % of its
//! speed). The cold pull runs again with the upstream behind a network
//! link of a few speeds ([`crate::link`]; the mirror's other upstreams,
//! the same server under prefixes of their own), the direct pull over the
//! same link: an upstream on this machine serves from its page cache on
//! the cores the mirror and the client share, where a real one is across
//! a network.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

use crate::http::{Blob, Endpoint};
use crate::link::Link;
use crate::report::{Results, Row};
use crate::servers::{self, RssSampler, Server, Setup, Storage, Wire};
use crate::workloads::{self, Upload};
use crate::{
    data_root, mbps, mib, next_seed, order, remove_blob, say, start_servers, sync_disk, Opts, Plan,
    PASSWORD, USER,
};

/// What the keys of the mirror's metrics start with.
pub const KEY_PREFIX: &str = "mirror_";
/// The two columns of its rows: the pull through the mirror, and the same
/// pull without it.
pub const NAMES: [&str; 2] = ["mirror", "direct"];
/// The repository pulled, on every server.
const REPO: &str = "bench/mirror";
/// Rounds of the cached pulls per round of the plan. A cached pull takes a
/// tenth of a second and single pulls from the page cache swing between
/// 2 and 7 GB/s on both sides alike (the same code serves them), so the
/// comparison takes the medians of more of them.
const CACHED_ROUNDS: usize = 5;

/// A link the cold pulls run over again: the key of its row and its
/// speed.
pub struct Wan {
    pub key: &'static str,
    pub gbit: u64,
}

/// The links of the cold pulls over a network: a gigabit link, as pulls
/// from a public registry get at best, and a faster one.
pub const LINKS: [Wan; 2] = [
    Wan {
        key: "mirror_pull_cold_1g",
        gbit: 1,
    },
    Wan {
        key: "mirror_pull_cold_5g",
        gbit: 5,
    },
];

impl Wan {
    /// The mirror's prefix for the upstream over this link.
    fn prefix(&self) -> String {
        format!("wan{}g", self.gbit)
    }
}

/// Whether a row of the report is one of the mirror's.
pub fn row(r: &Row) -> bool {
    r.metric.key.starts_with(KEY_PREFIX)
}

/// The settings of the mirror workload, for the README.
pub fn settings(plan: &Plan) -> String {
    format!(
        "Settings: {} rounds per comparison ({} of the cached pulls), alternating which server \
         goes first, medians (peaks: max). mirror: berth with the reference as its `[[mirror.upstream]]` (htpasswd, \
         Basic credentials from a `credentials_file`); cached: a blob the mirror fetched \
         before, against the same blob pushed to berth mirroring nothing (direct); cold: a new \
         blob each round pushed to the reference (untimed), then pulled through the mirror, \
         which fetches it as it serves it, stores it and checks its digest before the last \
         byte, and straight from the reference (direct); then the same with the reference \
         behind a link of {} (bench/src/link.rs: a relay on 127.0.0.1 pacing what the \
         reference sends to a token bucket of that rate, for the mirror's upstream and the \
         direct pull alike); the three servers on the same disk; MB/s = 10^6 bytes/s; one \
         client (bench/src/http.rs) for all.",
        plan.rounds,
        plan.rounds * CACHED_ROUNDS,
        LINKS
            .map(|wan| format!("{} Gbit/s", wan.gbit))
            .join(" and ")
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
    let root = |name: &str| data_root(&dir, name);
    let mut servers = start_servers(opts, &dir, htpasswd, Wire::Plain, |name| {
        Storage::Dir(root(name))
    })
    .await?;
    let upstream = servers.get(1).context("the mirror needs the reference")?;
    let credentials = dir.join("upstream-credentials");
    std::fs::write(&credentials, format!("{USER}:{PASSWORD}\n"))?;
    std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o600))?;
    let upstream_table = |registry: &str, url: &str, prefix: &str| {
        format!(
            "\n[[mirror.upstream]]\nregistry = \"{registry}\"\nurl = \"{url}\"\n\
             prefix = \"{prefix}\"\ncredentials_file = {:?}\n",
            credentials.display().to_string()
        )
    };
    let mut table = format!(
        "\n[mirror]{}",
        upstream_table("reference.local", &upstream.addr.to_string(), "")
    );
    let mut links = Vec::new();
    for wan in &LINKS {
        let link = Link::start(upstream.addr.addr, wan.gbit * 125_000_000).await?;
        let prefix = wan.prefix();
        let url = format!("http://{}", link.addr);
        table.push_str(&upstream_table(
            &format!("{prefix}.local"),
            &url,
            &format!("{prefix}/"),
        ));
        links.push((wan, link));
    }
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
    cold(plan, &mut servers, auth, res, None).await?;
    for (wan, link) in &links {
        cold(plan, &mut servers, auth, res, Some((wan, link))).await?;
    }
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
    for round in 0..plan.rounds * CACHED_ROUNDS {
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

/// Pulls of a blob new to the mirror, through it and from its upstream;
/// `over` a link, the upstream's under the link's prefix on the mirror,
/// and straight over the same link.
async fn cold(
    plan: &Plan,
    servers: &mut [Server],
    auth: &str,
    res: &mut Results,
    over: Option<(&Wan, &Link)>,
) -> Result<()> {
    let (key, what, mirror_repo) = match over {
        None => ("mirror_pull_cold", String::new(), REPO.to_string()),
        Some((wan, _)) => (
            wan.key,
            format!(" {} Gbit/s", wan.gbit),
            format!("{}/{REPO}", wan.prefix()),
        ),
    };
    let base = Blob::base_block();
    for round in 0..plan.rounds {
        let blob = Blob::new(base.clone(), next_seed(), plan.big);
        let digest = blob.digest();
        let upstream = &servers[1];
        workloads::push(Upload::Mono, &upstream.addr, auth, REPO, &blob, &digest).await?;
        sync_disk();
        for i in order(round, 2) {
            let s = &mut servers[[2, 1][i]];
            let (to, repo) = match (i, over) {
                (0, _) => (s.addr.clone(), mirror_repo.as_str()),
                (_, Some((_, link))) => (Endpoint::plain(link.addr), REPO),
                (_, None) => (s.addr.clone(), REPO),
            };
            let sampler = (i == 0).then(|| RssSampler::start(s.pid()));
            let d = workloads::pull(&to, auth, repo, &digest, plan.big)
                .await
                .with_context(|| format!("{}: cold pull{what}", s.name))?;
            if let Some(sampler) = sampler {
                res.add("mirror_rss_cold", 0, mib(sampler.stop()));
            }
            res.add(key, i, mbps(plan.big, d));
            say(&format!(
                "{:<17} round {} {:>9}: {:8.0} MB/s",
                format!("mirror cold{what}"),
                round + 1,
                s.name,
                mbps(plan.big, d)
            ));
            s.check_alive()?;
        }
        remove_blob(&servers[1], REPO, &digest);
        remove_blob(&servers[2], &mirror_repo, &digest);
    }
    Ok(())
}
