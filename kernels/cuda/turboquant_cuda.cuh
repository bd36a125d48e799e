/*
 * The turbo block formats (reference/SPEC.md) as CUDA code that compiles for the device and
 * for the host: one block quantized (SET_ROWS, CPY from f32) and values decoded (GET_ROWS,
 * CPY, the f16 conversion, flash attention). Without nvcc it is plain C++17, which is how
 * `nox -s parity` checks it bit for bit on a machine without a GPU (shim/cuda_shim.cpp);
 * tools/tq_cuda_parity.cu runs the same functions on a GPU.
 *
 * Exactness on the device, where ggml-cuda compiles with -use_fast_math:
 * - every double operation is IEEE (fast-math only changes single precision), and every
 *   product the quantizer adds up is exact in double (float x float), so FMA contraction
 *   cannot change a sum;
 * - -ftz would flush a subnormal float when it is widened to double, so tq_cu_widen builds
 *   the double from the float's bits;
 * - decode is one float multiply of normal floats (|d| >= 2^-24, |level| >= 0.0058), and a
 *   NaN scale gives the quieted NaN of the scale, as a CPU multiply does, not the GPU's
 *   canonical NaN (except in the flash-attention decode, tq_cu_staged, where any NaN does).
 */
#ifndef TURBOQUANT_CUDA_CUH
#define TURBOQUANT_CUDA_CUH

#include <stdint.h>

#ifdef __CUDACC__
#include <cuda_fp16.h>
#define TQ_CU_HD __host__ __device__ __forceinline__
#else
#include <math.h>
#include <string.h>
#define TQ_CU_HD inline
#endif

#include "turboquant_cuda_tables.cuh"

/* Layout of a block of N values at B bits (SPEC.md section 6): fp16 scale in bytes 0-1, the
 * low plane (B, or 2 for B = 3, 4 for B = 5, bits per value) from byte 2, then for B = 3
 * and 5 the plane of each value's top bit. */
template <int B, int N> struct tq_cu_format {
    static constexpr int bits = B;
    static constexpr int n = N;
    static constexpr int lo_bits = B == 3 ? 2 : (B == 5 ? 4 : B);
    static constexpr int hi_offset = 2 + N * lo_bits / 8;
    static constexpr int nbytes = 2 + N * B / 8;
};

TQ_CU_HD float tq_cu_f32_from_bits(uint32_t u)
{
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
#endif
}

TQ_CU_HD uint32_t tq_cu_bits_from_f32(float f)
{
#ifdef __CUDA_ARCH__
    return __float_as_uint(f);
#else
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
#endif
}

/* Exact float -> double, subnormals included, whatever the flush-to-zero mode. */
TQ_CU_HD double tq_cu_widen(float f)
{
    const uint32_t b = tq_cu_bits_from_f32(f);
    if ((b & 0x7F800000u) == 0u) {
        const double m = (double)(int32_t)(b & 0x7FFFFFu) * 1.401298464324817e-45; /* 2^-149 */
        return (b >> 31) != 0u ? -m : m;
    }
    return (double)f;
}

/* IEEE binary16 -> float, exact (NaN payloads kept). */
TQ_CU_HD float tq_cu_half_to_float(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1Fu;
    const uint32_t mant = h & 0x3FFu;
    if (exp == 0x1Fu) {
        return tq_cu_f32_from_bits(sign | 0x7F800000u | (mant << 13));
    }
    if (exp != 0u) {
        return tq_cu_f32_from_bits(sign | ((exp + 112u) << 23) | (mant << 13));
    }
    /* Zero or subnormal: mant * 2^-24, exact in float. */
    const float m = (float)mant * 5.9604644775390625e-08f;
    return tq_cu_f32_from_bits(sign | tq_cu_bits_from_f32(m));
}

/* float -> fp16 bits, nearest-even, saturating at 65504 (SPEC.md section 4 step 6). */
TQ_CU_HD uint16_t tq_cu_fp16_from_float(float f)
{
    const uint32_t x = tq_cu_bits_from_f32(f);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7FFFFFFFu;
    if (ax > 0x7F800000u) {
        return (uint16_t)(sign | 0x7E00u | (ax >> 13 & 0x3FFu));
    }
    if (ax >= 0x477FF000u) {
        return (uint16_t)(sign | 0x7BFFu);
    }
    if (ax >= 0x38800000u) {
        const uint32_t r = ax - 0x38000000u + 0xFFFu + ((ax >> 13) & 1u);
        return (uint16_t)(sign | (r >> 13));
    }
    if (ax <= 0x33000000u) {
        return sign;
    }
    const uint32_t mant = (ax & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126u - (ax >> 23);
    uint32_t q = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u) != 0u)) {
        q++;
    }
    return (uint16_t)(sign | q);
}

/* The contract's 8-lane order: acc[i % 8] += term_i, then this fixed tree. */
TQ_CU_HD double tq_cu_lane8_total(const double acc[8])
{
    return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

/* Quantize one block of N floats y (already rotated) into its nbytes bytes at blk (any
 * alignment): SPEC.md section 4, steps 1-6, then the layout of section 6. One thread. */
template <int B, int N> TQ_CU_HD void tq_cu_quantize_block(const float *y, uint8_t *blk)
{
    typedef tq_cu_format<B, N> F;
    typedef tq_cu_codebook<B, N> C;
    static_assert(N % 8 == 0, "blocks hold whole groups of 8 values");

    double acc[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    for (int i = 0; i < N; i++) {
        const double v = tq_cu_widen(y[i]);
        acc[i % 8] += v * v;
    }
    const double gamma = sqrt(tq_cu_lane8_total(acc));

    uint16_t d_bits = 0x7E00u;
    if (!(gamma - gamma == 0.0)) { /* Inf or NaN: poison the block, every index 0 */
        for (int i = 2; i < F::nbytes; i++) {
            blk[i] = 0;
        }
    } else {
        const double inv = gamma == 0.0 ? 0.0 : 1.0 / gamma;
        double p[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
        double q[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
        for (int g = 0; g < N / 8; g++) {
            uint32_t lo = 0; /* 8 values of the low plane: lo_bits bytes */
            uint32_t hi = 0; /* their top bits: one byte */
            for (int l = 0; l < 8; l++) {
                const double v = tq_cu_widen(y[8 * g + l]);
                const double u = gamma == 0.0 ? 0.0 : v * inv;
                const unsigned k = C::index(u);
                const double c = (double)C::level(k);
                p[l] += v * c;
                q[l] += c * c;
                lo |= (uint32_t)(k & ((1u << F::lo_bits) - 1u)) << (F::lo_bits * l);
                hi |= (uint32_t)(k >> F::lo_bits) << l;
            }
            for (int b = 0; b < F::lo_bits; b++) {
                blk[2 + g * F::lo_bits + b] = (uint8_t)(lo >> (8 * b));
            }
            if (F::lo_bits != B) {
                blk[F::hi_offset + g] = (uint8_t)hi;
            }
        }
        const double P = tq_cu_lane8_total(p);
        const double Q = tq_cu_lane8_total(q);
        const double d = (Q == 0.0 || gamma == 0.0) ? 0.0 : P / Q;
        d_bits = tq_cu_fp16_from_float((float)d);
    }
    blk[0] = (uint8_t)(d_bits & 0xFFu);
    blk[1] = (uint8_t)(d_bits >> 8);
}

/* The block's scale as a float. */
TQ_CU_HD float tq_cu_block_scale(const uint8_t *blk)
{
    return tq_cu_half_to_float((uint16_t)(blk[0] | (uint16_t)blk[1] << 8));
}

/* d * level, with a NaN scale giving its own quieted NaN on every platform. */
TQ_CU_HD float tq_cu_scale_level(float d, float level)
{
    if (d != d) {
        return tq_cu_f32_from_bits(tq_cu_bits_from_f32(d) | 0x00400000u);
    }
    return d * level;
}

/* Index of value j (0 <= j < N) of a block. */
template <int B, int N> TQ_CU_HD unsigned tq_cu_index_at(const uint8_t *blk, int j)
{
    typedef tq_cu_format<B, N> F;
    const int per_byte = 8 / F::lo_bits;
    unsigned k = (blk[2 + j / per_byte] >> (F::lo_bits * (j % per_byte))) & ((1u << F::lo_bits) - 1u);
    if (F::lo_bits != B) {
        k |= (unsigned)((blk[F::hi_offset + j / 8] >> (j % 8)) & 1u) << F::lo_bits;
    }
    return k;
}

/* Value j of a block, decoded: half_to_float(d) * C32[idx_j] (SPEC.md section 4, Decode). */
template <int B, int N> TQ_CU_HD float tq_cu_decode_one(const uint8_t *blk, int j)
{
    return tq_cu_scale_level(tq_cu_block_scale(blk), tq_cu_codebook<B, N>::level(tq_cu_index_at<B, N>(blk, j)));
}

/* x >> s for s >= 0, x << -s otherwise (s a constant after unrolling). */
TQ_CU_HD uint32_t tq_cu_shr(uint32_t x, int s)
{
    return s >= 0 ? x >> s : x << -s;
}

TQ_CU_HD uint32_t tq_cu_load_u16(const uint8_t *p)
{
#ifdef __CUDA_ARCH__
    return *(const uint16_t *)p;
#else
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
#endif
}

TQ_CU_HD uint32_t tq_cu_load_u32(const uint8_t *p)
{
#ifdef __CUDA_ARCH__
    return *(const uint32_t *)p;
#else
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
#endif
}

/* PTX prmt (default mode) for selectors whose four low nibbles are < 8: byte i of the result
 * is byte s[4i+3:4i] of the pair (b:a), the high half of s ignored; the host emulates it.
 * Not __byte_perm, which masks every selector with 0x7777 first (an instruction per call). */
TQ_CU_HD uint32_t tq_cu_prmt(uint32_t a, uint32_t b, uint32_t s)
{
#ifdef __CUDA_ARCH__
    uint32_t r;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(s));
    return r;
#else
    const uint64_t x = (uint64_t)b << 32 | a;
    uint32_t r = 0;
    for (int i = 0; i < 4; i++) {
        r |= (uint32_t)((x >> (8 * ((s >> (4 * i)) & 7u))) & 0xFFu) << (8 * i);
    }
    return r;
#endif
}

/* float -> fp16 bits, nearest-even, as the hardware converts (__float2half_rn): unlike
 * tq_cu_fp16_from_float, a float of 65520 or more becomes infinity; the same bits on the
 * host for every float that is not NaN. */
TQ_CU_HD uint16_t tq_cu_fp16_rn(float f)
{
#ifdef __CUDA_ARCH__
    return __half_as_ushort(__float2half_rn(f));
#else
    const uint32_t x = tq_cu_bits_from_f32(f);
    const uint32_t ax = x & 0x7FFFFFFFu;
    if (ax >= 0x477FF000u && ax <= 0x7F800000u) {
        return (uint16_t)(((x >> 16) & 0x8000u) | 0x7C00u);
    }
    return tq_cu_fp16_from_float(f);
#endif
}

/* A block as the flash-attention kernel stages it in shared memory: its NB bytes copied to
 * OFF = 14 of an SB-byte slot (SB a multiple of 16), so the scale sits at 14 and the index
 * planes start at 16, aligned for whole-word loads; the codebook is a table of NLUT floats
 * (lut_entry(k) for k < NLUT), which a warp reads without bank conflicts whatever the
 * indices, since NLUT <= 32 entries lie in distinct banks. */
template <int B, int N> struct tq_cu_staged {
    typedef tq_cu_format<B, N> F;
    static constexpr int QK = N;
    static constexpr int NB = F::nbytes;
    static constexpr int OFF = 14;
    static constexpr int LO = N * F::lo_bits / 8;
    static constexpr int SB = (16 + LO + (F::lo_bits != B ? N / 8 : 0) + 15) / 16 * 16;
    static constexpr int NLUT = 1 << B;

    static TQ_CU_HD float lut_entry(int k) { return tq_cu_codebook<B, N>::level((unsigned)k); }

    /* The scale d of the staged block sb, which every value of the block shares. */
    static TQ_CU_HD float scale(const uint8_t *sb)
    {
#ifdef __CUDA_ARCH__
        return __half2float(*(const half *)(sb + 14)); /* exact; a NaN becomes the GPU's own */
#else
        return tq_cu_half_to_float((uint16_t)tq_cu_load_u16(sb + 14));
#endif
    }

    /* The codebook levels lut[idx] of values j0 .. j0+7 (j0 % 8 == 0) of the staged block
     * sb, before the scale: the flash-attention kernel multiplies a sum of them by d once. */
    static TQ_CU_HD void levels8(const uint8_t *sb, int j0, const float *lut, float out[8])
    {
        constexpr int LB = F::lo_bits;
        const uint32_t lo = LB == 2 ? tq_cu_load_u16(sb + 16 + j0 / 4) : tq_cu_load_u32(sb + 16 + j0 / 2);
        const uint32_t hi = LB != B ? sb[16 + LO + j0 / 8] : 0u;
        levels8_bits(lo, hi, lut, out);
    }

    /* levels8 of index planes already loaded, as bits8 and the staged block hold them: value
     * l's low bits at lo_bits * l of lo, its top bit (B = 3, 5) at bit l of hi. */
    static TQ_CU_HD void levels8_bits(uint32_t lo, uint32_t hi, const float *lut, float out[8])
    {
        constexpr int LB = F::lo_bits;
        for (int l = 0; l < 8; l++) {
            /* the byte offset 4 * idx of the table entry, each plane's bits shifted straight
             * into place (two shifts and one three-input logic op on a GPU) */
            const uint32_t o = (tq_cu_shr(lo, LB * l - 2) & (((1u << LB) - 1u) << 2)) |
                               (tq_cu_shr(hi, l - LB - 2) & (LB != B ? 1u << (LB + 2) : 0u));
            out[l] = *(const float *)((const char *)lut + o);
        }
    }

    /* The codebook as fp16 byte tables for levels8_h: lo[i] holds the low bytes of levels
     * 4i .. 4i+3, hi[i] their high bytes; for B = 5 the lower 16 levels only (the codebook
     * is symmetric: level 31 - k is -level k, exactly, in float and in fp16). */
    static constexpr bool H8 = B <= 5;
    static constexpr int NLH = B < 4 ? 1 << B : 16; /* levels in the tables */
    static constexpr int NT8 = NLH / 4;
    struct hlut {
        uint32_t lo[NT8];
        uint32_t hi[NT8];
    };
    static TQ_CU_HD void hlut_init(hlut &t)
    {
        for (int i = 0; i < NT8; i++) {
            t.lo[i] = 0u;
            t.hi[i] = 0u;
            for (int b = 0; b < 4 && 4 * i + b < NLH; b++) {
                const uint32_t h = tq_cu_fp16_rn(lut_entry(4 * i + b));
                t.lo[i] |= (h & 0xFFu) << (8 * b);
                t.hi[i] |= (h >> 8) << (8 * b);
            }
        }
    }
    /* The index planes of values j0 .. j0+7 (j0 % 8 == 0) of the block whose first byte is
     * blk (a row in memory, 2-byte aligned, or a staged block at sb + 14): lo holds their
     * 8 x lo_bits bits, hi their top bits (B = 3, 5; else 0). */
    static TQ_CU_HD void bits8(const uint8_t *blk, int j0, uint32_t &lo, uint32_t &hi)
    {
        bits8_at(blk + lo_at(j0), blk + hi_at(j0), lo, hi);
    }
    /* Where bits8's planes of values j0 .. j0+7 start in their block, bytes; linear in j0, so
     * a kernel can keep a lane's part in a pointer and the rest in load offsets. */
    static TQ_CU_HD constexpr int lo_at(int j0) { return 2 + j0 * F::lo_bits / 8; }
    static TQ_CU_HD constexpr int hi_at(int j0) { return F::hi_offset + j0 / 8; }
    /* bits8 from the planes' bytes: lo_p = blk + lo_at(j0), hi_p = blk + hi_at(j0). */
    static TQ_CU_HD void bits8_at(const uint8_t *lo_p, const uint8_t *hi_p, uint32_t &lo, uint32_t &hi)
    {
        constexpr int LB = F::lo_bits;
        lo = LB == 2 ? tq_cu_load_u16(lo_p) : tq_cu_load_u16(lo_p) | tq_cu_load_u16(lo_p + 2) << 16;
        hi = LB != B ? *hi_p : 0u;
    }
    /* Bit i of the 8-bit hi at bit 4i (the top bits of 8 values, one per nibble). */
    static TQ_CU_HD uint32_t nibbles8(uint32_t hi)
    {
        uint32_t y = hi;
        y = (y | y << 12) & 0x000F000Fu;
        y = (y | y << 6) & 0x03030303u;
        return (y | y << 3) & 0x11111111u;
    }
    /* Two rows' top bits (B = 3) into the selectors of levels8x2_h and levels8p_h: h holds the
     * 16 bits as four per byte, in the order of the values of se (nibble k: value p = 2k) and
     * so (p = 2k + 1); bit p goes to bit 2 of its nibble. */
    static TQ_CU_HD void add_top_bits(uint32_t h, uint32_t &se, uint32_t &so)
    {
        h = (h | h << 2) & 0x33333333u;
        h = (h | h << 1) & 0x55555555u; /* bit p at bit 2p */
        se |= (h << 2) & 0x44444444u;
        so |= h & 0x44444444u;
    }
    /* The low bytes (lb) and the high bytes (hb) of the fp16 levels of 4 table indices, one
     * per nibble of the low 16 bits of x: a byte permute of the tables in registers, two
     * levels deep where the tables hold 16 levels (B >= 4: bit 3 of a nibble picks levels
     * 8-15). */
    static TQ_CU_HD void bytes4(uint32_t x, const hlut &t, uint32_t &lb, uint32_t &hb)
    {
        lb = table4(x, t.lo);
        hb = table4(x, t.hi);
    }
    /* Bytes k of the NT8-word table w for 4 indices k, one per nibble of the low 16 bits of
     * x: one byte permute, or for 16 entries (B >= 4) two and a third that bit 3 of each
     * nibble steers. */
    static TQ_CU_HD uint32_t table4(uint32_t x, const uint32_t (&w)[NT8])
    {
        if (B >= 4) {
            const uint32_t s = x & 0x7777u;
            const uint32_t ch = ((x >> 3) & 0x1111u) * 4u + 0x3210u; /* selector i: i + 4 * bit 3 */
            return tq_cu_prmt(tq_cu_prmt(w[0], w[1], s), tq_cu_prmt(w[2 % NT8], w[3 % NT8], s), ch);
        }
        return tq_cu_prmt(w[0], w[1 % NT8], x);
    }
    /* The 8 values of bits8 as fp16 codebook levels before the scale, fp16(lut_entry(idx))
     * bit for bit: out[i] holds values 2i (low half) and 2i+1. Byte permutes of the tables
     * in registers, no table reads in memory: the index bits are spread to one nibble per
     * value (the selectors), then each selector picks the low and the high byte of its
     * level. B = 5 takes the 16-level tables at index lo ^ 15 where the top bit is set and
     * negates those values (level 16 + k is -level(15 - k)). */
    static TQ_CU_HD void levels8_h(uint32_t lo, uint32_t hi, const hlut &t, uint32_t out[4])
    {
        constexpr int LB = F::lo_bits;
        uint32_t s; /* nibble i: the table index of value i */
        if (LB == 2) {
            uint32_t x = tq_cu_prmt(lo, 0u, 0x4140u);
            x = (x | x << 4) & 0x0F0F0F0Fu;
            x = (x | x << 2) & 0x33333333u;
            if (B == 3) {
                x += nibbles8(hi) << 2;
            }
            s = x;
        } else {
            s = lo;
            if (B == 5) {
                s ^= nibbles8(hi) * 15u;
            }
        }
        for (int h = 0; h < 2; h++) {
            uint32_t lb; /* the low bytes of the 4 levels */
            uint32_t hb; /* their high bytes */
            bytes4(s >> (16 * h), t, lb, hb);
            out[2 * h] = tq_cu_prmt(lb, hb, 0x5140u);
            out[2 * h + 1] = tq_cu_prmt(lb, hb, 0x7362u);
        }
        if (B == 5) {
            /* the top bits of values 2i, 2i+1 to the fp16 sign bits 15, 31 of word i: hi times
             * 2^(15-2i) + 2^(30-2i), whose two shifted copies of hi's 8 bits do not overlap */
            for (int i = 0; i < 4; i++) {
                out[i] ^= (hi * ((0x8000u >> (2 * i)) + (0x40000000u >> (2 * i)))) & 0x80008000u;
            }
        }
    }
    /* The order of the words levels8x2_h returns: word u holds values pfirst(u) (low half)
     * and pfirst(u) + PSTEP of the 8. */
    static constexpr int PSTEP = F::lo_bits == 2 ? 2 : 1;
    static TQ_CU_HD constexpr int pfirst(int u) { return F::lo_bits == 2 ? (u % 2) * 4 + u / 2 : 2 * u; }

    /* The selectors of two rows' 8 values for 2-bit low planes (B = 2, 3): nibble k of sel[0]
     * holds value 2k's table index of row a, of sel[1] value 2k+1's, sel[2] and sel[3] row
     * b's. Both rows' index bits are spread in one pass of 32-bit operations, and the values
     * go to the selectors by parity (the low bits of values 0, 2, 4, 6 are already the low
     * bits of nibbles 0..3 of the plane). */
    static TQ_CU_HD void sel8x2(uint32_t lo_a, uint32_t hi_a, uint32_t lo_b, uint32_t hi_b, uint32_t sel[4])
    {
        const uint32_t l = tq_cu_prmt(lo_a, lo_b, 0x5410u); /* a's 16 bits, then b's */
        uint32_t se = l & 0x33333333u;                      /* nibble k: value 2k's low bits */
        uint32_t so = (l >> 2) & 0x33333333u;               /* value 2k+1's */
        if (B == 3) {
            const uint32_t h = tq_cu_prmt(hi_a, hi_b, 0x5410u); /* top bit of value i at bit i */
            add_top_bits((h | h << 4) & 0x0F0F0F0Fu, se, so);
        }
        sel[0] = se;
        sel[1] = so;
        sel[2] = se >> 16;
        sel[3] = so >> 16;
    }

    /* levels8_h of two rows' 8 values (a: lo_a, hi_a; b: lo_b, hi_b, as bits8 gives them) in
     * the order pfirst / PSTEP. For 2-bit low planes (B = 2, 3) through sel8x2, about half
     * the instructions of levels8_h's natural order; the flash-attention kernel permutes Q
     * or the output dims to match. B = 4 keeps levels8_h. */
    static TQ_CU_HD void levels8x2_h(uint32_t lo_a, uint32_t hi_a, uint32_t lo_b, uint32_t hi_b, const hlut &t,
                                     uint32_t a[4], uint32_t b[4])
    {
        if (F::lo_bits != 2) {
            levels8_h(lo_a, hi_a, t, a);
            levels8_h(lo_b, hi_b, t, b);
            return;
        }
        uint32_t sel[4];
        sel8x2(lo_a, hi_a, lo_b, hi_b, sel);
        for (int k = 0; k < 4; k++) {
            uint32_t *out = k < 2 ? a : b;
            uint32_t lb;
            uint32_t hb;
            bytes4(sel[k], t, lb, hb);
            out[2 * (k % 2)] = tq_cu_prmt(lb, hb, 0x5140u);
            out[2 * (k % 2) + 1] = tq_cu_prmt(lb, hb, 0x7362u);
        }
    }

    /* The codebook as int8 for the flash-attention kernel's integer score product (B <= 4):
     * level k is about i8_step() * i8(k), i8(k) = rint(127 * level(k) / max |level|), one
     * byte per level in i8lut's words (level 4i + b at byte b of w[i]). Symmetric like the
     * levels: i8(NLUT - 1 - k) = -i8(k). The rounding moves a level by at most half a step,
     * 0.4 % of the largest level. */
    static constexpr bool I8 = B <= 4;
    struct i8lut {
        uint32_t w[NT8];
    };
    static TQ_CU_HD float i8_step() { return lut_entry(NLUT - 1) / 127.0f; }
    static TQ_CU_HD void i8lut_init(i8lut &t)
    {
        const float inv = 127.0f / lut_entry(NLUT - 1);
        for (int i = 0; i < NT8; i++) {
            t.w[i] = 0u;
            for (int b = 0; b < 4 && 4 * i + b < NLH; b++) {
                t.w[i] |= ((uint32_t)(int)rintf(lut_entry(4 * i + b) * inv) & 0xFFu) << (8 * b);
            }
        }
    }
    /* Which of the 8 values byte i of word w of levels8x2_i8 holds: the A fragment of an
     * int8 mma takes a row's values 4 at a time, and the queries' B fragment is packed in
     * the same order. */
    static TQ_CU_HD constexpr int i8val(int w, int i) { return F::lo_bits == 2 ? 2 * i + w : 4 * w + i; }
    /* Two rows' 8 values (as levels8x2_h takes them) as int8 levels: a[w], b[w] hold values
     * i8val(w, 0..3) of rows a and b. The selectors are sel8x2's (B <= 3) or the 4-bit
     * plane itself; one byte permute (B <= 3) or three (B = 4) give 4 values, where the
     * fp16 levels take 4 or 8 and 2 more to join the bytes. */
    static TQ_CU_HD void levels8x2_i8(uint32_t lo_a, uint32_t hi_a, uint32_t lo_b, uint32_t hi_b, const i8lut &t,
                                      uint32_t a[2], uint32_t b[2])
    {
        uint32_t sel[4] = {lo_a, lo_a >> 16, lo_b, lo_b >> 16};
        if (F::lo_bits == 2) {
            sel8x2(lo_a, hi_a, lo_b, hi_b, sel);
        }
        a[0] = table4(sel[0], t.w);
        a[1] = table4(sel[1], t.w);
        b[0] = table4(sel[2], t.w);
        b[1] = table4(sel[3], t.w);
    }

    /* levels8_h of two rows' 8 values paired by value (B <= 4): out[v] holds value v of row a
     * (low half) and value v of row b, the two rows of one dim as the flash-attention kernel's
     * V^T operand takes them. The rows' low planes are interleaved by byte before the
     * selectors are cut, so each selector word holds a's and b's indices of the same two
     * values, and the byte permute that joins a level's low and high bytes pairs the rows
     * too: none is left to pair them afterwards (levels8x2_h's words take 16 more per 8
     * values). */
    static constexpr bool PAIRED = B <= 4;
    static TQ_CU_HD void levels8p_h(uint32_t lo_a, uint32_t hi_a, uint32_t lo_b, uint32_t hi_b, const hlut &t,
                                    uint32_t out[8])
    {
        constexpr int LB = F::lo_bits;
        uint32_t sel[4]; /* nibbles: a's and b's indices of values v, v' (k = 0..3: v = 0, 1, 4, 5
                          * and v' = v + 2 for 2-bit planes; v = 0, 2, 4, 6 and v' = v + 1 for 4-bit) */
        if (LB == 2) {
            const uint32_t l = tq_cu_prmt(lo_a, lo_b, 0x5140u); /* values 0-3 of a, of b, 4-7 of a, of b */
            uint32_t se = l & 0x33333333u;                      /* a0 a2 b0 b2 a4 a6 b4 b6 */
            uint32_t so = (l >> 2) & 0x33333333u;               /* a1 a3 b1 b3 a5 a7 b5 b7 */
            if (B == 3) {
                const uint32_t h = tq_cu_prmt(hi_a, hi_b, 0x4040u); /* a, b, a, b: in l's order */
                add_top_bits((h & 0x00000F0Fu) | ((h >> 4) & 0x0F0F0000u), se, so);
            }
            sel[0] = se;
            sel[1] = so;
            sel[2] = se >> 16;
            sel[3] = so >> 16;
        } else {
            const uint32_t l0 = tq_cu_prmt(lo_a, lo_b, 0x5140u); /* a0 a1 b0 b1 a2 a3 b2 b3 */
            const uint32_t l1 = tq_cu_prmt(lo_a, lo_b, 0x7362u); /* a4 a5 b4 b5 a6 a7 b6 b7 */
            sel[0] = l0;
            sel[1] = l0 >> 16;
            sel[2] = l1;
            sel[3] = l1 >> 16;
        }
        for (int k = 0; k < 4; k++) {
            uint32_t lb; /* the low bytes of the levels of a's v, v', b's v, v' */
            uint32_t hb; /* their high bytes */
            bytes4(sel[k], t, lb, hb);
            const int v = LB == 2 ? (k % 2) + 4 * (k / 2) : 2 * k;
            out[v] = tq_cu_prmt(lb, hb, 0x6240u);
            out[v + (LB == 2 ? 2 : 1)] = tq_cu_prmt(lb, hb, 0x7351u);
        }
    }

    /* Values j0 .. j0+7 (j0 % 8 == 0) of the block whose first byte is blk (a row in memory,
     * 2-byte aligned) as fp16 bits, two per word (value 2i in the low half of out[i]):
     * fp16_rn(tq_cu_decode_one(blk, j)) bit for bit, the conversion of a turbo K/V to f16
     * that flash attention runs before its tensor-core kernels. */
    static TQ_CU_HD void decode8_f16(const uint8_t *blk, int j0, const float *lut, uint32_t out[4])
    {
        uint32_t lo;
        uint32_t hi;
        bits8(blk, j0, lo, hi);
        float f[8];
        levels8_bits(lo, hi, lut, f);
        const float d = tq_cu_block_scale(blk);
        for (int i = 0; i < 4; i++) {
            out[i] = (uint32_t)tq_cu_fp16_rn(tq_cu_scale_level(d, f[2 * i])) |
                     (uint32_t)tq_cu_fp16_rn(tq_cu_scale_level(d, f[2 * i + 1])) << 16;
        }
    }

    /* Values j0 .. j0+7 of the staged block sb: d * lut[idx], one float multiply each (a NaN
     * scale gives a NaN, the GPU's own on a GPU). */
    static TQ_CU_HD void decode8(const uint8_t *sb, int j0, const float *lut, float out[8])
    {
        const float d = scale(sb);
        levels8(sb, j0, lut, out);
        for (int l = 0; l < 8; l++) {
            out[l] = d * out[l];
        }
    }
};

#endif /* TURBOQUANT_CUDA_CUH */
