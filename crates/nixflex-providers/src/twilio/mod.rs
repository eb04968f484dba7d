//! Twilio: REST client, webhook signatures and TwiML.
//!
//! - [`signature`]: computing and validating `X-Twilio-Signature` (docs/protocols.md#twilio-request-signature).
//! - [`twiml`]: the TwiML documents the engine answers webhooks with (docs/protocols.md#twiml).
//! - [`TwilioClient`]: the REST API v2010 operations the product needs (docs/protocols.md#twilio-rest-api),
//!   with per-call [`TwilioCredentials`] and a typed [`TwilioError`].
//!
//! This module knows Twilio's wire formats only: it stores nothing, knows no agent or call of
//! ours, and never logs an auth token. `nixflex-testkit`'s `TwilioEmulator` speaks the same REST
//! protocol for tests.

mod client;
mod error;
mod resources;
pub mod signature;
pub mod twiml;

pub use client::{DEFAULT_BASE_URL, TwilioClient, TwilioClientConfig, TwilioCredentials};
pub use error::{CODE_AUTHENTICATE, CODE_NOT_FOUND, CODE_TOO_MANY_REQUESTS, TwilioError};
pub use resources::{
    Call, CallStatus, CallStatusEvent, CallTarget, CallUpdateStatus, CreateCall, CreateMessage,
    CreateRecording, IncomingPhoneNumber, IncomingPhoneNumberFilter, IncomingPhoneNumberUpdate,
    MachineDetection, Message, MessageFilter, MessageStatus, PhoneNumberCapabilities, Recording,
    UpdateCall,
};
