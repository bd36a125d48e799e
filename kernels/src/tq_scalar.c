/*
 * Scalar reference path: a literal transcription of the format contract. It is the path
 * the SIMD code and the Metal header are checked against, so it favours clarity over speed.
 */
#include <math.h>

#include "tq_internal.h"

uint16_t tq_fp16_from_float(float f)
{
    const uint32_t x = tq_f32_bits(f);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7FFFFFFFu;

    if (ax > 0x7F800000u) {
        return (uint16_t)(sign | 0x7E00u | (ax >> 13 & 0x3FFu));
    }
    /* 65520 and above would round to Inf; the format saturates instead. */
    if (ax >= 0x477FF000u) {
        return (uint16_t)(sign | 0x7BFFu);
    }
    if (ax >= 0x38800000u) {
        /* Normal fp16: rebias the exponent, round the 13 dropped bits to nearest even; a
         * carry out of the mantissa correctly bumps the exponent. */
        const uint32_t r = ax - 0x38000000u + 0xFFFu + ((ax >> 13) & 1u);
        return (uint16_t)(sign | (r >> 13));
    }
    /* At or below 2^-25, half the smallest subnormal, the tie goes to even: zero. */
    if (ax <= 0x33000000u) {
        return sign;
    }
    const uint32_t mant = (ax & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126u - (ax >> 23); /* 14 .. 24 */
    uint32_t q = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) {
        q++;
    }
    return (uint16_t)(sign | q);
}

float tq_fp16_to_float(uint16_t h) { return tq_half_to_float(h); }

/* The contract's fixed "8-lane" order: acc[i % 8] += term_i, then a fixed pairwise tree. */
static double lane8_total(const double acc[8])
{
    return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

void tq_pack_indices(int bits, int n, const uint8_t *idx, uint8_t *blk)
{
    uint8_t *lo = blk + 2;
    uint8_t *hi = blk + tq_hi_offset(bits, n);
    const int lo_bits = tq_lo_bits(bits);
    const int per_byte = 8 / lo_bits;
    const unsigned lo_mask = (1u << lo_bits) - 1u;

    memset(blk + 2, 0, (size_t)(n * bits / 8));
    for (int j = 0; j < n; j++) {
        lo[j / per_byte] |= (uint8_t)((idx[j] & lo_mask) << (lo_bits * (j % per_byte)));
        if (bits != lo_bits) {
            hi[j / 8] |= (uint8_t)((idx[j] >> lo_bits) << (j % 8));
        }
    }
}

static void unpack_indices(int bits, int n, const uint8_t *blk, uint8_t *idx)
{
    const uint8_t *lo = blk + 2;
    const uint8_t *hi = blk + tq_hi_offset(bits, n);
    const int lo_bits = tq_lo_bits(bits);
    const int per_byte = 8 / lo_bits;
    const unsigned lo_mask = (1u << lo_bits) - 1u;

    for (int j = 0; j < n; j++) {
        unsigned v = (lo[j / per_byte] >> (lo_bits * (j % per_byte))) & lo_mask;
        if (bits != lo_bits) {
            v |= (unsigned)((hi[j / 8] >> (j % 8)) & 1u) << lo_bits;
        }
        idx[j] = (uint8_t)v;
    }
}

static void quantize_block(const struct tq_codebook *cb, const float *y, uint8_t *blk)
{
    const int n = cb->n;
    uint8_t idx[TQ_MAX_BLOCK];
    double acc[8] = {0};

    for (int i = 0; i < n; i++) {
        acc[i % 8] += (double)y[i] * (double)y[i];
    }
    const double gamma = sqrt(lane8_total(acc));

    uint16_t d_bits;
    if (!isfinite(gamma)) {
        d_bits = TQ_D_NAN;
        memset(idx, 0, (size_t)n);
    } else {
        const double inv = gamma == 0.0 ? 0.0 : 1.0 / gamma;
        for (int i = 0; i < n; i++) {
            const double u = gamma == 0.0 ? 0.0 : (double)y[i] * inv;
            int k = 0;
            for (int m = 0; m < cb->nlev - 1; m++) {
                k += u >= cb->mid[m];
            }
            idx[i] = (uint8_t)k;
        }
        double p[8] = {0};
        double q[8] = {0};
        for (int i = 0; i < n; i++) {
            const double c = (double)cb->levels[idx[i]];
            p[i % 8] += (double)y[i] * c;
            q[i % 8] += c * c;
        }
        const double P = lane8_total(p);
        const double Q = lane8_total(q);
        const double d = (Q == 0.0 || gamma == 0.0) ? 0.0 : P / Q;
        d_bits = tq_fp16_from_float((float)d);
    }
    blk[0] = (uint8_t)(d_bits & 0xFF);
    blk[1] = (uint8_t)(d_bits >> 8);
    tq_pack_indices(cb->bits, n, idx, blk);
}

void tq_quantize_blocks_scalar(const struct tq_codebook *cb, const float *y, uint8_t *dst,
                               int64_t nblocks)
{
    const size_t nbytes = tq_block_size(cb);
    for (int64_t b = 0; b < nblocks; b++) {
        quantize_block(cb, y + b * cb->n, dst + (size_t)b * nbytes);
    }
}

void tq_dequantize_blocks_scalar(const struct tq_codebook *cb, const uint8_t *src, float *y,
                                 int64_t nblocks)
{
    const int n = cb->n;
    const size_t nbytes = tq_block_size(cb);
    uint8_t idx[TQ_MAX_BLOCK];

    for (int64_t b = 0; b < nblocks; b++) {
        const uint8_t *blk = src + (size_t)b * nbytes;
        const float d = tq_half_to_float((uint16_t)(blk[0] | blk[1] << 8));
        unpack_indices(cb->bits, n, blk, idx);
        for (int i = 0; i < n; i++) {
            y[b * n + i] = d * cb->levels[idx[i]];
        }
    }
}

static void fwht(int n, float *x)
{
    for (int h = 1; h < n; h *= 2) {
        for (int j = 0; j < n; j++) {
            if (j & h) {
                continue;
            }
            const float a = x[j];
            const float b = x[j + h];
            x[j] = a + b;
            x[j + h] = a - b;
        }
    }
}

void tq_rotate_blocks_scalar(int n, float *x, int64_t nblocks, int inverse)
{
    const float *first = inverse ? tq_sign2 : tq_sign1;
    const float *second = inverse ? tq_sign1 : tq_sign2;
    const float scale = (float)(1.0 / sqrt((double)n));

    for (int64_t b = 0; b < nblocks; b++) {
        float *v = x + b * n;
        for (int i = 0; i < n; i++) {
            v[i] *= first[i];
        }
        fwht(n, v);
        for (int i = 0; i < n; i++) {
            v[i] = v[i] * scale * second[i];
        }
    }
}

int tq_unpack_indices(int bits, int n, const void *src, uint8_t *indices, uint16_t *d_bits,
                      int64_t k)
{
    const struct tq_codebook *cb = tq_codebook_get(bits, n);
    if (cb == NULL) {
        return TQ_ERR_FORMAT;
    }
    if (k < 0 || k % n != 0) {
        return TQ_ERR_LENGTH;
    }
    const size_t nbytes = tq_block_size(cb);
    const uint8_t *s = src;
    for (int64_t b = 0; b < k / n; b++) {
        const uint8_t *blk = s + (size_t)b * nbytes;
        d_bits[b] = (uint16_t)(blk[0] | blk[1] << 8);
        unpack_indices(bits, n, blk, indices + b * n);
    }
    return TQ_OK;
}
