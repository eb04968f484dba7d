//! Authentication exactly as docs/api.md#authentication.

use reqwest::Method;

use crate::helpers::{Backend, TestApp, both, expect_error};

async fn missing_malformed_and_wrong_keys_get_401(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let response = app.request(Method::GET, "/v1/agents", None).send().await.unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let error = expect_error(response, 401, "invalid_api_key").await;
    assert_eq!(error["message"], "Invalid or missing API key");

    let wrong_secret = format!("Bearer {}:nxfs_{}", key.id, "0".repeat(64));
    let unknown_key = format!("Bearer nxf_{}:{}", "0".repeat(32), key.secret);
    let cases = [
        "Basic dXNlcjpwYXNz".to_owned(),
        "Bearer".to_owned(),
        "Bearer garbage".to_owned(),
        format!("Bearer {} {}", key.id, key.secret),
        format!("Token {}:{}", key.id, key.secret),
        wrong_secret,
        unknown_key,
        format!("Bearer {}:{}x", key.id, key.secret),
        format!("Bearer {}:", key.id.to_uppercase()),
        format!("Bearer NXF_NOPE:{}", key.secret),
    ];
    for header in cases {
        let response = app
            .client
            .get(app.url("/v1/agents"))
            .header("authorization", &header)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert_eq!(status, 401, "{header}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(
            body["error"]["code"] == "invalid_api_key"
                || body["error"]["code"] == "key_secret_required",
            "{header}: {body}"
        );
        assert_eq!(body["error"]["type"], "authentication_error");
    }
}

async fn a_key_id_without_its_secret_half_is_named(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    for header in [format!("Bearer {}", key.id), format!("Bearer {}:", key.id)] {
        let response = app
            .client
            .get(app.url("/v1/agents"))
            .header("authorization", &header)
            .send()
            .await
            .unwrap();
        expect_error(response, 401, "key_secret_required").await;
    }
}

async fn keys_are_accepted_with_a_lowercase_bearer_scheme(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let response = app
        .client
        .get(app.url("/v1/agents"))
        .header("authorization", format!("bearer {}:{}", key.id, key.secret))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn the_api_reference_needs_no_key_but_everything_else_does(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app.request(Method::GET, "/v1/openapi.json", None).send().await.unwrap();
    assert_eq!(response.status(), 200);
    for (method, path) in [
        (Method::GET, "/v1/keys"),
        (Method::POST, "/v1/keys/rotate"),
        (Method::GET, "/v1/voices"),
        (Method::GET, "/v1/languages"),
        (Method::POST, "/v1/agents"),
        (Method::GET, "/v1/calls"),
        (Method::GET, "/v1/does-not-exist"),
    ] {
        let response = app.request(method.clone(), path, None).send().await.unwrap();
        expect_error(response, 401, "invalid_api_key").await;
    }
}

both!(
    missing_malformed_and_wrong_keys_get_401,
    a_key_id_without_its_secret_half_is_named,
    keys_are_accepted_with_a_lowercase_bearer_scheme,
    the_api_reference_needs_no_key_but_everything_else_does,
);
