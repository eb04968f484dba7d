//! One module per resource; each exposes `router()`.

pub(crate) mod agents;
pub(crate) mod catalog;
pub(crate) mod health;
pub mod keys;
pub(crate) mod pending;
