//! Per-account request limits (docs/api.md#rate-limits, docs/decisions.md#per-account-limits), counted in the database so they hold
//! across nodes.

use reqwest::{Method, Response};
use serde_json::json;

use crate::helpers::{Backend, TestApp, both, expect_error};

fn header(response: &Response, name: &str) -> i64 {
    response.headers()[name].to_str().unwrap().parse().unwrap()
}

async fn every_response_carries_rate_limit_headers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let now = chrono::Utc::now().timestamp();
    let read = app.get(&key, "/v1/agents").await;
    assert_eq!(header(&read, "x-ratelimit-limit"), 600);
    assert_eq!(header(&read, "x-ratelimit-remaining"), 599);
    let reset = header(&read, "x-ratelimit-reset");
    assert!(reset > now && reset <= now + 61 && reset % 60 == 0, "{reset}");
    let write = app.post(&key, "/v1/agents", json!({})).await;
    assert_eq!(header(&write, "x-ratelimit-limit"), 120);
    assert_eq!(header(&write, "x-ratelimit-remaining"), 119);
    for response in [
        app.get(&key, "/v1/nothing-here").await,
        app.post(&key, "/v1/agents", json!({"temperature": 9})).await,
        app.get(&key, "/v1/agents/agent_0000000000000000").await,
        app.request(Method::GET, "/v1/agents", None).send().await.unwrap(),
    ] {
        assert!(response.headers().contains_key("x-ratelimit-limit"), "{}", response.status());
        assert!(response.headers().contains_key("x-ratelimit-remaining"));
        assert!(response.headers().contains_key("x-ratelimit-reset"));
    }
}

async fn reads_and_writes_have_separate_limits_per_account(backend: Backend) {
    // A day-long window: the test cannot straddle a window boundary.
    let app = TestApp::spawn_with(backend, |c| {
        c.rate_limit_reads_per_minute = 5;
        c.rate_limit_writes_per_minute = 3;
        c.rate_limit_window_secs = 86_400;
    })
    .await;
    let key = app.signup().await;
    let other = app.signup().await;
    for remaining in (0..5).rev() {
        let response = app.get(&key, "/v1/agents").await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "x-ratelimit-remaining"), remaining);
    }
    let limited = app.get(&key, "/v1/agents").await;
    assert_eq!(header(&limited, "x-ratelimit-remaining"), 0);
    let retry_after = header(&limited, "retry-after");
    assert!((1..=86_400).contains(&retry_after));
    let error = expect_error(limited, 429, "rate_limit_exceeded").await;
    assert_eq!(error["details"]["retry_after"], retry_after);
    assert_eq!(
        error["message"],
        format!("Rate limit exceeded. Try again in {retry_after} seconds.")
    );
    // Writes have their own budget, and other accounts are unaffected.
    assert_eq!(app.post(&key, "/v1/agents", json!({})).await.status(), 201);
    assert_eq!(app.get(&other, "/v1/agents").await.status(), 200);
}

async fn limits_hold_across_nodes_sharing_the_database(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.rate_limit_reads_per_minute = 6;
        c.rate_limit_window_secs = 86_400;
    })
    .await;
    let key = app.signup().await;
    let node = app.spawn_node().await;
    let second = format!("{}/v1/agents", node.base_url());
    let mut statuses = Vec::new();
    for i in 0..8 {
        let response = if i % 2 == 0 {
            app.get(&key, "/v1/agents").await
        } else {
            app.client.get(&second).header("authorization", key.bearer()).send().await.unwrap()
        };
        statuses.push(response.status().as_u16());
    }
    // Six allowed in total, not six per node.
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 429, 429]);
    node.shutdown.cancel();
    node.wait().await.unwrap();
}

async fn per_account_overrides_replace_the_defaults(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let secrets = nixflex::server::load_master_key(&app.config).unwrap();
    let store = nixflex::server::open_store(&app.config, &secrets).await.unwrap();
    store
        .set_account_limits(&key.account_id.as_str().into(), Some(25), Some(2), Some(1))
        .await
        .unwrap();
    let response = app.get(&key, "/v1/agents").await;
    assert_eq!(header(&response, "x-ratelimit-limit"), 2);
    let response = app.post(&key, "/v1/agents", json!({})).await;
    assert_eq!(header(&response, "x-ratelimit-limit"), 1);
}

both!(
    every_response_carries_rate_limit_headers,
    reads_and_writes_have_separate_limits_per_account,
    limits_hold_across_nodes_sharing_the_database,
    per_account_overrides_replace_the_defaults,
);
