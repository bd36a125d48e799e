/*
 * The turbo block types and the function shapes ggml-cuda's kernel templates take
 * (set-rows.cu, getrows.cu, convert.cu, cpy.cu of ggml-cuda):
 *
 *   tq_cu_quantize_ggml<B, N>(x, blk)          one thread quantizes one block (set_rows'
 *                                              template shape; the parity runners use it)
 *   tq_cu_quantize_block_warp<B, N>(x, blk)    the 32 lanes of a warp quantize one block, bit
 *                                              for bit as one thread does (set_rows, through
 *                                              tq_cu_set_rows: a single token's K or V is a
 *                                              few blocks, so their latency is what counts)
 *   tq_cu_set_rows_rot<idx_t, NH, B, N>(...)    the same, of rows first rotated as ggml-cuda's
 *                                              fwht_cuda<NH> rotates them (the Hadamard
 *                                              MUL_MAT before a quantized K/V cache, fused)
 *   tq_cu_rope_rot<W, NEOX>(...)                RoPE + that rotation of a whole head (Q),
 *   tq_cu_rope_rot_set_rows<idx_t, W, B, N, NEOX>(...)  and of K on its way into the cache:
 *                                              rope.cu's arithmetic through a functor its
 *                                              glue builds, then fwht.cu's, then the above
 *                                              Both launch through a Launch callable: plain
 *                                              <<<>>> by default, ggml-cuda's own launcher
 *                                              (programmatic dependent launch) in set-rows.cu
 *   tq_cu_dequantize_ggml<B, N>(vx, ib, iqs, v) dequantize_kernel_t with qr = 2: values iqs
 *                                              and iqs + N/2 of block ib (get_rows, the
 *                                              conversions to f16/f32 for flash attention)
 *   tq_cu_cpy_blck_f32_turbo<B, N>(src, dst)   cpy f32 -> turbo, one block
 *   tq_cu_cpy_blck_turbo<B, N, T>(src, dst)   cpy turbo -> f32 or f16 (T), one block
 *   tq_cu_to_f16<B, N>(x, y, k, stream)        to_fp16_cuda_t (convert.cu): K/V to f16 for
 *                                              flash attention's tensor-core kernels, 8
 *                                              values per thread (tq_cu_staged::decode8_f16)
 *
 * A block is plain bytes, so its struct has byte alignment and sizeof == nbytes (34 .. 82),
 * and ggml's pointer arithmetic over blocks stays right. Compiled by nvcc inside ggml-cuda
 * and, through shim/cuda_shim.cpp, as C++17 by `nox -s parity`, which checks these exact
 * functions against the reference.
 */
#ifndef TURBOQUANT_CUDA_GGML_CUH
#define TURBOQUANT_CUDA_GGML_CUH

#include "turboquant_cuda.cuh"

#ifndef __CUDACC__
/* The one CUDA vector type the adapters' shapes use. */
struct float2 {
    float x, y;
};
#endif

template <int B, int N> struct block_tq_cu {
    uint8_t qs[tq_cu_format<B, N>::nbytes];
};
static_assert(sizeof(block_tq_cu<3, 128>) == 50, "a turbo block is its bytes, unpadded");

template <int B, int N> TQ_CU_HD void tq_cu_quantize_ggml(const float *x, block_tq_cu<B, N> *blk)
{
    tq_cu_quantize_block<B, N>(x, blk->qs);
}

template <int B, int N>
TQ_CU_HD void tq_cu_dequantize_ggml(const void *vx, const int64_t ib, const int iqs, float2 &v)
{
    const uint8_t *blk = ((const block_tq_cu<B, N> *)vx)[ib].qs;
    v.x = tq_cu_decode_one<B, N>(blk, iqs);
    v.y = tq_cu_decode_one<B, N>(blk, iqs + N / 2);
}

template <int B, int N> TQ_CU_HD void tq_cu_cpy_blck_f32_turbo(const char *src, char *dst)
{
    tq_cu_quantize_block<B, N>((const float *)src, (uint8_t *)dst);
}

TQ_CU_HD void tq_cu_store(float *dst, float v)
{
    *dst = v;
}

#ifdef __CUDACC__
__device__ __forceinline__ void tq_cu_store(half *dst, float v)
{
    *dst = __float2half_rn(v);
}
#endif

template <int B, int N, typename dst_t> TQ_CU_HD void tq_cu_cpy_blck_turbo(const char *src, char *dst)
{
    const uint8_t *blk = (const uint8_t *)src;
    dst_t *y = (dst_t *)dst;
    for (int j = 0; j < N; j++) {
        tq_cu_store(y + j, tq_cu_decode_one<B, N>(blk, j));
    }
}

#ifdef __CUDACC__
/* One 8-lane sum of the contract (SPEC.md section 4 step 1) over a warp whose lane L holds
 * the terms of values L + 32m in t[m]: lane j's accumulator adds the terms of values
 * j, j+8, j+16, ... in ascending order, exactly as acc[i % 8] += term_i does, then every
 * lane folds the eight accumulators with the contract's tree. Returns the same double in
 * every lane. */
template <int M> __device__ __forceinline__ double tq_cu_warp_lane8(const double (&t)[M])
{
    const int lane = threadIdx.x % 32;
    double acc = 0.0;
#pragma unroll
    for (int m = 0; m < M; m++) {
#pragma unroll
        for (int q = 0; q < 4; q++) {
            acc += __shfl_sync(0xFFFFFFFFu, t[m], (lane & 7) + 8 * q);
        }
    }
    double a[8];
#pragma unroll
    for (int k = 0; k < 8; k++) {
        a[k] = __shfl_sync(0xFFFFFFFFu, acc, k);
    }
    return tq_cu_lane8_total(a);
}

/* tq_cu_quantize_block with the 32 lanes of a warp, from registers: lane L holds value
 * L + 32m of the block in y[m] (N floats in all). Every lane must call it with the same blk
 * (nbytes bytes). */
template <int B, int N> __device__ __forceinline__ void tq_cu_quantize_regs_warp(const float *y, uint8_t *blk)
{
    typedef tq_cu_format<B, N> F;
    typedef tq_cu_codebook<B, N> C;
    constexpr int M = N / 32;
    const int lane = threadIdx.x % 32;

    double v[M], sq[M];
#pragma unroll
    for (int m = 0; m < M; m++) {
        v[m] = tq_cu_widen(y[m]);
        sq[m] = v[m] * v[m];
    }
    const double gamma = sqrt(tq_cu_warp_lane8<M>(sq));
    if (!(gamma - gamma == 0.0)) { /* Inf or NaN: poison the block, every index 0 */
        for (int i = 2 + lane; i < F::nbytes; i += 32) {
            blk[i] = 0;
        }
        if (lane == 0) {
            blk[0] = 0x00;
            blk[1] = 0x7E;
        }
        return;
    }
    const double inv = gamma == 0.0 ? 0.0 : 1.0 / gamma;
    unsigned k[M];
    double pt[M], qt[M];
#pragma unroll
    for (int m = 0; m < M; m++) {
        const double u = gamma == 0.0 ? 0.0 : v[m] * inv;
        k[m] = C::index(u);
        const double c = (double)C::level(k[m]);
        pt[m] = v[m] * c;
        qt[m] = c * c;
    }
    const double P = tq_cu_warp_lane8<M>(pt);
    const double Q = tq_cu_warp_lane8<M>(qt);

    /* 32 values at a time: one ballot per index bit, then each byte by the lane it names. */
    constexpr int lo_bytes = 4 * F::lo_bits; /* low-plane bytes of 32 values */
    constexpr int per = 8 / F::lo_bits;      /* values per low-plane byte */
#pragma unroll
    for (int m = 0; m < M; m++) {
        unsigned plane[B];
#pragma unroll
        for (int b = 0; b < B; b++) {
            plane[b] = __ballot_sync(0xFFFFFFFFu, (k[m] >> b) & 1u);
        }
        if (lane < lo_bytes) {
            unsigned byte = 0;
#pragma unroll
            for (int e = 0; e < per; e++) {
#pragma unroll
                for (int b = 0; b < F::lo_bits; b++) {
                    byte |= ((plane[b] >> (lane * per + e)) & 1u) << (e * F::lo_bits + b);
                }
            }
            blk[2 + m * lo_bytes + lane] = (uint8_t)byte;
        }
        if (F::lo_bits != B && lane < 4) {
            blk[F::hi_offset + m * 4 + lane] = (uint8_t)(plane[B - 1] >> (8 * lane));
        }
    }
    if (lane == 0) {
        const double d = (Q == 0.0 || gamma == 0.0) ? 0.0 : P / Q;
        const uint16_t d_bits = tq_cu_fp16_from_float((float)d);
        blk[0] = (uint8_t)(d_bits & 0xFFu);
        blk[1] = (uint8_t)(d_bits >> 8);
    }
}

/* tq_cu_quantize_block with the 32 lanes of a warp: lane L takes values L + 32m of the N
 * floats at y. Every lane must call it with the same y and blk (nbytes bytes). */
template <int B, int N> __device__ void tq_cu_quantize_block_warp(const float *y, uint8_t *blk)
{
    const int lane = threadIdx.x % 32;
    float r[N / 32];
#pragma unroll
    for (int m = 0; m < N / 32; m++) {
        r[m] = y[lane + 32 * m];
    }
    tq_cu_quantize_regs_warp<B, N>(r, blk);
}

/* The Walsh-Hadamard rotation of ggml-cuda's fwht_cuda<NH> (fwht.cu: a MUL_MAT hinted
 * GGML_HINT_SRC0_IS_HADAMARD, which llama.cpp applies to K and V before they enter a
 * quantized cache), on one row of NH floats held by a warp as lane L holds value L + 32m in
 * r[m] (NH / 32 floats): the same operations in the same order, so a SET_ROWS fused with it
 * writes the bytes the two ops write one after the other. scale is fwht.cu's 1/sqrtf(NH). */
template <int NH> __device__ __forceinline__ void tq_cu_fwht_warp(float *r, const float scale)
{
    constexpr int el_w = NH / 32;
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int i = 0; i < el_w; ++i) {
        r[i] = r[i] * scale;
    }
#pragma unroll
    for (int h = 1; h < 32; h *= 2) {
#pragma unroll
        for (int j = 0; j < el_w; j++) {
            const float val = r[j];
            const float val2 = __shfl_xor_sync(0xFFFFFFFFu, val, h, 32);
            r[j] = (lane & h) == 0 ? val + val2 : val2 - val;
        }
    }
#pragma unroll
    for (int h = 32; h < NH; h *= 2) {
        const int step = h / 32;
#pragma unroll
        for (int j = 0; j < el_w; j += 2 * step) {
#pragma unroll
            for (int k = 0; k < step; k++) {
                const float x = r[j + k];
                const float y = r[j + k + step];
                r[j + k] = x + y;
                r[j + k + step] = x - y;
            }
        }
    }
}

/* Programmatic dependent launch (sm_90 and newer): a kernel launched with it may start while
 * the kernel before it in the stream still runs, so it waits here before it reads anything
 * that kernel may write, then lets the next kernel start its own prologue (which waits in
 * turn). A kernel launched without it (<<<>>>, or ggml-cuda's GGML_CUDA_PDL=0) finds both
 * no-ops. */
__device__ __forceinline__ void tq_cu_pdl_wait_then_release()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    cudaGridDependencySynchronize();
    cudaTriggerProgrammaticLaunchCompletion();
#endif
}

/* The default Launch of the launchers below: kernel<<<grid, block, 0, stream>>>(args...). */
struct tq_cu_launch_plain {
    template <typename Kernel, typename... Args>
    void operator()(Kernel kernel, dim3 grid, dim3 block, cudaStream_t stream, Args... args) const
    {
        kernel<<<grid, block, 0, stream>>>(args...);
    }
};

/* Where warp w of a SET_ROWS into a turbo tensor reads and writes, a warp taking W floats of
 * a row and writing W / N blocks: row i01 of src0 (floats, strides s01..s03 in floats) goes
 * to row src1[i01, i02 % ne11, i03 % ne12] of dst (strides nb1..nb3 in bytes), as ggml
 * defines the op. Sets y (the warp's first float) and blk (its first block). */
template <typename idx_t, int W, int B, int N>
__device__ __forceinline__ void tq_cu_set_rows_place(int64_t w, const float *src0, const idx_t *src1,
                                                     char *dst, int64_t ne00, int64_t ne01,
                                                     int64_t ne02, int64_t ne11, int64_t ne12,
                                                     int64_t s01, int64_t s02, int64_t s03,
                                                     int64_t s10, int64_t s11, int64_t s12,
                                                     int64_t nb1, int64_t nb2, int64_t nb3,
                                                     const float *&y, uint8_t *&blk)
{
    const int64_t per_row = ne00 / W;
    int64_t t = w;
    const int64_t ir = t % per_row;
    t /= per_row;
    const int64_t i01 = t % ne01;
    t /= ne01;
    const int64_t i02 = t % ne02;
    const int64_t i03 = t / ne02;
    const int64_t row = (int64_t)src1[i01 * s10 + (i02 % ne11) * s11 + (i03 % ne12) * s12];
    y = src0 + i01 * s01 + i02 * s02 + i03 * s03 + ir * W;
    blk = (uint8_t *)(dst + row * nb1 + i02 * nb2 + i03 * nb3) + ir * (W / N) * tq_cu_format<B, N>::nbytes;
}

/* SET_ROWS into a turbo tensor, one warp per block (tq_cu_set_rows_place). */
template <typename idx_t, int B, int N>
__global__ void tq_cu_k_set_rows(const float *src0, const idx_t *src1, char *dst, int64_t nblocks,
                                 int64_t ne00, int64_t ne01, int64_t ne02, int64_t ne11,
                                 int64_t ne12, int64_t s01, int64_t s02, int64_t s03, int64_t s10,
                                 int64_t s11, int64_t s12, int64_t nb1, int64_t nb2, int64_t nb3)
{
    const int64_t w = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    if (w >= nblocks) {
        return; /* w is the same for the 32 lanes of a warp */
    }
    const float *y;
    uint8_t *blk;
    tq_cu_pdl_wait_then_release();
    tq_cu_set_rows_place<idx_t, N, B, N>(w, src0, src1, dst, ne00, ne01, ne02, ne11, ne12, s01, s02,
                                         s03, s10, s11, s12, nb1, nb2, nb3, y, blk);
    tq_cu_quantize_block_warp<B, N>(y, blk);
}

/* tq_cu_k_set_rows of the Walsh-Hadamard rotation of src0 (fused fwht_cuda<NH> + SET_ROWS):
 * one warp per W = max(NH, N) floats of a row, that is W / NH rotations and W / N blocks
 * (llama.cpp rotates V by 64 points, K by up to 256), rotated in registers, then quantized. */
template <typename idx_t, int NH, int B, int N>
__global__ void tq_cu_k_set_rows_rot(const float *src0, const idx_t *src1, char *dst, int64_t nwarps,
                                     float scale, int64_t ne00, int64_t ne01, int64_t ne02,
                                     int64_t ne11, int64_t ne12, int64_t s01, int64_t s02,
                                     int64_t s03, int64_t s10, int64_t s11, int64_t s12, int64_t nb1,
                                     int64_t nb2, int64_t nb3)
{
    constexpr int W = NH > N ? NH : N;
    static_assert(W % NH == 0 && W % N == 0, "a warp holds whole rotations and whole blocks");
    const int64_t w = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    if (w >= nwarps) {
        return; /* w is the same for the 32 lanes of a warp */
    }
    const int lane = threadIdx.x % 32;
    tq_cu_pdl_wait_then_release();
    const float *y;
    uint8_t *blk;
    tq_cu_set_rows_place<idx_t, W, B, N>(w, src0, src1, dst, ne00, ne01, ne02, ne11, ne12, s01, s02,
                                         s03, s10, s11, s12, nb1, nb2, nb3, y, blk);
    float r[W / 32];
#pragma unroll
    for (int m = 0; m < W / 32; m++) {
        r[m] = y[lane + 32 * m];
    }
#pragma unroll
    for (int k = 0; k < W / NH; k++) {
        tq_cu_fwht_warp<NH>(r + k * (NH / 32), scale);
    }
#pragma unroll
    for (int k = 0; k < W / N; k++) {
        tq_cu_quantize_regs_warp<B, N>(r + k * (N / 32), blk + k * tq_cu_format<B, N>::nbytes);
    }
}

/* llama.cpp's RoPE over a whole head (rope.cu's NORMAL or NEOX mode, n_dims = W, no offset)
 * on the W floats a warp holds as lane L holds value L + 32m in r[m]. rope(t, i0, x0, x1)
 * returns the pair at even index i0 of token t rotated; the caller builds it from rope.cu's
 * own rope_yarn, so the values are rope.cu's. NORMAL pairs values i0 and i0 + 1 (lanes L and
 * L ^ 1, each computing its half); NEOX pairs c and c + W/2 (one lane: r[m] and r[m + W/64])
 * at index i0 = 2c. */
template <int W, bool NEOX, typename Rope>
__device__ __forceinline__ void tq_cu_rope_warp(float *r, const Rope &rope, int64_t t)
{
    const int lane = threadIdx.x % 32;
    if constexpr (NEOX) {
        constexpr int H = W / 64;
#pragma unroll
        for (int m = 0; m < H; m++) {
            const float2 y = rope(t, 2 * (lane + 32 * m), r[m], r[m + H]);
            r[m] = y.x;
            r[m + H] = y.y;
        }
    } else {
        const bool odd = lane & 1;
#pragma unroll
        for (int m = 0; m < W / 32; m++) {
            const float other = __shfl_xor_sync(0xFFFFFFFFu, r[m], 1, 32);
            const float x0 = odd ? other : r[m];
            const float x1 = odd ? r[m] : other;
            const float2 y = rope(t, (lane & ~1) + 32 * m, x0, x1);
            r[m] = odd ? y.y : y.x;
        }
    }
}

/* Head h of token t (strides s01, s02 in floats from x), one warp, into registers (lane L:
 * value L + 32m in r[m]), then RoPE and llama.cpp's Hadamard rotation of the whole head
 * (fwht_cuda<W>'s operations; scale its 1/sqrtf(W)): what rope.cu, then fwht.cu, write. */
template <int W, bool NEOX, typename Rope>
__device__ __forceinline__ void tq_cu_rope_rot_load(float *r, const float *x, int64_t h, int64_t t,
                                                    int64_t s01, int64_t s02, const Rope &rope,
                                                    float scale)
{
    const int lane = threadIdx.x % 32;
    const float *y = x + h * s01 + t * s02;
#pragma unroll
    for (int m = 0; m < W / 32; m++) {
        r[m] = y[lane + 32 * m];
    }
    tq_cu_rope_warp<W, NEOX>(r, rope, t);
    tq_cu_fwht_warp<W>(r, scale);
}

/* RoPE + rotation of ne01 heads x ne02 tokens (Q), one warp per head, written contiguous as
 * the rotation's MUL_MAT writes them (row t * ne01 + h). dst may be x itself where x is laid
 * out the same way: a warp reads its head before it writes it. */
template <int W, bool NEOX, typename Rope>
__global__ void tq_cu_k_rope_rot(const float *x, float *dst, int64_t nwarps, int64_t ne01,
                                 int64_t s01, int64_t s02, Rope rope, float scale)
{
    const int64_t w = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    if (w >= nwarps) {
        return; /* w is the same for the 32 lanes of a warp */
    }
    const int lane = threadIdx.x % 32;
    tq_cu_pdl_wait_then_release();
    float r[W / 32];
    tq_cu_rope_rot_load<W, NEOX>(r, x, w % ne01, w / ne01, s01, s02, rope, scale);
#pragma unroll
    for (int m = 0; m < W / 32; m++) {
        dst[w * W + lane + 32 * m] = r[m];
    }
}

/* RoPE + rotation + SET_ROWS into a turbo cache (K): head h of token t goes to blocks
 * h * W / N .. of cache row idx[t * s10] (rows nb1 bytes apart), in the bytes
 * tq_cu_k_set_rows_rot writes from rope.cu's output. */
template <typename idx_t, int W, int B, int N, bool NEOX, typename Rope>
__global__ void tq_cu_k_rope_rot_set_rows(const float *x, const idx_t *idx, char *dst, int64_t nwarps,
                                          int64_t ne01, int64_t s01, int64_t s02, int64_t s10,
                                          int64_t nb1, Rope rope, float scale)
{
    static_assert(W % N == 0, "a head holds whole blocks");
    const int64_t w = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    if (w >= nwarps) {
        return;
    }
    tq_cu_pdl_wait_then_release();
    const int64_t h = w % ne01;
    const int64_t t = w / ne01;
    float r[W / 32];
    tq_cu_rope_rot_load<W, NEOX>(r, x, h, t, s01, s02, rope, scale);
    uint8_t *blk = (uint8_t *)(dst + (int64_t)idx[t * s10] * nb1) + h * (W / N) * tq_cu_format<B, N>::nbytes;
#pragma unroll
    for (int k = 0; k < W / N; k++) {
        tq_cu_quantize_regs_warp<B, N>(r + k * (N / 32), blk + k * tq_cu_format<B, N>::nbytes);
    }
}

/* Launchers of the two kernels above for ne01 heads x ne02 tokens, 4 warps a block. */
template <int W, bool NEOX, typename Rope, typename Launch = tq_cu_launch_plain>
void tq_cu_rope_rot(const float *x, float *dst, int64_t ne01, int64_t ne02, int64_t s01, int64_t s02,
                    const Rope &rope, cudaStream_t stream, const Launch &launch = Launch())
{
    const int64_t nwarps = ne01 * ne02;
    if (nwarps == 0) {
        return;
    }
    launch(tq_cu_k_rope_rot<W, NEOX, Rope>, dim3((unsigned)((nwarps + 3) / 4)), dim3(128), stream, x,
           dst, nwarps, ne01, s01, s02, rope, 1 / sqrtf(W));
}

template <typename idx_t, int W, int B, int N, bool NEOX, typename Rope, typename Launch = tq_cu_launch_plain>
void tq_cu_rope_rot_set_rows(const float *x, const idx_t *idx, char *dst, int64_t ne01, int64_t ne02,
                             int64_t s01, int64_t s02, int64_t s10, int64_t nb1, const Rope &rope,
                             cudaStream_t stream, const Launch &launch = Launch())
{
    const int64_t nwarps = ne01 * ne02;
    if (nwarps == 0) {
        return;
    }
    launch(tq_cu_k_rope_rot_set_rows<idx_t, W, B, N, NEOX, Rope>, dim3((unsigned)((nwarps + 3) / 4)),
           dim3(128), stream, x, idx, dst, nwarps, ne01, s01, s02, s10, nb1, rope, 1 / sqrtf(W));
}

template <typename idx_t, int NH, int B, int N, typename Launch = tq_cu_launch_plain>
void tq_cu_set_rows_rot(const float *src0, const idx_t *src1, char *dst, int64_t ne00,
                        int64_t ne01, int64_t ne02, int64_t ne03, int64_t ne11, int64_t ne12,
                        int64_t s01, int64_t s02, int64_t s03, int64_t s10, int64_t s11,
                        int64_t s12, int64_t nb1, int64_t nb2, int64_t nb3, cudaStream_t stream,
                        const Launch &launch = Launch())
{
    constexpr int W = NH > N ? NH : N;
    const int64_t nwarps = ne00 / W * ne01 * ne02 * ne03;
    if (nwarps == 0) {
        return;
    }
    constexpr int threads = 128;
    const int64_t grid = (nwarps * 32 + threads - 1) / threads;
    launch(tq_cu_k_set_rows_rot<idx_t, NH, B, N>, dim3((unsigned)grid), dim3(threads), stream, src0,
           src1, dst, nwarps, 1 / sqrtf(NH), ne00, ne01, ne02, ne11, ne12, s01, s02, s03, s10, s11,
           s12, nb1, nb2, nb3);
}

template <typename idx_t, int B, int N, typename Launch = tq_cu_launch_plain>
void tq_cu_set_rows(const float *src0, const idx_t *src1, char *dst, int64_t ne00, int64_t ne01,
                    int64_t ne02, int64_t ne03, int64_t ne11, int64_t ne12, int64_t s01,
                    int64_t s02, int64_t s03, int64_t s10, int64_t s11, int64_t s12, int64_t nb1,
                    int64_t nb2, int64_t nb3, cudaStream_t stream, const Launch &launch = Launch())
{
    const int64_t nblocks = ne00 / N * ne01 * ne02 * ne03;
    if (nblocks == 0) {
        return;
    }
    constexpr int threads = 128;
    const int64_t grid = (nblocks * 32 + threads - 1) / threads;
    launch(tq_cu_k_set_rows<idx_t, B, N>, dim3((unsigned)grid), dim3(threads), stream, src0, src1,
           dst, nblocks, ne00, ne01, ne02, ne11, ne12, s01, s02, s03, s10, s11, s12, nb1, nb2, nb3);
}

/* The conversion of a turbo tensor of k values (k / N blocks, contiguous) to fp16, which
 * flash attention runs on K and V before its tensor-core kernels (prompt processing, and
 * batches too wide for the decode kernel): thread t writes values 8t .. 8t+7 as one 16-byte
 * store, from 2-4 bytes of index bits, the scale and the codebook in shared memory
 * (tq_cu_staged::decode8_f16; ggml-cuda's generic dequantize_block decoded two values 64
 * apart per thread, each from its own index and scale reads). */
template <int B, int N> __global__ void tq_cu_k_to_f16(const uint8_t *x, uint4 *y, int64_t nt)
{
    typedef tq_cu_staged<B, N> S;
    __shared__ float lut[S::NLUT];
    if (threadIdx.x < S::NLUT) {
        lut[threadIdx.x] = S::lut_entry((int)threadIdx.x);
    }
    __syncthreads();
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= nt) {
        return;
    }
    const int64_t ib = t / (N / 8);
    uint32_t h[4];
    S::decode8_f16(x + ib * S::NB, (int)(t % (N / 8)) * 8, lut, h);
    y[t] = make_uint4(h[0], h[1], h[2], h[3]);
}

/* ggml-cuda's to_fp16_cuda_t for a turbo type: k values (a multiple of N) from x to y (16-byte
 * aligned, as ggml-cuda's pool allocates). */
template <int B, int N> void tq_cu_to_f16(const void *x, half *y, int64_t k, cudaStream_t stream)
{
    constexpr int threads = 256;
    static_assert(tq_cu_staged<B, N>::NLUT <= threads, "the codebook loads in one pass");
    const int64_t nt = k / 8;
    if (nt == 0) {
        return;
    }
    tq_cu_k_to_f16<B, N><<<(unsigned)((nt + threads - 1) / threads), threads, 0, stream>>>(
        (const uint8_t *)x, (uint4 *)y, nt);
}
#endif /* __CUDACC__ */

#endif /* TURBOQUANT_CUDA_GGML_CUH */
