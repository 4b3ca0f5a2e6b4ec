//! Reading a GGUF file: the header and metadata through candle's parser, the
//! model's shape from the metadata, and tensors by name.

use crate::error::{Result, RuntimeError};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

/// An open GGUF file: parsed metadata and the means to read tensors.
pub struct Gguf {
    pub path: PathBuf,
    pub content: Content,
    reader: BufReader<File>,
}

/// The shape of a llama-family model, from the GGUF metadata.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelConfig {
    pub architecture: String,
    pub name: Option<String>,
    pub n_layers: usize,
    pub hidden: usize,
    pub ffn: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub context_length: usize,
    pub rope_base: f32,
    pub rms_eps: f32,
    /// No `output.weight`: logits come from the token embedding.
    pub tied_embeddings: bool,
    /// Query/key/value projections carry a bias (Qwen2).
    pub qkv_bias: bool,
}

impl Gguf {
    pub fn open(path: &Path) -> Result<Gguf> {
        crate::model_file::check_gguf_header(path)?;
        let file = File::open(path)?;
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader)
            .map_err(|e| RuntimeError::Gguf { path: path.to_owned(), message: format!("cannot parse GGUF: {e}") })?;
        Ok(Gguf { path: path.to_owned(), content, reader })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    fn missing(&self, key: &str, problem: &str) -> RuntimeError {
        RuntimeError::Metadata { path: self.path.clone(), key: key.to_owned(), problem: problem.to_owned() }
    }

    pub fn string(&self, key: &str) -> Result<&str> {
        match self.get(key) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(self.missing(key, "is not a string")),
            None => Err(self.missing(key, "is missing")),
        }
    }

    /// An unsigned integer of any width.
    pub fn uint(&self, key: &str) -> Result<u64> {
        let value = self.get(key).ok_or_else(|| self.missing(key, "is missing"))?;
        let n = match value {
            Value::U8(v) => u64::from(*v),
            Value::U16(v) => u64::from(*v),
            Value::U32(v) => u64::from(*v),
            Value::U64(v) => *v,
            Value::I8(v) if *v >= 0 => *v as u64,
            Value::I16(v) if *v >= 0 => *v as u64,
            Value::I32(v) if *v >= 0 => *v as u64,
            Value::I64(v) if *v >= 0 => *v as u64,
            _ => return Err(self.missing(key, "is not a non-negative integer")),
        };
        Ok(n)
    }

    pub fn float(&self, key: &str) -> Result<f32> {
        match self.get(key) {
            Some(Value::F32(v)) => Ok(*v),
            Some(Value::F64(v)) => Ok(*v as f32),
            Some(_) => Err(self.missing(key, "is not a float")),
            None => Err(self.missing(key, "is missing")),
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> bool {
        match self.get(key) {
            Some(Value::Bool(b)) => *b,
            _ => default,
        }
    }

    pub fn strings(&self, key: &str) -> Result<Vec<&str>> {
        match self.get(key) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.as_str()),
                    _ => Err(self.missing(key, "holds a non-string")),
                })
                .collect(),
            Some(_) => Err(self.missing(key, "is not an array")),
            None => Err(self.missing(key, "is missing")),
        }
    }

    pub fn ints(&self, key: &str) -> Result<Vec<i64>> {
        match self.get(key) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::I32(x) => Ok(i64::from(*x)),
                    Value::U32(x) => Ok(i64::from(*x)),
                    Value::I8(x) => Ok(i64::from(*x)),
                    Value::U8(x) => Ok(i64::from(*x)),
                    Value::I64(x) => Ok(*x),
                    _ => Err(self.missing(key, "holds a non-integer")),
                })
                .collect(),
            Some(_) => Err(self.missing(key, "is not an array")),
            None => Err(self.missing(key, "is missing")),
        }
    }

    pub fn floats(&self, key: &str) -> Result<Vec<f32>> {
        match self.get(key) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::F32(x) => Ok(*x),
                    _ => Err(self.missing(key, "holds a non-float")),
                })
                .collect(),
            Some(_) => Err(self.missing(key, "is not an array")),
            None => Err(self.missing(key, "is missing")),
        }
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// The tensor's dtype and dims (GGUF order reversed: rows first).
    pub fn tensor_info(&self, name: &str) -> Option<(GgmlDType, Vec<usize>)> {
        self.content.tensor_infos.get(name).map(|info| (info.ggml_dtype, info.shape.dims().to_vec()))
    }

    pub fn tensor(&mut self, name: &str) -> Result<QTensor> {
        if !self.has_tensor(name) {
            return Err(RuntimeError::Tensor {
                path: self.path.clone(),
                name: name.to_owned(),
                problem: "is missing".to_owned(),
            });
        }
        self.content.tensor(&mut self.reader, name, &candle_core::Device::Cpu).map_err(|e| RuntimeError::Tensor {
            path: self.path.clone(),
            name: name.to_owned(),
            problem: format!("cannot be read: {e}"),
        })
    }

    /// The tensor's stored bytes, as laid out in the file.
    pub fn raw(&mut self, name: &str) -> Result<(GgmlDType, Vec<usize>, Vec<u8>)> {
        use std::io::{Read, Seek, SeekFrom};
        let info = self.content.tensor_infos.get(name).ok_or_else(|| RuntimeError::Tensor {
            path: self.path.clone(),
            name: name.to_owned(),
            problem: "is missing".to_owned(),
        })?;
        let dtype = info.ggml_dtype;
        let dims = info.shape.dims().to_vec();
        let elements: usize = dims.iter().product();
        if !elements.is_multiple_of(dtype.block_size()) {
            return Err(RuntimeError::Tensor {
                path: self.path.clone(),
                name: name.to_owned(),
                problem: format!("has {elements} elements, not a multiple of its block size {}", dtype.block_size()),
            });
        }
        let size = elements / dtype.block_size() * dtype.type_size();
        let start = self.content.tensor_data_offset + info.offset;
        let mut bytes = vec![0u8; size];
        self.reader.seek(SeekFrom::Start(start))?;
        self.reader.read_exact(&mut bytes).map_err(|e| RuntimeError::Tensor {
            path: self.path.clone(),
            name: name.to_owned(),
            problem: format!("cannot be read ({size} bytes at offset {start}): {e}"),
        })?;
        Ok((dtype, dims, bytes))
    }

    /// The tensor dequantized to f32, flattened.
    pub fn f32s(&mut self, name: &str) -> Result<Vec<f32>> {
        let t = self.tensor(name)?.dequantize(&candle_core::Device::Cpu)?;
        Ok(t.flatten_all()?.to_vec1::<f32>()?)
    }

    /// The model's shape, checked for consistency with the tensors.
    pub fn config(&self) -> Result<ModelConfig> {
        let arch = self.string("general.architecture")?.to_owned();
        if !matches!(arch.as_str(), "llama" | "qwen2") {
            return Err(RuntimeError::UnsupportedArchitecture { path: self.path.clone(), architecture: arch });
        }
        let key = |k: &str| format!("{arch}.{k}");
        let hidden = self.uint(&key("embedding_length"))? as usize;
        let n_heads = self.uint(&key("attention.head_count"))? as usize;
        let n_kv_heads = self.uint(&key("attention.head_count_kv")).map(|v| v as usize).unwrap_or(n_heads);
        if n_heads == 0 || !hidden.is_multiple_of(n_heads) || n_kv_heads == 0 || !n_heads.is_multiple_of(n_kv_heads) {
            return Err(self.missing(
                &key("attention.head_count"),
                &format!("({n_heads} heads, {n_kv_heads} kv heads) does not divide hidden size {hidden}"),
            ));
        }
        let vocab = match self.tensor_info("token_embd.weight") {
            Some((_, dims)) if dims.len() == 2 && dims[1] == hidden => dims[0],
            Some((_, dims)) => {
                return Err(RuntimeError::Tensor {
                    path: self.path.clone(),
                    name: "token_embd.weight".to_owned(),
                    problem: format!("has shape {dims:?}, expected [vocab, {hidden}]"),
                });
            }
            None => {
                return Err(RuntimeError::Tensor {
                    path: self.path.clone(),
                    name: "token_embd.weight".to_owned(),
                    problem: "is missing".to_owned(),
                });
            }
        };
        Ok(ModelConfig {
            name: self.string("general.name").ok().map(str::to_owned),
            n_layers: self.uint(&key("block_count"))? as usize,
            hidden,
            ffn: self.uint(&key("feed_forward_length"))? as usize,
            n_heads,
            n_kv_heads,
            head_dim: hidden / n_heads,
            vocab,
            context_length: self.uint(&key("context_length")).map(|v| v as usize).unwrap_or(2048),
            rope_base: self.float(&key("rope.freq_base")).unwrap_or(10_000.0),
            rms_eps: self.float(&key("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5),
            tied_embeddings: !self.has_tensor("output.weight"),
            qkv_bias: self.has_tensor("blk.0.attn_q.bias"),
            architecture: arch,
        })
    }
}

/// Which linear layer an adapter's weights belong to (PEFT module names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Target {
    pub const ALL: [Target; 7] = [Target::Q, Target::K, Target::V, Target::O, Target::Gate, Target::Up, Target::Down];

    /// The PEFT module name (`q_proj`, …).
    pub fn module(self) -> &'static str {
        match self {
            Target::Q => "q_proj",
            Target::K => "k_proj",
            Target::V => "v_proj",
            Target::O => "o_proj",
            Target::Gate => "gate_proj",
            Target::Up => "up_proj",
            Target::Down => "down_proj",
        }
    }

    pub fn from_module(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.module() == name)
    }

    /// `(out_features, in_features)` of the layer in this model.
    pub fn shape(self, c: &ModelConfig) -> (usize, usize) {
        let kv = c.n_kv_heads * c.head_dim;
        match self {
            Target::Q => (c.n_heads * c.head_dim, c.hidden),
            Target::K | Target::V => (kv, c.hidden),
            Target::O => (c.hidden, c.n_heads * c.head_dim),
            Target::Gate | Target::Up => (c.ffn, c.hidden),
            Target::Down => (c.hidden, c.ffn),
        }
    }
}
