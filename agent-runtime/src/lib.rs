//! The model side of Arena: GGUF model files, tokenizer, chat templates, the
//! quantized llama-family forward with per-sequence LoRA adapters, batched
//! sampling and adapter training.
//!
//! The arena server never touches tensors: it talks to this crate through
//! [`engine::Engine`], a bounded queue with a reply channel per request.
//! This crate does no networking and knows nothing of PostgreSQL or Redis.

pub mod audit;
pub mod bench;
pub mod candle_backend;
pub mod chat;
pub mod engine;
pub mod error;
pub mod gguf;
pub mod lora;
pub mod model;
pub mod model_file;
pub mod pool;
pub mod prefix;
pub mod quant;
pub mod sampling;
pub mod tokenizer;
pub mod train;

/// This crate's version: part of a rollout's identity (what the exact
/// audit tier replays with).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub use engine::{Backend, Completion, Engine, EngineConfig, Finish, Prompt, Request, Runtime, SubmitError};
pub use error::{Result, RuntimeError};
