//! Writes registry:2's filesystem layout directly on disk, to populate both
//! servers with thousands of tags and repositories in seconds. Both servers
//! read the same layout (a tag's push time is the time of its
//! `current/link`):
//!
//! ```text
//! docker/registry/v2/blobs/sha256/XX/HEX/data
//! docker/registry/v2/repositories/NAME/_manifests/revisions/sha256/HEX/link
//! docker/registry/v2/repositories/NAME/_manifests/tags/TAG/current/link
//! docker/registry/v2/repositories/NAME/_manifests/tags/TAG/index/sha256/HEX/link
//! docker/registry/v2/repositories/NAME/_layers/sha256/HEX/link
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Result;
use sha2::{Digest, Sha256};

/// An image: config and one layer, and the OCI manifest naming them.
pub struct Image {
    pub config: Vec<u8>,
    pub layer: Vec<u8>,
    pub manifest: Vec<u8>,
}

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

impl Image {
    pub fn sample() -> Image {
        let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#.to_vec();
        let layer: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut image = Image {
            config,
            layer,
            manifest: Vec::new(),
        };
        image.manifest = image.manifest_named("");
        image
    }

    /// The OCI manifest of the config and the layer; a `name` makes it
    /// another manifest (an annotation) of the same blobs.
    fn manifest_named(&self, name: &str) -> Vec<u8> {
        let annotations = match name {
            "" => String::new(),
            _ => format!(r#","annotations":{{"org.opencontainers.image.ref.name":"{name}"}}"#),
        };
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{MANIFEST_MEDIA_TYPE}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{}","size":{}}}]{annotations}}}"#,
            sha256_hex(&self.config),
            self.config.len(),
            sha256_hex(&self.layer),
            self.layer.len()
        )
        .into_bytes()
    }
}

/// How long before the population tag `i` of `n` of a repository with
/// [`Layout::repo_per_tag`] was pushed: whole minutes, 1 to `n`, in an
/// order unlike the tags' (7919 is a prime, so this is a permutation when
/// it does not divide `n`).
pub fn pushed_ago(i: usize, n: usize) -> Duration {
    let minutes = (i as u64 * 7919 + 4507) % n.max(1) as u64 + 1;
    Duration::from_secs(60 * minutes)
}

pub struct Layout {
    v2: PathBuf,
    image: Image,
    config_hex: String,
    layer_hex: String,
    manifest_hex: String,
}

fn link(path: &Path, hex: &str) -> Result<()> {
    link_at(path, hex, None)
}

/// A link to `hex`, its time set to `time` when given.
fn link_at(path: &Path, hex: &str, time: Option<SystemTime>) -> Result<()> {
    fs::create_dir_all(path.parent().expect("link has a parent"))?;
    let mut f = fs::File::create(path)?;
    f.write_all(format!("sha256:{hex}").as_bytes())?;
    if let Some(t) = time {
        f.set_modified(t)?;
    }
    Ok(())
}

/// Writes `data` as the blob `hex` under `v2`.
fn blob(v2: &Path, hex: &str, data: &[u8]) -> Result<()> {
    let dir = v2.join(format!("blobs/sha256/{}/{hex}", &hex[..2]));
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("data"), data)?;
    Ok(())
}

impl Layout {
    /// Writes the image's blobs under `root/docker/registry/v2/blobs`.
    pub fn new(root: &Path, image: Image) -> Result<Layout> {
        let v2 = root.join("docker/registry/v2");
        let config_hex = sha256_hex(&image.config);
        let layer_hex = sha256_hex(&image.layer);
        let manifest_hex = sha256_hex(&image.manifest);
        for (hex, data) in [
            (&config_hex, &image.config),
            (&layer_hex, &image.layer),
            (&manifest_hex, &image.manifest),
        ] {
            blob(&v2, hex, data)?;
        }
        Ok(Layout {
            v2,
            image,
            config_hex,
            layer_hex,
            manifest_hex,
        })
    }

    pub fn image(&self) -> &Image {
        &self.image
    }

    /// A repository holding the image under every tag in `tags`.
    pub fn repo(&self, name: &str, tags: impl IntoIterator<Item = String>) -> Result<()> {
        let m = &self.manifest_hex;
        let repo = self.repo_dir(name)?;
        link(
            &repo.join(format!("_manifests/revisions/sha256/{m}/link")),
            m,
        )?;
        for tag in tags {
            tag_link(&repo, &tag, m, None)?;
        }
        Ok(())
    }

    /// A repository where each of the `n` tags `t00000`, `t00001`, ... is
    /// its own manifest of the image's config and layer (named after the
    /// tag), pushed [`pushed_ago`] before now.
    pub fn repo_per_tag(&self, name: &str, n: usize) -> Result<()> {
        let repo = self.repo_dir(name)?;
        let now = SystemTime::now();
        for i in 0..n {
            let tag = tag_name(i);
            let manifest = self.image.manifest_named(&tag);
            let m = sha256_hex(&manifest);
            blob(&self.v2, &m, &manifest)?;
            link(
                &repo.join(format!("_manifests/revisions/sha256/{m}/link")),
                &m,
            )?;
            tag_link(&repo, &tag, &m, Some(now - pushed_ago(i, n)))?;
        }
        Ok(())
    }

    /// The directory of repository `name`, with the image's blobs linked
    /// (berth finds repositories by `_manifests`, Distribution by
    /// `_layers`).
    fn repo_dir(&self, name: &str) -> Result<PathBuf> {
        let repo = self.v2.join("repositories").join(name);
        for hex in [&self.config_hex, &self.layer_hex] {
            link(&repo.join(format!("_layers/sha256/{hex}/link")), hex)?;
        }
        Ok(repo)
    }
}

/// The name of tag `i` of [`Layout::repo_per_tag`].
pub fn tag_name(i: usize) -> String {
    format!("t{i:05}")
}

/// Tag `tag` of the repository at `repo` pointing at manifest `m`, its
/// `current/link` timed `pushed` when given.
fn tag_link(repo: &Path, tag: &str, m: &str, pushed: Option<SystemTime>) -> Result<()> {
    let t = repo.join("_manifests/tags").join(tag);
    link_at(&t.join("current/link"), m, pushed)?;
    link(&t.join(format!("index/sha256/{m}/link")), m)
}
