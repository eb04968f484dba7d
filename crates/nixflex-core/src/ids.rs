//! Identifier formats (docs/api.md#identifiers; docs/decisions.md#call-ids, #campaign-and-message-ids) and their generation.

use rand::RngCore;

/// Declares an id newtype: a `String` inside, so two kinds of id cannot be swapped by accident
/// (`get_agent(&agent_id, &account_id)` does not compile). It reads as a `&str` where one is
/// needed (`Deref`), serialises as a plain string and is built from a `String` or `&str`.
macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default,
            serde::Serialize, serde::Deserialize, utoipa::ToSchema,
        )]
        #[serde(transparent)]
        #[schema(value_type = String)]
        pub struct $name(String);

        impl $name {
            /// Wraps an id.
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as an owned string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(id.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }
    };
}

id_type! {
    /// `acct_` + 16 hex: an account, the owner of every resource.
    AccountId
}

id_type! {
    /// `nxf_` + 32 hex: an API key's public half.
    KeyId
}

id_type! {
    /// `agent_` + 16 hex: an agent.
    AgentId
}

id_type! {
    /// `call_` + 24 hex: a call.
    CallId
}

id_type! {
    /// A business phone number in canonical E.164 (`+447446466847`), as imported. Built from
    /// input only after `phone::parse_e164` accepted it.
    E164
}

fn random_hex(n_bytes: usize) -> String {
    let mut bytes = vec![0u8; n_bytes];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// `acct_` + 16 hex: the account (owner of every resource).
pub fn new_account_id() -> AccountId {
    AccountId(format!("acct_{}", random_hex(8)))
}

/// `nxf_` + 32 hex: an API key id.
pub fn new_key_id() -> KeyId {
    KeyId(format!("nxf_{}", random_hex(16)))
}

/// `nxfs_` + 64 hex: an API key secret (256 bits of entropy).
pub fn new_key_secret() -> String {
    format!("nxfs_{}", random_hex(32))
}

/// `agent_` + 16 hex.
pub fn new_agent_id() -> AgentId {
    AgentId(format!("agent_{}", random_hex(8)))
}

/// `call_` + 24 hex.
pub fn new_call_id() -> CallId {
    CallId(format!("call_{}", random_hex(12)))
}

/// A new voice campaign id: `camp_` + 16 hex (docs/decisions.md#campaign-and-message-ids).
pub fn new_campaign_id() -> String {
    format!("camp_{}", random_hex(8))
}

/// Whether `s` looks like a voice campaign id (`camp_` + 16 lowercase hex).
pub fn is_campaign_id(s: &str) -> bool {
    s.strip_prefix("camp_").is_some_and(|rest| rest.len() == 16 && is_lower_hex(rest))
}

/// A new SMS message id: `sms_` + 24 hex (docs/decisions.md#campaign-and-message-ids).
pub fn new_message_id() -> String {
    format!("sms_{}", random_hex(12))
}

/// Whether `s` looks like a message id (`sms_` + 24 lowercase hex).
pub fn is_message_id(s: &str) -> bool {
    s.strip_prefix("sms_").is_some_and(|rest| rest.len() == 24 && is_lower_hex(rest))
}

/// `whd_` + 24 hex: one webhook delivery attempt.
pub fn new_delivery_id() -> String {
    format!("whd_{}", random_hex(12))
}

/// A new SMS campaign id: `smsc_` + 16 hex (docs/decisions.md#campaign-and-message-ids).
pub fn new_sms_campaign_id() -> String {
    format!("smsc_{}", random_hex(8))
}

/// `job_` + 24 hex: a background job (docs/jobs.md).
pub fn new_job_id() -> String {
    format!("job_{}", random_hex(12))
}

/// `req_` + 24 hex: a request id for `X-Request-Id`.
pub fn new_request_id() -> String {
    format!("req_{}", random_hex(12))
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `s` has the shape of a key id (`nxf_` + 32 lowercase hex).
pub fn is_key_id(s: &str) -> bool {
    s.strip_prefix("nxf_").is_some_and(|rest| rest.len() == 32 && is_lower_hex(rest))
}

/// Whether `s` has the shape of a key secret (`nxfs_` + 64 lowercase hex).
pub fn is_key_secret(s: &str) -> bool {
    s.strip_prefix("nxfs_").is_some_and(|rest| rest.len() == 64 && is_lower_hex(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_have_the_documented_shapes() {
        assert!(is_key_id(&new_key_id()));
        assert!(is_key_secret(&new_key_secret()));
        let agent = new_agent_id();
        assert_eq!(agent.len(), "agent_".len() + 16);
        assert!(is_lower_hex(&agent["agent_".len()..]));
        assert_eq!(new_call_id().len(), "call_".len() + 24);
        assert_ne!(new_key_secret(), new_key_secret());
    }

    #[test]
    fn key_shapes_reject_near_misses() {
        assert!(!is_key_id("nxf_A1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"));
        assert!(!is_key_id("nxf_a1b2"));
        assert!(!is_key_id("nxfs_a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"));
        assert!(is_key_id("nxf_a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"));
        assert!(!is_key_secret("nxfs_"));
    }
}
