/* Runs turboquant_metal.h on the host: each loop below is what one Metal dispatch does,
 * one thread after another. */
#include "shim/metal_shim.h"

#include "shim/turboquant_metal_shim.h"
#include "turboquant.h"
#include "turboquant_metal.h"
#include "turboquant_tables.h"

namespace {

/* The codebook a Metal kernel would receive, filled from the generated tables. */
bool codebook_for(int bits, int n, tq_metal_codebook *cb)
{
#define TQ_CASE(B, N)                                                                       \
    if (bits == (B) && n == (N)) {                                                          \
        tq_metal_codebook_fill(cb, tq_levels_b##B##_n##N, tq_mid_b##B##_n##N, 1 << (B));    \
        return true;                                                                        \
    }
    TQ_CASE(2, 64)
    TQ_CASE(3, 64)
    TQ_CASE(4, 64)
    TQ_CASE(5, 64)
    TQ_CASE(2, 128)
    TQ_CASE(3, 128)
    TQ_CASE(4, 128)
    TQ_CASE(5, 128)
#undef TQ_CASE
    return false;
}

/* A decode kernel first copies the levels from its constant buffer into registers: the
 * decode functions take a `thread` array, which a `constant` pointer cannot be passed as. */
void load_levels(const tq_metal_codebook &cb, float *lv)
{
    for (int i = 0; i < TQ_METAL_MAX_LEVELS; i++) {
        lv[i] = cb.lv[i];
    }
}

int check_row(int bits, int n, int64_t k, tq_metal_codebook *cb)
{
    if (tq_block_size(bits, n) == 0 || !codebook_for(bits, n, cb)) {
        return TQ_ERR_FORMAT;
    }
    if (k < 0 || k % n != 0) {
        return TQ_ERR_LENGTH;
    }
    return TQ_OK;
}

} // namespace

extern "C" int tq_metal_quantize_row(int bits, int n, const float *y, void *dst, int64_t k)
{
    tq_metal_codebook cb;
    const int rc = check_row(bits, n, k, &cb);
    if (rc != TQ_OK) {
        return rc;
    }
    const int nbytes = tq_block_size(bits, n);
    uchar *out = static_cast<uchar *>(dst);
    for (int64_t b = 0; b < k / n; b++) {
        tq_quantize_block(y + b * n, bits, n, cb, out + b * nbytes);
    }
    return TQ_OK;
}

extern "C" int tq_metal_dequantize_row(int bits, int n, const void *src, float *y, int64_t k)
{
    tq_metal_codebook cb;
    const int rc = check_row(bits, n, k, &cb);
    if (rc != TQ_OK) {
        return rc;
    }
    const int nbytes = tq_block_size(bits, n);
    const uchar *in = static_cast<const uchar *>(src);
    float lv[TQ_METAL_MAX_LEVELS];
    load_levels(cb, lv);
    for (int64_t b = 0; b < k / n; b++) {
        const uchar *blk = in + b * nbytes;
        float scaled[TQ_METAL_MAX_LEVELS];
        tq_scale_levels(blk, bits, lv, scaled);
        for (int il = 0; il < n / 16; il++) {
            tq_dequantize_16(blk, bits, n, il, scaled, y + b * n + 16 * il);
        }
    }
    return TQ_OK;
}

extern "C" int tq_metal_dequantize_row_elementwise(int bits, int n, const void *src, float *y,
                                                   int64_t k)
{
    tq_metal_codebook cb;
    const int rc = check_row(bits, n, k, &cb);
    if (rc != TQ_OK) {
        return rc;
    }
    const int nbytes = tq_block_size(bits, n);
    const uchar *in = static_cast<const uchar *>(src);
    float lv[TQ_METAL_MAX_LEVELS];
    load_levels(cb, lv);
    for (int64_t i = 0; i < k; i++) {
        y[i] = tq_dequantize_one(in + (i / n) * nbytes, bits, n, (int)(i % n), lv);
    }
    return TQ_OK;
}
