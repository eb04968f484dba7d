//! `Idempotency-Key` (docs/decisions.md#idempotency): stored in the database, so replays survive restarts and hold
//! across nodes; concurrent duplicates execute once.

use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::helpers::{Backend, Key, TestApp, both, expect_error};

async fn post_with_key(app: &TestApp, base: &str, key: &Key, idem: &str, body: Value) -> Response {
    app.client
        .post(format!("{base}/v1/agents"))
        .header("authorization", key.bearer())
        .header("idempotency-key", idem)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn agent_count(app: &TestApp, key: &Key) -> i64 {
    let listed: Value = app.get(key, "/v1/agents").await.json().await.unwrap();
    listed["count"].as_i64().unwrap()
}

async fn a_retried_request_is_replayed_not_repeated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let body = json!({"name": "Once"});
    let first = post_with_key(&app, &app.base, &key, "create-1", body.clone()).await;
    assert_eq!(first.status(), 201);
    assert_eq!(first.headers()["idempotent-replayed"], "false");
    let first_body: Value = first.json().await.unwrap();
    let second = post_with_key(&app, &app.base, &key, "create-1", body.clone()).await;
    assert_eq!(second.status(), 201);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    assert!(second.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    assert_eq!(second.json::<Value>().await.unwrap(), first_body);
    assert_eq!(agent_count(&app, &key).await, 1);
    // A new key is a new request.
    assert_eq!(post_with_key(&app, &app.base, &key, "create-2", body).await.status(), 201);
    assert_eq!(agent_count(&app, &key).await, 2);
}

async fn reusing_a_key_for_a_different_request_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    assert_eq!(post_with_key(&app, &app.base, &key, "k", json!({"name": "A"})).await.status(), 201);
    let response = post_with_key(&app, &app.base, &key, "k", json!({"name": "B"})).await;
    expect_error(response, 409, "idempotency_key_reused").await;
    assert_eq!(agent_count(&app, &key).await, 1);
    // The same key on another path or by another account is independent.
    let agent_path = format!("/v1/agents/{}", {
        let listed: Value = app.get(&key, "/v1/agents").await.json().await.unwrap();
        listed["agents"][0]["agent_id"].as_str().unwrap().to_owned()
    });
    let response = app
        .request(Method::PUT, &agent_path, Some(&key))
        .header("idempotency-key", "k")
        .json(&json!({"name": "C"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let other = app.signup().await;
    assert_eq!(
        post_with_key(&app, &app.base, &other, "k", json!({"name": "B"})).await.status(),
        201
    );
}

async fn concurrent_duplicates_execute_exactly_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let responses = futures::future::join_all(
        (0..8).map(|_| post_with_key(&app, &app.base, &key, "burst", json!({"name": "Burst"}))),
    )
    .await;
    let mut created_ids = Vec::new();
    for response in responses {
        match response.status().as_u16() {
            201 => {
                let body: Value = response.json().await.unwrap();
                created_ids.push(body["agent_id"].as_str().unwrap().to_owned());
            }
            409 => {
                expect_error(response, 409, "idempotency_request_in_flight").await;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(!created_ids.is_empty());
    created_ids.dedup();
    assert_eq!(created_ids.len(), 1, "every 201 is the same agent");
    assert_eq!(agent_count(&app, &key).await, 1, "executed once");
}

async fn replays_survive_restarts_and_hold_across_nodes(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let first: Value = post_with_key(&app, &app.base, &key, "durable", json!({"name": "D"}))
        .await
        .json()
        .await
        .unwrap();
    let node = app.spawn_node().await;
    let other_node =
        post_with_key(&app, &node.base_url(), &key, "durable", json!({"name": "D"})).await;
    assert_eq!(other_node.headers()["idempotent-replayed"], "true");
    assert_eq!(other_node.json::<Value>().await.unwrap(), first);
    node.shutdown.cancel();
    node.wait().await.unwrap();
    app.restart().await;
    let after_restart = post_with_key(&app, &app.base, &key, "durable", json!({"name": "D"})).await;
    assert_eq!(after_restart.headers()["idempotent-replayed"], "true");
    assert_eq!(after_restart.json::<Value>().await.unwrap(), first);
    assert_eq!(agent_count(&app, &key).await, 1);
}

async fn client_errors_are_replayed_too(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let bad = json!({"voice_id": "Nobody"});
    let first = post_with_key(&app, &app.base, &key, "bad", bad.clone()).await;
    assert_eq!(first.status(), 400);
    let second = post_with_key(&app, &app.base, &key, "bad", bad).await;
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    expect_error(second, 400, "invalid_voice_id").await;
}

async fn deletes_replay_their_first_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let agent = app.create_agent(&key, json!({})).await;
    let path = format!("/v1/agents/{}", agent["agent_id"].as_str().unwrap());
    let delete =
        || app.request(Method::DELETE, &path, Some(&key)).header("idempotency-key", "del").send();
    assert_eq!(delete().await.unwrap().status(), 200);
    let again = delete().await.unwrap();
    assert_eq!(again.status(), 200, "a retry sees the original success, not a 404");
    assert_eq!(again.headers()["idempotent-replayed"], "true");
}

async fn bad_keys_are_rejected_and_reads_ignore_the_header(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let long = "k".repeat(256);
    let error = expect_error(
        post_with_key(&app, &app.base, &key, &long, json!({})).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(error["details"]["field"], "Idempotency-Key");
    assert_eq!(
        post_with_key(&app, &app.base, &key, &"k".repeat(255), json!({})).await.status(),
        201
    );
    let read = app
        .request(Method::GET, "/v1/agents", Some(&key))
        .header("idempotency-key", "read")
        .send()
        .await
        .unwrap();
    assert!(!read.headers().contains_key("idempotent-replayed"));
}

/// Every stored idempotent response body, read straight from the database.
async fn stored_bodies(app: &TestApp) -> Vec<Vec<u8>> {
    let url = app.config.effective_database_url();
    let query = "select response_body from idempotency_keys where response_body is not null";
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::query_scalar(query).fetch_all(&pool).await.unwrap()
    } else {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query_scalar(query).fetch_all(&pool).await.unwrap()
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

async fn sign_up_retries_do_not_create_two_accounts_nor_replay_the_secret(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let signup = || {
        app.request(Method::POST, "/v1/keys", None)
            .header("idempotency-key", "signup-1")
            .json(&json!({"email": "a@example.com"}))
            .send()
    };
    let first = signup().await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let secret = first["key_secret"].as_str().unwrap().to_owned();
    // A second client behind the same address (a NAT, a proxy) sending the same key gets no
    // secret, and no second account is made.
    let second = signup().await.unwrap();
    assert_eq!(second.status(), 409);
    let text = second.text().await.unwrap();
    assert!(!text.contains(&secret), "the secret is never replayed: {text}");
    assert!(!text.contains(first["key_id"].as_str().unwrap()), "{text}");
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"]["code"], "idempotent_replay_withheld");
    assert!(!stored_bodies(&app).await.iter().any(|body| contains(body, &secret)));
}

async fn new_key_secrets_are_stored_sealed_and_replayed_only_to_their_requester(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let create = |with: &Key| {
        app.request(Method::POST, "/v1/keys", Some(with))
            .header("idempotency-key", "second-key")
            .json(&json!({"name": "ci"}))
            .send()
    };
    let first = create(&key).await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let secret = first["key_secret"].as_str().unwrap().to_owned();
    let other = Key {
        id: first["key_id"].as_str().unwrap().to_owned(),
        secret: secret.clone(),
        account_id: key.account_id.clone(),
    };

    // The same key retrying gets the same answer (no third key is made).
    let replay = create(&key).await.unwrap();
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert!(replay.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    assert_eq!(replay.json::<Value>().await.unwrap(), first);
    // Another key of the same account does not see it.
    let stranger = create(&other).await.unwrap();
    let error = expect_error(stranger, 409, "idempotent_replay_withheld").await;
    assert!(!error.to_string().contains(&secret));
    let keys: Value = app.get(&key, "/v1/keys").await.json().await.unwrap();
    assert_eq!(keys["count"], 2);

    // Rotation's secret is sealed too.
    let rotated = app
        .request(Method::POST, "/v1/keys/rotate", Some(&other))
        .header("idempotency-key", "rotate-1")
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), 200);
    let rotated: Value = rotated.json().await.unwrap();
    let new_secret = rotated["key_secret"].as_str().unwrap().to_owned();
    for body in stored_bodies(&app).await {
        assert!(
            !contains(&body, &secret) && !contains(&body, &new_secret),
            "plaintext secret stored"
        );
    }
}

both!(
    a_retried_request_is_replayed_not_repeated,
    reusing_a_key_for_a_different_request_is_refused,
    concurrent_duplicates_execute_exactly_once,
    replays_survive_restarts_and_hold_across_nodes,
    client_errors_are_replayed_too,
    deletes_replay_their_first_answer,
    bad_keys_are_rejected_and_reads_ignore_the_header,
    sign_up_retries_do_not_create_two_accounts_nor_replay_the_secret,
    new_key_secrets_are_stored_sealed_and_replayed_only_to_their_requester,
);
