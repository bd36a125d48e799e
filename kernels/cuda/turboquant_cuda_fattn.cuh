/*
 * Flash-attention decode for turbo K and/or V caches, reading the blocks directly (no f16
 * copy of the cache): the kernel ggml-cuda's FLASH_ATTN_EXT runs for 1-2 queries per
 * sequence when K or V is a turbo type (patches/0009). K and V may each be any turbo type,
 * q8_0 or f16; head sizes 64 (block-64 types), 128 and 256; any GQA ratio; masks, ALiBi,
 * logit softcap and attention sinks as ggml defines them.
 *
 * Shape of the work. One thread block (128 threads) takes one query column, one KV head and
 * up to TQ_FA_HEADS query heads of its GQA group, so each K and V value is decoded once per
 * KV head, not once per query head. launch_fattn (ggml's fattn-common.cuh) splits the KV
 * length over gridDim.y blocks and combines their partial softmax sums, so one sequence
 * fills the GPU. Per tile of 64 KV rows (32 where 64 would not fit in shared memory):
 *   1. the raw K and V blocks are copied to shared memory (2-byte loads, consecutive
 *      threads on consecutive bytes), each block staged so its index planes are aligned
 *      (tq_cu_staged);
 *   2. scores: thread (row, quarter) decodes a quarter of its K row once, 8 values at a time
 *      through a codebook table in shared memory, and multiplies them with every query head
 *      of the block (prescaled queries in shared memory); two shuffles add the quarters;
 *   3. the online softmax, one warp per query head, each lane one row in 32;
 *   4. thread (8 dims, row subset) decodes its V values once and adds p * V into float
 *      accumulators for every query head; the row subsets are summed once at the end.
 *
 * Needs ggml-cuda's common.cuh and fattn-common.cuh included first (launch_fattn, the
 * kernel signature fattn_kernel_t, warp reductions, get_alibi_slope).
 */
#ifndef TURBOQUANT_CUDA_FATTN_CUH
#define TURBOQUANT_CUDA_FATTN_CUH

#include "turboquant_cuda.cuh"

#define TQ_FA_NTHREADS 128
#define TQ_FA_HEADS 4 /* query heads per block (launch_fattn's ncols2); more take more blocks */
#define TQ_FA_SMEM_MAX (46 * 1024) /* static shared memory per block, under the 48 KiB limit */

/* q8_0 and f16 rows staged like turbo blocks (see tq_cu_staged), for mixed K/V pairs. */
struct tq_fa_staged_q8_0 {
    static constexpr int QK = 32, NB = 34, OFF = 14, SB = 48, NLUT = 0;
    static __device__ float lut_entry(int) { return 0.0f; }
    static __device__ __forceinline__ void decode8(const uint8_t *sb, int j0, const float *, float out[8])
    {
        const float d = __half2float(*(const half *) (sb + 14));
        const uint2 q = *(const uint2 *) (sb + 16 + j0);
        const int8_t *q8 = (const int8_t *) &q;
#pragma unroll
        for (int l = 0; l < 8; l++) {
            out[l] = d * (float) q8[l];
        }
    }
};

struct tq_fa_staged_f16 {
    static constexpr int QK = 8, NB = 16, OFF = 0, SB = 16, NLUT = 0;
    static __device__ float lut_entry(int) { return 0.0f; }
    static __device__ __forceinline__ void decode8(const uint8_t *sb, int, const float *, float out[8])
    {
        const uint4 h = *(const uint4 *) sb;
        const half2 *h2 = (const half2 *) &h;
#pragma unroll
        for (int l = 0; l < 4; l++) {
            const float2 f = __half22float2(h2[l]);
            out[2 * l] = f.x;
            out[2 * l + 1] = f.y;
        }
    }
};

template <ggml_type type> struct tq_fa_staged;
template <> struct tq_fa_staged<GGML_TYPE_TURBO2> : tq_cu_staged<2, 128> {};
template <> struct tq_fa_staged<GGML_TYPE_TURBO3> : tq_cu_staged<3, 128> {};
template <> struct tq_fa_staged<GGML_TYPE_TURBO4> : tq_cu_staged<4, 128> {};
template <> struct tq_fa_staged<GGML_TYPE_TURBO5> : tq_cu_staged<5, 128> {};
template <> struct tq_fa_staged<GGML_TYPE_TURBO2_64> : tq_cu_staged<2, 64> {};
template <> struct tq_fa_staged<GGML_TYPE_TURBO3_64> : tq_cu_staged<3, 64> {};
template <> struct tq_fa_staged<GGML_TYPE_TURBO4_64> : tq_cu_staged<4, 64> {};
template <> struct tq_fa_staged<GGML_TYPE_TURBO5_64> : tq_cu_staged<5, 64> {};
template <> struct tq_fa_staged<GGML_TYPE_Q8_0> : tq_fa_staged_q8_0 {};
template <> struct tq_fa_staged<GGML_TYPE_F16> : tq_fa_staged_f16 {};

/* Shared memory of one block for tiles of T rows. */
template <int D, typename SK, typename SV> __host__ __device__ constexpr int tq_fa_smem(int T)
{
    return T * (D / SK::QK) * SK::SB + T * (D / SV::QK) * SV::SB + TQ_FA_HEADS * (D + 16) * 4 +
           TQ_FA_HEADS * T * 4 + 32 * 4 * 2 + 3 * TQ_FA_HEADS * 4;
}

/* KV rows per tile: 64 halves the barriers and doubles the loads in flight per row of work,
 * where the staged rows fit. */
template <int D, ggml_type type_K, ggml_type type_V> __host__ __device__ constexpr int tq_fa_rows()
{
    return tq_fa_smem<D, tq_fa_staged<type_K>, tq_fa_staged<type_V>>(64) <= TQ_FA_SMEM_MAX ? 64 : 32;
}

/* Staging of one tile: rows k0 .. k0+T-1 of one KV head (row stride nb bytes) into staged
 * slots; rows at or past k_max become zero blocks (they decode to 0, and their p is 0). */
template <typename S, int D, int T, int NT> struct tq_fa_tile {
    static constexpr int NBLK  = D / S::QK;            /* blocks per row */
    static constexpr int NH    = S::NB / 2;            /* halfwords per block */
    static constexpr int ITEMS = T * NBLK * NH;
    static constexpr int PER   = (ITEMS + NT - 1) / NT; /* halfwords per thread */

    static __device__ __forceinline__ uint16_t load(const char * __restrict__ src, int64_t nb, int k0,
            int k_max, int i) {
        if (i >= ITEMS) {
            return 0;
        }
        const int r = i / (NBLK * NH);
        return k0 + r < k_max ? ((const uint16_t *) (src + (int64_t) (k0 + r) * nb))[i % (NBLK * NH)] : 0;
    }

    static __device__ __forceinline__ void store(uint8_t * __restrict__ dst, int i, uint16_t h) {
        if (i < ITEMS) {
            *(uint16_t *) (dst + (i / NH) * S::SB + S::OFF + 2 * (i % NH)) = h;
        }
    }
};

/* Stage the K and V tiles with up to 8 + 8 loads of each thread in flight before it stores. */
template <typename SK, typename SV, int D, int T, int NT>
static __device__ __forceinline__ void tq_fa_stage(const char * __restrict__ K, int64_t nbk,
        const char * __restrict__ V, int64_t nbv, int k0, int k_max,
        uint8_t * __restrict__ Kt, uint8_t * __restrict__ Vt, int tid)
{
    typedef tq_fa_tile<SK, D, T, NT> TK;
    typedef tq_fa_tile<SV, D, T, NT> TV;
    constexpr int PER = TK::PER > TV::PER ? TK::PER : TV::PER;
    constexpr int BATCH = PER < 8 ? PER : 8;
#pragma unroll 1
    for (int p0 = 0; p0 < PER; p0 += BATCH) {
        uint16_t hk[BATCH];
        uint16_t hv[BATCH];
#pragma unroll
        for (int p = 0; p < BATCH; p++) {
            hk[p] = TK::load(K, nbk, k0, k_max, tid + (p0 + p) * NT);
            hv[p] = TV::load(V, nbv, k0, k_max, tid + (p0 + p) * NT);
        }
#pragma unroll
        for (int p = 0; p < BATCH; p++) {
            TK::store(Kt, tid + (p0 + p) * NT, hk[p]);
            TV::store(Vt, tid + (p0 + p) * NT, hv[p]);
        }
    }
}

template <int D, ggml_type type_K, ggml_type type_V>
__launch_bounds__(TQ_FA_NTHREADS)
static __global__ void tq_flash_attn_ext_vec(
        const char * __restrict__ Q,
        const char * __restrict__ K,
        const char * __restrict__ V,
        const char * __restrict__ mask,
        const char * __restrict__ sinks,
        const int  * __restrict__ KV_max,
        float      * __restrict__ dst,
        float2     * __restrict__ dst_meta,
        const float scale,
        const float max_bias,
        const float m0,
        const float m1,
        const uint32_t n_head_log2,
        const float logit_softcap,
        const int32_t ne00, const uint3   ne01, const int32_t ne02, const int32_t ne03,
                            const int32_t nb01, const int32_t nb02, const int32_t nb03,
        const int32_t ne10, const int32_t ne11, const int32_t ne12, const int32_t ne13,
                            const int32_t nb11, const int32_t nb12, const int64_t nb13,
                            const int32_t nb21, const int32_t nb22, const int64_t nb23,
                            const int32_t ne31, const int32_t ne32, const int32_t ne33,
                            const int32_t nb31, const int32_t nb32, const int64_t nb33) {
    ggml_cuda_pdl_lc();
    typedef tq_fa_staged<type_K> SK;
    typedef tq_fa_staged<type_V> SV;
    constexpr int T  = tq_fa_rows<D, type_K, type_V>();
    constexpr int G  = TQ_FA_HEADS;
    constexpr int NT = TQ_FA_NTHREADS;
    constexpr int NW = NT / WARP_SIZE;
    constexpr int DQ = D / 4;          /* values per quarter row (score step) */
    constexpr int QS = DQ + 4;         /* padded quarter: quarters on distinct banks */
    constexpr int NG8 = D / 8;         /* groups of 8 dims (V step) */
    constexpr int RS = NT / NG8;       /* row subsets of the V step */
    static_assert(D % 64 == 0 && D <= 256 && D % SK::QK == 0 && D % SV::QK == 0, "head size 64, 128 or 256");
    static_assert(T % WARP_SIZE == 0 && NT == 128 && T % RS == 0, "rows in whole warps, four quarters per row");
    static_assert(tq_fa_smem<D, SK, SV>(T) <= TQ_FA_SMEM_MAX, "shared memory of a block");

    __shared__ __align__(16) uint8_t Kt[T * (D / SK::QK) * SK::SB];
    __shared__ __align__(16) uint8_t Vt[T * (D / SV::QK) * SV::SB];
    __shared__ __align__(16) float Qs[G * 4 * QS]; /* queries, then the output sums */
    __shared__ float Ss[G][T];
    __shared__ float lutK[SK::NLUT > 0 ? SK::NLUT : 1];
    __shared__ float lutV[SV::NLUT > 0 ? SV::NLUT : 1];
    __shared__ float Ms[G];
    __shared__ float Ls[G];
    __shared__ float As[G];

    const int lane = threadIdx.x;
    const int warp = threadIdx.y;
    const int tid  = warp * WARP_SIZE + lane;

    const int col  = blockIdx.x;
    const int gqa  = ne02 / ne12;
    const int ntz  = (gqa + G - 1) / G;
    const int zt   = blockIdx.z % ntz;
    const int hk   = (blockIdx.z / ntz) % ne12;
    const int seq  = blockIdx.z / (ntz * ne12);
    const int h0   = hk * gqa + zt * G; /* first query head of this block */
    const int ng   = min(G, gqa - zt * G);

    if (tid < SK::NLUT) {
        lutK[tid] = SK::lut_entry(tid);
    }
    if (tid < SV::NLUT) {
        lutV[tid] = SV::lut_entry(tid);
    }
    if (tid < G) {
        Ms[tid] = -FLT_MAX / 2.0f;
        Ls[tid] = 0.0f;
    }

    ggml_cuda_pdl_sync();
    for (int i = tid; i < G * D; i += NT) {
        const int g = i / D;
        const int k = i % D;
        float q = 0.0f;
        if (g < ng) {
            q = ((const float *) (Q + nb03 * seq + nb02 * (h0 + g) + nb01 * col))[k] * scale;
        }
        Qs[(g * 4 + k / DQ) * QS + k % DQ] = q;
    }

    K += nb13 * seq + nb12 * hk;
    V += nb23 * seq + nb22 * hk;
    const half * maskh = mask ? (const half *) (mask + nb33 * (seq % ne33) + nb31 * col) : nullptr;
    const int k_max = KV_max ? KV_max[seq * gridDim.x + blockIdx.x] : ne11;

    float slope[G / NW];
#pragma unroll
    for (int w = 0; w < G / NW; w++) {
        slope[w] = get_alibi_slope(max_bias, h0 + warp + w * NW, n_head_log2, m0, m1);
    }

    /* score step: thread (row sr, quarter sq); V step: thread (dims 8*vg .., rows vr + RS*i) */
    const int sr = tid / 4;
    const int sq = tid % 4;
    const int vg = tid % NG8;
    const int vr = tid / NG8;

    float acc[G][8];
#pragma unroll
    for (int g = 0; g < G; g++) {
#pragma unroll
        for (int l = 0; l < 8; l++) {
            acc[g][l] = 0.0f;
        }
    }

    for (int k0 = blockIdx.y * T; k0 < k_max; k0 += gridDim.y * T) {
        __syncthreads(); /* the last tile's readers are done with Kt, Vt, Ss */
        tq_fa_stage<SK, SV, D, T, NT>(K, nb11, V, nb21, k0, k_max, Kt, Vt, tid);
        __syncthreads();

#pragma unroll
        for (int rr = 0; rr < T / 32; rr++) {
            const int row = sr + 32 * rr;
            float part[G];
#pragma unroll
            for (int g = 0; g < G; g++) {
                part[g] = 0.0f;
            }
            const uint8_t * krow = Kt + row * (D / SK::QK) * SK::SB;
#pragma unroll
            for (int j = 0; j < DQ; j += 8) {
                const int jj = sq * DQ + j; /* value index in the row */
                float kv[8];
                SK::decode8(krow + (jj / SK::QK) * SK::SB, jj % SK::QK, lutK, kv);
#pragma unroll
                for (int g = 0; g < G; g++) {
                    if (g < ng) {
                        const float4 qa = *(const float4 *) &Qs[(g * 4 + sq) * QS + j];
                        const float4 qb = *(const float4 *) &Qs[(g * 4 + sq) * QS + j + 4];
                        part[g] += kv[0] * qa.x + kv[1] * qa.y + kv[2] * qa.z + kv[3] * qa.w
                                 + kv[4] * qb.x + kv[5] * qb.y + kv[6] * qb.z + kv[7] * qb.w;
                    }
                }
            }
#pragma unroll
            for (int g = 0; g < G; g++) {
                if (g < ng) {
                    float s = part[g];
                    s += __shfl_xor_sync(0xFFFFFFFFu, s, 1);
                    s += __shfl_xor_sync(0xFFFFFFFFu, s, 2);
                    if (sq == 0) {
                        Ss[g][row] = s;
                    }
                }
            }
        }
        __syncthreads();

#pragma unroll
        for (int w = 0; w < G / NW; w++) {
            const int g = warp + w * NW;
            if (g < ng) {
                float sv[T / 32];
                float s_max = -INFINITY;
#pragma unroll
                for (int rr = 0; rr < T / 32; rr++) {
                    const int kv = k0 + lane + 32 * rr;
                    float s = Ss[g][lane + 32 * rr];
                    if (logit_softcap != 0.0f) {
                        s = logit_softcap * tanhf(s);
                    }
                    if (kv < k_max) {
                        if (maskh) {
                            s += slope[w] * __half2float(maskh[kv]);
                        }
                    } else {
                        s = -INFINITY;
                    }
                    sv[rr] = s;
                    s_max = fmaxf(s_max, s);
                }
                const float m_old = Ms[g];
                const float m_new = fmaxf(m_old, warp_reduce_max(s_max));
                float p_sum = 0.0f;
#pragma unroll
                for (int rr = 0; rr < T / 32; rr++) {
                    const float p = expf(sv[rr] - m_new);
                    Ss[g][lane + 32 * rr] = p;
                    p_sum += p;
                }
                p_sum = warp_reduce_sum(p_sum);
                if (lane == 0) {
                    const float a = expf(m_old - m_new);
                    As[g] = a;
                    Ls[g] = Ls[g] * a + p_sum;
                    Ms[g] = m_new;
                }
            }
        }
        __syncthreads();

#pragma unroll
        for (int g = 0; g < G; g++) {
            if (g < ng) {
                const float a = As[g];
#pragma unroll
                for (int l = 0; l < 8; l++) {
                    acc[g][l] *= a;
                }
            }
        }
#pragma unroll
        for (int i = 0; i < T / RS; i++) {
            const int r = vr + RS * i;
            const int jj = vg * 8;
            float vv[8];
            SV::decode8(Vt + (r * (D / SV::QK) + jj / SV::QK) * SV::SB, jj % SV::QK, lutV, vv);
#pragma unroll
            for (int g = 0; g < G; g++) {
                if (g < ng) {
                    const float p = Ss[g][r];
#pragma unroll
                    for (int l = 0; l < 8; l++) {
                        acc[g][l] += p * vv[l];
                    }
                }
            }
        }
    }
    __syncthreads();

    if (sinks && blockIdx.y == 0) {
        if (tid < ng) {
            const float sink  = ((const float *) sinks)[h0 + tid];
            const float m_new = fmaxf(sink, Ms[tid]);
            const float a     = expf(Ms[tid] - m_new);
            Ls[tid] = Ls[tid] * a + expf(sink - m_new);
            Ms[tid] = m_new;
            As[tid] = a;
        }
        __syncthreads();
#pragma unroll
        for (int g = 0; g < G; g++) {
            if (g < ng) {
#pragma unroll
                for (int l = 0; l < 8; l++) {
                    acc[g][l] *= As[g];
                }
            }
        }
    }

    /* Sum the row subsets in a fixed order (deterministic), in the queries' place. */
    float * O = Qs;
    for (int i = tid; i < G * D; i += NT) {
        O[i] = 0.0f;
    }
    for (int s = 0; s < RS; s++) {
        __syncthreads();
        if (vr == s) {
#pragma unroll
            for (int g = 0; g < G; g++) {
                if (g < ng) {
#pragma unroll
                    for (int l = 0; l < 8; l++) {
                        O[g * D + vg * 8 + l] += acc[g][l];
                    }
                }
            }
        }
    }
    __syncthreads();

    for (int i = tid; i < ng * D; i += NT) {
        const int g = i / D;
        const float inv = gridDim.y == 1 ? 1.0f / Ls[g] : 1.0f;
        const int64_t row = (((int64_t) seq * ne01.z + col) * ne02 + h0 + g) * gridDim.y + blockIdx.y;
        dst[row * D + i % D] = O[i] * inv;
    }
    if (gridDim.y != 1 && tid < ng) {
        const int64_t row = (((int64_t) seq * ne01.z + col) * ne02 + h0 + tid) * gridDim.y + blockIdx.y;
        dst_meta[row] = make_float2(Ms[tid], Ls[tid]);
    }
    GGML_UNUSED_VARS(ne00, ne03, ne10, ne13, ne31, ne32, nb32);
}

/* One FLASH_ATTN_EXT with the kernel above; split-KV and the combine as launch_fattn does
 * them for ggml's own kernels. */
template <int D, ggml_type type_K, ggml_type type_V>
void tq_cuda_flash_attn_ext_vec_case(ggml_backend_cuda_context & ctx, ggml_tensor * dst)
{
    launch_fattn<D, 1, TQ_FA_HEADS>(ctx, dst, tq_flash_attn_ext_vec<D, type_K, type_V>,
        TQ_FA_NTHREADS / WARP_SIZE, 0, tq_fa_rows<D, type_K, type_V>(), false, false, false, false);
}

#endif /* TURBOQUANT_CUDA_FATTN_CUH */
