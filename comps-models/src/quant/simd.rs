//! The AVX-512 VNNI kernels (compiled where the target has VNNI, VL, BW and FMA): one group
//! of sixteen weight rows (one 512-bit vector of 32-bit lanes) against `T` activation rows,
//! each weight block unpacked once for all of them. 512-bit vectors, not 256: the server cores
//! these kernels were tuned on issue two 512-bit `dpbusd` per cycle against two 256-bit ones,
//! so the same instruction count does twice the work.

use std::arch::x86_64::*;

use super::{Act, BLOCK, GROUP, Group, QKind, ROWS};

/// How far ahead of the block being multiplied the kernels ask for a group's packed values,
/// in bytes. The weights stream from memory once per step (a model does not fit in cache), and
/// the hardware prefetcher alone left the cores waiting: software prefetch at this distance
/// raised streaming throughput by 15-30% at one activation row and by 30-60% at four (2048 and
/// 8192 measured the same as 4096).
const PREFETCH: usize = 4096;

/// Group `w` against the rows of `x` (1 to [`ROWS`]) with the kernel of `kind`, into the
/// first rows of `res`.
pub(super) fn run(kind: QKind, w: Group, x: &[Act], res: &mut [[f32; GROUP]; ROWS]) {
    macro_rules! rows {
        ($f:ident $(, $c:expr)*) => {
            match x.len() {
                1 => res[..1].copy_from_slice(&$f::<1 $(, $c)*>(w, x)),
                2 => res[..2].copy_from_slice(&$f::<2 $(, $c)*>(w, x)),
                3 => res[..3].copy_from_slice(&$f::<3 $(, $c)*>(w, x)),
                4 => res[..4].copy_from_slice(&$f::<4 $(, $c)*>(w, x)),
                5 => res[..5].copy_from_slice(&$f::<5 $(, $c)*>(w, x)),
                6 => res[..6].copy_from_slice(&$f::<6 $(, $c)*>(w, x)),
                7 => res[..7].copy_from_slice(&$f::<7 $(, $c)*>(w, x)),
                _ => *res = $f::<8 $(, $c)*>(w, x),
            }
        };
    }
    match kind {
        QKind::Q8_0 => rows!(bytes),
        QKind::Q4_0 => rows!(nibbles, 0, true, false, false, false),
        QKind::Q4_1 => rows!(nibbles, 0, false, false, true, false),
        QKind::Q4K => rows!(nibbles, 0, false, false, true, true),
        QKind::Q5_0 => rows!(nibbles, 1, true, false, false, false),
        QKind::Q5_1 => rows!(nibbles, 1, false, false, true, false),
        QKind::Q5K => rows!(nibbles, 1, false, false, true, true),
        QKind::Q6K => rows!(nibbles, 2, true, true, false, true),
    }
}

/// One block of 32 activations to Q8_0 (see `super::quantize_block`): the same scale,
/// values and sums as the portable quantizer, with the rounding done by the conversion
/// instruction (to nearest, ties to even).
pub(super) fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, i32, i32) {
    assert!(x.len() == BLOCK && q.len() == BLOCK, "a block is {BLOCK} values");
    // SAFETY: the target features are enabled at compile time (module cfg); the loads read
    // the 32 floats of `x` and the stores write the 32 bytes of `q`, as asserted.
    unsafe {
        let a = _mm512_loadu_ps(x.as_ptr());
        let b = _mm512_loadu_ps(x.as_ptr().add(16));
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
        let d = amax / 127.0;
        let id = _mm512_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
        const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        let qa = _mm512_cvt_roundps_epi32::<NEAREST>(_mm512_mul_ps(a, id));
        let qb = _mm512_cvt_roundps_epi32::<NEAREST>(_mm512_mul_ps(b, id));
        _mm_storeu_si128(q.as_mut_ptr().cast(), _mm512_cvtsepi32_epi8(qa));
        _mm_storeu_si128(q.as_mut_ptr().add(16).cast(), _mm512_cvtsepi32_epi8(qb));
        (d, _mm512_reduce_add_epi32(qa), _mm512_reduce_add_epi32(qb))
    }
}

/// `packed` bytes per row-block, `planes` bit planes, `halves` scales of `dw` bytes per
/// block, an offset, a minimum or not, K-quant super-block scales or not. Returns the blocks
/// per row, after checking every slice the kernels read, and the rows as an array.
fn check<'x, 'a, const T: usize>(
    w: &Group,
    x: &'x [Act<'a>],
    (packed, planes, halves, dw): (usize, usize, usize, usize),
    (off, min, k): (bool, bool, bool),
) -> (usize, &'x [Act<'a>; T]) {
    let x: &[Act; T] = x.try_into().expect("one kernel per row count");
    let nb = x[0].d.len();
    assert!(
        w.qs.len() == nb * GROUP * packed
            && w.hb.len() == nb * planes * 8
            && w.d.len() == nb * halves * GROUP * dw
            && (!min || w.m.len() == nb * GROUP * dw)
            && (!k || (nb.is_multiple_of(8) && w.sup.len() == nb / 8 * 2 * GROUP)),
        "group of the wrong size"
    );
    for a in x {
        assert!(a.q.len() == nb * BLOCK && a.d.len() == nb);
        assert!((!off || a.noff.len() == nb * halves) && (!min || a.smin.len() == nb));
    }
    (nb, x)
}

#[inline(always)]
fn store<const T: usize>(acc: [__m512; T]) -> [[f32; GROUP]; T] {
    let mut out = [[0f32; GROUP]; T];
    for (o, a) in out.iter_mut().zip(acc) {
        // SAFETY: `o` is 16 floats; AVX-512 is enabled at compile time (module cfg).
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), a) };
    }
    out
}

/// Sixteen f16 values at `p` as f32.
///
/// # Safety
/// `p` must be readable for 32 bytes; AVX-512 is enabled at compile time (module cfg).
#[inline(always)]
unsafe fn f16x16(p: *const u8) -> __m512 {
    unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
}

/// Sixteen bytes at `p` (signed or not) as f32.
///
/// # Safety
/// `p` must be readable for 16 bytes.
#[inline(always)]
unsafe fn bytesx16<const SIGNED: bool>(p: *const u8) -> __m512 {
    unsafe {
        let v = _mm_loadu_si128(p.cast());
        _mm512_cvtepi32_ps(if SIGNED { _mm512_cvtepi8_epi32(v) } else { _mm512_cvtepu8_epi32(v) })
    }
}

/// The integer sums of a block for each row, started from the offset term (`−offset · Σ x`,
/// so that the unsigned stored weights give the signed product) where the format has one.
/// Every accumulator of these kernels is an array indexed by constants only, so that it
/// lives in a register: an index that varies with the block (as an earlier version alternated
/// two float chains by `b & 1`) puts the whole array on the stack.
///
/// # Safety
/// With `OFF`, `x[t].noff` must hold `HALVES` entries per block at `b` (as `check` asserts).
#[inline(always)]
unsafe fn starts<const T: usize, const OFF: bool, const HALVES: bool>(x: &[Act; T], b: usize) -> [[__m512i; 2]; T] {
    std::array::from_fn(|t| unsafe {
        let zero = _mm512_setzero_si512();
        match (OFF, HALVES) {
            (false, _) => [zero, zero],
            (true, false) => [_mm512_set1_epi32(*x[t].noff.get_unchecked(b)), zero],
            (true, true) => {
                let n = x[t].noff.as_ptr().add(2 * b);
                [_mm512_set1_epi32(n.read()), _mm512_set1_epi32(n.add(1).read())]
            }
        }
    })
}

/// Q8_0 weights (stored + 128) against Q8_0 activations.
#[inline(always)]
fn bytes<const T: usize>(w: Group, x: &[Act]) -> [[f32; GROUP]; T] {
    let (nb, x) = check::<T>(&w, x, (32, 0, 1, 2), (true, false, false));
    // SAFETY: the target features are enabled at compile time (module cfg). For `b < nb` and
    // `k < 8`, the weight loads read 64 bytes at `b * 512 + k * 64` (inside `w.qs`), the
    // activation loads 4 bytes at `b * 32 + 4k` (inside each `q`), the offset loads one i32 at
    // `b` (inside each `noff`) and the scale loads 16 f16 at byte `b * 32` (inside `w.d`), as
    // `check` asserted.
    unsafe {
        let mut acc = [_mm512_setzero_ps(); T];
        for b in 0..nb {
            let wp = w.qs.as_ptr().add(b * GROUP * 32);
            // Prefetch is a hint: an address past the group's end is never read.
            for line in 0..8 {
                _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(PREFETCH + line * 64).cast());
            }
            // Two integer chains per row (even and odd pieces) halve the dpbusd latency per block.
            let mut s = starts::<T, true, false>(x, b);
            for k in 0..4 {
                let w0 = _mm512_loadu_si512(wp.add(2 * k * 64).cast());
                let w1 = _mm512_loadu_si512(wp.add((2 * k + 1) * 64).cast());
                for t in 0..T {
                    let xp = x[t].q.as_ptr().add(b * 32 + 8 * k).cast::<i32>();
                    s[t][0] = _mm512_dpbusd_epi32(s[t][0], w0, _mm512_set1_epi32(xp.read_unaligned()));
                    s[t][1] = _mm512_dpbusd_epi32(s[t][1], w1, _mm512_set1_epi32(xp.add(1).read_unaligned()));
                }
            }
            let wd = f16x16(w.d.as_ptr().add(b * GROUP * 2));
            for t in 0..T {
                let si = _mm512_add_epi32(s[t][0], s[t][1]);
                let scale = _mm512_mul_ps(wd, _mm512_set1_ps(*x[t].d.get_unchecked(b)));
                acc[t] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(si), acc[t]);
            }
        }
        store(acc)
    }
}

/// Nibble formats: `PLANES` extra bit planes (the fifth and sixth bits), an offset on the
/// stored values (`OFF`), two scales per block (`HALVES`, Q6_K), an additive minimum (`MIN`)
/// and K-quant super-blocks (`K`: byte sub-block scales under f16 super-block scales).
#[inline(always)]
fn nibbles<const T: usize, const PLANES: usize, const OFF: bool, const HALVES: bool, const MIN: bool, const K: bool>(
    w: Group,
    x: &[Act],
) -> [[f32; GROUP]; T] {
    let halves = if HALVES { 2 } else { 1 };
    let dw = if K { 1 } else { 2 };
    let (nb, x) = check::<T>(&w, x, (16, PLANES, halves, dw), (OFF, MIN, K));
    // SAFETY: the target features are enabled at compile time (module cfg). For `b < nb` and
    // `k < 4`: the weight loads read 64 bytes at `b * 256 + k * 64` (inside `w.qs`), the mask
    // loads one u64 at `(b * PLANES + plane) * 8 + 2k + half` (inside `w.hb`), the scale and
    // minimum loads 16 entries of `dw` bytes at entry `(b * halves + h) * 16` and `b * 16`
    // (inside `w.d`, `w.m`), the super-block loads 16 f16 at `b / 8 * 32` and 16 after (inside
    // `w.sup`), the activation loads 4 bytes at `b * 32 + 4k` and `b * 32 + 16 + 4k` (inside
    // each `q`), and the per-block activation loads at `b` (`d`, `smin`) and `b * halves + h`
    // (`noff`), all as `check` asserted.
    unsafe {
        let low = _mm512_set1_epi8(0x0f);
        let bit = [_mm512_set1_epi8(0x10), _mm512_set1_epi8(0x20)];
        let mut acc = [_mm512_setzero_ps(); T];
        let (mut sd, mut sm) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for b in 0..nb {
            if K && b % 8 == 0 {
                let sp = w.sup.as_ptr().add(b / 8 * 2 * GROUP);
                sd = f16x16(sp.cast());
                if MIN {
                    sm = f16x16(sp.add(GROUP).cast());
                }
            }
            let wp = w.qs.as_ptr().add(b * GROUP * 16);
            for line in 0..4 {
                _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(PREFETCH + line * 64).cast());
            }
            let hp = w.hb.as_ptr().add(b * PLANES * 8);
            // Per row: values 0..16 (low nibbles) and 16..32 (high nibbles) apart (for Q6_K,
            // the two halves of the block, each with its own scale and offset).
            let mut s = starts::<T, OFF, HALVES>(x, b);
            for k in 0..4 {
                let v = _mm512_loadu_si512(wp.add(k * 64).cast());
                let mut lo = _mm512_and_si512(v, low);
                let mut hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
                for (plane, add) in bit.iter().enumerate().take(PLANES) {
                    let m = hp.add(plane * 8 + 2 * k);
                    lo = _mm512_mask_add_epi8(lo, m.read(), lo, *add);
                    hi = _mm512_mask_add_epi8(hi, m.add(1).read(), hi, *add);
                }
                for t in 0..T {
                    let xp = x[t].q.as_ptr().add(b * 32);
                    let xlo = _mm512_set1_epi32(xp.add(4 * k).cast::<i32>().read_unaligned());
                    let xhi = _mm512_set1_epi32(xp.add(16 + 4 * k).cast::<i32>().read_unaligned());
                    s[t][0] = _mm512_dpbusd_epi32(s[t][0], lo, xlo);
                    s[t][1] = _mm512_dpbusd_epi32(s[t][1], hi, xhi);
                }
            }
            // The rows' scales (per half) and minimums, as f32 (`HALVES` is Q6_K, whose
            // sub-block scales are signed).
            let wd = |h: usize| {
                let p = w.d.as_ptr().add((b * halves + h) * GROUP * dw);
                if K { _mm512_mul_ps(sd, bytesx16::<HALVES>(p)) } else { f16x16(p) }
            };
            let (d0, d1) = (wd(0), if HALVES { wd(1) } else { _mm512_setzero_ps() });
            let mv = if !MIN {
                _mm512_setzero_ps()
            } else if K {
                _mm512_mul_ps(sm, bytesx16::<false>(w.m.as_ptr().add(b * GROUP)))
            } else {
                f16x16(w.m.as_ptr().add(b * GROUP * 2))
            };
            for t in 0..T {
                let dx = _mm512_set1_ps(*x[t].d.get_unchecked(b));
                if HALVES {
                    // (d0·s0 + d1·s1)·dx: one multiply by the activation scale for both halves.
                    let y = _mm512_mul_ps(d0, _mm512_cvtepi32_ps(s[t][0]));
                    let y = _mm512_fmadd_ps(d1, _mm512_cvtepi32_ps(s[t][1]), y);
                    acc[t] = _mm512_fmadd_ps(y, dx, acc[t]);
                } else {
                    let si = _mm512_add_epi32(s[t][0], s[t][1]);
                    acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(d0, dx), _mm512_cvtepi32_ps(si), acc[t]);
                }
                if MIN {
                    // Σ (q·d + m)·x = d·dx·Σ q·xq + m·(dx·Σ xq); the K-quants' minimums
                    // are subtracted (ggml's − dmin·m).
                    let xs = _mm512_set1_ps(*x[t].smin.get_unchecked(b));
                    acc[t] = if K { _mm512_fnmadd_ps(mv, xs, acc[t]) } else { _mm512_fmadd_ps(mv, xs, acc[t]) };
                }
            }
        }
        store(acc)
    }
}
