//! Quantized weight matrices and the kernels that multiply them.
//!
//! Weights stay 4- or 8-bit in blocks of 32 (GGML's Q4_1 / Q4_0 / Q8_0
//! layouts, repacked so scales and quants sit in separate aligned arrays).
//! Activations are quantized per block of 32 to **int16** — not int8 as in
//! llama.cpp's Q4_1×Q8_1 path, whose activation error is what makes the
//! 135M model answer nonsense (see shared CANDLE-NOTES). The inner product
//! is an integer multiply-add (`vpmaddwd`) with one float scale per block.
//!
//! Scales and minima stay f16 as in the file, so a block costs the kernels
//! 20 bytes of memory traffic, as in GGML: one-sequence decode streams every
//! weight once per token and is bound by memory bandwidth (with f32 scales
//! and minima, 24 bytes per block, it ran 0.82× llama.cpp's speed).
//!
//! One kernel serves every phase: it walks a weight row once and applies it
//! to up to [`MAX_ROWS_PER_PASS`] activation rows, so a batch of sequences
//! (or a prompt) reuses each unpacked weight block.

use half::f16;

/// Values per quantization block.
pub const QK: usize = 32;
/// Activation rows sharing one pass over the weights.
pub const MAX_ROWS_PER_PASS: usize = 4;
/// Weight rows in one cache tile (about 14 KB of Q4 at 576 columns).
const WEIGHT_ROWS_PER_TILE: usize = 32;
/// Q8 weight rows the kernel asks for ahead of the one it multiplies (a
/// LoRA `A` of a batch of distinct adapters is read from memory in short
/// runs, which the hardware prefetcher picks up too late: its
/// down-projections measured 1.9 → 1.45 ms per step on one thread,
/// `examples/lora_timing.rs`).
const AHEAD: usize = 4;
/// Rows whose minima are stored together (see `QMatrix::mt`).
const MIN_GROUP: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QKind {
    /// `w = d·q + m`, q in 0..16 (Q4_0 is stored as this with m = −8d).
    Q4,
    /// `w = d·q`, q in −128..128.
    Q8,
}

/// A `[rows × cols]` weight matrix (one output per row), quantized by row
/// in blocks of [`QK`].
pub struct QMatrix {
    pub rows: usize,
    pub cols: usize,
    pub kind: QKind,
    /// Per block: the scale.
    d: Vec<f16>,
    /// Q4 only: the blocks' minima by groups of [`MIN_GROUP`] rows: group
    /// `g` holds `[blocks per row × MIN_GROUP]`, so a tile's minima are one
    /// contiguous run (transposed across the whole matrix, each block's
    /// minima were a page-sized stride apart and every block missed the
    /// cache).
    mt: Vec<f16>,
    /// Q4: 16 bytes per block, low nibbles are values 0..16, high 16..32.
    /// Q8: 32 signed bytes per block.
    qs: Vec<u8>,
}

fn f16_at(bytes: &[u8], at: usize) -> f16 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]])
}

impl QMatrix {
    fn blocks_per_row(&self) -> usize {
        self.cols / QK
    }

    /// From GGML Q4_1 blocks (`d: f16, m: f16, qs: [u8; 16]`).
    pub fn from_q4_1(rows: usize, cols: usize, raw: &[u8]) -> QMatrix {
        let n = rows * cols / QK;
        assert_eq!(raw.len(), n * 20, "Q4_1 data size");
        let mut out = QMatrix::empty(rows, cols, QKind::Q4);
        let mut m = Vec::with_capacity(n);
        for b in raw.chunks_exact(20) {
            out.d.push(f16_at(b, 0));
            m.push(f16_at(b, 2));
            out.qs.extend_from_slice(&b[4..20]);
        }
        out.finish(m)
    }

    /// From GGML Q4_0 blocks (`d: f16, qs: [u8; 16]`, `w = d·(q − 8)`).
    pub fn from_q4_0(rows: usize, cols: usize, raw: &[u8]) -> QMatrix {
        let n = rows * cols / QK;
        assert_eq!(raw.len(), n * 18, "Q4_0 data size");
        let mut out = QMatrix::empty(rows, cols, QKind::Q4);
        let mut m = Vec::with_capacity(n);
        for b in raw.chunks_exact(18) {
            let d = f16_at(b, 0);
            out.d.push(d);
            // Exact: −8 only moves the exponent (and |d| ≤ 65504/8 in any
            // sane file; a larger one saturates, as GGML's own would).
            m.push(f16::from_f32(-8.0 * d.to_f32()));
            out.qs.extend_from_slice(&b[2..18]);
        }
        out.finish(m)
    }

    /// From GGML Q8_0 blocks (`d: f16, qs: [i8; 32]`).
    pub fn from_q8_0(rows: usize, cols: usize, raw: &[u8]) -> QMatrix {
        let n = rows * cols / QK;
        assert_eq!(raw.len(), n * 34, "Q8_0 data size");
        let mut out = QMatrix::empty(rows, cols, QKind::Q8);
        for b in raw.chunks_exact(34) {
            out.d.push(f16_at(b, 0));
            out.qs.extend_from_slice(&b[2..34]);
        }
        out.finish(Vec::new())
    }

    /// Quantizes f32 weights (row-major) to Q8: for layouts we have no
    /// kernel for, and for merged LoRA weights.
    pub fn quantize_q8(rows: usize, cols: usize, w: &[f32]) -> QMatrix {
        assert_eq!(w.len(), rows * cols);
        assert_eq!(cols % QK, 0, "columns must be a multiple of {QK}");
        let mut out = QMatrix::empty(rows, cols, QKind::Q8);
        for block in w.chunks_exact(QK) {
            let amax = block.iter().fold(0f32, |a, &v| a.max(v.abs()));
            let d = amax / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            // Round through f16 as GGML does, so stored scales are exact.
            let d16 = f16::from_f32(d);
            let inv16 = if d16.to_f32() > 0.0 { 1.0 / d16.to_f32() } else { inv };
            out.d.push(d16);
            out.qs.extend(block.iter().map(|&v| ((v * inv16).round().clamp(-128.0, 127.0) as i8) as u8));
        }
        out.finish(Vec::new())
    }

    /// Stores the Q4 minima `m` (row-major, one per block) transposed.
    fn finish(mut self, m: Vec<f16>) -> QMatrix {
        let nb = self.blocks_per_row();
        if self.kind == QKind::Q4 {
            assert_eq!(m.len(), self.rows * nb, "one minimum per block");
            self.mt = vec![f16::ZERO; self.rows.next_multiple_of(MIN_GROUP) * nb];
            for n in 0..self.rows {
                for b in 0..nb {
                    let at = self.min_at(n, b);
                    self.mt[at] = m[n * nb + b];
                }
            }
        }
        self
    }

    /// Where the minimum of block `b` of row `n` sits in `mt`.
    fn min_at(&self, n: usize, b: usize) -> usize {
        (n / MIN_GROUP) * self.blocks_per_row() * MIN_GROUP + b * MIN_GROUP + n % MIN_GROUP
    }

    /// The minimum of block `b` of row `n` (Q4).
    fn min(&self, n: usize, b: usize) -> f32 {
        self.mt[self.min_at(n, b)].to_f32()
    }

    fn empty(rows: usize, cols: usize, kind: QKind) -> QMatrix {
        let n = rows * cols / QK;
        QMatrix {
            rows,
            cols,
            kind,
            d: Vec::with_capacity(n),
            mt: Vec::new(),
            qs: Vec::with_capacity(n * if kind == QKind::Q4 { 16 } else { 32 }),
        }
    }

    /// Stacks matrices with the same column count and kind (fused q/k/v,
    /// gate/up projections).
    pub fn concat_rows(parts: Vec<QMatrix>) -> QMatrix {
        let cols = parts[0].cols;
        let kind = parts[0].kind;
        let mut out = QMatrix::empty(parts.iter().map(|p| p.rows).sum(), cols, kind);
        let mut m = Vec::new();
        for p in parts {
            assert!(p.cols == cols && p.kind == kind, "concat_rows: mismatched parts");
            if kind == QKind::Q4 {
                let nb = p.blocks_per_row();
                m.extend((0..p.rows).flat_map(|n| (0..nb).map(move |b| (n, b))).map(|(n, b)| p.mt[p.min_at(n, b)]));
            }
            out.d.extend(p.d);
            out.qs.extend(p.qs);
        }
        out.finish(m)
    }

    /// One row as f32.
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        let nb = self.blocks_per_row();
        for b in 0..nb {
            let i = row * nb + b;
            let dst = &mut out[b * QK..(b + 1) * QK];
            let d = self.d[i].to_f32();
            match self.kind {
                QKind::Q4 => {
                    let m = self.min(row, b);
                    let q = &self.qs[i * 16..i * 16 + 16];
                    for j in 0..16 {
                        dst[j] = d * f32::from(q[j] & 0x0f) + m;
                        dst[j + 16] = d * f32::from(q[j] >> 4) + m;
                    }
                }
                QKind::Q8 => {
                    let q = &self.qs[i * 32..i * 32 + 32];
                    for j in 0..32 {
                        dst[j] = d * f32::from(q[j] as i8);
                    }
                }
            }
        }
    }

    /// `out[r][n] += Σ_b m[n][b] · Σx[r][b]` for a tile (Q4 only).
    fn add_min_term(
        &self,
        x: &QActs,
        rows: std::ops::Range<usize>,
        n: std::ops::Range<usize>,
        out: &mut [f32],
        out_stride: usize,
        out_offset: usize,
    ) {
        if self.kind != QKind::Q4 {
            return;
        }
        let nb = self.blocks_per_row();
        for r in rows {
            let dst = &mut out[r * out_stride + out_offset + n.start..r * out_stride + out_offset + n.end];
            let sums = &x.sum[r * nb..(r + 1) * nb];
            #[cfg(target_arch = "x86_64")]
            {
                if has_avx2() {
                    // The tile in runs that stay within one group of minima.
                    let mut k = 0;
                    while k < dst.len() {
                        let row = n.start + k;
                        let len = (MIN_GROUP - row % MIN_GROUP).min(dst.len() - k);
                        let base = self.min_at(row, 0);
                        // SAFETY: AVX2, FMA and F16C were detected; the run
                        // lies within one group, whose nb·MIN_GROUP minima
                        // start at `base - row % MIN_GROUP`.
                        unsafe { avx2::min_term(&self.mt, base, sums, &mut dst[k..k + len]) };
                        k += len;
                    }
                    continue;
                }
            }
            for (j, o) in dst.iter_mut().enumerate() {
                *o += sums.iter().enumerate().map(|(b, &sum)| sum * self.min(n.start + j, b)).sum::<f32>();
            }
        }
    }

    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (r, row) in out.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row(r, row);
        }
        out
    }

    pub fn bytes(&self) -> usize {
        2 * (self.d.len() + self.mt.len()) + self.qs.len()
    }

    /// The arrays the kernels read, pushed on `out` (for a caller to
    /// prefetch).
    pub fn bytes_of<'a>(&'a self, out: &mut Vec<&'a [u8]>) {
        out.push(as_bytes(&self.d));
        if !self.mt.is_empty() {
            out.push(as_bytes(&self.mt));
        }
        out.push(&self.qs);
    }

    /// `out[r][n] = Σ_k x[r][k] · W[n][k]` for output rows `n_range`, where
    /// `out` is row-major `[x.rows × out_stride]` and written at column
    /// `out_offset + n`.
    pub fn matmul_rows(
        &self,
        x: &QActs,
        n_range: std::ops::Range<usize>,
        out: &mut [f32],
        out_stride: usize,
        out_offset: usize,
    ) {
        self.matmul_rows_feeding(x, n_range, out, out_stride, out_offset, &mut Feed::default());
    }

    /// [`QMatrix::matmul_rows`], stepping `feed` once per weight row and
    /// pass, so its prefetches spread over the product's arithmetic.
    pub(crate) fn matmul_rows_feeding(
        &self,
        x: &QActs,
        n_range: std::ops::Range<usize>,
        out: &mut [f32],
        out_stride: usize,
        out_offset: usize,
        feed: &mut Feed<'_>,
    ) {
        assert_eq!(x.cols, self.cols);
        // Cache blocking: a few weight rows stay in L1 while every activation
        // row passes over them, so the weights stream from memory once.
        let mut n0 = n_range.start;
        while n0 < n_range.end {
            let n1 = (n0 + WEIGHT_ROWS_PER_TILE).min(n_range.end);
            let mut r0 = 0;
            while r0 < x.rows {
                let take = (x.rows - r0).min(MAX_ROWS_PER_PASS);
                #[cfg(target_arch = "x86_64")]
                {
                    if has_avx2() {
                        assert!(out.len() >= (r0 + take) * out_stride && n1 <= self.rows);
                        // SAFETY: AVX2 and FMA (and for its path AVX-512 F
                        // and BW) were detected at run time; the assert
                        // bounds the rows written and read.
                        let at = out.as_mut_ptr();
                        unsafe {
                            if kernels() == Kernels::Avx512 {
                                avx512::rows(self, x, r0, take, n0..n1, at, out_stride, out_offset, feed)
                            } else {
                                avx2::rows(self, x, r0, take, n0..n1, at, out_stride, out_offset, feed)
                            }
                        };
                        self.add_min_term(x, r0..r0 + take, n0..n1, out, out_stride, out_offset);
                        r0 += take;
                        continue;
                    }
                }
                scalar::pass(self, x, r0, take, n0..n1, out, out_stride, out_offset);
                (n0..n1).for_each(|_| feed.step());
                r0 += take;
            }
            n0 = n1;
        }
    }
}

/// Activations quantized per block of 32 to int16, with per-block scales
/// and sums (the sums carry the Q4 minimum term).
#[derive(Default)]
pub struct QActs {
    pub rows: usize,
    pub cols: usize,
    xq: Vec<i16>,
    s: Vec<f32>,
    sum: Vec<f32>,
}

impl QActs {
    /// Quantizes `x` (`rows × cols`, row-major), reusing this buffer.
    pub fn quantize(&mut self, x: &[f32], rows: usize, cols: usize) {
        assert_eq!(x.len(), rows * cols);
        assert_eq!(cols % QK, 0);
        self.rows = rows;
        self.cols = cols;
        self.xq.resize(rows * cols, 0);
        let nb = rows * cols / QK;
        self.s.resize(nb, 0.0);
        self.sum.resize(nb, 0.0);
        for (b, (src, dst)) in x.chunks_exact(QK).zip(self.xq.chunks_exact_mut(QK)).enumerate() {
            let amax = src.iter().fold(0f32, |a, &v| a.max(v.abs()));
            if amax == 0.0 || !amax.is_finite() {
                dst.fill(0);
                self.s[b] = if amax.is_finite() { 0.0 } else { f32::NAN };
                self.sum[b] = self.s[b];
                continue;
            }
            let s = amax / 32767.0;
            let inv = 32767.0 / amax;
            // Round half to even by the 1.5·2²³ trick (exact for |y| < 2²²):
            // plain arithmetic that vectorizes, where `round` is a libm call
            // per value.
            const MAGIC: f32 = 12_582_912.0;
            let mut total = 0i32;
            for (q, &v) in dst.iter_mut().zip(src) {
                *q = ((v * inv + MAGIC) - MAGIC) as i16;
                total += i32::from(*q);
            }
            self.s[b] = s;
            self.sum[b] = s * total as f32;
        }
    }
}

impl QActs {
    /// Rows `rows` of `self`, in that order, into `out` (reusing it).
    pub fn gather(&self, rows: &[usize], out: &mut QActs) {
        let nb = self.cols / QK;
        out.rows = rows.len();
        out.cols = self.cols;
        out.xq.clear();
        out.s.clear();
        out.sum.clear();
        for &r in rows {
            assert!(r < self.rows, "row {r} of {}", self.rows);
            out.xq.extend_from_slice(&self.xq[r * self.cols..(r + 1) * self.cols]);
            out.s.extend_from_slice(&self.s[r * nb..(r + 1) * nb]);
            out.sum.extend_from_slice(&self.sum[r * nb..(r + 1) * nb]);
        }
    }
}

/// The bytes of an f16 slice.
pub(crate) fn as_bytes(v: &[f16]) -> &[u8] {
    // SAFETY: f16 is two plain bytes with no padding; u8 has alignment 1.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, 2 * v.len()) }
}

/// Cache lines in `runs`, each run counted from its own start.
pub(crate) fn lines(runs: &[&[u8]]) -> usize {
    runs.iter().map(|r| r.len().div_ceil(64)).sum()
}

/// A cursor over byte runs that asks the CPU to load them into its L2
/// cache, a few lines per [`Feed::step`]: a kernel steps it as it works,
/// so memory another task reads next arrives while this one computes.
/// (Prefetches are hints: nothing happens where the CPU has none.)
#[derive(Default)]
pub(crate) struct Feed<'a> {
    runs: &'a [&'a [u8]],
    run: usize,
    at: usize,
    per_step: usize,
}

impl<'a> Feed<'a> {
    pub(crate) fn new(runs: &'a [&'a [u8]], per_step: usize) -> Feed<'a> {
        Feed { runs, run: 0, at: 0, per_step }
    }

    /// Prefetches the next `per_step` lines.
    #[inline]
    pub(crate) fn step(&mut self) {
        let mut left = self.per_step;
        while left > 0 {
            let Some(run) = self.runs.get(self.run) else {
                self.per_step = 0;
                return;
            };
            let end = run.len().min(self.at + 64 * left);
            let mut at = self.at;
            while at < end {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: a prefetch reads nothing and faults on nothing;
                // the address lies within the run.
                unsafe {
                    use std::arch::x86_64::*;
                    _mm_prefetch::<_MM_HINT_T1>(run.as_ptr().add(at) as *const i8)
                };
                at += 64;
            }
            left -= (at - self.at) / 64;
            if at >= run.len() {
                self.run += 1;
                self.at = 0;
            } else {
                self.at = at;
            }
        }
    }

    /// Prefetches every line not yet asked for.
    pub(crate) fn rest(&mut self) {
        self.per_step = usize::MAX / 128;
        self.step();
    }
}

/// `y += a·x`, fused (each element as `a.mul_add(x, y)`, whichever path
/// runs it, so a column's value does not depend on how columns are split).
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            // SAFETY: the features were detected at run time.
            unsafe { avx2::axpy(a, x, y) };
            return;
        }
    }
    scalar::axpy(a, x, y);
}

/// One head of one attention row: `out = softmax(q·Kᵀ·scale)·V` over the
/// first `scores.len()` cached positions, K and V read at column `at` of
/// rows `kv_dim` apart. Every row of every step (decode and prompt chunks)
/// goes through here, so a position's bits depend only on the positions
/// before it. Each score is [`dot`]'s and each value row is added with
/// [`axpy`]'s arithmetic, the kernels inlined into one loop.
#[allow(clippy::too_many_arguments)]
pub fn head_attention(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    at: usize,
    kv_dim: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            // SAFETY: the features were detected at run time.
            unsafe { avx2::head_attention(q, keys, values, at, kv_dim, scale, scores, out) };
            return;
        }
    }
    attend(q, keys, values, at, kv_dim, scale, scores, out, scalar::dot, scalar::axpy);
}

/// [`head_attention`]'s loop with its dot product and `y += a·x`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn attend(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    at: usize,
    kv_dim: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
    dot: impl Fn(&[f32], &[f32]) -> f32,
    axpy: impl Fn(f32, &[f32], &mut [f32]),
) {
    let hd = q.len();
    for (j, s) in scores.iter_mut().enumerate() {
        *s = dot(q, &keys[j * kv_dim + at..j * kv_dim + at + hd]) * scale;
    }
    let visible = scores.len();
    softmax_prefix(scores, visible);
    out.fill(0.0);
    for (j, &s) in scores.iter().enumerate() {
        axpy(s, &values[j * kv_dim + at..j * kv_dim + at + hd], out);
    }
}

/// Softmax over `row[..visible]`; the rest (future positions) becomes 0.
#[inline(always)]
pub fn softmax_prefix(row: &mut [f32], visible: usize) {
    let max = row[..visible].iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let mut total = 0f32;
    for s in &mut row[..visible] {
        *s = (*s - max).exp();
        total += *s;
    }
    let inv = 1.0 / total;
    row[..visible].iter_mut().for_each(|s| *s *= inv);
    row[visible..].fill(0.0);
}

/// Dot product (AVX2 + FMA when the CPU has them; the result depends only
/// on the two slices, never on where they sit in a batch).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            // SAFETY: the features were detected at run time.
            return unsafe { avx2::dot(a, b) };
        }
    }
    scalar::dot(a, b)
}

/// `dst[c] += Σ_j coef[j]·bt[j·W + lo + c]`, each column summed in rank
/// order onto its value, fused: one block of a LoRA adapter's blocked `Bᵀ`
/// (`W` columns wide). One output's arithmetic does not depend on the other
/// rows or columns of the call, whichever path runs it.
pub fn up_block<const W: usize>(coef: &[f32], bt: &[half::f16], lo: usize, dst: &mut [f32]) {
    assert!(lo + dst.len() <= W && bt.len() == coef.len() * W);
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            // SAFETY: the features were detected at run time; the assert
            // above bounds every read and write.
            unsafe { avx2::up_block::<W>(coef, bt, lo, dst) };
            return;
        }
    }
    scalar::up_block::<W>(coef, bt, lo, dst);
}

/// The kernel paths, by instruction set. One is chosen per process, once
/// (the best the CPU has, or the one `ARENA_KERNELS` or [`force`] names),
/// and every kernel of the process runs it: a path is bit-identical to
/// itself across thread counts, batch sizes and sequence positions, and its
/// [`recipe`](Kernels::recipe) names what it computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// Portable Rust (`scalar.rs`).
    Scalar,
    /// AVX2 with FMA and F16C (`avx2.rs`).
    Avx2,
    /// AVX-512 F and BW for the quantized matmul (`avx512.rs`), the AVX2
    /// kernels for the rest.
    Avx512,
}

impl Kernels {
    pub const ALL: [Kernels; 3] = [Kernels::Scalar, Kernels::Avx2, Kernels::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            Kernels::Scalar => "scalar",
            Kernels::Avx2 => "avx2",
            Kernels::Avx512 => "avx512",
        }
    }

    /// The numeric recipe a path computes: weights in Q4/Q8 blocks, the
    /// activations quantized to int16 per block, integer dot products, f32
    /// scales, fused f32 accumulation in the path's own order; attention
    /// row by row (`v2`: every row, prompt chunks included; `v1` computed
    /// prompt chunks of 32 rows or more with GEMMs). Two runs that name the
    /// same recipe produce the same bits.
    pub fn recipe(self) -> &'static str {
        match self {
            Kernels::Scalar => "q4q8-i16act-scalar-v2",
            Kernels::Avx2 => "q4q8-i16act-avx2-v2",
            Kernels::Avx512 => "q4q8-i16act-avx512-v2",
        }
    }

    /// A path by its name (`scalar`, `avx2`).
    pub fn parse(name: &str) -> Option<Kernels> {
        Kernels::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether this CPU can run the path.
    pub fn available(self) -> bool {
        match self {
            Kernels::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx2 => {
                is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx512 => {
                Kernels::Avx2.available() && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Kernels::Avx2 | Kernels::Avx512 => false,
        }
    }

    /// The best path this CPU has. AVX-512 is chosen only when forced
    /// until it measures faster than AVX2 here (see the README).
    pub fn best() -> Kernels {
        if Kernels::Avx2.available() { Kernels::Avx2 } else { Kernels::Scalar }
    }
}

static CHOSEN: std::sync::OnceLock<Kernels> = std::sync::OnceLock::new();

/// The environment variable that forces a path (`auto`, `scalar`, `avx2`,
/// `avx512`).
pub const KERNELS_VAR: &str = "ARENA_KERNELS";

/// The path this process runs (chosen at the first call: `ARENA_KERNELS`
/// when it names an available path, else the best one; a name that is not
/// a path, or a path the CPU lacks, falls back to the best with a warning
/// on stderr).
pub fn kernels() -> Kernels {
    *CHOSEN.get_or_init(|| match std::env::var(KERNELS_VAR) {
        Ok(name) if name != "auto" && !name.is_empty() => match Kernels::parse(&name) {
            Some(k) if k.available() => k,
            Some(k) => {
                eprintln!("warning: {KERNELS_VAR}={name}: this CPU cannot run the {} kernels", k.name());
                Kernels::best()
            }
            None => {
                eprintln!("warning: {KERNELS_VAR}={name} is not one of auto, scalar, avx2, avx512");
                Kernels::best()
            }
        },
        _ => Kernels::best(),
    })
}

/// Runs `path` in this process from now on: for tests and for comparing
/// paths. Refused when the CPU lacks it, or when another path already ran.
pub fn force(path: Kernels) -> Result<(), String> {
    if !path.available() {
        return Err(format!("this CPU cannot run the {} kernels", path.name()));
    }
    let chosen = *CHOSEN.get_or_init(|| path);
    if chosen == path { Ok(()) } else { Err(format!("the {} kernels already ran in this process", chosen.name())) }
}

/// Whether the AVX2 kernels run (the AVX2 path, or the AVX-512 one, which
/// uses them beside its matmul).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2() -> bool {
    matches!(kernels(), Kernels::Avx2 | Kernels::Avx512)
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub(crate) mod scalar;

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: u64) -> impl FnMut() -> f32 {
        let mut s = seed;
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64) as f32 * 2.0 - 1.0
        }
    }

    fn reference(w: &QMatrix, x: &[f32], rows: usize) -> Vec<f32> {
        let wf = w.dequantize();
        let mut out = vec![0f32; rows * w.rows];
        for r in 0..rows {
            for n in 0..w.rows {
                out[r * w.rows + n] = (0..w.cols)
                    .map(|k| f64::from(x[r * w.cols + k]) * f64::from(wf[n * w.cols + k]))
                    .sum::<f64>() as f32;
            }
        }
        out
    }

    fn random_q4(rows: usize, cols: usize, next: &mut impl FnMut() -> f32) -> QMatrix {
        let mut raw = Vec::new();
        for _ in 0..rows * cols / QK {
            raw.extend_from_slice(&f16::from_f32(next().abs() * 0.1).to_le_bytes());
            raw.extend_from_slice(&f16::from_f32(next() * 0.5).to_le_bytes());
            for _ in 0..16 {
                raw.push(((next() + 1.0) * 127.9) as u8);
            }
        }
        QMatrix::from_q4_1(rows, cols, &raw)
    }

    #[test]
    fn kernels_match_the_dequantized_product() {
        let mut next = rng(7);
        let (rows_w, cols) = (37, 96);
        let q4 = random_q4(rows_w, cols, &mut next);
        let wf: Vec<f32> = (0..rows_w * cols).map(|_| next()).collect();
        let q8 = QMatrix::quantize_q8(rows_w, cols, &wf);
        for w in [&q4, &q8] {
            for rows in [1, 3, 4, 6, 9] {
                let x: Vec<f32> = (0..rows * cols).map(|_| next() * 3.0).collect();
                let mut acts = QActs::default();
                acts.quantize(&x, rows, cols);
                let mut out = vec![0f32; rows * rows_w];
                w.matmul_rows(&acts, 0..rows_w, &mut out, rows_w, 0);
                // Split at a row that is not a tile or group boundary: the
                // same bits (an output never depends on how rows are split).
                let mut split = vec![0f32; rows * rows_w];
                w.matmul_rows(&acts, 0..8, &mut split, rows_w, 0);
                w.matmul_rows(&acts, 8..rows_w, &mut split, rows_w, 0);
                assert_eq!(split, out, "{:?} rows={rows}: a split changed the result", w.kind);
                let want = reference(w, &x, rows);
                let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
                for (i, (a, b)) in out.iter().zip(&want).enumerate() {
                    assert!((a - b).abs() <= 2e-4 * scale, "{:?} rows={rows} i={i}: {a} vs {b}", w.kind);
                }
                let mut scalar = vec![0f32; rows * rows_w];
                scalar::pass(w, &acts, 0, rows.min(MAX_ROWS_PER_PASS), 0..rows_w, &mut scalar, rows_w, 0);
                for i in 0..rows.min(MAX_ROWS_PER_PASS) * rows_w {
                    assert!((scalar[i] - out[i]).abs() <= 1e-5 * scale.max(1.0), "scalar and SIMD paths differ at {i}");
                }
            }
        }
    }

    /// The AVX-512 pass (without the Q4 minimum term, which the caller
    /// adds): within rounding of the AVX2 pass, and for each row the same
    /// bits whichever number of rows shares its pass.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx512_pass_agrees_with_avx2_and_not_with_its_row_mates() {
        if !Kernels::Avx512.available() {
            eprintln!("this CPU has no AVX-512: nothing to check");
            return;
        }
        let mut next = rng(11);
        let (rows_w, cols) = (45, 128);
        let q4 = random_q4(rows_w, cols, &mut next);
        let wf: Vec<f32> = (0..rows_w * cols).map(|_| next()).collect();
        let q8 = QMatrix::quantize_q8(rows_w, cols, &wf);
        for w in [&q4, &q8] {
            let rows = 4;
            let x: Vec<f32> = (0..rows * cols).map(|_| next() * 3.0).collect();
            let mut acts = QActs::default();
            acts.quantize(&x, rows, cols);
            let run = |f: &dyn Fn(usize, usize, *mut f32)| {
                let mut out = vec![0f32; rows * rows_w];
                f(0, rows, out.as_mut_ptr());
                out
            };
            // SAFETY: AVX-512 F and BW were detected; every row and output
            // lies within the buffers.
            let wide = run(&|r0, take, out| unsafe {
                avx512::rows(w, &acts, r0, take, 0..rows_w, out, rows_w, 0, &mut Feed::default())
            });
            // SAFETY: as above (AVX-512 implies AVX2 here).
            let narrow = run(&|r0, take, out| unsafe {
                avx2::rows(w, &acts, r0, take, 0..rows_w, out, rows_w, 0, &mut Feed::default())
            });
            let scale = narrow.iter().fold(0f32, |a, v| a.max(v.abs())).max(1.0);
            for (i, (a, b)) in wide.iter().zip(&narrow).enumerate() {
                assert!((a - b).abs() <= 1e-5 * scale, "{:?} {i}: {a} vs {b}", w.kind);
            }
            for r in 0..rows {
                let mut alone = vec![0f32; rows * rows_w];
                // SAFETY: as above.
                unsafe { avx512::rows(w, &acts, r, 1, 0..rows_w, alone.as_mut_ptr(), rows_w, 0, &mut Feed::default()) };
                assert_eq!(
                    &alone[r * rows_w..(r + 1) * rows_w],
                    &wide[r * rows_w..(r + 1) * rows_w],
                    "{:?} row {r}: its pass's other rows changed its bits",
                    w.kind
                );
            }
        }
    }

    #[test]
    fn q8_quantization_round_trips_within_half_a_step() {
        let mut next = rng(3);
        let w: Vec<f32> = (0..4 * 64).map(|_| next()).collect();
        let q = QMatrix::quantize_q8(4, 64, &w);
        let back = q.dequantize();
        for (block, (a, b)) in w.chunks(QK).zip(back.chunks(QK)).enumerate() {
            let step = q.d[block].to_f32();
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() <= step * 0.5 + 1e-3 * step, "block {block}: {x} vs {y}");
            }
        }
    }
}
