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
    Adapter(#[from] AdapterError),
    #[error(transparent)]
    ModelFile(#[from] crate::model_file::ModelFileError),
    #[error("{0}")]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// What is wrong with an adapter (the PEFT layout's files), naming the
/// file and, where it applies, the tensor.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Weights { path: PathBuf, message: String },
    #[error("{path}: tensor `{tensor}` {message}")]
    Tensor { path: PathBuf, tensor: String, message: String },
}
