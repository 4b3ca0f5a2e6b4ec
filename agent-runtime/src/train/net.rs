//! The llama-family forward in f32 with LoRA on chosen linear layers, and
//! its backward written out by hand, for training adapters.
//!
//! The base weights are frozen: the backward computes only the gradients
//! that reach the LoRA factors (input gradients through every frozen
//! matrix, never a weight gradient for one). Every matrix product goes
//! through the `gemm` crate; the sequences of a batch are stacked without
//! padding (each attends only to itself), and only the positions that are
//! scored get logits, so a batch costs what its real tokens cost.
//!
//! The frozen matrices are either held dequantized (fast) or kept in their
//! 4-bit form and dequantized one layer at a time when the forward or the
//! backward reaches it (QLoRA's memory shape). Both give the same numbers:
//! the dequantized matrix is the same f32 values either way.

use crate::gguf::ModelConfig;
use crate::model::{Model, Target, rope_tables, softmax_prefix};
use crate::quant::QMatrix;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use std::ops::Range;

/// How the trainer holds the frozen base weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    /// Dequantized to f32 once (about 4 bytes per weight).
    Dense,
    /// Kept as stored in the model file and dequantized a layer at a time.
    Quantized,
}

/// A strided read-only view of a matrix: element `(i, j)` is
/// `d[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    d: &'a [f32],
    rs: usize,
    cs: usize,
}

/// A row-major matrix with `cols` columns (rows `cols` apart).
pub(crate) fn rows(d: &[f32], cols: usize) -> View<'_> {
    View { d, rs: cols, cs: 1 }
}

impl View<'_> {
    /// The transpose, without copying.
    pub(crate) fn t(self) -> Self {
        View { d: self.d, rs: self.cs, cs: self.rs }
    }

    fn check(&self, m: usize, n: usize) {
        if m > 0 && n > 0 {
            assert!((m - 1) * self.rs + (n - 1) * self.cs < self.d.len(), "matrix view out of bounds");
        }
    }
}

/// `dst[m×n] = (acc ? dst : 0) + alpha · a[m×k] · b[k×n]`, where `dst`'s
/// rows are `dst_rs` apart (so it may be a column block of a wider
/// matrix). Runs on `threads` threads of the current pool.
#[allow(clippy::too_many_arguments)]
pub(crate) fn mm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    acc: bool,
    a: View<'_>,
    b: View<'_>,
    alpha: f32,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * dst_rs + n <= dst.len(), "destination out of bounds");
    a.check(m, k);
    b.check(k, n);
    if k == 0 {
        if !acc {
            for r in 0..m {
                dst[r * dst_rs..r * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    let parallelism =
        if threads > 1 && m * n * k >= 1 << 18 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the asserts above keep every element the strides reach
    // inside its slice; `dst` is borrowed mutably and distinct from `a`
    // and `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            acc,
            a.d.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.d.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            alpha,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// A frozen `[out × in]` matrix.
enum Frozen<'m> {
    Dense(Vec<f32>),
    Quant(&'m QMatrix),
}

impl<'m> Frozen<'m> {
    fn new(q: &'m QMatrix, storage: Storage) -> Frozen<'m> {
        match storage {
            Storage::Dense => Frozen::Dense(dequantize(q)),
            Storage::Quantized => Frozen::Quant(q),
        }
    }

    /// Runs `f` on the f32 matrix (dequantized for the call when stored
    /// quantized).
    fn with<R>(&self, f: impl FnOnce(&[f32]) -> R) -> R {
        match self {
            Frozen::Dense(w) => f(w),
            Frozen::Quant(q) => f(&dequantize(q)),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Frozen::Dense(w) => 4 * w.len(),
            Frozen::Quant(q) => q.bytes(),
        }
    }
}

fn dequantize(q: &QMatrix) -> Vec<f32> {
    let mut out = vec![0f32; q.rows * q.cols];
    out.par_chunks_mut(q.cols).enumerate().for_each(|(r, row)| q.dequantize_row(r, row));
    out
}

struct BaseLayer<'m> {
    attn_norm: Vec<f32>,
    wqkv: Frozen<'m>,
    bqkv: Option<Vec<f32>>,
    wo: Frozen<'m>,
    ffn_norm: Vec<f32>,
    w_gate_up: Frozen<'m>,
    w_down: Frozen<'m>,
}

/// The frozen base model as the trainer reads it.
pub struct Base<'m> {
    pub config: ModelConfig,
    layers: Vec<BaseLayer<'m>>,
    /// The output head `[vocab × hidden]`, always dense (the logits GEMM
    /// reads it for every scored position).
    head: Vec<f32>,
    /// The token embedding when it is not the head.
    embed: Option<Frozen<'m>>,
    output_norm: Vec<f32>,
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
    interleaved: bool,
    threads: usize,
}

impl<'m> Base<'m> {
    /// The base of `model`, holding its weights as `storage` says.
    pub fn new(model: &'m Model, storage: Storage, threads: usize) -> Base<'m> {
        let c = model.config.clone();
        let layers = model
            .layers
            .iter()
            .map(|l| BaseLayer {
                attn_norm: l.attn_norm.clone(),
                wqkv: Frozen::new(&l.wqkv, storage),
                bqkv: l.bqkv.clone(),
                wo: Frozen::new(&l.wo, storage),
                ffn_norm: l.ffn_norm.clone(),
                w_gate_up: Frozen::new(&l.w_gate_up, storage),
                w_down: Frozen::new(&l.w_down, storage),
            })
            .collect();
        let (head, embed) = match &model.output {
            Some(out) => (dequantize(out), Some(Frozen::new(&model.embed, storage))),
            None => (dequantize(&model.embed), None),
        };
        let (rope_cos, rope_sin) = rope_tables(&c, c.context_length.clamp(1, 1 << 15));
        Base {
            layers,
            head,
            embed,
            output_norm: model.output_norm.clone(),
            rope_cos,
            rope_sin,
            interleaved: model.rope_interleaved,
            threads: threads.max(1),
            config: c,
        }
    }

    /// A small model with random weights (gradient checks).
    pub fn random(config: ModelConfig, seed: u64, threads: usize) -> Base<'static> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let c = config;
        let q_dim = c.n_heads * c.head_dim;
        let kv_dim = c.n_kv_heads * c.head_dim;
        let mut mat = |rows: usize, cols: usize, scale: f32| -> Vec<f32> {
            (0..rows * cols).map(|_| rng.random_range(-1.0f32..1.0) * scale / (cols as f32).sqrt()).collect()
        };
        let layers = (0..c.n_layers)
            .map(|_| BaseLayer {
                attn_norm: vec![1.0; c.hidden],
                wqkv: Frozen::Dense(mat(q_dim + 2 * kv_dim, c.hidden, 1.5)),
                bqkv: c.qkv_bias.then(|| mat(1, q_dim + 2 * kv_dim, 0.5)),
                wo: Frozen::Dense(mat(c.hidden, q_dim, 1.0)),
                ffn_norm: vec![1.0; c.hidden],
                w_gate_up: Frozen::Dense(mat(2 * c.ffn, c.hidden, 1.5)),
                w_down: Frozen::Dense(mat(c.hidden, c.ffn, 1.0)),
            })
            .collect();
        let head = mat(c.vocab, c.hidden, 3.0);
        let (rope_cos, rope_sin) = rope_tables(&c, c.context_length.clamp(1, 1 << 15));
        Base {
            layers,
            head,
            embed: None,
            output_norm: vec![1.0; c.hidden],
            rope_cos,
            rope_sin,
            interleaved: c.architecture != "qwen2",
            threads: threads.max(1),
            config: c,
        }
    }

    /// Bytes the frozen weights take here.
    /// Adds `adapter` into the weights (`W + scale·B·A` for every layer it
    /// covers), so a forward without LoRA computes what the adapter
    /// computes unmerged. Needs [`Storage::Dense`].
    pub fn merge(&mut self, adapter: &crate::lora::Adapter) -> Result<(), crate::train::TrainError> {
        let c = &self.config;
        for (li, l) in self.layers.iter_mut().enumerate() {
            let fused: [(&mut Frozen<'m>, &[Target]); 4] = [
                (&mut l.wqkv, &[Target::Q, Target::K, Target::V]),
                (&mut l.wo, &[Target::O]),
                (&mut l.w_gate_up, &[Target::Gate, Target::Up]),
                (&mut l.w_down, &[Target::Down]),
            ];
            for (frozen, targets) in fused {
                let Frozen::Dense(w) = frozen else {
                    return Err(crate::train::TrainError::Config("merging an adapter needs dense storage".into()));
                };
                // The fused weight stacks its targets' rows in this order.
                let mut row = 0;
                for &t in targets {
                    let (out_dim, in_dim) = t.shape(c);
                    adapter.merge_into(li, t, &mut w[row * in_dim..(row + out_dim) * in_dim]);
                    row += out_dim;
                }
            }
        }
        Ok(())
    }

    pub fn weight_bytes(&self) -> usize {
        let layers: usize =
            self.layers.iter().map(|l| l.wqkv.bytes() + l.wo.bytes() + l.w_gate_up.bytes() + l.w_down.bytes()).sum();
        layers + 4 * self.head.len() + self.embed.as_ref().map_or(0, Frozen::bytes)
    }

    /// Positions a sequence may hold.
    pub fn max_positions(&self) -> usize {
        self.rope_cos.len() / (self.config.head_dim / 2)
    }

    fn rope(&self, head: &mut [f32], pos: usize, inverse: bool) {
        let half = self.config.head_dim / 2;
        let cos = &self.rope_cos[pos * half..(pos + 1) * half];
        let sin = &self.rope_sin[pos * half..(pos + 1) * half];
        let sign = if inverse { -1.0 } else { 1.0 };
        for i in 0..half {
            let (ia, ib) = if self.interleaved { (2 * i, 2 * i + 1) } else { (i, i + half) };
            let (a, b) = (head[ia], head[ib]);
            let s = sign * sin[i];
            head[ia] = a * cos[i] - b * s;
            head[ib] = a * s + b * cos[i];
        }
    }
}

/// The LoRA factors being trained (or their gradients, same shapes):
/// per layer and per target, `A` is `[r × in]` and `B` is `[out × r]`
/// (PEFT's layout); the update is `scale · B·A`.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraWeights {
    pub rank: usize,
    pub alpha: f32,
    pub scale: f32,
    /// Sorted.
    pub targets: Vec<Target>,
    /// `a[layer · targets.len() + i]` belongs to `targets[i]`.
    pub a: Vec<Vec<f32>>,
    pub b: Vec<Vec<f32>>,
}

impl LoraWeights {
    /// PEFT's initialisation: `A` Kaiming-uniform (bound `1/√in`), `B` zero.
    pub fn init(config: &ModelConfig, targets: &[Target], rank: usize, alpha: f32, rng: &mut impl rand::Rng) -> Self {
        let mut targets = targets.to_vec();
        targets.sort();
        targets.dedup();
        let mut a = Vec::new();
        let mut b = Vec::new();
        for _ in 0..config.n_layers {
            for &t in &targets {
                let (out_dim, in_dim) = t.shape(config);
                let bound = 1.0 / (in_dim as f32).sqrt();
                a.push((0..rank * in_dim).map(|_| rng.random_range(-bound..bound)).collect());
                b.push(vec![0.0; out_dim * rank]);
            }
        }
        LoraWeights { rank, alpha, scale: alpha / rank as f32, targets, a, b }
    }

    /// The same shapes, all zero (gradient buffers, optimizer moments).
    pub fn zeros_like(&self) -> Self {
        LoraWeights {
            a: self.a.iter().map(|v| vec![0.0; v.len()]).collect(),
            b: self.b.iter().map(|v| vec![0.0; v.len()]).collect(),
            ..self.clone()
        }
    }

    fn index(&self, layer: usize, target: Target) -> Option<usize> {
        self.targets.iter().position(|&t| t == target).map(|i| layer * self.targets.len() + i)
    }

    /// Every factor, in a fixed order (A then B per layer and target).
    pub fn tensors(&self) -> impl Iterator<Item = &Vec<f32>> {
        self.a.iter().zip(&self.b).flat_map(|(a, b)| [a, b])
    }

    pub fn tensors_mut(&mut self) -> impl Iterator<Item = &mut Vec<f32>> {
        self.a.iter_mut().zip(self.b.iter_mut()).flat_map(|(a, b)| [a, b])
    }

    /// Trainable parameters.
    pub fn parameters(&self) -> usize {
        self.tensors().map(Vec::len).sum()
    }
}

/// One sequence of a batch: its tokens, and from which position on its
/// tokens are scored (each scored token's log-probability given the
/// tokens before it).
#[derive(Debug, Clone)]
pub struct Seq {
    pub tokens: Vec<u32>,
    /// ≥ 1: the first scored token.
    pub scored_from: usize,
}

/// A run of rows that attends causally to itself and, when it has one, to
/// all of a prefix span (the shared prompt of a pair's two answers).
#[derive(Debug, Clone)]
struct Span {
    rows: Range<usize>,
    prefix: Option<Range<usize>>,
}

/// Sequences stacked row by row, without padding.
pub(crate) struct Batch {
    tokens: Vec<u32>,
    pos: Vec<usize>,
    spans: Vec<Span>,
    /// (row whose logits score, the token scored, sequence).
    scored: Vec<(usize, u32, usize)>,
    sequences: usize,
    /// Log-probabilities are of softmax(logits / temperature) (GRPO scores
    /// its samples at the temperature they were drawn at).
    pub(crate) temperature: f32,
}

impl Batch {
    fn empty() -> Batch {
        Batch {
            tokens: Vec::new(),
            pos: Vec::new(),
            spans: Vec::new(),
            scored: Vec::new(),
            sequences: 0,
            temperature: 1.0,
        }
    }

    pub(crate) fn new(seqs: &[Seq]) -> Batch {
        let mut b = Batch::empty();
        for (s, seq) in seqs.iter().enumerate() {
            let start = b.tokens.len();
            b.tokens.extend(&seq.tokens);
            b.pos.extend(0..seq.tokens.len());
            b.spans.push(Span { rows: start..b.tokens.len(), prefix: None });
            for p in seq.scored_from.max(1)..seq.tokens.len() {
                b.scored.push((start + p - 1, seq.tokens[p], s));
            }
        }
        b.sequences = seqs.len();
        b
    }

    /// Groups of answers that share a prompt: the prompt's rows are
    /// computed once and every answer attends to them, as if each answer
    /// were its own sequence after the prompt. Every answer token is
    /// scored; sequences are numbered answer by answer.
    pub(crate) fn shared(groups: &[(&[u32], Vec<&[u32]>)]) -> Batch {
        let mut b = Batch::empty();
        for (prompt, answers) in groups {
            assert!(!prompt.is_empty(), "a shared prompt has tokens");
            let p_start = b.tokens.len();
            b.tokens.extend(*prompt);
            b.pos.extend(0..prompt.len());
            let prefix = p_start..b.tokens.len();
            b.spans.push(Span { rows: prefix.clone(), prefix: None });
            for answer in answers {
                let start = b.tokens.len();
                b.tokens.extend(*answer);
                b.pos.extend(prompt.len()..prompt.len() + answer.len());
                if !answer.is_empty() {
                    b.spans.push(Span { rows: start..b.tokens.len(), prefix: Some(prefix.clone()) });
                }
                for (i, &tok) in answer.iter().enumerate() {
                    let row = if i == 0 { prefix.end - 1 } else { start + i - 1 };
                    b.scored.push((row, tok, b.sequences));
                }
                b.sequences += 1;
            }
        }
        b
    }

    pub(crate) fn rows(&self) -> usize {
        self.tokens.len()
    }

    pub(crate) fn scored_tokens(&self) -> usize {
        self.scored.len()
    }

    /// Sums per-row values into per-sequence totals.
    pub(crate) fn per_seq(&self, values: &[f32]) -> Vec<f64> {
        let mut out = vec![0f64; self.sequences];
        for (&(_, _, s), &v) in self.scored.iter().zip(values) {
            out[s] += f64::from(v);
        }
        out
    }

    /// The gradient of each scored row from a per-sequence gradient.
    pub(crate) fn spread(&self, per_seq: &[f64]) -> Vec<f32> {
        self.scored.iter().map(|&(_, _, s)| per_seq[s] as f32).collect()
    }
}

/// `cols` columns from `offset` of the rows of `prefix` then `rows`, packed
/// `[rows × cols]` (a span's keys or values, its prefix's first).
fn gather(src: &[f32], stride: usize, offset: usize, cols: usize, span: &Span) -> Vec<f32> {
    let prefix = span.prefix.clone().unwrap_or(0..0);
    let mut out = Vec::with_capacity((prefix.len() + span.rows.len()) * cols);
    for r in prefix.chain(span.rows.clone()) {
        out.extend_from_slice(&src[r * stride + offset..r * stride + offset + cols]);
    }
    out
}

/// One head's attention probabilities for a span: `p = softmax(scale·Q·Kᵀ)`
/// over the prefix and the span's rows up to each query, `[len × total]`.
fn attention_probs(q: View<'_>, k: &[f32], hd: usize, len: usize, seen: usize, scale: f32, p: &mut [f32]) {
    let total = seen + len;
    mm(len, total, hd, p, total, false, q, rows(k, hd).t(), scale, 1);
    for (i, row) in p.chunks_exact_mut(total).enumerate() {
        softmax_prefix(row, seen + i + 1);
    }
}

/// What the backward needs from one layer's forward.
struct LayerActs {
    x_in: Vec<f32>,
    inv1: Vec<f32>,
    h1: Vec<f32>,
    /// q and k after rope, v.
    qkv: Vec<f32>,
    /// Per adapted target (index into `LoraWeights::targets`): `x·Aᵀ`.
    u: Vec<Vec<f32>>,
    attn: Vec<f32>,
    x_mid: Vec<f32>,
    inv2: Vec<f32>,
    h2: Vec<f32>,
    gate_up: Vec<f32>,
}

/// The forward's record for the backward.
pub(crate) struct Saved {
    layers: Vec<LayerActs>,
    final_x: Vec<f32>,
    final_inv: Vec<f32>,
    /// Softmax of every scored row's logits, `[scored × vocab]`.
    probs: Vec<f32>,
}

impl Saved {
    /// Σ over the scored rows of the policy's entropy −Σ p·ln p (nats).
    pub(crate) fn entropy_sum(&self, vocab: usize) -> f64 {
        self.probs
            .par_chunks(vocab)
            .map(|row| -row.iter().filter(|&&p| p > 0.0).map(|&p| f64::from(p) * f64::from(p).ln()).sum::<f64>())
            .sum()
    }
}

fn rms_forward(x: &[f32], w: &[f32], eps: f32, dim: usize, out: &mut [f32], inv: &mut [f32]) {
    out.par_chunks_mut(dim).zip(x.par_chunks(dim)).zip(inv.par_iter_mut()).for_each(|((o, row), inv)| {
        let mean = row.iter().map(|v| v * v).sum::<f32>() / dim as f32;
        *inv = 1.0 / (mean + eps).sqrt();
        for ((o, &v), &w) in o.iter_mut().zip(row).zip(w) {
            *o = v * *inv * w;
        }
    });
}

/// `dx += ∂(rms_norm(x)·w)/∂x · dh` per row.
fn rms_backward(x: &[f32], inv: &[f32], w: &[f32], dh: &[f32], dim: usize, dx: &mut [f32]) {
    dx.par_chunks_mut(dim).zip(x.par_chunks(dim)).zip(dh.par_chunks(dim)).zip(inv.par_iter()).for_each(
        |(((dx, x), dh), &inv)| {
            let s: f32 = dh.iter().zip(w).zip(x).map(|((d, w), x)| d * w * x).sum();
            let k = inv * inv * inv * s / dim as f32;
            for (((dx, &d), &w), &x) in dx.iter_mut().zip(dh).zip(w).zip(x) {
                *dx += inv * w * d - x * k;
            }
        },
    );
}

fn silu(g: f32) -> f32 {
    g / (1.0 + (-g).exp())
}

fn gated(gate_up: &[f32], ffn: usize, out: &mut [f32]) {
    out.par_chunks_mut(ffn).zip(gate_up.par_chunks(2 * ffn)).for_each(|(o, gu)| {
        let (g, u) = gu.split_at(ffn);
        for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
            *o = silu(g) * u;
        }
    });
}

impl Base<'_> {
    /// Adds `scale · (x·Aᵀ)·Bᵀ` into columns `offset..` of `out` (rows
    /// `stride` apart); returns `x·Aᵀ`.
    #[allow(clippy::too_many_arguments)]
    fn lora_forward(
        &self,
        lora: &LoraWeights,
        i: usize,
        x: &[f32],
        in_dim: usize,
        out: &mut [f32],
        stride: usize,
        offset: usize,
        out_dim: usize,
    ) -> Vec<f32> {
        let (r, rows_n, t) = (lora.rank, x.len() / in_dim, self.threads);
        let mut u = vec![0f32; rows_n * r];
        mm(rows_n, r, in_dim, &mut u, r, false, rows(x, in_dim), rows(&lora.a[i], in_dim).t(), 1.0, t);
        mm(rows_n, out_dim, r, &mut out[offset..], stride, true, rows(&u, r), rows(&lora.b[i], r).t(), lora.scale, t);
        u
    }

    /// The backward of [`Base::lora_forward`]: accumulates `dA`, `dB` into
    /// `grads` and `dx += du·A`.
    #[allow(clippy::too_many_arguments)]
    fn lora_backward(
        &self,
        lora: &LoraWeights,
        grads: &mut LoraWeights,
        i: usize,
        x: &[f32],
        in_dim: usize,
        u: &[f32],
        dy: &[f32],
        stride: usize,
        offset: usize,
        out_dim: usize,
        dx: &mut [f32],
    ) {
        let (r, rows_n, t, s) = (lora.rank, x.len() / in_dim, self.threads, lora.scale);
        let dy = View { d: &dy[offset..], rs: stride, cs: 1 };
        let mut du = vec![0f32; rows_n * r];
        mm(rows_n, r, out_dim, &mut du, r, false, dy, rows(&lora.b[i], r), s, t);
        mm(out_dim, r, rows_n, &mut grads.b[i], r, true, dy.t(), rows(u, r), s, t);
        mm(r, in_dim, rows_n, &mut grads.a[i], in_dim, true, rows(&du, r).t(), rows(x, in_dim), 1.0, t);
        mm(rows_n, in_dim, r, dx, in_dim, true, rows(&du, r), rows(&lora.a[i], in_dim), 1.0, t);
    }

    /// The log-probability of every scored token of `batch`, and (with
    /// `keep`) what the backward needs.
    pub(crate) fn forward(&self, lora: Option<&LoraWeights>, batch: &Batch, keep: bool) -> (Vec<f32>, Option<Saved>) {
        let c = &self.config;
        let (hidden, hd, ffn, t) = (c.hidden, c.head_dim, c.ffn, self.threads);
        let q_dim = c.n_heads * hd;
        let kv_dim = c.n_kv_heads * hd;
        let qkv_dim = q_dim + 2 * kv_dim;
        let n = batch.rows();
        let mut x = vec![0f32; n * hidden];
        for (r, &tok) in batch.tokens.iter().enumerate() {
            let row = &mut x[r * hidden..(r + 1) * hidden];
            match &self.embed {
                None => row.copy_from_slice(&self.head[tok as usize * hidden..(tok as usize + 1) * hidden]),
                Some(Frozen::Dense(e)) => row.copy_from_slice(&e[tok as usize * hidden..(tok as usize + 1) * hidden]),
                Some(Frozen::Quant(q)) => q.dequantize_row(tok as usize, row),
            }
        }
        let adapted = |li: usize, target: Target| lora.and_then(|l| l.index(li, target).map(|i| (l, i)));
        let mut saved = Vec::new();
        for (li, layer) in self.layers.iter().enumerate() {
            let mut h1 = vec![0f32; n * hidden];
            let mut inv1 = vec![0f32; n];
            rms_forward(&x, &layer.attn_norm, c.rms_eps, hidden, &mut h1, &mut inv1);
            let mut qkv = vec![0f32; n * qkv_dim];
            layer.wqkv.with(|w| {
                mm(n, qkv_dim, hidden, &mut qkv, qkv_dim, false, rows(&h1, hidden), rows(w, hidden).t(), 1.0, t)
            });
            if let Some(b) = &layer.bqkv {
                qkv.par_chunks_mut(qkv_dim).for_each(|row| row.iter_mut().zip(b).for_each(|(v, b)| *v += b));
            }
            let mut us: Vec<Vec<f32>> = lora.map_or(Vec::new(), |l| vec![Vec::new(); l.targets.len()]);
            for (target, offset, out_dim) in
                [(Target::Q, 0, q_dim), (Target::K, q_dim, kv_dim), (Target::V, q_dim + kv_dim, kv_dim)]
            {
                if let Some((l, i)) = adapted(li, target) {
                    us[i % l.targets.len()] = self.lora_forward(l, i, &h1, hidden, &mut qkv, qkv_dim, offset, out_dim);
                }
            }
            qkv.par_chunks_mut(qkv_dim).zip(batch.pos.par_iter()).for_each(|(row, &pos)| {
                for head in row[..q_dim + kv_dim].chunks_exact_mut(hd) {
                    self.rope(head, pos, false);
                }
            });
            let attn = self.attention(batch, &qkv);
            let mut proj = vec![0f32; n * hidden];
            layer.wo.with(|w| {
                mm(n, hidden, q_dim, &mut proj, hidden, false, rows(&attn, q_dim), rows(w, q_dim).t(), 1.0, t)
            });
            if let Some((l, i)) = adapted(li, Target::O) {
                us[i % l.targets.len()] = self.lora_forward(l, i, &attn, q_dim, &mut proj, hidden, 0, hidden);
            }
            let x_in = if keep { x.clone() } else { Vec::new() };
            x.iter_mut().zip(&proj).for_each(|(x, p)| *x += p);

            let mut h2 = vec![0f32; n * hidden];
            let mut inv2 = vec![0f32; n];
            rms_forward(&x, &layer.ffn_norm, c.rms_eps, hidden, &mut h2, &mut inv2);
            let mut gate_up = vec![0f32; n * 2 * ffn];
            layer.w_gate_up.with(|w| {
                mm(n, 2 * ffn, hidden, &mut gate_up, 2 * ffn, false, rows(&h2, hidden), rows(w, hidden).t(), 1.0, t)
            });
            for (target, offset) in [(Target::Gate, 0), (Target::Up, ffn)] {
                if let Some((l, i)) = adapted(li, target) {
                    us[i % l.targets.len()] = self.lora_forward(l, i, &h2, hidden, &mut gate_up, 2 * ffn, offset, ffn);
                }
            }
            let mut act = vec![0f32; n * ffn];
            gated(&gate_up, ffn, &mut act);
            layer
                .w_down
                .with(|w| mm(n, hidden, ffn, &mut proj, hidden, false, rows(&act, ffn), rows(w, ffn).t(), 1.0, t));
            if let Some((l, i)) = adapted(li, Target::Down) {
                us[i % l.targets.len()] = self.lora_forward(l, i, &act, ffn, &mut proj, hidden, 0, hidden);
            }
            let x_mid = if keep { x.clone() } else { Vec::new() };
            x.iter_mut().zip(&proj).for_each(|(x, p)| *x += p);
            if keep {
                saved.push(LayerActs { x_in, inv1, h1, qkv, u: us, attn, x_mid, inv2, h2, gate_up });
            }
        }

        // The head, for the scored rows only.
        let scored = batch.scored.len();
        let mut final_x = vec![0f32; scored * hidden];
        for (i, &(r, _, _)) in batch.scored.iter().enumerate() {
            final_x[i * hidden..(i + 1) * hidden].copy_from_slice(&x[r * hidden..(r + 1) * hidden]);
        }
        let mut normed = vec![0f32; scored * hidden];
        let mut final_inv = vec![0f32; scored];
        rms_forward(&final_x, &self.output_norm, c.rms_eps, hidden, &mut normed, &mut final_inv);
        let vocab = c.vocab;
        let inv_t = 1.0 / batch.temperature;
        const CHUNK: usize = 256;
        let mut logp = vec![0f32; scored];
        let mut probs = if keep { vec![0f32; scored * vocab] } else { Vec::new() };
        let mut scratch = if keep { Vec::new() } else { vec![0f32; CHUNK.min(scored) * vocab] };
        for start in (0..scored).step_by(CHUNK) {
            let end = (start + CHUNK).min(scored);
            let buf = if keep { &mut probs[start * vocab..end * vocab] } else { &mut scratch[..(end - start) * vocab] };
            mm(
                end - start,
                vocab,
                hidden,
                buf,
                vocab,
                false,
                rows(&normed[start * hidden..], hidden),
                rows(&self.head, hidden).t(),
                1.0,
                t,
            );
            buf.par_chunks_mut(vocab)
                .zip(logp[start..end].par_iter_mut())
                .zip(batch.scored[start..end].par_iter())
                .for_each(|((row, lp), &(_, tok, _))| {
                    let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                    let mut total = 0f64;
                    for v in row.iter_mut() {
                        *v = ((*v - max) * inv_t).exp();
                        total += f64::from(*v);
                    }
                    *lp = (f64::from(row[tok as usize]) / total).ln() as f32;
                    let inv = (1.0 / total) as f32;
                    row.iter_mut().for_each(|v| *v *= inv);
                });
        }
        let saved = keep.then_some(Saved { layers: saved, final_x, final_inv, probs });
        (logp, saved)
    }

    /// Causal attention of every span over its prefix and itself (q and k
    /// roped).
    fn attention(&self, batch: &Batch, qkv: &[f32]) -> Vec<f32> {
        let c = &self.config;
        let hd = c.head_dim;
        let q_dim = c.n_heads * hd;
        let kv_dim = c.n_kv_heads * hd;
        let qkv_dim = q_dim + 2 * kv_dim;
        let group = c.n_heads / c.n_kv_heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let jobs: Vec<(usize, usize)> =
            (0..batch.spans.len()).flat_map(|s| (0..c.n_kv_heads).map(move |g| (s, g))).collect();
        // Per job: the outputs of the group's heads side by side,
        // `[len × group·hd]`.
        let outs: Vec<Vec<f32>> = jobs
            .par_iter()
            .map(|&(s, g)| {
                let span = &batch.spans[s];
                let len = span.rows.len();
                let seen = span.prefix.as_ref().map_or(0, Range::len);
                let total = seen + len;
                let k = gather(qkv, qkv_dim, q_dim + g * hd, hd, span);
                let v = gather(qkv, qkv_dim, q_dim + kv_dim + g * hd, hd, span);
                let mut p = vec![0f32; len * total];
                let mut o = vec![0f32; len * group * hd];
                for j in 0..group {
                    let h = g * group + j;
                    let q = View { d: &qkv[span.rows.start * qkv_dim + h * hd..], rs: qkv_dim, cs: 1 };
                    attention_probs(q, &k, hd, len, seen, scale, &mut p);
                    mm(len, hd, total, &mut o[j * hd..], group * hd, false, rows(&p, total), rows(&v, hd), 1.0, 1);
                }
                o
            })
            .collect();
        let mut attn = vec![0f32; batch.rows() * q_dim];
        for (&(s, g), o) in jobs.iter().zip(outs) {
            let start = batch.spans[s].rows.start;
            for (i, row) in o.chunks_exact(group * hd).enumerate() {
                let at = (start + i) * q_dim + g * group * hd;
                attn[at..at + group * hd].copy_from_slice(row);
            }
        }
        attn
    }

    /// The backward of attention: `d_qkv` (w.r.t. the roped q, k and v)
    /// from `d_attn`.
    fn attention_backward(&self, batch: &Batch, qkv: &[f32], d_attn: &[f32]) -> Vec<f32> {
        let c = &self.config;
        let hd = c.head_dim;
        let q_dim = c.n_heads * hd;
        let kv_dim = c.n_kv_heads * hd;
        let qkv_dim = q_dim + 2 * kv_dim;
        let group = c.n_heads / c.n_kv_heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let jobs: Vec<(usize, usize)> =
            (0..batch.spans.len()).flat_map(|s| (0..c.n_kv_heads).map(move |g| (s, g))).collect();
        // Per job: dQ of the group's heads side by side `[len × group·hd]`,
        // then dK and dV over the prefix's rows and the span's.
        let outs: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = jobs
            .par_iter()
            .map(|&(s, g)| {
                let span = &batch.spans[s];
                let len = span.rows.len();
                let seen = span.prefix.as_ref().map_or(0, Range::len);
                let total = seen + len;
                let k = gather(qkv, qkv_dim, q_dim + g * hd, hd, span);
                let v = gather(qkv, qkv_dim, q_dim + kv_dim + g * hd, hd, span);
                let mut dq = vec![0f32; len * group * hd];
                let mut dk = vec![0f32; total * hd];
                let mut dv = vec![0f32; total * hd];
                let mut p = vec![0f32; len * total];
                let mut dp = vec![0f32; len * total];
                for j in 0..group {
                    let h = g * group + j;
                    let q = View { d: &qkv[span.rows.start * qkv_dim + h * hd..], rs: qkv_dim, cs: 1 };
                    let d_o = View { d: &d_attn[span.rows.start * q_dim + h * hd..], rs: q_dim, cs: 1 };
                    attention_probs(q, &k, hd, len, seen, scale, &mut p);
                    mm(len, total, hd, &mut dp, total, false, d_o, rows(&v, hd).t(), 1.0, 1);
                    mm(total, hd, len, &mut dv, hd, true, rows(&p, total).t(), d_o, 1.0, 1);
                    for (i, (prow, dprow)) in p.chunks_exact(total).zip(dp.chunks_exact_mut(total)).enumerate() {
                        let visible = seen + i + 1;
                        let dot: f32 = prow[..visible].iter().zip(&dprow[..visible]).map(|(a, b)| a * b).sum();
                        for (d, &pv) in dprow[..visible].iter_mut().zip(&prow[..visible]) {
                            *d = pv * (*d - dot);
                        }
                        dprow[visible..].fill(0.0);
                    }
                    mm(len, hd, total, &mut dq[j * hd..], group * hd, false, rows(&dp, total), rows(&k, hd), scale, 1);
                    mm(total, hd, len, &mut dk, hd, true, rows(&dp, total).t(), q, scale, 1);
                }
                (dq, dk, dv)
            })
            .collect();
        let mut d_qkv = vec![0f32; batch.rows() * qkv_dim];
        for (&(s, g), (dq, dk, dv)) in jobs.iter().zip(outs) {
            let span = &batch.spans[s];
            for (i, r) in span.rows.clone().enumerate() {
                let at = r * qkv_dim + g * group * hd;
                d_qkv[at..at + group * hd].copy_from_slice(&dq[i * group * hd..(i + 1) * group * hd]);
            }
            // Keys and values of a prefix collect from every span that sees it.
            let prefix = span.prefix.clone().unwrap_or(0..0);
            for (i, r) in prefix.chain(span.rows.clone()).enumerate() {
                let row = &mut d_qkv[r * qkv_dim..(r + 1) * qkv_dim];
                let k = &mut row[q_dim + g * hd..q_dim + (g + 1) * hd];
                k.iter_mut().zip(&dk[i * hd..(i + 1) * hd]).for_each(|(a, b)| *a += b);
                let v = &mut row[q_dim + kv_dim + g * hd..q_dim + kv_dim + (g + 1) * hd];
                v.iter_mut().zip(&dv[i * hd..(i + 1) * hd]).for_each(|(a, b)| *a += b);
            }
        }
        d_qkv
    }

    /// Accumulates into `grads` the gradient of `Σ g[i]·logp[i]` (over the
    /// scored rows of the forward that made `saved`).
    pub(crate) fn backward(&self, lora: &LoraWeights, batch: &Batch, saved: Saved, g: &[f32], grads: &mut LoraWeights) {
        let c = &self.config;
        let (hidden, hd, ffn, t) = (c.hidden, c.head_dim, c.ffn, self.threads);
        let q_dim = c.n_heads * hd;
        let kv_dim = c.n_kv_heads * hd;
        let qkv_dim = q_dim + 2 * kv_dim;
        let vocab = c.vocab;
        let n = batch.rows();
        let scored = batch.scored.len();
        let Saved { layers, final_x, final_inv, mut probs } = saved;

        // d logp / d logits = (onehot − softmax) / temperature.
        let inv_t = 1.0 / batch.temperature;
        probs.par_chunks_mut(vocab).zip(g.par_iter()).zip(batch.scored.par_iter()).for_each(
            |((row, &g), &(_, tok, _))| {
                let g = g * inv_t;
                row.iter_mut().for_each(|p| *p *= -g);
                row[tok as usize] += g;
            },
        );
        let mut d_normed = vec![0f32; scored * hidden];
        mm(scored, hidden, vocab, &mut d_normed, hidden, false, rows(&probs, vocab), rows(&self.head, hidden), 1.0, t);
        drop(probs);
        let mut d_final = vec![0f32; scored * hidden];
        rms_backward(&final_x, &final_inv, &self.output_norm, &d_normed, hidden, &mut d_final);
        let mut dx = vec![0f32; n * hidden];
        for (i, &(r, _, _)) in batch.scored.iter().enumerate() {
            dx[r * hidden..(r + 1) * hidden]
                .iter_mut()
                .zip(&d_final[i * hidden..(i + 1) * hidden])
                .for_each(|(a, b)| *a += b);
        }

        let adapted = |li: usize, target: Target| lora.index(li, target);
        for (li, (layer, acts)) in self.layers.iter().zip(layers).enumerate().rev() {
            let ut = |i: usize| &acts.u[i % lora.targets.len()];
            // The feed-forward block.
            let mut d_act = vec![0f32; n * ffn];
            layer.w_down.with(|w| mm(n, ffn, hidden, &mut d_act, ffn, false, rows(&dx, hidden), rows(w, ffn), 1.0, t));
            let mut act = vec![0f32; n * ffn];
            gated(&acts.gate_up, ffn, &mut act);
            if let Some(i) = adapted(li, Target::Down) {
                self.lora_backward(lora, grads, i, &act, ffn, ut(i), &dx, hidden, 0, hidden, &mut d_act);
            }
            drop(act);
            let mut d_gu = vec![0f32; n * 2 * ffn];
            d_gu.par_chunks_mut(2 * ffn).zip(acts.gate_up.par_chunks(2 * ffn)).zip(d_act.par_chunks(ffn)).for_each(
                |((d, gu), da)| {
                    let (g, u) = gu.split_at(ffn);
                    let (dg, du) = d.split_at_mut(ffn);
                    for j in 0..ffn {
                        let sig = 1.0 / (1.0 + (-g[j]).exp());
                        dg[j] = da[j] * u[j] * sig * (1.0 + g[j] * (1.0 - sig));
                        du[j] = da[j] * g[j] * sig;
                    }
                },
            );
            drop(d_act);
            let mut d_h2 = vec![0f32; n * hidden];
            layer.w_gate_up.with(|w| {
                mm(n, hidden, 2 * ffn, &mut d_h2, hidden, false, rows(&d_gu, 2 * ffn), rows(w, hidden), 1.0, t)
            });
            for (target, offset) in [(Target::Gate, 0), (Target::Up, ffn)] {
                if let Some(i) = adapted(li, target) {
                    self.lora_backward(lora, grads, i, &acts.h2, hidden, ut(i), &d_gu, 2 * ffn, offset, ffn, &mut d_h2);
                }
            }
            drop(d_gu);
            rms_backward(&acts.x_mid, &acts.inv2, &layer.ffn_norm, &d_h2, hidden, &mut dx);
            drop(d_h2);

            // The attention block (dx is now the gradient at x_mid).
            let mut d_attn = vec![0f32; n * q_dim];
            layer
                .wo
                .with(|w| mm(n, q_dim, hidden, &mut d_attn, q_dim, false, rows(&dx, hidden), rows(w, q_dim), 1.0, t));
            if let Some(i) = adapted(li, Target::O) {
                self.lora_backward(lora, grads, i, &acts.attn, q_dim, ut(i), &dx, hidden, 0, hidden, &mut d_attn);
            }
            let mut d_qkv = self.attention_backward(batch, &acts.qkv, &d_attn);
            drop(d_attn);
            d_qkv.par_chunks_mut(qkv_dim).zip(batch.pos.par_iter()).for_each(|(row, &pos)| {
                for head in row[..q_dim + kv_dim].chunks_exact_mut(hd) {
                    self.rope(head, pos, true);
                }
            });
            let mut d_h1 = vec![0f32; n * hidden];
            layer.wqkv.with(|w| {
                mm(n, hidden, qkv_dim, &mut d_h1, hidden, false, rows(&d_qkv, qkv_dim), rows(w, hidden), 1.0, t)
            });
            for (target, offset, out_dim) in
                [(Target::Q, 0, q_dim), (Target::K, q_dim, kv_dim), (Target::V, q_dim + kv_dim, kv_dim)]
            {
                if let Some(i) = adapted(li, target) {
                    self.lora_backward(
                        lora,
                        grads,
                        i,
                        &acts.h1,
                        hidden,
                        ut(i),
                        &d_qkv,
                        qkv_dim,
                        offset,
                        out_dim,
                        &mut d_h1,
                    );
                }
            }
            rms_backward(&acts.x_in, &acts.inv1, &layer.attn_norm, &d_h1, hidden, &mut dx);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small model's shape for gradient checks (also GRPO's tests).
    pub(crate) fn tiny(architecture: &str) -> ModelConfig {
        ModelConfig {
            architecture: architecture.to_owned(),
            name: None,
            n_layers: 2,
            hidden: 64,
            ffn: 96,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 16,
            vocab: 50,
            context_length: 64,
            rope_base: 10_000.0,
            rms_eps: 1e-5,
            tied_embeddings: true,
            qkv_bias: architecture == "qwen2",
        }
    }

    fn seqs() -> Vec<Seq> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        [(7, 2), (12, 5), (5, 1)]
            .iter()
            .map(|&(len, from)| Seq { tokens: (0..len).map(|_| rng.random_range(0..50)).collect(), scored_from: from })
            .collect()
    }

    /// Σ w·logp in f64.
    fn objective(base: &Base<'_>, lora: &LoraWeights, batch: &Batch, w: &[f32]) -> f64 {
        let (logp, _) = base.forward(Some(lora), batch, false);
        logp.iter().zip(w).map(|(&l, &w)| f64::from(l) * f64::from(w)).sum()
    }

    fn check_gradients(architecture: &str) {
        let c = tiny(architecture);
        let base = Base::random(c.clone(), 3, 1);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let mut lora = LoraWeights::init(&c, &Target::ALL, 4, 8.0, &mut rng);
        // B = 0 would leave A without a gradient; give B values.
        for b in &mut lora.b {
            b.iter_mut().for_each(|v| *v = rng.random_range(-0.2..0.2));
        }
        let batch = Batch::new(&seqs());
        let w: Vec<f32> = (0..batch.scored_tokens()).map(|_| rng.random_range(-1.0..1.0)).collect();
        let (_, saved) = base.forward(Some(&lora), &batch, true);
        let mut grads = lora.zeros_like();
        base.backward(&lora, &batch, saved.unwrap(), &w, &mut grads);

        // One direction per tensor: every target's A and B in every layer
        // is checked on its own.
        let tensors = lora.tensors().count();
        let mut worst = 0f64;
        for which in 0..tensors {
            let mut d = lora.zeros_like();
            let dir = d.tensors_mut().nth(which).unwrap();
            dir.iter_mut().for_each(|v| *v = rng.random_range(-1.0..1.0));
            let norm = dir.iter().map(|v| v * v).sum::<f32>().sqrt();
            dir.iter_mut().for_each(|v| *v /= norm);
            let analytic: f64 = grads
                .tensors()
                .nth(which)
                .unwrap()
                .iter()
                .zip(d.tensors().nth(which).unwrap())
                .map(|(&g, &d)| f64::from(g) * f64::from(d))
                .sum();
            let eps = 1e-2f32;
            let shifted = |sign: f32| {
                let mut p = lora.clone();
                for (p, d) in p.tensors_mut().zip(d.tensors()) {
                    p.iter_mut().zip(d).for_each(|(p, d)| *p += sign * eps * d);
                }
                objective(&base, &p, &batch, &w)
            };
            let numeric = (shifted(1.0) - shifted(-1.0)) / (2.0 * f64::from(eps));
            let err = (numeric - analytic).abs();
            assert!(
                err <= 2e-2 * numeric.abs().max(analytic.abs()) + 2e-3,
                "{architecture}: tensor {which} ({:?}): analytic {analytic}, numeric {numeric}",
                lora.targets[(which / 2) % lora.targets.len()]
            );
            assert!(analytic.abs() > 1e-4, "tensor {which} got no gradient");
            worst = worst.max(err / numeric.abs().max(1e-9));
        }
        eprintln!("{architecture}: {tensors} tensors, worst relative error {worst:.2e}");
    }

    #[test]
    fn gradients_match_finite_differences_llama() {
        check_gradients("llama");
    }

    #[test]
    fn gradients_match_finite_differences_qwen2() {
        check_gradients("qwen2");
    }

    #[test]
    fn the_stacked_batch_equals_each_sequence_alone() {
        let c = tiny("llama");
        let base = Base::random(c.clone(), 5, 1);
        let lora =
            LoraWeights::init(&c, &[Target::Q, Target::Down], 4, 8.0, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
        let all = seqs();
        let (together, _) = base.forward(Some(&lora), &Batch::new(&all), false);
        let mut alone = Vec::new();
        for s in &all {
            alone.extend(base.forward(Some(&lora), &Batch::new(std::slice::from_ref(s)), false).0);
        }
        for (a, b) in together.iter().zip(&alone) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    #[test]
    fn a_shared_prompt_scores_like_separate_sequences() {
        let c = tiny("llama");
        let base = Base::random(c.clone(), 5, 1);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let mut lora = LoraWeights::init(&c, &Target::ALL, 4, 8.0, &mut rng);
        for b in &mut lora.b {
            b.iter_mut().for_each(|v| *v = rng.random_range(-0.2..0.2));
        }
        let prompts: [Vec<u32>; 2] = [vec![1, 4, 9, 16, 25], vec![2, 3]];
        let answers: [[Vec<u32>; 2]; 2] = [[vec![7, 8, 9], vec![30, 31]], [vec![11], vec![12, 13, 14, 15]]];
        let groups: Vec<(&[u32], Vec<&[u32]>)> =
            prompts.iter().zip(&answers).map(|(p, a)| (&p[..], a.iter().map(|x| &x[..]).collect())).collect();
        let shared = Batch::shared(&groups);
        let separate: Vec<Seq> = prompts
            .iter()
            .zip(&answers)
            .flat_map(|(p, a)| {
                a.iter().map(move |x| Seq { tokens: [p.clone(), x.clone()].concat(), scored_from: p.len() })
            })
            .collect();
        let plain = Batch::new(&separate);
        let (a, saved_a) = base.forward(Some(&lora), &shared, true);
        let (b, saved_b) = base.forward(Some(&lora), &plain, true);
        let (sa, sb) = (shared.per_seq(&a), plain.per_seq(&b));
        for (x, y) in sa.iter().zip(&sb) {
            assert!((x - y).abs() < 1e-4, "{sa:?} vs {sb:?}");
        }
        // The same per-sequence gradient gives the same factor gradients.
        let g_seq = [0.5, -1.0, 0.25, 2.0];
        let mut ga = lora.zeros_like();
        let mut gb = lora.zeros_like();
        base.backward(&lora, &shared, saved_a.unwrap(), &shared.spread(&g_seq), &mut ga);
        base.backward(&lora, &plain, saved_b.unwrap(), &plain.spread(&g_seq), &mut gb);
        for (x, y) in ga.tensors().zip(gb.tensors()) {
            for (x, y) in x.iter().zip(y) {
                assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
            }
        }
    }

    #[test]
    fn zero_b_changes_nothing_and_log_probs_are_normalised() {
        let c = tiny("llama");
        let base = Base::random(c.clone(), 5, 1);
        let lora = LoraWeights::init(&c, &Target::ALL, 4, 8.0, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
        let batch = Batch::new(&seqs());
        let (with, _) = base.forward(Some(&lora), &batch, false);
        let (without, _) = base.forward(None, &batch, false);
        assert_eq!(with, without);
        // Scoring every token of the vocabulary after one prefix sums to 1.
        let total: f64 = (0..50u32)
            .map(|t| {
                let b = Batch::new(&[Seq { tokens: vec![3, 9, t], scored_from: 2 }]);
                f64::from(base.forward(None, &b, false).0[0]).exp()
            })
            .sum();
        assert!((total - 1.0).abs() < 1e-4, "{total}");
    }
}
