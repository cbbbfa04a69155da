//! Request ids over a real socket, with JSON logs: the id a response carries
//! in `X-Request-Id` is the one on that request's access line and on every
//! other line logged for it (an internal error's cause included).

use crate::common::{ConfigDir, Instance};
use crate::common_api::*;
use serde_json::Value;

/// A server with one instance `ci` logging JSON, whose repository list
/// cannot be read (a symbolic link to itself where its directory should
/// be): listing the catalog fails with an internal error.
fn env() -> Env {
    let cfg = ConfigDir::new(&[Instance::new("ci")]);
    let berth_toml = cfg.path().join("berth.toml");
    let mut toml = std::fs::read_to_string(&berth_toml).unwrap();
    toml.push_str("[log]\nformat = \"json\"\n");
    std::fs::write(&berth_toml, toml).unwrap();
    let v2 = cfg.storage_root("ci").join("docker/registry/v2");
    std::fs::create_dir_all(&v2).unwrap();
    std::os::unix::fs::symlink("repositories", v2.join("repositories")).unwrap();
    Env::start_in(cfg, "ci")
}

/// The log lines of the request `id`, once its access line is written;
/// every line of the log must be JSON.
fn lines_of(env: &Env, id: &str) -> Vec<Value> {
    let log = env
        .server
        .wait_for_stderr(&format!("\"request_id\":\"{id}\""));
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let mine: Vec<Value> = lines
        .into_iter()
        .filter(|l| l["span"]["request_id"] == id)
        .collect();
    assert!(
        mine.iter().any(|l| l["target"] == "access"),
        "no access line for {id}:\n{log}"
    );
    mine
}

/// The one access line among `lines`.
fn access_line(lines: &[Value]) -> &Value {
    let access: Vec<&Value> = lines.iter().filter(|l| l["target"] == "access").collect();
    assert_eq!(access.len(), 1, "{lines:#?}");
    access[0]
}

fn is_generated(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|c| c.is_ascii_hexdigit())
}

#[tokio::test]
async fn the_response_id_is_on_every_line_of_its_request() {
    let env = env();

    let resp = env.reg.get("/v2/").send().await.unwrap();
    let id = must_header(&resp, "x-request-id");
    expect_status(resp, 200).await;
    assert!(is_generated(&id), "{id}");
    let lines = lines_of(&env, &id);
    let access = access_line(&lines);
    assert_eq!(access["fields"]["status"], 200);
    assert_eq!(access["span"]["method"], "GET");
    assert_eq!(access["span"]["path"], "/v2/");
    assert_eq!(access["span"]["instance"], "ci");
    assert_eq!(access["span"]["user"], "ci-user");

    let resp = env.reg.get("/v2/_catalog").send().await.unwrap();
    let failed = must_header(&resp, "x-request-id");
    expect_error(resp, 500, "UNKNOWN").await;
    assert!(is_generated(&failed) && failed != id, "{failed} after {id}");
    let lines = lines_of(&env, &failed);
    assert_eq!(access_line(&lines)["fields"]["status"], 500);
    let errors: Vec<&Value> = lines.iter().filter(|l| l["level"] == "ERROR").collect();
    assert_eq!(errors.len(), 1, "the internal error's cause: {lines:#?}");
    assert_eq!(errors[0]["span"]["instance"], "ci");
    assert_eq!(errors[0]["span"]["user"], "ci-user");
    let cause = errors[0]["fields"]["message"].as_str().unwrap();
    assert!(cause.contains("listing repositories"), "{cause}");
}

#[tokio::test]
async fn answers_without_an_instance_carry_an_id_too() {
    let env = env();
    let shared = env.server.shared_addr.clone().unwrap();
    let resp = raw_request(&shared, "GET", "/v2/", "nobody.test", None, b"").await;
    resp.expect_error(404, "NAME_UNKNOWN", "unknown host");
    let id = resp.header("x-request-id").unwrap().to_string();
    assert!(is_generated(&id), "{id}");
    let lines = lines_of(&env, &id);
    let access = access_line(&lines);
    assert_eq!(access["fields"]["instance"], "-");
    assert!(access["span"].get("instance").is_none(), "{access}");
}

/// The id of the answer to `GET /v2/` sent with these `X-Request-Id`s.
async fn id_answering(reg: &Reg, sent: &[&str]) -> String {
    let mut req = reg.get("/v2/");
    for id in sent {
        req = req.header("x-request-id", *id);
    }
    let resp = req.send().await.unwrap();
    let id = must_header(&resp, "x-request-id");
    expect_status(resp, 200).await;
    id
}

#[tokio::test]
async fn a_well_formed_client_id_is_taken_over() {
    let env = env();
    let sent = "build-42.step_7";
    assert_eq!(id_answering(&env.reg, &[sent]).await, sent);
    lines_of(&env, sent);

    let too_long = "a".repeat(65);
    for bad in ["has space", "quote\"d", "", too_long.as_str()] {
        let id = id_answering(&env.reg, &[bad]).await;
        assert!(is_generated(&id), "sent {bad:?}, got {id:?}");
        lines_of(&env, &id);
    }
    let id = id_answering(&env.reg, &["one", "two"]).await;
    assert!(is_generated(&id), "sent two, got {id:?}");
}
