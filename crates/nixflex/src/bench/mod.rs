//! Benchmarks that drive a separately running server (numbers go in notes, never in tests).

pub mod api;
pub mod calls;
pub mod campaign;
pub mod jobs;
pub mod outages;
pub mod sms;
pub mod turns;
