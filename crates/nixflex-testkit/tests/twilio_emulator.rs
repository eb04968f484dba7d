//! `TwilioEmulator` on the wire: Twilio's JSON shapes and error bodies, the test controls, and
//! signed webhook delivery.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use nixflex_providers::twilio::signature;
use nixflex_testkit::twilio::{EmulatedAccount, TwilioEmulator};
use serde_json::{Value, json};
use tokio::sync::mpsc;

async fn started() -> (TwilioEmulator, EmulatedAccount, reqwest::Client) {
    let emulator = TwilioEmulator::start().await.expect("emulator starts");
    let account = emulator.add_account();
    (emulator, account, reqwest::Client::new())
}

fn api(emulator: &TwilioEmulator, account: &EmulatedAccount, rest: &str) -> String {
    format!("{}/2010-04-01/Accounts/{}/{rest}", emulator.base_url(), account.sid)
}

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

#[tokio::test]
async fn accounts_have_twilio_shaped_sids_and_tokens() {
    let (_emulator, account, _) = started().await;

    assert_eq!(account.sid.len(), 34);
    assert!(account.sid.starts_with("AC"));
    assert!(account.sid[2..].bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(account.auth_token.len(), 32);
}

#[tokio::test]
async fn missing_or_wrong_credentials_get_twilios_exact_401_body() {
    let (emulator, account, http) = started().await;
    let url = api(&emulator, &account, "IncomingPhoneNumbers.json");
    let expected = json!({
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401
    });

    let missing = json_of(http.get(&url).send().await.unwrap()).await;
    let wrong =
        json_of(http.get(&url).basic_auth(&account.sid, Some("nope")).send().await.unwrap()).await;

    assert_eq!(missing, (401, expected.clone()));
    assert_eq!(wrong, (401, expected));
}

#[tokio::test]
async fn unknown_resources_get_20404_naming_the_path() {
    let (emulator, account, http) = started().await;
    let path = format!("/2010-04-01/Accounts/{}/Calls/CA{}.json", account.sid, "0".repeat(32));

    let (status, body) = json_of(
        http.get(format!("{}{path}", emulator.base_url()))
            .basic_auth(&account.sid, Some(&account.auth_token))
            .send()
            .await
            .unwrap(),
    )
    .await;

    assert_eq!(status, 404);
    assert_eq!(body["code"], 20404);
    assert_eq!(body["message"], format!("The requested resource {path} was not found"));
    assert_eq!(body["more_info"], "https://www.twilio.com/docs/errors/20404");
    assert_eq!(body["status"], 404);
}

#[tokio::test]
async fn unsupported_methods_get_405_with_code_20004() {
    let (emulator, account, http) = started().await;

    let (status, body) = json_of(
        http.delete(api(&emulator, &account, "Calls.json"))
            .basic_auth(&account.sid, Some(&account.auth_token))
            .send()
            .await
            .unwrap(),
    )
    .await;

    assert_eq!((status, body["code"].clone()), (405, json!(20004)));
}

#[tokio::test]
async fn number_list_pages_like_twilio_and_keeps_the_filter_in_page_uris() {
    let (emulator, account, http) = started().await;
    emulator.add_number(&account.sid, "+15550000001");
    emulator.add_number(&account.sid, "+15550000002");
    emulator.add_number(&account.sid, "+15559999999");
    let get = |query: &'static str| {
        http.get(format!("{}?{query}", api(&emulator, &account, "IncomingPhoneNumbers.json")))
            .basic_auth(&account.sid, Some(&account.auth_token))
            .send()
    };

    let (_, first) = json_of(get("PhoneNumber=%2B155500000&PageSize=1").await.unwrap()).await;
    let (_, second) =
        json_of(get("PhoneNumber=%2B155500000&PageSize=1&Page=1").await.unwrap()).await;

    let mut keys: Vec<&str> = first.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "end",
            "first_page_uri",
            "incoming_phone_numbers",
            "next_page_uri",
            "page",
            "page_size",
            "previous_page_uri",
            "start",
            "uri"
        ]
    );
    let base = format!("/2010-04-01/Accounts/{}/IncomingPhoneNumbers.json", account.sid);
    assert_eq!(
        first["first_page_uri"],
        format!("{base}?PhoneNumber=%2B155500000&PageSize=1&Page=0")
    );
    assert_eq!(first["uri"], first["first_page_uri"]);
    assert!(
        first["next_page_uri"].as_str().unwrap().starts_with(&format!(
            "{base}?PhoneNumber=%2B155500000&PageSize=1&Page=1&PageToken=PAPN"
        ))
    );
    assert_eq!(first["previous_page_uri"], Value::Null);
    assert_eq!(
        (first["page"].clone(), first["start"].clone(), first["end"].clone()),
        (json!(0), json!(0), json!(0))
    );
    assert_eq!(second["incoming_phone_numbers"][0]["phone_number"], "+15550000002");
    assert_eq!(second["next_page_uri"], Value::Null);
    assert_eq!((second["start"].clone(), second["end"].clone()), (json!(1), json!(1)));
    assert_eq!(
        second["previous_page_uri"],
        format!("{base}?PhoneNumber=%2B155500000&PageSize=1&Page=0")
    );
}

#[tokio::test]
async fn number_resource_has_twilios_fields_and_rfc2822_dates() {
    let (emulator, account, http) = started().await;
    let sid = emulator.add_number(&account.sid, "+18089255327");

    let (status, number) = json_of(
        http.get(api(&emulator, &account, &format!("IncomingPhoneNumbers/{sid}.json")))
            .basic_auth(&account.sid, Some(&account.auth_token))
            .send()
            .await
            .unwrap(),
    )
    .await;

    assert_eq!(status, 200);
    assert!(sid.starts_with("PN") && sid.len() == 34);
    assert_eq!(number["friendly_name"], "(808) 925-5327");
    assert_eq!(number["voice_url"], Value::Null);
    assert_eq!(number["sms_url"], "");
    assert_eq!(number["voice_method"], "POST");
    assert_eq!(
        number["uri"],
        format!("/2010-04-01/Accounts/{}/IncomingPhoneNumbers/{sid}.json", account.sid)
    );
    for field in ["date_created", "date_updated"] {
        let date = number[field].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc2822(date).is_ok(), "{field}: {date}");
        assert!(date.ends_with("+0000"), "{field}: {date}");
    }
}

#[tokio::test]
async fn call_creation_validates_like_twilio() {
    let (emulator, account, http) = started().await;
    let create = |form: &'static [(&'static str, &'static str)]| {
        http.post(api(&emulator, &account, "Calls.json"))
            .basic_auth(&account.sid, Some(&account.auth_token))
            .form(form)
            .send()
    };

    let (_, no_to) =
        json_of(create(&[("From", "+15550000001"), ("Url", "https://x")]).await.unwrap()).await;
    let (_, no_from) =
        json_of(create(&[("To", "+15550000002"), ("Url", "https://x")]).await.unwrap()).await;
    let (_, no_url) =
        json_of(create(&[("To", "+15550000002"), ("From", "+15550000001")]).await.unwrap()).await;

    assert_eq!((no_to["status"].clone(), no_to["code"].clone()), (json!(400), json!(21201)));
    assert_eq!(no_to["message"], "No 'To' number is specified");
    assert_eq!(no_from["code"], 21213);
    assert_eq!(no_url["code"], 21205);
    assert!(emulator.calls().is_empty());
}

#[tokio::test]
async fn message_creation_validates_like_twilio() {
    let (emulator, account, http) = started().await;
    let create = |form: &'static [(&'static str, &'static str)]| {
        http.post(api(&emulator, &account, "Messages.json"))
            .basic_auth(&account.sid, Some(&account.auth_token))
            .form(form)
            .send()
    };

    let (_, no_to) =
        json_of(create(&[("From", "+15550000001"), ("Body", "hi")]).await.unwrap()).await;
    let (_, no_from) =
        json_of(create(&[("To", "+15550000002"), ("Body", "hi")]).await.unwrap()).await;
    let (created_status, created) = json_of(
        create(&[("To", "+15550000002"), ("From", "+15550000001"), ("Body", "hi")]).await.unwrap(),
    )
    .await;

    assert_eq!(no_to["code"], 21604);
    assert_eq!(no_to["message"], "A 'To' phone number is required.");
    assert_eq!(no_from["code"], 21603);
    assert_eq!(created_status, 201);
    assert_eq!(created["status"], "queued");
    assert_eq!(created["direction"], "outbound-api");
    assert_eq!(created["num_segments"], "1");
}

#[tokio::test]
async fn persistent_failures_last_until_cleared() {
    let (emulator, account, http) = started().await;
    emulator.fail_always("Messages", 503, None);
    let get = || {
        http.get(api(&emulator, &account, "Messages.json"))
            .basic_auth(&account.sid, Some(&account.auth_token))
            .send()
    };

    let first = get().await.unwrap().status().as_u16();
    let second = get().await.unwrap();
    let second_status = second.status().as_u16();
    let second_body: Value = second.json().await.unwrap();
    emulator.clear_failures();
    let third = get().await.unwrap().status().as_u16();

    assert_eq!((first, second_status, third), (503, 503, 200));
    assert_eq!(second_body["code"], Value::Null);
    assert_eq!(
        emulator.requests().iter().map(|request| request.status).collect::<Vec<_>>(),
        [503, 503, 200]
    );
}

#[tokio::test]
async fn requests_are_logged_with_repeated_form_parameters() {
    let (emulator, account, http) = started().await;

    http.post(api(&emulator, &account, "Calls.json"))
        .basic_auth(&account.sid, Some(&account.auth_token))
        .form(&[
            ("To", "+15550000002"),
            ("From", "+15550000001"),
            ("Url", "https://x"),
            ("StatusCallbackEvent", "initiated"),
            ("StatusCallbackEvent", "completed"),
        ])
        .send()
        .await
        .unwrap();

    let request = emulator.requests().pop().unwrap();
    assert_eq!(request.method, "POST");
    assert_eq!(request.status, 201);
    assert_eq!(request.form_params("StatusCallbackEvent"), ["initiated", "completed"]);
    emulator.clear_requests();
    assert!(emulator.requests().is_empty());
}

#[derive(Debug)]
struct Delivery {
    headers: HeaderMap,
    body: Bytes,
}

/// A receiver for webhooks on 127.0.0.1:0; returns its URL base and the deliveries.
async fn webhook_receiver() -> (String, mpsc::UnboundedReceiver<Delivery>) {
    let (deliveries_tx, deliveries_rx) = mpsc::unbounded_channel();
    let app = Router::new().route(
        "/twilio/voice",
        post(move |headers: HeaderMap, body: Bytes| {
            let deliveries_tx = deliveries_tx.clone();
            async move {
                let _ = deliveries_tx.send(Delivery { headers, body });
                "<Response/>"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("receiver binds");
    let base = format!("http://{}", listener.local_addr().expect("receiver address"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver serves") });
    (base, deliveries_rx)
}

#[tokio::test]
async fn webhooks_are_form_posts_signed_like_twilio() {
    let (emulator, account, _) = started().await;
    let (receiver_base, mut deliveries) = webhook_receiver().await;
    let url = format!("{receiver_base}/twilio/voice?agent=a1&lang=en");
    let params: Vec<(String, String)> = [
        ("CallSid", "CA0123"),
        ("AccountSid", account.sid.as_str()),
        ("From", "+15550000001"),
        ("To", "+15550000002"),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
    ]
    .iter()
    .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
    .collect();

    let response = emulator.send_webhook(&url, &account.auth_token, &params).await.unwrap();
    let delivery = deliveries.recv().await.unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(
        delivery.headers["content-type"].to_str().unwrap(),
        "application/x-www-form-urlencoded"
    );
    let received: Vec<(String, String)> =
        url::form_urlencoded::parse(&delivery.body).into_owned().collect();
    assert_eq!(received, params);
    let header = delivery.headers[signature::SIGNATURE_HEADER].to_str().unwrap();
    assert!(signature::validate_form(&account.auth_token, &url, &received, header));
    assert!(!signature::validate_form("wrong-token", &url, &received, header));
    let token = delivery.headers["i-twilio-idempotency-token"].to_str().unwrap();
    assert_eq!(token.len(), 36);
}

#[tokio::test]
async fn a_retried_webhook_reuses_the_idempotency_token() {
    let (emulator, account, _) = started().await;
    let (receiver_base, mut deliveries) = webhook_receiver().await;
    let url = format!("{receiver_base}/twilio/voice");
    let params = vec![("CallSid".to_owned(), "CA1".to_owned())];

    for _ in 0..2 {
        emulator
            .send_webhook_with_idempotency_token(&url, &account.auth_token, &params, "token-1")
            .await
            .unwrap();
    }
    emulator.send_webhook(&url, &account.auth_token, &params).await.unwrap();

    let mut tokens = Vec::new();
    for _ in 0..3 {
        let delivery = deliveries.recv().await.unwrap();
        tokens.push(delivery.headers["i-twilio-idempotency-token"].to_str().unwrap().to_owned());
    }
    assert_eq!(tokens[0], "token-1");
    assert_eq!(tokens[1], "token-1");
    assert_ne!(tokens[2], "token-1");
}

#[tokio::test]
async fn shutdown_stops_accepting_connections() {
    let (emulator, account, _) = started().await;
    let url = api(&emulator, &account, "Calls.json");

    emulator.shutdown().await;
    // A fresh client, so that no pooled connection from before the shutdown is reused.
    let result = reqwest::Client::new().get(&url).timeout(Duration::from_secs(2)).send().await;

    assert!(result.is_err_and(|error| error.is_connect()));
}
