//! Per-account request limits (docs/api.md#rate-limits, docs/decisions.md#per-account-limits),
//! counted per node in memory and reconciled through the database, so they hold across nodes
//! within the stated tolerance.

use reqwest::{Method, Response};
use serde_json::json;

use std::time::{Duration, Instant};

use crate::helpers::{Backend, Key, TestApp, both, expect_error};

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

/// Sends `GET /v1/agents` to `base` with `key`; the status.
async fn read_on(app: &TestApp, base: &str, key: &Key) -> u16 {
    let response = app
        .client
        .get(format!("{base}/v1/agents"))
        .header("authorization", key.bearer())
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

/// Polls `base` until it refuses the key's reads with 429, within `deadline`; how many reads it
/// admitted meanwhile.
async fn admitted_until_refused(app: &TestApp, base: &str, key: &Key, deadline: Duration) -> u32 {
    let until = Instant::now() + deadline;
    let mut admitted = 0;
    loop {
        match read_on(app, base, key).await {
            200 => admitted += 1,
            429 => return admitted,
            other => panic!("unexpected status {other}"),
        }
        assert!(Instant::now() < until, "{base} still admits after {deadline:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn limits_hold_across_nodes_sharing_the_database(backend: Backend) {
    // Counted per node in memory, reconciled every rate_limit_sync_ms (docs/api.md#rate-limits).
    let limit = 6;
    let app = TestApp::spawn_with(backend, |c| {
        c.rate_limit_reads_per_minute = limit;
        c.rate_limit_window_secs = 86_400;
    })
    .await;
    let key = app.signup().await;
    let node = app.spawn_node().await;
    // One node alone is exact.
    for _ in 0..limit {
        assert_eq!(read_on(&app, &app.base, &key).await, 200);
    }
    assert_eq!(read_on(&app, &app.base, &key).await, 429);
    // The other node learns the shared total within a sync or two: it admits at most what it
    // had not yet heard of (never more than the limit), then refuses.
    let on_second =
        admitted_until_refused(&app, &node.base_url(), &key, Duration::from_secs(5)).await;
    assert!(on_second <= u32::try_from(limit).unwrap(), "{on_second}");
    node.shutdown.cancel();
    node.wait().await.unwrap();
}

async fn two_nodes_hammered_together_admit_the_limit_within_the_stated_tolerance(backend: Backend) {
    let limit: u32 = 40;
    let app = TestApp::spawn_with(backend, |c| {
        c.rate_limit_reads_per_minute = i64::from(limit);
        c.rate_limit_window_secs = 86_400;
    })
    .await;
    let key = app.signup().await;
    let node = app.spawn_node().await;
    let bases = [app.base.clone(), node.base_url()];
    // Four clients per node, each reading as fast as it can, until both nodes refuse.
    let clients = (0..8).map(|i| {
        let base = bases[i % 2].clone();
        let (app, key) = (&app, &key);
        async move {
            let mut admitted = 0;
            let mut refused_in_a_row = 0;
            let until = Instant::now() + Duration::from_secs(10);
            while refused_in_a_row < 3 && Instant::now() < until {
                match read_on(app, &base, key).await {
                    200 => {
                        admitted += 1;
                        refused_in_a_row = 0;
                    }
                    429 => {
                        refused_in_a_row += 1;
                        // Give the node a sync to learn the other's admissions.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    other => panic!("unexpected status {other}"),
                }
            }
            admitted
        }
    });
    let admitted: u32 = futures::future::join_all(clients).await.into_iter().sum();
    // At least the limit; at most the limit once per node (docs/api.md#rate-limits).
    assert!(admitted >= limit, "{admitted} admitted, limit {limit}");
    assert!(admitted <= limit * 2, "{admitted} admitted, limit {limit} on 2 nodes");
    // Both nodes now refuse.
    for base in &bases {
        assert_eq!(read_on(&app, base, &key).await, 429);
    }
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
    two_nodes_hammered_together_admit_the_limit_within_the_stated_tolerance,
    per_account_overrides_replace_the_defaults,
);
