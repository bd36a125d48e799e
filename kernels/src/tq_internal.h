/* Internal interface between the dispatcher and the scalar / SIMD paths. */
#ifndef TQ_INTERNAL_H
#define TQ_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "turboquant.h"

#define TQ_MAX_LEVELS (1 << TQ_MAX_BITS)

struct tq_codebook {
    int bits;
    int n;
    int nlev;            /* 2^bits */
    const float *levels; /* nlev float32 levels, ascending */
    const double *mid;   /* nlev - 1 decision midpoints, ascending */
};

/* NULL for an unsupported (bits, n) pair. */
const struct tq_codebook *tq_codebook_get(int bits, int n);

/* D1 and D2 of the rotation; n = 64 uses the first 64 entries. */
extern const float *const tq_sign1;
extern const float *const tq_sign2;

/* fp16 bit pattern of the scale of a block with a non-finite value. */
#define TQ_D_NAN 0x7E00u

static inline uint32_t tq_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float tq_f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* fp16 bits to float, exactly (subnormals, infinities and NaN payloads kept): inline, since
 * every decoded block starts with it; tq_fp16_to_float is the exported copy. */
static inline float tq_half_to_float(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t mant = h & 0x3FFu;

    if (exp == 0x1F) {
        return tq_f32_from_bits(sign | 0x7F800000u | (mant << 13));
    }
    if (exp != 0) {
        return tq_f32_from_bits(sign | ((exp + 112u) << 23) | (mant << 13));
    }
    if (mant == 0) {
        return tq_f32_from_bits(sign);
    }
    /* Subnormal fp16 is a normal float: shift the leading one into the hidden bit. */
    uint32_t e = 113;
    while (!(mant & 0x400u)) {
        mant <<= 1;
        e--;
    }
    return tq_f32_from_bits(sign | (e << 23) | ((mant & 0x3FFu) << 13));
}

/* Bytes of a block of a format already checked (tq_block_bytes checks it). */
static inline size_t tq_block_size(const struct tq_codebook *cb)
{
    return 2 + (size_t)(cb->n * cb->bits / 8);
}

/* Byte offsets inside a block: the scale, then the low plane, then the high-bit plane (for
 * 3 and 5 bits). */
static inline int tq_lo_bits(int bits) { return bits == 3 ? 2 : bits == 5 ? 4 : bits; }
static inline size_t tq_hi_offset(int bits, int n)
{
    return 2 + (size_t)(n * tq_lo_bits(bits) / 8);
}

/* One index byte per value into the block's planes (after its 2 scale bytes). */
void tq_pack_indices(int bits, int n, const uint8_t *idx, uint8_t *blk);

/*
 * Each path processes whole, validated blocks: cb is valid, nblocks >= 0. Scratch lives on
 * the stack (at most TQ_MAX_BLOCK bytes), never on the heap.
 */
void tq_quantize_blocks_scalar(const struct tq_codebook *cb, const float *y, uint8_t *dst,
                               int64_t nblocks);
void tq_dequantize_blocks_scalar(const struct tq_codebook *cb, const uint8_t *src, float *y,
                                 int64_t nblocks);
void tq_rotate_blocks_scalar(int n, float *x, int64_t nblocks, int inverse);

/* dot(decode(x), y) over nblocks blocks, summed in chunks of TQ_DOT_CHUNK floats, each chunk
 * in 8 lanes (lane l takes elements 8i + l) reduced as ((0+4)+(2+6))+((1+5)+(3+7)), the chunk
 * sums added in order. Every path computes exactly this, so the paths agree bit for bit. */
#define TQ_DOT_CHUNK 512
typedef void (*tq_dequantize_blocks_fn)(const struct tq_codebook *cb, const uint8_t *src,
                                        float *y, int64_t nblocks);
void tq_dot_blocks_decoded(tq_dequantize_blocks_fn decode, const struct tq_codebook *cb,
                           const uint8_t *src, const float *y, int64_t nblocks, float *out);

/* A tile of rows read against nq queries (tq_vec_dot_rows_f32, tq_vec_mad_rows_f32): nrows
 * rows of nblocks blocks, row r at src + r * stride bytes. The _decoded versions decode each
 * row (a chunk at a time) into a buffer with the path's dequantize, once for all queries. */
struct tq_tile {
    const uint8_t *src;
    size_t stride;
    int64_t nrows;
    int64_t nblocks;
};
void tq_dot_rows_decoded(tq_dequantize_blocks_fn decode, const struct tq_codebook *cb,
                         const struct tq_tile *t, const float *q, int nq, float *out);
void tq_mad_rows_decoded(tq_dequantize_blocks_fn decode, const struct tq_codebook *cb,
                         const struct tq_tile *t, const float *w, int nq, float *acc);

#if defined(TQ_HAVE_AVX2)
void tq_quantize_blocks_avx2(const struct tq_codebook *cb, const float *y, uint8_t *dst,
                             int64_t nblocks);
void tq_dequantize_blocks_avx2(const struct tq_codebook *cb, const uint8_t *src, float *y,
                               int64_t nblocks);
void tq_rotate_blocks_avx2(int n, float *x, int64_t nblocks, int inverse);
void tq_dot_blocks_avx2(const struct tq_codebook *cb, const uint8_t *src, const float *y,
                        int64_t nblocks, float *out);
void tq_dot_rows_avx2(const struct tq_codebook *cb, const struct tq_tile *t, const float *q,
                      int nq, float *out);
void tq_mad_rows_avx2(const struct tq_codebook *cb, const struct tq_tile *t, const float *w,
                      int nq, float *acc);
#endif

#if defined(TQ_HAVE_NEON)
void tq_quantize_blocks_neon(const struct tq_codebook *cb, const float *y, uint8_t *dst,
                             int64_t nblocks);
void tq_dequantize_blocks_neon(const struct tq_codebook *cb, const uint8_t *src, float *y,
                               int64_t nblocks);
void tq_rotate_blocks_neon(int n, float *x, int64_t nblocks, int inverse);
#endif

static inline float tq_next_up(float t)
{
    if (t == 0.0f) {
        return tq_f32_from_bits(1u);
    }
    const uint32_t b = tq_f32_bits(t);
    return tq_f32_from_bits((b >> 31) ? b - 1u : b + 1u);
}

/*
 * Smallest float t with (double)t * inv >= m: the quantizer's decision on u = y * inv moved
 * into the float domain of y, so SIMD paths compare floats instead of computing u in double.
 * Exact because fl64(t * inv) is monotone in t, and -0.0 and +0.0 fall on the same side.
 * Returns -INF when every finite float qualifies, +INF when none does. The first guess is
 * within an ulp or two, so each loop runs once or twice.
 */
static inline float tq_float_threshold(double m, double gamma, double inv)
{
    const float fmax = 3.40282346638528859812e+38f;
    const float inf = tq_f32_from_bits(0x7F800000u);
    const double g = m * gamma;
    float t = g >= fmax ? fmax : g <= -fmax ? -fmax : (float)g;

    if ((double)t * inv >= m) {
        for (;;) {
            if (t == -fmax) {
                return -inf;
            }
            const float below = -tq_next_up(-t);
            if (!((double)below * inv >= m)) {
                return t;
            }
            t = below;
        }
    }
    for (;;) {
        if (t == fmax) {
            return inf;
        }
        t = tq_next_up(t);
        if ((double)t * inv >= m) {
            return t;
        }
    }
}

#endif /* TQ_INTERNAL_H */
