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
 * softmax sums, so one sequence fills the GPU. Per tile of T KV rows (64, or 32 for head
 * size 256):
 *   1. the raw K and V blocks are copied to shared memory, one warp per row, lane c taking
 *      halfword c (2-byte loads: a head's blocks are only 2-byte aligned in a row), each
 *      block staged so its index planes are aligned (tq_cu_staged);
 *   2. every staged value is decoded once, 8 per item, to f16 in shared memory: the
 *      codebook level, and the block scale kept apart where a row is one block (D == QK),
 *      else d * level;
 *   3. scores on tensor cores: mma m16n8k16 with the G queries (f16, prescaled) as A rows
 *      and 8 K rows as B, each warp a quarter of the rows; x the row's scale;
 *   4. the online softmax, one warp per query head, each lane one row in 32; the
 *      probabilities (x the V row's scale) as f16;
 *   5. output on tensor cores: the probabilities as A, 8-dim slices of V as B (ldmatrix
 *      .trans), f32 accumulators, each warp a quarter of the head's dims.
 * The f16 roundings (levels, queries, probabilities) are those of ggml's own f16 kernels,
 * within test-backend-ops' tolerance; the levels and scales themselves are the
 * parity-checked ones (levels8, scale).
 *
 * Needs ggml-cuda's common.cuh and fattn-common.cuh included first (launch_fattn, the
 * kernel signature fattn_kernel_t, warp reductions, get_alibi_slope). No pointer is
 * __restrict__: launch_fattn launches with programmatic dependent launch on Hopper and newer,
 * where a restrict-qualified read-only pointer lets the compiler move a load of the cache
 * above ggml_cuda_pdl_sync() (llama.cpp PR 24030). Helpers take GGML_CUDA_RESTRICT, which is
 * empty there; kernel parameters take neither, since it differs between nvcc's host and
 * device passes.
 */
#ifndef TURBOQUANT_CUDA_FATTN_CUH
#define TURBOQUANT_CUDA_FATTN_CUH

#include "turboquant_cuda_ggml.cuh"

#define TQ_FA_NTHREADS 128
#define TQ_FA_HEADS 4 /* most query heads per block (launch_fattn's ncols2); 2 for GQA ratios
                           * that 4 does not divide, which halves the accumulators */

/* q8_0 and f16 rows staged like turbo blocks (see tq_cu_staged), for mixed K/V pairs: a
 * scale shared by the block's values and their levels before it (f16: scale 1). */
struct tq_fa_staged_q8_0 {
    static constexpr int QK = 32, NB = 34, OFF = 14, SB = 48, NLUT = 0;
    static constexpr bool H8 = true; /* levels8_h: the int8 values as fp16, exact */
    static constexpr bool I8 = false; /* each block's own scale: the scores stay in fp16 */
    struct hlut {};
    struct i8lut {};
    static __device__ __forceinline__ void i8lut_init(i8lut &) {}
    static __device__ __forceinline__ void hlut_init(hlut &) {}
    /* values j0 .. j0+7 of the block blk (2-byte aligned): bytes 0-3 in lo, 4-7 in hi */
    static __device__ __forceinline__ void bits8(const uint8_t *blk, int j0, uint32_t &lo, uint32_t &hi)
    {
        bits8_at(blk + lo_at(j0), blk + hi_at(j0), lo, hi);
    }
    static __device__ constexpr int lo_at(int j0) { return 2 + j0; }
    static __device__ constexpr int hi_at(int j0) { return 6 + j0; }
    static __device__ __forceinline__ void bits8_at(const uint8_t *lo_p, const uint8_t *hi_p, uint32_t &lo, uint32_t &hi)
    {
        lo = *(const uint16_t *) lo_p | (uint32_t) *(const uint16_t *) (lo_p + 2) << 16;
        hi = *(const uint16_t *) hi_p | (uint32_t) *(const uint16_t *) (hi_p + 2) << 16;
    }
    /* int8 x as fp16: the bits 0x6400 | (x + 128) are 1024 + x + 128, less 1152 */
    static __device__ __forceinline__ void levels8_h(uint32_t lo, uint32_t hi, const hlut &, uint32_t out[4])
    {
        const half2 off = __half2half2(__float2half(1152.0f));
        const uint32_t u[2] = {lo ^ 0x80808080u, hi ^ 0x80808080u};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const uint32_t b = __byte_perm(u[i / 2], 0x64646464u, i % 2 ? 0x4342u : 0x4140u);
            const half2 h = __hsub2(*(const half2 *) &b, off);
            out[i] = *(const uint32_t *) &h;
        }
    }
    static constexpr int PSTEP = 1;
    static constexpr bool PAIRED = false;
    static __device__ constexpr int pfirst(int u) { return 2 * u; }
    static __device__ __forceinline__ void levels8x2_h(uint32_t lo_a, uint32_t hi_a, uint32_t lo_b, uint32_t hi_b,
            const hlut & t, uint32_t a[4], uint32_t b[4])
    {
        levels8_h(lo_a, hi_a, t, a);
        levels8_h(lo_b, hi_b, t, b);
    }
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
    static constexpr bool H8 = false;
    struct hlut {};
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

/* Layout of a block's dynamic shared memory for tiles of T rows and G query heads, in bytes:
 * the staged K and V tiles, the same tiles decoded to f16 (rows padded by 8 halves, so the
 * eight 16-byte rows an ldmatrix reads fall on distinct banks), the scores, the
 * probabilities as f16 (8 rows: the mma's A operand; rows past G stay 0), the per-row
 * scales and the softmax state. */
template <int D, int G, typename SK, typename SV> struct tq_fa_smem {
    static constexpr int DP    = D + 8;                       /* halves per decoded row */
    static __host__ __device__ constexpr int rbk() { return (D / SK::QK) * SK::SB; }
    static __host__ __device__ constexpr int rbv() { return (D / SV::QK) * SV::SB; }
    static __host__ __device__ constexpr int kt(int)  { return 0; }
    static __host__ __device__ constexpr int vt(int T) { return T * rbk(); }
    static __host__ __device__ constexpr int kh(int T) { return (vt(T) + T * rbv() + 15) / 16 * 16; }
    static __host__ __device__ constexpr int vh(int T) { return kh(T) + T * DP * 2; }
    static __host__ __device__ constexpr int ph(int T) { return vh(T) + T * DP * 2; }
    static __host__ __device__ constexpr int ss(int T) { return ph(T) + 8 * (T + 8) * 2; }
    static __host__ __device__ constexpr int dk(int T) { return ss(T) + G * T * 4; }
    static __host__ __device__ constexpr int dv(int T) { return dk(T) + T * 4; }
    static __host__ __device__ constexpr int lut(int T) { return dv(T) + T * 4; }
    static __host__ __device__ constexpr int st(int T) { return lut(T) + 64 * 4; }
    static __host__ __device__ constexpr int bytes(int T) { return st(T) + 3 * G * 4; }
};

/* KV rows per tile: 64 where a block's shared memory stays within 60 KiB (3 blocks and more
 * per multiprocessor), else 32. */
template <int D, int G, ggml_type type_K, ggml_type type_V> __host__ __device__ constexpr int tq_fa_rows()
{
    return tq_fa_smem<D, G, tq_fa_staged<type_K>, tq_fa_staged<type_V>>::bytes(64) <= 60 * 1024 ? 64 : 32;
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
static __device__ __forceinline__ void tq_fa_stage(const char * GGML_CUDA_RESTRICT K, int64_t nbk,
        const char * GGML_CUDA_RESTRICT V, int64_t nbv, int k0, int k_max,
        uint8_t * GGML_CUDA_RESTRICT Kt, uint8_t * GGML_CUDA_RESTRICT Vt, int lane, int warp)
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

/* Two floats as the bits of a half2 (round to nearest). */
static __device__ __forceinline__ uint32_t tq_fa_h2(float a, float b)
{
    const half2 h = __floats2half2_rn(a, b);
    return *(const uint32_t *) &h;
}

/* Tensor-core helpers (sm_80 and later; ggml-cuda builds this kernel only where the mma
 * instructions exist). mma m16n8k16: A 16x16 f16 (row), B 16x8 f16 (col), C 16x8 f32;
 * lane l holds A rows l/4 and l/4 + 8, B and C column l/4 (B: rows 2(l%4), +1 and +8;
 * C: row l/4, columns 2(l%4), +1). Only A rows 0-7 carry query heads here, so a1 = a3 = 0. */
static __device__ __forceinline__ void tq_fa_mma(float c[4], uint32_t a0, uint32_t a2, uint32_t b0, uint32_t b1)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(0u), "r"(a2), "r"(0u), "r"(b0), "r"(b1));
#else
    GGML_UNUSED_VARS(c, a0, a2, b0, b1);
    NO_DEVICE_CODE;
#endif
}

/* Four 8x8 f16 matrices from shared memory; lane l gives the address of row l % 8 of matrix
 * l / 8 and receives, of matrix i in r[i], row l/4, columns 2(l%4), +1 (TRANS: column l/4,
 * rows 2(l%4), +1). */
template <bool TRANS> static __device__ __forceinline__ void tq_fa_ldmatrix(uint32_t r[4], const half * p)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const uint32_t a = (uint32_t) __cvta_generic_to_shared(p);
    if (TRANS) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
    } else {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
    }
#else
    GGML_UNUSED_VARS(r, p);
    NO_DEVICE_CODE;
#endif
}

/* Decode a staged tile of T rows to f16, 8 values per item: the codebook levels as fp16
 * straight from the index bits (levels8_h) for turbo2..5, else through levels8 (the
 * parity-checked float decode) rounded to fp16. Where a row is one block (D == S::QK) the
 * levels stay unscaled and the row's scale goes to dsc[row] (applied to the scores, or
 * folded into the probabilities); else each value is d * level. */
template <typename S, int D, int T, int NT>
static __device__ __forceinline__ void tq_fa_decode_tile(const uint8_t * GGML_CUDA_RESTRICT st, const float * lut,
        const typename S::hlut & ht, half * GGML_CUDA_RESTRICT dh, float * GGML_CUDA_RESTRICT dsc, int tid)
{
    constexpr int NG = D / 8;        /* items per row */
    constexpr bool ROW = D == S::QK; /* one scale per row */
    constexpr int DP = D + 8;
    static_assert(T * NG % NT == 0, "whole items per thread");
#pragma unroll
    for (int it = 0; it < T * NG / NT; it++) {
        const int i = tid + NT * it;
        const int r = i / NG;
        const int j = (i % NG) * 8;
        const uint8_t * sb = st + (r * (D / S::QK) + j / S::QK) * S::SB;
        uint4 h;
        if constexpr (S::H8) {
            uint32_t lo;
            uint32_t hi;
            S::bits8(sb + 14, j % S::QK, lo, hi);
            S::levels8_h(lo, hi, ht, (uint32_t *) &h);
            if (!ROW) {
                const half2 d2 = __half2half2(*(const half *) (sb + 14));
                half2 * h2 = (half2 *) &h;
#pragma unroll
                for (int l = 0; l < 4; l++) {
                    h2[l] = __hmul2(h2[l], d2);
                }
            }
        } else {
            float f[8];
            S::levels8(sb, j % S::QK, lut, f);
            const float m = ROW ? 1.0f : S::scale(sb);
            h.x = tq_fa_h2(m * f[0], m * f[1]);
            h.y = tq_fa_h2(m * f[2], m * f[3]);
            h.z = tq_fa_h2(m * f[4], m * f[5]);
            h.w = tq_fa_h2(m * f[6], m * f[7]);
        }
        *(uint4 *) (dh + r * DP + j) = h;
        if (ROW && j == 0) {
            dsc[r] = S::scale(sb);
        }
    }
}

/* Blocks per multiprocessor asked of the register allocator (ptxas -v): turbo K and V up to
 * head size 128 fit 4 blocks (128 registers) without spilling; q8_0 or f16 rows and head
 * size 256 need more registers and keep the compiler's choice. */
template <int D, typename SK, typename SV> __host__ __device__ constexpr int tq_fa_min_blocks()
{
    return D <= 128 && SK::NLUT > 0 && SV::NLUT > 0 ? 4 : 1;
}

/* G query heads per block, 2 or TQ_FA_HEADS. */
template <int D, int G, ggml_type type_K, ggml_type type_V>
__launch_bounds__(TQ_FA_NTHREADS, (tq_fa_min_blocks<D, tq_fa_staged<type_K>, tq_fa_staged<type_V>>()))
static __global__ void tq_flash_attn_ext_vec(
        const char * Q,
        const char * K,
        const char * V,
        const char * mask,
        const char * sinks,
        const int  * KV_max,
        float      * dst,
        float2     * dst_meta,
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
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    ggml_cuda_pdl_lc();
    typedef tq_fa_staged<type_K> SK;
    typedef tq_fa_staged<type_V> SV;
    typedef tq_fa_smem<D, G, SK, SV> L;
    constexpr int T  = tq_fa_rows<D, G, type_K, type_V>();
    constexpr int NT = TQ_FA_NTHREADS;
    constexpr int NW = NT / WARP_SIZE;
    constexpr int DP = L::DP;
    constexpr int PP = T + 8;            /* halves per row of the probabilities */
    constexpr bool ROWK = D == SK::QK;   /* K's scale applies to whole scores */
    constexpr bool ROWV = D == SV::QK;   /* V's scale folds into the probabilities */
    constexpr int RW = T / NW;           /* score rows per warp */
    constexpr int NV = D / (8 * NW);     /* 8-dim output tiles per warp */
    static_assert(D % 64 == 0 && D <= 256 && D % SK::QK == 0 && D % SV::QK == 0, "head size 64, 128 or 256");
    static_assert(NT == 128 && RW % 8 == 0 && NV % 2 == 0 && T % 32 == 0, "tiles of the mma steps");
    static_assert(G == 2 || G == TQ_FA_HEADS, "2 or 4 query heads per block");

    extern __shared__ __align__(16) uint8_t tq_fa_sm[];
    uint8_t * Kt = tq_fa_sm + L::kt(T);
    uint8_t * Vt = tq_fa_sm + L::vt(T);
    half    * Kh = (half *) (tq_fa_sm + L::kh(T));
    half    * Vh = (half *) (tq_fa_sm + L::vh(T));
    half    * Ph = (half *) (tq_fa_sm + L::ph(T));
    float   * Ss = (float *) (tq_fa_sm + L::ss(T));
    float   * dK = (float *) (tq_fa_sm + L::dk(T));
    float   * dV = (float *) (tq_fa_sm + L::dv(T));
    float   * lutK = (float *) (tq_fa_sm + L::lut(T));
    float   * lutV = lutK + 32;
    float   * Ms = (float *) (tq_fa_sm + L::st(T));
    float   * Ls = Ms + G;
    float   * As = Ls + G;

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
    for (int i = tid; i < 8 * PP / 2; i += NT) {
        ((uint32_t *) Ph)[i] = 0u; /* rows ng..7 stay 0 */
    }
    if (!ROWK) {
        for (int i = tid; i < T; i += NT) {
            dK[i] = 1.0f;
        }
    }
    if (!ROWV) {
        for (int i = tid; i < T; i += NT) {
            dV[i] = 1.0f;
        }
    }

    typename SK::hlut htK;
    typename SV::hlut htV;
    if constexpr (SK::H8) {
        SK::hlut_init(htK);
    }
    if constexpr (SV::H8) {
        SV::hlut_init(htV);
    }

    /* The queries as mma A fragments (f16, prescaled): lane l holds head l/4, dims
     * 16s + 2(l%4), +1 and +8, +9 of each 16-dim step s. */
    const int qg = lane / 4;
    const int qc = lane % 4;
    ggml_cuda_pdl_sync();
    uint32_t qa[D / 16][2];
    {
        const float * qrow = (const float *) (Q + nb03 * seq + nb02 * (h0 + min(qg, ng - 1)) + nb01 * col);
#pragma unroll
        for (int s = 0; s < D / 16; s++) {
            const float2 x = *(const float2 *) (qrow + 16 * s + 2 * qc);
            const float2 y = *(const float2 *) (qrow + 16 * s + 8 + 2 * qc);
            const float z = qg < ng ? scale : 0.0f;
            qa[s][0] = tq_fa_h2(x.x * z, x.y * z);
            qa[s][1] = tq_fa_h2(y.x * z, y.y * z);
        }
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

    float acc[NV][4]; /* output dims warp*D/NW + 8n + 2qc, +1 of head qg (c[2], c[3]: rows 8-15, unused) */
#pragma unroll
    for (int n = 0; n < NV; n++) {
#pragma unroll
        for (int l = 0; l < 4; l++) {
            acc[n][l] = 0.0f;
        }
    }

    for (int k0 = blockIdx.y * T; k0 < k_max; k0 += gridDim.y * T) {
        __syncthreads(); /* the last tile's readers are done */
        tq_fa_stage<SK, SV, D, T, NW>(K, nb11, V, nb21, k0, k_max, Kt, Vt, lane, warp);
        __syncthreads();
        tq_fa_decode_tile<SK, D, T, NT>(Kt, lutK, htK, Kh, dK, tid);
        tq_fa_decode_tile<SV, D, T, NT>(Vt, lutV, htV, Vh, dV, tid);
        __syncthreads();

        /* scores: warp w takes rows RW*w .. +RW-1, 8 at a time */
#pragma unroll
        for (int r0 = RW * warp; r0 < RW * (warp + 1); r0 += 8) {
            if (k0 + r0 >= k_max) {
                break; /* the softmax masks rows past the end */
            }
            float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
            for (int s = 0; s < D / 16; s += 2) {
                uint32_t b[4];
                tq_fa_ldmatrix<false>(b, Kh + (r0 + lane % 8) * DP + 16 * s + 8 * (lane / 8));
                tq_fa_mma(c, qa[s][0], qa[s][1], b[0], b[1]);
                tq_fa_mma(c, qa[s + 1][0], qa[s + 1][1], b[2], b[3]);
            }
            if (qg < ng) {
                const int r = r0 + 2 * qc;
                Ss[qg * T + r]     = c[0] * dK[r];
                Ss[qg * T + r + 1] = c[1] * dK[r + 1];
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
                    float s = Ss[g * T + lane + 32 * rr];
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
                    const int r = lane + 32 * rr;
                    const float p = expf(sv[rr] - m_new);
                    Ph[g * PP + r] = __float2half(p * dV[r]);
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

        /* output: warp w takes dims D/NW*w .., 16 at a time, over the tile's rows 16 at a time */
        {
            const float a = qg < ng ? As[qg] : 0.0f;
#pragma unroll
            for (int n = 0; n < NV; n++) {
                acc[n][0] *= a;
                acc[n][1] *= a;
            }
        }
#pragma unroll
        for (int s = 0; s < T / 16; s++) {
            if (k0 + 16 * s >= k_max) {
                break; /* their probabilities are 0 */
            }
            const uint32_t p0 = *(const uint32_t *) (Ph + qg * PP + 16 * s + 2 * qc);
            const uint32_t p1 = *(const uint32_t *) (Ph + qg * PP + 16 * s + 8 + 2 * qc);
#pragma unroll
            for (int n = 0; n < NV; n += 2) {
                uint32_t b[4];
                tq_fa_ldmatrix<true>(b, Vh + (16 * s + lane % 8 + 8 * ((lane / 8) % 2)) * DP
                                            + (D / NW) * warp + 8 * n + 8 * (lane / 16));
                tq_fa_mma(acc[n], p0, p1, b[0], b[1]);
                tq_fa_mma(acc[n + 1], p0, p1, b[2], b[3]);
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
        const float a = qg < ng ? As[qg] : 0.0f;
#pragma unroll
        for (int n = 0; n < NV; n++) {
            acc[n][0] *= a;
            acc[n][1] *= a;
        }
    }

    if (qg < ng) {
        const float inv = gridDim.y == 1 ? 1.0f / Ls[qg] : 1.0f;
        const int64_t row = (((int64_t) seq * ne01.z + col) * ne02 + h0 + qg) * gridDim.y + blockIdx.y;
#pragma unroll
        for (int n = 0; n < NV; n++) {
            *(float2 *) (dst + row * D + (D / NW) * warp + 8 * n + 2 * qc) = make_float2(acc[n][0] * inv, acc[n][1] * inv);
        }
    }
    if (gridDim.y != 1 && tid < ng) {
        const int64_t row = (((int64_t) seq * ne01.z + col) * ne02 + h0 + tid) * gridDim.y + blockIdx.y;
        dst_meta[row] = make_float2(Ms[tid], Ls[tid]);
    }
    GGML_UNUSED_VARS(ne00, ne03, ne10, ne13, ne31, ne32, nb32);
#else
    GGML_UNUSED_VARS(Q, K, V, mask, sinks, KV_max, dst, dst_meta, scale, max_bias, m0, m1, n_head_log2,
        logit_softcap, ne00, ne01, ne02, ne03, nb01, nb02, nb03, ne10, ne11, ne12, ne13, nb11, nb12, nb13,
        nb21, nb22, nb23, ne31, ne32, ne33, nb31, nb32, nb33);
    NO_DEVICE_CODE;
#endif
}

/* mma m16n8k16 with all four A registers (see tq_fa_mma). */
static __device__ __forceinline__ void tq_fa_mma4(float c[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
        uint32_t b0, uint32_t b1)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
    GGML_UNUSED_VARS(c, a0, a1, a2, a3, b0, b1);
    NO_DEVICE_CODE;
#endif
}

/* mma m16n8k32 on int8: A 16x32 (row), B 32x8 (col), C 16x8 int32; lane l holds A rows l/4
 * (a0, a2) and l/4 + 8 (a1, a3) at columns 4(l%4) .. +3 (a0, a1) and 16 + 4(l%4) .. +3, B
 * column l/4 at those rows, C as m16n8k16's. */
static __device__ __forceinline__ void tq_fa_imma(int c[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
        uint32_t b0, uint32_t b1)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
    GGML_UNUSED_VARS(c, a0, a1, a2, a3, b0, b1);
    NO_DEVICE_CODE;
#endif
}

/* A lane's run of values in a staged row, from value jl of the row on: where the index planes
 * of values jl .. jl+7 start (lo, hi) and the block holding them (blk, whose first bytes are
 * its scale). The mma kernel's loads then take their offsets from these pointers as
 * immediates: bits8 of values jl + J is at lo + dlo(J), hi + dhi(J) for any J % 8 == 0 that
 * keeps jl % QK + J % QK inside a block, and another row at a fixed distance is at(). */
template <typename S> struct tq_fa_lane {
    const uint8_t * blk;
    const uint8_t * lo;
    const uint8_t * hi;

    __device__ __forceinline__ tq_fa_lane(const uint8_t * row, int jl)
        : blk(row + (jl / S::QK) * S::NB), lo(blk + S::lo_at(jl % S::QK)), hi(blk + S::hi_at(jl % S::QK)) {}
    __device__ __forceinline__ tq_fa_lane(const uint8_t * b, const uint8_t * l, const uint8_t * h) : blk(b), lo(l), hi(h) {}

    static __device__ constexpr int dlo(int J) { return (J / S::QK) * S::NB + S::lo_at(J % S::QK) - S::lo_at(0); }
    static __device__ constexpr int dhi(int J) { return (J / S::QK) * S::NB + S::hi_at(J % S::QK) - S::hi_at(0); }
    /* the same run in the row nbytes further on */
    __device__ __forceinline__ tq_fa_lane at(int nbytes) const { return tq_fa_lane(blk + nbytes, lo + nbytes, hi + nbytes); }
    __device__ __forceinline__ void bits8(int J, uint32_t & l, uint32_t & h) const { S::bits8_at(lo + dlo(J), hi + dhi(J), l, h); }
    /* the scale of the block holding values jl + J, as half2 */
    __device__ __forceinline__ half2 scale2(int J) const { return __half2half2(*(const half *) (blk + (J / S::QK) * S::NB)); }
};

/* 8 values of two staged rows as fp16 (4 x half2 each, word u holding values S::pfirst(u)
 * and S::pfirst(u) + S::PSTEP): values jl + J .. +7 of the lanes' runs a and b. Where a row
 * is one block (ROW) the scale stays out, else each value is d * level. Rows past the end
 * are decoded too, from whatever their staged copy holds (zeros, or an earlier row's bytes:
 * finite): their scores are replaced and their probabilities are 0. */
template <typename S, bool ROW>
static __device__ __forceinline__ void tq_fa_rows8x2(const tq_fa_lane<S> & ra, const tq_fa_lane<S> & rb, int J,
        const typename S::hlut & ht, uint32_t a[4], uint32_t b[4])
{
    uint32_t lo_a, hi_a, lo_b, hi_b;
    ra.bits8(J, lo_a, hi_a);
    rb.bits8(J, lo_b, hi_b);
    S::levels8x2_h(lo_a, hi_a, lo_b, hi_b, ht, a, b);
    if (!ROW) {
        const half2 da = ra.scale2(J);
        const half2 db = rb.scale2(J);
#pragma unroll
        for (int l = 0; l < 4; l++) {
            ((half2 *) a)[l] = __hmul2(((half2 *) a)[l], da);
            ((half2 *) b)[l] = __hmul2(((half2 *) b)[l], db);
        }
    }
}

/* tq_fa_rows8x2's values as int8 levels (S::levels8x2_i8): word w of a and b holds values
 * S::i8val(w, 0..3) of the rows, before the level step and the scale. */
template <typename S>
static __device__ __forceinline__ void tq_fa_rows8x2_i8(const tq_fa_lane<S> & ra, const tq_fa_lane<S> & rb, int J,
        const typename S::i8lut & t, uint32_t a[2], uint32_t b[2])
{
    uint32_t lo_a, hi_a, lo_b, hi_b;
    ra.bits8(J, lo_a, hi_a);
    rb.bits8(J, lo_b, hi_b);
    S::levels8x2_i8(lo_a, hi_a, lo_b, hi_b, t, a, b);
}

/* Values jl + J .. +7 of two staged rows paired by value, as the V^T operand of the output
 * product takes them: out[v] holds value v of row a (low half) and of row b. levels8p_h
 * where the format has it, else tq_fa_rows8x2's words paired by byte permutes. */
template <typename S, bool ROW>
static __device__ __forceinline__ void tq_fa_pairs8(const tq_fa_lane<S> & ra, const tq_fa_lane<S> & rb, int J,
        const typename S::hlut & ht, uint32_t out[8])
{
    if constexpr (S::PAIRED) {
        uint32_t lo_a, hi_a, lo_b, hi_b;
        ra.bits8(J, lo_a, hi_a);
        rb.bits8(J, lo_b, hi_b);
        S::levels8p_h(lo_a, hi_a, lo_b, hi_b, ht, out);
        if (!ROW) {
            const half2 d = __lows2half2(ra.scale2(J), rb.scale2(J));
#pragma unroll
            for (int v = 0; v < 8; v++) {
                ((half2 *) out)[v] = __hmul2(((half2 *) out)[v], d);
            }
        }
    } else {
        uint32_t a[4], b[4];
        tq_fa_rows8x2<S, ROW>(ra, rb, J, ht, a, b);
#pragma unroll
        for (int u = 0; u < 4; u++) {
            out[S::pfirst(u)]            = __byte_perm(a[u], b[u], 0x5410);
            out[S::pfirst(u) + S::PSTEP] = __byte_perm(a[u], b[u], 0x7632);
        }
    }
}

/* A warp's copy of 16 K or V rows of one head in shared memory (the mma kernel's staging):
 * each row's RB bytes start 2-byte aligned in memory, so the warp copies the NCH aligned
 * 16-byte chunks that can hold them, whole (cp.async, no registers, no per-word address
 * arithmetic), and a row keeps its offset within the first chunk. The row stride is an odd
 * number of chunks: the 8 rows one load instruction of the kernel reads then start in 8
 * distinct bank quads, so neither K's nor V's reads conflict. */
template <typename S, int D> struct tq_fa_win {
    static constexpr int RB    = (D / S::QK) * S::NB;   /* bytes of a head's row */
    static constexpr int NCH   = (RB + 14 + 15) / 16;  /* 16-byte chunks that can hold them */
    static constexpr int RS    = 16 * (NCH | 1);       /* staged bytes per row */
    static constexpr int BYTES = 16 * RS;              /* 16 rows */
};

/* Bytes of shared memory a warp of the mma kernel stages its rows in: two buffers, each of
 * 16 K rows, 16 V rows and their mask (16 halfs). */
template <typename SK, typename SV, int D> static __host__ __device__ constexpr int tq_fa_warp_smem()
{
    return 2 * (tq_fa_win<SK, D>::BYTES + tq_fa_win<SV, D>::BYTES + 32);
}

/* One lane's share of copying a warp's 16 rows into its staged rows (cp.async, one group per
 * call of copy): slot i = lane + 32 m of the 16 x RS/16 chunk slots of a buffer lands at byte
 * 16 i, and is chunk i % (RS/16) of row i / (RS/16) where that chunk holds bytes of the row
 * (else the slot is idle). A row's offset within its first chunk is the same in every group
 * of the warp (they lie a multiple of 64 rows apart, and 64 rows are a multiple of 16 bytes
 * at any row stride), so the slots' source offsets and which slots copy are worked out once,
 * before the loop: a group then costs an add and a cp.async per slot. */
template <typename S, int D> struct tq_fa_copier {
    typedef tq_fa_win<S, D> W;
    static constexpr int NS  = W::RS / 16;                           /* slots per row */
    static constexpr int NPL = (16 * NS + WARP_SIZE - 1) / WARP_SIZE; /* slots per lane */
    int      src[NPL]; /* bytes from a group's first row to the slot's chunk */
    uint32_t ok;       /* bit m: slot m copies */

    /* g: the first row of any of the warp's groups (row stride nb bytes) */
    __device__ __forceinline__ tq_fa_copier(const char * g, int nb, int lane) : ok(0u)
    {
#pragma unroll
        for (int m = 0; m < NPL; m++) {
            const int i   = lane + WARP_SIZE * m;
            const int r   = i / NS;
            const int ch  = i % NS;
            const int off = (int) ((uintptr_t) (g + r * nb) & 15);
            src[m] = r * nb - off + 16 * ch;
            /* a chunk past the row's last byte may lie past the buffer */
            ok |= (16 * NS % WARP_SIZE == 0 || i < 16 * NS) && ch < W::NCH && 16 * ch < off + W::RB ? 1u << m : 0u;
        }
    }

    /* Start copying the 16 rows from g (rows < nrows exist) into the buffer st (16-byte
     * aligned shared memory). */
    __device__ __forceinline__ void copy(const char * g, int nrows, const uint8_t * st, int lane) const
    {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
        const uint32_t a = (uint32_t) __cvta_generic_to_shared(st) + 16 * lane;
        /* slots lie in row order: slot i's row exists if i < nrows NS */
        const int lim = nrows * NS - lane;
#pragma unroll
        for (int m = 0; m < NPL; m++) {
            if ((ok & (1u << m)) && WARP_SIZE * m < lim) {
                asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" : : "r"(a + 16 * WARP_SIZE * m), "l"(g + src[m]));
            }
        }
#else
        GGML_UNUSED_VARS(g, nrows, st, lane);
#endif
    }
};

/* Start copying the mask of a warp's 16 rows from m (4-byte aligned; the rows < nrows exist,
 * nrows even) to st (32 bytes of shared memory): lanes 0-7, 4 bytes each. The scores read it
 * from there, after the wait that the K and V rows take anyway: read from global memory
 * where the scores need it, its latency was the kernel's largest stall (11 % of the warp
 * samples in ncu's source view), and a load into registers a group ahead only moved the
 * stall to the register copy that carried it over. */
static __device__ __forceinline__ void tq_fa_copy_mask(const half * m, int nrows, uint8_t * st, int lane)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    if (lane < 8 && 2 * lane < nrows) {
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" : : "r"((uint32_t) __cvta_generic_to_shared(st) + 4 * lane), "l"(m + 2 * lane));
    }
#else
    GGML_UNUSED_VARS(m, nrows, st, lane);
#endif
}

static __device__ __forceinline__ void tq_fa_cp_commit()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;");
#endif
}

/* Wait until at most N of this thread's cp.async groups are pending, then until every lane
 * of the warp has: the staged rows of the older groups are the warp's to read. */
template <int N> static __device__ __forceinline__ void tq_fa_cp_wait()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;" : : "n"(N));
#endif
    __syncwarp();
}

/* Where row r of a warp's group starts in its staged rows (row stride RS): src is the first
 * row of any of the warp's groups, which lie gridDim.y x 64 rows apart, a multiple of 16
 * bytes at any row stride, so a row's offset in its first chunk is the same in all. */
template <int RS> static __device__ __forceinline__ int tq_fa_staged_row(const char * src, int64_t nb, int r)
{
    return r * RS + (int) ((uintptr_t) (src + r * nb) & 15);
}

/* The decode kernel for turbo2..5 and q8_0 K and V (H8): every warp works on its own 16 rows
 * of each 64-row tile, with no barrier until the end, and every K and V value goes from its
 * index bits straight into an mma operand register. A warp copies its next 16 K and V rows
 * into shared memory (tq_fa_copier: a few 16-byte cp.async per lane) while it computes the
 * current ones, so the loads' latency hides behind the decode, and the decode reads its
 * index bits from shared memory, where a load of 8 rows costs one wavefront instead of one
 * per row (the rows of a head are 400 bytes apart in memory at 8 KV heads).
 *
 * Lane l = 4j + c. The head's dims are permuted the same way on both sides of the score
 * product, so that each lane decodes whole runs of 8 values:
 *   scores S^T = K Q^T (m16n8k16: 16 rows x 8 query heads): lane l decodes dims
 *     32q + 8c .. +7 (q < D/32) of rows j and j+8, its A fragments (the queries' B fragments
 *     take the same dims; the four lanes of a row read adjacent bytes); its C holds rows
 *     j, j+8 of heads 2c, 2c+1. Where a K row is one block of turbo2..4 (I8K) the product
 *     is m16n8k32 on int8 instead: the codebook rounded to int8 (127 for its largest level,
 *     SK::i8lut; a level moves by at most 0.4 % of the largest), each query head rounded
 *     to int8 once (127 for its largest value), the int32 scores times both steps, as
 *     ggml-cuda's vec kernels round Q to q8_1 for quantized K. A byte permute then gives
 *     4 values instead of 2, and the bytes need no joining. One step per head is enough
 *     because llama.cpp rotates Q (Hadamard) whenever K is quantized: no dim stands out
 *     (LLAMA_ATTN_ROT_DISABLE=1 turns that off, and with it the turbo codebooks' premise);
 *   the online softmax of heads 2c, 2c+1 over the 16 rows (one running max per warp and
 *     head, held by the lanes whose output holds that head); four shuffles turn the
 *     probabilities into the B fragment of P^T (rows 2c, 2c+1, 2c+8, 2c+9 of head j);
 *   output O^T = V^T P^T: lane l decodes rows 2c, 2c+1, 2c+8, 2c+9 at dims D/8*j .. +D/8-1
 *     and pairs the rows with byte permutes into the A fragments; C holds heads 2c, 2c+1.
 * The four warps' partial softmax sums are combined in shared memory at the end, then as
 * launch_fattn combines blocks.
 *
 * ROT: the output also takes the 64-point Walsh-Hadamard rotation llama.cpp applies to it
 * after attention (the inverse of V's, a MUL_MAT hinted GGML_HINT_SRC0_IS_HADAMARD that
 * ggml-cuda runs as fwht_cuda<64>), one warp per 64 dims of a head: in the operations and
 * order of tq_cu_fwht_warp, on the normalized output where the KV length is not split (the
 * bytes the two kernels write one after the other) and on each part's unnormalized sum where
 * it is (the rotation is linear and the combine weighs a head's dims alike, so the combined
 * result is the rotated output up to float rounding). */
template <int D, int G, ggml_type type_K, ggml_type type_V, bool ROT>
__launch_bounds__(TQ_FA_NTHREADS, D <= 128 ? 4 : 2) /* 128 registers; 255 for D = 256 (ptxas -v) */
static __global__ void tq_flash_attn_ext_mma(
        const char * Q,
        const char * K,
        const char * V,
        const char * mask,
        const char * sinks,
        const int  * KV_max,
        float      * dst,
        float2     * dst_meta,
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
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    ggml_cuda_pdl_lc();
    typedef tq_fa_staged<type_K> SK;
    typedef tq_fa_staged<type_V> SV;
    constexpr int NT = TQ_FA_NTHREADS;
    constexpr int NW = NT / WARP_SIZE;
    typedef tq_fa_win<SK, D> WK;
    typedef tq_fa_win<SV, D> WV;
    constexpr int T  = 16 * NW;        /* rows per tile, 16 per warp */
    constexpr int DV = D / 8;          /* V dims per lane */
    constexpr bool ROWK = D == SK::QK; /* K's scale applies to whole scores */
    constexpr bool ROWV = D == SV::QK; /* V's scale folds into the probabilities */
    /* K's scores by an int8 mma where a row is one block of B <= 4 bits: the queries as int8
     * (one step per head, from its largest value) against the codebook as int8
     * (SK::i8lut), a byte permute per 4 values instead of per 2 and half the mma */
    constexpr bool I8K = ROWK && SK::I8;
    static_assert(SK::H8 && SV::H8, "turbo2..5 or q8_0 K and V");
    static_assert(D % 64 == 0 && D <= 256 && D % SK::QK == 0 && D % SV::QK == 0, "head size 64, 128 or 256");
    static_assert(SK::QK % 32 == 0 && SV::QK % DV == 0, "a lane's runs of dims in one block");
    static_assert(G == 2 || G == TQ_FA_HEADS, "2 or 4 query heads per block");

    extern __shared__ __align__(16) uint8_t tq_fa_sm[];
    __shared__ float Os[NW][G][D];
    __shared__ float Ms[NW][G];
    __shared__ float Ls[NW][G];

    const int lane = threadIdx.x;
    const int warp = threadIdx.y;
    const int tid  = warp * WARP_SIZE + lane;
    const int j    = lane / 4;
    const int c    = lane % 4;

    const int col  = blockIdx.x;
    const int gqa  = ne02 / ne12;
    const int ntz  = (gqa + G - 1) / G;
    const int zt   = blockIdx.z % ntz;
    const int hk   = (blockIdx.z / ntz) % ne12;
    const int seq  = blockIdx.z / (ntz * ne12);
    const int h0   = hk * gqa + zt * G; /* first query head of this block */
    const int ng   = min(G, gqa - zt * G);

    typename SK::hlut htK;
    typename SV::hlut htV;
    typename SK::i8lut t8K;
    SK::hlut_init(htK);
    SV::hlut_init(htV);
    SK::i8lut_init(t8K);

    ggml_cuda_pdl_sync();
    uint32_t qb[I8K ? 1 : D / 16][2];
    uint32_t q8[I8K ? D / 32 : 1][2]; /* I8K: q8[q][w] holds dims 32q + 8c + SK::i8val(w, 0..3) */
    float    qk[2];                    /* I8K: the int8 scores' step for heads 2c, 2c+1 */
    {
        const float * qrow = (const float *) (Q + nb03 * seq + nb02 * (h0 + min(j, ng - 1)) + nb01 * col) + 8 * c;
        const float z = j < ng ? scale : 0.0f;
        if constexpr (I8K) {
            float x[D / 32][8];
            float amax = 0.0f;
#pragma unroll
            for (int q = 0; q < D / 32; q++) {
#pragma unroll
                for (int v = 0; v < 8; v++) {
                    x[q][v] = qrow[32 * q + v] * z;
                    amax = fmaxf(amax, fabsf(x[q][v]));
                }
            }
            /* head j's largest value over the four lanes of its run */
            amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, 1));
            amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, 2));
            const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
#pragma unroll
            for (int q = 0; q < D / 32; q++) {
#pragma unroll
                for (int w = 0; w < 2; w++) {
                    uint32_t b = 0u;
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        b |= ((uint32_t) __float2int_rn(x[q][SK::i8val(w, i)] * inv) & 0xFFu) << (8 * i);
                    }
                    q8[q][w] = b;
                }
            }
            const float step = amax / 127.0f * SK::i8_step();
            qk[0] = __shfl_sync(0xFFFFFFFFu, step, 8 * c);
            qk[1] = __shfl_sync(0xFFFFFFFFu, step, 8 * c + 4);
        } else {
            /* queries of head j as B fragments, in the order the K words come
             * (tq_fa_rows8x2): qb[s][e] holds dims 32(s/2) + 8c + SK::pfirst(u), + SK::PSTEP,
             * u = 2(s%2) + e */
#pragma unroll
            for (int s = 0; s < D / 16; s++) {
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const float * x = qrow + 32 * (s / 2) + SK::pfirst(2 * (s % 2) + e);
                    qb[s][e] = tq_fa_h2(x[0] * z, x[SK::PSTEP] * z);
                }
            }
        }
    }

    K += nb13 * seq + nb12 * hk;
    V += nb23 * seq + nb22 * hk;
    const half * maskh = mask ? (const half *) (mask + nb33 * (seq % ne33) + nb31 * col) : nullptr;
    const int k_max = KV_max ? KV_max[seq * gridDim.x + blockIdx.x] : ne11;
    /* this lane's two heads, 2c and 2c+1, and whether they are real */
    const bool  in0 = 2 * c < ng;
    const bool  in1 = 2 * c + 1 < ng;
    const float slope0 = get_alibi_slope(max_bias, h0 + min(2 * c, ng - 1), n_head_log2, m0, m1);
    const float slope1 = get_alibi_slope(max_bias, h0 + min(2 * c + 1, ng - 1), n_head_log2, m0, m1);

    float mh[2] = {-FLT_MAX / 2.0f, -FLT_MAX / 2.0f}; /* running max of heads 2c, 2c+1 */
    float lh[2] = {0.0f, 0.0f};                       /* this lane's part of their sums */
    float acc[D / 16][4]; /* O^T: dims D/8*j + 8(t/4) + SV::pfirst(t%4) (+ SV::PSTEP in [2], [3]),
                           * heads 2c ([0], [2]), 2c+1 */
#pragma unroll
    for (int t = 0; t < D / 16; t++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
            acc[t][e] = 0.0f;
        }
    }

    /* this warp's staged rows, two buffers of K and V each, zero until first written (rows
     * past the end are decoded from them) */
    uint8_t * stK = tq_fa_sm + warp * tq_fa_warp_smem<SK, SV, D>();
    uint8_t * stV = stK + 2 * WK::BYTES;
    uint8_t * stM = stV + 2 * WV::BYTES; /* and the mask of the rows, 32 bytes each */
    for (int i = lane; i < tq_fa_warp_smem<SK, SV, D>() / 16; i += WARP_SIZE) {
        ((uint4 *) stK)[i] = make_uint4(0u, 0u, 0u, 0u);
    }
    __syncwarp();
    const int kstep = gridDim.y * T; /* rows from one of this warp's groups to its next */
    int rb = blockIdx.y * T + 16 * warp;
    const char * Kg = K + (int64_t) rb * nb11; /* the group's first rows */
    const char * Vg = V + (int64_t) rb * nb21;
    const tq_fa_copier<SK, D> cpK(Kg, nb11, lane);
    const tq_fa_copier<SV, D> cpV(Vg, nb21, lane);
    cpK.copy(Kg, k_max - rb, stK, lane);
    cpV.copy(Vg, k_max - rb, stV, lane);
    /* the mask goes through shared memory where whole 4-byte words of it can be copied */
    const bool mstaged = maskh && ((uintptr_t) maskh & 3) == 0 && (k_max & 1) == 0;
    if (mstaged) {
        tq_fa_copy_mask(maskh + rb, k_max - rb, stM, lane);
    }
    tq_fa_cp_commit();

    for (int buf = 0; rb < k_max; rb += kstep, buf ^= 1) {
        __syncwarp(); /* the warp is done reading the other buffers (the group before last) */
        Kg += (int64_t) kstep * nb11;
        Vg += (int64_t) kstep * nb21;
        cpK.copy(Kg, k_max - rb - kstep, stK + (buf ^ 1) * WK::BYTES, lane);
        cpV.copy(Vg, k_max - rb - kstep, stV + (buf ^ 1) * WV::BYTES, lane);
        if (mstaged) {
            tq_fa_copy_mask(maskh + rb + kstep, k_max - rb - kstep, stM + (buf ^ 1) * 32, lane);
        }
        tq_fa_cp_commit();
        tq_fa_cp_wait<1>();
        const uint8_t * sk = stK + buf * WK::BYTES;
        const uint8_t * sv = stV + buf * WV::BYTES;

        /* scores: sc[2i + e] is row rb + j + 8i, head 2c + e. The staged rows' offsets are
         * the same in every group but worked out again here (a few integer operations): held
         * in registers across the loop they made ptxas spill at head size 128. */
        /* rows 8 apart lie 8 nb bytes apart, a multiple of 16 (a row is whole blocks, of an
         * even size), so their offsets in their first chunk agree */
        const tq_fa_lane<SK> ka(sk + tq_fa_staged_row<WK::RS>(Kg, nb11, j), 8 * c);
        const tq_fa_lane<SK> kb = ka.at(8 * WK::RS);
        float sc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        if constexpr (I8K) {
            int si[4] = {0, 0, 0, 0};
#pragma unroll
            for (int q = 0; q < D / 32; q++) {
                uint32_t x0[2];
                uint32_t x1[2];
                tq_fa_rows8x2_i8<SK>(ka, kb, 32 * q, t8K, x0, x1);
                tq_fa_imma(si, x0[0], x1[0], x0[1], x1[1], q8[q][0], q8[q][1]);
            }
#pragma unroll
            for (int k = 0; k < 4; k++) {
                sc[k] = (float) si[k] * qk[k % 2];
            }
        } else {
#pragma unroll
            for (int q = 0; q < D / 32; q++) {
                /* dims 32q + 8c .. +7 lie in one block (QK is a multiple of 32) */
                uint32_t x0[4];
                uint32_t x1[4];
                tq_fa_rows8x2<SK, ROWK>(ka, kb, 32 * q, htK, x0, x1);
                tq_fa_mma4(sc, x0[0], x1[0], x0[1], x1[1], qb[2 * q][0], qb[2 * q][1]);
                tq_fa_mma4(sc, x0[2], x1[2], x0[3], x1[3], qb[2 * q + 1][0], qb[2 * q + 1][1]);
            }
        }
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const int r = rb + j + 8 * i;
            if (r < k_max) {
                const float dk = ROWK ? __half2float(__low2half((i ? kb : ka).scale2(0))) : 1.0f;
                const float mv = !maskh ? 0.0f : __half2float(mstaged ? *(const half *) (stM + buf * 32 + 2 * (j + 8 * i)) : maskh[r]);
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    float s = sc[2 * i + e] * dk;
                    if (logit_softcap != 0.0f) {
                        s = logit_softcap * tanhf(s);
                    }
                    sc[2 * i + e] = s + (e == 0 ? slope0 : slope1) * mv;
                }
            } else {
                sc[2 * i] = -INFINITY;
                sc[2 * i + 1] = -INFINITY;
            }
        }

        float alpha[2];
        uint32_t ph[2]; /* half2 (head 2c, head 2c+1) of rows rb + j, rb + j + 8 */
        /* the running maxima move only when a score passes them, rarely once a few groups are
         * in: one vote then stands for the two chains of three shuffles (same result: the max
         * of scores that do not pass m is m) */
        const bool grow = __any_sync(0xFFFFFFFFu, fmaxf(sc[0], sc[2]) > mh[0] || fmaxf(sc[1], sc[3]) > mh[1]);
#pragma unroll
        for (int e = 0; e < 2; e++) {
            float m_new = mh[e];
            if (grow) {
                float mx = fmaxf(sc[e], sc[2 + e]);
                mx = fmaxf(mx, __shfl_xor_sync(0xFFFFFFFFu, mx, 4));
                mx = fmaxf(mx, __shfl_xor_sync(0xFFFFFFFFu, mx, 8));
                mx = fmaxf(mx, __shfl_xor_sync(0xFFFFFFFFu, mx, 16));
                m_new = fmaxf(mh[e], mx);
            }
            alpha[e] = expf(mh[e] - m_new);
            mh[e] = m_new;
            const bool real = e == 0 ? in0 : in1;
            const float p0 = real ? expf(sc[e] - m_new) : 0.0f;
            const float p1 = real ? expf(sc[2 + e] - m_new) : 0.0f;
            lh[e] = lh[e] * alpha[e] + p0 + p1;
            sc[e] = p0;
            sc[2 + e] = p1;
        }
        const uint8_t * vr = sv + tq_fa_staged_row<WV::RS>(Vg, nb21, j); /* row j; j + 8 is 8 RS on */
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const int r = rb + j + 8 * i;
            const float dv = ROWV ? (r < k_max ? __half2float(*(const half *) (vr + 8 * WV::RS * i)) : 0.0f) : 1.0f;
            ph[i] = tq_fa_h2(sc[2 * i] * dv, sc[2 * i + 1] * dv);
        }
        /* P^T as B fragment: rows 2c, 2c+1 (pb[0]) and 2c+8, 2c+9 (pb[1]) of head j, from the
         * lanes holding rows 2c and 2c+1 and head j (lane 8c + j/2 and the next row's) */
        uint32_t pb[2];
        {
            const int src = 8 * c + j / 2;
            const uint32_t sel = j % 2 ? 0x7632u : 0x5410u;
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const uint32_t a = __shfl_sync(0xFFFFFFFFu, ph[i], src);
                const uint32_t b = __shfl_sync(0xFFFFFFFFu, ph[i], src + 4);
                pb[i] = __byte_perm(a, b, sel);
            }
        }

        if (alpha[0] != 1.0f || alpha[1] != 1.0f) {
#pragma unroll
            for (int t = 0; t < D / 16; t++) {
                acc[t][0] *= alpha[0];
                acc[t][1] *= alpha[1];
                acc[t][2] *= alpha[0];
                acc[t][3] *= alpha[1];
            }
        }

        {
            /* a lane's D/8 dims lie in one block; rows 2c + 8 and 2c + 9 are 8 RS on */
            const tq_fa_lane<SV> va(sv + tq_fa_staged_row<WV::RS>(Vg, nb21, 2 * c), DV * j);
            const tq_fa_lane<SV> vb(sv + tq_fa_staged_row<WV::RS>(Vg, nb21, 2 * c + 1), DV * j);
#pragma unroll
            for (int q = 0; q < DV / 8; q++) {
                uint32_t x[2][8]; /* rows (rb + 2c, +1) and (+8, +9) at dims D/8*j + 8q + v, paired */
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    tq_fa_pairs8<SV, ROWV>(va.at(8 * WV::RS * i), vb.at(8 * WV::RS * i), 8 * q, htV, x[i]);
                }
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    const int v = SV::pfirst(u);
                    tq_fa_mma4(acc[4 * q + u], x[0][v], x[0][v + SV::PSTEP], x[1][v], x[1][v + SV::PSTEP], pb[0], pb[1]);
                }
            }
        }
    }

#pragma unroll
    for (int e = 0; e < 2; e++) {
        lh[e] += __shfl_xor_sync(0xFFFFFFFFu, lh[e], 4);
        lh[e] += __shfl_xor_sync(0xFFFFFFFFu, lh[e], 8);
        lh[e] += __shfl_xor_sync(0xFFFFFFFFu, lh[e], 16);
    }
    if (j == 0) {
        if (2 * c < G) {
            Ms[warp][2 * c] = mh[0];
            Ls[warp][2 * c] = lh[0];
        }
        if (2 * c + 1 < G) {
            Ms[warp][2 * c + 1] = mh[1];
            Ls[warp][2 * c + 1] = lh[1];
        }
    }
#pragma unroll
    for (int t = 0; t < D / 16; t++) {
        const int d = DV * j + 8 * (t / 4) + SV::pfirst(t % 4);
        if (2 * c < G) {
            Os[warp][2 * c][d]               = acc[t][0];
            Os[warp][2 * c][d + SV::PSTEP]   = acc[t][2];
        }
        if (2 * c + 1 < G) {
            Os[warp][2 * c + 1][d]             = acc[t][1];
            Os[warp][2 * c + 1][d + SV::PSTEP] = acc[t][3];
        }
    }
    __syncthreads();

    /* head g's output at dim d over the four warps' parts: the sum o, its weight L, max M */
    const auto combine = [&](int g, int d, float & o, float & L, float & M) {
        M = Ms[0][g];
#pragma unroll
        for (int w = 1; w < NW; w++) {
            M = fmaxf(M, Ms[w][g]);
        }
        o = 0.0f;
        L = 0.0f;
#pragma unroll
        for (int w = 0; w < NW; w++) {
            const float f = expf(Ms[w][g] - M);
            o += f * Os[w][g][d];
            L += f * Ls[w][g];
        }
        if (sinks && blockIdx.y == 0) {
            const float sink  = ((const float *) sinks)[h0 + g];
            const float m_new = fmaxf(sink, M);
            const float f     = expf(M - m_new);
            o *= f;
            L = L * f + expf(sink - m_new);
            M = m_new;
        }
    };
    const auto out_row = [&](int g) {
        return (((int64_t) seq * ne01.z + col) * ne02 + h0 + g) * gridDim.y + blockIdx.y;
    };
    if constexpr (ROT) {
        constexpr int NR = 64; /* points per rotation */
        for (int w = warp; w < ng * (D / NR); w += NW) {
            const int g  = w / (D / NR);
            const int d0 = w % (D / NR) * NR;
            float r[NR / WARP_SIZE];
            float o, L, M;
#pragma unroll
            for (int m = 0; m < NR / WARP_SIZE; m++) {
                combine(g, d0 + lane + WARP_SIZE * m, o, L, M);
                r[m] = gridDim.y == 1 ? o / L : o;
            }
            tq_cu_fwht_warp<NR>(r, 0.125f); /* fwht.cu's 1/sqrtf(64) */
            const int64_t row = out_row(g);
#pragma unroll
            for (int m = 0; m < NR / WARP_SIZE; m++) {
                dst[row * D + d0 + lane + WARP_SIZE * m] = r[m];
            }
            if (gridDim.y != 1 && d0 == 0 && lane == 0) {
                dst_meta[row] = make_float2(M, L);
            }
        }
    } else {
        for (int i = tid; i < ng * D; i += NT) {
            const int g = i / D;
            const int d = i % D;
            float o, L, M;
            combine(g, d, o, L, M);
            const int64_t row = out_row(g);
            dst[row * D + d] = gridDim.y == 1 ? o / L : o;
            if (gridDim.y != 1 && d == 0) {
                dst_meta[row] = make_float2(M, L);
            }
        }
    }
    GGML_UNUSED_VARS(ne00, ne03, ne10, ne13, ne31, ne32, nb32);
#else
    GGML_UNUSED_VARS(Q, K, V, mask, sinks, KV_max, dst, dst_meta, scale, max_bias, m0, m1, n_head_log2,
        logit_softcap, ne00, ne01, ne02, ne03, nb01, nb02, nb03, ne10, ne11, ne12, ne13, nb11, nb12, nb13,
        nb21, nb22, nb23, ne31, ne32, ne33, nb31, nb32, nb33);
    NO_DEVICE_CODE;
#endif
}

/* Whether head size D and these K/V types take tq_flash_attn_ext_mma (else _vec). */
template <int D, ggml_type type_K, ggml_type type_V>
static constexpr bool tq_fa_uses_mma()
{
    typedef tq_fa_staged<type_K> SK;
    typedef tq_fa_staged<type_V> SV;
    return SK::H8 && SV::H8 && SK::QK % 32 == 0 && SV::QK % (D / 8) == 0;
}

/* Dynamic shared memory of tq_flash_attn_ext_mma, bytes: each warp's two K, V and mask buffers. */
template <int D, ggml_type type_K, ggml_type type_V>
static constexpr size_t tq_fa_mma_smem()
{
    return (TQ_FA_NTHREADS / WARP_SIZE) * tq_fa_warp_smem<tq_fa_staged<type_K>, tq_fa_staged<type_V>, D>();
}

template <int D, int G, ggml_type type_K, ggml_type type_V, bool ROT>
static void tq_fa_launch(ggml_backend_cuda_context & ctx, ggml_tensor * dst)
{
    typedef tq_fa_staged<type_K> SK;
    typedef tq_fa_staged<type_V> SV;
    if constexpr (tq_fa_uses_mma<D, type_K, type_V>()) {
        constexpr size_t nbytes = tq_fa_mma_smem<D, type_K, type_V>();
        fattn_kernel_t kernel = tq_flash_attn_ext_mma<D, G, type_K, type_V, ROT>;
        CUDA_SET_SHARED_MEMORY_LIMIT(kernel, nbytes);
        launch_fattn<D, 1, G>(ctx, dst, kernel, TQ_FA_NTHREADS / WARP_SIZE,
            nbytes, 16 * (TQ_FA_NTHREADS / WARP_SIZE), false, false, false, false);
    } else {
        static_assert(!ROT, "the output rotation is in the mma kernel only");
        constexpr int T = tq_fa_rows<D, G, type_K, type_V>();
        constexpr size_t nbytes = tq_fa_smem<D, G, SK, SV>::bytes(T);
        fattn_kernel_t kernel = tq_flash_attn_ext_vec<D, G, type_K, type_V>;
        CUDA_SET_SHARED_MEMORY_LIMIT(kernel, nbytes);
        launch_fattn<D, 1, G>(ctx, dst, kernel, TQ_FA_NTHREADS / WARP_SIZE, nbytes, T, false, false, false, false);
    }
}

/* One FLASH_ATTN_EXT with the kernels above; split-KV and the combine as launch_fattn does
 * them for ggml's own kernels. ROT (the mma kernel only): dst's data receives the output
 * rotated by llama.cpp's 64-point Hadamard, as the MUL_MAT after the attention would. */
template <int D, ggml_type type_K, ggml_type type_V, bool ROT = false>
void tq_cuda_flash_attn_ext_vec_case(ggml_backend_cuda_context & ctx, ggml_tensor * dst)
{
    const int64_t gqa = dst->src[0]->ne[2] / dst->src[1]->ne[2];
    if (gqa % TQ_FA_HEADS == 0) {
        tq_fa_launch<D, TQ_FA_HEADS, type_K, type_V, ROT>(ctx, dst);
    } else {
        tq_fa_launch<D, 2, type_K, type_V, ROT>(ctx, dst);
    }
}

#endif /* TURBOQUANT_CUDA_FATTN_CUH */
