//! Secrets at rest (docs/decisions.md#secrets-at-rest): API key secrets are verified against a SHA-256 hash with a
//! constant-time comparison, and also kept AEAD-encrypted under the server's master key, because
//! webhooks are signed with the raw secret. Carrier tokens and provider keys use the same box.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Version prefix of sealed values, so the format can evolve.
const SEALED_PREFIX: &str = "v1:";

/// Errors of the secret box.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// The master key is not 32 bytes of base64 or hex.
    #[error("the master key must be 32 bytes, given as 64 hex characters or base64")]
    BadMasterKey,
    /// A sealed value is malformed or was sealed under another key.
    #[error("a sealed secret could not be opened (wrong master key or corrupted value)")]
    Unseal,
}

/// AEAD (XChaCha20-Poly1305) under the server master key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
    /// The key of [`SecretBox::sign`]: derived from the master key, never the key itself.
    signing: [u8; 32],
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox([redacted])")
    }
}

impl SecretBox {
    /// A box from a 32-byte key.
    pub fn new(key: &[u8; 32]) -> Self {
        let mut derive = Sha256::new();
        derive.update(b"nixflex signing key v1\0");
        derive.update(key);
        Self { cipher: XChaCha20Poly1305::new(key.into()), signing: derive.finalize().into() }
    }

    /// A tag over `message` that only the holder of the master key can make (HMAC-SHA256 under
    /// a key derived from it), hex: signed, expiring URLs (docs/recordings.md#recording-urls).
    pub fn sign(&self, message: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.signing)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(message.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether `tag` is [`SecretBox::sign`] of `message` (constant time).
    pub fn verify_signed(&self, message: &str, tag: &str) -> bool {
        let expected = self.sign(message);
        expected.len() == tag.len() && bool::from(expected.as_bytes().ct_eq(tag.as_bytes()))
    }

    /// Parses a master key given as 64 hex characters or as base64 of 32 bytes.
    ///
    /// # Errors
    /// [`CryptoError::BadMasterKey`] when it decodes to anything but 32 bytes.
    pub fn from_encoded(encoded: &str) -> Result<Self, CryptoError> {
        let encoded = encoded.trim();
        let bytes = if encoded.len() == 64 && encoded.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(encoded).map_err(|_| CryptoError::BadMasterKey)?
        } else {
            B64.decode(encoded).map_err(|_| CryptoError::BadMasterKey)?
        };
        let key: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::BadMasterKey)?;
        Ok(Self::new(&key))
    }

    /// A fresh random master key, hex-encoded.
    pub fn generate_encoded() -> String {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        hex::encode(key)
    }

    /// Encrypts `plaintext` with a random nonce: `v1:` + base64(nonce ‖ ciphertext).
    pub fn seal(&self, plaintext: &str) -> String {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        // Encryption with a valid key and nonce length cannot fail for in-memory buffers.
        let ciphertext = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plaintext.as_bytes())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(nonce.len() + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        format!("{SEALED_PREFIX}{}", B64.encode(out))
    }

    /// Decrypts a value made by [`SecretBox::seal`].
    ///
    /// # Errors
    /// [`CryptoError::Unseal`] when the value is malformed or was sealed under another key.
    pub fn open(&self, sealed: &str) -> Result<String, CryptoError> {
        let raw = sealed.strip_prefix(SEALED_PREFIX).ok_or(CryptoError::Unseal)?;
        let bytes = B64.decode(raw).map_err(|_| CryptoError::Unseal)?;
        if bytes.len() < 24 + 16 {
            return Err(CryptoError::Unseal);
        }
        let (nonce, ciphertext) = bytes.split_at(24);
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), ciphertext)
            .map_err(|_| CryptoError::Unseal)?;
        String::from_utf8(plain).map_err(|_| CryptoError::Unseal)
    }
}

/// SHA-256 hex of a high-entropy secret (no salt needed: secrets are 256 random bits).
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Constant-time check of `secret` against a stored [`hash_secret`] value.
pub fn verify_secret(secret: &str, stored_hash: &str) -> bool {
    hashes_match(&hash_secret(secret), stored_hash)
}

/// Constant-time comparison of a secret's [`hash_secret`] value, computed already, with a
/// stored one.
pub fn hashes_match(computed_hash: &str, stored_hash: &str) -> bool {
    computed_hash.as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_with_the_same_key_only() {
        let key = SecretBox::generate_encoded();
        let sbox = SecretBox::from_encoded(&key).unwrap();
        let sealed = sbox.seal("nxfs_secret");
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("nxfs_secret"));
        assert_eq!(sbox.open(&sealed).unwrap(), "nxfs_secret");
        assert_ne!(sbox.seal("nxfs_secret"), sealed, "nonces are random");

        let other = SecretBox::from_encoded(&SecretBox::generate_encoded()).unwrap();
        assert_eq!(other.open(&sealed), Err(CryptoError::Unseal));
        assert_eq!(sbox.open("v1:AAAA"), Err(CryptoError::Unseal));
        assert_eq!(sbox.open("garbage"), Err(CryptoError::Unseal));

        let tag = sbox.sign("call_1:1700000000");
        assert!(sbox.verify_signed("call_1:1700000000", &tag));
        assert!(!sbox.verify_signed("call_1:1700000001", &tag));
        assert!(!other.verify_signed("call_1:1700000000", &tag), "another master key");
        assert!(!sbox.verify_signed("call_1:1700000000", &tag[..10]));
    }

    #[test]
    fn master_keys_parse_from_hex_or_base64_of_32_bytes() {
        assert!(SecretBox::from_encoded(&"ab".repeat(32)).is_ok());
        assert!(SecretBox::from_encoded(&B64.encode([7u8; 32])).is_ok());
        assert_eq!(SecretBox::from_encoded("short").unwrap_err(), CryptoError::BadMasterKey);
        assert!(SecretBox::from_encoded(&B64.encode([7u8; 16])).is_err());
    }

    #[test]
    fn secrets_verify_against_their_hash_only() {
        let h = hash_secret("nxfs_abc");
        assert!(verify_secret("nxfs_abc", &h));
        assert!(!verify_secret("nxfs_abd", &h));
        assert!(!verify_secret("", &h));
        assert!(hashes_match(&hash_secret("nxfs_abc"), &h));
        assert!(!hashes_match(&hash_secret("nxfs_abd"), &h));
        assert!(!hashes_match("", &h));
    }
}
