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
                        // SAFETY: AVX2 and FMA were detected at run time; the
                        // assert bounds the rows written and read.
                        unsafe {
                            avx2::rows(self, x, r0, take, n0..n1, out.as_mut_ptr(), out_stride, out_offset, feed)
                        };
                        self.add_min_term(x, r0..r0 + take, n0..n1, out, out_stride, out_offset);
                        r0 += take;
                        continue;
                    }
                }
                scalar_pass(self, x, r0, take, n0..n1, out, out_stride, out_offset);
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

#[allow(clippy::too_many_arguments)]
fn scalar_pass(
    w: &QMatrix,
    x: &QActs,
    r0: usize,
    take: usize,
    n_range: std::ops::Range<usize>,
    out: &mut [f32],
    out_stride: usize,
    out_offset: usize,
) {
    let nb = w.blocks_per_row();
    for n in n_range {
        for r in r0..r0 + take {
            let mut acc = 0f32;
            for b in 0..nb {
                let wi = n * nb + b;
                let xi = r * nb + b;
                let xq = &x.xq[xi * QK..xi * QK + QK];
                let mut dot = 0i32;
                match w.kind {
                    QKind::Q4 => {
                        let q = &w.qs[wi * 16..wi * 16 + 16];
                        for j in 0..16 {
                            dot += i32::from(q[j] & 0x0f) * i32::from(xq[j]);
                            dot += i32::from(q[j] >> 4) * i32::from(xq[j + 16]);
                        }
                        acc += w.min(n, b) * x.sum[xi];
                    }
                    QKind::Q8 => {
                        let q = &w.qs[wi * 32..wi * 32 + 32];
                        for j in 0..32 {
                            dot += i32::from(q[j] as i8) * i32::from(xq[j]);
                        }
                    }
                }
                acc += w.d[wi].to_f32() * x.s[xi] * dot as f32;
            }
            out[r * out_stride + out_offset + n] = acc;
        }
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
    for (y, &x) in y.iter_mut().zip(x) {
        *y = a.mul_add(x, *y);
    }
}

/// AVX2, FMA and F16C, detected once.
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
    })
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::{QActs, QK, QKind, QMatrix};

    /// # Safety
    /// AVX2, FMA and F16C are available.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        let (px, py) = (x.as_ptr(), y.as_mut_ptr());
        let mut i = 0;
        // SAFETY: every load and store touches 8 values below `n`.
        unsafe {
            let av = _mm256_set1_ps(a);
            while i + 8 <= n {
                _mm256_storeu_ps(
                    py.add(i),
                    _mm256_fmadd_ps(av, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i))),
                );
                i += 8;
            }
        }
        for (y, x) in y[i..n].iter_mut().zip(&x[i..n]) {
            *y = a.mul_add(*x, *y);
        }
    }

    use half::f16;
    use std::arch::x86_64::*;

    /// One f16 scale, widened and broadcast to every lane.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn splat_f16(p: *const f16) -> __m256 {
        // SAFETY: the caller passes a pointer to one f16.
        unsafe {
            let bits = i32::from((*p).to_bits());
            _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)))
        }
    }

    /// `dst[j] += Σ_b sums[b] · mt[base + b·MIN_GROUP + j]`: the Q4 minimum
    /// term of one activation row over a run of outputs within one group,
    /// summed in registers (8 outputs at a time) and added once.
    ///
    /// # Safety
    /// AVX2, FMA and F16C are available; `base + (sums.len() − 1)·MIN_GROUP
    /// + dst.len() <= mt.len()`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn min_term(mt: &[f16], base: usize, sums: &[f32], dst: &mut [f32]) {
        const G: usize = super::MIN_GROUP;
        let n = dst.len();
        let mut j = 0;
        assert!(sums.is_empty() || base + (sums.len() - 1) * G + n <= mt.len());
        // SAFETY: every load stays within the bound asserted above, every
        // store within `dst`.
        // SAFETY: as above; each call covers `8·C` outputs from `j`.
        unsafe {
            // Four chains, then two, then one: one chain waits on its fused
            // multiply-add's latency every block.
            while j + 32 <= n {
                chains::<4>(mt, base, sums, dst, j);
                j += 32;
            }
            while j + 16 <= n {
                chains::<2>(mt, base, sums, dst, j);
                j += 16;
            }
            while j + 8 <= n {
                chains::<1>(mt, base, sums, dst, j);
                j += 8;
            }
        }
        // The rest exactly as one vector lane computes it (fused, in block
        // order, added once), so an output's value does not depend on where
        // the tile boundaries fall (batch invariance).
        for (k, o) in dst.iter_mut().enumerate().skip(j) {
            let mut acc = 0f32;
            for (b, &sum) in sums.iter().enumerate() {
                acc = sum.mul_add(mt[base + b * G + k].to_f32(), acc);
            }
            *o += acc;
        }
    }

    /// [`min_term`] for outputs `j..j + 8·C`, in `C` independent chains.
    ///
    /// # Safety
    /// As [`min_term`], with `j + 8·C <= dst.len()`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn chains<const C: usize>(mt: &[f16], base: usize, sums: &[f32], dst: &mut [f32], j: usize) {
        const G: usize = super::MIN_GROUP;
        // SAFETY: by the contract.
        unsafe {
            let mut a = [_mm256_setzero_ps(); C];
            for (b, &sum) in sums.iter().enumerate() {
                let p = mt.as_ptr().add(base + b * G + j);
                let s = _mm256_set1_ps(sum);
                for (c, a) in a.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(s, _mm256_cvtph_ps(_mm_loadu_si128(p.add(8 * c) as *const __m128i)), *a);
                }
            }
            let o = dst.as_mut_ptr().add(j);
            for (c, a) in a.iter().enumerate() {
                _mm256_storeu_ps(o.add(8 * c), _mm256_add_ps(_mm256_loadu_ps(o.add(8 * c)), *a));
            }
        }
    }

    /// The sum of a vector's eight lanes.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }

    /// The block's 32 weights as two vectors of 16 int16.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn unpack<const Q4: bool>(p: *const u8) -> (__m256i, __m256i) {
        // SAFETY: the caller passes a pointer to a whole block.
        unsafe {
            if Q4 {
                // Widen the 16 bytes once; each 16-bit lane then holds
                // both nibbles of one byte.
                let v = _mm256_cvtepu8_epi16(_mm_loadu_si128(p as *const __m128i));
                (_mm256_and_si256(v, _mm256_set1_epi16(0x0f)), _mm256_srli_epi16::<4>(v))
            } else {
                let lo = _mm_loadu_si128(p as *const __m128i);
                let hi = _mm_loadu_si128(p.add(16) as *const __m128i);
                (_mm256_cvtepi8_epi16(lo), _mm256_cvtepi8_epi16(hi))
            }
        }
    }

    /// Σ over one block of w·x as 8 int32 lanes.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn block_dot(w: (__m256i, __m256i), x: *const i16) -> __m256i {
        // SAFETY: the caller passes a pointer to 32 int16.
        unsafe {
            let x_lo = _mm256_loadu_si256(x as *const __m256i);
            let x_hi = _mm256_loadu_si256(x.add(16) as *const __m256i);
            _mm256_add_epi32(_mm256_madd_epi16(w.0, x_lo), _mm256_madd_epi16(w.1, x_hi))
        }
    }

    /// `R` activation rows from `r0` against weight rows `n_range`.
    ///
    /// # Safety
    /// AVX2 and FMA are available; `r0 + R <= x.rows`; `n_range` lies
    /// within `w.rows`; `out` holds `(r0 + R) · out_stride` floats.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn pass<const R: usize, const Q4: bool>(
        w: &QMatrix,
        x: &QActs,
        r0: usize,
        n_range: std::ops::Range<usize>,
        out: *mut f32,
        out_stride: usize,
        out_offset: usize,
        feed: &mut super::Feed<'_>,
    ) {
        let nb = w.cols / QK;
        let block_bytes = if Q4 { 16 } else { 32 };
        // SAFETY: every pointer below stays inside its array by the
        // function's contract and the matrix / activation layouts.
        unsafe {
            let xq = x.xq.as_ptr().add(r0 * nb * QK);
            let xs = x.s.as_ptr().add(r0 * nb);
            let end = n_range.end;
            // Q8: rows `AHEAD` on from the one multiplied (see `AHEAD`).
            let row_bytes = nb * block_bytes;
            let ask = |n: usize| {
                let p = w.qs.as_ptr().add(n * row_bytes) as *const i8;
                for at in (0..row_bytes).step_by(64) {
                    _mm_prefetch::<_MM_HINT_T0>(p.add(at));
                }
                let d = w.d.as_ptr().add(n * nb);
                _mm_prefetch::<_MM_HINT_T0>(d as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(d.add(nb - 1) as *const i8);
            };
            if !Q4 {
                (n_range.start..end.min(n_range.start + super::AHEAD)).for_each(ask);
            }
            for n in n_range {
                feed.step();
                let wq = w.qs.as_ptr().add(n * row_bytes);
                let wd = w.d.as_ptr().add(n * nb);
                if !Q4 && n + super::AHEAD < end {
                    ask(n + super::AHEAD);
                }
                // Even and odd blocks in separate accumulators: two FMA
                // chains instead of one. Every row count sums in this same
                // order, so a row's result does not depend on how many rows
                // share its pass (batch invariance).
                let mut even = [_mm256_setzero_ps(); R];
                let mut odd = [_mm256_setzero_ps(); R];
                let mut b = 0;
                while b < nb {
                    let w0 = unpack::<Q4>(wq.add(b * block_bytes));
                    let d0 = splat_f16(wd.add(b));
                    let pair = b + 1 < nb;
                    let w1 = if pair { unpack::<Q4>(wq.add((b + 1) * block_bytes)) } else { w0 };
                    let d1 = if pair { splat_f16(wd.add(b + 1)) } else { d0 };
                    for i in 0..R {
                        let x0 = xq.add((i * nb + b) * QK);
                        let s0 = _mm256_mul_ps(d0, _mm256_broadcast_ss(&*xs.add(i * nb + b)));
                        even[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(block_dot(w0, x0)), s0, even[i]);
                        if pair {
                            let x1 = xq.add((i * nb + b + 1) * QK);
                            let s1 = _mm256_mul_ps(d1, _mm256_broadcast_ss(&*xs.add(i * nb + b + 1)));
                            odd[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(block_dot(w1, x1)), s1, odd[i]);
                        }
                    }
                    b += 2;
                }
                let mut acc = even;
                for (a, o) in acc.iter_mut().zip(odd) {
                    *a = _mm256_add_ps(*a, o);
                }
                // (The Q4 minimum term is added by the caller, per tile.)
                for (i, acc) in acc.iter().enumerate() {
                    *out.add((r0 + i) * out_stride + out_offset + n) = hsum(*acc);
                }
            }
        }
    }

    /// Dispatches `take` (1..=4) rows to the matching specialised pass.
    ///
    /// # Safety
    /// As [`pass`], with `R = take`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn rows(
        w: &QMatrix,
        x: &QActs,
        r0: usize,
        take: usize,
        n_range: std::ops::Range<usize>,
        out: *mut f32,
        out_stride: usize,
        out_offset: usize,
        feed: &mut super::Feed<'_>,
    ) {
        // SAFETY: forwarded contract.
        unsafe {
            match (take, w.kind == QKind::Q4) {
                (1, true) => pass::<1, true>(w, x, r0, n_range, out, out_stride, out_offset, feed),
                (2, true) => pass::<2, true>(w, x, r0, n_range, out, out_stride, out_offset, feed),
                (3, true) => pass::<3, true>(w, x, r0, n_range, out, out_stride, out_offset, feed),
                (_, true) => pass::<4, true>(w, x, r0, n_range, out, out_stride, out_offset, feed),
                (1, false) => pass::<1, false>(w, x, r0, n_range, out, out_stride, out_offset, feed),
                (2, false) => pass::<2, false>(w, x, r0, n_range, out, out_stride, out_offset, feed),
                (3, false) => pass::<3, false>(w, x, r0, n_range, out, out_stride, out_offset, feed),
                (_, false) => pass::<4, false>(w, x, r0, n_range, out, out_stride, out_offset, feed),
            }
        }
    }
}

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
                scalar_pass(w, &acts, 0, rows.min(MAX_ROWS_PER_PASS), 0..rows_w, &mut scalar, rows_w, 0);
                for i in 0..rows.min(MAX_ROWS_PER_PASS) * rows_w {
                    assert!((scalar[i] - out[i]).abs() <= 1e-5 * scale.max(1.0), "scalar and SIMD paths differ at {i}");
                }
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
