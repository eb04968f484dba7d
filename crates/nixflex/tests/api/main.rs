#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![recursion_limit = "256"]
#![allow(unreachable_pub)]
//! API tests through real HTTP on loopback, each on SQLite and on PostgreSQL.

mod helpers;

mod account_providers;
mod agents;
mod auth;
mod callers;
mod calls;
mod campaigns;
mod carrier;
mod carrier_recordings;
mod connections;
mod cross_cutting;
mod engine;
mod fuzz;
mod idempotency;
mod input;
mod integrations;
mod key_cache;
mod keys;
mod metrics;
mod numbers;
mod openapi;
mod outages;
mod outbound;
mod rate_limits;
mod recordings;
mod sms;
mod sms_campaigns;
mod transfers;
mod turn_taking;
mod usage;
