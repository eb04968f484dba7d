//! The rules every route obeys: the envelope for every failure, request ids, body checks,
//! status codes, health.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, both, expect_error};

async fn health_and_readiness_answer_without_a_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app.request(Method::GET, "/healthz", None).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    let response = app.request(Method::GET, "/readyz", None).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let expected = if backend == Backend::Postgres { "postgres" } else { "sqlite" };
    assert_eq!(body["database"], expected);
}

async fn every_response_carries_a_request_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let a = app.get(&key, "/v1/agents").await;
    let b = app.get(&key, "/v1/agents").await;
    let id_a = a.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(id_a.starts_with("req_"));
    assert_ne!(id_a, b.headers()["x-request-id"].to_str().unwrap());
    let echoed = app
        .request(Method::GET, "/v1/agents", Some(&key))
        .header("x-request-id", "client-trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "client-trace-42");
    let replaced = app
        .request(Method::GET, "/v1/agents", Some(&key))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    assert!(replaced.headers()["x-request-id"].to_str().unwrap().starts_with("req_"));
    for path in ["/healthz", "/v1/nope"] {
        let response = app.request(Method::GET, path, Some(&key)).send().await.unwrap();
        assert!(response.headers().contains_key("x-request-id"), "{path}");
    }
}

async fn unknown_routes_and_wrong_methods_get_the_envelope(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    expect_error(app.get(&key, "/v1/agentz").await, 404, "route_not_found").await;
    expect_error(app.get(&key, "/v2/agents").await, 404, "route_not_found").await;
    expect_error(
        app.request(Method::GET, "/nowhere", None).send().await.unwrap(),
        404,
        "route_not_found",
    )
    .await;
    let response = app.request(Method::PATCH, "/v1/agents", Some(&key)).send().await.unwrap();
    let allow = response.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    expect_error(response, 405, "method_not_allowed").await;
    let response = app
        .request(Method::POST, "/v1/agents/agent_0000000000000000", Some(&key))
        .send()
        .await
        .unwrap();
    expect_error(response, 405, "method_not_allowed").await;
}

async fn malformed_bodies_are_rejected_with_clear_codes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let send = |body: &'static str, content_type: Option<&'static str>| {
        let mut builder = app.request(Method::POST, "/v1/agents", Some(&key)).body(body);
        if let Some(ct) = content_type {
            builder = builder.header("content-type", ct);
        }
        builder.send()
    };
    let error = expect_error(
        send("{\"name\": ", Some("application/json")).await.unwrap(),
        400,
        "invalid_json",
    )
    .await;
    assert!(error["details"]["line"].is_number());
    expect_error(send("[1,2]", Some("application/json")).await.unwrap(), 400, "invalid_request")
        .await;
    expect_error(send("\"text\"", Some("application/json")).await.unwrap(), 400, "invalid_request")
        .await;
    expect_error(
        send("{\"name\":\"x\"}", Some("text/plain")).await.unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
    expect_error(send("{\"name\":\"x\"}", None).await.unwrap(), 415, "unsupported_media_type")
        .await;
    expect_error(
        send("name=x", Some("application/x-www-form-urlencoded")).await.unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
    let ok = send("{\"name\":\"x\"}", Some("application/json; charset=utf-8")).await.unwrap();
    assert_eq!(ok.status(), 201);
    let listed: Value = app.get(&key, "/v1/agents").await.json().await.unwrap();
    assert_eq!(listed["count"], 1, "only the valid request wrote anything");
}

async fn oversized_bodies_get_413(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.max_body_bytes = 4096).await;
    let key = app.signup().await;
    let big = json!({"system_prompt": "x".repeat(5000)});
    let error =
        expect_error(app.post(&key, "/v1/agents", big.clone()).await, 413, "request_too_large")
            .await;
    assert_eq!(error["details"]["max_bytes"], 4096);
    // Also when the body is buffered for an idempotency key.
    let response = app
        .request(Method::POST, "/v1/agents", Some(&key))
        .header("idempotency-key", "big-one")
        .json(&big)
        .send()
        .await
        .unwrap();
    expect_error(response, 413, "request_too_large").await;
    let listed: Value = app.get(&key, "/v1/agents").await.json().await.unwrap();
    assert_eq!(listed["count"], 0);
}

async fn creations_answer_201_and_everything_else_200(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let response = app.post(&key, "/v1/agents", json!({})).await;
    assert_eq!(response.status(), 201);
    let agent: Value = response.json().await.unwrap();
    let path = format!("/v1/agents/{}", agent["agent_id"].as_str().unwrap());
    assert_eq!(app.get(&key, &path).await.status(), 200);
    assert_eq!(app.put(&key, &path, json!({"name": "n"})).await.status(), 200);
    assert_eq!(app.get(&key, "/v1/agents").await.status(), 200);
    assert_eq!(app.delete(&key, &path).await.status(), 200);
    assert_eq!(app.post(&key, "/v1/keys", json!({})).await.status(), 201);
    assert_eq!(
        app.request(Method::POST, "/v1/keys/rotate", Some(&key)).send().await.unwrap().status(),
        200
    );
}

async fn documented_but_unbuilt_routes_say_so(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    for (method, path) in [(Method::GET, "/v1/integrations/monitor/number/+14155552671")] {
        let response = app.request(method, path, Some(&key)).send().await.unwrap();
        let error = expect_error(response, 501, "not_implemented").await;
        assert!(error["message"].as_str().unwrap().contains("not available on this server yet"));
    }
}

async fn a_second_node_on_the_same_database_serves_the_same_data(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let agent = app.create_agent(&key, json!({"name": "Shared"})).await;
    let node = app.spawn_node().await;
    let response = app
        .client
        .get(format!("{}/v1/agents/{}", node.base_url(), agent["agent_id"].as_str().unwrap()))
        .header("authorization", key.bearer())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), agent);
    node.shutdown.cancel();
    node.wait().await.unwrap();
}

async fn an_edited_agent_is_read_fresh_on_every_node_and_in_lists(backend: Backend) {
    // Agents are served from a per-node cache of their JSON per (id, version)
    // (docs/decisions.md#api-line-rate): an edit on one node shows on the other at once.
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let agent = app.create_agent(&key, json!({"name": "Before"})).await;
    let id = agent["agent_id"].as_str().unwrap();
    let node = app.spawn_node().await;
    let on_node = |path: String| {
        app.client.get(format!("{}{path}", node.base_url())).header("authorization", key.bearer())
    };
    for _ in 0..2 {
        let fetched: Value =
            on_node(format!("/v1/agents/{id}")).send().await.unwrap().json().await.unwrap();
        assert_eq!(fetched["name"], "Before");
        let listed: Value =
            on_node("/v1/agents".to_owned()).send().await.unwrap().json().await.unwrap();
        assert_eq!(listed["agents"][0]["name"], "Before");
    }
    let updated: Value = app
        .put(&key, &format!("/v1/agents/{id}"), json!({"name": "After"}))
        .await
        .json()
        .await
        .unwrap();
    let fetched: Value =
        on_node(format!("/v1/agents/{id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(fetched, updated);
    let listed: Value =
        on_node("/v1/agents".to_owned()).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["agents"][0], updated);
    assert_eq!(
        (listed["count"].as_i64(), listed["limit"].as_i64(), listed["offset"].as_i64()),
        (Some(1), Some(25), Some(0))
    );
    // Deleted on one node: gone on the other.
    assert_eq!(app.delete(&key, &format!("/v1/agents/{id}")).await.status(), 200);
    let gone = on_node(format!("/v1/agents/{id}")).send().await.unwrap();
    expect_error(gone, 404, "agent_not_found").await;
    let listed: Value =
        on_node("/v1/agents".to_owned()).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed, json!({"agents": [], "count": 0, "limit": 25, "offset": 0}));
    node.shutdown.cancel();
    node.wait().await.unwrap();
}

async fn data_survives_a_restart(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let agent = app.create_agent(&key, json!({"name": "Durable"})).await;
    app.restart().await;
    let fetched: Value = app
        .get(&key, &format!("/v1/agents/{}", agent["agent_id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, agent);
}

async fn long_uris_get_414_in_the_envelope(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let long_query = format!("/v1/agents?x={}", "a".repeat(9_000));
    let error = expect_error(app.get(&key, &long_query).await, 414, "uri_too_long").await;
    assert_eq!(error["details"]["max_bytes"], 8192);
    let long_path = format!("/v1/agents/{}", "b".repeat(20_000));
    expect_error(app.get(&key, &long_path).await, 414, "uri_too_long").await;
    // Without a key too: the limit is checked before anything else reads the request.
    let anonymous = app.request(Method::GET, &long_query, None).send().await.unwrap();
    expect_error(anonymous, 414, "uri_too_long").await;
    // Just under the limit is an ordinary request.
    let fits = format!("/v1/agents?limit=25&offset={}", "0".repeat(8_000));
    assert_eq!(app.get(&key, &fits).await.status(), 200);
}

both!(
    long_uris_get_414_in_the_envelope,
    health_and_readiness_answer_without_a_key,
    every_response_carries_a_request_id,
    unknown_routes_and_wrong_methods_get_the_envelope,
    malformed_bodies_are_rejected_with_clear_codes,
    oversized_bodies_get_413,
    creations_answer_201_and_everything_else_200,
    documented_but_unbuilt_routes_say_so,
    a_second_node_on_the_same_database_serves_the_same_data,
    an_edited_agent_is_read_fresh_on_every_node_and_in_lists,
    data_survives_a_restart,
);
