//! The Arena server: configuration, the HTTP application (API, pages,
//! health and metrics), and the `arena` command line's subcommands.
//!
//! This crate never touches tensors: model work goes through
//! `agent-runtime`'s request/response interface.

pub mod cli;
pub mod config;
pub mod db;
pub mod doctor;
pub mod health;
pub mod judge_cli;
pub mod kv;
pub mod metrics;
pub mod model_cli;
pub mod space;
pub mod startup;
pub mod telemetry;
