//! The portable kernels: what machines without AVX-512 VNNI run, and the tests' cross-check of
//! the SIMD ones. They compute the same integer block products and combine them with the same
//! scales, one activation row at a time.

use super::{Act, BLOCK, GROUP, Group, QKind};

/// Packed byte `j` of row `i` in block `b` of a group (`p` bytes per row-block).
#[inline(always)]
fn byte(qs: &[u8], p: usize, b: usize, i: usize, j: usize) -> u8 {
    qs[(b * p / 4 + j / 4) * GROUP * 4 + i * 4 + j % 4]
}

/// Value `v` of row `i` in block `b`, as stored (unsigned, offset included).
#[inline(always)]
fn value(kind: QKind, w: &Group, b: usize, i: usize, v: usize) -> i32 {
    if kind.bytes() {
        return byte(w.qs, 32, b, i, v) as i32;
    }
    let mut q = if v < 16 { byte(w.qs, 16, b, i, v) & 0x0f } else { byte(w.qs, 16, b, i, v - 16) >> 4 } as i32;
    let planes = kind.planes();
    for plane in 0..planes {
        let mask = w.hb[((b * planes + plane) * 4 + v % 16 / 4) * 2 + v / 16];
        q |= (((mask >> (4 * i + v % 4)) & 1) as i32) << (4 + plane);
    }
    q
}

/// One group of eight weight rows against one activation row.
pub(super) fn group(kind: QKind, w: Group, x: &Act) -> [f32; GROUP] {
    let nb = x.d.len();
    let (off, halves) = (kind.offset(), kind.halves());
    let mut out = [0f32; GROUP];
    for (i, o) in out.iter_mut().enumerate() {
        for b in 0..nb {
            let xb = &x.q[b * BLOCK..(b + 1) * BLOCK];
            if halves == 2 {
                for h in 0..2 {
                    let s: i32 = (16 * h..16 * h + 16).map(|v| value(kind, &w, b, i, v) * xb[v] as i32).sum();
                    let s = s - off * x.s16[2 * b + h];
                    *o += w.d[(2 * b + h) * GROUP + i] * x.d[b] * s as f32;
                }
            } else {
                let s: i32 = (0..BLOCK).map(|v| value(kind, &w, b, i, v) * xb[v] as i32).sum();
                let s = s - off * x.s32[b];
                *o += w.d[b * GROUP + i] * x.d[b] * s as f32;
            }
            if kind.has_min() {
                *o += w.m[b * GROUP + i] * x.smin[b];
            }
        }
    }
    out
}
