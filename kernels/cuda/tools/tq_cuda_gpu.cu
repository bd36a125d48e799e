/* Runs kernels/cuda on the GPU behind the C API of shim/turboquant_cuda_shim.h: copy the
 * row in, one CUDA thread per unit of work (the same per-thread functions the host runner
 * loops over, and that ggml-cuda's kernels call), copy the result out. Built with
 * -DTURBOQUANT_CUDA=ON; `nox -s parity -- --backend cuda` loads it. */
#include "shim/turboquant_cuda_shim.h"
#include "shim/turboquant_cuda_rows.cuh"

#include <cuda_runtime.h>

#include <vector>

namespace {

template <int B, int N> __global__ void k_quantize(const float *y, uint8_t *dst, int64_t nt)
{
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t < nt) {
        tq_cu_row_quantize<B, N>(y, dst, t);
    }
}

/* One warp per block, through the SET_ROWS kernel ggml runs (indices 0, 1, 2, ...). */
template <int B, int N> void quantize_warp(const float *y, uint8_t *dst, int64_t k, const int64_t *rows)
{
    const int64_t nb = k / N;
    tq_cu_set_rows<int64_t, B, N>(y, rows, (char *)dst, N, nb, 1, 1, 1, 1, N, N * nb, N * nb, 1, nb,
                                  nb, tq_cu_format<B, N>::nbytes, tq_cu_format<B, N>::nbytes * nb,
                                  tq_cu_format<B, N>::nbytes * nb, 0);
}

__global__ void k_iota(int64_t *rows, int64_t n)
{
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t < n) {
        rows[t] = t;
    }
}

template <int B, int N> __global__ void k_dequantize(const uint8_t *src, float *y, int64_t nt)
{
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t < nt) {
        tq_cu_row_dequantize<B, N>(src, y, t);
    }
}

template <int B, int N> __global__ void k_decode8(const uint8_t *src, float *y, int64_t nt)
{
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t < nt) {
        tq_cu_row_decode8<B, N>(src, y, t);
    }
}

constexpr int kThreads = 128;

unsigned grid(int64_t nt) { return (unsigned)((nt + kThreads - 1) / kThreads); }

template <int B, int N> void quantize(const float *y, uint8_t *dst, int64_t k)
{
    k_quantize<B, N><<<grid(k / N), kThreads>>>(y, dst, k / N);
}

template <int B, int N> void dequantize(const uint8_t *src, float *y, int64_t k)
{
    k_dequantize<B, N><<<grid(k / 2), kThreads>>>(src, y, k / 2);
}

template <int B, int N> void decode8(const uint8_t *src, float *y, int64_t k)
{
    k_decode8<B, N><<<grid(k / 8), kThreads>>>(src, y, k / 8);
}

size_t block_bytes(int bits, int n) { return (size_t)(2 + n * bits / 8); }

/* Device buffers of a call, freed on every path. */
struct Buffers {
    void *in = nullptr;
    void *out = nullptr;
    ~Buffers()
    {
        cudaFree(in);
        cudaFree(out);
    }
};

#define TQ_CUDA_TRY(call)                                                                      \
    do {                                                                                       \
        if ((call) != cudaSuccess) {                                                           \
            return TQ_ERR_DEVICE;                                                              \
        }                                                                                      \
    } while (0)

} // namespace

/* Copy the row in, launch, copy the blocks out: the frame of both quantize entry points. */
template <int (*launch_fn)(int, int, const float *, uint8_t *, int64_t)>
static int run_encode(int bits, int n, const float *y, void *dst, int64_t k)
{
    int rc = tq_cu_check_row(bits, n, k);
    if (rc != TQ_OK || k == 0) {
        return rc;
    }
    const size_t out_bytes = (size_t)(k / n) * block_bytes(bits, n);
    Buffers b;
    TQ_CUDA_TRY(cudaMalloc(&b.in, (size_t)k * sizeof(float)));
    TQ_CUDA_TRY(cudaMalloc(&b.out, out_bytes));
    TQ_CUDA_TRY(cudaMemcpy(b.in, y, (size_t)k * sizeof(float), cudaMemcpyHostToDevice));
    TQ_CUDA_TRY(cudaMemset(b.out, 0xA5, out_bytes)); /* poison: every byte must be written */
    rc = launch_fn(bits, n, (const float *)b.in, (uint8_t *)b.out, k);
    TQ_CUDA_TRY(cudaGetLastError());
    TQ_CUDA_TRY(cudaMemcpy(dst, b.out, out_bytes, cudaMemcpyDeviceToHost));
    return rc;
}

static int launch_quantize(int bits, int n, const float *y, uint8_t *dst, int64_t k)
{
    int rc;
    TQ_CU_FOR_FORMAT(rc, bits, n, quantize, y, dst, k);
    return rc;
}

/* SET_ROWS writes block i to row rows[i] = i. */
static int launch_quantize_warp(int bits, int n, const float *y, uint8_t *dst, int64_t k)
{
    const int64_t nb = k / n;
    int64_t *rows = nullptr;
    TQ_CUDA_TRY(cudaMalloc(&rows, (size_t)nb * sizeof(int64_t)));
    k_iota<<<grid(nb), kThreads>>>(rows, nb);
    int rc;
    TQ_CU_FOR_FORMAT(rc, bits, n, quantize_warp, y, dst, k, rows);
    TQ_CUDA_TRY(cudaFree(rows)); /* waits for the launches above */
    return rc;
}

extern "C" int tq_cuda_quantize_row(int bits, int n, const float *y, void *dst, int64_t k)
{
    return run_encode<launch_quantize>(bits, n, y, dst, k);
}

extern "C" int tq_cuda_quantize_row_warp(int bits, int n, const float *y, void *dst, int64_t k)
{
    return run_encode<launch_quantize_warp>(bits, n, y, dst, k);
}

/* Copy the blocks in, launch, copy the k Out values back: the frame of the decode entry
 * points. */
template <typename Out, int (*launch_fn)(int, int, const uint8_t *, Out *, int64_t)>
static int run_decode(int bits, int n, const void *src, Out *y, int64_t k)
{
    int rc = tq_cu_check_row(bits, n, k);
    if (rc != TQ_OK || k == 0) {
        return rc;
    }
    const size_t in_bytes = (size_t)(k / n) * block_bytes(bits, n);
    Buffers b;
    TQ_CUDA_TRY(cudaMalloc(&b.in, in_bytes));
    TQ_CUDA_TRY(cudaMalloc(&b.out, (size_t)k * sizeof(Out)));
    TQ_CUDA_TRY(cudaMemcpy(b.in, src, in_bytes, cudaMemcpyHostToDevice));
    TQ_CUDA_TRY(cudaMemset(b.out, 0xA5, (size_t)k * sizeof(Out)));
    rc = launch_fn(bits, n, (const uint8_t *)b.in, (Out *)b.out, k);
    TQ_CUDA_TRY(cudaGetLastError());
    TQ_CUDA_TRY(cudaMemcpy(y, b.out, (size_t)k * sizeof(Out), cudaMemcpyDeviceToHost));
    return rc;
}

static int launch_dequantize(int bits, int n, const uint8_t *src, float *y, int64_t k)
{
    int rc;
    TQ_CU_FOR_FORMAT(rc, bits, n, dequantize, src, y, k);
    return rc;
}

static int launch_decode8(int bits, int n, const uint8_t *src, float *y, int64_t k)
{
    int rc;
    TQ_CU_FOR_FORMAT(rc, bits, n, decode8, src, y, k);
    return rc;
}

extern "C" int tq_cuda_dequantize_row(int bits, int n, const void *src, float *y, int64_t k)
{
    return run_decode<float, launch_dequantize>(bits, n, src, y, k);
}

extern "C" int tq_cuda_dequantize_row_fa(int bits, int n, const void *src, float *y, int64_t k)
{
    return run_decode<float, launch_decode8>(bits, n, src, y, k);
}

/* tq_cu_to_f16, launched as convert.cu launches it, into fp16 values y. */
static int launch_to_f16(int bits, int n, const uint8_t *src, uint16_t *y, int64_t k)
{
    int rc;
    TQ_CU_FOR_FORMAT(rc, bits, n, tq_cu_to_f16, src, (half *)y, k, (cudaStream_t)0);
    return rc;
}

/* The conversion ggml-cuda runs before flash attention's tensor-core kernels; the fp16
 * values come back widened to float. */
extern "C" int tq_cuda_dequantize_row_f16(int bits, int n, const void *src, float *y, int64_t k)
{
    int rc = tq_cu_check_row(bits, n, k);
    if (rc != TQ_OK || k == 0) {
        return rc;
    }
    std::vector<uint16_t> h((size_t)k);
    rc = run_decode<uint16_t, launch_to_f16>(bits, n, src, h.data(), k);
    for (int64_t i = 0; rc == TQ_OK && i < k; i++) {
        y[i] = tq_cu_half_to_float(h[(size_t)i]);
    }
    return rc;
}
