//! The `nixflex` binary's library: configuration, the composition root, the admin commands and
//! the benchmarks. `main.rs` only parses the command line.

pub mod bench;
pub mod campaigns;
pub mod config;
pub mod followups;
pub mod jobs;
pub mod listener;
pub mod metrics;
pub mod recording_jobs;
pub mod server;
