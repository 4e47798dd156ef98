//! The portable kernels: what machines without AVX-512 VNNI run, and the tests' cross-check of
//! the SIMD ones. They compute the same integer block products and combine them with the same
//! scales, one activation row at a time.

use super::{Act, BLOCK, GROUP, Group, QKind};

/// One group of weight rows against one activation row.
pub(super) fn group(kind: QKind, w: Group, x: &Act) -> [f32; GROUP] {
    let nb = x.d.len();
    let halves = kind.halves();
    let span = BLOCK / halves;
    let mut out = [0f32; GROUP];
    for (i, o) in out.iter_mut().enumerate() {
        for b in 0..nb {
            let xb = &x.q[b * BLOCK..(b + 1) * BLOCK];
            for h in 0..halves {
                let s: i32 = (span * h..span * (h + 1)).map(|v| w.value(kind, b, i, v) * xb[v] as i32).sum();
                let offset = if kind.offset() == 0 { 0 } else { x.noff[b * halves + h] };
                *o += w.scale(kind, b, h, i) * x.d[b] * (s + offset) as f32;
            }
            if kind.has_min() {
                *o += w.min(kind, b, i) * x.smin[b];
            }
        }
    }
    out
}
