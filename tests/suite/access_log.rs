//! The access log over a real socket, with JSON logs: the user name a
//! refused login gave, the bytes a request sent and a response carried, and
//! durations in milliseconds to the microsecond.

use crate::common::{sha256_digest, ConfigDir, Instance};
use crate::common_api::*;
use serde_json::Value;

/// A server with one instance `ci` logging JSON.
fn env() -> Env {
    let cfg = ConfigDir::new(&[Instance::new("ci")]);
    cfg.add_to_berth_toml("[log]\nformat = \"json\"\n");
    Env::start_in(cfg, "ci")
}

/// The fields of the access line of the request `id` (waiting for it).
fn access_of(env: &Env, id: &str) -> Value {
    let needle = format!("\"request_id\":\"{id}\"");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let log = env.server.wait_for_stderr(&needle);
        let found = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["target"] == "access" && l["span"]["request_id"] == id);
        if let Some(line) = found {
            return line["fields"].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no access line for {id}:\n{log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A millisecond figure with at most three decimals, as written.
fn assert_millis(fields: &Value) {
    let d = &fields["duration_ms"];
    let text = d.to_string();
    assert!(d.is_number(), "{fields}");
    let decimals = text.split_once('.').map_or(0, |(_, f)| f.len());
    assert!(decimals <= 3, "duration_ms {text} has {decimals} decimals");
}

#[tokio::test]
async fn refused_logins_name_the_user_and_bytes_go_both_ways() {
    let env = env();

    let wrong = Reg::new(&env.reg.base, "mallory", "not-the-password");
    let resp = wrong.get("/v2/").send().await.unwrap();
    let id = must_header(&resp, "x-request-id");
    expect_status(resp, 401).await;
    let line = access_of(&env, &id);
    assert_eq!(line["user"], "mallory", "{line}");
    assert_eq!(line["status"], 401, "{line}");
    assert_millis(&line);

    let data = random_bytes(300_000);
    let digest = sha256_digest(&data);
    let resp = post_blob(&env.reg, "logs/x", &digest, &data).await;
    let id = must_header(&resp, "x-request-id");
    expect_blob_created(resp, "logs/x", &digest).await;
    let line = access_of(&env, &id);
    assert_eq!(line["user"], "ci-user", "{line}");
    assert_eq!(line["bytes_in"], 300_000, "{line}");
    assert_eq!(line["bytes_out"], 0, "{line}");
    assert_millis(&line);

    let path = format!("/v2/logs/x/blobs/{digest}");
    let line = blob_read(&env, Method::GET, &path).await;
    assert_eq!(line["bytes_in"], 0, "{line}");
    assert_eq!(line["bytes_out"], 300_000, "{line}");
    // A HEAD sends no body, whatever its Content-Length says.
    let line = blob_read(&env, Method::HEAD, &path).await;
    assert_eq!(line["bytes_out"], 0, "{line}");
}

/// The access line of a `method` request of `path` answered 200.
async fn blob_read(env: &Env, method: Method, path: &str) -> Value {
    let resp = env.reg.send(method, path).await;
    let id = must_header(&resp, "x-request-id");
    expect_status(resp, 200).await;
    access_of(env, &id)
}
