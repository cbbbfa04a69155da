//! Unit tests of the registry on the in-memory driver (no process, no
//! socket, no disk): `races` (requests against garbage collection,
//! interleaved deterministically and at random), `uploads` (sessions,
//! chunks, failures, several processes on one store) and `retention`
//! (which tags a collection keeps, and what it deletes).

mod races;
mod retention;
mod uploads;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::TryStreamExt;

use super::gc::Run;
use super::retention::Retention;
use super::{BodyStream, Registry};
use crate::coord::Coordinator;
use crate::oci::{Algorithm, Digest, Reference, RegistryError, RepoName, Tag};
use crate::storage::memory::MemDriver;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A registry on a store of its own in memory.
fn memory() -> Registry {
    Registry::new(Arc::new(MemDriver::new()), Coordinator::local())
}

/// Another process on the store of `reg` (sharing its locks, as processes
/// with one coordination do).
fn beside(reg: &Registry) -> Registry {
    Registry::new(reg.driver.clone(), reg.coord.clone())
}

fn body(bytes: Vec<u8>) -> BodyStream {
    Box::pin(futures_util::stream::iter([Ok(Bytes::from(bytes))]))
}

fn repo(name: &str) -> RepoName {
    RepoName::parse(name).unwrap()
}

fn tag(name: &str) -> Reference {
    Reference::Tag(Tag::parse(name).unwrap())
}

/// An image: its manifest's bytes and digest, and its blobs.
#[derive(Clone)]
struct Image {
    manifest: Bytes,
    digest: Digest,
    blobs: Vec<Digest>,
}

fn image(seed: &str) -> (Image, Vec<Vec<u8>>) {
    let config = format!("{{\"seed\":\"{seed}\"}}").into_bytes();
    let layer = format!("layer of {seed}").repeat(10).into_bytes();
    let (c, l) = (
        Digest::of(Algorithm::Sha256, &config),
        Digest::of(Algorithm::Sha256, &layer),
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l.to_string(), "size": layer.len()}],
    })
    .to_string();
    let img = Image {
        digest: Digest::of(Algorithm::Sha256, manifest.as_bytes()),
        manifest: Bytes::from(manifest),
        blobs: vec![c, l],
    };
    (img, vec![config, layer])
}

async fn push(reg: &Registry, r: &RepoName, t: &str, seed: &str) -> Result<Image, RegistryError> {
    let (img, blobs) = image(seed);
    for (d, data) in img.blobs.iter().zip(blobs) {
        reg.put_blob(r, "", d, body(data), None).await?;
    }
    put(reg, r, t, &img).await?;
    Ok(img)
}

async fn put(reg: &Registry, r: &RepoName, t: &str, img: &Image) -> Result<(), RegistryError> {
    reg.put_manifest(r, &tag(t), Some(OCI_MANIFEST), img.manifest.clone(), None)
        .await
        .map(drop)
}

/// The content of blob `d` of repository `r`.
async fn read_blob(reg: &Registry, r: &RepoName, d: &Digest) -> Vec<u8> {
    let blob = reg
        .blob(r, d)
        .await
        .unwrap_or_else(|e| panic!("blob {d} of {r} is lost: {e}"));
    let pieces: Vec<Bytes> = blob
        .open(0, blob.size)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    pieces.concat()
}

/// Fails unless `t` resolves to `img` and every blob of it can be read.
async fn assert_pullable(reg: &Registry, r: &RepoName, t: &str, img: &Image) {
    let m = reg
        .manifest(r, &tag(t))
        .await
        .unwrap_or_else(|e| panic!("{r}:{t} is lost: {e}"));
    assert_eq!(m.digest, img.digest, "{r}:{t}");
    for b in &img.blobs {
        let data = read_blob(reg, r, b).await;
        assert_eq!(Digest::of(Algorithm::Sha256, &data), *b, "blob of {r}:{t}");
    }
}

fn policy(grace: Duration) -> Retention {
    Retention {
        gc_grace: grace,
        ..Retention::default()
    }
}

/// A clock two hours ahead: everything written so far is past the
/// default grace of an hour.
fn later() -> SystemTime {
    SystemTime::now() + Duration::from_secs(7200)
}

/// A real run on the clock of [`later`].
fn run_at_later<'a>(policy: &'a Retention, pulls: &'a HashMap<String, SystemTime>) -> Run<'a> {
    Run {
        policy,
        pulls,
        now: later(),
        dry_run: false,
    }
}
