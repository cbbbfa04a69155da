//! Manifest parsing and validation: what a pushed manifest is, what it
//! references, and what it says about itself. Pure functions over bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::oci::{media, Digest, RegistryError};

/// Largest manifest accepted.
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

/// A content descriptor as it appears in manifests and referrers responses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

/// Image manifest or index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Image,
    Index,
}

/// What berth needs to know of a manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub media_type: String,
    pub kind: Kind,
    /// Config and layers that must be present in the repository.
    pub blobs: Vec<Digest>,
    /// Child manifests (indexes) that must be present in the repository.
    pub children: Vec<Digest>,
    pub subject: Option<Digest>,
    /// `artifactType`, or for images without one the config media type.
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
    /// The `urls` of its config and layers, where clients fetch those
    /// from (see [`super::urls`]).
    pub urls: Vec<String>,
}

fn invalid(msg: impl Into<String>) -> RegistryError {
    RegistryError::ManifestInvalid(msg.into())
}

fn schema1() -> RegistryError {
    invalid(
        "Docker schema1 manifests are not supported; push schema2 or OCI \
         (any current docker, podman or skopeo does)",
    )
}

/// Media types whose blobs live elsewhere and need not be pushed.
fn is_foreign_layer(media_type: &str) -> bool {
    media_type == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
        || media_type.starts_with("application/vnd.oci.image.layer.nondistributable.")
}

fn descriptor_digest(d: &Descriptor, field: &str) -> Result<Digest, RegistryError> {
    if d.size < 0 {
        return Err(invalid(format!("{field}: negative size")));
    }
    Digest::parse(&d.digest).map_err(|_| invalid(format!("{field}: invalid digest '{}'", d.digest)))
}

/// Parses and validates a manifest. `content_type` is the request's
/// Content-Type (without parameters); it must agree with the body.
pub fn parse(content_type: Option<&str>, bytes: &[u8]) -> Result<Manifest, RegistryError> {
    if bytes.len() > MAX_MANIFEST_SIZE {
        return Err(RegistryError::ManifestTooLarge(format!(
            "manifest is {} bytes; the limit is {MAX_MANIFEST_SIZE}",
            bytes.len()
        )));
    }
    let ct = content_type.filter(|ct| is_manifest_type(ct));
    if matches!(
        ct,
        Some(media::DOCKER_SCHEMA1 | media::DOCKER_SCHEMA1_SIGNED)
    ) {
        return Err(schema1());
    }
    let raw: RawManifest = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("manifest is not valid JSON: {e}")))?;
    if raw.schema_version == Some(1) {
        return Err(schema1());
    }
    if raw.schema_version != Some(2) {
        return Err(invalid("schemaVersion must be 2"));
    }
    // The body alone says what it is, as garbage collection, referrers and
    // pulls read it later without the Content-Type it was pushed with.
    let media_type = match (raw.media_type.as_deref(), &raw.manifests, &raw.config) {
        (Some(mt), _, _) => mt.to_string(),
        (None, Some(_), _) => media::OCI_INDEX.to_string(),
        (None, None, Some(_)) => media::OCI_MANIFEST.to_string(),
        (None, None, None) => return Err(invalid("cannot tell the manifest's media type")),
    };
    if let Some(ct) = ct {
        if ct != media_type {
            let source = if raw.media_type.is_some() {
                "mediaType"
            } else {
                "content (it has no mediaType)"
            };
            return Err(invalid(format!(
                "Content-Type '{ct}' does not match the manifest's {source}: '{media_type}'"
            )));
        }
    }
    let kind = match media_type.as_str() {
        media::OCI_MANIFEST | media::DOCKER_MANIFEST => Kind::Image,
        media::OCI_INDEX | media::DOCKER_MANIFEST_LIST => Kind::Index,
        media::DOCKER_SCHEMA1 | media::DOCKER_SCHEMA1_SIGNED => return Err(schema1()),
        other => {
            return Err(invalid(format!(
                "unsupported manifest media type '{other}'"
            )))
        }
    };
    let mut blobs = Vec::new();
    let mut children = Vec::new();
    let mut artifact_type = raw.artifact_type.clone();
    let mut urls = Vec::new();
    match kind {
        Kind::Image => {
            let config = raw
                .config
                .as_ref()
                .ok_or_else(|| invalid("image manifest has no config"))?;
            blobs.push(descriptor_digest(config, "config")?);
            let layers = raw
                .layers
                .as_ref()
                .ok_or_else(|| invalid("image manifest has no layers"))?;
            urls = std::iter::once(config)
                .chain(layers)
                .flat_map(|d| d.urls.iter().flatten().cloned())
                .collect();
            for (i, layer) in layers.iter().enumerate() {
                let d = descriptor_digest(layer, &format!("layers[{i}]"))?;
                if !is_foreign_layer(&layer.media_type) {
                    blobs.push(d);
                }
            }
            if artifact_type.is_none() {
                artifact_type = Some(config.media_type.clone());
            }
        }
        Kind::Index => {
            let manifests = raw
                .manifests
                .as_ref()
                .ok_or_else(|| invalid("index has no manifests"))?;
            for (i, m) in manifests.iter().enumerate() {
                children.push(descriptor_digest(m, &format!("manifests[{i}]"))?);
            }
        }
    }
    let subject = raw
        .subject
        .as_ref()
        .map(|s| descriptor_digest(s, "subject"))
        .transpose()?;
    Ok(Manifest {
        media_type,
        kind,
        blobs,
        children,
        subject,
        artifact_type,
        annotations: raw.annotations,
        urls,
    })
}

fn is_manifest_type(ct: &str) -> bool {
    matches!(
        ct,
        media::OCI_MANIFEST
            | media::OCI_INDEX
            | media::DOCKER_MANIFEST
            | media::DOCKER_MANIFEST_LIST
            | media::DOCKER_SCHEMA1
            | media::DOCKER_SCHEMA1_SIGNED
    )
}

/// The media type of a stored manifest (stored content was validated on push;
/// a registry:2 root may hold anything, so this never fails).
pub fn stored_media_type(bytes: &[u8]) -> String {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Peek {
        media_type: Option<String>,
        schema_version: Option<i64>,
        manifests: Option<serde::de::IgnoredAny>,
        signatures: Option<serde::de::IgnoredAny>,
    }
    match serde_json::from_slice::<Peek>(bytes) {
        Ok(Peek {
            media_type: Some(mt),
            ..
        }) => mt,
        Ok(Peek {
            schema_version: Some(1),
            signatures: Some(_),
            ..
        }) => media::DOCKER_SCHEMA1_SIGNED.to_string(),
        Ok(Peek {
            schema_version: Some(1),
            ..
        }) => media::DOCKER_SCHEMA1.to_string(),
        Ok(Peek {
            manifests: Some(_), ..
        }) => media::OCI_INDEX.to_string(),
        _ => media::OCI_MANIFEST.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":3}}]{extra}}}"#,
            media::OCI_MANIFEST,
            d('a'),
            d('b')
        )
    }

    #[test]
    fn image_manifest() {
        let m = parse(Some(media::OCI_MANIFEST), image("").as_bytes()).unwrap();
        assert_eq!(m.kind, Kind::Image);
        assert_eq!(m.blobs.len(), 2);
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        let with_subject = image(&format!(
            r#","artifactType":"x/y","subject":{{"mediaType":"{}","digest":"{}","size":1}}"#,
            media::OCI_MANIFEST,
            d('c')
        ));
        let m = parse(None, with_subject.as_bytes()).unwrap();
        assert_eq!(m.subject.unwrap().to_string(), d('c'));
        assert_eq!(m.artifact_type.as_deref(), Some("x/y"));
    }

    #[test]
    fn index_and_inference() {
        let idx = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{}","size":5}}]}}"#,
            media::OCI_MANIFEST,
            d('e')
        );
        let m = parse(None, idx.as_bytes()).unwrap();
        assert_eq!(m.kind, Kind::Index);
        assert_eq!(m.media_type, media::OCI_INDEX);
        assert_eq!(m.children.len(), 1);
        assert_eq!(stored_media_type(idx.as_bytes()), media::OCI_INDEX);
    }

    #[test]
    fn rejections() {
        let err = |ct: Option<&str>, body: &str| parse(ct, body.as_bytes()).unwrap_err();
        assert!(err(None, "{").to_string().contains("JSON"));
        assert!(err(None, r#"{"schemaVersion":1,"name":"x"}"#)
            .to_string()
            .contains("schema1"));
        assert!(err(Some(media::DOCKER_SCHEMA1_SIGNED), "{}")
            .to_string()
            .contains("schema1"));
        assert!(err(Some(media::OCI_INDEX), &image(""))
            .to_string()
            .contains("does not match"));
        assert!(matches!(
            parse(None, &vec![b' '; MAX_MANIFEST_SIZE + 1]),
            Err(RegistryError::ManifestTooLarge(_))
        ));
        let bad_digest = image("").replace(&d('b'), "sha256:xyz");
        assert!(err(None, &bad_digest).to_string().contains("layers[0]"));
        assert!(matches!(
            parse(
                None,
                r#"{"schemaVersion":2,"mediaType":"text/plain"}"#.as_bytes()
            ),
            Err(RegistryError::ManifestInvalid(_))
        ));
        // Deep nesting is refused by the JSON parser's recursion limit.
        let bomb = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            parse(None, bomb.as_bytes()),
            Err(RegistryError::ManifestInvalid(_))
        ));
    }

    #[test]
    fn content_type_must_match_a_body_without_media_type() {
        let bare = image("").replace(&format!(r#""mediaType":"{}","#, media::OCI_MANIFEST), "");
        assert_eq!(
            parse(Some(media::OCI_MANIFEST), bare.as_bytes())
                .unwrap()
                .kind,
            Kind::Image
        );
        // Read back without a Content-Type, these are an OCI image and an
        // OCI index.
        assert!(parse(Some(media::DOCKER_MANIFEST), bare.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("no mediaType"));
        let both = bare.replace(
            r#""layers""#,
            &format!(
                r#""manifests":[{{"mediaType":"{}","digest":"{}","size":1}}],"layers""#,
                media::OCI_MANIFEST,
                d('c')
            ),
        );
        assert!(parse(Some(media::OCI_MANIFEST), both.as_bytes()).is_err());
        assert_eq!(parse(None, both.as_bytes()).unwrap().kind, Kind::Index);
    }

    #[test]
    fn foreign_layers_need_not_exist() {
        let body = image("").replace(
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.nondistributable.v1.tar",
        );
        assert_eq!(parse(None, body.as_bytes()).unwrap().blobs.len(), 1);
    }
}
