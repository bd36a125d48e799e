/* Runs turboquant_metal_ggml.h on the host: each loop below is what one Metal dispatch does,
 * one thread after another, through the same adapter functions ggml's kernels call. */
#include "shim/metal_shim.h"

#include "shim/turboquant_metal_shim.h"
#include "turboquant.h"
#include "turboquant_metal_ggml.h"

namespace {

int check_row(int bits, int n, int64_t k)
{
    if (tq_block_size(bits, n) == 0) {
        return TQ_ERR_FORMAT;
    }
    if (k < 0 || k % n != 0) {
        return TQ_ERR_LENGTH;
    }
    return TQ_OK;
}

/* Block after block, as set_rows does with one thread per block. */
template <int B, int N> void quantize_row(const float *y, void *dst, int64_t k)
{
    block_tq<B, N> *out = static_cast<block_tq<B, N> *>(dst);
    for (int64_t b = 0; b < k / N; b++) {
        quantize_turbo<B, N>(y + b * N, out[b]);
    }
}

/* 16 values per call, as get_rows, cpy and the f16 conversion for flash attention do. */
template <int B, int N> void dequantize_row_16(const void *src, float *y, int64_t k)
{
    const block_tq<B, N> *in = static_cast<const block_tq<B, N> *>(src);
    for (int64_t i = 0; i < k / 16; i++) {
        float4x4 reg;
        dequantize_turbo<B, N>(in + (i * 16) / N, (short)(i % (N / 16)), reg);
        for (int c = 0; c < 4; c++) {
            for (int r = 0; r < 4; r++) {
                y[16 * i + 4 * c + r] = reg[c][r];
            }
        }
    }
}

/* 4 values per call, as the flash-attention vec kernels do (block i/nl, chunk i%nl). */
template <int B, int N> void dequantize_row_4(const void *src, float *y, int64_t k)
{
    const block_tq<B, N> *in = static_cast<const block_tq<B, N> *>(src);
    for (int64_t i = 0; i < k / 4; i++) {
        float4 reg;
        dequantize_turbo_t4<B, N>(in + i / (N / 4), (short)(i % (N / 4)), reg);
        for (int r = 0; r < 4; r++) {
            y[4 * i + r] = reg[r];
        }
    }
}

/* fn<B, N>(args...) for the format (bits, n) that check_row accepted. */
#define TQ_FOR_FORMAT(bits, n, fn, ...)                                                         \
    do {                                                                                       \
        if ((n) == 64) {                                                                       \
            switch (bits) {                                                                    \
            case 2: fn<2, 64>(__VA_ARGS__); break;                                             \
            case 3: fn<3, 64>(__VA_ARGS__); break;                                             \
            case 4: fn<4, 64>(__VA_ARGS__); break;                                             \
            default: fn<5, 64>(__VA_ARGS__); break;                                            \
            }                                                                                  \
        } else {                                                                               \
            switch (bits) {                                                                    \
            case 2: fn<2, 128>(__VA_ARGS__); break;                                            \
            case 3: fn<3, 128>(__VA_ARGS__); break;                                            \
            case 4: fn<4, 128>(__VA_ARGS__); break;                                            \
            default: fn<5, 128>(__VA_ARGS__); break;                                           \
            }                                                                                  \
        }                                                                                      \
    } while (0)

} // namespace

extern "C" int tq_metal_quantize_row(int bits, int n, const float *y, void *dst, int64_t k)
{
    const int rc = check_row(bits, n, k);
    if (rc == TQ_OK) {
        TQ_FOR_FORMAT(bits, n, quantize_row, y, dst, k);
    }
    return rc;
}

extern "C" int tq_metal_dequantize_row(int bits, int n, const void *src, float *y, int64_t k)
{
    const int rc = check_row(bits, n, k);
    if (rc == TQ_OK) {
        TQ_FOR_FORMAT(bits, n, dequantize_row_16, src, y, k);
    }
    return rc;
}

extern "C" int tq_metal_dequantize_row_t4(int bits, int n, const void *src, float *y, int64_t k)
{
    const int rc = check_row(bits, n, k);
    if (rc == TQ_OK) {
        TQ_FOR_FORMAT(bits, n, dequantize_row_4, src, y, k);
    }
    return rc;
}
