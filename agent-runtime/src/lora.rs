//! LoRA adapters in the Hugging Face PEFT layout (`adapter_config.json` +
//! `adapter_model.safetensors`): validated before use, applied unmerged per
//! sequence, written back in the same layout, and cached by content.

use crate::gguf::ModelConfig;
use crate::gguf::Target;
use crate::quant::{QActs, QMatrix};
use half::f16;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// What an adapter may be: limits that bound the work and memory a hostile
/// file can cause.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_rank: usize,
    pub max_file_bytes: u64,
    pub max_header_bytes: u64,
    pub max_config_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_rank: 256, max_file_bytes: 1 << 30, max_header_bytes: 1 << 20, max_config_bytes: 1 << 16 }
    }
}

pub use crate::error::AdapterError;

/// `adapter_config.json`, the fields we read (PEFT writes many more).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoraConfig {
    #[serde(default = "lora_type")]
    pub peft_type: String,
    pub r: usize,
    pub lora_alpha: f32,
    pub target_modules: TargetModules,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default = "no_bias")]
    pub bias: String,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub lora_dropout: f32,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default = "causal_lm")]
    pub task_type: Option<String>,
}

fn lora_type() -> String {
    "LORA".to_owned()
}
fn no_bias() -> String {
    "none".to_owned()
}
fn causal_lm() -> Option<String> {
    Some("CAUSAL_LM".to_owned())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    List(Vec<String>),
    /// A regular expression over module names (PEFT allows it).
    Pattern(String),
}

/// One linear layer's low-rank pair: `A` is `[r × in]`, `B` is `[out × r]`.
#[derive(Clone)]
pub struct LoraPair {
    pub a: Vec<f32>,
    pub b: Vec<f32>,
}

/// Output columns whose `B` factors are stored together (see `Stored`).
pub const UP_COLS: usize = 64;

/// A pair as given (f32: what `pair` and `save` return, bit for bit), and
/// as the kernels read it. `A` is a Q8 matrix (`r` rows of `in`, int8 in
/// blocks of 32 with an f16 scale, as GGML's Q8_0), so the down-projection
/// runs the base model's integer kernel on the layer's already quantized
/// input. `B` is transposed and cut into blocks of [`UP_COLS`] output
/// columns, each `[r × UP_COLS]`, in f16, so the update of one block reads
/// one contiguous run (rows of the whole transposed `B` lay a page apart).
/// A batch of distinct adapters streams every one's factors each step;
/// these layouts are about a quarter and a half of f32's bytes. (An int8
/// `B` measured about 1% faster and tripled the error against the f32
/// merged weights; see the `the_unmerged_adapter_equals_merged_weights`
/// test.)
struct Stored {
    /// `A` `[r × in]` and `B` `[out × r]`, f32, as given.
    a: Vec<f32>,
    b: Vec<f32>,
    aq: QMatrix,
    bt16: Vec<f16>,
}

/// Batch rows that one LoRA task takes at a time (the kernel's rows per
/// pass over the weights).
pub const TILE_ROWS: usize = crate::quant::MAX_ROWS_PER_PASS;

/// Where `Bᵀ[j][n]` sits in the blocked copy.
fn up_at(rank: usize, j: usize, n: usize) -> usize {
    (n / UP_COLS) * rank * UP_COLS + j * UP_COLS + n % UP_COLS
}

impl Stored {
    fn new(pair: LoraPair, out_dim: usize, rank: usize) -> Stored {
        let in_dim = pair.a.len() / rank;
        let aq = QMatrix::quantize_q8(rank, in_dim, &pair.a);
        let mut bt = vec![0f32; out_dim.next_multiple_of(UP_COLS) * rank];
        for n in 0..out_dim {
            for j in 0..rank {
                bt[up_at(rank, j, n)] = pair.b[n * rank + j];
            }
        }
        let bt16 = bt.iter().map(|&v| f16::from_f32(v)).collect();
        Stored { a: pair.a, b: pair.b, aq, bt16 }
    }
}

pub struct Adapter {
    /// sha256 of the weights file and the config: the adapter's identity.
    pub sha256: String,
    pub rank: usize,
    pub alpha: f32,
    /// The factor on `B·A`: `alpha / r`, or `alpha / √r` with rsLoRA.
    pub scale: f32,
    pub use_rslora: bool,
    /// Per layer, per target.
    layers: Vec<BTreeMap<Target, Stored>>,
    dims: HashMap<Target, (usize, usize)>,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter").field("sha256", &self.sha256).field("rank", &self.rank).finish()
    }
}

/// PEFT's tensor name for a layer's target.
pub fn tensor_name(layer: usize, target: Target, which: char) -> String {
    let block = match target {
        Target::Q | Target::K | Target::V | Target::O => "self_attn",
        Target::Gate | Target::Up | Target::Down => "mlp",
    };
    format!("base_model.model.model.layers.{layer}.{block}.{}.lora_{which}.weight", target.module())
}

/// `(layer, target, 'A' | 'B')` of a PEFT tensor name.
fn parse_tensor_name(name: &str) -> Option<(usize, Target, char)> {
    let rest = name.strip_prefix("base_model.model.model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (block, rest) = rest.split_once('.')?;
    let (module, rest) = rest.split_once('.')?;
    let target = Target::from_module(module)?;
    let expected_block = if matches!(target, Target::Gate | Target::Up | Target::Down) { "mlp" } else { "self_attn" };
    if block != expected_block {
        return None;
    }
    let which = match rest {
        "lora_A.weight" | "lora_A.default.weight" => 'A',
        "lora_B.weight" | "lora_B.default.weight" => 'B',
        _ => return None,
    };
    Some((layer, target, which))
}

/// An adapter config as its identity sees it: the JSON with object keys
/// sorted and no whitespace, so the same settings written differently hash
/// (and are stored) alike. None when it is not JSON.
pub fn canonical_config(config: &[u8]) -> Option<Vec<u8>> {
    fn sorted(value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let map: BTreeMap<String, serde_json::Value> = map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
                serde_json::Value::Object(map.into_iter().collect())
            }
            serde_json::Value::Array(items) => serde_json::Value::Array(items.into_iter().map(sorted).collect()),
            other => other,
        }
    }
    let value: serde_json::Value = serde_json::from_slice(config).ok()?;
    serde_json::to_vec(&sorted(value)).ok()
}

impl Adapter {
    /// Reads and validates an adapter directory against `model`.
    pub fn load(dir: &Path, model: &ModelConfig, limits: &Limits) -> Result<Adapter, AdapterError> {
        let config_path = dir.join(CONFIG_FILE);
        let weights_path = dir.join(WEIGHTS_FILE);
        let config_bytes = read_limited(&config_path, limits.max_config_bytes)?;
        let config: LoraConfig = serde_json::from_slice(&config_bytes).map_err(|e| AdapterError::Config {
            path: config_path.clone(),
            message: format!("invalid adapter config: {e}"),
        })?;
        let weights = read_limited(&weights_path, limits.max_file_bytes)?;
        let mut hasher = Sha256::new();
        hasher.update(&weights);
        // The identity hashes the settings, not how they were written.
        hasher.update(canonical_config(&config_bytes).unwrap_or(config_bytes));
        let sha256 = hex::encode(hasher.finalize());
        Adapter::from_parts(&config, &config_path, &weights, &weights_path, model, limits, sha256)
    }

    fn from_parts(
        config: &LoraConfig,
        config_path: &Path,
        weights: &[u8],
        weights_path: &Path,
        model: &ModelConfig,
        limits: &Limits,
        sha256: String,
    ) -> Result<Adapter, AdapterError> {
        let cfg_err = |message: String| AdapterError::Config { path: config_path.to_owned(), message };
        if config.peft_type != "LORA" {
            return Err(cfg_err(format!("peft_type is {:?}; only LORA adapters are supported", config.peft_type)));
        }
        if config.r == 0 || config.r > limits.max_rank {
            return Err(cfg_err(format!("rank r = {} is outside 1..={}", config.r, limits.max_rank)));
        }
        if !config.lora_alpha.is_finite() || config.lora_alpha <= 0.0 {
            return Err(cfg_err(format!("lora_alpha = {} must be a positive number", config.lora_alpha)));
        }
        if config.bias != "none" {
            return Err(cfg_err(format!("bias = {:?} is not supported (only \"none\")", config.bias)));
        }
        if config.fan_in_fan_out {
            return Err(cfg_err("fan_in_fan_out = true is not supported".to_owned()));
        }
        let targets: Vec<Target> = match &config.target_modules {
            TargetModules::List(names) => names
                .iter()
                .map(|n| {
                    Target::from_module(n).ok_or_else(|| {
                        cfg_err(format!("target module {n:?} is not a linear layer of this model (q_proj … down_proj)"))
                    })
                })
                .collect::<Result<_, _>>()?,
            TargetModules::Pattern(p) => {
                let re = regex_lite::Regex::new(p).map_err(|e| cfg_err(format!("target_modules regex {p:?}: {e}")))?;
                Target::ALL.into_iter().filter(|t| re.is_match(t.module())).collect()
            }
        };

        // The header length is the first 8 bytes: bound it before parsing.
        let w_err = |message: String| AdapterError::Weights { path: weights_path.to_owned(), message };
        if weights.len() < 8 {
            return Err(w_err(format!("file is {} bytes: truncated (no safetensors header)", weights.len())));
        }
        let header_len = u64::from_le_bytes(weights[..8].try_into().unwrap_or([0; 8]));
        if header_len > limits.max_header_bytes {
            return Err(w_err(format!(
                "safetensors header of {header_len} bytes exceeds the limit of {}",
                limits.max_header_bytes
            )));
        }
        let tensors = safetensors::SafeTensors::deserialize(weights)
            .map_err(|e| w_err(format!("not a valid safetensors file: {e}")))?;

        // Per layer and target: (A, B) as they are found.
        type Halves = (Option<Vec<f32>>, Option<Vec<f32>>);
        let mut pairs: Vec<BTreeMap<Target, Halves>> = vec![BTreeMap::new(); model.n_layers];
        for (name, view) in tensors.tensors() {
            let t_err =
                |message: String| AdapterError::Tensor { path: weights_path.to_owned(), tensor: name.clone(), message };
            let (layer, target, which) = parse_tensor_name(&name)
                .ok_or_else(|| t_err("is not a PEFT LoRA tensor name for a llama model".to_owned()))?;
            if layer >= model.n_layers {
                return Err(t_err(format!("names layer {layer}, but the model has {} layers", model.n_layers)));
            }
            if !targets.contains(&target) {
                return Err(t_err(format!("targets {} which adapter_config.json does not list", target.module())));
            }
            let (out_dim, in_dim) = target.shape(model);
            let expected = if which == 'A' { [config.r, in_dim] } else { [out_dim, config.r] };
            if view.shape() != expected {
                return Err(t_err(format!("has shape {:?}, expected {:?}", view.shape(), expected)));
            }
            let values = to_f32(&view).map_err(t_err)?;
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(t_err(format!("holds a non-finite value ({}) at index {i}", values[i])));
            }
            let slot = pairs[layer].entry(target).or_default();
            if which == 'A' {
                slot.0 = Some(values);
            } else {
                slot.1 = Some(values);
            }
        }
        let mut layers = Vec::with_capacity(model.n_layers);
        let mut any = false;
        for (li, layer) in pairs.into_iter().enumerate() {
            let mut out = BTreeMap::new();
            for (target, slot) in layer {
                match slot {
                    (Some(a), Some(b)) => {
                        out.insert(target, Stored::new(LoraPair { a, b }, target.shape(model).0, config.r));
                        any = true;
                    }
                    (a, _) => {
                        let missing = if a.is_none() { 'A' } else { 'B' };
                        return Err(AdapterError::Tensor {
                            path: weights_path.to_owned(),
                            tensor: tensor_name(li, target, missing),
                            message: "is missing (every lora_A needs its lora_B)".to_owned(),
                        });
                    }
                }
            }
            layers.push(out);
        }
        if !any {
            return Err(w_err("holds no LoRA tensors".to_owned()));
        }
        let scale = if config.use_rslora {
            config.lora_alpha / (config.r as f32).sqrt()
        } else {
            config.lora_alpha / config.r as f32
        };
        Ok(Adapter {
            sha256,
            rank: config.r,
            alpha: config.lora_alpha,
            scale,
            use_rslora: config.use_rslora,
            layers,
            dims: Target::ALL.into_iter().map(|t| (t, t.shape(model))).collect(),
        })
    }

    /// A new adapter from pairs (training, tests); `layers[i][target]`.
    pub fn from_pairs(
        model: &ModelConfig,
        rank: usize,
        alpha: f32,
        layers: Vec<BTreeMap<Target, LoraPair>>,
    ) -> Adapter {
        let mut hasher = Sha256::new();
        for (li, layer) in layers.iter().enumerate() {
            for (t, p) in layer {
                hasher.update(tensor_name(li, *t, 'A'));
                p.a.iter().chain(&p.b).for_each(|v| hasher.update(v.to_le_bytes()));
            }
        }
        let layers = layers
            .into_iter()
            .map(|l| l.into_iter().map(|(t, p)| (t, Stored::new(p, t.shape(model).0, rank))).collect())
            .collect();
        Adapter {
            sha256: hex::encode(hasher.finalize()),
            rank,
            alpha,
            scale: alpha / rank as f32,
            use_rslora: false,
            layers,
            dims: Target::ALL.into_iter().map(|t| (t, t.shape(model))).collect(),
        }
    }

    /// An adapter on `targets` of every layer with uniform random A and B in
    /// ±`a_scale` / ±`b_scale` (benchmarks and tests; B = 0 is PEFT's
    /// initialisation).
    pub fn random(
        model: &ModelConfig,
        targets: &[Target],
        rank: usize,
        seed: u64,
        a_scale: f32,
        b_scale: f32,
    ) -> Adapter {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64) as f32 * 2.0 - 1.0
        };
        let layers = (0..model.n_layers)
            .map(|_| {
                targets
                    .iter()
                    .map(|&t| {
                        let (out_dim, in_dim) = t.shape(model);
                        let a = (0..rank * in_dim).map(|_| next() * a_scale).collect();
                        let b = (0..out_dim * rank).map(|_| next() * b_scale).collect();
                        (t, LoraPair { a, b })
                    })
                    .collect()
            })
            .collect();
        Adapter::from_pairs(model, rank, 2.0 * rank as f32, layers)
    }

    /// The layer's pair in the PEFT layout (`B` as `[out × r]`).
    pub fn pair(&self, layer: usize, target: Target) -> Option<LoraPair> {
        let s = self.layers.get(layer)?.get(&target)?;
        Some(LoraPair { a: s.a.clone(), b: s.b.clone() })
    }

    pub fn targets(&self) -> Vec<Target> {
        let mut t: Vec<Target> = self.layers.iter().flat_map(|l| l.keys().copied()).collect();
        t.sort();
        t.dedup();
        t
    }

    /// Bytes of weights held.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flat_map(|l| l.values())
            .map(|p| 4 * (p.a.len() + p.b.len()) + p.aq.bytes() + 2 * p.bt16.len())
            .sum()
    }

    /// Adds `scale·B·A` for `target` in `layer` to `w`, the layer's f32
    /// weight (`[out × in]`, row-major): the merged weight the unmerged
    /// path is tested against. Nothing when the adapter leaves it alone.
    pub fn merge_into(&self, layer: usize, target: Target, w: &mut [f32]) {
        let Some(pair) = self.layers.get(layer).and_then(|l| l.get(&target)) else { return };
        let (out_dim, in_dim) = self.dims[&target];
        assert_eq!(w.len(), out_dim * in_dim, "{target:?} weight of layer {layer}");
        let r = self.rank;
        for (n, row) in w.chunks_exact_mut(in_dim).enumerate() {
            for j in 0..r {
                crate::quant::axpy(self.scale * pair.b[n * r + j], &pair.a[j * in_dim..(j + 1) * in_dim], row);
            }
        }
    }

    /// The memory [`Adapter::down`] and [`Adapter::up`] read for `target`
    /// in `layer`, pushed on `out` (nothing when the adapter leaves it
    /// alone), for a caller to prefetch.
    pub fn factor_bytes<'a>(&'a self, layer: usize, target: Target, out: &mut Vec<&'a [u8]>) {
        if let Some(pair) = self.layers.get(layer).and_then(|l| l.get(&target)) {
            pair.aq.bytes_of(out);
            out.push(crate::quant::as_bytes(&pair.bt16));
        }
    }

    /// Whether the adapter changes `target` in `layer`.
    pub fn covers(&self, layer: usize, target: Target) -> bool {
        self.layers.get(layer).is_some_and(|l| l.contains_key(&target))
    }

    /// `t = scale · A·x` for each of `rows` of the quantized input `x`, as
    /// `[rows.len() × rank]`; leaves `t` alone when the adapter leaves
    /// `target` alone. Through the base model's Q8 kernel, whose result
    /// for a row does not depend on the other rows.
    pub fn down(&self, layer: usize, target: Target, x: &QActs, rows: &[usize], t: &mut [f32]) {
        let Some(pair) = self.layers.get(layer).and_then(|l| l.get(&target)) else { return };
        let r = self.rank;
        assert_eq!(t.len(), rows.len() * r);
        thread_local! {
            static PICKED: std::cell::RefCell<QActs> = std::cell::RefCell::new(QActs::default());
        }
        PICKED.with_borrow_mut(|picked| {
            x.gather(rows, picked);
            pair.aq.matmul_rows(picked, 0..r, t, r, 0);
        });
        t.iter_mut().for_each(|v| *v *= self.scale);
    }

    /// Adds `B·t` (from [`Adapter::down`]) into output columns `cols` of
    /// each row. Each output sums over the rank in order, starting from the
    /// value already there, the same for any split of rows and columns, so
    /// results do not depend on batching.
    ///
    /// # Safety
    /// `out` points to a `[rows × out_stride]` buffer that no one else
    /// writes in these rows and columns meanwhile.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn up(
        &self,
        layer: usize,
        target: Target,
        t: &[f32],
        rows: &[usize],
        cols: std::ops::Range<usize>,
        out: *mut f32,
        out_stride: usize,
        out_offset: usize,
    ) {
        let Some(pair) = self.layers.get(layer).and_then(|l| l.get(&target)) else { return };
        let (out_dim, _) = self.dims[&target];
        let r = self.rank;
        let cols = cols.start..cols.end.min(out_dim);
        assert_eq!(t.len(), rows.len() * r);
        for (i, &row) in rows.iter().enumerate() {
            // Block by block of the blocked Bᵀ.
            let mut c = cols.start;
            while c < cols.end {
                let block = c - c % UP_COLS;
                let end = (block + UP_COLS).min(cols.end);
                // SAFETY: by the contract, these columns of this row are ours.
                let dst =
                    unsafe { std::slice::from_raw_parts_mut(out.add(row * out_stride + out_offset + c), end - c) };
                let bt = &pair.bt16[block * r..(block + UP_COLS) * r];
                crate::quant::up_block::<UP_COLS>(&t[i * r..(i + 1) * r], bt, c - block, dst);
                c = end;
            }
        }
    }

    pub fn out_dim(&self, target: Target) -> usize {
        self.dims[&target].0
    }

    /// Writes the adapter in the PEFT layout (f32 tensors).
    pub fn save(&self, dir: &Path, base_model: Option<&str>) -> Result<(), AdapterError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| AdapterError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let targets = self.targets();
        let config = LoraConfig {
            peft_type: "LORA".to_owned(),
            r: self.rank,
            lora_alpha: self.alpha,
            target_modules: TargetModules::List(targets.iter().map(|t| t.module().to_owned()).collect()),
            use_rslora: self.use_rslora,
            bias: "none".to_owned(),
            fan_in_fan_out: false,
            lora_dropout: 0.0,
            base_model_name_or_path: base_model.map(str::to_owned),
            task_type: Some("CAUSAL_LM".to_owned()),
        };
        let mut tensors: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
        for (li, layer) in self.layers.iter().enumerate() {
            for (&target, pair) in layer {
                let (out_dim, in_dim) = self.dims[&target];
                tensors.push((tensor_name(li, target, 'A'), f32_bytes(&pair.a), vec![self.rank, in_dim]));
                tensors.push((tensor_name(li, target, 'B'), f32_bytes(&pair.b), vec![out_dim, self.rank]));
            }
        }
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(name, data, shape)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| AdapterError::Weights { path: dir.join(WEIGHTS_FILE), message: e.to_string() })
            })
            .collect::<Result<_, _>>()?;
        let bytes = safetensors::serialize(views, None)
            .map_err(|e| AdapterError::Weights { path: dir.join(WEIGHTS_FILE), message: e.to_string() })?;
        let json = serde_json::to_vec_pretty(&config)
            .map_err(|e| AdapterError::Config { path: dir.join(CONFIG_FILE), message: e.to_string() })?;
        write_atomic(&dir.join(WEIGHTS_FILE), &bytes)?;
        write_atomic(&dir.join(CONFIG_FILE), &json)
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AdapterError> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| AdapterError::Io { path: path.to_owned(), source })
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn to_f32(view: &safetensors::tensor::TensorView<'_>) -> Result<Vec<f32>, String> {
    let data = view.data();
    Ok(match view.dtype() {
        safetensors::Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        safetensors::Dtype::F16 => {
            data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
        }
        safetensors::Dtype::BF16 => {
            data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
        }
        other => return Err(format!("has dtype {other:?}; expected F32, F16 or BF16")),
    })
}

fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, AdapterError> {
    let io = |source| AdapterError::Io { path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len > limit {
        return Err(AdapterError::Weights {
            path: path.to_owned(),
            message: format!("file is {len} bytes, over the limit of {limit}"),
        });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    Ok(bytes)
}

/// Loaded adapters by directory (adapter versions are immutable), least
/// recently used evicted first, the
/// total bounded in bytes. A load that fails validation changes nothing.
pub struct AdapterCache {
    max_bytes: usize,
    limits: Limits,
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    entries: HashMap<PathBuf, (Arc<Adapter>, u64)>,
    /// Adapters put in memory by name ([`AdapterCache::insert`]).
    named: HashMap<PathBuf, Arc<Adapter>>,
    bytes: usize,
    clock: u64,
}

impl AdapterCache {
    pub fn new(max_bytes: usize, limits: Limits) -> AdapterCache {
        AdapterCache { max_bytes, limits, inner: Mutex::new(CacheInner::default()) }
    }

    /// Puts an adapter that lives in memory (a policy being trained) under
    /// `name`, which [`AdapterCache::get`] then answers without touching
    /// the file system; it replaces what was there and is never evicted
    /// (remove it with [`AdapterCache::remove`]).
    pub fn insert(&self, name: &Path, adapter: Arc<Adapter>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = inner.named.insert(name.to_owned(), adapter) {
            drop(old);
        }
    }

    /// Takes an adapter put with [`AdapterCache::insert`] out again.
    pub fn remove(&self, name: &Path) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).named.remove(name);
    }

    /// The adapter in `dir`, from the cache or loaded and validated.
    pub fn get(&self, dir: &Path, model: &ModelConfig) -> Result<Arc<Adapter>, AdapterError> {
        if let Some(adapter) = self.inner.lock().unwrap_or_else(|p| p.into_inner()).named.get(dir) {
            return Ok(adapter.clone());
        }
        let key = dir.canonicalize().map_err(|source| AdapterError::Io { path: dir.to_owned(), source })?;
        {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            inner.clock += 1;
            let clock = inner.clock;
            if let Some((adapter, used)) = inner.entries.get_mut(&key) {
                *used = clock;
                return Ok(adapter.clone());
            }
        }
        let adapter = Arc::new(Adapter::load(&key, model, &self.limits)?);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.bytes += adapter.bytes();
        let clock = inner.clock;
        inner.entries.insert(key.clone(), (adapter.clone(), clock));
        while inner.bytes > self.max_bytes && inner.entries.len() > 1 {
            let Some(oldest) = inner
                .entries
                .iter()
                .filter(|(k, _)| **k != key)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((evicted, _)) = inner.entries.remove(&oldest) {
                inner.bytes -= evicted.bytes();
            }
        }
        Ok(adapter)
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).bytes
    }
}
