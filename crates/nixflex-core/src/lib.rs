//! Domain types, identifiers, validation, secrets and the error-code table.
//!
//! No I/O: no tokio, no HTTP, no SQL. Serialisation here is limited to what is the contract of a
//! stored document (agent settings) and JSON inputs validated field by field.

pub mod agent;
pub mod call;
pub mod caller;
pub mod catalog;
pub mod crypto;
pub mod error;
pub mod ids;
pub mod number;
pub mod phone;
pub mod sms;
pub mod validate;
pub mod window;
