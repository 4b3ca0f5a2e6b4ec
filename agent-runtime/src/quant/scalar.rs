//! The portable paths: what runs where AVX2 is missing, and the reference
//! the AVX2 kernels (`super::avx2`) keep to.

use super::{QActs, QK, QKind, QMatrix};

#[allow(clippy::too_many_arguments)]
pub(super) fn pass(
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

/// `y += a·x`, fused.
pub(super) fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = a.mul_add(x, *y);
    }
}

/// Dot product in eight running sums.
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        for l in 0..8 {
            acc[l] += a[i * 8 + l] * b[i * 8 + l];
        }
    }
    let mut total: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        total += a[i] * b[i];
    }
    total
}

/// [`super::up_block`]: each column summed in rank order, fused.
pub(super) fn up_block<const W: usize>(coef: &[f32], bt: &[half::f16], lo: usize, dst: &mut [f32]) {
    for (c, d) in dst.iter_mut().enumerate() {
        *d = coef.iter().enumerate().fold(*d, |acc, (j, &cj)| cj.mul_add(bt[j * W + lo + c].to_f32(), acc));
    }
}
