/*
 * TurboQuant block math for the Metal backend: quantize one block (set_rows, cpy from f32),
 * dequantize 4 consecutive values (the flash-attention vec kernels) or 16 (get_rows, cpy,
 * the f16 conversion before the flash-attention matrix kernels).
 *
 * Written in the subset of the Metal Shading Language that shim/metal_shim.h also compiles
 * as C++17, so `nox -s parity` runs this exact code on Linux against the numpy reference.
 * Include it after <metal_stdlib> (`using namespace metal;`) or after shim/metal_shim.h.
 * turboquant_metal_ggml.h wraps it in the function shapes ggml's Metal kernels take.
 *
 * GPU design (issue 6; the fork's traps were divergent codebook lookups in constant memory
 * and a 3-bit unpack whose values straddle bytes):
 * - The codebook lives in instructions, not memory: tq_metal_level() is a tree of selects
 *   over compile-time constants (turboquant_metal_tables.h), so a lookup costs the same
 *   whether the 32 threads of a SIMD group ask for one level or for 32 different ones.
 * - Decode reads whole bytes: the 4 values of a chunk are one byte of the 2-bit plane (or
 *   two of the 4-bit plane) plus half a byte of the high-bit plane, so no value straddles a
 *   byte and no read is unaligned.
 * - Quantize runs one thread per block, as ggml's set_rows kernels do. Metal has no double,
 *   and the format's scale and decisions are defined in double, so the quantizer carries
 *   IEEE binary64 arithmetic in 64-bit integers (the tq_f64_* functions below): bit-exact
 *   with the C and numpy code, immune to fast-math, and only O(n) integer work per block,
 *   which is small next to attention.
 */
#ifndef TURBOQUANT_METAL_H
#define TURBOQUANT_METAL_H

#include "turboquant_metal_tables.h"

/* ---- layout ---------------------------------------------------------------------------- */

/* Bytes of one block; 0 for an unsupported (bits, n). */
inline int tq_block_size(int bits, int n)
{
    if ((n != 64 && n != 128) || bits < 2 || bits > 5) {
        return 0;
    }
    return 2 + n * bits / 8;
}

/* Width of the low plane (2 or 4 bits) and the start of the high-bit plane (3 and 5 bits). */
inline int tq_lo_width(int bits) { return (bits == 3) ? 2 : (bits == 5) ? 4 : bits; }
inline int tq_hi_start(int bits, int n) { return 2 + n * tq_lo_width(bits) / 8; }

/* ---- decode ---------------------------------------------------------------------------- */

inline float tq_scale(device const uchar *blk)
{
    return float(as_type<half>((ushort)((uint)blk[0] | ((uint)blk[1] << 8))));
}

/* Values 4*il .. 4*il+3 of a block: x_j = d * level[idx_j], one float multiply each. */
inline void tq_dequantize_4(device const uchar *blk, int bits, int n, int il, thread float *out)
{
    const float d = tq_scale(blk);
    const int lw = tq_lo_width(bits);
    const uint lo = (lw == 2) ? (uint)blk[2 + il]
                              : ((uint)blk[2 + 2 * il] | ((uint)blk[3 + 2 * il] << 8));
    const uint hi = (lw != bits) ? ((uint)blk[tq_hi_start(bits, n) + il / 2] >> (4 * (il % 2)))
                                 : 0u;
    const uint lo_mask = (1u << lw) - 1u;
    for (int j = 0; j < 4; j++) {
        const uint k = ((lo >> (lw * j)) & lo_mask) | (((hi >> j) & 1u) << lw);
        out[j] = d * tq_metal_level(bits, n, k);
    }
}

/* Values 16*il .. 16*il+15 of a block. */
inline void tq_dequantize_16(device const uchar *blk, int bits, int n, int il, thread float *out)
{
    for (int q = 0; q < 4; q++) {
        tq_dequantize_4(blk, bits, n, 4 * il + q, out + 4 * q);
    }
}

/* ---- binary64 in integers (quantizer only) ----------------------------------------------
 * Values are IEEE double bit patterns in a ulong. Every double the quantizer meets is zero
 * or normal: squares and products of floats lie in [2^-298, 2^256], the norm's reciprocal
 * and the scale in [2^-160, 2^150], far inside binary64's normal range. So there are no
 * subnormal, infinite or NaN doubles to handle (non-finite input is caught before). */

struct tq_f64 {
    ulong m; /* significand with the hidden bit at 52; 0 means zero */
    int e;   /* unbiased exponent */
    uint s;  /* sign */
};

inline uint tq_clz64(ulong x)
{
    const uint hi = (uint)(x >> 32);
    return hi != 0u ? clz(hi) : 32u + clz((uint)x);
}

inline tq_f64 tq_f64_unpack(ulong b)
{
    tq_f64 r;
    r.s = (uint)(b >> 63);
    const int ex = (int)((b >> 52) & (ulong)0x7FF);
    r.m = ex == 0 ? (ulong)0 : ((b & (ulong)0xFFFFFFFFFFFFF) | ((ulong)1 << 52));
    r.e = ex - 1023;
    return r;
}

inline ulong tq_f64_pack(tq_f64 v)
{
    const ulong sign = (ulong)v.s << 63;
    if (v.m == 0) {
        return sign;
    }
    return sign | ((ulong)(v.e + 1023) << 52) | (v.m & (ulong)0xFFFFFFFFFFFFF);
}

/* m with its low `extra` bits dropped, rounded to nearest-even; `sticky` says that nonzero
 * bits were already dropped below m. The result may carry into one more bit. */
inline ulong tq_round_drop(ulong m, int extra, bool sticky)
{
    ulong keep = m >> extra;
    const ulong rem = m & (((ulong)1 << extra) - (ulong)1);
    const ulong half_ulp = (ulong)1 << (extra - 1);
    if (rem > half_ulp || (rem == half_ulp && (sticky || (keep & (ulong)1) != 0))) {
        keep += 1;
    }
    return keep;
}

/* Round m (53 + extra significant bits) to a double's 53. */
inline tq_f64 tq_f64_round(uint s, int e, ulong m, int extra, bool sticky)
{
    tq_f64 r;
    r.m = tq_round_drop(m, extra, sticky);
    r.e = e;
    r.s = s;
    if (r.m == ((ulong)1 << 53)) {
        r.m >>= 1;
        r.e += 1;
    }
    return r;
}

/* Exact widening of a float's bits (subnormal floats included). */
inline tq_f64 tq_f64_from_float(uint f)
{
    tq_f64 r;
    r.s = f >> 31;
    const int ex = (int)((f >> 23) & 0xFFu);
    const uint frac = f & 0x7FFFFFu;
    if (ex != 0) {
        r.m = (ulong)(frac | 0x800000u) << 29;
        r.e = ex - 127;
    } else if (frac != 0u) {
        const int top = 31 - (int)clz(frac);
        r.m = (ulong)frac << (52 - top);
        r.e = top - 149;
    } else {
        r.m = 0;
        r.e = 0;
    }
    return r;
}

/* a * b rounded to nearest-even, for a widened from a float (24 significant bits): the
 * product has at most 77 bits, held in two ulongs. A float times a float is exact. */
inline tq_f64 tq_f64_mul_float(tq_f64 a, tq_f64 b)
{
    tq_f64 r;
    r.s = a.s ^ b.s;
    if (a.m == 0 || b.m == 0) {
        r.m = 0;
        r.e = 0;
        return r;
    }
    const ulong ma = a.m >> 29;
    const ulong p_lo = ma * (b.m & (ulong)0xFFFFFFFF);
    const ulong p_hi = ma * (b.m >> 32);
    const ulong lo = p_lo + (p_hi << 32);
    const ulong hi = (p_hi >> 32) + (lo < p_lo ? (ulong)1 : (ulong)0);
    /* The product lies in [2^75, 2^77): keep its top 53 bits. */
    const bool top76 = (hi >> 12) != 0;
    const int extra = top76 ? 24 : 23;
    const ulong m = (hi << (64 - extra)) | (lo >> extra);
    const ulong rem = lo & (((ulong)1 << extra) - 1);
    /* Round on the 53 kept bits plus one guard bit: shift rem's top into a guard position
     * and fold the rest into sticky. */
    const ulong guard = rem >> (extra - 1);
    const bool sticky = (rem & (((ulong)1 << (extra - 1)) - 1)) != 0;
    return tq_f64_round(r.s, a.e + b.e + (top76 ? 1 : 0), (m << 1) | guard, 1, sticky);
}

inline tq_f64 tq_f64_add(tq_f64 a, tq_f64 b)
{
    if (b.m == 0) {
        if (a.m == 0) {
            a.s = a.s & b.s;
        }
        return a;
    }
    if (a.m == 0) {
        return b;
    }
    if (b.e > a.e || (b.e == a.e && b.m > a.m)) {
        const tq_f64 t = a;
        a = b;
        b = t;
    }
    /* 10 guard bits below the significand; the smaller operand is shifted with its lost
     * bits jammed into the lowest bit, which keeps nearest-even rounding exact. */
    const ulong ma = a.m << 10;
    ulong mb = b.m << 10;
    const int shift = a.e - b.e;
    if (shift >= 63) {
        mb = 1;
    } else if (shift > 0) {
        const bool lost = (mb & (((ulong)1 << shift) - 1)) != 0;
        mb = (mb >> shift) | (lost ? (ulong)1 : (ulong)0);
    }
    ulong m = a.s == b.s ? ma + mb : ma - mb;
    tq_f64 r;
    if (m == 0) {
        r.m = 0;
        r.e = 0;
        r.s = 0;
        return r;
    }
    int e = a.e;
    const int top = 63 - (int)tq_clz64(m);
    if (top == 63) {
        m = (m >> 1) | (m & 1);
        e += 1;
    } else if (top < 62) {
        m <<= (62 - top);
        e -= 62 - top;
    }
    return tq_f64_round(a.s, e, m, 10, false);
}

/* a / b for b != 0: restoring long division to 56 quotient bits plus a sticky remainder. */
inline tq_f64 tq_f64_div(tq_f64 a, tq_f64 b)
{
    tq_f64 r;
    r.s = a.s ^ b.s;
    if (a.m == 0) {
        r.m = 0;
        r.e = 0;
        return r;
    }
    ulong rem = a.m;
    int e = a.e - b.e;
    if (rem < b.m) {
        rem <<= 1;
        e -= 1;
    }
    ulong q = 0;
    for (int i = 0; i < 56; i++) {
        q <<= 1;
        if (rem >= b.m) {
            rem -= b.m;
            q |= 1;
        }
        rem <<= 1;
    }
    return tq_f64_round(r.s, e, q, 3, rem != 0);
}

/* sqrt(a) for a > 0: digit-by-digit integer square root of the significand scaled by 2^56,
 * giving 55 root bits and a sticky remainder. */
inline tq_f64 tq_f64_sqrt(tq_f64 a)
{
    ulong m = a.m;
    int e = a.e - 52;
    if ((e & 1) != 0) {
        m <<= 1;
        e -= 1;
    }
    ulong rem = 0;
    ulong q = 0;
    for (int i = 0; i < 55; i++) {
        const int p = 108 - 2 * i;
        const ulong pair = p >= 56 ? ((m >> (p - 56)) & (ulong)3) : (ulong)0;
        rem = (rem << 2) | pair;
        const ulong t = (q << 2) | (ulong)1;
        if (rem >= t) {
            rem -= t;
            q = (q << 1) | (ulong)1;
        } else {
            q <<= 1;
        }
    }
    return tq_f64_round(0u, e / 2 + 26, q, 2, rem != 0);
}

/* Total order key of a double's bits for a >= b, with -0.0 equal to +0.0. */
inline ulong tq_f64_key(ulong b)
{
    if ((b << 1) == 0) {
        b = 0;
    }
    return (b >> 63) != 0 ? ~b : (b | ((ulong)1 << 63));
}

/* The contract's fixed order: acc[i % 8] += t_i, then ((0+4)+(2+6)) + ((1+5)+(3+7)). */
inline tq_f64 tq_f64_lane8_total(thread const tq_f64 *acc)
{
    const tq_f64 a = tq_f64_add(tq_f64_add(acc[0], acc[4]), tq_f64_add(acc[2], acc[6]));
    const tq_f64 b = tq_f64_add(tq_f64_add(acc[1], acc[5]), tq_f64_add(acc[3], acc[7]));
    return tq_f64_add(a, b);
}

/* double -> float bits, nearest-even (float subnormals and overflow to Inf included). */
inline uint tq_f64_to_float(tq_f64 v)
{
    const uint sign = v.s << 31;
    if (v.m == 0) {
        return sign;
    }
    if (v.e > 127) {
        return sign | 0x7F800000u;
    }
    if (v.e >= -126) {
        ulong f = tq_round_drop(v.m, 29, false);
        int e = v.e;
        if (f == ((ulong)1 << 24)) {
            f >>= 1;
            e += 1;
        }
        if (e > 127) {
            return sign | 0x7F800000u;
        }
        return sign | ((uint)(e + 127) << 23) | ((uint)f & 0x7FFFFFu);
    }
    /* Subnormal float: units of 2^-149, so value = m * 2^(e - 52) is m >> (-e - 97). Past a
     * shift of 54 even the largest m is below half a unit. */
    const int shift = -v.e - 97;
    if (shift > 54) {
        return sign;
    }
    return sign | (uint)tq_round_drop(v.m, shift, false);
}

/* float bits -> fp16 bits, nearest-even, saturating at +-65504 (Inf included). */
inline ushort tq_float_to_half_sat(uint x)
{
    const uint sign = (x >> 16) & 0x8000u;
    const uint ax = x & 0x7FFFFFFFu;
    if (ax > 0x7F800000u) {
        return (ushort)(sign | 0x7E00u | ((ax >> 13) & 0x3FFu));
    }
    if (ax >= 0x477FF000u) {
        return (ushort)(sign | 0x7BFFu);
    }
    if (ax >= 0x38800000u) {
        return (ushort)(sign | ((ax - 0x38000000u + 0xFFFu + ((ax >> 13) & 1u)) >> 13));
    }
    if (ax <= 0x33000000u) {
        return (ushort)sign;
    }
    const uint mant = (ax & 0x7FFFFFu) | 0x800000u;
    const uint shift = 126u - (ax >> 23);
    uint q = mant >> shift;
    const uint rem = mant & ((1u << shift) - 1u);
    const uint half_unit = 1u << (shift - 1u);
    if (rem > half_unit || (rem == half_unit && (q & 1u) != 0u)) {
        q += 1u;
    }
    return (ushort)(sign | q);
}

/* ---- encode ---------------------------------------------------------------------------- */

/* Index of u: the number of midpoints <= u (binary search; the midpoints ascend). */
inline uint tq_search(ulong u_key, constant ulong *mid, int bits)
{
    uint k = 0;
    for (int s = (1 << bits) >> 1; s > 0; s >>= 1) {
        if (u_key >= tq_f64_key(mid[k + (uint)s - 1u])) {
            k += (uint)s;
        }
    }
    return k;
}

/* Quantize one rotated block of n floats into tq_block_size(bits, n) bytes at dst. */
inline void tq_quantize_block(device const float *y, int bits, int n, device uchar *dst)
{
    constant ulong *mid = tq_metal_mid(bits, n);
    const int lw = tq_lo_width(bits);
    const int hi_start = tq_hi_start(bits, n);

    bool finite = true;
    tq_f64 acc[8];
    for (int l = 0; l < 8; l++) {
        acc[l] = tq_f64_from_float(0u);
    }
    for (int i = 0; i < n; i++) {
        const uint f = as_type<uint>(y[i]);
        finite = finite && (f & 0x7F800000u) != 0x7F800000u;
        const tq_f64 v = tq_f64_from_float(f);
        acc[i % 8] = tq_f64_add(acc[i % 8], tq_f64_mul_float(v, v));
    }
    const tq_f64 sum_sq = tq_f64_lane8_total(acc);

    /* Non-finite blocks store NaN and index 0; all-zero blocks scale 0 and treat every u as
     * 0.0, which lands on the smallest positive level. */
    const bool zero = finite && sum_sq.m == 0;
    tq_f64 inv = tq_f64_from_float(0u);
    if (finite && !zero) {
        inv = tq_f64_div(tq_f64_from_float(0x3F800000u), tq_f64_sqrt(sum_sq));
    }
    const uint zero_index = tq_search(tq_f64_key(0), mid, bits);

    tq_f64 p[8];
    tq_f64 q[8];
    for (int l = 0; l < 8; l++) {
        p[l] = tq_f64_from_float(0u);
        q[l] = p[l];
    }
    /* Groups of 8 values fill whole bytes of every plane, and visit the lanes in order. */
    for (int g = 0; g < n; g += 8) {
        uint k8[8];
        for (int l = 0; l < 8; l++) {
            const uint f = as_type<uint>(y[g + l]);
            uint k = zero ? zero_index : 0u;
            if (finite && !zero) {
                const tq_f64 v = tq_f64_from_float(f);
                k = tq_search(tq_f64_key(tq_f64_pack(tq_f64_mul_float(v, inv))), mid, bits);
                const tq_f64 c = tq_f64_from_float(as_type<uint>(tq_metal_level(bits, n, k)));
                p[l] = tq_f64_add(p[l], tq_f64_mul_float(v, c));
                q[l] = tq_f64_add(q[l], tq_f64_mul_float(c, c));
            }
            k8[l] = k;
        }
        const uint lo_mask = (1u << lw) - 1u;
        for (int b = 0; b < lw; b++) {
            const int per_byte = 8 / lw;
            uint byte = 0;
            for (int t = 0; t < per_byte; t++) {
                byte |= (k8[b * per_byte + t] & lo_mask) << (lw * t);
            }
            dst[2 + (g * lw) / 8 + b] = (uchar)byte;
        }
        if (lw != bits) {
            uint byte = 0;
            for (int l = 0; l < 8; l++) {
                byte |= ((k8[l] >> lw) & 1u) << l;
            }
            dst[hi_start + g / 8] = (uchar)byte;
        }
    }

    ushort d = 0;
    if (!finite) {
        d = 0x7E00;
    } else if (!zero) {
        const tq_f64 pp = tq_f64_lane8_total(p);
        const tq_f64 qq = tq_f64_lane8_total(q);
        if (qq.m != 0) {
            d = tq_float_to_half_sat(tq_f64_to_float(tq_f64_div(pp, qq)));
        }
    }
    dst[0] = (uchar)(d & 0xFFu);
    dst[1] = (uchar)(d >> 8);
}

#endif /* TURBOQUANT_METAL_H */
