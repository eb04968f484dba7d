//! Test support: a real server on a loopback port, on SQLite or PostgreSQL, and a typed client.

use std::sync::Once;

use nixflex::config::Config;
use nixflex::server::{self, Server};
use nixflex_testkit::twilio::TwilioEmulator;
use reqwest::{Method, RequestBuilder, Response};
use secrecy::SecretString;
use serde_json::{Value, json};

/// The public URL test servers claim (as behind a reverse proxy).
pub const PUBLIC_URL: &str = "https://nixflex.example.com";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A running server and what is needed to start more nodes on its database.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub server: Option<Server>,
    pub config: Config,
    _dir: tempfile::TempDir,
}

/// An account's credentials.
#[derive(Debug, Clone)]
pub struct Key {
    pub id: String,
    pub secret: String,
    pub account_id: String,
}

impl Key {
    pub fn bearer(&self) -> String {
        format!("Bearer {}:{}", self.id, self.secret)
    }
}

fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt().with_env_filter("info").try_init();
        }
    });
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        init();
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            listen: "127.0.0.1:0".to_owned(),
            data_dir: dir.path().join("data"),
            master_key: Some(SecretString::from(
                nixflex_core::crypto::SecretBox::generate_encoded(),
            )),
            signups_per_hour: 1000,
            database_max_connections: 5,
            shutdown_grace_ms: 5000,
            ..Config::default()
        };
        if backend == Backend::Postgres {
            config.database_url = Some(nixflex_store::testing::fresh_postgres_url().await);
        }
        tweak(&mut config);
        let server = server::start(config.clone()).await.expect("server starts");
        Self {
            base: server.base_url(),
            client: reqwest::Client::builder().build().unwrap(),
            server: Some(server),
            config,
            _dir: dir,
        }
    }

    /// A server whose Twilio is the emulator and whose public URL is `PUBLIC_URL`.
    pub async fn spawn_with_twilio(backend: Backend) -> (Self, TwilioEmulator) {
        Self::spawn_with_twilio_and(backend, |_| {}).await
    }

    pub async fn spawn_with_twilio_and(
        backend: Backend,
        tweak: impl FnOnce(&mut Config),
    ) -> (Self, TwilioEmulator) {
        let twilio = TwilioEmulator::start().await.unwrap();
        let base = twilio.base_url().to_owned();
        let app = Self::spawn_with(backend, |c| {
            c.twilio_api_base = base;
            c.public_url = Some(PUBLIC_URL.to_owned());
            c.twilio_request_timeout_ms = 1000;
            tweak(c);
        })
        .await;
        (app, twilio)
    }

    /// Starts another node on the same database and master key.
    pub async fn spawn_node(&self) -> Server {
        server::start(self.config.clone()).await.expect("second node starts")
    }

    /// Stops this node gracefully and starts it again on the same database.
    pub async fn restart(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown.cancel();
            server.wait().await.unwrap();
        }
        let server = server::start(self.config.clone()).await.expect("server restarts");
        self.base = server.base_url();
        self.server = Some(server);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn request(&self, method: Method, path: &str, key: Option<&Key>) -> RequestBuilder {
        let builder = self.client.request(method, self.url(path));
        match key {
            Some(key) => builder.header("authorization", key.bearer()),
            None => builder,
        }
    }

    pub async fn get(&self, key: &Key, path: &str) -> Response {
        self.request(Method::GET, path, Some(key)).send().await.unwrap()
    }

    pub async fn post(&self, key: &Key, path: &str, body: Value) -> Response {
        self.request(Method::POST, path, Some(key)).json(&body).send().await.unwrap()
    }

    pub async fn put(&self, key: &Key, path: &str, body: Value) -> Response {
        self.request(Method::PUT, path, Some(key)).json(&body).send().await.unwrap()
    }

    pub async fn delete(&self, key: &Key, path: &str) -> Response {
        self.request(Method::DELETE, path, Some(key)).send().await.unwrap()
    }

    /// Signs up a new account.
    pub async fn signup(&self) -> Key {
        let response = self
            .request(Method::POST, "/v1/keys", None)
            .json(&json!({"name": "Test Co", "email": "ops@example.com"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "sign-up failed");
        let body: Value = response.json().await.unwrap();
        Key {
            id: body["key_id"].as_str().unwrap().to_owned(),
            secret: body["key_secret"].as_str().unwrap().to_owned(),
            account_id: body["account_id"].as_str().unwrap().to_owned(),
        }
    }

    /// Creates an agent and returns its JSON.
    pub async fn create_agent(&self, key: &Key, body: Value) -> Value {
        let response = self.post(key, "/v1/agents", body).await;
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }
}

/// An account on the Twilio emulator with one number on it.
pub struct TwilioNumber {
    pub sid: String,
    pub token: String,
    pub phone: String,
    pub number_sid: String,
}

pub fn twilio_number(twilio: &TwilioEmulator, phone: &str) -> TwilioNumber {
    let account = twilio.add_account();
    let number_sid = twilio.add_number(&account.sid, phone);
    TwilioNumber {
        sid: account.sid,
        token: account.auth_token,
        phone: phone.to_owned(),
        number_sid,
    }
}

impl TwilioNumber {
    pub fn import_body(&self, agent_id: &str) -> Value {
        json!({"phone_number": self.phone, "agent_id": agent_id, "twilio_sid": self.sid, "twilio_token": self.token})
    }
}

/// `%2B`-encodes a number for a path.
pub fn enc(phone: &str) -> String {
    phone.replace('+', "%2B")
}

/// Asserts the documented error envelope and returns its `error` object.
pub async fn expect_error(response: Response, status: u16, code: &str) -> Value {
    let actual = response.status().as_u16();
    let has_request_id = response.headers().contains_key("x-request-id");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = response.text().await.unwrap();
    assert_eq!(actual, status, "unexpected status; body: {text}");
    assert!(content_type.starts_with("application/json"), "content-type {content_type}");
    assert!(has_request_id, "X-Request-Id missing");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    let error = body["error"].clone();
    assert_eq!(error["code"], code, "body: {text}");
    let expected_type = match status {
        400 | 405 | 413 | 414 | 415 | 416 => "invalid_request",
        401 => "authentication_error",
        402 => "payment_required",
        403 => "permission_error",
        404 => "not_found",
        409 => "conflict",
        429 => "rate_limit_error",
        502 => "provider_error",
        _ => "server_error",
    };
    assert_eq!(error["type"], expected_type, "body: {text}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "body: {text}");
    assert!(error["details"].is_object(), "`details` is always an object; body: {text}");
    assert_eq!(
        error["doc_url"],
        format!("https://docs.nixflex.com/reference/errors#{code}"),
        "body: {text}"
    );
    error
}

/// Runs each listed test on one backend, in a module of that name.
macro_rules! on_backend {
    ($module:ident, $backend:ident, $($name:ident),+ $(,)?) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::helpers::Backend::$backend).await;
                }
            )+
        }
    };
}
pub(crate) use on_backend;

/// Runs each listed test on SQLite and on PostgreSQL.
macro_rules! both {
    ($($name:ident),+ $(,)?) => {
        $crate::helpers::on_backend!(sqlite, Sqlite, $($name),+);
        $crate::helpers::on_backend!(postgres, Postgres, $($name),+);
    };
}
pub(crate) use both;

/// The S3-compatible test server (`scripts/test` starts one and sets `NIXFLEX_TEST_S3_URL`).
pub fn s3_url() -> String {
    std::env::var("NIXFLEX_TEST_S3_URL")
        .unwrap_or_else(|_| panic!("NIXFLEX_TEST_S3_URL is not set: run ./scripts/test"))
}

/// Creates a fresh bucket on the S3 test server and returns its name.
pub async fn fresh_bucket() -> String {
    init();
    let name = format!("nixflex-test-{}", uuid::Uuid::new_v4().simple());
    let created = reqwest::Client::new()
        .put(format!("{}/{name}", s3_url()))
        .send()
        .await
        .expect("the S3 test server answers");
    assert!(created.status().is_success(), "creating bucket {name}: {}", created.status());
    name
}

/// An object in a bucket of the S3 test server, or `None` when it does not exist (read with
/// credentials: the server keeps objects private).
pub async fn s3_object(bucket: &str, key: &str) -> Option<Vec<u8>> {
    init();
    let storage =
        nixflex_providers::storage::ObjectStorage::s3(&nixflex_providers::storage::S3Config {
            bucket: bucket.to_owned(),
            endpoint: Some(s3_url()),
            region: "us-east-1".to_owned(),
            access_key: "reader".to_owned(),
            secret_key: SecretString::from("reader".to_owned()),
            allow_http: true,
            public_only: false,
        })
        .unwrap();
    match storage.get(key).await {
        Ok(bytes) => Some(bytes.to_vec()),
        Err(nixflex_providers::storage::StorageError::NotFound) => None,
        Err(other) => panic!("S3 test server failed for {bucket}/{key}: {other}"),
    }
}
