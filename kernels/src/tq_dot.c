/* Dot product of TurboQuant blocks with a float vector, through a decode into a buffer: the
 * summation order every path follows (tq_internal.h), and the scalar and NEON paths' dot.
 * How ggml's CPU backend reads a turbo K cache (Q stays float); and the same for a tile of
 * rows against a group of queries (K * Q) or weights (P * V). */
#include "tq_internal.h"

static float tq_dot_f32(const float *a, const float *b, int64_t k)
{
    /* Eight independent partial sums: vectorizable without reassociating one long chain. */
    float acc[8] = {0};
    for (int64_t i = 0; i < k; i += 8) {
        for (int l = 0; l < 8; ++l) {
            acc[l] += a[i + l] * b[i + l];
        }
    }
    return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

void tq_dot_blocks_decoded(tq_dequantize_blocks_fn decode, const struct tq_codebook *cb,
                           const uint8_t *src, const float *y, int64_t nblocks, float *out)
{
    const int n = cb->n;
    const size_t block = tq_block_size(cb);
    const int64_t per_chunk = TQ_DOT_CHUNK / n;
    float tmp[TQ_DOT_CHUNK];
    float sum = 0.0f;
    for (int64_t b = 0; b < nblocks; b += per_chunk) {
        const int64_t count = nblocks - b < per_chunk ? nblocks - b : per_chunk;
        decode(cb, src + (size_t)b * block, tmp, count);
        sum += tq_dot_f32(tmp, y + b * n, count * n);
    }
    *out = sum;
}

void tq_dot_rows_decoded(tq_dequantize_blocks_fn decode, const struct tq_codebook *cb,
                         const struct tq_tile *t, const float *q, int nq, float *out)
{
    const int n = cb->n;
    const size_t block = tq_block_size(cb);
    const int64_t k = t->nblocks * n;
    const int64_t per_chunk = TQ_DOT_CHUNK / n;
    float tmp[TQ_DOT_CHUNK];
    for (int64_t r = 0; r < t->nrows; r++) {
        const uint8_t *row = t->src + (size_t)r * t->stride;
        for (int j = 0; j < nq; j++) {
            out[j * t->nrows + r] = 0.0f;
        }
        /* chunk by chunk as tq_dot_blocks_decoded sums, each chunk decoded once */
        for (int64_t b = 0; b < t->nblocks; b += per_chunk) {
            const int64_t count = t->nblocks - b < per_chunk ? t->nblocks - b : per_chunk;
            decode(cb, row + (size_t)b * block, tmp, count);
            for (int j = 0; j < nq; j++) {
                out[j * t->nrows + r] += tq_dot_f32(tmp, q + j * k + b * n, count * n);
            }
        }
    }
}

void tq_mad_rows_decoded(tq_dequantize_blocks_fn decode, const struct tq_codebook *cb,
                         const struct tq_tile *t, const float *w, int nq, float *acc)
{
    const int n = cb->n;
    const size_t block = tq_block_size(cb);
    const int64_t k = t->nblocks * n;
    const int64_t per_chunk = TQ_DOT_CHUNK / n;
    float tmp[TQ_DOT_CHUNK];
    for (int64_t r = 0; r < t->nrows; r++) {
        const uint8_t *row = t->src + (size_t)r * t->stride;
        for (int64_t b = 0; b < t->nblocks; b += per_chunk) {
            const int64_t count = t->nblocks - b < per_chunk ? t->nblocks - b : per_chunk;
            decode(cb, row + (size_t)b * block, tmp, count);
            for (int j = 0; j < nq; j++) {
                const float wj = w[j * t->nrows + r];
                if (wj == 0.0f) {
                    continue;
                }
                float *a = acc + j * k + b * n;
                for (int64_t i = 0; i < count * n; i++) {
                    a[i] = a[i] + wj * tmp[i];
                }
            }
        }
    }
}
