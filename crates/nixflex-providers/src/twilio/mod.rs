//! Twilio: REST client and webhook signatures.
