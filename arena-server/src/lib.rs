//! The Arena server: configuration, the HTTP application (API, pages,
//! health and metrics), and the `arena` command line's subcommands.
//!
//! This crate never touches tensors: model work goes through
//! `agent-runtime`'s request/response interface.

pub mod adapters;
pub mod admin_cli;
pub mod auth;
pub mod bench_cli;
pub mod cli;
pub mod config;
pub mod db;
pub mod doctor;
pub mod domain;
pub mod error;
pub mod events;
pub mod experiment_cli;
pub mod health;
pub mod judge_cli;
pub mod kv;
pub mod leaderboard;
pub mod ledger;
pub mod matchmaking;
pub mod metrics;
pub mod model_cli;
pub mod pipeline;
pub mod rating;
pub mod routes;
pub mod space;
pub mod space_store;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod train_cli;
pub mod training;
