//! Sign-up, extra keys, listing, revocation, rotation (docs/api.md#keys-and-accounts; docs/decisions.md#keys-and-accounts, #secrets-at-rest).

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, Key, TestApp, both, expect_error};

async fn signup_creates_an_account_with_a_working_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .request(Method::POST, "/v1/keys", None)
        .json(&json!({"name": "Ada Lovelace", "email": "ada@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.unwrap();
    let key_id = body["key_id"].as_str().unwrap();
    let secret = body["key_secret"].as_str().unwrap();
    assert!(key_id.starts_with("nxf_") && key_id.len() == 36, "{key_id}");
    assert!(key_id[4..].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert!(secret.starts_with("nxfs_") && secret.len() == 69, "{secret}");
    assert!(body["message"].as_str().unwrap().contains("will not be shown again"));
    assert!(body["account_id"].as_str().unwrap().starts_with("acct_"));
    assert_eq!(body["name"], "Ada Lovelace", "the response echoes the name that was sent");
    let key = Key { id: key_id.to_owned(), secret: secret.to_owned(), account_id: String::new() };
    assert_eq!(app.get(&key, "/v1/agents").await.status(), 200);
    let keys: Value = app.get(&key, "/v1/keys").await.json().await.unwrap();
    assert_eq!(keys["keys"][0]["name"], "Ada Lovelace");

    let unnamed: Value = app
        .request(Method::POST, "/v1/keys", None)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(unnamed["name"], "default");
}

async fn signup_validates_name_and_email(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (body, field) in [
        (json!({"email": "not-an-email"}), "email"),
        (json!({"name": 42}), "name"),
        (json!({"name": "x".repeat(101)}), "name"),
    ] {
        let response =
            app.request(Method::POST, "/v1/keys", None).json(&body).send().await.unwrap();
        let error = expect_error(response, 400, "invalid_request").await;
        assert_eq!(error["details"]["field"], field);
    }
    // An empty body is a valid sign-up.
    let response = app.request(Method::POST, "/v1/keys", None).send().await.unwrap();
    assert_eq!(response.status(), 201);
}

async fn signup_is_refused_when_closed(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.signup = nixflex::config::Signup::Closed).await;
    let response =
        app.request(Method::POST, "/v1/keys", None).json(&json!({})).send().await.unwrap();
    let error = expect_error(response, 403, "signup_disabled").await;
    assert!(error["message"].as_str().unwrap().contains("nixflex keys create"));
}

async fn signup_is_limited_per_client_ip_per_hour(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.signups_per_hour = 10).await;
    for i in 0..10 {
        let response = app.request(Method::POST, "/v1/keys", None).send().await.unwrap();
        assert_eq!(response.status(), 201, "sign-up {i}");
        assert_eq!(response.headers()["x-ratelimit-limit"], "10");
        assert_eq!(response.headers()["x-ratelimit-remaining"], (9 - i).to_string().as_str());
    }
    let response = app.request(Method::POST, "/v1/keys", None).send().await.unwrap();
    let retry_after: i64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry_after));
    let error = expect_error(response, 429, "rate_limit_exceeded").await;
    assert_eq!(error["details"]["retry_after"], retry_after);
}

async fn a_valid_key_creates_another_key_for_the_same_account(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let agent = app.create_agent(&key, json!({"name": "Shared"})).await;
    let response = app.post(&key, "/v1/keys", json!({"name": "staging"})).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["account_id"], key.account_id.as_str());
    assert_eq!(body["name"], "staging");
    let second = Key {
        id: body["key_id"].as_str().unwrap().to_owned(),
        secret: body["key_secret"].as_str().unwrap().to_owned(),
        account_id: key.account_id.clone(),
    };
    assert_ne!(second.id, key.id);
    let path = format!("/v1/agents/{}", agent["agent_id"].as_str().unwrap());
    assert_eq!(app.get(&second, &path).await.status(), 200, "resources belong to the account");
}

async fn keys_are_listed_without_secrets(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    app.post(&key, "/v1/keys", json!({"name": "second"})).await;
    let response = app.get(&key, "/v1/keys").await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(!text.contains(&key.secret));
    assert!(!text.contains("nxfs_"));
    assert!(!text.contains("secret"));
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["count"], 2);
    assert_eq!(body["limit"], 25);
    assert_eq!(body["offset"], 0);
    let keys = body["keys"].as_array().unwrap();
    assert_eq!(keys[0]["name"], "second", "newest first");
    assert_eq!(keys[1]["key_id"], key.id.as_str());
    assert_eq!(keys[1]["current"], true);
    assert_eq!(keys[0]["current"], false);
    assert!(keys.iter().all(|k| k["status"] == "active"));
}

async fn revoked_keys_stop_working_and_the_last_one_stays(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let response = app.delete(&key, &format!("/v1/keys/{}", key.id)).await;
    expect_error(response, 409, "last_active_key").await;

    let body: Value = app.post(&key, "/v1/keys", json!({})).await.json().await.unwrap();
    let second = Key {
        id: body["key_id"].as_str().unwrap().to_owned(),
        secret: body["key_secret"].as_str().unwrap().to_owned(),
        account_id: key.account_id.clone(),
    };
    let response = app.delete(&second, &format!("/v1/keys/{}", key.id)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["key_id"], key.id.as_str());
    assert_eq!(body["revoked"], true);
    expect_error(app.get(&key, "/v1/agents").await, 401, "invalid_api_key").await;

    let listed: Value = app.get(&second, "/v1/keys").await.json().await.unwrap();
    let revoked = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == key.id.as_str())
        .unwrap()
        .clone();
    assert_eq!(revoked["status"], "revoked");
    assert!(revoked["revoked_at"].is_string());

    expect_error(
        app.delete(&second, &format!("/v1/keys/{}", second.id)).await,
        409,
        "last_active_key",
    )
    .await;
    expect_error(
        app.delete(&second, "/v1/keys/nxf_00000000000000000000000000000000").await,
        404,
        "key_not_found",
    )
    .await;
    let stranger = app.signup().await;
    expect_error(
        app.delete(&stranger, &format!("/v1/keys/{}", second.id)).await,
        404,
        "key_not_found",
    )
    .await;
}

async fn rotation_replaces_the_secret_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let agent = app.create_agent(&key, json!({})).await;
    let response = app.request(Method::POST, "/v1/keys/rotate", Some(&key)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["key_id"], key.id.as_str());
    let new_secret = body["key_secret"].as_str().unwrap();
    assert_ne!(new_secret, key.secret);
    assert!(body["message"].is_string());
    expect_error(app.get(&key, "/v1/agents").await, 401, "invalid_api_key").await;
    let rotated = Key { secret: new_secret.to_owned(), ..key.clone() };
    let path = format!("/v1/agents/{}", agent["agent_id"].as_str().unwrap());
    assert_eq!(app.get(&rotated, &path).await.status(), 200, "everything tied to the key id stays");
}

both!(
    signup_creates_an_account_with_a_working_key,
    signup_validates_name_and_email,
    signup_is_refused_when_closed,
    signup_is_limited_per_client_ip_per_hour,
    a_valid_key_creates_another_key_for_the_same_account,
    keys_are_listed_without_secrets,
    revoked_keys_stop_working_and_the_last_one_stays,
    rotation_replaces_the_secret_at_once,
);
