//! The workloads on S3: berth's `s3` driver against the reference's on one
//! Garage bucket ([`crate::garage`]: one node, its files in the data
//! directory), each server under a prefix of its own, with the client and
//! the push and pull workloads of the disk runs.

use std::path::Path;

use anyhow::Result;
use serde_json::json;

use crate::garage::{self, Garage};
use crate::report::{Results, Row};
use crate::servers::{Storage, Wire};
use crate::{blob_workloads, first_line, say, start_servers, Opts, Plan, Setup};

/// What the keys of the metrics on S3 start with.
pub const KEY_PREFIX: &str = "s3_";

/// berth's `part_size` and `parallel_parts` when not set (its defaults).
const DEFAULT_PART_SIZE: &str = "8MiB";
const DEFAULT_PARALLEL_PARTS: usize = 4;
/// berth's blob `cache` on S3 when not given: room for the pulled blob.
pub const DEFAULT_CACHE: &str = "2GiB";

/// The reference's keys go under this prefix, berth's (and the
/// baseline's) under their names.
const REFERENCE_ROOT: &str = "/reference";

/// Whether a row of the report is one of the workloads on S3.
pub fn row(r: &Row) -> bool {
    r.metric.key.starts_with(KEY_PREFIX)
}

/// `garage --version`.
pub fn garage_version() -> String {
    garage::garage_bin()
        .map(|bin| first_line(&bin.to_string_lossy(), &["--version"]))
        .unwrap_or_default()
}

/// The settings of the workloads on S3: a sentence for the README and
/// their JSON.
pub fn settings(opts: &Opts, plan: &Plan) -> (String, serde_json::Value) {
    let part_size = opts.s3_part_size.as_deref().unwrap_or(DEFAULT_PART_SIZE);
    let parallel_parts = opts.s3_parallel_parts.unwrap_or(DEFAULT_PARALLEL_PARTS);
    let cache = opts.s3_cache.as_deref().unwrap_or(DEFAULT_CACHE);
    let version = garage_version();
    let text = format!(
        "Settings: {} rounds per workload, alternating which server goes first, medians \
         (peaks: max); {}: one node (replication 1, sqlite metadata) on the same cores and \
         disk, one bucket: berth under `berth/` with part_size {part_size}, parallel_parts \
         {parallel_parts} and a blob cache of {cache} on the local disk (the first pull of a blob \
         fills it: that pull is timed once per server, the others read the copy), the reference under `reference/` with its s3 driver's defaults \
         (10 MiB chunks); redirects to the bucket off for both (each serves its pulls); MB/s \
         = 10^6 bytes/s; one client (bench/src/http.rs) for both servers.",
        plan.rounds,
        version.split(" [").next().unwrap_or_default()
    );
    let json = json!({
        "garage": version,
        "garage_nodes": 1,
        "berth": {
            "prefix": "berth",
            "part_size": part_size,
            "parallel_parts": parallel_parts,
            "cache": cache,
            "redirect": false,
        },
        "reference": {
            "rootdirectory": REFERENCE_ROOT,
            "driver": "s3, defaults",
            "redirect": false,
        },
    });
    (text, json)
}

/// Starts Garage in `dir`, berth and the other server on its bucket, and
/// runs the workloads on S3.
pub async fn run(
    opts: &Opts,
    plan: &Plan,
    dir: &Path,
    htpasswd: &Path,
    auth: &str,
    res: &mut Results,
) -> Result<()> {
    let dir = dir.join("s3");
    std::fs::create_dir_all(&dir)?;
    say("starting Garage ...");
    let garage = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || Garage::start_in(&dir)).await??
    };
    say(&format!(
        "Garage on {}, bucket {}",
        garage.endpoint(),
        garage.bucket()
    ));
    let credentials = dir.join("aws-credentials");
    garage::write_credentials_file(&credentials, garage.key_id(), garage.secret())?;
    let mut tuning = format!(
        "cache = {:?}\n",
        opts.s3_cache.as_deref().unwrap_or(DEFAULT_CACHE)
    );
    if let Some(size) = &opts.s3_part_size {
        tuning.push_str(&format!("part_size = {size:?}\n"));
    }
    if let Some(n) = opts.s3_parallel_parts {
        tuning.push_str(&format!("parallel_parts = {n}\n"));
    }
    let berth = |prefix: &str| {
        format!(
            "[storage]\ndriver = \"s3\"\nbucket = {:?}\nendpoint = {:?}\nregion = {:?}\n\
             prefix = {prefix:?}\ncredentials_file = {:?}\n{tuning}",
            garage.bucket(),
            garage.endpoint(),
            garage.region(),
            credentials.display().to_string(),
        )
    };
    // Its blob GETs would answer with a redirect to the bucket.
    let reference =
        garage.registry2_storage_yaml(REFERENCE_ROOT) + "  redirect:\n    disable: true\n";
    let mut servers = start_servers(opts, &dir, htpasswd, Wire::Plain, |name| match name {
        "reference" => Storage::Bucket(reference.clone()),
        prefix => Storage::Bucket(berth(prefix)),
    })
    .await?;
    blob_workloads(opts, plan, Setup::S3, &mut servers, auth, res).await?;
    // The servers stop before Garage does.
    drop(servers);
    Ok(())
}
