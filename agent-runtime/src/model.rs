//! The llama-family transformer (Llama, SmolLM, TinyLlama, Qwen2) over
//! quantized weights, for a batch of sequences at once.
//!
//! The linear layers see the rows of every sequence in the batch together
//! (one pass over each weight matrix per step); attention runs per sequence
//! on its own KV cache; LoRA deltas are added per group of rows that share an
//! adapter. A sequence's result does not depend on its batch-mates: every
//! row is computed with the same arithmetic whatever else is in the batch.

use crate::error::{Result, RuntimeError};
use crate::gguf::{Gguf, ModelConfig};
use crate::lora::{Adapter, TILE_ROWS};
use crate::pool::Pool;
use crate::quant::{QActs, QKind, QMatrix};
use candle_core::quantized::GgmlDType;
use rayon::prelude::*;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

pub(crate) struct Layer {
    pub(crate) attn_norm: Vec<f32>,
    /// q, k and v projections stacked: `[q_dim + 2·kv_dim, hidden]`.
    pub(crate) wqkv: QMatrix,
    pub(crate) bqkv: Option<Vec<f32>>,
    pub(crate) wo: QMatrix,
    pub(crate) ffn_norm: Vec<f32>,
    /// gate and up projections stacked: `[2·ffn, hidden]`.
    pub(crate) w_gate_up: QMatrix,
    pub(crate) w_down: QMatrix,
}

/// Which threads run a step's parallel loops: decode steps (at most
/// [`DECODE_ROWS`] rows) use our spin-then-sleep [`Pool`]; prompt steps
/// use rayon, whose split of long, arithmetic-bound loops measured ~8%
/// faster at 256-token prefill (where the pool gained nothing: its wake-up
/// savings matter for ~150 short loops per decode step, not for long ones).
#[derive(Clone, Copy)]
enum Par<'a> {
    Pool(&'a Pool),
    /// Inside the model's rayon pool.
    Rayon(usize),
}

impl Par<'_> {
    fn threads(self) -> usize {
        match self {
            Par::Pool(p) => p.threads(),
            Par::Rayon(n) => n,
        }
    }

    fn run(self, jobs: usize, body: &(dyn Fn(usize) + Sync)) {
        match self {
            Par::Pool(p) => p.run(jobs, body),
            Par::Rayon(_) if jobs == 1 => body(0),
            Par::Rayon(_) => (0..jobs).into_par_iter().for_each(body),
        }
    }
}

/// Batches of at most this many rows (decode steps) split a matmul into one
/// chunk per thread.
const DECODE_ROWS: usize = 16;

/// A decoding sequence splits its attention heads over the pool from this
/// many cached positions on (below, the pool's wake-up costs more than the
/// heads take).
const SPLIT_HEADS_MIN_POSITIONS: usize = 64;

/// Rows of a prompt chunk one attention job takes (per head).
const ATTENTION_ROWS: usize = 16;

pub use crate::gguf::Target;

/// One sequence's keys and values, per layer, position-major.
#[derive(Clone)]
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
}

impl KvCache {
    pub fn new(config: &ModelConfig) -> KvCache {
        KvCache { k: vec![Vec::new(); config.n_layers], v: vec![Vec::new(); config.n_layers], len: 0 }
    }

    /// Positions already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets positions from `len` on (to re-run a suffix).
    pub fn truncate(&mut self, len: usize, kv_dim: usize) {
        for layer in self.k.iter_mut().chain(self.v.iter_mut()) {
            layer.truncate(len * kv_dim);
        }
        self.len = self.len.min(len);
    }

    pub fn bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(|l| l.capacity() * 4).sum()
    }

    /// A copy of the first `len` positions (all of them if `len` is more).
    pub fn head(&self, len: usize) -> KvCache {
        let len = len.min(self.len);
        let per = |layer: &Vec<f32>| layer.len().checked_div(self.len).unwrap_or(0) * len;
        KvCache {
            k: self.k.iter().map(|l| l[..per(l)].to_vec()).collect(),
            v: self.v.iter().map(|l| l[..per(l)].to_vec()).collect(),
            len,
        }
    }

    /// Appends `len` positions of made-up keys and values.
    #[cfg(test)]
    pub(crate) fn push_for_tests(&mut self, len: usize, kv_dim: usize) {
        for (i, layer) in self.k.iter_mut().chain(self.v.iter_mut()).enumerate() {
            layer.extend((0..len * kv_dim).map(|j| (i * 7 + j) as f32));
        }
        self.len += len;
    }

    /// Gives back memory held beyond the positions in the cache.
    pub fn shrink(&mut self) {
        self.k.iter_mut().chain(self.v.iter_mut()).for_each(Vec::shrink_to_fit);
    }
}

/// Which logits a sequence wants from a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position's (generation).
    Last,
    /// Every new position's (teacher forcing, log-probs of a given text).
    All,
}

/// One sequence's part of a batched step.
pub struct SeqStep<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
    pub adapter: Option<&'a Adapter>,
    pub logits: Logits,
}

pub struct Model {
    pub config: ModelConfig,
    pub(crate) embed: QMatrix,
    pub(crate) output: Option<QMatrix>,
    pub(crate) output_norm: Vec<f32>,
    pub(crate) layers: Vec<Layer>,
    /// cos and sin per position and frequency: `[positions × head_dim/2]`.
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
    /// Interleaved pairs (llama in GGUF) or halves (NeoX style, Qwen2).
    pub(crate) rope_interleaved: bool,
    /// Decode steps' parallel loops.
    workers: Pool,
    /// Prompt steps' parallel loops.
    pool: rayon::ThreadPool,
}

fn load_matrix(gguf: &mut Gguf, name: &str, expect: (usize, usize)) -> Result<QMatrix> {
    let (dtype, dims, raw) = gguf.raw(name)?;
    let bad = |problem: String| RuntimeError::Tensor { path: gguf.path.clone(), name: name.to_owned(), problem };
    if dims != [expect.0, expect.1] {
        return Err(bad(format!("has shape {dims:?}, expected [{}, {}]", expect.0, expect.1)));
    }
    let (rows, cols) = expect;
    if cols % crate::quant::QK != 0 {
        return Err(bad(format!("has {cols} columns, not a multiple of {}", crate::quant::QK)));
    }
    Ok(match dtype {
        GgmlDType::Q4_1 => QMatrix::from_q4_1(rows, cols, &raw),
        GgmlDType::Q4_0 => QMatrix::from_q4_0(rows, cols, &raw),
        GgmlDType::Q8_0 => QMatrix::from_q8_0(rows, cols, &raw),
        // Layouts without a kernel of ours: dequantize with candle, keep 8-bit.
        _ => QMatrix::quantize_q8(rows, cols, &gguf.f32s(name)?),
    })
}

fn load_vector(gguf: &mut Gguf, name: &str, len: usize) -> Result<Vec<f32>> {
    let v = gguf.f32s(name)?;
    if v.len() != len {
        return Err(RuntimeError::Tensor {
            path: gguf.path.clone(),
            name: name.to_owned(),
            problem: format!("has {} values, expected {len}", v.len()),
        });
    }
    Ok(v)
}

/// Stacks matrices, bringing them to one kind (Q8) when they differ.
fn stack(parts: Vec<QMatrix>) -> QMatrix {
    if parts.iter().all(|p| p.kind == parts[0].kind) {
        return QMatrix::concat_rows(parts);
    }
    QMatrix::concat_rows(
        parts
            .into_iter()
            .map(|p| if p.kind == QKind::Q8 { p } else { QMatrix::quantize_q8(p.rows, p.cols, &p.dequantize()) })
            .collect(),
    )
}

/// cos and sin of every position's rotary angles, `[positions × head_dim/2]`.
pub(crate) fn rope_tables(c: &ModelConfig, positions: usize) -> (Vec<f32>, Vec<f32>) {
    let half = c.head_dim / 2;
    let mut cos = Vec::with_capacity(positions * half);
    let mut sin = Vec::with_capacity(positions * half);
    for p in 0..positions {
        for i in 0..half {
            let freq = 1.0 / f64::from(c.rope_base).powf(2.0 * i as f64 / c.head_dim as f64);
            let angle = p as f64 * freq;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (cos, sin)
}

/// Threads for the model's kernels: `ARENA_THREADS`, else the cores.
pub fn default_threads() -> usize {
    std::env::var("ARENA_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

impl Model {
    pub fn load(path: &Path, threads: usize) -> Result<Model> {
        let mut gguf = Gguf::open(path)?;
        Model::from_gguf(&mut gguf, threads)
    }

    pub fn from_gguf(gguf: &mut Gguf, threads: usize) -> Result<Model> {
        let c = gguf.config()?;
        let q_dim = c.n_heads * c.head_dim;
        let kv_dim = c.n_kv_heads * c.head_dim;
        let mut layers = Vec::with_capacity(c.n_layers);
        for i in 0..c.n_layers {
            let name = |t: &str| format!("blk.{i}.{t}");
            let wq = load_matrix(gguf, &name("attn_q.weight"), (q_dim, c.hidden))?;
            let wk = load_matrix(gguf, &name("attn_k.weight"), (kv_dim, c.hidden))?;
            let wv = load_matrix(gguf, &name("attn_v.weight"), (kv_dim, c.hidden))?;
            let bqkv = if c.qkv_bias {
                let mut b = load_vector(gguf, &name("attn_q.bias"), q_dim)?;
                b.extend(load_vector(gguf, &name("attn_k.bias"), kv_dim)?);
                b.extend(load_vector(gguf, &name("attn_v.bias"), kv_dim)?);
                Some(b)
            } else {
                None
            };
            let gate = load_matrix(gguf, &name("ffn_gate.weight"), (c.ffn, c.hidden))?;
            let up = load_matrix(gguf, &name("ffn_up.weight"), (c.ffn, c.hidden))?;
            let wqkv = stack(vec![wq, wk, wv]);
            let wo = load_matrix(gguf, &name("attn_output.weight"), (c.hidden, q_dim))?;
            let w_gate_up = stack(vec![gate, up]);
            let w_down = load_matrix(gguf, &name("ffn_down.weight"), (c.hidden, c.ffn))?;
            layers.push(Layer {
                attn_norm: load_vector(gguf, &name("attn_norm.weight"), c.hidden)?,
                wqkv,
                bqkv,
                wo,
                ffn_norm: load_vector(gguf, &name("ffn_norm.weight"), c.hidden)?,
                w_gate_up,
                w_down,
            });
        }
        let embed = load_matrix(gguf, "token_embd.weight", (c.vocab, c.hidden))?;
        let output =
            if c.tied_embeddings { None } else { Some(load_matrix(gguf, "output.weight", (c.vocab, c.hidden))?) };
        let output_norm = load_vector(gguf, "output_norm.weight", c.hidden)?;

        let (rope_cos, rope_sin) = rope_tables(&c, c.context_length.clamp(1, 1 << 15));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("arena-rayon-{i}"))
            .build()
            .map_err(|e| RuntimeError::Gguf { path: gguf.path.clone(), message: format!("thread pool: {e}") })?;
        let workers = Pool::new(threads)
            .map_err(|e| RuntimeError::Gguf { path: gguf.path.clone(), message: format!("thread pool: {e}") })?;
        Ok(Model {
            rope_interleaved: c.architecture != "qwen2",
            config: c,
            embed,
            output,
            output_norm,
            layers,
            rope_cos,
            rope_sin,
            workers,
            pool,
        })
    }

    /// Bytes held by the weights.
    pub fn weight_bytes(&self) -> usize {
        let layers: usize =
            self.layers.iter().map(|l| l.wqkv.bytes() + l.wo.bytes() + l.w_gate_up.bytes() + l.w_down.bytes()).sum();
        layers + self.embed.bytes() + self.output.as_ref().map_or(0, QMatrix::bytes)
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(&self.config)
    }

    /// Positions a sequence may hold.
    pub fn max_positions(&self) -> usize {
        self.rope_cos.len() / (self.config.head_dim / 2)
    }

    /// Runs one step for every sequence in `batch`: appends its tokens to its
    /// cache and returns its logits (`[vocab]` for [`Logits::Last`],
    /// `[tokens × vocab]` for [`Logits::All`]).
    pub fn forward(&self, batch: &mut [SeqStep<'_>]) -> Result<Vec<Vec<f32>>> {
        let rows: usize = batch.iter().map(|s| s.tokens.len()).sum();
        if rows <= DECODE_ROWS {
            self.forward_inner(batch, Par::Pool(&self.workers))
        } else {
            self.pool.install(|| self.forward_inner(batch, Par::Rayon(self.pool.current_num_threads())))
        }
    }

    fn forward_inner(&self, batch: &mut [SeqStep<'_>], par: Par<'_>) -> Result<Vec<Vec<f32>>> {
        let c = &self.config;
        let (hidden, hd) = (c.hidden, c.head_dim);
        let q_dim = c.n_heads * hd;
        let kv_dim = c.n_kv_heads * hd;
        let qkv_dim = q_dim + 2 * kv_dim;
        // Row ranges of each sequence in the stacked activations.
        let mut spans = Vec::with_capacity(batch.len());
        let mut rows = 0;
        for seq in batch.iter() {
            if seq.tokens.is_empty() {
                return Err(RuntimeError::Request("a sequence in the batch has no tokens".to_owned()));
            }
            if seq.cache.len + seq.tokens.len() > self.max_positions() {
                return Err(RuntimeError::Request(format!(
                    "sequence of {} tokens exceeds the context of {} positions",
                    seq.cache.len + seq.tokens.len(),
                    self.max_positions()
                )));
            }
            if let Some(&bad) = seq.tokens.iter().find(|&&t| t as usize >= c.vocab) {
                return Err(RuntimeError::Request(format!("token id {bad} is outside the vocabulary of {}", c.vocab)));
            }
            spans.push(rows..rows + seq.tokens.len());
            rows += seq.tokens.len();
        }

        // Rows grouped by adapter, so each adapter is read once per layer.
        let mut lora: Vec<(&Adapter, Vec<usize>)> = Vec::new();
        for (seq, span) in batch.iter().zip(&spans) {
            if let Some(adapter) = seq.adapter {
                match lora.iter_mut().find(|(a, _)| a.sha256 == adapter.sha256) {
                    Some((_, rows)) => rows.extend(span.clone()),
                    None => lora.push((adapter, span.clone().collect())),
                }
            }
        }

        let mut x = vec![0f32; rows * hidden];
        for (seq, span) in batch.iter().zip(&spans) {
            for (i, &t) in seq.tokens.iter().enumerate() {
                let r = span.start + i;
                self.embed.dequantize_row(t as usize, &mut x[r * hidden..(r + 1) * hidden]);
            }
        }
        let mut h = vec![0f32; rows * hidden];
        let mut scratch = Scratch::default();
        let mut qkv = vec![0f32; rows * qkv_dim];
        let mut attn = vec![0f32; rows * q_dim];
        let mut proj = vec![0f32; rows * hidden];
        let mut gate_up = vec![0f32; rows * 2 * c.ffn];
        let mut ffn_act = vec![0f32; rows * c.ffn];

        for (li, layer) in self.layers.iter().enumerate() {
            rms_norm(&x, &layer.attn_norm, c.rms_eps, &mut h, hidden);
            let qkv_targets = [(Target::Q, 0), (Target::K, q_dim), (Target::V, q_dim + kv_dim)];
            linear(
                par,
                &layer.wqkv,
                &h,
                &mut scratch,
                &mut qkv,
                layer.bqkv.as_deref(),
                Lora::new(&lora, li, &qkv_targets),
            );
            // Attention per sequence (each has its own cache), the
            // sequences of a batch in parallel; one sequence splits its heads.
            let mut jobs = Vec::with_capacity(batch.len());
            let (mut qkv_rest, mut attn_rest) = (&mut qkv[..], &mut attn[..]);
            for (seq, span) in batch.iter_mut().zip(&spans) {
                let (q, rest) = std::mem::take(&mut qkv_rest).split_at_mut(span.len() * qkv_dim);
                qkv_rest = rest;
                let (a, rest) = std::mem::take(&mut attn_rest).split_at_mut(span.len() * q_dim);
                attn_rest = rest;
                jobs.push((&mut *seq.cache, q, a));
            }
            if let [(cache, q, a)] = &mut jobs[..] {
                self.attention(par, li, cache, q, a, true);
            } else {
                // A sequence's own loops (a prompt chunk's heads) run inline.
                let jobs: Vec<std::sync::Mutex<_>> = jobs.into_iter().map(std::sync::Mutex::new).collect();
                par.run(jobs.len(), &|i| {
                    let mut job = jobs[i].lock().unwrap_or_else(|e| e.into_inner());
                    let (cache, q, a) = &mut *job;
                    self.attention(par, li, cache, q, a, false);
                });
            }
            linear(par, &layer.wo, &attn, &mut scratch, &mut proj, None, Lora::new(&lora, li, &[(Target::O, 0)]));
            x.iter_mut().zip(&proj).for_each(|(x, p)| *x += p);

            rms_norm(&x, &layer.ffn_norm, c.rms_eps, &mut h, hidden);
            let gate_up_targets = [(Target::Gate, 0), (Target::Up, c.ffn)];
            linear(par, &layer.w_gate_up, &h, &mut scratch, &mut gate_up, None, Lora::new(&lora, li, &gate_up_targets));
            for (gu, out) in gate_up.chunks_exact(2 * c.ffn).zip(ffn_act.chunks_exact_mut(c.ffn)) {
                let (g, u) = gu.split_at(c.ffn);
                for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
                    *o = g / (1.0 + (-g).exp()) * u;
                }
            }
            linear(
                par,
                &layer.w_down,
                &ffn_act,
                &mut scratch,
                &mut proj,
                None,
                Lora::new(&lora, li, &[(Target::Down, 0)]),
            );
            x.iter_mut().zip(&proj).for_each(|(x, p)| *x += p);
        }
        for (seq, span) in batch.iter_mut().zip(&spans) {
            seq.cache.len += span.len();
        }

        // Logits only for the rows that want them.
        let wanted: Vec<usize> = batch
            .iter()
            .zip(&spans)
            .flat_map(|(seq, span)| match seq.logits {
                Logits::Last => span.end - 1..span.end,
                Logits::All => span.clone(),
            })
            .collect();
        let mut picked = vec![0f32; wanted.len() * hidden];
        for (i, &r) in wanted.iter().enumerate() {
            picked[i * hidden..(i + 1) * hidden].copy_from_slice(&x[r * hidden..(r + 1) * hidden]);
        }
        let mut normed = vec![0f32; picked.len()];
        rms_norm(&picked, &self.output_norm, c.rms_eps, &mut normed, hidden);
        scratch.acts.quantize(&normed, wanted.len(), hidden);
        let head = self.output.as_ref().unwrap_or(&self.embed);
        let mut logits = vec![0f32; wanted.len() * c.vocab];
        par_matmul(par, head, &scratch.acts, &mut logits, |_, _| {}, &[], |_| {});
        let mut out = Vec::with_capacity(batch.len());
        let mut at = 0;
        for seq in batch.iter() {
            let n = if seq.logits == Logits::Last { 1 } else { seq.tokens.len() };
            out.push(logits[at * c.vocab..(at + n) * c.vocab].to_vec());
            at += n;
        }
        Ok(out)
    }

    /// Rotates q and k of the new rows, appends k and v to the cache, and
    /// writes causal attention over the whole cache into `out`. With
    /// `split_heads`, one new row over a long cache spreads its heads over
    /// the pool.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        par: Par<'_>,
        layer: usize,
        cache: &mut KvCache,
        qkv: &mut [f32],
        out: &mut [f32],
        split_heads: bool,
    ) {
        let c = &self.config;
        let hd = c.head_dim;
        let q_dim = c.n_heads * hd;
        let kv_dim = c.n_kv_heads * hd;
        let qkv_dim = q_dim + 2 * kv_dim;
        let group = c.n_heads / c.n_kv_heads;
        let start = cache.len;
        let new = qkv.len() / qkv_dim;
        for (i, row) in qkv.chunks_exact_mut(qkv_dim).enumerate() {
            let pos = start + i;
            let (q, kv) = row.split_at_mut(q_dim);
            let (k, v) = kv.split_at_mut(kv_dim);
            for head in q.chunks_exact_mut(hd).chain(k.chunks_exact_mut(hd)) {
                self.rope(head, pos);
            }
            cache.k[layer].extend_from_slice(k);
            cache.v[layer].extend_from_slice(v);
        }
        let keys = &cache.k[layer];
        let values = &cache.v[layer];
        let scale = 1.0 / (hd as f32).sqrt();
        // Every row is one `head_attention` over its own visible positions,
        // whatever else this step feeds: a position's bits depend only on
        // the tokens up to it, never on how the prompt was chunked, what
        // was cached, or the batch (the prefix cache and the audit's
        // replay rely on it). A prompt chunk, or one row over a long cache,
        // spreads its heads over the threads.
        let by_heads = new > 1 || (split_heads && start + 1 >= SPLIT_HEADS_MIN_POSITIONS);
        if by_heads {
            // Jobs of (head, block of rows): later rows see more positions,
            // so small blocks keep the threads evenly loaded.
            let blocks = new.div_ceil(ATTENTION_ROWS);
            assert_eq!(out.len(), new * q_dim);
            let out_ptr = SendPtr(out.as_mut_ptr());
            let qkv = &*qkv;
            par.run(c.n_heads * blocks, &|job| {
                let (h, block) = (job % c.n_heads, job / c.n_heads);
                let rows = block * ATTENTION_ROWS..((block + 1) * ATTENTION_ROWS).min(new);
                let mut scores = vec![0f32; start + rows.end];
                for i in rows {
                    let q = &qkv[i * qkv_dim + h * hd..i * qkv_dim + (h + 1) * hd];
                    // SAFETY: head h of row i writes only its own hd values
                    // of `out`, within bounds by the assert; each (head,
                    // row) belongs to one job; the loop joins before `out`
                    // is used again.
                    let o = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(i * q_dim + h * hd), hd) };
                    let visible = start + i + 1;
                    head_attention(q, keys, values, (h / group) * hd, kv_dim, scale, &mut scores[..visible], o);
                }
            });
            return;
        }
        // One decode row over a short cache: its heads in turn.
        let mut scores = vec![0f32; start + 1];
        for h in 0..c.n_heads {
            let q = &qkv[h * hd..(h + 1) * hd];
            head_attention(
                q,
                keys,
                values,
                (h / group) * hd,
                kv_dim,
                scale,
                &mut scores,
                &mut out[h * hd..(h + 1) * hd],
            );
        }
    }

    fn rope(&self, head: &mut [f32], pos: usize) {
        let half = self.config.head_dim / 2;
        let cos = &self.rope_cos[pos * half..(pos + 1) * half];
        let sin = &self.rope_sin[pos * half..(pos + 1) * half];
        if self.rope_interleaved {
            for i in 0..half {
                let (a, b) = (head[2 * i], head[2 * i + 1]);
                head[2 * i] = a * cos[i] - b * sin[i];
                head[2 * i + 1] = a * sin[i] + b * cos[i];
            }
        } else {
            for i in 0..half {
                let (a, b) = (head[i], head[i + half]);
                head[i] = a * cos[i] - b * sin[i];
                head[i + half] = a * sin[i] + b * cos[i];
            }
        }
    }
}

/// Buffers [`linear`] reuses from layer to layer.
#[derive(Default)]
struct Scratch {
    /// The quantized input.
    acts: QActs,
    /// The LoRA deltas, `[rows × outputs]`.
    delta: Vec<f32>,
}

/// The LoRA side of one linear layer: the adapter groups (each adapter
/// with the batch rows it serves), the layer, and the targets the fused
/// weight carries, each with its first output column.
struct Lora<'a> {
    groups: &'a [(&'a Adapter, Vec<usize>)],
    layer: usize,
    targets: &'a [(Target, usize)],
}

impl<'a> Lora<'a> {
    fn new(groups: &'a [(&'a Adapter, Vec<usize>)], layer: usize, targets: &'a [(Target, usize)]) -> Lora<'a> {
        Lora { groups, layer, targets }
    }
}

/// `out = input · Wᵀ (+ bias) + Σ LoRA deltas`, in one parallel region:
/// the quantized product by chunks of output columns, and between its
/// tiles one LoRA job per adapter group and tile of rows (the
/// down-projection `t = scale·A·x` and `delta += B·t` for every target,
/// so one job reads each adapter's factors for this layer once, start to
/// end), whose factors the chunk prefetches while it multiplies (see
/// [`par_matmul`]).
fn linear(
    par: Par<'_>,
    w: &QMatrix,
    input: &[f32],
    scratch: &mut Scratch,
    out: &mut [f32],
    bias: Option<&[f32]>,
    lora: Lora<'_>,
) {
    let rows = input.len() / w.cols;
    scratch.acts.quantize(input, rows, w.cols);
    let acts = &scratch.acts;
    let Lora { groups, layer, targets } = lora;
    let stride = w.rows;
    for (adapter, g) in groups {
        assert!(g.iter().all(|&r| r < rows));
        for &(target, offset) in targets {
            assert!(offset + adapter.out_dim(target) <= w.rows);
        }
    }
    let finish_chunk = |n_range: std::ops::Range<usize>, out: *mut f32| {
        if let Some(b) = bias {
            for r in 0..rows {
                for n in n_range.clone() {
                    // SAFETY: this chunk owns columns `n_range` of every row.
                    unsafe { *out.add(r * stride + n) += b[n] };
                }
            }
        }
    };
    // One job per adapter group and tile of its rows, each with what it
    // reads for the thread to fetch while it multiplies: an adapter's
    // factors with its first tile only (its other tiles find them in
    // cache).
    let mut jobs = Vec::new();
    let mut reads: Vec<Vec<&[u8]>> = Vec::new();
    for (adapter, g) in groups {
        for (k, tile) in g.chunks(TILE_ROWS).enumerate() {
            jobs.push((*adapter, tile));
            let mut runs = Vec::new();
            if k == 0 {
                for &(target, _) in targets {
                    adapter.factor_bytes(layer, target, &mut runs);
                }
            }
            reads.push(runs);
        }
    }
    if jobs.is_empty() {
        par_matmul(par, w, acts, out, finish_chunk, &[], |_| {});
        return;
    }
    // The deltas, beside `out`: the LoRA tasks run while the quantized
    // product is still being written.
    let delta = &mut scratch.delta;
    delta.clear();
    delta.resize(rows * stride, 0.0);
    let delta_ptr = SendPtr(delta.as_mut_ptr());
    let job = |i: usize| {
        let (adapter, tile): (&Adapter, &[usize]) = jobs[i];
        let mut t = vec![0f32; tile.len() * adapter.rank];
        for &(target, offset) in targets {
            if adapter.covers(layer, target) {
                adapter.down(layer, target, acts, tile, &mut t);
                // SAFETY: groups own disjoint rows, a job a tile of one
                // group's rows; the asserts above bound rows and columns.
                unsafe {
                    adapter.up(layer, target, &t, tile, 0..adapter.out_dim(target), delta_ptr.get(), stride, offset)
                };
            }
        }
    };
    par_matmul(par, w, acts, out, finish_chunk, &reads, job);
    // Zero where no adapter writes, so whole rows add.
    for (_, g) in groups {
        for &r in g {
            let (o, d) = (&mut out[r * stride..(r + 1) * stride], &delta[r * stride..(r + 1) * stride]);
            o.iter_mut().zip(d).for_each(|(o, d)| *o += d);
        }
    }
}

/// `out[r][n] = x[r] · W[n]` for all rows, split across the pool by chunks
/// of output columns (`out` is `[x.rows × w.rows]`); `finish(chunk, out)`
/// then completes each chunk's columns in the same task.
///
/// `side(j)` for each `j < side_reads.len()` runs inside the chunks' tasks
/// (side job `j` in chunk task `j mod chunks`), between tiles of the
/// product: while a task multiplies the tiles before a side job, it
/// prefetches the memory `side_reads[j]` names, so that job's reads (a
/// batch of distinct adapters streams each one's LoRA factors once per
/// step) overlap the product's arithmetic instead of stalling after it.
fn par_matmul(
    par: Par<'_>,
    w: &QMatrix,
    x: &QActs,
    out: &mut [f32],
    finish: impl Fn(std::ops::Range<usize>, *mut f32) + Sync,
    side_reads: &[Vec<&[u8]>],
    side: impl Fn(usize) + Sync,
) {
    let threads = par.threads();
    assert!(out.len() >= x.rows * w.rows);
    // Decode rows: one chunk per thread; each thread then streams one long
    // run of the weights, which measured 5-15% faster than four chunks per
    // thread (more, shorter runs, each restarting the hardware prefetcher).
    // Prompt chunks: four per thread, so threads balance.
    let chunks = if x.rows * w.rows * w.cols < 1 << 16 {
        1
    } else if x.rows <= DECODE_ROWS {
        threads
    } else {
        threads * 4
    };
    // Whole tiles of 32 rows, so tiles line up with the groups the Q4
    // minima are stored in.
    let per = w.rows.div_ceil(chunks).next_multiple_of(TILE);
    let chunks = w.rows.div_ceil(per);
    let out_ptr = SendPtr(out.as_mut_ptr());
    let len = out.len();
    let taken: Vec<AtomicBool> = side_reads.iter().map(|_| AtomicBool::new(false)).collect();
    let claim = |j: usize| !taken[j].swap(true, Ordering::Relaxed);
    let job = |i: usize| {
        // Threads claim jobs in turn; job i takes chunk i / threads of the
        // (i mod threads)-th run of chunks, so chunks that run at the same
        // time lie far apart: neighbouring chunks share the cache lines at
        // their border in every row of `out`, and two threads writing them
        // at once made prompt steps ~10% slower.
        let chunk = if chunks % threads == 0 { (i % threads) * (chunks / threads) + i / threads } else { i };
        let n_range = chunk * per..((chunk + 1) * per).min(w.rows);
        // SAFETY: every chunk writes only columns n_range of each row,
        // disjoint from the other chunks' columns; the slice outlives the
        // parallel loop, which joins before `out` is used again.
        let out = unsafe { std::slice::from_raw_parts_mut(out_ptr.get(), len) };
        let mine: Vec<usize> = (i..side_reads.len()).step_by(chunks).collect();
        if mine.is_empty() {
            w.matmul_rows(x, n_range.clone(), out, w.rows, 0);
        } else {
            // Side job m's reads are fetched during tiles
            // [m·tiles/k, (m+1)·tiles/k), a few lines per weight row and
            // pass, and it runs after them.
            let tiles = n_range.len().div_ceil(TILE);
            let k = mine.len();
            let passes = x.rows.div_ceil(crate::quant::MAX_ROWS_PER_PASS);
            for (m, &j) in mine.iter().enumerate() {
                let n0 = (n_range.start + m * tiles / k * TILE).min(n_range.end);
                let n1 = (n_range.start + (m + 1) * tiles / k * TILE).min(n_range.end);
                let reads = &side_reads[j];
                let per_step = crate::quant::lines(reads).div_ceil(((n1 - n0) * passes).max(1));
                let mut feed = crate::quant::Feed::new(reads, per_step);
                w.matmul_rows_feeding(x, n0..n1, out, w.rows, 0, &mut feed);
                if claim(j) {
                    feed.rest();
                    side(j);
                }
            }
        }
        finish(n_range.clone(), out_ptr.get());
        // Side jobs another task has not reached yet, from the last: a
        // thread that runs late leaves its share to one that ran early.
        for j in (0..side_reads.len()).rev() {
            if claim(j) {
                side(j);
            }
        }
    };
    par.run(chunks, &job);
}

/// Output rows of a matmul tile (see [`par_matmul`]).
const TILE: usize = 32;

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only for disjoint writes inside one parallel loop.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

pub(crate) use crate::quant::{head_attention, softmax_prefix};

fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32], dim: usize) {
    for (row, o) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let mean = dot(row, row) / dim as f32;
        let inv = 1.0 / (mean + eps).sqrt();
        for ((o, &v), &w) in o.iter_mut().zip(row).zip(weight) {
            *o = v * inv * w;
        }
    }
}

pub use crate::quant::{axpy, dot};
