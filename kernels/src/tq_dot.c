/* Dot product of TurboQuant blocks with a float vector, through a decode into a buffer: the
 * summation order every path follows (tq_internal.h), and the scalar and NEON paths' dot.
 * How ggml's CPU backend reads a turbo K cache (Q stays float). */
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
