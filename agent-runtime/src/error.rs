//! The runtime's error type: every variant names what is wrong and where.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{path}: {message}")]
    Gguf { path: PathBuf, message: String },
    #[error("{path}: GGUF metadata key `{key}` {problem}")]
    Metadata { path: PathBuf, key: String, problem: String },
    #[error("{path}: architecture `{architecture}` is not supported (supported: llama, qwen2)")]
    UnsupportedArchitecture { path: PathBuf, architecture: String },
    #[error("{path}: tensor `{name}` {problem}")]
    Tensor { path: PathBuf, name: String, problem: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    ChatTemplate(String),
    #[error("bad request: {0}")]
    Request(String),
    #[error(transparent)]
    Adapter(#[from] crate::lora::AdapterError),
    #[error(transparent)]
    ModelFile(#[from] crate::model_file::ModelFileError),
    #[error("{0}")]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
