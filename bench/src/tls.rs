//! The workloads over TLS, as users reach their registries: berth's own
//! TLS (its self-signed certificate on the shared https listener) against
//! the stack it replaces, Caddy with `tls internal` reverse-proxying the
//! reference ([`crate::servers`]), both on disk. The client is the one of
//! the other runs, speaking TLS 1.3 through rustls over HTTP/1.1; then
//! hyper's HTTP/2 client for a pull and the manifest GETs ([`crate::h2`]).

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use crate::h2;
use crate::http::Blob;
use crate::report::{Results, Row};
pub use crate::servers::CADDY;
use crate::servers::{Server, Storage, Wire};
use crate::workloads::{self, Request, Upload};
use crate::{
    blob_workloads, data_root, first_line, layout, mbps, order, record_rate, say, start_servers,
    Opts, Plan, RateWorkload, Setup,
};

/// What the keys of the metrics over TLS start with.
pub const KEY_PREFIX: &str = "tls_";

/// Whether a row of the report is one of the workloads over TLS.
pub fn row(r: &Row) -> bool {
    r.metric.key.starts_with(KEY_PREFIX)
}

/// `caddy version`, when Caddy is installed.
pub fn caddy_version() -> Option<String> {
    Path::new(CADDY)
        .is_file()
        .then(|| first_line(CADDY, &["version"]))
}

/// The settings of the workloads over TLS: a sentence for the README and
/// their JSON.
pub fn settings(plan: &Plan) -> (String, serde_json::Value) {
    let caddy = caddy_version().unwrap_or_default();
    let text = format!(
        "Settings: {} rounds per workload, alternating which server goes first, medians \
         (peaks: max); manifest GETs run {:.1} s each; berth with `[tls] mode = \
         \"self-signed\"` on its shared https listener; the reference behind Caddy {} \
         (`tls internal`, `reverse_proxy` with its defaults, no access log); TLS 1.3 and \
         HTTP/1.1 to the client; htpasswd auth on both registries; MB/s = 10^6 bytes/s; one client (bench/src/http.rs, rustls) for \
         both.",
        plan.rounds,
        plan.duration.as_secs_f64(),
        caddy.split_whitespace().next().unwrap_or_default(),
    );
    let json = json!({
        "caddy": caddy,
        "berth": { "tls": "self-signed", "listener": "shared https" },
        "reference": { "front": "caddy tls internal, reverse_proxy" },
        "client": "rustls, HTTP/1.1",
    });
    (text, json)
}

/// Starts berth over TLS and the reference behind Caddy, each on a
/// directory of its own holding the manifest-get image, and runs the
/// workloads over TLS.
pub async fn run(
    opts: &Opts,
    plan: &Plan,
    dir: &Path,
    htpasswd: &Path,
    auth: &str,
    res: &mut Results,
) -> Result<()> {
    let dir = dir.join("tls");
    let root = |name: &str| data_root(&dir, name);
    for name in ["berth", opts.rival()] {
        let l = layout::Layout::new(&root(name), layout::Image::sample())?;
        l.repo("bench/app", ["latest".to_string()])?;
    }
    let mut servers = start_servers(opts, &dir, htpasswd, Wire::Tls, |name| {
        Storage::Dir(root(name))
    })
    .await?;
    let manifest = Request::manifest("bench/app", "latest");
    for s in &servers {
        let body = workloads::probe(&s.addr, auth, &manifest).await?;
        workloads::check_manifest(&body)?;
    }
    say("both servers serve the image over TLS");
    blob_workloads(opts, plan, Setup::Tls, &mut servers, auth, res).await?;
    let rate = RateWorkload {
        name: "manifest-get",
        req: &manifest,
        conns: plan.conns,
        key: "manifest",
    };
    let rounds = plan.rounds * usize::from(opts.wants("tls-manifest-get"));
    rate.run(&mut servers, plan, auth, rounds, Setup::Tls, res)
        .await?;
    h2_workloads(opts, plan, &mut servers, auth, res).await?;
    // The servers stop here (Drop), before the data directory goes.
    drop(servers);
    Ok(())
}

/// HTTP/2 connections of the manifest GETs, and streams on each: as many
/// requests in flight as the HTTP/1.1 workload's connections.
pub const H2_CONNS: usize = 4;
pub const H2_STREAMS: usize = 8;

/// Over HTTP/2 (both servers offer it): the pull of the blob the pull
/// workload pushed, as one stream, and the manifest GETs as streams of
/// [`H2_CONNS`] connections.
async fn h2_workloads(
    opts: &Opts,
    plan: &Plan,
    servers: &mut [Server],
    auth: &str,
    res: &mut Results,
) -> Result<()> {
    let blob = Blob::new(Blob::base_block(), crate::PULL_SEED, plan.big);
    let big = blob.digest();
    let rounds = plan.rounds * usize::from(opts.wants("tls-h2-pull"));
    // The pull workload pushed it, when it ran.
    if rounds > 0 && !opts.wants("tls-pull") {
        for s in servers.iter() {
            workloads::push(Upload::Mono, &s.addr, auth, "bench/pull", &blob, &big).await?;
        }
    }
    for round in 0..rounds {
        for i in order(round, servers.len()) {
            let s = &mut servers[i];
            let d = h2::pull(&s.addr, auth, "bench/pull", &big, plan.big)
                .await
                .with_context(|| format!("{}: pull over HTTP/2", s.name))?;
            res.add("tls_h2_pull", i, mbps(plan.big, d));
            say(&format!(
                "tls-h2-pull       round {} {:>9}: {:8.0} MB/s",
                round + 1,
                s.name,
                mbps(plan.big, d)
            ));
            s.check_alive()?;
        }
    }
    let manifest = Request::manifest("bench/app", "latest");
    for round in 0..plan.rounds * usize::from(opts.wants("tls-h2-manifest-get")) {
        for i in order(round, servers.len()) {
            let s = &mut servers[i];
            let r = h2::rate(
                &s.addr,
                auth,
                &manifest,
                H2_CONNS,
                H2_STREAMS,
                plan.duration,
            )
            .await
            .with_context(|| format!("{}: manifest GETs over HTTP/2", s.name))?;
            let names = ("tls_h2_manifest", "tls-h2-manifest");
            record_rate(res, names, (round, i, s.name), &r);
            s.check_alive()?;
        }
    }
    Ok(())
}
