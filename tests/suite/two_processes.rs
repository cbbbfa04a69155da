//! Two berth processes serving one storage root, as behind a load
//! balancer: what one of them was told, the other continues.

use crate::common::{sha256_digest, ConfigDir, Instance, Server};
use crate::common_api::*;

#[tokio::test]
async fn a_chunked_upload_goes_on_whichever_process_gets_each_chunk() {
    let cfg = ConfigDir::new(&[Instance::new("ci")]);
    let (a, b) = (Server::start(&cfg), Server::start(&cfg));
    let (ra, rb) = (Reg::for_instance(&a, "ci"), Reg::for_instance(&b, "ci"));
    let data = random_bytes(5 << 20);
    let digest = sha256_digest(&data);
    let mut session = open_session(&ra, "app").await;
    // Chunks alternate: A, B, A, B, ...
    let chunk = 1 << 20;
    for (i, piece) in data.chunks(chunk).enumerate() {
        let reg = if i % 2 == 0 { &ra } else { &rb };
        session = patch_chunk(reg, &session, i * chunk, piece).await;
        let status = reg.get(&session).send().await.unwrap();
        assert_eq!(
            header(&status, "range").as_deref(),
            Some(format!("0-{}", (i + 1) * chunk - 1).as_str()),
            "after chunk {i}"
        );
    }
    finish_upload(&rb, &session, &digest).await;
    assert_blob(&ra, "app", &digest, &data).await;
    assert_blob(&rb, "app", &digest, &data).await;
    a.stop();
    b.stop();
}

#[tokio::test]
async fn an_upload_begun_on_a_killed_process_is_finished_on_the_other() {
    let cfg = ConfigDir::new(&[Instance::new("ci")]);
    let (a, b) = (Server::start(&cfg), Server::start(&cfg));
    let (ra, rb) = (Reg::for_instance(&a, "ci"), Reg::for_instance(&b, "ci"));
    let data = random_bytes(3 << 20);
    let digest = sha256_digest(&data);
    let session = open_session(&ra, "app").await;
    let half = data.len() / 2;
    let session = patch_chunk(&ra, &session, 0, &data[..half]).await;
    a.signal("KILL");
    let session = patch_chunk(&rb, &session, half, &data[half..]).await;
    finish_upload(&rb, &session, &digest).await;
    assert_blob(&rb, "app", &digest, &data).await;
    b.stop();
}

#[tokio::test]
async fn tags_one_process_creates_or_removes_are_listed_by_the_other_at_once() {
    let cfg = ConfigDir::new(&[Instance::new("ci")]);
    let (a, b) = (Server::start(&cfg), Server::start(&cfg));
    let (ra, rb) = (Reg::for_instance(&a, "ci"), Reg::for_instance(&b, "ci"));
    let (body, _) = push_image(&rb, "app", "v1").await;
    // A lists (and keeps) before each change B makes.
    assert_eq!(list_tags(&ra, "app").await, ["v1"]);
    put_manifest_ok(&rb, "app", "v2", OCI_MANIFEST, &body).await;
    assert_eq!(list_tags(&ra, "app").await, ["v1", "v2"]);
    rb.expect_status(Method::DELETE, "/v2/app/manifests/v1", 202)
        .await;
    assert_eq!(list_tags(&ra, "app").await, ["v2"]);
    assert_eq!(list_tags(&rb, "app").await, ["v2"]);
    a.stop();
    b.stop();
}

/// Makes a tag look pushed `age` ago.
fn age_tag(cfg: &ConfigDir, repo: &str, tag: &str, age: std::time::Duration) {
    let link = cfg.tags_dir("ci", repo).join(format!("{tag}/current/link"));
    std::fs::File::options()
        .write(true)
        .open(link)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - age)
        .unwrap();
}

#[tokio::test]
async fn a_pull_served_by_one_process_counts_for_retention_run_by_the_other() {
    let mut ci = Instance::new("ci");
    // Tags older than an hour go unless pulled within the hour; A runs
    // retention every second.
    ci.extra = "[retention]\nmax_age = \"1h\"\nunpulled_for = \"1h\"\ninterval = \"1s\"\n".into();
    let cfg = ConfigDir::new(&[ci]);
    let (a, b) = (Server::start(&cfg), Server::start(&cfg));
    let (ra, rb) = (Reg::for_instance(&a, "ci"), Reg::for_instance(&b, "ci"));
    push_image(&ra, "app", "pulled").await;
    push_image(&ra, "app", "idle").await;
    expect_status(get_manifest(&rb, "app", "pulled").await, 200).await;
    // B writes its pulls when it stops (or every 30 s).
    b.stop();
    let hour = std::time::Duration::from_secs(7200);
    age_tag(&cfg, "app", "pulled", hour);
    age_tag(&cfg, "app", "idle", hour);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // Watched through the tag list: a GET of the tag would be a pull.
    while list_tags(&ra, "app").await.contains(&"idle".to_string()) {
        assert!(
            std::time::Instant::now() < deadline,
            "A never ran retention:\n{}",
            a.stderr()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    expect_status(get_manifest(&ra, "app", "pulled").await, 200).await;
    a.stop();
}

/// Two processes on one root take their locks in PostgreSQL (`[coordination]`),
/// and each runs retention and garbage collection every second with no
/// grace while clients push through both, re-tag old manifests and delete
/// tags: every tag whose last write was acknowledged is pullable whole at
/// the end, and `berth fsck` finds nothing wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_coordinated_in_postgres_lose_nothing_to_each_others_collections() {
    let pg = crate::common::postgres::Postgres::start();
    let mut ci = Instance::new("ci");
    ci.extra = "[retention]\ngc_grace = \"0s\"\ninterval = \"1s\"\n".into();
    let cfg = ConfigDir::new(&[ci]);
    let (a, b) = churn::coordinated_pair(&cfg, &pg);
    let (ra, rb) = (Reg::for_instance(&a, "ci"), Reg::for_instance(&b, "ci"));
    let ops = churn::env_number("BERTH_STRESS_OPS", 3000);
    let (told, refused) = churn::churn(&[ra.clone(), rb.clone()], "stress", 6, ops).await;
    let (lost, checked) = churn::lost(&rb, "stress", &told).await;
    assert!(
        lost.is_empty(),
        "acknowledged and lost:\n{}",
        lost.join("\n")
    );
    let runs = |s: &Server| s.stderr().matches("retention: ci:").count();
    let (runs_a, runs_b) = (runs(&a), runs(&b));
    assert!(
        runs_a > 0 && runs_b > 0,
        "A ran {runs_a}, B {runs_b} collections"
    );
    a.stop();
    b.stop();
    churn::assert_fsck_clean(&cfg);
    eprintln!(
        "two processes, PostgreSQL: {ops} operations, {runs_a} + {runs_b} collections, {checked} tags checked, {refused} pushes refused for collected blobs"
    );
}

#[test]
fn an_unreachable_coordination_server_stops_serve_and_gc_with_the_reason() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = ConfigDir::new(&[Instance::new("ci")]);
    cfg.add_to_berth_toml(&format!(
        "[coordination]\npostgres = \"postgres://berth:secret@127.0.0.1:{port}/berth\"\n"
    ));
    for command in ["serve", "gc"] {
        let out = std::process::Command::new(crate::common::berth_bin())
            .args([command, "--config-dir"])
            .arg(cfg.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "berth {command} ran without its locks"
        );
        assert!(
            stderr.contains("coordination") && stderr.contains(&format!("127.0.0.1:{port}")),
            "berth {command}: {stderr}"
        );
        assert!(
            !stderr.contains("secret"),
            "berth {command} printed the password"
        );
    }
}

/// A process coordinated in PostgreSQL and one that is not, on one root:
/// neither collects while the other serves (its locks cannot hold back
/// the other's writes), `berth check` says so, and once the other stops
/// (its heartbeat goes with it) collections run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_that_do_not_share_their_locks_refuse_to_collect() {
    let pg = crate::common::postgres::Postgres::start();
    let mut ci = Instance::new("ci");
    ci.extra = "[retention]\ninterval = \"1s\"\n".into();
    let coordinated = ConfigDir::new(&[ci]);
    coordinated.add_to_berth_toml(&format!("[coordination]\npostgres = \"{}\"\n", pg.url()));
    // The same root, without [coordination].
    let root = coordinated.storage_root("ci");
    let mut alone = Instance::new("ci");
    alone.extra = format!(
        "[storage]\nroot = {:?}\n[retention]\ninterval = \"1s\"\n",
        root.display().to_string()
    );
    let alone = ConfigDir::new(&[alone]);

    let a = Server::start(&coordinated);
    a.wait_for_stderr("locks shared with other berth processes");
    let berth = |command: &str, dir: &std::path::Path| {
        let out = std::process::Command::new(crate::common::berth_bin())
            .args([command, "--config-dir"])
            .arg(dir)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // `berth gc` without coordination, while A serves with it.
    let (ok, stderr) = berth("gc", alone.path());
    assert!(!ok, "berth gc ran beside a process it cannot hold back");
    for needle in [
        "garbage collection refused",
        &format!("berth process {} on host", a.pid()),
        "PostgreSQL 127.0.0.1",
        "lock files of the kernel",
        "[coordination] postgres",
    ] {
        assert!(stderr.contains(needle), "no {needle:?} in: {stderr}");
    }
    let (ok, stderr) = berth("check", alone.path());
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("warning: instance ci: garbage collection refused"),
        "{stderr}"
    );
    // The other way round: A's scheduled runs stop while B serves.
    let b = Server::start(&alone);
    let refused = "retention failed: garbage collection refused";
    b.wait_for_stderr("scheduled retention will not run");
    let seen = b.wait_for_stderr(refused);
    assert!(
        seen.contains(&format!("berth process {} on host", a.pid())),
        "{seen}"
    );
    let seen = a.wait_for_stderr(refused);
    assert!(
        seen.contains(&format!("berth process {} on host", b.pid())),
        "{seen}"
    );
    let (ra, rb) = (Reg::for_instance(&a, "ci"), Reg::for_instance(&b, "ci"));
    push_image(&ra, "app", "a").await;
    push_image(&rb, "app", "b").await;
    // B stops cleanly: its heartbeat goes, and A collects again.
    b.stop();
    let before = a.stderr().matches("retention: ci:").count();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while a.stderr().matches("retention: ci:").count() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "A never collected again"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    for tag in ["a", "b"] {
        expect_status(get_manifest(&ra, "app", tag).await, 200).await;
    }
    a.stop();
}
