/* Dot product of a row of TurboQuant blocks with a float vector: how ggml's CPU backend reads
 * a turbo K cache (Q stays float, K is never written back out as floats). */
#include "tq_internal.h"

/* Floats decoded per step: a multiple of both block sizes, small enough for the stack. */
#define TQ_DOT_CHUNK 512

static float tq_dot_f32(const float *a, const float *b, int64_t k)
{
    /* Eight independent partial sums: vectorizable without reassociating one long chain. */
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= k; i += 8) {
        for (int l = 0; l < 8; ++l) {
            acc[l] += a[i + l] * b[i + l];
        }
    }
    for (; i < k; ++i) {
        acc[i % 8] += a[i] * b[i];
    }
    return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

int tq_vec_dot_f32(int bits, int n, const void *x, const float *y, int64_t k, float *out)
{
    if (tq_block_bytes(bits, n) == 0) {
        return TQ_ERR_FORMAT;
    }
    if (k < 0 || k % n != 0) {
        return TQ_ERR_LENGTH;
    }
    const size_t block = tq_block_bytes(bits, n);
    const uint8_t *src = (const uint8_t *)x;
    float tmp[TQ_DOT_CHUNK];
    float sum = 0.0f;
    for (int64_t i = 0; i < k; i += TQ_DOT_CHUNK) {
        const int64_t len = k - i < TQ_DOT_CHUNK ? k - i : TQ_DOT_CHUNK;
        tq_dequantize_row(bits, n, src + (size_t)(i / n) * block, tmp, len);
        sum += tq_dot_f32(tmp, y + i, len);
    }
    *out = sum;
    return TQ_OK;
}
