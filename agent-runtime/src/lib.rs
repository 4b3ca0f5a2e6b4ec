//! The model side of Arena: GGUF model files, tokenizer, chat templates, the
//! quantized llama-family forward with per-sequence LoRA adapters, batched
//! sampling and adapter training.
//!
//! The arena server never touches tensors: it talks to this crate through a
//! request/response interface (a bounded queue with a reply channel per
//! request). This crate does no networking and knows nothing of PostgreSQL or
//! Redis.

pub mod model_file;
