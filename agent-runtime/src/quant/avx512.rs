//! The AVX-512 (F and BW) quantized matmul: one block of 32 weights and its
//! 32 int16 activations in one register each, one `madd` per block, sixteen
//! lanes per accumulator. Everything else this path runs (the Q4 minimum
//! term, `axpy`, `dot`, the LoRA up-blocks) is the AVX2 kernels'. Called
//! only when `super::kernels()` chose `Kernels::Avx512`; like every path it
//! sums each output in one fixed order, whatever the rows and threads.

use super::avx2::prefetch_row;
use super::{QActs, QK, QKind, QMatrix};
use half::f16;
use std::arch::x86_64::*;

/// The block's 32 weights as 32 int16, in element order.
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
#[inline]
unsafe fn unpack<const Q4: bool>(p: *const u8) -> __m512i {
    // SAFETY: the caller passes a pointer to a whole block.
    unsafe {
        if Q4 {
            // Byte j holds element j (low nibble) and element j + 16.
            let v = _mm256_cvtepu8_epi16(_mm_loadu_si128(p as *const __m128i));
            let lo = _mm256_and_si256(v, _mm256_set1_epi16(0x0f));
            let hi = _mm256_srli_epi16::<4>(v);
            _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
        } else {
            _mm512_cvtepi8_epi16(_mm256_loadu_si256(p as *const __m256i))
        }
    }
}

/// One f16 scale as f32.
#[inline]
unsafe fn scale(p: *const f16) -> f32 {
    // SAFETY: the caller passes a pointer to one f16.
    unsafe { (*p).to_f32() }
}

/// `R` activation rows from `r0` against weight rows `n_range`: the AVX2
/// pass's structure (even and odd blocks in two chains, the same order for
/// every row count) on 512-bit registers.
///
/// # Safety
/// AVX-512 F and BW, AVX2, FMA and F16C are available; `r0 + R <= x.rows`;
/// `n_range` lies within `w.rows`; `out` holds `(r0 + R) · out_stride`
/// floats.
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn pass<const R: usize, const Q4: bool>(
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
            let mut even = [_mm512_setzero_ps(); R];
            let mut odd = [_mm512_setzero_ps(); R];
            let mut b = 0;
            while b < nb {
                let w0 = unpack::<Q4>(wq.add(b * block_bytes));
                let d0 = scale(wd.add(b));
                let pair = b + 1 < nb;
                let w1 = if pair { unpack::<Q4>(wq.add((b + 1) * block_bytes)) } else { w0 };
                let d1 = if pair { scale(wd.add(b + 1)) } else { d0 };
                for i in 0..R {
                    let x0 = _mm512_loadu_si512(xq.add((i * nb + b) * QK) as *const __m512i);
                    let s0 = _mm512_set1_ps(d0 * *xs.add(i * nb + b));
                    even[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_madd_epi16(w0, x0)), s0, even[i]);
                    if pair {
                        let x1 = _mm512_loadu_si512(xq.add((i * nb + b + 1) * QK) as *const __m512i);
                        let s1 = _mm512_set1_ps(d1 * *xs.add(i * nb + b + 1));
                        odd[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_madd_epi16(w1, x1)), s1, odd[i]);
                    }
                }
                b += 2;
            }
            for i in 0..R {
                // (The Q4 minimum term is added by the caller, per tile.)
                *out.add((r0 + i) * out_stride + out_offset + n) = _mm512_reduce_add_ps(_mm512_add_ps(even[i], odd[i]));
            }
        }
    }
}

/// Dispatches `take` (1..=4) rows to the matching specialised pass.
///
/// # Safety
/// As [`pass`], with `R = take`.
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn rows(
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
