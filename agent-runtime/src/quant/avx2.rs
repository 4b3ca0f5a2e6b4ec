//! The AVX2 (with FMA and F16C) kernels: the quantized matmul's passes and
//! minima term, `axpy`, `dot`, and the LoRA up-projection's blocks. Each is
//! called only after `super::has_avx2()` said yes; `super::scalar` holds
//! the portable paths. One output's arithmetic never depends on the other
//! rows or columns of its call.

use super::{QActs, QK, QKind, QMatrix};
use half::f16;
use std::arch::x86_64::*;

/// # Safety
/// AVX2, FMA and F16C are available.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (px, py) = (x.as_ptr(), y.as_mut_ptr());
    let mut i = 0;
    // SAFETY: every load and store touches 8 values below `n`.
    unsafe {
        let av = _mm256_set1_ps(a);
        while i + 8 <= n {
            _mm256_storeu_ps(py.add(i), _mm256_fmadd_ps(av, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i))));
            i += 8;
        }
    }
    for (y, x) in y[i..n].iter_mut().zip(&x[i..n]) {
        *y = a.mul_add(*x, *y);
    }
}

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

/// Asks for weight row `n` (its `row_bytes` of blocks and its scales) in
/// L1 ahead of its multiplication: a hint, which reads and faults on
/// nothing. Shared by the AVX2 and AVX-512 passes.
#[inline]
pub(super) fn prefetch_row(w: &QMatrix, n: usize, row_bytes: usize) {
    let nb = w.cols / QK;
    let p = w.qs.as_ptr().wrapping_add(n * row_bytes) as *const i8;
    let d = w.d.as_ptr().wrapping_add(n * nb) as *const i8;
    // SAFETY: a prefetch reads nothing and faults on nothing.
    unsafe {
        for at in (0..row_bytes).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(at));
        }
        _mm_prefetch::<_MM_HINT_T0>(d);
        _mm_prefetch::<_MM_HINT_T0>(d.wrapping_add(2 * (nb - 1)));
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
        let ask = |n: usize| prefetch_row(w, n, row_bytes);
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

/// # Safety
/// AVX2, FMA and F16C are available.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut i = 0;
    // SAFETY: every load reads 8 values below `n`.
    let mut total = unsafe {
        let mut acc = [_mm256_setzero_ps(); 4];
        while i + 32 <= n {
            for (k, acc) in acc.iter_mut().enumerate() {
                let at = i + 8 * k;
                *acc = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(at)), _mm256_loadu_ps(pb.add(at)), *acc);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc[0]);
            i += 8;
        }
        hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])))
    };
    for (x, y) in a[i..n].iter().zip(&b[i..n]) {
        total = x.mul_add(*y, total);
    }
    total
}

/// Eight f16 from `p`, as f32.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn load_f16(p: *const half::f16) -> __m256 {
    // SAFETY: the caller passes a pointer to 8 f16.
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
}

/// [`super::up_block`]: whole runs of 32 columns in four
/// accumulators held over the rank, then 8 at a time, then single
/// columns, each column's sum in the same order.
///
/// # Safety
/// AVX2, FMA and F16C are available; `lo + dst.len() <= UP_COLS`,
/// `bt.len() == coef.len() · UP_COLS`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn up_block<const W: usize>(coef: &[f32], bt: &[half::f16], lo: usize, dst: &mut [f32]) {
    let n = dst.len();
    let (pb, pd) = (bt.as_ptr().wrapping_add(lo), dst.as_mut_ptr());
    let mut c = 0;
    // SAFETY: every load and store touches 8 columns below `n`,
    // within the block by the contract.
    unsafe {
        while c + 32 <= n {
            let mut acc: [__m256; 4] = std::array::from_fn(|k| _mm256_loadu_ps(pd.add(c + 8 * k)));
            for (j, &cj) in coef.iter().enumerate() {
                // The same line three blocks on: ahead of the
                // hardware prefetcher, which stops at page
                // boundaries (a batch of distinct adapters reads
                // each factor once per step, from memory).
                _mm_prefetch::<_MM_HINT_T0>(pb.wrapping_add(3 * coef.len() * W + j * W + c) as *const i8);
                let cv = _mm256_set1_ps(cj);
                for (k, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm256_fmadd_ps(cv, load_f16(pb.add(j * W + c + 8 * k)), *acc);
                }
            }
            for (k, acc) in acc.iter().enumerate() {
                _mm256_storeu_ps(pd.add(c + 8 * k), *acc);
            }
            c += 32;
        }
        while c + 8 <= n {
            let mut acc = _mm256_loadu_ps(pd.add(c));
            for (j, &cj) in coef.iter().enumerate() {
                acc = _mm256_fmadd_ps(_mm256_set1_ps(cj), load_f16(pb.add(j * W + c)), acc);
            }
            _mm256_storeu_ps(pd.add(c), acc);
            c += 8;
        }
    }
    for (k, d) in dst.iter_mut().enumerate().skip(c) {
        *d = coef.iter().enumerate().fold(*d, |acc, (j, &cj)| cj.mul_add(bt[j * W + lo + k].to_f32(), acc));
    }
}

/// [`super::head_attention`] with [`dot`] and [`axpy`] inlined.
///
/// # Safety
/// AVX2, FMA and F16C are available.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn head_attention(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    at: usize,
    kv_dim: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    // SAFETY: this function's features are the kernels' own.
    super::attend(
        q,
        keys,
        values,
        at,
        kv_dim,
        scale,
        scores,
        out,
        |a, b| unsafe { dot(a, b) },
        |a, x, y| unsafe { axpy(a, x, y) },
    );
}
