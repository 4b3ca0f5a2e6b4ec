//! The CUDA backend (cargo feature `cuda`): generation on an NVIDIA GPU
//! through candle's CUDA kernels and candle-transformers' llama forward,
//! the GGUF's weights dequantized to f32 on the GPU (see `CudaModel::load`).
//!
//! What it covers, so far: llama-architecture GGUFs (SmolLM, TinyLlama,
//! Llama), base models only, one forward per sequence per engine step. The
//! tokenizer, chat template, sampling, stop strings and the engine's queue
//! are the CPU backend's, unchanged; only the forward moves. LoRA adapters,
//! Qwen2 files and batching several sequences into one GPU forward are CPU
//! only for now, and a request for them is refused with an error that says
//! so. Build it with `scripts/cuda-build` (CUDA's compiler from PyPI; see
//! there).

use crate::error::{Result, RuntimeError};
use candle_core::quantized::{GgmlDType, gguf_file};
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use std::path::Path;

/// A model's weights on one GPU.
pub struct CudaModel {
    weights: ModelWeights,
    device: Device,
}

/// One sequence on the GPU: a handle on the shared weights that holds the
/// sequence's own KV cache, and how many positions it holds.
pub struct CudaSeq {
    model: ModelWeights,
    pos: usize,
}

impl CudaModel {
    /// Loads `path` onto GPU `ordinal`.
    pub fn load(path: &Path, ordinal: usize) -> Result<CudaModel> {
        let device = Device::new_cuda(ordinal)?;
        let mut file = std::fs::File::open(path)?;
        let content = gguf_file::Content::read(&mut file).map_err(|e| e.with_path(path))?;
        let arch = content.metadata.get("general.architecture").and_then(|v| v.to_string().ok()).cloned();
        if arch.as_deref() != Some("llama") {
            return Err(RuntimeError::Request(format!(
                "{}: the CUDA backend runs llama-architecture files only (this one is {}); use --device cpu",
                path.display(),
                arch.as_deref().unwrap_or("unnamed")
            )));
        }
        // The weights go to the GPU dequantized (f32): candle's quantized
        // CUDA matmul rounds the activations to 8 bits, as llama.cpp does,
        // and on the default 135M model that turned "The capital of France
        // is Paris." into French nonsense (`examples/cuda_check.rs` on an
        // H200). A GGUF in memory whose tensors are f32 makes
        // candle-transformers keep plain f32 matrices.
        let mut data: Vec<u8> = Vec::new();
        let mut infos = std::collections::HashMap::new();
        for (name, info) in &content.tensor_infos {
            let values = info
                .read(&mut file, content.tensor_data_offset, &Device::Cpu)?
                .dequantize(&Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let offset = data.len() as u64;
            data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
            let shape = info.shape.clone();
            infos.insert(name.clone(), gguf_file::TensorInfo { ggml_dtype: GgmlDType::F32, shape, offset });
        }
        let dense = gguf_file::Content {
            magic: content.magic,
            metadata: content.metadata,
            tensor_infos: infos,
            tensor_data_offset: 0,
        };
        let weights = ModelWeights::from_gguf(dense, &mut std::io::Cursor::new(data), &device)?;
        Ok(CudaModel { weights, device })
    }

    /// A new, empty sequence (the weights are shared, not copied).
    pub fn new_seq(&self) -> CudaSeq {
        CudaSeq { model: self.weights.clone(), pos: 0 }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }
}

impl CudaSeq {
    /// Appends `tokens` to the sequence and returns the logits after the
    /// last of them.
    pub fn forward(&mut self, tokens: &[u32], device: &Device) -> Result<Vec<f32>> {
        let input = Tensor::new(tokens, device)?.unsqueeze(0)?;
        let logits = self.model.forward(&input, self.pos)?;
        self.pos += tokens.len();
        Ok(logits.squeeze(0)?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
    }
}
