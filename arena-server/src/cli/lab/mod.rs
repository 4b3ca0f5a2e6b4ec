//! The lab: commands that measure or experiment rather than operate —
//! benchmarks (each beside its peer where one exists: pgbench, COPY,
//! llama.cpp, TRL), the abuse flood, and the closed-loop experiments. Each
//! bench that needs a database makes a throwaway one (`scratch_db`).

pub mod abuse;
pub mod audit_bench;
pub mod common;
pub mod control_plane;
pub mod experiment;
pub mod export_bench;
pub mod games;
pub mod model_bench;
pub mod pages;
pub mod scratch_db;
pub mod train_bench;
pub mod vote_sim;
