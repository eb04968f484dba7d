//! Recordings (docs/recordings.md): signed links and downloads, deletion with the call, the
//! retention sweep, the server's bucket, and the account's own bucket (`/v1/account/storage`) on
//! a real S3-compatible server. The engine and carrier tests record real calls; here the
//! recordings are stored through the same service the engine uses.

use std::net::SocketAddr;

use bytes::Bytes;
use chrono::{Duration, Utc};
use nixflex::config::{Config, RecordingStorage};
use nixflex_core::call::{CallRecord, CallStatus, Direction, EndedReason, StoredRecording};
use nixflex_engine::Recordings;
use nixflex_store::Store;
use serde_json::{Map, Value, json};
use std::sync::Arc;

use crate::helpers::{Backend, Key, TestApp, both, expect_error, fresh_bucket, s3_object, s3_url};

/// A finished call of `key`'s account, `age` after it ended.
fn ended_call(key: &Key, age: Duration) -> CallRecord {
    let at = nixflex_store::now() - age;
    CallRecord {
        call_id: nixflex_core::ids::new_call_id(),
        account_id: key.account_id.as_str().into(),
        agent_id: None,
        direction: Direction::Inbound,
        from_number: "+447386172301".to_owned(),
        to_number: "+14155552671".to_owned(),
        twilio_call_sid: None,
        call_status: CallStatus::Completed,
        ended_reason: Some(EndedReason::Completed),
        started_at: at - Duration::seconds(30),
        answered_at: Some(at - Duration::seconds(30)),
        ended_at: Some(at),
        duration_seconds: Some(30),
        transcript: Vec::new(),
        turns: Vec::new(),
        avg_latency_ms: None,
        recording: None,
        call_summary: None,
        caller_sentiment: None,
        call_successful: None,
        extracted_data: Map::new(),
        voicemail_detected: false,
        campaign_id: None,
        metadata: None,
        cost_usd: None,
        function_calls: Vec::new(),
        provider_events: Vec::new(),
        precall_reject_reason: None,
        amd_result: None,
        voicemail_detection_method: None,
        carrier_details: None,
        stream_token_hash: None,
        created_at: at,
        updated_at: at,
    }
}

/// The server's store and a recordings service like the server's (same master key, storage
/// settings and address).
async fn service(app: &TestApp) -> (Arc<dyn Store>, Recordings) {
    let secrets = nixflex::server::load_master_key(&app.config).unwrap();
    let store = nixflex::server::open_store(&app.config, &secrets).await.unwrap();
    let bound: SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let recordings =
        nixflex::server::build_recordings(&app.config, &store, &secrets, bound).unwrap();
    (store, recordings)
}

/// A short WAV-looking body, distinct per call.
fn audio(call: &CallRecord) -> Bytes {
    Bytes::from(format!("RIFF....WAVEfmt recording of {}", call.call_id).into_bytes())
}

async fn recorded_call(app: &TestApp, key: &Key, age: Duration) -> (CallRecord, StoredRecording) {
    let (store, recordings) = service(app).await;
    let call = ended_call(key, age);
    store.insert_call(&call).await.unwrap();
    let stored =
        recordings.save(&call.account_id, &call.call_id, audio(&call), Some(29.5)).await.unwrap();
    (call, stored)
}

fn local_file(app: &TestApp, stored: &StoredRecording) -> std::path::PathBuf {
    let path = stored.location.strip_prefix("local:").expect("a local recording");
    app.config.recordings_dir().join(path)
}

async fn recording_links_download_and_expire(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let other = app.signup().await;
    let (call, stored) = recorded_call(&app, &key, Duration::minutes(1)).await;
    assert!(stored.location.starts_with("local:recordings/"), "{}", stored.location);
    assert!(local_file(&app, &stored).is_file());

    let object: Value =
        app.get(&key, &format!("/v1/calls/{}", call.call_id)).await.json().await.unwrap();
    let url = object["recording_url"].as_str().expect("recording_url").to_owned();
    assert!(
        url.starts_with(&format!("{}/recordings/{}.wav?expires=", app.base, call.call_id)),
        "{url}"
    );
    assert_eq!(object["recording_duration_s"], json!(29.5));

    // The link needs no key.
    let fetched = app.client.get(&url).send().await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.headers()["content-type"], "audio/wav");
    assert_eq!(fetched.bytes().await.unwrap(), audio(&call));

    // A changed signature, another call's id, or an expired link: refused.
    let tampered = format!("{}0", &url[..url.len() - 1]);
    let tampered = if tampered == url { format!("{}1", &url[..url.len() - 1]) } else { tampered };
    expect_error(app.client.get(&tampered).send().await.unwrap(), 403, "recording_link_invalid")
        .await;
    let (other_call, _) = recorded_call(&app, &other, Duration::minutes(1)).await;
    let swapped = url.replace(call.call_id.as_str(), other_call.call_id.as_str());
    expect_error(app.client.get(&swapped).send().await.unwrap(), 403, "recording_link_invalid")
        .await;
    let (_, recordings) = service(&app).await;
    let old = recordings.url(&call.call_id, Utc::now() - Duration::days(2));
    expect_error(app.client.get(&old).send().await.unwrap(), 403, "recording_link_invalid").await;
    let unsigned = format!("{}/recordings/{}.wav", app.base, call.call_id);
    expect_error(app.client.get(&unsigned).send().await.unwrap(), 403, "recording_link_invalid")
        .await;

    // Players seek with one byte range; several ranges get the whole file; a range past the end
    // is refused with the file's size.
    let whole = audio(&call);
    let partial = app.client.get(&url).header("range", "bytes=4-7").send().await.unwrap();
    assert_eq!(partial.status(), 206);
    assert_eq!(partial.headers()["content-range"], format!("bytes 4-7/{}", whole.len()).as_str());
    assert_eq!(partial.headers()["accept-ranges"], "bytes");
    assert_eq!(partial.bytes().await.unwrap(), whole.slice(4..8));
    let tail = app.client.get(&url).header("range", "bytes=-5").send().await.unwrap();
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.bytes().await.unwrap(), whole.slice(whole.len() - 5..));
    let several = app.client.get(&url).header("range", "bytes=0-1,4-5").send().await.unwrap();
    assert_eq!(several.status(), 200);
    assert_eq!(several.bytes().await.unwrap(), whole);
    let beyond = app.client.get(&url).header("range", "bytes=100000-").send().await.unwrap();
    assert_eq!(beyond.headers()["content-range"], format!("bytes */{}", whole.len()).as_str());
    expect_error(beyond, 416, "range_not_satisfiable").await;

    // With the key: the owner gets it; another account does not see the call.
    let path = format!("/v1/calls/{}/recording", call.call_id);
    let owned = app.get(&key, &path).await;
    assert_eq!(owned.status(), 200);
    assert_eq!(owned.bytes().await.unwrap(), audio(&call));
    expect_error(app.get(&other, &path).await, 404, "call_not_found").await;
    let bare = ended_call(&key, Duration::minutes(1));
    service(&app).await.0.insert_call(&bare).await.unwrap();
    expect_error(
        app.get(&key, &format!("/v1/calls/{}/recording", bare.call_id)).await,
        404,
        "recording_not_found",
    )
    .await;
    let listed: Value = app.get(&key, "/v1/calls").await.json().await.unwrap();
    let bare_item = listed["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["call_id"] == bare.call_id.as_str())
        .unwrap();
    assert_eq!(bare_item["recording_url"], Value::Null);
}

async fn deleting_a_call_deletes_its_recording(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    let (call, stored) = recorded_call(&app, &key, Duration::minutes(1)).await;
    let (_, kept) = recorded_call(&app, &key, Duration::minutes(1)).await;
    let deleted = app.delete(&key, &format!("/v1/calls/{}", call.call_id)).await;
    assert_eq!(deleted.status(), 200);
    assert!(!local_file(&app, &stored).exists(), "the file went with the call");
    assert!(local_file(&app, &kept).exists(), "other calls keep theirs");

    let (_, third) = recorded_call(&app, &key, Duration::minutes(1)).await;
    let all: Value = app.delete(&key, "/v1/calls").await.json().await.unwrap();
    assert_eq!(all["recordings_deleted"], json!(2));
    assert_eq!(all["calls_deleted"], json!(2));
    assert!(!local_file(&app, &kept).exists());
    assert!(!local_file(&app, &third).exists());
}

async fn retention_sweep_deletes_old_recordings_only(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.recording_retention_days = 30).await;
    let key = app.signup().await;
    let (old, old_stored) = recorded_call(&app, &key, Duration::days(31)).await;
    let (young, young_stored) = recorded_call(&app, &key, Duration::days(29)).await;
    let (store, recordings) = service(&app).await;
    assert_eq!(recordings.sweep_expired(Utc::now()).await.unwrap(), 1);
    assert!(!local_file(&app, &old_stored).exists());
    assert!(local_file(&app, &young_stored).exists());
    let old = store.find_call(&old.call_id).await.unwrap().unwrap();
    assert_eq!(old.recording, None, "the call stays, without its recording");
    let object: Value =
        app.get(&key, &format!("/v1/calls/{}", old.call_id)).await.json().await.unwrap();
    assert_eq!(object["recording_url"], Value::Null);
    assert!(store.find_call(&young.call_id).await.unwrap().unwrap().recording.is_some());
    // Nothing left to do: a second sweep (another node's) deletes nothing twice.
    assert_eq!(recordings.sweep_expired(Utc::now()).await.unwrap(), 0);

    // 0 days keeps recordings forever.
    let forever = TestApp::spawn_with(backend, |c| c.recording_retention_days = 0).await;
    let key = forever.signup().await;
    let (_, stored) = recorded_call(&forever, &key, Duration::days(3650)).await;
    assert_eq!(service(&forever).await.1.sweep_expired(Utc::now()).await.unwrap(), 0);
    assert!(local_file(&forever, &stored).exists());
}

fn use_server_bucket(config: &mut Config, bucket: &str) {
    config.recording_storage = RecordingStorage::S3;
    config.recording_s3_bucket = Some(bucket.to_owned());
    config.recording_s3_endpoint = Some(s3_url());
    config.recording_s3_access_key = Some("test-access".to_owned());
    config.recording_s3_secret_key = Some("test-secret".to_owned().into());
}

async fn the_servers_bucket_keeps_recordings(backend: Backend) {
    let bucket = fresh_bucket().await;
    let app = TestApp::spawn_with(backend, |c| use_server_bucket(c, &bucket)).await;
    let key = app.signup().await;
    let (call, stored) = recorded_call(&app, &key, Duration::minutes(1)).await;
    let path = stored.location.strip_prefix("s3:").expect("in the server's bucket");
    assert_eq!(s3_object(&bucket, path).await.as_deref(), Some(audio(&call).as_ref()));
    let fetched = app.get(&key, &format!("/v1/calls/{}/recording", call.call_id)).await;
    assert_eq!(fetched.bytes().await.unwrap(), audio(&call));
    assert_eq!(app.delete(&key, &format!("/v1/calls/{}", call.call_id)).await.status(), 200);
    assert_eq!(s3_object(&bucket, path).await, None);
}

fn storage_body(bucket: &str) -> Value {
    json!({"bucket": bucket, "access_key": "AKIAEXAMPLE", "secret_key": "s3cr3t-never-shown", "endpoint": s3_url(), "region": "us-east-1"})
}

async fn an_accounts_own_bucket_round_trips(backend: Backend) {
    let bucket = fresh_bucket().await;
    let app = TestApp::spawn_with(backend, |c| c.allow_private_targets = true).await;
    let key = app.signup().await;
    let other = app.signup().await;

    let off: Value = app.get(&key, "/v1/account/storage").await.json().await.unwrap();
    assert_eq!(off["storage_enabled"], json!(false));

    let saved = app.put(&key, "/v1/account/storage", storage_body(&bucket)).await;
    assert_eq!(saved.status(), 200);
    let saved: Value = saved.json().await.unwrap();
    assert_eq!(
        saved,
        json!({"ok": true, "storage_enabled": true, "bucket": bucket, "endpoint": s3_url(), "region": "us-east-1", "verified": true})
    );
    let shown: Value = app.get(&key, "/v1/account/storage").await.json().await.unwrap();
    assert_eq!(shown["storage_enabled"], json!(true));
    assert_eq!(shown["access_key"], json!("AKIAEXAMPLE"));
    assert!(!shown.to_string().contains("s3cr3t"), "the secret is never shown: {shown}");
    // Stored sealed.
    let (store, _) = service(&app).await;
    let row = store.account_storage(&key.account_id.as_str().into()).await.unwrap().unwrap();
    assert!(!row.secret_key_sealed.contains("s3cr3t"));
    assert!(row.secret_key_sealed.starts_with("v1:"));
    // Only this account's recordings go there.
    let other_view: Value = app.get(&other, "/v1/account/storage").await.json().await.unwrap();
    assert_eq!(other_view["storage_enabled"], json!(false));

    let (call, stored) = recorded_call(&app, &key, Duration::minutes(1)).await;
    let path = stored.location.strip_prefix("byo:").expect("in the account's bucket").to_owned();
    assert_eq!(s3_object(&bucket, &path).await.as_deref(), Some(audio(&call).as_ref()));
    assert!(!app.config.recordings_dir().join(&path).exists(), "no copy kept on the server");
    let (other_call, other_stored) = recorded_call(&app, &other, Duration::minutes(1)).await;
    assert!(other_stored.location.starts_with("local:"));

    let object: Value =
        app.get(&key, &format!("/v1/calls/{}", call.call_id)).await.json().await.unwrap();
    let link = object["recording_url"].as_str().unwrap();
    assert_eq!(app.client.get(link).send().await.unwrap().bytes().await.unwrap(), audio(&call));

    assert_eq!(app.delete(&key, &format!("/v1/calls/{}", call.call_id)).await.status(), 200);
    assert_eq!(s3_object(&bucket, &path).await, None, "deleting the call deletes the object");

    // Switched off: new recordings go to the server again; old bucket files are left alone.
    let (kept_call, kept) = recorded_call(&app, &key, Duration::minutes(1)).await;
    let kept_path = kept.location.strip_prefix("byo:").unwrap().to_owned();
    let removed: Value = app.delete(&key, "/v1/account/storage").await.json().await.unwrap();
    assert_eq!(removed["ok"], json!(true));
    assert_eq!(removed["storage_enabled"], json!(false));
    let (_, after) = recorded_call(&app, &key, Duration::minutes(1)).await;
    assert!(after.location.starts_with("local:"), "{}", after.location);
    assert!(s3_object(&bucket, &kept_path).await.is_some());
    expect_error(
        app.get(&key, &format!("/v1/calls/{}/recording", kept_call.call_id)).await,
        404,
        "recording_not_found",
    )
    .await;
    let _ = other_call;
}

async fn broken_bucket_settings_are_refused_and_never_stored(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.allow_private_targets = true).await;
    let key = app.signup().await;
    let missing = format!("nixflex-missing-{}", uuid::Uuid::new_v4().simple());
    let refused = expect_error(
        app.put(&key, "/v1/account/storage", storage_body(&missing)).await,
        400,
        "storage_verification_failed",
    )
    .await;
    assert!(refused["details"]["reason"].as_str().is_some_and(|r| !r.is_empty()), "{refused}");
    let view: Value = app.get(&key, "/v1/account/storage").await.json().await.unwrap();
    assert_eq!(view["storage_enabled"], json!(false));

    let mut no_secret = storage_body("some-bucket");
    no_secret.as_object_mut().unwrap().remove("secret_key");
    let error =
        expect_error(app.put(&key, "/v1/account/storage", no_secret).await, 400, "missing_field")
            .await;
    assert_eq!(error["details"]["field"], json!("secret_key"));
    let mut bad_name = storage_body("Not_A_Bucket");
    bad_name["bucket"] = json!("Not_A_Bucket");
    expect_error(app.put(&key, "/v1/account/storage", bad_name).await, 400, "invalid_request")
        .await;
    let mut extra = storage_body("some-bucket");
    extra["colour"] = json!("blue");
    expect_error(app.put(&key, "/v1/account/storage", extra).await, 400, "unknown_field").await;
}

async fn bucket_endpoints_must_be_public_https(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    for endpoint in [
        "http://s3.example.com",
        "https://127.0.0.1:9000",
        "https://169.254.169.254",
        "https://minio.internal",
        "ftp://s3.example.com",
    ] {
        let mut body = storage_body("some-bucket");
        body["endpoint"] = json!(endpoint);
        let error =
            expect_error(app.put(&key, "/v1/account/storage", body).await, 400, "invalid_request")
                .await;
        assert_eq!(error["details"]["field"], json!("endpoint"), "{endpoint}");
    }
}

both!(
    recording_links_download_and_expire,
    deleting_a_call_deletes_its_recording,
    retention_sweep_deletes_old_recordings_only,
    the_servers_bucket_keeps_recordings,
    an_accounts_own_bucket_round_trips,
    broken_bucket_settings_are_refused_and_never_stored,
    bucket_endpoints_must_be_public_https,
);
