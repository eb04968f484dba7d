//! One module per resource; each exposes `router()`.

pub(crate) mod account_providers;
pub(crate) mod agents;
pub(crate) mod callers;
pub(crate) mod calls;
pub(crate) mod campaigns;
pub(crate) mod catalog;
pub(crate) mod health;
pub(crate) mod integrations;
pub mod keys;
pub(crate) mod numbers;
pub(crate) mod outbound;
pub(crate) mod pending;
pub(crate) mod recordings;
pub(crate) mod sms;
pub(crate) mod sms_campaigns;
pub(crate) mod usage;
