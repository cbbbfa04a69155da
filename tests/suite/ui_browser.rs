//! The web UI in a real browser: Debian's Chromium, headless, driven
//! through chromedriver (WebDriver) by fantoccini. An admin logs in, opens
//! a multi-arch image skopeo pushed (with an SBOM referring to it), one of
//! its platforms, the usage page, deletes a tag (the API then says it is
//! gone) and logs out; a pull-only user sees no delete button, and a delete
//! it forges from the page is refused. A screenshot of each step goes to
//! `target/ui-screenshots/` (to `BERTH_UI_SCREENSHOTS` when set: the
//! README's come from there).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::clients::{make_multiarch, skopeo_push};
use crate::common::s3::{free_port, stop};
use crate::common::{access_rule, ConfigDir, Instance, Server};
use crate::common_api::*;

/// chromedriver on a port of its own, stopped by PID when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run chromedriver (Debian package chromium-driver)");
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// A headless Chromium session, once chromedriver answers.
    async fn session(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                            "--disable-dev-shm-usage", "--window-size=1280,900"]}),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let mut last = None;
        for _ in 0..100 {
            match ClientBuilder::new(connector.clone())
                .capabilities(caps.clone())
                .connect(&self.url)
                .await
            {
                Ok(c) => return c,
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("no Chromium session: {last:?}");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Where screenshots go.
fn shots_dir() -> PathBuf {
    let dir = match std::env::var_os("BERTH_UI_SCREENSHOTS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots"),
    };
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(shots_dir().join(format!("{name}.png")), png).unwrap();
}

async fn log_in(c: &Client, base: &str, user: &str, password: &str) {
    c.goto(&format!("{base}/-/login")).await.unwrap();
    c.find(Locator::Id("user"))
        .await
        .unwrap()
        .send_keys(user)
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    click(c, Locator::Id("login")).await;
    wait_for(c, Locator::Css("table")).await;
}

/// Clicks what `at` finds.
async fn click(c: &Client, at: Locator<'_>) {
    c.find(at).await.unwrap().click().await.unwrap();
}

/// Waits until the page shows what `at` finds.
async fn wait_for(c: &Client, at: Locator<'_>) {
    c.wait().for_element(at).await.unwrap();
}

async fn text(c: &Client) -> String {
    c.find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_logs_in_browses_deletes_and_is_refused_a_forged_post() {
    let mut ci = Instance::new("ci").with_users(&["admin", "puller"]);
    ci.extra = format!(
        "[retention]\nkeep_last = 1\n[access]\ndefault = \"none\"\n{}{}",
        access_rule(&["admin"], &["**"], "delete"),
        access_rule(&["puller"], &["**"], "pull"),
    );
    let cfg = ConfigDir::new(&[ci]);
    let server = Server::start(&cfg);
    let base = server.url("ci");
    let host = server.addr("ci").to_string();
    let reg = Reg::new(&base, "admin", "admin-pw");

    // skopeo pushes a multi-arch index; an SBOM refers to it.
    let image = make_multiarch("v1");
    skopeo_push(
        &image.reference("v1"),
        &format!("docker://{host}/team/app:v1"),
        "admin:admin-pw",
        &["--all"],
    );
    skopeo_push(
        &image.reference("v1"),
        &format!("docker://{host}/team/app:v2"),
        "admin:admin-pw",
        &["--all"],
    );
    let index = image.digest("v1");
    let config = push_desc(&reg, "team/app", "application/vnd.oci.empty.v1+json", b"{}").await;
    let sbom = push_desc(
        &reg,
        "team/app",
        "application/spdx+json",
        br#"{"spdxVersion":"SPDX-2.3"}"#,
    )
    .await;
    let referrer = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/spdx+json",
        "config": config.json(),
        "layers": [sbom.json()],
        "subject": {"mediaType": OCI_INDEX, "digest": index, "size": image.descriptor("v1")["size"]},
    }))
    .unwrap();
    put_manifest_by_digest(&reg, "team/app", OCI_MANIFEST, &referrer).await;

    let driver = Driver::start();
    let c = driver.session().await;
    c.goto(&format!("{base}/-/login")).await.unwrap();
    shot(&c, "1-login").await;
    log_in(&c, &base, "admin", "admin-pw").await;
    assert!(text(&c).await.contains("team/app"));
    shot(&c, "2-repositories").await;

    click(&c, Locator::LinkText("team/app")).await;
    wait_for(&c, Locator::Css("tr[data-tag='v2']")).await;
    let page = text(&c).await;
    assert!(page.contains("linux/amd64, linux/arm64"), "{page}");
    assert!(
        page.contains("kept by keep_last") && page.contains("deleted by the next GC"),
        "{page}"
    );
    shot(&c, "3-repository").await;

    click(&c, Locator::LinkText("v1")).await;
    wait_for(&c, Locator::XPath("//h2[text()='Platforms']")).await;
    let page = text(&c).await;
    assert!(
        page.contains("application/spdx+json"),
        "the referrer: {page}"
    );
    shot(&c, "4-index").await;
    click(&c, Locator::XPath("//tr[td[text()='linux/arm64']]//a")).await;
    wait_for(&c, Locator::XPath("//h2[text()='Config']")).await;
    let page = text(&c).await;
    assert!(
        page.contains("linux/arm64") && page.contains("/bin/true"),
        "{page}"
    );
    shot(&c, "5-image").await;

    c.goto(&format!("{base}/-/usage")).await.unwrap();
    click(&c, Locator::Id("gc-dry")).await;
    wait_for(&c, Locator::Css("pre.raw")).await;
    assert!(text(&c).await.contains("would delete 1 tags"));
    shot(&c, "6-usage").await;

    // Delete v1 through the confirmation page; the API agrees.
    c.goto(&format!("{base}/r/team/app")).await.unwrap();
    click(&c, Locator::Css("tr[data-tag='v1'] a.danger")).await;
    wait_for(&c, Locator::Id("confirm")).await;
    assert!(text(&c).await.contains("the tag team/app:v1"));
    shot(&c, "7-delete").await;
    click(&c, Locator::Id("confirm")).await;
    wait_for(&c, Locator::Css("p.notice")).await;
    assert!(text(&c).await.contains("Deleted v1."));
    assert_eq!(list_tags(&reg, "team/app").await, ["v2"]);
    click(&c, Locator::Css("#logout button")).await;
    wait_for(&c, Locator::Id("login")).await;
    c.goto(&format!("{base}/r/team/app")).await.unwrap();
    wait_for(&c, Locator::Id("login")).await;

    // The pull-only user: no delete buttons; a delete forged from the page
    // (its own token, its own session) is refused and deletes nothing.
    log_in(&c, &base, "puller", "puller-pw").await;
    c.goto(&format!("{base}/r/team/app")).await.unwrap();
    wait_for(&c, Locator::Css("tr[data-tag='v2']")).await;
    assert!(c
        .find_all(Locator::Css("a.danger"))
        .await
        .unwrap()
        .is_empty());
    shot(&c, "8-pull-only").await;
    c.execute(
        "const f = document.createElement('form');
         f.method = 'post'; f.action = '/r/team/app/-/delete';
         for (const [k, v] of [['csrf', document.querySelector('input[name=csrf]').value], ['tag', 'v2']]) {
           const i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i);
         }
         document.body.appendChild(f); f.submit();",
        vec![],
    )
    .await
    .unwrap();
    wait_for(&c, Locator::XPath("//h1[text()='Not allowed']")).await;
    assert_eq!(list_tags(&reg, "team/app").await, ["v2"]);
    c.close().await.unwrap();
    drop(driver);
    server.stop();
}
