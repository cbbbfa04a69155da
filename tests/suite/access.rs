//! Access control: roles against every endpoint class, anonymous pull,
//! catalog filtering, mounts across repositories, the failed-login limiter
//! and reloading rules.

use std::time::{Duration, Instant};

use crate::common::{access_rule, ConfigDir, Instance, Server};
use crate::common_api::*;
use reqwest::Method;

/// The rules of most tests; `bot` gets `bot_allow` everywhere.
fn rules(bot_allow: &str) -> String {
    [
        "[access]\ndefault = \"push\"\n".to_string(),
        access_rule(&["bot"], &["**"], bot_allow),
        access_rule(&["release-*"], &["releases/**"], "delete"),
        access_rule(&["release-*"], &["**"], "pull"),
        access_rule(&["admin"], &["**"], "delete"),
        access_rule(&["dev"], &["secret/**"], "none"),
    ]
    .concat()
}

const USERS: [&str; 4] = ["admin", "dev", "bot", "release-1"];

fn ci_with(access: &str) -> Instance {
    let mut ci = Instance::new("ci").with_users(&USERS);
    ci.extra = access.to_string();
    ci
}

fn as_user(server: &Server, user: Option<&str>) -> Reg {
    match user {
        Some(u) => Reg::new(&server.url("ci"), u, &format!("{u}-pw")),
        None => Reg::new(&server.url("ci"), "", ""),
    }
}

/// Sends a request as `user` (None: no credentials at all).
async fn send(reg: &Reg, anonymous: bool, method: Method, path: &str) -> reqwest::Response {
    let req = if anonymous {
        reg.anon(method, path)
    } else {
        reg.req(method, path)
    };
    req.send().await.unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Op {
    GetManifest,
    HeadBlob,
    ListTags,
    Referrers,
    StartUpload,
    PutManifest,
    DeleteManifest,
    DeleteBlob,
}

impl Op {
    const ALL: [Op; 8] = [
        Op::GetManifest,
        Op::HeadBlob,
        Op::ListTags,
        Op::Referrers,
        Op::StartUpload,
        Op::PutManifest,
        Op::DeleteManifest,
        Op::DeleteBlob,
    ];

    /// 0 pull, 1 push, 2 delete.
    fn level(self) -> u8 {
        match self {
            Op::GetManifest | Op::HeadBlob | Op::ListTags | Op::Referrers => 0,
            Op::StartUpload | Op::PutManifest => 1,
            Op::DeleteManifest | Op::DeleteBlob => 2,
        }
    }

    /// Runs the operation on fresh content pushed by `admin`; returns the
    /// status and the status that success has.
    async fn run(self, admin: &Reg, reg: &Reg, anonymous: bool, repo: &str) -> (u16, u16) {
        let (manifest, digest) = push_image(admin, repo, "v1").await;
        let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        let layer = m["layers"][0]["digest"].as_str().unwrap().to_string();
        let (method, path, ok) = match self {
            Op::GetManifest => (Method::GET, format!("/v2/{repo}/manifests/v1"), 200),
            Op::HeadBlob => (Method::HEAD, format!("/v2/{repo}/blobs/{layer}"), 200),
            Op::ListTags => (Method::GET, format!("/v2/{repo}/tags/list"), 200),
            Op::Referrers => (Method::GET, format!("/v2/{repo}/referrers/{digest}"), 200),
            Op::StartUpload => (Method::POST, format!("/v2/{repo}/blobs/uploads/"), 202),
            Op::PutManifest => {
                let req = if anonymous {
                    reg.anon(Method::PUT, &format!("/v2/{repo}/manifests/v2"))
                } else {
                    reg.req(Method::PUT, &format!("/v2/{repo}/manifests/v2"))
                };
                let resp = req
                    .header("content-type", OCI_MANIFEST)
                    .body(manifest)
                    .send()
                    .await
                    .unwrap();
                return (resp.status().as_u16(), 201);
            }
            Op::DeleteManifest => (
                Method::DELETE,
                format!("/v2/{repo}/manifests/{digest}"),
                202,
            ),
            Op::DeleteBlob => (Method::DELETE, format!("/v2/{repo}/blobs/{layer}"), 202),
        };
        (
            send(reg, anonymous, method, &path).await.status().as_u16(),
            ok,
        )
    }
}

#[tokio::test]
async fn every_role_against_every_endpoint_class() {
    let cfg = ConfigDir::new(&[ci_with(&rules("pull"))]);
    let server = Server::start(&cfg);
    let admin = as_user(&server, Some("admin"));
    // user, repository, highest level allowed (None: nothing)
    let table: &[(Option<&str>, &str, Option<u8>)] = &[
        (Some("admin"), "base/app", Some(2)),
        (Some("admin"), "releases/app", Some(2)),
        (Some("dev"), "base/app", Some(1)),
        (Some("dev"), "releases/app", Some(1)),
        (Some("dev"), "secret/keys", None),
        (Some("bot"), "base/app", Some(0)),
        (Some("bot"), "releases/app", Some(0)),
        (Some("release-1"), "releases/app", Some(2)),
        (Some("release-1"), "base/app", Some(0)),
        (None, "base/app", None),
    ];
    for &(user, repo, allowed) in table {
        let reg = as_user(&server, user);
        for op in Op::ALL {
            let (status, ok) = op.run(&admin, &reg, user.is_none(), repo).await;
            let permitted = allowed.is_some_and(|level| op.level() <= level);
            let want = match (permitted, user) {
                (true, _) => ok,
                (false, Some(_)) => 403,
                (false, None) => 401,
            };
            assert_eq!(status, want, "{user:?} {op:?} on {repo}");
        }
    }
    // The refusal says what and who.
    let bot = as_user(&server, Some("bot"));
    let resp = bot.send(Method::POST, "/v2/base/app/blobs/uploads/").await;
    let body = expect_error(resp, 403, "DENIED").await;
    let message = body["errors"][0]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("bot") && message.contains("push to") && message.contains("base/app"),
        "{message}"
    );
    // Anonymous refusals carry the challenge so that clients log in.
    let resp = as_user(&server, None)
        .anon(Method::GET, "/v2/base/app/tags/list")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(
        header(&resp, "www-authenticate").as_deref(),
        Some("Basic realm=\"ci\"")
    );
}

#[tokio::test]
async fn anonymous_pull_on_and_off() {
    for anonymous in ["none", "pull"] {
        let cfg = ConfigDir::new(&[ci_with(&format!("[access]\nanonymous = \"{anonymous}\"\n"))]);
        let server = Server::start(&cfg);
        let admin = as_user(&server, Some("admin"));
        push_image(&admin, "public/app", "v1").await;
        let anon = as_user(&server, None);
        let open = anonymous == "pull";
        for path in [
            "/v2/",
            "/v2/_catalog",
            "/v2/public/app/manifests/v1",
            "/v2/public/app/tags/list",
        ] {
            let resp = anon.anon(Method::GET, path).send().await.unwrap();
            assert_eq!(
                resp.status().as_u16(),
                if open { 200 } else { 401 },
                "{anonymous} {path}"
            );
        }
        let resp = anon
            .anon(Method::POST, "/v2/public/app/blobs/uploads/")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401, "anonymous never pushes");
        assert!(header(&resp, "www-authenticate").is_some());
        // Wrong credentials are refused even where anonymous pull is open.
        let wrong = Reg::new(&server.url("ci"), "admin", "nope");
        let resp = wrong.send(Method::GET, "/v2/public/app/manifests/v1").await;
        expect_error(resp, 401, "UNAUTHORIZED").await;
    }
}

#[tokio::test]
async fn catalog_lists_only_what_the_user_may_pull() {
    let cfg = ConfigDir::new(&[ci_with(&rules("pull"))]);
    let server = Server::start(&cfg);
    let admin = as_user(&server, Some("admin"));
    for repo in ["base/app", "releases/app", "secret/keys"] {
        push_image(&admin, repo, "v1").await;
    }
    let catalog = |user: &'static str| {
        let reg = as_user(&server, Some(user));
        async move {
            let body = reg.expect_status(Method::GET, "/v2/_catalog", 200).await;
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            v["repositories"].clone()
        }
    };
    assert_eq!(
        catalog("admin").await,
        serde_json::json!(["base/app", "releases/app", "secret/keys"])
    );
    assert_eq!(
        catalog("dev").await,
        serde_json::json!(["base/app", "releases/app"])
    );
    // Pagination counts only visible repositories.
    let dev = as_user(&server, Some("dev"));
    let resp = dev
        .send(Method::GET, "/v2/_catalog?n=1&last=base/app")
        .await;
    assert!(
        header(&resp, "link").is_none(),
        "no page after the last visible repository"
    );
    let body = expect_status(resp, 200).await;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["repositories"],
        serde_json::json!(["releases/app"])
    );
}

#[tokio::test]
async fn mount_needs_pull_on_the_source() {
    let cfg = ConfigDir::new(&[ci_with(&rules("pull"))]);
    let server = Server::start(&cfg);
    let admin = as_user(&server, Some("admin"));
    let secret = push_blob(&admin, "secret/keys", b"top secret layer").await;
    let public = push_blob(&admin, "base/app", b"public layer").await;
    let dev = as_user(&server, Some("dev"));
    for (digest, from, created) in [
        (&secret, Some("secret/keys"), false),
        (&secret, None, false),
        (&public, Some("base/app"), true),
        (&public, None, true),
    ] {
        let path = match from {
            Some(f) => format!("/v2/dev/app/blobs/uploads/?mount={digest}&from={f}"),
            None => format!("/v2/dev/app/blobs/uploads/?mount={digest}"),
        };
        let resp = dev.send(Method::POST, &path).await;
        assert_eq!(
            resp.status().as_u16(),
            if created { 201 } else { 202 },
            "{path}"
        );
    }
    assert_no_blob(&dev, "dev/app", &secret).await;
    assert_blob(&dev, "dev/app", &public, b"public layer").await;
}

#[tokio::test]
async fn failed_logins_are_throttled_per_address_not_for_others() {
    let cfg = ConfigDir::new(&[ci_with("")]);
    let server = Server::start(&cfg);
    let good = as_user(&server, Some("dev"));
    good.expect_status(Method::GET, "/v2/", 200).await;
    let wrong = Reg::new(&server.url("ci"), "dev", "guess");
    for i in 0..10 {
        let resp = wrong.send(Method::GET, "/v2/").await;
        assert_eq!(resp.status().as_u16(), 401, "attempt {i}");
    }
    let resp = wrong.send(Method::GET, "/v2/").await;
    let retry: u64 = header(&resp, "retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    expect_error(resp, 429, "TOOMANYREQUESTS").await;
    // The right password from another address works at once.
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let asked = Instant::now();
    let resp = other
        .get(format!("{}/v2/", server.url("ci")))
        .basic_auth("dev", Some("dev-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(asked.elapsed() < Duration::from_secs(5));
    // A client already logged in from the throttled address is not slowed down.
    good.expect_status(Method::GET, "/v2/", 200).await;
}

#[tokio::test]
async fn rules_reload_with_the_config() {
    let cfg = ConfigDir::new(&[ci_with(&rules("pull"))]);
    let server = Server::start(&cfg);
    let bot = as_user(&server, Some("bot"));
    let resp = bot.send(Method::POST, "/v2/base/app/blobs/uploads/").await;
    expect_error(resp, 403, "DENIED").await;
    cfg.add_instance(&ci_with(&rules("push")));
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = bot
            .send(Method::POST, "/v2/base/app/blobs/uploads/")
            .await
            .status()
            .as_u16();
        if status == 202 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new rule never applied ({status})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `berth check` on the config directory; whether it succeeded, and
/// its stderr.
fn berth_check(cfg: &ConfigDir) -> (bool, String) {
    let out = std::process::Command::new(crate::common::berth_bin())
        .args(["check", "--config-dir"])
        .arg(cfg.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), stderr)
}

#[test]
fn check_warns_of_unknown_users_and_refuses_bad_globs() {
    let cfg = ConfigDir::new(&[ci_with(&access_rule(&["ghost"], &["**"], "pull"))]);
    let (ok, stderr) = berth_check(&cfg);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("warning:") && stderr.contains("'ghost'"),
        "{stderr}"
    );
    cfg.add_instance(&ci_with(&access_rule(&["a"], &["x/[y"], "pull")));
    let (ok, stderr) = berth_check(&cfg);
    assert!(!ok);
    assert!(
        stderr.contains("instances/ci.toml:5:17: invalid pattern 'x/[y'"),
        "{stderr}"
    );
}
