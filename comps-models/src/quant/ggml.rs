//! ggml's block formats read into one canonical form: per 32-value block, every value as a
//! small unsigned integer `q`, one or two scales (one per 16 values for Q6_K) and, for the
//! formats with a minimum, an additive term, so that `value = scale · (q − offset) + min`.
//! Scales are kept as the file stores them: f16 for the 32-value formats; for the K-quants the
//! 6- or 8-bit sub-block scales and minimums under their super-block's f16 scales, whose f32
//! products ([`Canon::scale`], [`Canon::min`]) are the ones ggml's own dequantization
//! computes, so the values are exactly ggml's.

use super::{BLOCK, QKind};

/// Blocks of 32 per K-quant super-block.
pub(super) const SUPER: usize = 8;

/// Row-major canonical rows: `q[row][value]`, `d[row][block][half]`, `m[row][block]` (empty
/// for the formats without a minimum) and, for the K-quants, `sd[row][super-block]` and
/// `sm[row][super-block]`.
#[derive(Debug, Clone)]
pub(super) struct Canon {
    pub kind: QKind,
    pub q: Vec<u8>,
    /// f16 bits (32-value formats) or the sub-block scale's byte (K-quants; Q6_K's is an i8).
    pub d: Vec<u16>,
    /// f16 bits (Q4_1, Q5_1) or the 6-bit sub-block minimum (Q4_K, Q5_K).
    pub m: Vec<u16>,
    /// K-quants: the super-block scale (f16 bits).
    pub sd: Vec<u16>,
    /// Q4_K, Q5_K: the super-block minimum's scale (f16 bits).
    pub sm: Vec<u16>,
}

impl Canon {
    pub fn new(kind: QKind) -> Self {
        Self { kind, q: Vec::new(), d: Vec::new(), m: Vec::new(), sd: Vec::new(), sm: Vec::new() }
    }

    /// Scale `i` (of `d`) as f32.
    pub fn scale(&self, i: usize) -> f32 {
        scale(self.kind, self.d[i], self.sd.get(i / (SUPER * self.kind.halves())).copied().unwrap_or(0))
    }

    /// Block `b`'s minimum as f32.
    pub fn min(&self, b: usize) -> f32 {
        min(self.kind, self.m[b], self.sm.get(b / SUPER).copied().unwrap_or(0))
    }

    /// Append `other`'s rows (same format and width).
    pub fn append(&mut self, other: Canon) {
        self.q.extend(other.q);
        self.d.extend(other.d);
        self.m.extend(other.m);
        self.sd.extend(other.sd);
        self.sm.extend(other.sm);
    }
}

/// A scale from its stored code and (K-quants) its super-block's f16 scale.
#[inline(always)]
pub(super) fn scale(kind: QKind, code: u16, sup: u16) -> f32 {
    match kind {
        QKind::Q4K | QKind::Q5K => f16b(sup) * code as f32,
        QKind::Q6K => f16b(sup) * (code as u8 as i8) as f32,
        _ => f16b(code),
    }
}

/// A minimum from its stored code and (K-quants) its super-block's f16 minimum scale; ggml
/// subtracts `dmin · m`.
#[inline(always)]
pub(super) fn min(kind: QKind, code: u16, sup: u16) -> f32 {
    if kind.is_k() { -(f16b(sup) * code as f32) } else { f16b(code) }
}

fn f16b(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

fn bits(lo: u8, hi: u8) -> u16 {
    u16::from_le_bytes([lo, hi])
}

/// Q4_K / Q5_K's sub-block `j` scale and minimum (6 bits each, packed in 12 bytes).
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

/// Decode `data` (whole ggml blocks of `kind`, rows back to back) into canonical rows.
pub(super) fn decode(kind: QKind, data: &[u8]) -> Canon {
    let (per, bytes) = kind.ggml_block();
    let mut c = Canon::new(kind);
    let values = data.len() / bytes * per;
    c.q.reserve(values);
    c.d.reserve(values / BLOCK * kind.halves());
    for b in data.chunks_exact(bytes) {
        match kind {
            QKind::Q8_0 => {
                c.d.push(bits(b[0], b[1]));
                c.q.extend(b[2..].iter().map(|&v| (v as i8 as i16 + 128) as u8));
            }
            QKind::Q4_0 | QKind::Q4_1 => {
                let qs = if kind == QKind::Q4_1 { &b[4..] } else { &b[2..] };
                c.d.push(bits(b[0], b[1]));
                if kind == QKind::Q4_1 {
                    c.m.push(bits(b[2], b[3]));
                }
                c.q.extend(qs.iter().map(|v| v & 0x0f));
                c.q.extend(qs.iter().map(|v| v >> 4));
            }
            QKind::Q5_0 | QKind::Q5_1 => {
                let at = if kind == QKind::Q5_1 { 4 } else { 2 };
                c.d.push(bits(b[0], b[1]));
                if kind == QKind::Q5_1 {
                    c.m.push(bits(b[2], b[3]));
                }
                let qh = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
                let qs = &b[at + 4..];
                let high = |j: usize| (((qh >> j) & 1) << 4) as u8;
                c.q.extend(qs.iter().enumerate().map(|(j, v)| (v & 0x0f) | high(j)));
                c.q.extend(qs.iter().enumerate().map(|(j, v)| (v >> 4) | high(j + 16)));
            }
            QKind::Q4K | QKind::Q5K => {
                c.sd.push(bits(b[0], b[1]));
                c.sm.push(bits(b[2], b[3]));
                let scales = &b[4..16];
                let (qh, qs) = if kind == QKind::Q5K { (&b[16..48], &b[48..]) } else { (&b[0..0], &b[16..]) };
                for chunk in 0..4 {
                    let ql = &qs[chunk * 32..][..32];
                    for (sub, shift) in [(2 * chunk, 0), (2 * chunk + 1, 4)] {
                        let (sc, mn) = scale_min_k4(sub, scales);
                        // ggml: y = (d·sc)·q − (dmin·m).
                        c.d.push(sc as u16);
                        c.m.push(mn as u16);
                        for (l, v) in ql.iter().enumerate() {
                            let hi = if qh.is_empty() { 0 } else { ((qh[l] >> sub) & 1) << 4 };
                            c.q.push(((v >> shift) & 0x0f) | hi);
                        }
                    }
                }
            }
            QKind::Q6K => {
                let (ql, qh, sc) = (&b[..128], &b[128..192], &b[192..208]);
                c.sd.push(bits(b[208], b[209]));
                let mut q = [0u8; 256];
                for half in 0..2 {
                    let (ql, qh, y) = (&ql[half * 64..], &qh[half * 32..], &mut q[half * 128..]);
                    for l in 0..32 {
                        y[l] = (ql[l] & 0x0f) | ((qh[l] & 3) << 4);
                        y[l + 32] = (ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4);
                        y[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                        y[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
                    }
                }
                c.q.extend_from_slice(&q);
                // One scale per 16 values: two per 32-value block, as ggml multiplies (d·sc)·q.
                c.d.extend(sc.iter().map(|&s| s as u16));
            }
        }
    }
    c
}
