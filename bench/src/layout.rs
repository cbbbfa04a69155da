//! Writes registry:2's filesystem layout directly on disk, to populate both
//! servers with thousands of tags and repositories in seconds. Both servers
//! read the same layout:
//!
//! ```text
//! docker/registry/v2/blobs/sha256/XX/HEX/data
//! docker/registry/v2/repositories/NAME/_manifests/revisions/sha256/HEX/link
//! docker/registry/v2/repositories/NAME/_manifests/tags/TAG/current/link
//! docker/registry/v2/repositories/NAME/_manifests/tags/TAG/index/sha256/HEX/link
//! docker/registry/v2/repositories/NAME/_layers/sha256/HEX/link
//! ```

use std::fs;
use std::path::{Path, PathBuf};

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
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MANIFEST_MEDIA_TYPE}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{}","size":{}}}]}}"#,
            sha256_hex(&config),
            config.len(),
            sha256_hex(&layer),
            layer.len()
        )
        .into_bytes();
        Image {
            config,
            layer,
            manifest,
        }
    }
}

pub struct Layout {
    v2: PathBuf,
    image: Image,
    config_hex: String,
    layer_hex: String,
    manifest_hex: String,
}

fn link(path: &Path, hex: &str) -> Result<()> {
    fs::create_dir_all(path.parent().expect("link has a parent"))?;
    fs::write(path, format!("sha256:{hex}"))?;
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
            let dir = v2.join(format!("blobs/sha256/{}/{hex}", &hex[..2]));
            fs::create_dir_all(&dir)?;
            fs::write(dir.join("data"), data)?;
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

    /// A repository with the image as its only manifest revision, its layer
    /// linked and no tags: what a catalog listing walks over (berth finds
    /// repositories by `_manifests`, Distribution by `_layers`).
    pub fn bare_repo(&self, name: &str) -> Result<()> {
        let (m, l) = (&self.manifest_hex, &self.layer_hex);
        let repo = self.v2.join("repositories").join(name);
        link(
            &repo.join(format!("_manifests/revisions/sha256/{m}/link")),
            m,
        )?;
        link(&repo.join(format!("_layers/sha256/{l}/link")), l)
    }

    /// A repository holding the image under every tag in `tags`.
    pub fn repo(&self, name: &str, tags: impl IntoIterator<Item = String>) -> Result<()> {
        let repo = self.v2.join("repositories").join(name);
        let m = &self.manifest_hex;
        link(
            &repo.join(format!("_manifests/revisions/sha256/{m}/link")),
            m,
        )?;
        for hex in [&self.config_hex, &self.layer_hex] {
            link(&repo.join(format!("_layers/sha256/{hex}/link")), hex)?;
        }
        for tag in tags {
            let t = repo.join("_manifests/tags").join(tag);
            link(&t.join("current/link"), m)?;
            link(&t.join(format!("index/sha256/{m}/link")), m)?;
        }
        Ok(())
    }
}
