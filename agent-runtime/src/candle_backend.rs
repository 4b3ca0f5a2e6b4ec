//! The llama-family forward in candle tensor operations, for generation on
//! a GPU ([`crate::Backend::Cuda`], cargo feature `cuda`); on candle's CPU
//! device the same code is what the tests compare with this crate's own
//! kernels.
//!
//! The GGUF's weights are dequantized to f32 once, at load (candle's
//! quantized CUDA matmul rounds the activations to 8 bits, as llama.cpp
//! does, and on the default 135M model that turned "The capital of France
//! is Paris." into French nonsense). LoRA adapters apply unmerged, per
//! sequence: `x·Aᵀ·Bᵀ·scale` beside each covered projection, with the
//! factors copied to the device once per adapter. Each sequence runs its own
//! forward on its own KV cache.

use crate::error::{Result, RuntimeError};
use crate::gguf::{Gguf, ModelConfig};
use crate::lora::Adapter;
use crate::model::Target;
use candle_core::{DType, Device, IndexOp, Tensor};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Adapters whose factors stay on the device (least recently used leave).
const ADAPTERS_KEPT: usize = 64;

struct Layer {
    attn_norm: Tensor,
    ffn_norm: Tensor,
    /// `Wᵀ` (`[in × out]`) per target, and the q/k/v biases (Qwen2).
    w: HashMap<Target, Tensor>,
    bias: HashMap<Target, Tensor>,
}

/// A model's weights on one candle device.
pub struct CandleModel {
    config: ModelConfig,
    device: Device,
    embed: Tensor,
    /// `[hidden × vocab]`.
    head: Tensor,
    output_norm: Tensor,
    layers: Vec<Layer>,
    cos: Tensor,
    sin: Tensor,
    interleaved: bool,
    /// Adapters' factors on the device, by sha256, with a use counter.
    adapters: Mutex<DeviceAdapters>,
}

/// A use counter and, by sha256, each adapter on the device with the count
/// at its last use (the least recently used goes first).
type DeviceAdapters = (u64, HashMap<String, (u64, Arc<DeviceAdapter>)>);

/// One adapter's factors on the device: per layer and target `Aᵀ`
/// (`[in × r]`) and `Bᵀ·scale` (`[r × out]`).
pub struct DeviceAdapter {
    layers: Vec<HashMap<Target, (Tensor, Tensor)>>,
}

/// One sequence: its KV cache (per layer, `[1, kv_heads, positions, hd]`
/// for keys and values) and its adapter.
pub struct CandleSeq {
    cache: Vec<Option<(Tensor, Tensor)>>,
    pos: usize,
    adapter: Option<Arc<DeviceAdapter>>,
}

impl CandleModel {
    /// Loads the model in `gguf` onto `device`.
    pub fn load(gguf: &mut Gguf, device: Device) -> Result<CandleModel> {
        let c = gguf.config()?;
        // `[rows × cols]` in the file, `Wᵀ` on the device.
        let matrix = |gguf: &mut Gguf, name: &str, rows: usize, cols: usize| -> Result<Tensor> {
            Ok(Tensor::from_vec(gguf.f32s(name)?, (rows, cols), &device)?.t()?.contiguous()?)
        };
        let vector = |gguf: &mut Gguf, name: &str, n: usize| -> Result<Tensor> {
            Ok(Tensor::from_vec(gguf.f32s(name)?, n, &device)?)
        };
        let (q_dim, kv_dim) = (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
        let mut layers = Vec::with_capacity(c.n_layers);
        for l in 0..c.n_layers {
            let p = format!("blk.{l}.");
            let mut w = HashMap::new();
            for target in Target::ALL {
                let (out, inp) = target.shape(&c);
                w.insert(target, matrix(gguf, &format!("{p}{}.weight", gguf_name(target)), out, inp)?);
            }
            let mut bias = HashMap::new();
            if c.qkv_bias {
                for (target, n) in [(Target::Q, q_dim), (Target::K, kv_dim), (Target::V, kv_dim)] {
                    bias.insert(target, vector(gguf, &format!("{p}{}.bias", gguf_name(target)), n)?);
                }
            }
            layers.push(Layer {
                attn_norm: vector(gguf, &format!("{p}attn_norm.weight"), c.hidden)?,
                ffn_norm: vector(gguf, &format!("{p}ffn_norm.weight"), c.hidden)?,
                w,
                bias,
            });
        }
        let embed = Tensor::from_vec(gguf.f32s("token_embd.weight")?, (c.vocab, c.hidden), &device)?;
        let head = if c.tied_embeddings {
            embed.t()?.contiguous()?
        } else {
            matrix(gguf, "output.weight", c.vocab, c.hidden)?
        };
        let output_norm = vector(gguf, "output_norm.weight", c.hidden)?;
        let positions = c.context_length.clamp(1, 1 << 15);
        let (cos, sin) = crate::model::rope_tables(&c, positions);
        let half = c.head_dim / 2;
        Ok(CandleModel {
            cos: Tensor::from_vec(cos, (positions, half), &device)?,
            sin: Tensor::from_vec(sin, (positions, half), &device)?,
            interleaved: c.architecture != "qwen2",
            config: c,
            device,
            embed,
            head,
            output_norm,
            layers,
            adapters: Mutex::new((0, HashMap::new())),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A new, empty sequence, with `adapter`'s factors on the device.
    pub fn new_seq(&self, adapter: Option<&Adapter>) -> Result<CandleSeq> {
        let adapter = match adapter {
            Some(a) => Some(self.device_adapter(a)?),
            None => None,
        };
        Ok(CandleSeq { cache: vec![None; self.config.n_layers], pos: 0, adapter })
    }

    fn device_adapter(&self, adapter: &Adapter) -> Result<Arc<DeviceAdapter>> {
        let mut guard = self.adapters.lock().unwrap_or_else(|p| p.into_inner());
        let (clock, kept) = &mut *guard;
        *clock += 1;
        if let Some((used, a)) = kept.get_mut(&adapter.sha256) {
            *used = *clock;
            return Ok(a.clone());
        }
        let c = &self.config;
        let mut layers = Vec::with_capacity(c.n_layers);
        for l in 0..c.n_layers {
            let mut targets = HashMap::new();
            for target in Target::ALL {
                if let Some(pair) = adapter.pair(l, target) {
                    let (out, inp) = target.shape(c);
                    let r = adapter.rank;
                    let at = Tensor::from_vec(pair.a, (r, inp), &self.device)?.t()?.contiguous()?;
                    let bt = (Tensor::from_vec(pair.b, (out, r), &self.device)?.t()?.contiguous()?
                        * f64::from(adapter.scale))?;
                    targets.insert(target, (at, bt));
                }
            }
            layers.push(targets);
        }
        let a = Arc::new(DeviceAdapter { layers });
        if kept.len() >= ADAPTERS_KEPT
            && let Some(oldest) = kept.iter().min_by_key(|(_, (used, _))| *used).map(|(k, _)| k.clone())
        {
            kept.remove(&oldest);
        }
        kept.insert(adapter.sha256.clone(), (*clock, a.clone()));
        Ok(a)
    }

    /// Appends `tokens` to `seq` and returns the logits after the last one.
    pub fn forward(&self, seq: &mut CandleSeq, tokens: &[u32]) -> Result<Vec<f32>> {
        let c = &self.config;
        let t = tokens.len();
        if t == 0 || seq.pos + t > self.cos.dim(0)? {
            return Err(RuntimeError::Request(format!(
                "{} tokens at position {} do not fit the context of {}",
                t,
                seq.pos,
                self.cos.dim(0)?
            )));
        }
        let (hd, heads, kv_heads) = (c.head_dim, c.n_heads, c.n_kv_heads);
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.embed.index_select(&ids, 0)?;
        let cos = self.cos.narrow(0, seq.pos, t)?;
        let sin = self.sin.narrow(0, seq.pos, t)?;
        let (start, total) = (seq.pos, seq.pos + t);
        // Row i (position start + i) sees keys up to start + i.
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| (0..total).map(move |j| if j <= start + i { 0.0 } else { f32::NEG_INFINITY }))
            .collect();
        let mask = Tensor::from_vec(mask, (t, total), &self.device)?;
        for (l, layer) in self.layers.iter().enumerate() {
            let lora = seq.adapter.as_ref().map(|a| &a.layers[l]);
            let proj = |h: &Tensor, target: Target| -> Result<Tensor> {
                let mut y = h.matmul(&layer.w[&target])?;
                if let Some(b) = layer.bias.get(&target) {
                    y = y.broadcast_add(b)?;
                }
                if let Some((at, bt)) = lora.and_then(|m| m.get(&target)) {
                    y = (y + h.matmul(at)?.matmul(bt)?)?;
                }
                Ok(y)
            };
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, c.rms_eps)?;
            let shape = |y: Tensor, n: usize| y.reshape((1, t, n, hd))?.transpose(1, 2)?.contiguous();
            let q = shape(proj(&h, Target::Q)?, heads)?;
            let k = shape(proj(&h, Target::K)?, kv_heads)?;
            let v = shape(proj(&h, Target::V)?, kv_heads)?;
            let (q, k) = if self.interleaved {
                (candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?, candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?)
            } else {
                (candle_nn::rotary_emb::rope(&q, &cos, &sin)?, candle_nn::rotary_emb::rope(&k, &cos, &sin)?)
            };
            let (k, v) = match seq.cache[l].take() {
                Some((ck, cv)) => (Tensor::cat(&[&ck, &k], 2)?, Tensor::cat(&[&cv, &v], 2)?),
                None => (k, v),
            };
            seq.cache[l] = Some((k.clone(), v.clone()));
            // Grouped-query attention: each KV head serves `group` query heads.
            let group = heads / kv_heads;
            let widen = |x: &Tensor| -> candle_core::Result<Tensor> {
                x.unsqueeze(2)?.expand((1, kv_heads, group, total, hd))?.reshape((1, heads, total, hd))
            };
            let (k, v) = (widen(&k)?, widen(&v)?);
            let scores = (q.matmul(&k.t()?.contiguous()?)? / (hd as f64).sqrt())?.broadcast_add(&mask)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let attn = probs.matmul(&v)?.transpose(1, 2)?.reshape((t, heads * hd))?;
            x = (x + proj(&attn, Target::O)?)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, c.rms_eps)?;
            let gate = proj(&h, Target::Gate)?;
            let up = proj(&h, Target::Up)?;
            x = (x + proj(&(gate.silu()? * up)?, Target::Down)?)?;
        }
        seq.pos = total;
        let last = x.i(t - 1)?.unsqueeze(0)?;
        let last = candle_nn::ops::rms_norm(&last, &self.output_norm, c.rms_eps)?;
        Ok(last.matmul(&self.head)?.squeeze(0)?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
    }
}

/// GGUF's tensor name for a target.
fn gguf_name(target: Target) -> &'static str {
    match target {
        Target::Q => "attn_q",
        Target::K => "attn_k",
        Target::V => "attn_v",
        Target::O => "attn_output",
        Target::Gate => "ffn_gate",
        Target::Up => "ffn_up",
        Target::Down => "ffn_down",
    }
}
