/*
 * Flash-attention decode for turbo K and/or V caches, reading the blocks directly (no f16
 * copy of the cache): the kernel ggml-cuda's FLASH_ATTN_EXT runs for 1-2 queries per
 * sequence when K or V is a turbo type (patches/0009). K and V may each be any turbo type,
 * q8_0 or f16; head sizes 64 (block-64 types), 128 and 256; any GQA ratio; masks, ALiBi,
 * logit softcap and attention sinks as ggml defines them.
 *
 * Shape of the work. One thread block (128 threads) takes one query column, one KV head and
 * G query heads of its GQA group (4, or 2 where 4 does not divide the GQA ratio), so each K
 * and V value is decoded once per KV head, not once per query head. launch_fattn (ggml's
 * fattn-common.cuh) splits the KV length over gridDim.y blocks and combines their partial
 * softmax sums, so one sequence fills the GPU. Per tile of 64 KV rows (32 where 64 would not
 * fit in shared memory):
 *   1. the raw K and V blocks are copied to shared memory, one warp per row, lane c taking
 *      halfword c (2-byte loads: a head's blocks are only 2-byte aligned in a row), each
 *      block staged so its index planes are aligned (tq_cu_staged);
 *   2. scores: thread (row, quarter) reads the codebook levels of a quarter of its K row, 8
 *      at a time, from a table in shared memory, sums them against every query head of the
 *      block (prescaled queries in shared memory) and multiplies each sum by the block's
 *      scale once; two shuffles add the quarters;
 *   3. the online softmax, one warp per query head, each lane one row in 32;
 *   4. thread (8 dims, row subset) reads its V levels once and adds (p * scale) * level into
 *      float accumulators for every query head; the row subsets are summed once at the end.
 * Scaling sums instead of values rounds differently from decoding each value (decode8),
 * within test-backend-ops' tolerance; the levels and scales themselves are the parity-checked
 * ones.
 *
 * Needs ggml-cuda's common.cuh and fattn-common.cuh included first (launch_fattn, the
 * kernel signature fattn_kernel_t, warp reductions, get_alibi_slope).
 */
#ifndef TURBOQUANT_CUDA_FATTN_CUH
#define TURBOQUANT_CUDA_FATTN_CUH

#include "turboquant_cuda.cuh"

#define TQ_FA_NTHREADS 128
#define TQ_FA_HEADS 4 /* most query heads per block (launch_fattn's ncols2); 2 for GQA ratios
                           * that 4 does not divide, which halves the accumulators */
#define TQ_FA_SMEM_MAX (46 * 1024) /* static shared memory per block, under the 48 KiB limit */

/* q8_0 and f16 rows staged like turbo blocks (see tq_cu_staged), for mixed K/V pairs: a
 * scale shared by the block's values and their levels before it (f16: scale 1). */
struct tq_fa_staged_q8_0 {
    static constexpr int QK = 32, NB = 34, OFF = 14, SB = 48, NLUT = 0;
    static __device__ float lut_entry(int) { return 0.0f; }
    static __device__ __forceinline__ float scale(const uint8_t *sb) { return __half2float(*(const half *) (sb + 14)); }
    static __device__ __forceinline__ void levels8(const uint8_t *sb, int j0, const float *, float out[8])
    {
        const uint2 q = *(const uint2 *) (sb + 16 + j0);
        const int8_t *q8 = (const int8_t *) &q;
#pragma unroll
        for (int l = 0; l < 8; l++) {
            out[l] = (float) q8[l];
        }
    }
};

struct tq_fa_staged_f16 {
    static constexpr int QK = 8, NB = 16, OFF = 0, SB = 16, NLUT = 0;
    static __device__ float lut_entry(int) { return 0.0f; }
    static __device__ __forceinline__ float scale(const uint8_t *) { return 1.0f; }
    static __device__ __forceinline__ void levels8(const uint8_t *sb, int, const float *, float out[8])
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

/* Shared memory of one block for tiles of T rows and G query heads. */
template <int D, int G, typename SK, typename SV> __host__ __device__ constexpr int tq_fa_smem(int T)
{
    return T * (D / SK::QK) * SK::SB + T * (D / SV::QK) * SV::SB + G * (D + 16) * 4 +
           G * T * 4 + 32 * 4 * 2 + 3 * G * 4;
}

/* KV rows per tile: 64 halves the barriers and doubles the loads in flight per row of work,
 * where the staged rows fit. */
template <int D, ggml_type type_K, ggml_type type_V> __host__ __device__ constexpr int tq_fa_rows()
{
    return tq_fa_smem<D, TQ_FA_HEADS, tq_fa_staged<type_K>, tq_fa_staged<type_V>>(64) <= TQ_FA_SMEM_MAX ? 64 : 32;
}

/* Staging of one tile: rows k0 .. k0+T-1 of one KV head (row stride nb bytes) into staged
 * slots, one warp per row: lane c copies halfword c, c + 32, ... of the row's HW halfwords
 * (consecutive lanes on consecutive bytes; the rows of a head are 2-byte aligned, so no wider
 * load is safe). Rows at or past k_max become zero blocks: they decode to 0, and their p is 0. */
template <typename S, int D> struct tq_fa_row {
    static constexpr int NBLK = D / S::QK;              /* blocks per row */
    static constexpr int NH   = S::NB / 2;              /* halfwords per block */
    static constexpr int HW   = NBLK * NH;              /* halfwords per row */
    static constexpr int NQ   = (HW + WARP_SIZE - 1) / WARP_SIZE; /* halfwords per lane */
    static constexpr int RB   = NBLK * S::SB;           /* staged bytes per row */

    /* Where halfword c of a row goes in its staged slots. */
    static __device__ __forceinline__ int dst(int c) { return (c / NH) * S::SB + S::OFF + 2 * (c % NH); }
};

/* Stage the K and V tiles; each warp takes rows warp, warp + NW, ..., eight at a time, with
 * all of their loads in flight before the first store. */
template <typename SK, typename SV, int D, int T, int NW>
static __device__ __forceinline__ void tq_fa_stage(const char * __restrict__ K, int64_t nbk,
        const char * __restrict__ V, int64_t nbv, int k0, int k_max,
        uint8_t * __restrict__ Kt, uint8_t * __restrict__ Vt, int lane, int warp)
{
    typedef tq_fa_row<SK, D> RK;
    typedef tq_fa_row<SV, D> RV;
    constexpr int RPW   = T / NW;             /* rows per warp */
    constexpr int BATCH = RPW < 8 ? RPW : 8;
    static_assert(T % NW == 0 && RPW % BATCH == 0, "whole batches of rows per warp");
    const uint16_t * kr = (const uint16_t *) (K + (int64_t) (k0 + warp) * nbk) + lane;
    const uint16_t * vr = (const uint16_t *) (V + (int64_t) (k0 + warp) * nbv) + lane;
    const int64_t kstep = NW * nbk / 2; /* halfwords from one of this warp's rows to its next */
    const int64_t vstep = NW * nbv / 2;
    uint8_t * kt = Kt + warp * RK::RB;
    uint8_t * vt = Vt + warp * RV::RB;
#pragma unroll 1
    for (int i0 = 0; i0 < RPW; i0 += BATCH) {
        uint16_t hk[BATCH][RK::NQ];
        uint16_t hv[BATCH][RV::NQ];
#pragma unroll
        for (int i = 0; i < BATCH; i++) {
            const bool in = k0 + warp + NW * (i0 + i) < k_max;
#pragma unroll
            for (int q = 0; q < RK::NQ; q++) {
                hk[i][q] = in && lane + WARP_SIZE * q < RK::HW ? kr[WARP_SIZE * q] : 0;
            }
#pragma unroll
            for (int q = 0; q < RV::NQ; q++) {
                hv[i][q] = in && lane + WARP_SIZE * q < RV::HW ? vr[WARP_SIZE * q] : 0;
            }
            kr += kstep;
            vr += vstep;
        }
#pragma unroll
        for (int i = 0; i < BATCH; i++) {
#pragma unroll
            for (int q = 0; q < RK::NQ; q++) {
                const int c = lane + WARP_SIZE * q;
                if (c < RK::HW) {
                    *(uint16_t *) (kt + RK::dst(c)) = hk[i][q];
                }
            }
#pragma unroll
            for (int q = 0; q < RV::NQ; q++) {
                const int c = lane + WARP_SIZE * q;
                if (c < RV::HW) {
                    *(uint16_t *) (vt + RV::dst(c)) = hv[i][q];
                }
            }
            kt += NW * RK::RB;
            vt += NW * RV::RB;
        }
    }
}

/* Blocks per multiprocessor asked of the register allocator: with 2 query heads, head size up
 * to 128 and turbo2..4 K and V, everything fits in 64 registers without spilling (ptxas -v),
 * and 8 blocks instead of 5 hide more of the latency of the shared-memory table reads; the
 * other cases spill at 64 and keep the compiler's choice. */
template <int D, int G, typename SK, typename SV> __host__ __device__ constexpr int tq_fa_min_blocks()
{
    return G == 2 && D <= 128 && SK::NLUT > 0 && SK::NLUT <= 16 && SV::NLUT > 0 && SV::NLUT <= 16 ? 8 : 1;
}

/* G query heads per block, 2 or TQ_FA_HEADS. */
template <int D, int G, ggml_type type_K, ggml_type type_V>
__launch_bounds__(TQ_FA_NTHREADS, (tq_fa_min_blocks<D, G, tq_fa_staged<type_K>, tq_fa_staged<type_V>>()))
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
    constexpr int NT = TQ_FA_NTHREADS;
    constexpr int NW = NT / WARP_SIZE;
    constexpr int DQ = D / 4;          /* values per quarter row (score step) */
    constexpr int QS = DQ + 4;         /* padded quarter: quarters on distinct banks */
    constexpr int KB = DQ < SK::QK ? DQ : SK::QK; /* values of a quarter that share a scale */
    constexpr int NG8 = D / 8;         /* groups of 8 dims (V step) */
    constexpr int RS = NT / NG8;       /* row subsets of the V step */
    static_assert(D % 64 == 0 && D <= 256 && D % SK::QK == 0 && D % SV::QK == 0, "head size 64, 128 or 256");
    static_assert(T % WARP_SIZE == 0 && NT == 128 && T % RS == 0, "rows in whole warps, four quarters per row");
    static_assert(tq_fa_smem<D, G, SK, SV>(T) <= TQ_FA_SMEM_MAX, "shared memory of a block");
    static_assert(G == 2 || G == TQ_FA_HEADS, "2 or 4 query heads per block");

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

    constexpr int GW = (G + NW - 1) / NW; /* query heads per warp in the softmax step */
    float slope[GW];
#pragma unroll
    for (int w = 0; w < GW; w++) {
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
        tq_fa_stage<SK, SV, D, T, NW>(K, nb11, V, nb21, k0, k_max, Kt, Vt, lane, warp);
        __syncthreads();

#pragma unroll
        for (int rr = 0; rr < T / 32; rr++) {
            if (k0 + 32 * rr >= k_max) {
                break; /* 32 rows past the end (a short cache, the last tile): the softmax masks them */
            }
            const int row = sr + 32 * rr;
            float part[G];
#pragma unroll
            for (int g = 0; g < G; g++) {
                part[g] = 0.0f;
            }
            const uint8_t * krow = Kt + row * (D / SK::QK) * SK::SB;
            /* the quarter's values that share one scale: the levels are summed against the
             * queries first and the sum multiplied by the scale once */
#pragma unroll
            for (int b0 = 0; b0 < DQ; b0 += KB) {
                const int jb = sq * DQ + b0; /* first value index of this scale's run */
                const uint8_t * kb = krow + (jb / SK::QK) * SK::SB;
                float raw[G];
#pragma unroll
                for (int g = 0; g < G; g++) {
                    raw[g] = 0.0f;
                }
#pragma unroll
                for (int j = b0; j < b0 + KB; j += 8) {
                    float kv[8];
                    SK::levels8(kb, (sq * DQ + j) % SK::QK, lutK, kv);
#pragma unroll
                    for (int g = 0; g < G; g++) {
                        if (g < ng) {
                            const float4 qa = *(const float4 *) &Qs[(g * 4 + sq) * QS + j];
                            const float4 qb = *(const float4 *) &Qs[(g * 4 + sq) * QS + j + 4];
                            raw[g] += kv[0] * qa.x + kv[1] * qa.y + kv[2] * qa.z + kv[3] * qa.w
                                    + kv[4] * qb.x + kv[5] * qb.y + kv[6] * qb.z + kv[7] * qb.w;
                        }
                    }
                }
                const float d = SK::scale(kb);
#pragma unroll
                for (int g = 0; g < G; g++) {
                    part[g] += d * raw[g];
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
        for (int w = 0; w < GW; w++) {
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
            if (k0 + RS * i >= k_max) {
                break; /* RS rows past the end: their p is 0 */
            }
            const int r = vr + RS * i;
            const int jj = vg * 8;
            const uint8_t * vb = Vt + (r * (D / SV::QK) + jj / SV::QK) * SV::SB;
            float vv[8];
            SV::levels8(vb, jj % SV::QK, lutV, vv);
            const float d = SV::scale(vb);
#pragma unroll
            for (int g = 0; g < G; g++) {
                if (g < ng) {
                    const float pd = Ss[g][r] * d; /* p * scale, once per 8 values */
#pragma unroll
                    for (int l = 0; l < 8; l++) {
                        acc[g][l] += pd * vv[l];
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
    const int64_t gqa = dst->src[0]->ne[2] / dst->src[1]->ne[2];
    constexpr int T = tq_fa_rows<D, type_K, type_V>();
    if (gqa % TQ_FA_HEADS == 0) {
        launch_fattn<D, 1, TQ_FA_HEADS>(ctx, dst, tq_flash_attn_ext_vec<D, TQ_FA_HEADS, type_K, type_V>,
            TQ_FA_NTHREADS / WARP_SIZE, 0, T, false, false, false, false);
    } else {
        launch_fattn<D, 1, 2>(ctx, dst, tq_flash_attn_ext_vec<D, 2, type_K, type_V>,
            TQ_FA_NTHREADS / WARP_SIZE, 0, T, false, false, false, false);
    }
}

#endif /* TURBOQUANT_CUDA_FATTN_CUH */
