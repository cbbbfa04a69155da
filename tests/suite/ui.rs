//! The web UI over HTTP: the login form and sessions (cookie flags,
//! logout, throttling, Basic credentials for curl), the access rules on
//! every page and action (pull-only, delete, anonymous), CSRF tokens and
//! `Origin` checks on every form, escaping of hostile content, retention's
//! verdicts against what `berth gc` then deletes, usage and collections.

use std::time::Duration;

use serde_json::json;

use crate::common::{access_rule, berth_ok, ConfigDir, Instance, Server};
use crate::common_api::*;

/// A client of the UI keeping one session cookie, following no redirects.
pub(crate) struct Browser {
    base: String,
    client: reqwest::Client,
    cookie: Option<String>,
}

/// A response, read.
pub(crate) struct Page {
    pub(crate) status: u16,
    location: Option<String>,
    set_cookie: Option<String>,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: String,
}

impl Page {
    /// The CSRF token of the page's forms.
    pub(crate) fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no form on the page:\n{}", self.body));
        let rest = &self.body[at + 19..];
        rest[..rest.find('"').unwrap()].to_string()
    }

    pub(crate) fn has(&self, text: &str) -> bool {
        self.body.contains(text)
    }
}

impl Browser {
    pub(crate) fn new(server: &Server, instance: &str) -> Browser {
        Browser {
            base: server.url(instance),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let req = match &self.cookie {
            Some(c) => req.header("cookie", c),
            None => req,
        };
        let resp = req.send().await.unwrap();
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let (location, set_cookie) = (header("location"), header("set-cookie"));
        if let Some(c) = &set_cookie {
            let pair = c.split(';').next().unwrap().to_string();
            self.cookie = (!pair.ends_with('=')).then_some(pair);
        }
        Page {
            status: resp.status().as_u16(),
            location,
            set_cookie,
            headers: resp.headers().clone(),
            body: resp.text().await.unwrap(),
        }
    }

    pub(crate) async fn get(&mut self, path: &str) -> Page {
        let req = self.client.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    pub(crate) async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("origin", &self.base)
            .form(form);
        self.send(req).await
    }

    pub(crate) async fn log_in(&mut self, user: &str, password: &str) -> Page {
        let page = self
            .post(
                "/-/login",
                &[("user", user), ("password", password), ("next", "/")],
            )
            .await;
        assert_eq!(page.status, 303, "login of {user}: {}", page.body);
        page
    }
}

/// An instance `ci` with `admin` (may delete anywhere) and `puller` (may
/// pull `app/*` only), and what else `extra` says.
fn two_users(extra: &str) -> (ConfigDir, Server) {
    let mut ci = Instance::new("ci").with_users(&["admin", "puller"]);
    ci.extra = format!(
        "{extra}\n[access]\ndefault = \"none\"\n{}{}",
        access_rule(&["admin"], &["**"], "delete"),
        access_rule(&["puller"], &["app/*"], "pull"),
    );
    let cfg = ConfigDir::new(&[ci]);
    let server = Server::start(&cfg);
    (cfg, server)
}

fn admin(server: &Server) -> Reg {
    Reg::new(&server.url("ci"), "admin", "admin-pw")
}

#[tokio::test]
async fn logging_in_and_out_with_sessions_basic_credentials_and_throttling() {
    let (_cfg, server) = two_users("");
    push_image(&admin(&server), "app/web", "v1").await;
    let mut b = Browser::new(&server, "ci");

    // Nobody: to the login form, which says where to come back to.
    let page = b.get("/r/app/web").await;
    assert_eq!(page.status, 303);
    assert_eq!(
        page.location.as_deref(),
        Some("/-/login?next=%2Fr%2Fapp%2Fweb")
    );
    let form = b.get("/-/login?next=%2Fr%2Fapp%2Fweb").await;
    assert_eq!(form.status, 200);
    assert!(form.has("value=\"/r/app/web\""), "{}", form.body);
    let csp = form.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));

    // A wrong password: the form again, no cookie.
    let wrong = b
        .post("/-/login", &[("user", "admin"), ("password", "nope")])
        .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.has("Wrong user name or password"));
    assert!(wrong.set_cookie.is_none());

    // A login posted from another site is refused.
    let forged = b
        .client
        .post(format!("{}/-/login", b.base))
        .header("origin", "https://evil.example")
        .form(&[("user", "admin"), ("password", "admin-pw")]);
    assert_eq!(b.send(forged).await.status, 403);

    let ok = b.log_in("admin", "admin-pw").await;
    let cookie = ok.set_cookie.unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let home = b.get("/").await;
    assert_eq!(home.status, 200);
    assert!(home.has("data-repo=\"app/web\"") && home.has("Signed in as"));

    // Logging out needs the session's token; then the cookie is dead.
    let old_cookie = b.cookie.clone();
    assert_eq!(b.post("/-/logout", &[("csrf", "forged")]).await.status, 403);
    let csrf = home.csrf();
    let out = b.post("/-/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    assert!(out.set_cookie.unwrap().contains("Max-Age=0"));
    b.cookie = old_cookie;
    assert_eq!(b.get("/").await.status, 303, "the old cookie is logged out");

    // Basic credentials work for curl, and wrong ones are refused.
    let basic = reqwest::Client::new()
        .get(format!("{}/r/app/web", b.base))
        .basic_auth("puller", Some("puller-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 200);
    let bad = reqwest::Client::new()
        .get(format!("{}/", b.base))
        .basic_auth("puller", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);

    // The form is throttled like docker login: 10 failures a minute.
    let mut b = Browser::new(&server, "ci");
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let p = b
            .post("/-/login", &[("user", "puller"), ("password", "guess")])
            .await;
        statuses.push(p.status);
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    let again = b
        .post("/-/login", &[("user", "puller"), ("password", "other")])
        .await;
    assert_eq!(again.status, 429);
    assert!(again.has("Too many failed logins"));
    assert!(again.headers.contains_key("retry-after"));
    server.stop();
}

#[tokio::test]
async fn each_user_sees_and_does_what_the_access_rules_allow() {
    let (_cfg, server) = two_users("");
    let reg = admin(&server);
    push_image(&reg, "app/web", "v1").await;
    push_image(&reg, "app/web", "v2").await;
    push_image(&reg, "secret/db", "v1").await;

    let mut puller = Browser::new(&server, "ci");
    puller.log_in("puller", "puller-pw").await;
    let home = puller.get("/").await;
    assert!(home.has("data-repo=\"app/web\"") && !home.has("secret/db"));
    let repo = puller.get("/r/app/web").await;
    assert_eq!(repo.status, 200);
    assert!(
        repo.has("data-tag=\"v1\"") && !repo.has("-/delete"),
        "no delete buttons"
    );
    assert_eq!(puller.get("/r/secret/db").await.status, 404);
    assert_eq!(puller.get("/r/app/web/-/delete?tag=v1").await.status, 403);
    // A delete forged with the puller's own token: refused, nothing gone.
    let forged = puller
        .post(
            "/r/app/web/-/delete",
            &[("csrf", &repo.csrf()), ("tag", "v1")],
        )
        .await;
    assert_eq!(forged.status, 403);
    assert_eq!(list_tags(&reg, "app/web").await, ["v1", "v2"]);
    // Nor may the puller collect.
    let usage = puller.get("/-/usage").await;
    assert!(!usage.has("gc-run"));
    let gc = puller
        .post("/-/gc", &[("csrf", &repo.csrf()), ("run", "now")])
        .await;
    assert_eq!(gc.status, 403);

    // The admin sees delete buttons, what a delete takes along, and deletes.
    let mut admin_ui = Browser::new(&server, "ci");
    admin_ui.log_in("admin", "admin-pw").await;
    let repo = admin_ui.get("/r/app/web").await;
    assert!(repo.has("/r/app/web/-/delete?tag=v1"));
    let confirm = admin_ui.get("/r/app/web/-/delete?tag=v1").await;
    assert_eq!(confirm.status, 200);
    assert!(
        confirm.has("the tag <code>app/web:v1</code>"),
        "{}",
        confirm.body
    );
    assert!(confirm.has("left without a tag"), "{}", confirm.body);
    // A post without the token, or from another site, deletes nothing.
    assert_eq!(
        admin_ui
            .post("/r/app/web/-/delete", &[("tag", "v1")])
            .await
            .status,
        403
    );
    let cross = admin_ui
        .client
        .post(format!("{}/r/app/web/-/delete", admin_ui.base))
        .header("origin", "http://evil.example")
        .form(&[("csrf", confirm.csrf().as_str()), ("tag", "v1")]);
    assert_eq!(admin_ui.send(cross).await.status, 403);
    assert_eq!(list_tags(&reg, "app/web").await, ["v1", "v2"]);
    let done = admin_ui
        .post(
            "/r/app/web/-/delete",
            &[("csrf", &confirm.csrf()), ("tag", "v1")],
        )
        .await;
    assert_eq!(done.status, 303);
    assert_eq!(done.location.as_deref(), Some("/r/app/web?deleted=v1"));
    assert_eq!(list_tags(&reg, "app/web").await, ["v2"]);
    let after = admin_ui.get("/r/app/web?deleted=v1").await;
    assert!(after.has("Deleted v1.") && !after.has("data-tag=\"v1\""));

    // A manifest by digest takes its tags along.
    let digest = get_manifest(&reg, "secret/db", "v1")
        .await
        .headers()
        .get("docker-content-digest")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let confirm = admin_ui
        .get(&format!("/r/secret/db/-/delete?digest={digest}"))
        .await;
    assert!(confirm.has(&format!("the manifest <code>{digest}</code>")));
    assert!(confirm.has("the tag <code>secret/db:v1</code>"));
    let done = admin_ui
        .post(
            "/r/secret/db/-/delete",
            &[("csrf", &confirm.csrf()), ("digest", &digest)],
        )
        .await;
    assert_eq!(done.status, 303);
    assert_no_manifest(&reg, "secret/db", &digest).await;
    server.stop();
}

#[tokio::test]
async fn a_method_a_page_does_not_take_is_405_with_allow() {
    let (_cfg, server) = two_users("");
    let mut ui = Browser::new(&server, "ci");
    ui.log_in("admin", "admin-pw").await;
    let logout = ui.get("/-/logout").await;
    assert_eq!(logout.status, 405, "{}", logout.body);
    assert_eq!(logout.headers["allow"], "POST");
    let csrf = ui.get("/").await.csrf();
    let home = ui.post("/", &[("csrf", &csrf)]).await;
    assert_eq!(home.status, 405, "{}", home.body);
    assert_eq!(home.headers["allow"], "GET, HEAD");
    // Before any login: the method is wrong whoever asks.
    let mut anonymous = Browser::new(&server, "ci");
    let css = anonymous.post("/-/static/berth.css", &[]).await;
    assert_eq!(css.status, 405, "{}", css.body);
    assert_eq!(css.headers["allow"], "GET, HEAD");
    let client = reqwest::Client::new();
    for (method, path, allow) in [
        (Method::PUT, "/", "GET, HEAD"),
        (Method::DELETE, "/-/login", "GET, HEAD, POST"),
        (Method::PATCH, "/r/app/web/-/delete", "GET, HEAD, POST"),
    ] {
        let resp = client
            .request(method.clone(), format!("{}{path}", server.url("ci")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{method} {path}");
        assert_eq!(resp.headers()["allow"], allow, "{method} {path}");
    }
}

#[tokio::test]
async fn anonymous_visitors_see_what_anonymous_pulls_allow() {
    let mut open = Instance::new("open");
    open.extra = "[access]\nanonymous = \"pull\"\n".into();
    let mut shut = Instance::new("shut");
    shut.extra = "[ui]\nenabled = false\n".into();
    let (user, password) = (open.user().to_string(), open.password().to_string());
    let cfg = ConfigDir::new(&[open, shut]);
    let server = Server::start(&cfg);
    let reg = Reg::new(&server.url("open"), &user, &password);
    push_image(&reg, "public/app", "v1").await;
    let mut b = Browser::new(&server, "open");
    let home = b.get("/").await;
    assert_eq!(home.status, 200);
    assert!(home.has("data-repo=\"public/app\"") && home.has("Log in"));
    let repo = b.get("/r/public/app").await;
    assert!(repo.has("data-tag=\"v1\"") && !repo.has("-/delete"));
    assert_eq!(b.get("/-/usage").await.status, 403);
    // Without the UI, only the API answers (and wants credentials).
    let mut b = Browser::new(&server, "shut");
    for path in ["/", "/-/login"] {
        let page = b.get(path).await;
        assert_eq!(page.status, 401);
        assert!(
            page.has("\"errors\"") && !page.has("<html"),
            "{}",
            page.body
        );
    }
    server.stop();
}

#[tokio::test]
async fn hostile_names_labels_and_history_are_escaped() {
    let (_cfg, server) = two_users("");
    let reg = admin(&server);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": {
            "Env": ["X=\"><script>alert(1)</script>"],
            "Labels": {"<img src=x onerror=alert(2)>": "</td><script>alert(3)</script>"},
            "Cmd": ["sh", "-c", "echo '<b>bold</b>'"]
        },
        "history": [{"created_by": "RUN <script>alert(4)</script>"}],
        "rootfs": {"type": "layers", "diff_ids": []}
    }))
    .unwrap();
    let config = push_desc(&reg, "app/evil", OCI_CONFIG, &config).await;
    let layer = push_desc(&reg, "app/evil", OCI_LAYER, &random_bytes(100)).await;
    let manifest = image_manifest(OCI_MANIFEST, &config, &[layer]);
    let digest = put_manifest_ok(&reg, "app/evil", "v1", OCI_MANIFEST, &manifest).await;
    let mut b = Browser::new(&server, "ci");
    b.log_in("admin", "admin-pw").await;
    let page = b.get(&format!("/r/app/evil/-/image/{digest}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        !page.has("<script>alert") && !page.has("<img src=x"),
        "{}",
        page.body
    );
    assert!(
        page.has("&#60;script&#62;alert(4)&#60;/script&#62;"),
        "{}",
        page.body
    );
    assert!(page.has("&#60;img src=x onerror=alert(2)&#62;"));
    assert!(page.has("linux/amd64"));
    // A filter that is markup comes back as text.
    let home = b.get("/?q=%3Cscript%3Ealert(5)%3C%2Fscript%3E").await;
    assert!(!home.has("<script>alert(5)") && home.has("&#60;script&#62;alert(5)"));
    // Paths that are no repository name are not pages.
    assert_eq!(b.get("/r/%3Cscript%3E").await.status, 404);
    server.stop();
}

/// The tags of a repository page with their verdicts (`keep` or
/// `delete`).
fn verdicts(page: &Page) -> Vec<(String, String)> {
    page.body
        .split("<tr data-tag=\"")
        .skip(1)
        .map(|row| {
            let tag = row[..row.find('"').unwrap()].to_string();
            let at = row.find("data-verdict=\"").unwrap() + 14;
            let verdict = row[at..at + row[at..].find('"').unwrap()].to_string();
            (tag, verdict)
        })
        .collect()
}

#[tokio::test]
async fn retention_verdicts_agree_with_what_gc_deletes() {
    let (cfg, server) = two_users(
        "[retention]\nkeep_last = 2\nmax_age = \"10d\"\nprotect = [\"release-*\"]\ngc_grace = \"0s\"\n",
    );
    let reg = admin(&server);
    let ages = [
        ("base", "old-1", 40),
        ("base", "old-2", 30),
        ("base", "release-1", 50),
        ("base", "recent", 2),
        ("base", "new-1", 0),
        ("base", "new-2", 0),
        ("tools", "only", 90),
        ("tools", "second", 80),
        ("tools", "third", 70),
    ];
    for (repo, tag, _) in ages {
        push_image(&reg, repo, tag).await;
    }
    for (repo, tag, days) in ages {
        cfg.age_tag("ci", repo, tag, Duration::from_secs(days * 86_400 + 60));
    }
    let mut b = Browser::new(&server, "ci");
    b.log_in("admin", "admin-pw").await;
    let mut doomed = Vec::new();
    for repo in ["base", "tools"] {
        let page = b.get(&format!("/r/{repo}")).await;
        for (tag, verdict) in verdicts(&page) {
            if verdict == "delete" {
                doomed.push(format!("{repo}:{tag}"));
            }
        }
        assert!(
            page.has("kept by") && page.has("deleted by the next GC"),
            "{}",
            page.body
        );
    }
    doomed.sort();
    assert_eq!(doomed, ["base:old-1", "base:old-2", "tools:only"]);

    let report = berth_ok("gc", cfg.path(), &[]);
    let mut deleted: Vec<String> = report
        .lines()
        .filter_map(|l| l.trim().strip_prefix("tag "))
        .map(String::from)
        .collect();
    deleted.sort();
    assert_eq!(deleted, doomed, "{report}");
    assert_eq!(list_tags(&reg, "base").await.len(), 4);

    // The run is in the usage page's history; a dry run reports there.
    let usage = b.get("/-/usage").await;
    assert!(usage.has("<td class=\"num\">3</td>"), "{}", usage.body);
    let dry = b
        .post("/-/gc", &[("csrf", &usage.csrf()), ("run", "dry")])
        .await;
    assert_eq!(dry.status, 200);
    assert!(dry.has("ci: would delete 0 tags"), "{}", dry.body);
    server.stop();
}

#[tokio::test]
async fn sessions_end_when_idle_and_when_old() {
    let (_cfg, server) = two_users("[ui]\nsession_idle = \"1s\"\nsession_max = \"3s\"\n");
    let mut b = Browser::new(&server, "ci");
    let ok = b.log_in("admin", "admin-pw").await;
    assert!(ok.set_cookie.unwrap().contains("Max-Age=3"));
    assert_eq!(b.get("/").await.status, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        b.get("/").await.status,
        303,
        "idle for more than session_idle"
    );

    // Used every half second, it still ends session_max after the login.
    b.log_in("admin", "admin-pw").await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        statuses.push(b.get("/").await.status);
    }
    assert_eq!(statuses[..4], [200; 4], "{statuses:?}");
    assert_eq!(statuses.last(), Some(&303), "{statuses:?}");
    server.stop();
}

/// The audit lines (target `audit`) of a JSON log, as `user kind object
/// | why`.
fn audit_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["target"] == "audit")
        .map(|l| {
            let f = &l["fields"];
            assert_eq!(
                (&f["instance"], &f["action"]),
                (&json!("ci"), &json!("delete")),
                "{l}"
            );
            let s = |k: &str| f[k].as_str().unwrap().to_string();
            format!("{} {} {} | {}", s("user"), s("kind"), s("object"), s("why"))
        })
        .collect()
}

/// Every delete is one audit line saying who, what and why: a user's
/// through the API (a tag, a manifest with the tags that went with it, a
/// blob) and through the web UI, and a collection's, started in the web
/// UI or by `berth gc`.
#[tokio::test]
async fn every_delete_is_on_the_audit_log() {
    let mut ci = Instance::new("ci").with_users(&["admin"]);
    ci.extra = "[retention]\nkeep_last = 1\ngc_grace = \"0s\"\n".into();
    let cfg = ConfigDir::new(&[ci]);
    cfg.add_to_berth_toml("[log]\nformat = \"json\"\n");
    let server = Server::start(&cfg);
    let reg = admin(&server);

    push_image(&reg, "app", "v1").await;
    reg.expect_status(Method::DELETE, "/v2/app/manifests/v1", 202)
        .await;
    let (manifest, digest) = push_image(&reg, "app", "v2").await;
    put_manifest_ok(&reg, "app", "also-v2", OCI_MANIFEST, &manifest).await;
    reg.expect_status(Method::DELETE, &format!("/v2/app/manifests/{digest}"), 202)
        .await;
    let blob = push_blob(&reg, "app", b"a blob").await;
    reg.expect_status(Method::DELETE, &format!("/v2/app/blobs/{blob}"), 202)
        .await;

    push_image(&reg, "app", "ui").await;
    let mut b = Browser::new(&server, "ci");
    b.log_in("admin", "admin-pw").await;
    let confirm = b.get("/r/app/-/delete?tag=ui").await;
    let done = b
        .post(
            "/r/app/-/delete",
            &[("csrf", &confirm.csrf()), ("tag", "ui")],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.body);

    let lines = audit_lines(&server.wait_for_stderr("\"object\":\"app:ui\""));
    let api = "requested through the API";
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            format!("admin blob app@{blob} | {api}"),
            format!("admin manifest app@{digest} | {api}"),
            format!("admin tag app:also-v2 | its manifest was deleted, {api}"),
            "admin tag app:ui | requested through the web UI".to_string(),
            format!("admin tag app:v1 | {api}"),
            format!("admin tag app:v2 | its manifest was deleted, {api}"),
        ]
    );

    // A collection started in the web UI: retention's tags, then what
    // garbage collection deleted, each with its reason and who started it.
    push_image(&reg, "other", "old").await;
    push_image(&reg, "other", "new").await;
    cfg.age_tag("ci", "other", "old", Duration::from_secs(86_400));
    let usage = b.get("/-/usage").await;
    let started = b
        .post("/-/gc", &[("csrf", &usage.csrf()), ("run", "now")])
        .await;
    assert_eq!(started.status, 303);
    let log = server.wait_for_stderr("retention (web UI)");
    let run = "(started by admin in the web UI)";
    let collected: Vec<String> = audit_lines(&log).split_off(lines.len());
    assert_eq!(
        collected[0],
        format!("retention tag other:old | no retention rule keeps it {run}")
    );
    let gc = |kind: &str| {
        collected
            .iter()
            .filter(|l| l.starts_with(&format!("gc {kind} ")))
            .count()
    };
    // The manifests of app:v1, app:ui and other:old; the blobs of those
    // and of the manifest deleted by digest (itself, a config and a
    // layer each), and the blob unlinked through the API.
    assert_eq!((gc("manifest"), gc("blob")), (3, 13), "{collected:#?}");
    assert!(
        collected[1..]
            .iter()
            .all(|l| l.ends_with(&format!("references it {run}"))),
        "{collected:#?}"
    );

    // `berth gc` logs its deletes on its own stderr.
    push_image(&reg, "third", "a").await;
    push_image(&reg, "third", "b").await;
    cfg.age_tag("ci", "third", "a", Duration::from_secs(86_400));
    let out = std::process::Command::new(crate::common::berth_bin())
        .args(["gc", "--config-dir"])
        .arg(cfg.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let cli = audit_lines(&String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        cli[0],
        "retention tag third:a | no retention rule keeps it (berth gc)"
    );
    assert_eq!(cli.len(), 5, "{cli:#?}");
    server.stop();
}
