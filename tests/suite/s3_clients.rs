//! Real clients and peers on berth's S3 storage, every process on
//! 127.0.0.1: Debian's `docker-registry` (Distribution's s3 driver) and
//! berth on one Garage bucket under the same root, each serving what was
//! pushed to the other; a 1 GiB blob streamed in and out of berth on Garage
//! in bounded memory; and blob GETs answered with a redirect to a presigned
//! Garage URL, which plain HTTP clients and a real `docker pull` follow.

use reqwest::StatusCode;

use crate::clients::{
    log_on_panic, make_image, pull_layout, skopeo_push, skopeo_raw, skopeo_tags, DistRegistry,
    Dockerd,
};
use crate::common::garage::Garage;
use crate::common::{ConfigDir, Instance, Server};
use crate::common_api::streamed::{
    assert_rss, assert_whole_blob, pull_and_verify, push_streamed, send_expect, unhurried, Content,
};
use crate::common_api::{
    expect_status, must_header, push_blob, push_chunked, random_bytes, Method, Reg,
};

/// registry:2's `rootdirectory` is `/ROOT`; its s3 driver drops the
/// leading slash, so its keys start with `ROOT/docker/registry/v2/`: the
/// prefix berth needs to see the same files.
const ROOT: &str = "ROOT";

/// The server's peak resident set (VmHWM) must stay under this while a
/// 1 GiB blob goes to and from the bucket (parts of 8 MiB, 4 in flight).
const RSS_LIMIT_KIB: u64 = 96 * 1024;

/// An instance `ci` keeping its data in `g`'s bucket under `prefix`, with
/// `more` added to its `[storage]` table.
fn on_garage(g: &Garage, prefix: &str, more: &str) -> Instance {
    let mut ci = Instance::new("ci");
    ci.extra = format!("{}{more}", g.storage_toml(prefix));
    ci
}

/// GETs a blob of a registry keeping its blobs in `g`'s bucket: asserts a
/// 307 to a URL in the bucket, which serves exactly `data` to a client
/// without credentials. Returns the URL.
async fn assert_redirected_blob(
    reg: &Reg,
    g: &Garage,
    repo: &str,
    digest: &str,
    data: &[u8],
) -> String {
    let resp = reg
        .send(Method::GET, &format!("/v2/{repo}/blobs/{digest}"))
        .await;
    let location = must_header(&resp, "location");
    expect_status(resp, 307).await;
    let bucket = format!("{}/{}/", g.endpoint(), g.bucket());
    assert!(
        location.starts_with(&bucket),
        "{digest} redirected to {location}, not into {bucket}"
    );
    let body = expect_status(reqwest::get(&location).await.unwrap(), 200).await;
    assert_eq!(body.len(), data.len(), "length of {digest} from the bucket");
    assert!(
        body == data,
        "{digest} from the bucket differs from the blob"
    );
    location
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry2_and_berth_on_one_bucket_serve_what_the_other_took() {
    let g = Garage::start();
    let reg2 = DistRegistry::start_with_storage(
        &g.registry2_storage_yaml(&format!("/{ROOT}")),
        "ref-user",
        "ref-secret",
    );
    let _reg2_log = log_on_panic("docker-registry log", reg2.log_path());

    // Pushed to registry:2, pulled from berth.
    let image = make_image("v1");
    skopeo_push(
        &image.reference("v1"),
        &reg2.image("interop/app:v1"),
        &reg2.creds(),
        &[],
    );
    // Its keys are all under ROOT/docker/registry/v2/, where berth with
    // the prefix ROOT looks (berth, started after, adds its own records
    // under ROOT/berth/).
    let keys = g.list_keys("");
    let root = format!("{ROOT}/docker/registry/v2/");
    assert!(
        keys.iter().all(|k| k.starts_with(&root)),
        "registry:2 wrote outside {root}: {keys:?}"
    );
    let tag = format!("{root}repositories/interop/app/_manifests/tags/v1/current/link");
    assert!(keys.contains(&tag), "no {tag} in {keys:?}");
    let ci = on_garage(&g, ROOT, "");
    let creds = format!("{}:{}", ci.user(), ci.password());
    let cfg = ConfigDir::new(&[ci]);
    let server = Server::start(&cfg);
    let _log = log_on_panic("berth stderr", &server.stderr_log);
    let berth = |repo_tag: &str| format!("docker://{}/{repo_tag}", server.addr("ci"));
    assert_eq!(
        skopeo_raw(&berth("interop/app:v1"), &creds),
        skopeo_raw(&reg2.image("interop/app:v1"), &reg2.creds()),
        "the manifest berth serves from registry:2's files"
    );
    let back = pull_layout(&berth("interop/app:v1"), "v1", &creds, &[]);
    assert_eq!(back.digest("v1"), image.digest("v1"));
    back.assert_layers_intact(&back.digest("v1"));

    // Pushed to berth, pulled from registry:2.
    let image = make_image("v2");
    skopeo_push(
        &image.reference("v2"),
        &berth("interop/app:from-berth"),
        &creds,
        &[],
    );
    assert_eq!(
        skopeo_tags(&reg2.image("interop/app"), &reg2.creds()),
        ["from-berth", "v1"]
    );
    let back = pull_layout(
        &reg2.image("interop/app:from-berth"),
        "t",
        &reg2.creds(),
        &[],
    );
    assert_eq!(back.digest("t"), image.digest("v2"));
    back.assert_layers_intact(&back.digest("t"));

    // Blobs pushed to berth monolithic and in chunks (a segment per PATCH,
    // joined at commit), read through registry:2, which redirects to the
    // bucket.
    let ci = Reg::for_instance(&server, "ci");
    let small = random_bytes(100 << 10);
    let big = random_bytes(13 << 20);
    let blobs = [
        (push_blob(&ci, "interop/app", &small).await, small),
        (push_chunked(&ci, "interop/app", &big, 6 << 20).await, big),
    ];
    let reg2_client = Reg::new(&format!("http://{}", reg2.addr), &reg2.user, &reg2.password);
    for (digest, data) in &blobs {
        assert_redirected_blob(&reg2_client, &g, "interop/app", digest, data).await;
    }
    let segments: Vec<String> = g
        .list_keys("")
        .into_iter()
        .filter(|k| k.contains(".segments/"))
        .collect();
    assert!(segments.is_empty(), "segments left: {segments:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_blob_streams_through_garage_in_bounded_memory() {
    let g = Garage::start();
    let cfg = ConfigDir::new(&[on_garage(&g, "big", "")]);
    let server = Server::start(&cfg);
    let _log = log_on_panic("berth stderr", &server.stderr_log);
    let content = Content::new();
    let reg = unhurried(&server, "ci");
    assert_rss(&server, "at start", RSS_LIMIT_KIB);

    // Two PATCHes: two segments, which the commit copies into one object.
    let digest = push_streamed(&reg, "big/blob", &content).await;
    assert_rss(&server, "after the streamed upload", RSS_LIMIT_KIB);
    let hex = digest.strip_prefix("sha256:").unwrap();
    let keys = g.list_keys("big/");
    let blob = format!(
        "big/docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    );
    assert!(keys.contains(&blob), "no {blob} in {keys:?}");
    assert!(
        keys.iter().all(|k| !k.contains(".segments/")),
        "segments left: {keys:?}"
    );

    let path = format!("/v2/big/blob/blobs/{digest}");
    let resp = send_expect(reg.head(&path), StatusCode::OK, "HEAD").await;
    assert_whole_blob(&resp, &digest);
    pull_and_verify(reg, path, digest).await;
    assert_rss(&server, "after the pull", RSS_LIMIT_KIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_gets_redirect_to_presigned_garage_urls_that_docker_follows() {
    let g = Garage::start();
    let ci = on_garage(
        &g,
        "redirect",
        "redirect = true\nredirect_expiry = \"10m\"\n",
    );
    let (user, password) = (ci.user().to_string(), ci.password().to_string());
    let cfg = ConfigDir::new(&[ci]);
    let server = Server::start(&cfg);
    let _log = log_on_panic("berth stderr", &server.stderr_log);
    let reg = Reg::for_instance(&server, "ci");

    // GET: 307 with the digest, to a URL signed for 10 minutes; HEAD is
    // answered here.
    let data = random_bytes(3 << 20);
    let digest = push_blob(&reg, "app", &data).await;
    let path = format!("/v2/app/blobs/{digest}");
    let resp = reg.send(Method::GET, &path).await;
    assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(must_header(&resp, "docker-content-digest"), digest);
    let location = assert_redirected_blob(&reg, &g, "app", &digest, &data).await;
    let hex = digest.strip_prefix("sha256:").unwrap();
    let key = format!(
        "redirect/docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    );
    assert!(
        location.starts_with(&format!("{}/{}/{key}?", g.endpoint(), g.bucket())),
        "{location}"
    );
    assert!(location.contains("X-Amz-Expires=600"), "{location}");
    let resp = reg.send(Method::HEAD, &path).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(must_header(&resp, "content-length"), data.len().to_string());
    assert_eq!(must_header(&resp, "docker-content-digest"), digest);
    // The signed URL takes a Range, as a client resuming a download sends.
    let resp = reqwest::Client::new()
        .get(&location)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert!(expect_status(resp, 206).await == data[1000..2000]);

    // docker pulls an image pushed with skopeo, its blobs from Garage.
    let image = make_image("v1");
    let addr = server.addr("ci").to_string();
    let target = format!("{addr}/team/app:v1");
    skopeo_push(
        &image.reference("v1"),
        &format!("docker://{target}"),
        &format!("{user}:{password}"),
        &[],
    );
    let docker = Dockerd::start(&[&addr]);
    let _dockerd_log = log_on_panic("dockerd log", &docker.log_path());
    docker.login(&addr, &user, &password).expect("docker login");
    docker.run(&["pull", &target]);
    let digests = image.image_digests(&image.digest("v1"));
    assert_eq!(docker.image_id(&target), digests.config);
    let log = server.stderr();
    for blob in digests.layers.iter().chain([&digests.config]) {
        let path = format!("/v2/team/app/blobs/{blob}");
        let gets: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(": access: ") && l.contains(&path))
            .filter(|l| l.contains("method=GET"))
            .collect();
        assert!(
            !gets.is_empty() && gets.iter().all(|l| l.contains("status=307")),
            "docker's GETs of {blob}:\n{}",
            gets.join("\n")
        );
    }
}
