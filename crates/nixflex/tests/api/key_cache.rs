//! The per-node key cache (docs/security.md#key-cache): a key changed on one node is seen by every
//! node within a second, and a new key works at once.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Backend, Key, TestApp, both, expect_error};

/// The promised bound on how long another node may still accept a revoked or rotated key.
const WITHIN: Duration = Duration::from_secs(1);

async fn status_on(app: &TestApp, base: &str, key: &Key) -> u16 {
    app.client
        .get(format!("{base}/v1/agents"))
        .header("authorization", key.bearer())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Polls `base` with `key` until it answers 401; panics when a request sent `WITHIN` after
/// `since` still succeeds.
async fn refused_within(app: &TestApp, base: &str, key: &Key, since: Instant) {
    loop {
        let sent = since.elapsed();
        match status_on(app, base, key).await {
            401 => return,
            200 => assert!(sent <= WITHIN, "still accepted {sent:?} after the change"),
            other => panic!("unexpected status {other}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn another_key(app: &TestApp, key: &Key) -> Key {
    let response = app.post(key, "/v1/keys", json!({"name": "second"})).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    Key {
        id: body["key_id"].as_str().unwrap().to_owned(),
        secret: body["key_secret"].as_str().unwrap().to_owned(),
        account_id: key.account_id.clone(),
    }
}

async fn a_key_revoked_on_one_node_is_refused_by_the_other_within_a_second(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let second = another_key(&app, &key).await;
    let node = app.spawn_node().await;
    // The second node has verified (and cached) the key before it is revoked.
    for _ in 0..3 {
        assert_eq!(status_on(&app, &node.base_url(), &second).await, 200);
    }
    let response = app.delete(&key, &format!("/v1/keys/{}", second.id)).await;
    assert_eq!(response.status(), 200);
    let revoked_at = Instant::now();
    // The node that revoked it refuses it at once.
    expect_error(app.get(&second, "/v1/agents").await, 401, "invalid_api_key").await;
    refused_within(&app, &node.base_url(), &second, revoked_at).await;
    // The key still in use keeps working on both.
    assert_eq!(status_on(&app, &node.base_url(), &key).await, 200);
    assert_eq!(status_on(&app, &app.base, &key).await, 200);
    node.shutdown.cancel();
    node.wait().await.unwrap();
}

async fn a_key_rotated_on_one_node_loses_its_old_secret_on_the_other_within_a_second(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let node = app.spawn_node().await;
    assert_eq!(status_on(&app, &node.base_url(), &key).await, 200);
    let response = app.post(&key, "/v1/keys/rotate", json!({})).await;
    assert_eq!(response.status(), 200);
    let rotated_at = Instant::now();
    let body: Value = response.json().await.unwrap();
    let rotated = Key { secret: body["key_secret"].as_str().unwrap().to_owned(), ..key.clone() };
    refused_within(&app, &node.base_url(), &key, rotated_at).await;
    assert_eq!(status_on(&app, &node.base_url(), &rotated).await, 200);
    node.shutdown.cancel();
    node.wait().await.unwrap();
}

async fn a_new_key_works_at_once_on_the_node_that_made_it_and_on_the_others(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let node = app.spawn_node().await;
    // Both nodes have the account's first key cached.
    assert_eq!(status_on(&app, &app.base, &key).await, 200);
    assert_eq!(status_on(&app, &node.base_url(), &key).await, 200);
    let second = another_key(&app, &key).await;
    assert_eq!(status_on(&app, &app.base, &second).await, 200, "at once on the node that made it");
    // Unknown keys are never cached, so the other node knows it as soon as it is committed.
    assert_eq!(status_on(&app, &node.base_url(), &second).await, 200);
    // A wrong secret for a cached key is still refused.
    let wrong = Key { secret: "0".repeat(second.secret.len()), ..second.clone() };
    expect_error(app.get(&wrong, "/v1/agents").await, 401, "invalid_api_key").await;
    node.shutdown.cancel();
    node.wait().await.unwrap();
}

both!(
    a_key_revoked_on_one_node_is_refused_by_the_other_within_a_second,
    a_key_rotated_on_one_node_loses_its_old_secret_on_the_other_within_a_second,
    a_new_key_works_at_once_on_the_node_that_made_it_and_on_the_others,
);
