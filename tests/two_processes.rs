//! Two berth processes serving one storage root, as behind a load
//! balancer: what one of them was told, the other continues.

mod common;
#[path = "common_api/mod.rs"]
mod common_api;

use common::{sha256_digest, ConfigDir, Instance, Server};
use common_api::*;

async fn patch(reg: &Reg, session: &str, start: usize, data: &[u8]) -> String {
    let resp = reg
        .patch(session)
        .header(
            "content-range",
            format!("{start}-{}", start + data.len() - 1),
        )
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    let location = must_header(&resp, "location");
    expect_status(resp, 202).await;
    location
}

async fn finish(reg: &Reg, session: &str, digest: &str) {
    let resp = reg
        .put(&with_query(session, &format!("digest={digest}")))
        .send()
        .await
        .unwrap();
    expect_status(resp, 201).await;
}

#[tokio::test]
async fn a_chunked_upload_goes_on_whichever_process_gets_each_chunk() {
    let cfg = ConfigDir::new(&[Instance::new("ci")]);
    let (a, b) = (Server::start(&cfg), Server::start(&cfg));
    let (ra, rb) = (Reg::for_instance(&a, "ci"), Reg::for_instance(&b, "ci"));
    let data = random_bytes(5 << 20);
    let digest = sha256_digest(&data);
    let resp = ra.post("/v2/app/blobs/uploads/").send().await.unwrap();
    let mut session = must_header(&resp, "location");
    expect_status(resp, 202).await;
    // Chunks alternate: A, B, A, B, ...
    let chunk = 1 << 20;
    for (i, piece) in data.chunks(chunk).enumerate() {
        let reg = if i % 2 == 0 { &ra } else { &rb };
        session = patch(reg, &session, i * chunk, piece).await;
        let status = reg.get(&session).send().await.unwrap();
        assert_eq!(
            header(&status, "range").as_deref(),
            Some(format!("0-{}", (i + 1) * chunk - 1).as_str()),
            "after chunk {i}"
        );
    }
    finish(&rb, &session, &digest).await;
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
    let resp = ra.post("/v2/app/blobs/uploads/").send().await.unwrap();
    let session = must_header(&resp, "location");
    expect_status(resp, 202).await;
    let half = data.len() / 2;
    let session = patch(&ra, &session, 0, &data[..half]).await;
    a.signal("KILL");
    let session = patch(&rb, &session, half, &data[half..]).await;
    finish(&rb, &session, &digest).await;
    assert_blob(&rb, "app", &digest, &data).await;
    b.stop();
}
