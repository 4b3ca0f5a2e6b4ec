//! The Arena server: the HTTP application (API, pages, health and metrics),
//! the background work (matchmaker, pipeline stages, trainer), and the
//! `arena` command line.
//!
//! Rooms, lowest first; a room imports only rooms below it (the
//! `layering` test checks this on every build of the tests):
//!
//! | room | holds | imports |
//! | --- | --- | --- |
//! | `domain` | ids, statuses, parsed input, Space files, rules (pairing, payouts, ratings, record hash, gate) | nothing of the crate |
//! | `store` | all SQL: one file per aggregate, named row structs | `domain` |
//! | `queue` | Redis: the connection, streams, live events | `domain` |
//! | `context` | the one `Context` handlers and workers share, metrics registry | `domain`, `store`, `queue` |
//! | `work` | stages, matchmaker, relay, reconciler, trainer, policies on one stream runner | the above |
//! | `http` | route table, handlers, auth, `ApiError`, health, metrics | the above and `work` |
//! | `app` | `Application`: settings, telemetry, composition of the roles | everything but `cli` |
//! | `cli` | clap types and one file per command | everything |
//!
//! This crate never touches tensors: model work goes through
//! `agent-runtime`'s request/response interface.

pub mod app;
pub mod cli;
pub mod context;
pub mod domain;
pub mod http;
pub mod queue;
pub mod store;
pub mod work;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod layering;

/// Designers' referee scripts run with their memory metered: every program
/// built on this crate (the `arena` binary, its tests) counts a script
/// call's bytes so that the call can be stopped at its budget
/// (`referee::sandbox`).
#[global_allocator]
static ALLOC: referee::sandbox::MeteredAlloc = referee::sandbox::MeteredAlloc;
