//! Smoke tests of the S3 test servers (`common::garage`, `common::moto`):
//! each serves its bucket to signed requests, Garage's three-node cluster
//! reads and writes with one node down, and the reference registry keeps
//! its blobs in Garage through the `storage:` section made for it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::clients::DistRegistry;
use crate::common::garage::Garage;
use crate::common::moto::Moto;
use crate::common::sha256_digest;

/// Runs a curl; its HTTP status and body.
fn send(curl: &mut Command) -> (u16, String) {
    let out = curl
        .args(["-w", "\n%{http_code}"])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap_or(0), body.to_string())
}

/// PUTs `body` at `url` and GETs it back. (moto stores an empty object
/// when the body comes as a form: curl's default type for it.)
fn put_and_get(curl: impl Fn(&str) -> Command, url: &str, body: &str) {
    let mut put = curl(url);
    put.args(["-X", "PUT", "--data-binary", body])
        .args(["-H", "Content-Type: application/octet-stream"]);
    let put = send(&mut put);
    assert_eq!(put.0, 200, "PUT {url}: {}", put.1);
    assert_eq!(send(&mut curl(url)), (200, body.to_string()), "GET {url}");
}

/// The `[storage]` table names the bucket and a credentials file (mode
/// 0600) with the key.
fn check_storage(toml: &str, file: &Path, [endpoint, bucket, region, id, secret]: [&str; 5]) {
    let expected = format!(
        "[storage]\ndriver = \"s3\"\nbucket = \"{bucket}\"\nendpoint = \"{endpoint}\"\n\
         region = \"{region}\"\nprefix = \"ci/\"\ncredentials_file = \"{}\"\n",
        file.display()
    );
    assert_eq!(toml, expected);
    let mode = std::fs::metadata(file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let expected =
        format!("[default]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n");
    assert_eq!(std::fs::read_to_string(file).unwrap(), expected);
}

#[test]
fn garage_serves_a_bucket() {
    let g = Garage::start();
    assert_eq!(g.region(), "garage");
    let base = format!("{}/{}", g.endpoint(), g.bucket());
    put_and_get(|u| g.curl(u), &format!("{base}/smoke/one"), "one");
    put_and_get(|u| g.curl(u), &format!("{base}/smoke/a%26b%20c"), "two");
    assert_eq!(g.list_keys("smoke/"), ["smoke/a&b c", "smoke/one"]);
    g.create_bucket("other");
    put_and_get(|u| g.curl(u), &format!("{}/other/x", g.endpoint()), "x");
    let values = [
        &*g.endpoint(),
        g.bucket(),
        g.region(),
        g.key_id(),
        g.secret(),
    ];
    check_storage(&g.storage_toml("ci/"), &g.credentials_file(), values);
}

#[test]
fn moto_serves_a_bucket() {
    let m = Moto::start();
    assert_eq!(m.region(), "us-east-1");
    let base = format!("{}/{}", m.endpoint(), m.bucket());
    put_and_get(|u| m.curl(u), &format!("{base}/smoke/one"), "one");
    assert_eq!(m.list_keys("smoke/"), ["smoke/one"]);
    let values = [
        &*m.endpoint(),
        m.bucket(),
        m.region(),
        m.key_id(),
        m.secret(),
    ];
    check_storage(&m.storage_toml("ci/"), &m.credentials_file(), values);
}

/// Replication 3: with one node down, two of three still make a quorum.
#[test]
fn garage_cluster_survives_one_node_down() {
    let mut g = Garage::cluster(3);
    let endpoints = g.endpoints();
    assert_eq!(endpoints.len(), 3);
    let bucket = g.bucket().to_string();
    let url = |i: usize, key: &str| format!("{}/{bucket}/{key}", endpoints[i]);
    put_and_get(|u| g.curl(u), &url(0, "before"), "before");
    assert_eq!(send(&mut g.curl(&url(2, "before"))).1, "before");
    g.stop_node(2);
    assert_eq!(send(&mut g.curl(&url(0, "before"))).1, "before");
    put_and_get(|u| g.curl(u), &url(0, "after"), "after");
    assert_eq!(send(&mut g.curl(&url(1, "after"))).1, "after");
    assert_eq!(g.list_keys(""), ["after", "before"]);
}

/// A blob pushed to `docker-registry` lands in the bucket; its GET is a
/// redirect to a presigned Garage URL.
#[test]
fn docker_registry_stores_in_garage() {
    let g = Garage::start();
    let reg = DistRegistry::start_with_storage(&g.registry2_storage_yaml("/r2"), "u", "pw");
    let blob = "blob-content";
    let digest = sha256_digest(blob.as_bytes());
    let base = format!("http://{}/v2/smoke/blobs", reg.addr);
    let curl = || {
        let mut c = Command::new("curl");
        c.args(["-sS", "-u", &reg.creds()]);
        c
    };
    let start = ["-X", "POST", "-D", "-", "-o", "/dev/null"];
    let (_, head) = send(curl().args(start).arg(format!("{base}/uploads/")));
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("Location: "))
        .expect("a Location")
        .trim();
    let put = ["-X", "PUT", "--data-binary", blob];
    let octets = ["-H", "Content-Type: application/octet-stream"];
    let url = format!("{location}&digest={digest}");
    assert_eq!(send(curl().args(put).args(octets).arg(url)).0, 201);
    let hex = digest.strip_prefix("sha256:").unwrap();
    let blobs = "r2/docker/registry/v2/blobs/";
    assert_eq!(
        g.list_keys(blobs),
        [format!("{blobs}sha256/{}/{hex}/data", &hex[..2])]
    );
    assert_eq!(send(curl().arg(format!("{base}/{digest}"))).0, 307);
    let get = curl()
        .arg("-L")
        .arg(format!("{base}/{digest}"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&get.stdout), blob);
}
