//! End-to-end tests: the real application and the real `arena` binary
//! against real PostgreSQL and Redis and the real model file. Run them with
//! `scripts/test`, which starts those services and exports DATABASE_URL,
//! REDIS_URL and ARENA_MODEL_PATH.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod api;
mod arena;
mod browser;
mod cli;
mod data;
mod games;
mod hardening;
mod health;
mod helpers;
mod ledger;
mod matrix;
mod metrics;
mod pipeline;
mod studio;
mod training;
mod votes;
mod workers;
