//! What `berth import-registry2` says about the registry:2 settings it
//! does not convert: for each, why berth does without it and what to use
//! instead. Owns that table and the walk over what the conversion left of
//! the configuration; converting is `convert`'s.

use super::yaml::{Map, Node};

/// A setting (path of keys, `[]` for any element of a list) or a whole
/// section, and what to tell about it.
const RULES: &[(&str, &str)] = &[
    ("log", "berth logs to stderr (the journal under systemd): the level comes from RUST_LOG, the format from [log] format in berth.toml, and every request gets an access line"),
    ("loglevel", "berth's log level comes from RUST_LOG"),
    ("storage.filesystem.maxthreads", "berth runs file I/O on at most 64 threads of its own"),
    ("storage.azure", "berth stores in a directory or an S3-compatible bucket: copy the data into one (the layout is the same) and set [storage] there"),
    ("storage.gcs", "berth stores in a directory or an S3-compatible bucket: Google Cloud Storage has one (driver = \"s3\", endpoint = \"https://storage.googleapis.com\", an HMAC key in credentials_file)"),
    ("storage.swift", "berth stores in a directory or an S3-compatible bucket: use the S3 API of the Swift cluster (its s3api middleware) with driver = \"s3\""),
    ("storage.oss", "berth stores in a directory or an S3-compatible bucket: Alibaba OSS has one (driver = \"s3\", endpoint = \"https://oss-REGION.aliyuncs.com\")"),
    ("storage.inmemory", "berth keeps every instance's data in a directory or a bucket ([storage])"),
    ("storage.cache", "not needed: berth keeps blob descriptors, manifests and tag lists in memory itself (no redis)"),
    ("storage.tag", "not needed: berth reads a repository's tags from its own cache"),
    ("storage.maintenance.uploadpurging.interval", "berth purges abandoned uploads at each collection: [retention] interval, or ./ctl gc"),
    ("storage.maintenance.uploadpurging.dryrun", "./ctl gc --dry-run reports the uploads a collection would purge"),
    ("storage.s3.encrypt", "set a default encryption on the bucket instead"),
    ("storage.s3.keyid", "set a default encryption with this KMS key on the bucket instead"),
    ("storage.s3.v4auth", "berth signs every request with SigV4"),
    ("storage.s3.skipverify", "berth verifies the store's certificate: add its CA to the system's trust store"),
    ("storage.s3.storageclass", "set the storage class with a lifecycle rule of the bucket"),
    ("storage.s3.objectacl", "berth's objects get the bucket's default ACL"),
    ("storage.s3.multipartcopychunksize", "not needed: berth copies objects within the store in one request"),
    ("storage.s3.multipartcopymaxconcurrency", "not needed: berth copies objects within the store in one request"),
    ("storage.s3.multipartcopythresholdsize", "not needed: berth copies objects within the store in one request"),
    ("storage.s3.useragent", "berth sends its own User-Agent"),
    ("storage.s3.usedualstack", "set an endpoint that resolves to IPv6 instead"),
    ("storage.s3.accelerate", "set the accelerated endpoint as [storage] endpoint instead"),
    ("storage.s3.loglevel", "berth's log level comes from RUST_LOG"),
    ("auth.silly", "a test-only scheme: berth's users are an htpasswd file ([auth] htpasswd)"),
    ("auth.token", "berth logs users in itself (HTTP Basic against [auth] htpasswd, bcrypt) and applies [access] rules per user and repository; no token server"),
    ("auth.htpasswd.realm", "berth's Basic realm is the instance name"),
    ("middleware", "berth has no middleware: with S3, [storage] redirect = true sends pulls to presigned URLs of the bucket; a CDN goes in front of berth"),
    ("reporting", "berth reports to no service: collect its log and the /metrics of [listen] admin in berth.toml"),
    ("http.prefix", "berth serves /v2/ at the root of each hostname: a proxy in front can mount it under a path"),
    ("http.secret", "not needed: berth's upload sessions are kept in the store, under a random id"),
    ("http.relativeurls", "not needed: berth's Location headers are relative"),
    ("http.draintimeout", "server-wide in berth: [server] drain_timeout in berth.toml"),
    ("http.net", "berth listens on TCP only"),
    ("http.tls.clientcas", "berth does not ask for client certificates: users log in with their htpasswd password"),
    ("http.tls.minimumtls", "berth speaks TLS 1.2 and 1.3 only"),
    ("http.tls.ciphersuites", "berth uses rustls' cipher suites, all of them safe"),
    ("http.debug", "[listen] admin in berth.toml serves /metrics (Prometheus), /healthz and /readyz"),
    ("http.http2", "berth speaks HTTP/2 (by ALPN over TLS) and HTTP/1.1"),
    ("notifications.events", "berth's events carry no references"),
    ("notifications.endpoints[].threshold", "berth retries each event until the endpoint takes it, with backoff from 1 s to a minute"),
    ("notifications.endpoints[].backoff", "berth retries each event until the endpoint takes it, with backoff from 1 s to a minute"),
    ("redis", "not needed: berth caches in memory; several berth processes on one store coordinate through [coordination] postgres in berth.toml"),
    ("health", "the admin listener's /readyz ([listen] admin in berth.toml) probes every instance's storage; checks of other files and services belong to your monitoring"),
    ("proxy.ttl", "berth keeps what it mirrored until retention deletes it: [retention] unpulled_for and interval"),
    ("compatibility", "Docker schema1 manifests are refused: push schema2 or OCI (every current docker, podman and skopeo does)"),
    ("validation.manifests.indexes", "berth requires every manifest an index names to be in the repository"),
    ("catalog", "not needed: berth's _catalog pages with ?n= and Link headers"),
];

/// What is told about the setting at `pattern`, if it has a rule.
pub(super) fn why(pattern: &str) -> Option<&'static str> {
    RULES
        .iter()
        .find(|(p, _)| *p == pattern)
        .map(|(_, why)| *why)
}

/// One line per setting left in `root` (what the conversion did not
/// take), in file order: `KEY: not converted: WHY`.
pub(super) fn report(root: &Map) -> Vec<String> {
    let mut out = Vec::new();
    walk(root, "", "", &mut out);
    out
}

fn walk(map: &Map, path: &str, pattern: &str, out: &mut Vec<String>) {
    for (key, node) in &map.0 {
        let (path, pattern) = match path {
            "" => (key.clone(), key.clone()),
            p => (format!("{p}.{key}"), format!("{pattern}.{key}")),
        };
        visit(node, &path, &pattern, out);
    }
}

fn visit(node: &Node, path: &str, pattern: &str, out: &mut Vec<String>) {
    if let Some(why) = why(pattern) {
        out.push(format!("{path}: not converted: {why}"));
        return;
    }
    match node {
        Node::Map(m) => walk(m, path, pattern, out),
        Node::Misfit { found, expected } => out.push(format!(
            "{path}: not converted: expected {expected}, found {found}"
        )),
        Node::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                visit(item, &format!("{path}[{i}]"), &format!("{pattern}[]"), out);
            }
        }
        _ => out.push(format!(
            "{path}: not converted: not a registry:2 setting berth knows"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::yaml::parse;
    use super::*;

    #[test]
    fn each_leftover_is_told_once_in_file_order() {
        let mut m = parse(
            "redis:\n  addr: x\nstorage:\n  gcs:\n    bucket: b\n  done: {}\n\
             notifications:\n  endpoints:\n    - backoff: 1s\nbogus: 1\n",
        )
        .unwrap();
        m.section("storage").take("done");
        let lines = report(&m);
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert!(lines[0].starts_with("redis: not converted: not needed"));
        assert!(lines[1].starts_with("storage.gcs: not converted: "));
        assert!(lines[2]
            .starts_with("notifications.endpoints[0].backoff: not converted: berth retries"));
        assert_eq!(
            lines[3],
            "bogus: not converted: not a registry:2 setting berth knows"
        );
    }
}
