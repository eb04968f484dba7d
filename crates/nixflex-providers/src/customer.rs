//! Requests to the customer's own endpoints (pre-call gate, and later webhooks and custom
//! functions): https only, never to loopback, private, link-local or metadata addresses unless
//! the operator allows private targets (docs/decisions.md#outbound-url-safety), checked again after DNS resolution so a
//! name cannot be pointed at an internal address; signed like webhooks (docs/protocols.md#nixflex-signatures).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use nixflex_core::validate::{is_public_ip, outbound_url};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use sha2::Sha256;

/// A host name that resolves only to non-public addresses: the request is refused before any
/// connection is made.
#[derive(Debug, thiserror::Error)]
#[error("{0} does not resolve to a public address")]
pub struct NotPublic(String);

/// Resolves host names and refuses any that resolve to a non-public address.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> =
                addrs.into_iter().filter(|a| is_public_ip(a.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(NotPublic(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client for customer endpoints.
#[derive(Debug, Clone)]
pub struct CustomerHttp {
    client: reqwest::Client,
    allow_private: bool,
}

/// Why a customer endpoint could not be called.
#[derive(Debug, thiserror::Error)]
pub enum CustomerHttpError {
    /// The URL breaks the https/SSRF rules.
    #[error("target not allowed: {0}")]
    Forbidden(String),
    /// The request failed or timed out.
    #[error("request failed")]
    Request(#[from] reqwest::Error),
}

impl CustomerHttpError {
    /// Whether the target was refused by the outbound-URL rules (statically, or because its name
    /// resolved to a non-public address), as opposed to a request that was tried and failed.
    pub fn is_refused(&self) -> bool {
        match self {
            Self::Forbidden(_) => true,
            Self::Request(error) => {
                let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
                while let Some(current) = source {
                    if current.is::<NotPublic>() {
                        return true;
                    }
                    source = current.source();
                }
                false
            }
        }
    }

    /// Whether the request timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Request(error) if error.is_timeout())
    }
}

impl CustomerHttp {
    /// A client; with `allow_private`, http and private addresses are allowed (local testing).
    ///
    /// # Errors
    /// When the TLS stack cannot be built.
    pub fn new(allow_private: bool) -> Result<Self, reqwest::Error> {
        crate::llm::http::ensure_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .user_agent("Nixflex-VoiceEngine/1.0")
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none());
        if !allow_private {
            builder = builder.dns_resolver(Arc::new(PublicOnlyResolver));
        }
        Ok(Self { client: builder.build()?, allow_private })
    }

    /// Whether http and private addresses are allowed (local testing).
    pub fn allows_private(&self) -> bool {
        self.allow_private
    }

    /// POSTs a JSON body signed with each of `secrets` (`X-Nixflex-Signature: t=…,v1=…[,v1=…]`).
    ///
    /// # Errors
    /// [`CustomerHttpError`] when the target is not allowed or the request fails.
    pub async fn post_signed(
        &self,
        url: &str,
        body: &serde_json::Value,
        secrets: &[String],
        timeout: Duration,
    ) -> Result<reqwest::Response, CustomerHttpError> {
        self.post_signed_with(url, body, secrets, timeout, &[]).await
    }

    /// [`Self::post_signed`] with extra headers (e.g. the webhook's event id).
    ///
    /// # Errors
    /// [`CustomerHttpError`] when the target is not allowed or the request fails.
    pub async fn post_signed_with(
        &self,
        url: &str,
        body: &serde_json::Value,
        secrets: &[String],
        timeout: Duration,
        headers: &[(&str, &str)],
    ) -> Result<reqwest::Response, CustomerHttpError> {
        outbound_url("url", url, self.allow_private)
            .map_err(|e| CustomerHttpError::Forbidden(e.message))?;
        let raw = serde_json::to_vec(body).unwrap_or_default();
        let header = signature_header(chrono::Utc::now().timestamp(), &raw, secrets);
        let mut request = self
            .client
            .post(url)
            .timeout(timeout)
            .header("content-type", "application/json")
            .header("x-nixflex-signature", header);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Ok(request.body(raw).send().await?)
    }
}

/// An HTTP client for a provider the customer named (their own LLM or speech service): no
/// redirects, and unless `allow_private`, names must resolve to public addresses (checked after
/// DNS, like [`CustomerHttp`]). The URL itself is checked by the caller with
/// [`outbound_url`].
///
/// # Errors
/// When the TLS stack cannot be built.
pub fn provider_http(
    allow_private: bool,
    connect_timeout: Duration,
) -> Result<reqwest::Client, reqwest::Error> {
    crate::llm::http::ensure_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::none());
    if !allow_private {
        builder = builder.dns_resolver(Arc::new(PublicOnlyResolver));
    }
    builder.build()
}

/// `t=<unix>,v1=<hex hmac-sha256(secret, "<t>.<body>")>` for each secret (docs/protocols.md#nixflex-signatures).
pub fn signature_header(timestamp: i64, body: &[u8], secrets: &[String]) -> String {
    let mut header = format!("t={timestamp}");
    for secret in secrets {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else { continue };
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        header.push_str(",v1=");
        header.push_str(&hex::encode(mac.finalize().into_bytes()));
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_the_documented_scheme() {
        // The same construction as Stripe's, checked against the test vector in docs/protocols.md#nixflex-signatures.
        let header = signature_header(
            1_700_000_000,
            br#"{"id":"evt_test","object":"event"}"#,
            &["whsec_test_secret".to_owned()],
        );
        assert_eq!(
            header,
            "t=1700000000,v1=8042376f6ca064adbe037642a718227dfd59047137eb49497a54c49eb0cfb724"
        );
        let two = signature_header(1, b"{}", &["a".to_owned(), "b".to_owned()]);
        assert_eq!(two.matches("v1=").count(), 2);
    }

    #[tokio::test]
    async fn a_name_resolving_to_a_private_address_is_refused_not_failed() {
        let http = CustomerHttp::new(false).unwrap();
        // Straight to the client: the static URL check would already refuse `localhost`; this
        // exercises the check after DNS, which catches names pointed at internal addresses.
        let error = http.client.post("https://localhost:9/").send().await.unwrap_err();
        let error = CustomerHttpError::Request(error);
        assert!(error.is_refused(), "{error:?}");
        assert!(!error.is_timeout());
        let refused = http
            .post_signed("http://127.0.0.1:9/", &serde_json::json!({}), &[], Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(refused.is_refused());
    }
}
