//! [`TwilioClient`]: the REST API v2010 operations the product needs (docs/protocols.md#twilio-rest-api).
//!
//! One client is shared by every customer: credentials travel with each call as
//! [`TwilioCredentials`] (HTTP Basic, Account SID + auth token), never inside the client. Bodies
//! are `application/x-www-form-urlencoded`, answers JSON. Requests are retried with exponential
//! backoff only when Twilio says "too many requests" (HTTP 429 or code 20429), which it answers
//! before doing anything, so retrying a `POST` cannot create a resource twice; `GET`s are also
//! retried when the connection could not be established. Timeouts are never retried: a timed-out
//! `POST` may have been applied.
//!
//! The auth token is never logged and is redacted from `Debug`. Logged paths carry SIDs but no
//! query strings (which can hold phone numbers).

use std::fmt;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{ACCEPT, HeaderMap, RETRY_AFTER};
use serde::de::DeserializeOwned;

use crate::twilio::error::{TwilioError, TwilioErrorBody, is_rate_limited};
use crate::twilio::resources::{
    Call, CallPage, CreateCall, CreateMessage, CreateRecording, IncomingPhoneNumber,
    IncomingPhoneNumberFilter, IncomingPhoneNumberPage, IncomingPhoneNumberUpdate, Message,
    MessageFilter, MessagePage, Recording, UpdateCall,
};

/// Twilio's production API host.
pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";

/// Path prefix of the v2010 REST API.
const API_PREFIX: &str = "/2010-04-01";

/// A customer's Twilio credentials: Account SID and auth token (or API key SID and secret).
#[derive(Clone, PartialEq, Eq)]
pub struct TwilioCredentials {
    /// `AC…` Account SID: the Basic-auth user name and the account in every path.
    pub account_sid: String,
    /// Auth token: the Basic-auth password. Secret: never logged.
    pub auth_token: String,
}

impl TwilioCredentials {
    /// Credentials for `account_sid` with `auth_token`.
    pub fn new(account_sid: impl Into<String>, auth_token: impl Into<String>) -> Self {
        Self { account_sid: account_sid.into(), auth_token: auth_token.into() }
    }
}

impl fmt::Debug for TwilioCredentials {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("TwilioCredentials")
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"[redacted]")
            .finish()
    }
}

/// How [`TwilioClient`] reaches Twilio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwilioClientConfig {
    /// Scheme and host (and optional port) of the API, without the `/2010-04-01` path:
    /// [`DEFAULT_BASE_URL`] in production, an emulator's URL in tests.
    pub base_url: String,
    /// Time allowed to establish the connection.
    pub connect_timeout: Duration,
    /// Time allowed for a whole request, response body included.
    pub request_timeout: Duration,
    /// Extra attempts after a rate-limited answer (or a failed connection, for `GET`).
    pub max_retries: u32,
    /// Wait before the first retry; doubled for every further retry.
    pub initial_backoff: Duration,
    /// Upper bound of one wait, `Retry-After` included.
    pub max_backoff: Duration,
    /// Most pages a list operation follows before returning what it has.
    pub max_list_pages: u32,
}

impl Default for TwilioClientConfig {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_retries: 3,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            max_list_pages: 20,
        }
    }
}

/// Client of Twilio's REST API v2010, shared across accounts. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TwilioClient {
    http: reqwest::Client,
    /// `config.base_url` without a trailing slash.
    base_url: String,
    config: TwilioClientConfig,
}

impl TwilioClient {
    /// Builds a client. Installs rustls' *ring* crypto provider as the process default when no
    /// provider is installed yet (reqwest is built without one).
    ///
    /// # Errors
    ///
    /// [`TwilioError::Config`] when the base URL is not an absolute http(s) URL without a path,
    /// or the HTTP client cannot be built.
    pub fn new(config: TwilioClientConfig) -> Result<Self, TwilioError> {
        let base_url = config.base_url.trim_end_matches('/').to_owned();
        let parsed = url::Url::parse(&base_url)
            .map_err(|_| TwilioError::Config("base_url is not a valid URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(TwilioError::Config("base_url must be an http(s) URL with a host"));
        }
        if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(TwilioError::Config("base_url must not have a path, query or fragment"));
        }
        ensure_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|_| TwilioError::Config("the HTTP client could not be built"))?;
        Ok(Self { http, base_url, config })
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &TwilioClientConfig {
        &self.config
    }

    /// `GET …/IncomingPhoneNumbers.json` with `filter`, following `next_page_uri` up to
    /// `max_list_pages` pages.
    ///
    /// Twilio's `PhoneNumber` filter also matches partial numbers; use
    /// [`TwilioClient::find_incoming_phone_number`] for an exact match.
    ///
    /// # Errors
    ///
    /// Any [`TwilioError`]; bad credentials give [`TwilioError::Authentication`].
    pub async fn list_incoming_phone_numbers(
        &self,
        credentials: &TwilioCredentials,
        filter: &IncomingPhoneNumberFilter,
    ) -> Result<Vec<IncomingPhoneNumber>, TwilioError> {
        let account_sid = checked_sid(&credentials.account_sid, "account SID")?;
        let mut url = with_query(
            format!(
                "{}{API_PREFIX}/Accounts/{account_sid}/IncomingPhoneNumbers.json",
                self.base_url
            ),
            &filter.to_query(),
        );
        let mut numbers = Vec::new();
        for _ in 0..self.config.max_list_pages {
            let page: IncomingPhoneNumberPage =
                self.send_json(credentials, Method::GET, &url, None).await?;
            numbers.extend(page.incoming_phone_numbers);
            match page.next_page_uri {
                // Next pages are relative to the API host; anything else is ignored rather than
                // followed, so credentials never go to another host.
                Some(next_page_uri) if next_page_uri.starts_with(API_PREFIX) => {
                    url = format!("{}{next_page_uri}", self.base_url);
                }
                _ => return Ok(numbers),
            }
        }
        tracing::warn!(
            message = "Twilio number list truncated.",
            max_list_pages = self.config.max_list_pages
        );
        Ok(numbers)
    }

    /// The account's incoming number equal to `phone_number` (E.164), if any.
    ///
    /// # Errors
    ///
    /// Any [`TwilioError`]; bad credentials give [`TwilioError::Authentication`].
    pub async fn find_incoming_phone_number(
        &self,
        credentials: &TwilioCredentials,
        phone_number: &str,
    ) -> Result<Option<IncomingPhoneNumber>, TwilioError> {
        let filter = IncomingPhoneNumberFilter {
            phone_number: Some(phone_number.to_owned()),
            ..IncomingPhoneNumberFilter::default()
        };
        let numbers = self.list_incoming_phone_numbers(credentials, &filter).await?;
        Ok(numbers.into_iter().find(|number| number.phone_number == phone_number))
    }

    /// `GET …/IncomingPhoneNumbers/{PN}.json`.
    ///
    /// # Errors
    ///
    /// [`TwilioError::NotFound`] for an unknown SID, or any other [`TwilioError`].
    pub async fn fetch_incoming_phone_number(
        &self,
        credentials: &TwilioCredentials,
        number_sid: &str,
    ) -> Result<IncomingPhoneNumber, TwilioError> {
        let url = self.resource_url(credentials, "IncomingPhoneNumbers", number_sid)?;
        self.send_json(credentials, Method::GET, &url, None).await
    }

    /// `POST …/IncomingPhoneNumbers/{PN}.json` with the fields set in `update`; returns the
    /// number as Twilio stored it.
    ///
    /// # Errors
    ///
    /// [`TwilioError::NotFound`] for an unknown SID, or any other [`TwilioError`].
    pub async fn update_incoming_phone_number(
        &self,
        credentials: &TwilioCredentials,
        number_sid: &str,
        update: &IncomingPhoneNumberUpdate,
    ) -> Result<IncomingPhoneNumber, TwilioError> {
        let url = self.resource_url(credentials, "IncomingPhoneNumbers", number_sid)?;
        self.send_json(credentials, Method::POST, &url, Some(&update.to_form())).await
    }

    /// `POST …/Calls.json`: places an outbound call.
    ///
    /// # Errors
    ///
    /// [`TwilioError::Upstream`] with Twilio's code for invalid parameters (e.g. 21211 invalid
    /// `To`), or any other [`TwilioError`].
    pub async fn create_call(
        &self,
        credentials: &TwilioCredentials,
        create: &CreateCall,
    ) -> Result<Call, TwilioError> {
        let url = self.collection_url(credentials, "Calls")?;
        self.send_json(credentials, Method::POST, &url, Some(&create.to_form())).await
    }

    /// `POST …/Calls/{CA}.json`: ends or redirects a call.
    ///
    /// # Errors
    ///
    /// [`TwilioError::NotFound`] for an unknown call, or any other [`TwilioError`].
    pub async fn update_call(
        &self,
        credentials: &TwilioCredentials,
        call_sid: &str,
        update: &UpdateCall,
    ) -> Result<Call, TwilioError> {
        let url = self.resource_url(credentials, "Calls", call_sid)?;
        self.send_json(credentials, Method::POST, &url, Some(&update.to_form())).await
    }

    /// `GET …/Calls/{CA}.json`.
    ///
    /// # Errors
    ///
    /// [`TwilioError::NotFound`] for an unknown call, or any other [`TwilioError`].
    pub async fn fetch_call(
        &self,
        credentials: &TwilioCredentials,
        call_sid: &str,
    ) -> Result<Call, TwilioError> {
        let url = self.resource_url(credentials, "Calls", call_sid)?;
        self.send_json(credentials, Method::GET, &url, None).await
    }

    /// `GET …/Calls.json?To=…&From=…`: the account's calls between these two numbers, newest
    /// first (Twilio's documented `To` / `From` filters; the first page of `page_size`, at most
    /// 1,000). Used to find out whether a call whose create request had no known outcome exists.
    ///
    /// # Errors
    ///
    /// Any [`TwilioError`].
    pub async fn list_calls_between(
        &self,
        credentials: &TwilioCredentials,
        to: &str,
        from: &str,
        page_size: u32,
    ) -> Result<Vec<Call>, TwilioError> {
        let url = with_query(
            self.collection_url(credentials, "Calls")?,
            &[
                ("To", to.to_owned()),
                ("From", from.to_owned()),
                ("PageSize", page_size.clamp(1, 1000).to_string()),
            ],
        );
        let page: CallPage = self.send_json(credentials, Method::GET, &url, None).await?;
        Ok(page.calls)
    }

    /// `POST …/Messages.json`: sends an SMS/MMS.
    ///
    /// # Errors
    ///
    /// [`TwilioError::Upstream`] with Twilio's code for invalid parameters (e.g. 21604 missing
    /// `To`), or any other [`TwilioError`].
    pub async fn create_message(
        &self,
        credentials: &TwilioCredentials,
        create: &CreateMessage,
    ) -> Result<Message, TwilioError> {
        let url = self.collection_url(credentials, "Messages")?;
        self.send_json(credentials, Method::POST, &url, Some(&create.to_form())).await
    }

    /// `GET …/Messages/{SM}.json`.
    ///
    /// # Errors
    ///
    /// [`TwilioError::NotFound`] for an unknown message, or any other [`TwilioError`].
    pub async fn fetch_message(
        &self,
        credentials: &TwilioCredentials,
        message_sid: &str,
    ) -> Result<Message, TwilioError> {
        let url = self.resource_url(credentials, "Messages", message_sid)?;
        self.send_json(credentials, Method::GET, &url, None).await
    }

    /// `GET …/Messages.json` with `filter`, newest first, following `next_page_uri` up to
    /// `max_pages` pages (at most the client's `max_list_pages`).
    ///
    /// # Errors
    ///
    /// Any [`TwilioError`]; bad credentials give [`TwilioError::Authentication`].
    pub async fn list_messages(
        &self,
        credentials: &TwilioCredentials,
        filter: &MessageFilter,
        max_pages: usize,
    ) -> Result<Vec<Message>, TwilioError> {
        let mut url = with_query(self.collection_url(credentials, "Messages")?, &filter.to_query());
        let mut messages = Vec::new();
        let limit = usize::try_from(self.config.max_list_pages).unwrap_or(usize::MAX);
        for _ in 0..max_pages.min(limit).max(1) {
            let page: MessagePage = self.send_json(credentials, Method::GET, &url, None).await?;
            messages.extend(page.messages);
            match page.next_page_uri {
                // Relative to the API host only, so credentials never go to another host.
                Some(next_page_uri) if next_page_uri.starts_with(API_PREFIX) => {
                    url = format!("{}{next_page_uri}", self.base_url);
                }
                _ => break,
            }
        }
        Ok(messages)
    }

    /// `POST …/Calls/{CA}/Recordings.json`: starts recording a live call (e.g.
    /// [`CreateRecording::dual_channel`]).
    ///
    /// # Errors
    ///
    /// [`TwilioError::NotFound`] for an unknown call; [`TwilioError::Upstream`] with code 21220
    /// when the call is not in progress; or any other [`TwilioError`].
    pub async fn create_call_recording(
        &self,
        credentials: &TwilioCredentials,
        call_sid: &str,
        create: &CreateRecording,
    ) -> Result<Recording, TwilioError> {
        let account_sid = checked_sid(&credentials.account_sid, "account SID")?;
        let call_sid = checked_sid(call_sid, "call SID")?;
        let url = format!(
            "{}{API_PREFIX}/Accounts/{account_sid}/Calls/{call_sid}/Recordings.json",
            self.base_url
        );
        self.send_json(credentials, Method::POST, &url, Some(&create.to_form())).await
    }

    /// `GET …/Recordings/{RE}.wav`: a recording's audio as WAV.
    ///
    /// # Errors
    ///
    /// [`TwilioError::NotFound`] for an unknown (or deleted) recording, or any other
    /// [`TwilioError`].
    pub async fn download_recording_wav(
        &self,
        credentials: &TwilioCredentials,
        recording_sid: &str,
    ) -> Result<bytes::Bytes, TwilioError> {
        let account_sid = checked_sid(&credentials.account_sid, "account SID")?;
        let recording_sid = checked_sid(recording_sid, "recording SID")?;
        let url = format!(
            "{}{API_PREFIX}/Accounts/{account_sid}/Recordings/{recording_sid}.wav",
            self.base_url
        );
        self.send(credentials, Method::GET, &url, None, "audio/x-wav").await
    }

    /// `DELETE …/Recordings/{RE}.json`: deletes a recording (its audio included).
    ///
    /// # Errors
    ///
    /// [`TwilioError::NotFound`] for an unknown (or already deleted) recording, or any other
    /// [`TwilioError`].
    pub async fn delete_recording(
        &self,
        credentials: &TwilioCredentials,
        recording_sid: &str,
    ) -> Result<(), TwilioError> {
        let url = self.resource_url(credentials, "Recordings", recording_sid)?;
        self.send(credentials, Method::DELETE, &url, None, "application/json").await.map(|_| ())
    }

    fn collection_url(
        &self,
        credentials: &TwilioCredentials,
        collection: &str,
    ) -> Result<String, TwilioError> {
        let account_sid = checked_sid(&credentials.account_sid, "account SID")?;
        Ok(format!("{}{API_PREFIX}/Accounts/{account_sid}/{collection}.json", self.base_url))
    }

    fn resource_url(
        &self,
        credentials: &TwilioCredentials,
        collection: &str,
        sid: &str,
    ) -> Result<String, TwilioError> {
        let account_sid = checked_sid(&credentials.account_sid, "account SID")?;
        let sid = checked_sid(sid, "resource SID")?;
        Ok(format!("{}{API_PREFIX}/Accounts/{account_sid}/{collection}/{sid}.json", self.base_url))
    }

    /// Sends one request (with retries) and decodes a success answer as `T`.
    async fn send_json<T: DeserializeOwned>(
        &self,
        credentials: &TwilioCredentials,
        method: Method,
        url: &str,
        form: Option<&[(&'static str, String)]>,
    ) -> Result<T, TwilioError> {
        let body = self.send(credentials, method, url, form, "application/json").await?;
        serde_json::from_slice(&body).map_err(TwilioError::Decode)
    }

    /// Sends one request (with retries); returns a success answer's body.
    async fn send(
        &self,
        credentials: &TwilioCredentials,
        method: Method,
        url: &str,
        form: Option<&[(&'static str, String)]>,
        accept: &'static str,
    ) -> Result<bytes::Bytes, TwilioError> {
        let path = log_path(url, &self.base_url);
        let max_attempts = self.config.max_retries.saturating_add(1);
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let mut request = self
                .http
                .request(method.clone(), url)
                .basic_auth(&credentials.account_sid, Some(&credentials.auth_token))
                .header(ACCEPT, accept);
            if let Some(form) = form {
                request = request.form(form);
            }
            tracing::debug!(message = "Twilio request.", method = %method, path, attempt);
            let response = match request.send().await {
                Ok(response) => response,
                Err(error) if error.is_timeout() => return Err(TwilioError::Timeout),
                Err(error)
                    if error.is_connect() && method == Method::GET && attempt < max_attempts =>
                {
                    tracing::warn!(
                        message = "Twilio connection failed, retrying.",
                        path,
                        attempt,
                        error = %error
                    );
                    tokio::time::sleep(self.backoff(attempt, None)).await;
                    continue;
                }
                Err(error) => return Err(TwilioError::Transport(error)),
            };
            let status = response.status();
            let retry_after = parse_retry_after(response.headers());
            let body = match response.bytes().await {
                Ok(body) => body,
                Err(error) if error.is_timeout() => return Err(TwilioError::Timeout),
                Err(error) => return Err(TwilioError::Transport(error)),
            };
            if status.is_success() {
                return Ok(body);
            }
            let code = TwilioErrorBody::parse(&body).code;
            if is_rate_limited(status.as_u16(), code) && attempt < max_attempts {
                tracing::warn!(
                    message = "Twilio rate limited the request, retrying.",
                    path,
                    attempt,
                    status = status.as_u16()
                );
                tokio::time::sleep(self.backoff(attempt, retry_after)).await;
                continue;
            }
            tracing::debug!(
                message = "Twilio answered with an error.",
                path,
                status = status.as_u16(),
                twilio_code = code
            );
            return Err(TwilioError::from_response(status.as_u16(), &body, attempt, retry_after));
        }
    }

    /// Wait before retry number `attempt` (1-based): `Retry-After` when Twilio sent one,
    /// otherwise `initial_backoff * 2^(attempt - 1)`, never more than `max_backoff`.
    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exponential =
            self.config.initial_backoff.saturating_mul(1_u32 << attempt.saturating_sub(1).min(16));
        retry_after.unwrap_or(exponential).min(self.config.max_backoff)
    }
}

/// reqwest is built with `rustls-no-provider` and panics when it builds a client while no
/// process-wide crypto provider is installed; the workspace standardises on *ring*.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race against another installer is fine: a provider is installed either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// SIDs go into URL paths: accept only ASCII letters and digits so nothing can change the path.
fn checked_sid<'a>(sid: &'a str, what: &'static str) -> Result<&'a str, TwilioError> {
    let valid =
        !sid.is_empty() && sid.len() <= 64 && sid.bytes().all(|b| b.is_ascii_alphanumeric());
    if valid { Ok(sid) } else { Err(TwilioError::InvalidRequest(what)) }
}

fn with_query(url: String, query: &[(&'static str, String)]) -> String {
    if query.is_empty() {
        return url;
    }
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in query {
        serializer.append_pair(name, value);
    }
    format!("{url}?{}", serializer.finish())
}

/// The request path without host or query string, for logs.
fn log_path<'a>(url: &'a str, base_url: &str) -> &'a str {
    let path = url.strip_prefix(base_url).unwrap_or(url);
    path.split('?').next().unwrap_or(path)
}

/// `Retry-After` in delta-seconds form (the only form Twilio is known to send).
fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_debug_redacts_the_auth_token() {
        let credentials = TwilioCredentials::new("AC123", "super-secret-token");
        let rendered = format!("{credentials:?}");
        assert!(rendered.contains("AC123"));
        assert!(!rendered.contains("super-secret-token"));
    }

    #[test]
    fn sids_with_path_characters_are_rejected() {
        for sid in ["", "AC../x", "AC?x=1", "AC 1", "AC%2F", "PNé"] {
            assert!(checked_sid(sid, "sid").is_err(), "{sid}");
        }
        assert!(checked_sid("PNaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "sid").is_ok());
    }

    #[test]
    fn base_url_with_a_path_is_rejected() {
        let config = TwilioClientConfig {
            base_url: "https://api.twilio.com/2010-04-01".to_owned(),
            ..TwilioClientConfig::default()
        };
        assert!(matches!(TwilioClient::new(config), Err(TwilioError::Config(_))));
        let config =
            TwilioClientConfig { base_url: "ftp://x".to_owned(), ..TwilioClientConfig::default() };
        assert!(matches!(TwilioClient::new(config), Err(TwilioError::Config(_))));
    }

    #[test]
    fn base_url_trailing_slash_is_trimmed() {
        let config = TwilioClientConfig {
            base_url: "http://127.0.0.1:9/".to_owned(),
            ..TwilioClientConfig::default()
        };
        let client = TwilioClient::new(config).unwrap();
        assert_eq!(client.base_url, "http://127.0.0.1:9");
    }

    #[test]
    fn backoff_doubles_and_is_capped_and_honours_retry_after() {
        let client = TwilioClient::new(TwilioClientConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            ..TwilioClientConfig::default()
        })
        .unwrap();
        assert_eq!(client.backoff(1, None), Duration::from_millis(100));
        assert_eq!(client.backoff(2, None), Duration::from_millis(200));
        assert_eq!(client.backoff(3, None), Duration::from_millis(350));
        assert_eq!(client.backoff(40, None), Duration::from_millis(350));
        assert_eq!(client.backoff(1, Some(Duration::from_secs(60))), Duration::from_millis(350));
    }

    #[test]
    fn query_values_are_form_encoded() {
        let url = with_query("http://h/p".to_owned(), &[("PhoneNumber", "+1 555".to_owned())]);
        assert_eq!(url, "http://h/p?PhoneNumber=%2B1+555");
        assert_eq!(log_path(&url, "http://h"), "/p");
    }
}
