//! The account's own LLM and voice (`/v1/account/llm`, `/v1/account/tts`;
//! docs/providers.md#bring-your-own-llm-and-tts): saved only after a real test request to the
//! provider's emulator, keys sealed and never shown, refusals with a clear envelope, and the
//! engine building the clients from the stored settings.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use nixflex_core::catalog::TtsProviderKind;
use nixflex_core::ids::AccountId;
use nixflex_engine::{Engine, EngineConfig, Providers};
use nixflex_pipeline::llm::{LlmEvent, LlmMessage, LlmRequest};
use nixflex_pipeline::tts::TtsRequest;
use nixflex_store::Store;
use nixflex_testkit::cartesia::{CartesiaEmulator, CartesiaEmulatorConfig};
use nixflex_testkit::elevenlabs::{ElevenLabsEmulator, ElevenLabsEmulatorConfig};
use nixflex_testkit::openai::{OpenAiEmulator, OpenAiEmulatorConfig, Reply};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, both, expect_error};

const LLM_KEY: &str = "sk-account-secret-1";
const ELEVENLABS_KEY: &str = "xi-account-secret-2";
const CARTESIA_KEY: &str = "sk_car_account-secret-3";

/// An OpenAI-compatible server with a model that calls a tool when made to, and answers text
/// otherwise.
async fn tool_calling_llm() -> OpenAiEmulator {
    let emulator = OpenAiEmulator::start_with(OpenAiEmulatorConfig {
        api_key: Some(LLM_KEY.to_owned()),
        ..OpenAiEmulatorConfig::default()
    })
    .await
    .unwrap();
    emulator.set_responder(|request| {
        match request.pointer("/tool_choice/function/name").and_then(Value::as_str) {
            Some(name) => Reply::tool_call(name, json!({"ok": true})),
            None => Reply::text("Connected."),
        }
    });
    emulator
}

async fn voices() -> (ElevenLabsEmulator, CartesiaEmulator) {
    let elevenlabs = ElevenLabsEmulator::start_with(ElevenLabsEmulatorConfig {
        api_key: Some(ELEVENLABS_KEY.to_owned()),
        voices: Some(vec!["voice-1".to_owned(), "voice-2".to_owned()]),
        ..ElevenLabsEmulatorConfig::default()
    })
    .await
    .unwrap();
    let cartesia = CartesiaEmulator::start_with(CartesiaEmulatorConfig {
        api_key: Some(CARTESIA_KEY.to_owned()),
        voices: Some(vec!["a0e99841-438c-4a64-b679-ae501e7d6091".to_owned()]),
        ..CartesiaEmulatorConfig::default()
    })
    .await
    .unwrap();
    (elevenlabs, cartesia)
}

async fn app_with_voices(
    backend: Backend,
    elevenlabs: &ElevenLabsEmulator,
    cartesia: &CartesiaEmulator,
) -> TestApp {
    let urls = nixflex_engine::byo::ByoTtsUrls {
        elevenlabs: elevenlabs.base_url(),
        cartesia: cartesia.base_url(),
    };
    TestApp::spawn_with(backend, move |c| {
        c.allow_private_targets = true;
        c.byo_tts_urls = urls;
    })
    .await
}

/// A closed port on loopback: nothing answers there.
async fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

async fn store_of(app: &TestApp) -> (Arc<dyn Store>, nixflex_core::crypto::SecretBox) {
    let secrets = nixflex::server::load_master_key(&app.config).unwrap();
    let store = nixflex::server::open_store(&app.config, &secrets).await.unwrap();
    (store, secrets)
}

/// An engine on "another node": the same database and master key as the server, its own cache.
async fn other_node(app: &TestApp) -> Engine {
    let (store, secrets) = store_of(app).await;
    let providers = Providers {
        llm: Arc::new(
            nixflex_providers::llm::openai::OpenAiChatClient::new(Default::default()).unwrap(),
        ),
        stt: Arc::new(nixflex_providers::stt::deepgram::DeepgramClient::new(Default::default())),
        tts: Arc::new(
            nixflex_providers::tts::inworld::InworldClient::new(Default::default()).unwrap(),
        ),
        tts_kind: TtsProviderKind::Inworld,
        llm_fallbacks: Vec::new(),
        tts_fallbacks: Vec::new(),
        stt_fallbacks: Vec::new(),
    };
    let twilio = nixflex_providers::twilio::TwilioClient::new(Default::default()).unwrap();
    let customer = nixflex_providers::customer::CustomerHttp::new(true).unwrap();
    let config =
        EngineConfig { byo_tts_urls: app.config.byo_tts_urls.clone(), ..EngineConfig::default() };
    Engine::new(Arc::new(store), secrets, twilio, providers, customer, config)
}

async fn an_accounts_own_llm_round_trips(backend: Backend) {
    let llm = tool_calling_llm().await;
    let app = TestApp::spawn_with(backend, |c| c.allow_private_targets = true).await;
    let key = app.signup().await;
    let other = app.signup().await;

    let off: Value = app.get(&key, "/v1/account/llm").await.json().await.unwrap();
    assert_eq!(off["byo_llm_enabled"], json!(false));
    assert_eq!(off["endpoint"], Value::Null);

    let body = json!({"endpoint": llm.base_url(), "model": "my-model", "api_key": LLM_KEY});
    let saved = app.put(&key, "/v1/account/llm", body).await;
    assert_eq!(saved.status(), 200);
    let saved: Value = saved.json().await.unwrap();
    assert_eq!(
        saved,
        json!({"ok": true, "byo_llm_enabled": true, "endpoint": llm.base_url(), "model": "my-model", "verified": true})
    );
    // The check was a real completion that had to call a tool, then the tool's result sent back.
    let requests = llm.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].path, "/v1/chat/completions");
    assert_eq!(requests[0].header("authorization"), Some(&*format!("Bearer {LLM_KEY}")));
    assert_eq!(requests[0].body["model"], json!("my-model"));
    assert_eq!(requests[0].body["tool_choice"]["function"]["name"], json!("connection_check"));
    let messages = requests[1].body["messages"].as_array().unwrap();
    assert_eq!(messages.last().unwrap()["role"], json!("tool"));

    let shown: Value = app.get(&key, "/v1/account/llm").await.json().await.unwrap();
    assert_eq!(shown["byo_llm_enabled"], json!(true));
    assert_eq!(shown["endpoint"], json!(llm.base_url()));
    assert_eq!(shown["model"], json!("my-model"));
    assert!(!shown.to_string().contains(LLM_KEY), "the key is never shown: {shown}");
    let (store, _) = store_of(&app).await;
    let row = store.account_llm(&key.account_id.as_str().into()).await.unwrap().unwrap();
    assert!(!row.api_key_sealed.contains(LLM_KEY));
    assert!(row.api_key_sealed.starts_with("v1:"));
    let other_view: Value = app.get(&other, "/v1/account/llm").await.json().await.unwrap();
    assert_eq!(other_view["byo_llm_enabled"], json!(false));

    let removed: Value = app.delete(&key, "/v1/account/llm").await.json().await.unwrap();
    assert_eq!(removed["ok"], json!(true));
    assert_eq!(removed["byo_llm_enabled"], json!(false));
    let after: Value = app.get(&key, "/v1/account/llm").await.json().await.unwrap();
    assert_eq!(after["byo_llm_enabled"], json!(false));
    assert!(store.account_llm(&key.account_id.as_str().into()).await.unwrap().is_none());
}

async fn llm_settings_that_fail_the_check_are_refused_and_never_stored(backend: Backend) {
    let llm = tool_calling_llm().await;
    let app = TestApp::spawn_with(backend, |c| c.allow_private_targets = true).await;
    let key = app.signup().await;

    // A wrong key: the server's 401, in words.
    let wrong = json!({"endpoint": llm.base_url(), "model": "m", "api_key": "sk-wrong-key"});
    let refused =
        expect_error(app.put(&key, "/v1/account/llm", wrong).await, 400, "llm_verification_failed")
            .await;
    let reason = refused["details"]["reason"].as_str().unwrap();
    assert!(reason.contains("401"), "{refused}");
    assert!(!refused.to_string().contains("sk-wrong-key"), "the key leaked: {refused}");

    // A model without tool calling.
    let plain = OpenAiEmulator::start().await.unwrap();
    let body = json!({"endpoint": plain.base_url(), "model": "m", "api_key": "k"});
    let refused =
        expect_error(app.put(&key, "/v1/account/llm", body).await, 400, "llm_verification_failed")
            .await;
    assert!(refused["details"]["reason"].as_str().unwrap().contains("tool"), "{refused}");

    // Nothing listening.
    let body =
        json!({"endpoint": format!("{}/v1", closed_port().await), "model": "m", "api_key": "k"});
    let refused =
        expect_error(app.put(&key, "/v1/account/llm", body).await, 400, "llm_verification_failed")
            .await;
    assert!(refused["details"]["reason"].as_str().is_some_and(|r| !r.is_empty()), "{refused}");

    let view: Value = app.get(&key, "/v1/account/llm").await.json().await.unwrap();
    assert_eq!(view["byo_llm_enabled"], json!(false));

    let error = expect_error(
        app.put(&key, "/v1/account/llm", json!({"endpoint": llm.base_url(), "model": "m"})).await,
        400,
        "missing_field",
    )
    .await;
    assert_eq!(error["details"]["field"], json!("api_key"));
    let extra = json!({"endpoint": llm.base_url(), "model": "m", "api_key": "k", "colour": "blue"});
    expect_error(app.put(&key, "/v1/account/llm", extra).await, 400, "unknown_field").await;
}

async fn llm_endpoints_must_be_public_https(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.signup().await;
    for endpoint in [
        "http://llm.example.com/v1",
        "https://127.0.0.1:8000/v1",
        "https://169.254.169.254/v1",
        "https://llm.internal/v1",
        "ftp://llm.example.com",
        "not a url",
    ] {
        let body = json!({"endpoint": endpoint, "model": "m", "api_key": "k"});
        let error =
            expect_error(app.put(&key, "/v1/account/llm", body).await, 400, "invalid_request")
                .await;
        assert_eq!(error["details"]["field"], json!("endpoint"), "{endpoint}: {error}");
    }
    let view: Value = app.get(&key, "/v1/account/llm").await.json().await.unwrap();
    assert_eq!(view["byo_llm_enabled"], json!(false));
}

async fn an_accounts_own_voice_round_trips(backend: Backend) {
    let (elevenlabs, cartesia) = voices().await;
    let app = app_with_voices(backend, &elevenlabs, &cartesia).await;
    let key = app.signup().await;

    let off: Value = app.get(&key, "/v1/account/tts").await.json().await.unwrap();
    assert_eq!(off["byo_tts_enabled"], json!(false));

    let body = json!({"provider": "elevenlabs", "voice_id": "voice-1", "api_key": ELEVENLABS_KEY});
    let saved = app.put(&key, "/v1/account/tts", body).await;
    assert_eq!(saved.status(), 200);
    let saved: Value = saved.json().await.unwrap();
    assert_eq!(
        saved,
        json!({"ok": true, "byo_tts_enabled": true, "provider": "elevenlabs", "voice_id": "voice-1", "verified": true})
    );
    let requests = elevenlabs.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/v1/text-to-speech/voice-1/stream?output_format=pcm_8000");
    assert_eq!(requests[0].header("xi-api-key"), Some(ELEVENLABS_KEY));

    let shown: Value = app.get(&key, "/v1/account/tts").await.json().await.unwrap();
    assert_eq!(shown["byo_tts_enabled"], json!(true));
    assert_eq!(shown["provider"], json!("elevenlabs"));
    assert_eq!(shown["voice_id"], json!("voice-1"));
    assert!(!shown.to_string().contains(ELEVENLABS_KEY));

    // Replaced by a Cartesia voice.
    let voice = "a0e99841-438c-4a64-b679-ae501e7d6091";
    let body = json!({"provider": "cartesia", "voice_id": voice, "api_key": CARTESIA_KEY});
    let saved: Value = app.put(&key, "/v1/account/tts", body).await.json().await.unwrap();
    assert_eq!(saved["provider"], json!("cartesia"));
    assert_eq!(cartesia.requests()[0].body["voice"]["id"], json!(voice));
    let (store, _) = store_of(&app).await;
    let row = store.account_tts(&key.account_id.as_str().into()).await.unwrap().unwrap();
    assert_eq!((row.provider.as_str(), row.voice_id.as_str()), ("cartesia", voice));
    assert!(!row.api_key_sealed.contains(CARTESIA_KEY));

    let removed: Value = app.delete(&key, "/v1/account/tts").await.json().await.unwrap();
    assert_eq!(removed["ok"], json!(true));
    assert_eq!(removed["byo_tts_enabled"], json!(false));
    let after: Value = app.get(&key, "/v1/account/tts").await.json().await.unwrap();
    assert_eq!(after["byo_tts_enabled"], json!(false));
}

async fn voice_settings_that_fail_the_check_are_refused_and_never_stored(backend: Backend) {
    let (elevenlabs, cartesia) = voices().await;
    let app = app_with_voices(backend, &elevenlabs, &cartesia).await;
    let key = app.signup().await;
    let put = |body: Value| app.put(&key, "/v1/account/tts", body);

    let wrong = json!({"provider": "elevenlabs", "voice_id": "voice-1", "api_key": "xi-wrong"});
    let refused = expect_error(put(wrong).await, 400, "tts_verification_failed").await;
    assert!(refused["details"]["reason"].as_str().unwrap().contains("401"), "{refused}");
    assert!(!refused.to_string().contains("xi-wrong"));
    let unknown = json!({"provider": "cartesia", "voice_id": "nobody", "api_key": CARTESIA_KEY});
    let refused = expect_error(put(unknown).await, 400, "tts_verification_failed").await;
    assert!(refused["details"]["reason"].as_str().unwrap().contains("404"), "{refused}");

    let view: Value = app.get(&key, "/v1/account/tts").await.json().await.unwrap();
    assert_eq!(view["byo_tts_enabled"], json!(false));

    let polly = json!({"provider": "polly", "voice_id": "Joanna", "api_key": "k"});
    let error = expect_error(put(polly).await, 400, "invalid_request").await;
    assert_eq!(error["details"]["field"], json!("provider"));
    let path = json!({"provider": "elevenlabs", "voice_id": "../../v1/user", "api_key": "k"});
    let error = expect_error(put(path).await, 400, "invalid_request").await;
    assert_eq!(error["details"]["field"], json!("voice_id"));
    let error = expect_error(
        put(json!({"provider": "elevenlabs", "api_key": "k"})).await,
        400,
        "missing_field",
    )
    .await;
    assert_eq!(error["details"]["field"], json!("voice_id"));
}

async fn an_unreachable_voice_provider_is_refused(backend: Backend) {
    let urls = nixflex_engine::byo::ByoTtsUrls {
        elevenlabs: closed_port().await,
        cartesia: closed_port().await,
    };
    let app = TestApp::spawn_with(backend, move |c| {
        c.allow_private_targets = true;
        c.byo_tts_urls = urls;
    })
    .await;
    let key = app.signup().await;
    for provider in ["elevenlabs", "cartesia"] {
        let body = json!({"provider": provider, "voice_id": "voice-1", "api_key": "k"});
        let refused = expect_error(
            app.put(&key, "/v1/account/tts", body).await,
            400,
            "tts_verification_failed",
        )
        .await;
        assert!(refused["details"]["reason"].as_str().unwrap().contains("connect"), "{refused}");
    }
}

async fn the_engine_builds_the_accounts_providers_from_the_stored_settings(backend: Backend) {
    let llm = tool_calling_llm().await;
    let (elevenlabs, cartesia) = voices().await;
    let app = app_with_voices(backend, &elevenlabs, &cartesia).await;
    let key = app.signup().await;
    let other = app.signup().await;
    let account: AccountId = key.account_id.as_str().into();
    let node = other_node(&app).await;
    assert!(node.account_llm(&account).await.is_none());
    assert!(node.account_tts(&account).await.is_none());

    let body = json!({"endpoint": llm.base_url(), "model": "my-model", "api_key": LLM_KEY});
    assert_eq!(app.put(&key, "/v1/account/llm", body).await.status(), 200);
    let body = json!({"provider": "elevenlabs", "voice_id": "voice-2", "api_key": ELEVENLABS_KEY});
    assert_eq!(app.put(&key, "/v1/account/tts", body).await.status(), 200);
    // This node looked before the settings existed; it sees them once its cache entry expires.
    let deadline = tokio::time::Instant::now() + nixflex_engine::byo::CACHE_TTL * 3;
    let model = loop {
        if let Some(model) = node.account_llm(&account).await {
            break model;
        }
        assert!(tokio::time::Instant::now() < deadline, "the new settings were never seen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Every request goes to the account's server, with the account's model and key.
    let mut stream = model
        .stream(LlmRequest::new("claude-haiku-4-5", vec![LlmMessage::user("Hello")]))
        .await
        .unwrap();
    let mut text = String::new();
    while let Some(event) = stream.next().await {
        if let LlmEvent::TextDelta(piece) = event.unwrap() {
            text.push_str(&piece);
        }
    }
    assert_eq!(text, "Connected.");
    let last = llm.requests().pop().unwrap();
    assert_eq!(last.body["model"], json!("my-model"));
    assert_eq!(last.header("authorization"), Some(&*format!("Bearer {LLM_KEY}")));

    let (voice, voice_id) = node.account_tts(&account).await.expect("the voice is set");
    assert_eq!(voice_id, "voice-2");
    assert_eq!(voice.name(), "elevenlabs");
    let mut audio = voice.synthesize(TtsRequest::new("Hi there", &voice_id)).await.unwrap();
    let mut bytes = 0;
    while let Some(chunk) = audio.next().await {
        bytes += chunk.unwrap().len();
    }
    assert!(bytes.abs_diff(8 * 480) < 20, "{bytes} bytes of 8 kHz μ-law");
    // The same client is reused while the settings do not change.
    let again = node.account_tts(&account).await.unwrap();
    assert!(Arc::ptr_eq(&voice, &again.0));
    // Another account has none.
    assert!(node.account_llm(&other.account_id.as_str().into()).await.is_none());

    // Removed through the API: this node stops using them within the cache's lifetime.
    assert_eq!(app.delete(&key, "/v1/account/tts").await.status(), 200);
    let deadline = tokio::time::Instant::now() + nixflex_engine::byo::CACHE_TTL * 3;
    while node.account_tts(&account).await.is_some() {
        assert!(tokio::time::Instant::now() < deadline, "the removed voice is still used");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // On the node that handled the change, it is gone at once.
    node.forget_account_providers(&account);
    assert!(node.account_tts(&account).await.is_none());
    assert!(node.account_llm(&account).await.is_some());
}

/// A call of an account with its own LLM and voice talks through them: the greeting and the
/// reply are synthesised by the account's ElevenLabs voice, the reply is written by the account's
/// model; the server's own providers are only the fallbacks. When the account's model stops
/// answering, the call moves to the server's LLM for the rest of the call and says so on the
/// record.
async fn a_call_talks_through_the_accounts_own_llm_and_voice(backend: Backend) {
    use nixflex_testkit::twilio::caller::{CallerEmulator, CallerScript};
    let llm = tool_calling_llm().await;
    let (elevenlabs, cartesia) = voices().await;
    let urls = nixflex_engine::byo::ByoTtsUrls {
        elevenlabs: elevenlabs.base_url(),
        cartesia: cartesia.base_url(),
    };
    let lab = crate::engine::CallLab::start_with(
        backend,
        json!({"welcome_message": "Hello from your own voice!", "response_eagerness": 200}),
        move |c| c.byo_tts_urls = urls,
    )
    .await;
    let put = |path: &'static str, body: Value| {
        let (app, key) = (&lab.app, &lab.key);
        async move {
            let response = app.put(key, path, body).await;
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["verified"], true, "{body}");
        }
    };
    put(
        "/v1/account/llm",
        json!({"endpoint": llm.base_url(), "model": "acct-model", "api_key": LLM_KEY}),
    )
    .await;
    put(
        "/v1/account/tts",
        json!({"provider": "elevenlabs", "voice_id": "voice-2", "api_key": ELEVENLABS_KEY}),
    )
    .await;
    let checks = llm.requests().len();
    let voice_checks = elevenlabs.requests().len();
    llm.set_responder(|_| Reply::text("Your own model says hello. Goodbye! [END_CALL]"));
    lab.stt.push_utterance("Who is this?");
    let script = CallerScript::new()
        .wait_for_agent_speech(Duration::from_secs(10))
        .wait_for_agent_silence(Duration::from_millis(600), Duration::from_secs(15))
        .say("Who is this?", Duration::from_millis(1200));
    let caller = CallerEmulator::new().unwrap().with_network(&lab.twilio);
    let recording = caller.place_inbound_call(lab.place(), script).await;
    assert!(recording.errors().is_empty(), "{:?}", recording.errors());
    assert_eq!(recording.agent_utterances().len(), 2, "the greeting and the reply were heard");
    let call = lab.finished_call().await;
    assert!(call["transcript"].to_string().contains("Your own model says hello."), "{call}");

    let chats: Vec<_> = llm.requests().into_iter().skip(checks).collect();
    assert_eq!(chats.len(), 1, "one reply, from the account's model");
    assert_eq!(chats[0].body["model"], "acct-model");
    assert_eq!(chats[0].header("authorization"), Some(format!("Bearer {LLM_KEY}").as_str()));
    let spoken: Vec<_> = elevenlabs.requests().into_iter().skip(voice_checks).collect();
    assert!(spoken.len() >= 2, "greeting and reply in the account's voice: {spoken:?}");
    assert!(spoken.iter().all(|r| r.path.contains("/voice-2/")), "{spoken:?}");
    assert!(
        lab.llm.requests().iter().all(|r| r.body["tool_choice"]["name"] == "record_call_analysis"),
        "the server's LLM wrote no reply: {:?}",
        lab.llm.requests()
    );
    assert!(call["provider_events"].as_array().unwrap().is_empty(), "{call}");

    // The account's model refuses (its key was revoked at the provider): the server's LLM
    // answers instead, and the record says the call switched.
    llm.push_fault(nixflex_testkit::openai::Fault::Status(401));
    lab.llm.set_responder(|body| {
        use nixflex_testkit::anthropic::Reply;
        if body["tool_choice"]["name"] == "record_call_analysis" {
            Reply::tool_call("record_call_analysis", json!({"call_summary": "A test call."}))
        } else {
            Reply::text("The server's model took over. Goodbye! [END_CALL]")
        }
    });
    lab.stt.push_utterance("Who is this?");
    let script = CallerScript::new()
        .wait_for_agent_speech(Duration::from_secs(10))
        .wait_for_agent_silence(Duration::from_millis(600), Duration::from_secs(15))
        .say("Who is this?", Duration::from_millis(1200));
    let recording = caller.place_inbound_call(lab.place(), script).await;
    assert!(recording.errors().is_empty(), "{:?}", recording.errors());
    let calls: Value = lab.app.get(&lab.key, "/v1/calls").await.json().await.unwrap();
    let second_id = calls["calls"][0]["call_id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let second = loop {
        let call: Value =
            lab.app.get(&lab.key, &format!("/v1/calls/{second_id}")).await.json().await.unwrap();
        if call["ended_at"].is_string() {
            break call;
        }
        assert!(std::time::Instant::now() < deadline, "the second call never ended: {call}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(second["transcript"].to_string().contains("The server's model took over."), "{second}");
    let events = second["provider_events"].as_array().unwrap();
    assert!(events.iter().any(|e| e["stage"] == "llm" && e["event"] == "switched"), "{events:?}");
}

both!(
    a_call_talks_through_the_accounts_own_llm_and_voice,
    an_accounts_own_llm_round_trips,
    llm_settings_that_fail_the_check_are_refused_and_never_stored,
    llm_endpoints_must_be_public_https,
    an_accounts_own_voice_round_trips,
    voice_settings_that_fail_the_check_are_refused_and_never_stored,
    an_unreachable_voice_provider_is_refused,
    the_engine_builds_the_accounts_providers_from_the_stored_settings,
);
