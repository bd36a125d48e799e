/*
 * AVX2 path (compiled with -mavx2 for this file only; the dispatcher calls it only when the
 * CPU reports AVX2). Bit-identical to the scalar path: the same float32 operations in the
 * same order, the contract's 8-lane double sums kept as two 4-lane registers, and the
 * midpoint decision done on floats through per-block thresholds (tq_float_threshold).
 */
#include <immintrin.h>
#include <math.h>

#include "tq_internal.h"

#define INLINE static inline __attribute__((always_inline))
/* The per-level loops run 2..5 times with the bit width known at compile time; unrolled,
 * their shift counts and constants become immediates (GCC's -O2 would keep the loop). */
#define UNROLL _Pragma("GCC unroll 8")

/* The codebook as 8-wide registers, looked up with permutes (4, 8, 16 or 32 entries). */
struct lut {
    __m256 r[TQ_MAX_LEVELS / 8];
};

/* Loads only the `count` entries: an index is always below count, so the lanes and registers
 * past it are never selected and stay zero. Decoding a 64-value row is 8 lookups, so this
 * load is a real share of the work. */
INLINE struct lut lut_load(const float *values, int count)
{
    struct lut t;
    for (int r = 0; r < TQ_MAX_LEVELS / 8; r++) {
        t.r[r] = _mm256_setzero_ps();
    }
    if (count < 8) {
        t.r[0] = _mm256_castps128_ps256(_mm_loadu_ps(values));
        t.r[0] = _mm256_insertf128_ps(t.r[0], _mm_setzero_ps(), 1);
    } else {
        for (int r = 0; r < count / 8; r++) {
            t.r[r] = _mm256_loadu_ps(values + 8 * r);
        }
    }
    return t;
}

/* permutevar8x32 only reads the low 3 bits of each index; bits 3 and 4 pick the register
 * through blendv, which reads the sign bit. */
INLINE __m256 lut_get(const struct lut *t, int count, __m256i idx)
{
    __m256 v = _mm256_permutevar8x32_ps(t->r[0], idx);
    if (count > 8) {
        const __m256 bit3 = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));
        v = _mm256_blendv_ps(v, _mm256_permutevar8x32_ps(t->r[1], idx), bit3);
        if (count > 16) {
            __m256 w = _mm256_permutevar8x32_ps(t->r[2], idx);
            w = _mm256_blendv_ps(w, _mm256_permutevar8x32_ps(t->r[3], idx), bit3);
            v = _mm256_blendv_ps(v, w, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 27)));
        }
    }
    return v;
}

/* d * C[k] for the registers of `count` entries: the same float multiply as the scalar path,
 * once per block, so that decoding is a lookup. */
INLINE struct lut lut_scale(const struct lut *t, int count, __m256 d)
{
    struct lut scaled;
    for (int r = 0; r < (count + 7) / 8; r++) {
        scaled.r[r] = _mm256_mul_ps(d, t->r[r]);
    }
    return scaled;
}

/* The levels of block blk times its scale d, d * C[k] for every level: the same float
 * multiply as the scalar path, once per block, so decoding becomes a table lookup. */
INLINE struct lut block_lut(const struct lut *levels, int count, const uint8_t *blk)
{
    return lut_scale(levels, count,
                     _mm256_set1_ps(tq_half_to_float((uint16_t)(blk[0] | blk[1] << 8))));
}

INLINE __m256d lo_pd(__m256 v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
INLINE __m256d hi_pd(__m256 v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }
/* hi_pd of the 8 floats at p, widened from memory: no lane extract, whose shuffle port the
 * index search and the level lookups also need */
INLINE __m256d hi_pd_at(const float *p) { return _mm256_cvtps_pd(_mm_loadu_ps(p + 4)); }
/* acc + a * b in one rounding, for a and b widened from floats: their product is exact in
 * double (48 significant bits), so this is the same number as the multiply and add the
 * reference does, in one instruction. */
INLINE __m256d add_exact_product(__m256d acc, __m256d a, __m256d b) { return _mm256_fmadd_pd(a, b, acc); }

/* ((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7)) with lo = a0..a3 and hi = a4..a7. */
INLINE double lane8_total(__m256d lo, __m256d hi)
{
    const __m256d t = _mm256_add_pd(lo, hi);
    const __m128d u = _mm_add_pd(_mm256_castpd256_pd128(t), _mm256_extractf128_pd(t, 1));
    return _mm_cvtsd_f64(_mm_add_sd(u, _mm_unpackhi_pd(u, u)));
}

/* Indices of 32 consecutive values, one per byte in value order. */
INLINE __m256i bytes_of(__m256i i0, __m256i i1, __m256i i2, __m256i i3)
{
    const __m256i b = _mm256_packus_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
    return _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* Pack 32 index bytes into the low plane (lo_bits each, LSB first) and, for 3 and 5 bits,
 * the high-bit plane. */
INLINE void pack32(int bits, __m256i b, uint8_t *lo, uint8_t *hi)
{
    if (tq_lo_bits(bits) == 4) {
        const __m256i v = _mm256_and_si256(b, _mm256_set1_epi8(0x0F));
        const __m256i w = _mm256_maddubs_epi16(v, _mm256_set1_epi16(0x1001));
        const __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi16(w, w), 0x08);
        _mm_storeu_si128((__m128i *)lo, _mm256_castsi256_si128(p));
    } else {
        const __m256i v = _mm256_and_si256(b, _mm256_set1_epi8(0x03));
        const __m256i w = _mm256_maddubs_epi16(v, _mm256_set1_epi16(0x0401));
        const __m256i q = _mm256_madd_epi16(w, _mm256_set1_epi32(0x00100001));
        const __m256i gather = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                                -1, -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1,
                                                -1, -1, -1, -1, -1, -1);
        const __m256i p = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(q, gather),
                                                      _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0));
        _mm_storel_epi64((__m128i *)lo, _mm256_castsi256_si128(p));
    }
    if (bits == 3 || bits == 5) {
        /* Shifting each 16-bit pair left moves bit (bits-1) of every byte to its top bit;
         * the low byte's higher bits, all zero, are what spill into its neighbour. */
        const __m256i top = _mm256_slli_epi16(b, 8 - bits);
        const uint32_t mask = (uint32_t)_mm256_movemask_epi8(top);
        memcpy(hi, &mask, sizeof mask);
    }
}

INLINE __m128 next_up4(__m128 t)
{
    const __m128i b = _mm_castps_si128(t);
    const __m128i step = _mm_or_si128(_mm_srai_epi32(b, 31), _mm_set1_epi32(1));
    const __m128 up = _mm_castsi128_ps(_mm_add_epi32(b, step));
    const __m128 zero_up = _mm_castsi128_ps(_mm_set1_epi32(1));
    return _mm_blendv_ps(up, zero_up, _mm_cmpeq_ps(t, _mm_setzero_ps()));
}

INLINE __m128 next_down4(__m128 t)
{
    const __m128i b = _mm_castps_si128(t);
    const __m128i step = _mm_or_si128(_mm_srai_epi32(b, 31), _mm_set1_epi32(1));
    const __m128 down = _mm_castsi128_ps(_mm_sub_epi32(b, step));
    const __m128 zero_down = _mm_castsi128_ps(_mm_set1_epi32((int)0x80000001u));
    return _mm_blendv_ps(down, zero_down, _mm_cmpeq_ps(t, _mm_setzero_ps()));
}

/* (double)t * inv >= m, per lane, for t already widened. */
INLINE __m256d qualifies(__m256d t, __m256d inv, __m256d m)
{
    return _mm256_cmp_pd(_mm256_mul_pd(t, inv), m, _CMP_GE_OQ);
}

/* tq_float_threshold for 4 midpoints at once. The rounded guess t0 = (float)(m * gamma) is
 * within an ulp of the answer, so the answer is the first of prev(t0), t0, next(t0) that
 * qualifies; a lane where that cannot be read off (next to the float range's ends) takes
 * the scalar search. Candidates are blended as doubles, which hold floats exactly. */
INLINE __m128 thresholds4(const double *mid, __m256d gamma, __m256d inv, double gamma1,
                          double inv1)
{
    const __m256d m = _mm256_loadu_pd(mid);
    const __m256d big = _mm256_set1_pd(3.40282346638528859812e+38);
    __m256d g = _mm256_mul_pd(m, gamma);
    g = _mm256_max_pd(_mm256_min_pd(g, big), _mm256_sub_pd(_mm256_setzero_pd(), big));
    const __m128 c1 = _mm256_cvtpd_ps(g);
    const __m128 c0 = next_down4(c1);
    const __m256d below = _mm256_cvtps_pd(next_down4(c0));
    const __m256d d0 = _mm256_cvtps_pd(c0);
    const __m256d d1 = _mm256_cvtps_pd(c1);
    const __m256d d2 = _mm256_cvtps_pd(next_up4(c1));
    const __m256d p0 = qualifies(d0, inv, m);
    const __m256d p1 = qualifies(d1, inv, m);
    const int unsure = _mm256_movemask_pd(qualifies(below, inv, m)) |
                       (~_mm256_movemask_pd(qualifies(d2, inv, m)) & 0xF);
    __m128 t = _mm256_cvtpd_ps(_mm256_blendv_pd(_mm256_blendv_pd(d2, d1, p1), d0, p0));
    if (unsure != 0) {
        float lanes[4];
        _mm_storeu_ps(lanes, t);
        for (int l = 0; l < 4; l++) {
            if (unsure & (1 << l)) {
                lanes[l] = tq_float_threshold(mid[l], gamma1, inv1);
            }
        }
        t = _mm_loadu_ps(lanes);
    }
    return t;
}

/* The codebook as the quantizer reads it: midpoints padded to a multiple of 4 with copies
 * of the last one, in natural order for counting and, for 5 bits, in binary-search order:
 * level L (s = 16 >> L) compares with mid[j * 2s + s - 1], j = (index so far) >> (5 - L). */
/* The widths that take PLAN_MAGNITUDE: up to 3 bits counting 1-7 thresholds beats the
 * magnitude search's extra steps (tq_bench: turbo2 -10 %, turbo3 -3 %; turbo4 +10 %,
 * turbo5 +35 %). */
#define MAGNITUDE_MIN_BITS 4

struct quant_tables {
    struct lut levels;
    struct lut upper; /* levels nlev/2 .. nlev-1, the positive half (PLAN_MAGNITUDE only) */
    uint8_t zero_idx;
    int symmetric; /* mid[nlev - 2 - j] == -mid[j] and C[nlev - 1 - j] == -C[j] exactly */
    double mid[TQ_MAX_LEVELS];
    double search[TQ_MAX_BITS][TQ_MAX_LEVELS / 2];
};

INLINE int search_width(int L) { return (1 << L) < 4 ? 4 : 1 << L; }

INLINE void quant_tables_init(int bits, const struct tq_codebook *cb, struct quant_tables *qt)
{
    const int nlev = 1 << bits;
    qt->levels = lut_load(cb->levels, nlev);
    qt->upper = bits >= MAGNITUDE_MIN_BITS ? lut_load(cb->levels + nlev / 2, nlev / 2) : qt->levels;
    qt->zero_idx = 0;
    qt->symmetric = 1;
    for (int m = 0; m < nlev - 1; m++) {
        qt->symmetric = qt->symmetric && cb->mid[nlev - 2 - m] == -cb->mid[m];
    }
    for (int j = 0; j < nlev; j++) {
        qt->symmetric = qt->symmetric && tq_f32_bits(cb->levels[nlev - 1 - j]) ==
                                             (tq_f32_bits(cb->levels[j]) ^ 0x80000000u);
    }
    for (int m = 0; m < TQ_MAX_LEVELS; m++) {
        qt->mid[m] = cb->mid[m < nlev - 1 ? m : nlev - 2];
        qt->zero_idx = (uint8_t)(qt->zero_idx + (m < nlev - 1 && 0.0 >= cb->mid[m]));
    }
    for (int L = 0; L < bits; L++) {
        const int s = nlev >> (L + 1);
        for (int j = 0; j < search_width(L); j++) {
            const int jj = j < (1 << L) ? j : (1 << L) - 1;
            qt->search[L][j] = cb->mid[jj * 2 * s + s - 1];
        }
    }
}

/* What the index pass of one block needs: its thresholds (for 5 bits as binary-search
 * tables), or that the block is special. */
struct block_plan {
    enum { PLAN_MAGNITUDE, PLAN_NORMAL, PLAN_ZERO, PLAN_NAN } kind;
    float thr[TQ_MAX_LEVELS];
    struct lut step[TQ_MAX_BITS];
    __m256 upper_step[TQ_MAX_BITS - 1]; /* PLAN_MAGNITUDE's binary search, level by level */
};

/* Sum-of-squares norms of `count` consecutive blocks. The blocks' accumulation chains are
 * interleaved: each chain is a strict sequence of dependent adds (the contract fixes the
 * order), so one block alone would leave the core waiting on add latency. */
INLINE void block_norms(int n, const float *y, int count, double *gamma)
{
    __m256d lo[4];
    __m256d hi[4];
    for (int b = 0; b < count; b++) {
        lo[b] = _mm256_setzero_pd();
        hi[b] = _mm256_setzero_pd();
    }
    for (int i = 0; i < n; i += 8) {
        UNROLL for (int b = 0; b < count; b++) {
            const __m256 v = _mm256_loadu_ps(y + b * n + i);
            const __m256d x0 = lo_pd(v);
            const __m256d x1 = hi_pd_at(y + b * n + i);
            lo[b] = add_exact_product(lo[b], x0, x0);
            hi[b] = add_exact_product(hi[b], x1, x1);
        }
    }
    for (int b = 0; b < count; b++) {
        gamma[b] = sqrt(lane8_total(lo[b], hi[b]));
    }
}

/* Per lane of 4 thresholds t of midpoints mid: does (double)t * inv equal mid exactly? */
INLINE __m256d lands_exactly(__m128 t, const double *mid, __m256d inv)
{
    return _mm256_cmp_pd(_mm256_mul_pd(_mm256_cvtps_pd(t), inv), _mm256_loadu_pd(mid), _CMP_EQ_OQ);
}

/* The binary search of PLAN_MAGNITUDE over the positive thresholds P[j] = thr[half + j]
 * (half - 1 of them, ascending): level L (s = half >> (L + 1)) compares with
 * P[j * 2s + s - 1], j = (count so far) >> (bits - 1 - L), at most 8 entries a level. */
INLINE void magnitude_steps(int bits, struct block_plan *plan)
{
    const int half = 1 << (bits - 1);
    const struct lut p = lut_load(plan->thr + half, half);
    UNROLL for (int L = 0; L < bits - 1; L++) {
        const int s = half >> (L + 1);
        int32_t idx[8];
        for (int j = 0; j < 8; j++) {
            idx[j] = (j < (1 << L) ? j : 0) * 2 * s + s - 1;
        }
        plan->upper_step[L] = lut_get(&p, half, _mm256_loadu_si256((const __m256i *)idx));
    }
}

INLINE void plan_block(int bits, const struct quant_tables *qt, double gamma,
                       struct block_plan *plan)
{
    if (!isfinite(gamma)) {
        plan->kind = PLAN_NAN;
        return;
    }
    if (gamma == 0.0) {
        plan->kind = PLAN_ZERO;
        return;
    }
    plan->kind = PLAN_NORMAL;
    const int nlev = 1 << bits;
    const double inv = 1.0 / gamma;
    const __m256d gamma4 = _mm256_set1_pd(gamma);
    const __m256d inv4 = _mm256_set1_pd(inv);
    if (qt->symmetric) {
        /* The positive half's thresholds T(m) first. With S(m) the largest float whose
         * product with inv rounds to at most m, the threshold of -m is -S(m) (rounding is
         * symmetric), and S(m) is T(m) unless T(m) * inv lands exactly on m. When no
         * threshold lands exactly, -y reaches -m exactly when |y| does not reach T(m), so
         * one search of |y| over the positive half gives every index (PLAN_MAGNITUDE).
         * Equal to the direct search for every finite y. */
        const int half = nlev / 2;
        int exact = 0;
        UNROLL for (int m = half; m < nlev - 1; m += 4) {
            const __m128 t = thresholds4(qt->mid + m, gamma4, inv4, gamma, inv);
            _mm_storeu_ps(plan->thr + m, t);
            if (bits >= MAGNITUDE_MIN_BITS) {
                exact |= _mm256_movemask_pd(lands_exactly(t, qt->mid + m, inv4));
            }
        }
        if (!exact && bits >= MAGNITUDE_MIN_BITS) {
            plan->kind = PLAN_MAGNITUDE;
            magnitude_steps(bits, plan);
            return;
        }
        if (bits < 5) {
            UNROLL for (int m = half; m < nlev - 1; m += 4) {
                const __m128 t = _mm_loadu_ps(plan->thr + m);
                const __m256d below = _mm256_cvtps_pd(next_down4(t));
                const __m256d s_m = _mm256_blendv_pd(below, _mm256_cvtps_pd(t),
                                                     lands_exactly(t, qt->mid + m, inv4));
                float neg[4];
                _mm_storeu_ps(neg, _mm_xor_ps(_mm256_cvtpd_ps(s_m), _mm_set1_ps(-0.0f)));
                for (int l = 0; l < 4 && m + l < nlev - 1; l++) {
                    plan->thr[nlev - 2 - (m + l)] = neg[l];
                }
            }
            plan->thr[half - 1] = 0.0f;
            return;
        }
    }
    if (bits < 5) {
        UNROLL for (int m = 0; m < nlev - 1; m += 4) {
            _mm_storeu_ps(plan->thr + m, thresholds4(qt->mid + m, gamma4, inv4, gamma, inv));
        }
        return;
    }
    UNROLL for (int L = 0; L < bits; L++) {
        float t[TQ_MAX_LEVELS / 2];
        for (int j = 0; j < search_width(L); j += 4) {
            _mm_storeu_ps(t + j, thresholds4(qt->search[L] + j, gamma4, inv4, gamma, inv));
        }
        /* Levels below 8 entries only ever permute lanes 0..3. */
        plan->step[L].r[0] = L < 3 ? _mm256_castps128_ps256(_mm_loadu_ps(t)) : _mm256_loadu_ps(t);
        if (L == 4) {
            plan->step[L].r[1] = _mm256_loadu_ps(t + 8);
        }
    }
}

/* Index of each of 8 values: how many thresholds it reaches. Up to 4 bits the thresholds
 * are counted one by one (4 bits: within the half the first compare picks), which keeps
 * the compares independent; 5 bits searches binary, 5 dependent levels instead of 31. */
INLINE __m256i index8(int bits, const struct block_plan *plan, __m256 v)
{
    const int nlev = 1 << bits;
    __m256i k = _mm256_setzero_si256();
    __m256i k2 = _mm256_setzero_si256();
    if (bits <= 3) {
        UNROLL for (int m = 0; m < nlev - 1; m++) {
            const __m256 t = _mm256_broadcast_ss(plan->thr + m);
            const __m256i ge = _mm256_castps_si256(_mm256_cmp_ps(v, t, _CMP_GE_OQ));
            /* Two partial counts shorten the chain; an all-ones lane is -1. */
            if (m & 1) {
                k2 = _mm256_sub_epi32(k2, ge);
            } else {
                k = _mm256_sub_epi32(k, ge);
            }
        }
    } else if (bits == 4) {
        const __m256 upper = _mm256_cmp_ps(v, _mm256_broadcast_ss(plan->thr + 7), _CMP_GE_OQ);
        k = _mm256_and_si256(_mm256_castps_si256(upper), _mm256_set1_epi32(8));
        UNROLL for (int m = 0; m < 7; m++) {
            const __m256 t = _mm256_blendv_ps(_mm256_broadcast_ss(plan->thr + m),
                                              _mm256_broadcast_ss(plan->thr + 8 + m), upper);
            const __m256i ge = _mm256_castps_si256(_mm256_cmp_ps(v, t, _CMP_GE_OQ));
            if (m & 1) {
                k2 = _mm256_sub_epi32(k2, ge);
            } else {
                k = _mm256_sub_epi32(k, ge);
            }
        }
    } else {
        UNROLL for (int L = 0; L < bits; L++) {
            const __m256i j = _mm256_srli_epi32(k, bits - L);
            const __m256 t = lut_get(&plan->step[L], 1 << L, j);
            const __m256i ge = _mm256_castps_si256(_mm256_cmp_ps(v, t, _CMP_GE_OQ));
            k = _mm256_add_epi32(k, _mm256_and_si256(ge, _mm256_set1_epi32(nlev >> (L + 1))));
        }
    }
    return _mm256_add_epi32(k, k2);
}

/* PLAN_MAGNITUDE: the index k of each of 8 values and its level C[k]. c counts the
 * positive thresholds |v| reaches (binary search, bits - 1 levels); then k = half + c for
 * v >= 0 (-0.0 included, as the reference's u >= 0 counts it) and half - 1 - c below, and
 * C[k] = +-C[half + c], the codebook being symmetric to the bit. */
INLINE void magnitude8(int bits, const struct block_plan *plan, const struct quant_tables *qt,
                       __m256 v, __m256i *k, __m256 *level)
{
    const int half = 1 << (bits - 1);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 a = _mm256_andnot_ps(sign, v);
    __m256i c = _mm256_setzero_si256();
    UNROLL for (int L = 0; L < bits - 1; L++) {
        const int s = half >> (L + 1);
        const __m256 t = L == 0 ? plan->upper_step[0]
                                : _mm256_permutevar8x32_ps(plan->upper_step[L],
                                                           _mm256_srli_epi32(c, bits - 1 - L));
        const __m256i ge = _mm256_castps_si256(_mm256_cmp_ps(a, t, _CMP_GE_OQ));
        c = _mm256_add_epi32(c, _mm256_and_si256(ge, _mm256_set1_epi32(s)));
    }
    const __m256 neg = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ);
    const __m256i negi = _mm256_castps_si256(neg);
    *k = _mm256_or_si256(_mm256_xor_si256(c, _mm256_and_si256(negi, _mm256_set1_epi32(half - 1))),
                         _mm256_andnot_si256(negi, _mm256_set1_epi32(half)));
    *level = _mm256_xor_ps(lut_get(&qt->upper, half, c), _mm256_and_ps(neg, sign));
}

/* The indices and the scale of a block of finite values; `magnitude` is a constant at each
 * call, so that each search gets its own loop. */
INLINE void encode_values(int bits, int n, int magnitude, const struct block_plan *plan,
                          const struct quant_tables *qt, const float *y, uint8_t *blk)
{
    const int nlev = 1 << bits;
    uint8_t *lo = blk + 2;
    uint8_t *hi = blk + tq_hi_offset(bits, n);
    const int lo_step = 32 * tq_lo_bits(bits) / 8;
    __m256d p_lo = _mm256_setzero_pd();
    __m256d p_hi = _mm256_setzero_pd();
    __m256d q_lo = _mm256_setzero_pd();
    __m256d q_hi = _mm256_setzero_pd();
    for (int g = 0; g < n / 32; g++) {
        __m256i idx[4];
        UNROLL for (int r = 0; r < 4; r++) {
            const __m256 v = _mm256_loadu_ps(y + 32 * g + 8 * r);
            __m256 c;
            if (magnitude) {
                magnitude8(bits, plan, qt, v, &idx[r], &c);
            } else {
                idx[r] = index8(bits, plan, v);
                c = lut_get(&qt->levels, nlev, idx[r]);
            }
            const __m256d c0 = lo_pd(c);
            const __m256d c1 = hi_pd(c);
            p_lo = add_exact_product(p_lo, lo_pd(v), c0);
            p_hi = add_exact_product(p_hi, hi_pd_at(y + 32 * g + 8 * r), c1);
            q_lo = add_exact_product(q_lo, c0, c0);
            q_hi = add_exact_product(q_hi, c1, c1);
        }
        pack32(bits, bytes_of(idx[0], idx[1], idx[2], idx[3]), lo + g * lo_step, hi + g * 4);
    }
    const double P = lane8_total(p_lo, p_hi);
    const double Q = lane8_total(q_lo, q_hi);
    const uint16_t d_bits = tq_fp16_from_float((float)(Q == 0.0 ? 0.0 : P / Q));
    blk[0] = (uint8_t)(d_bits & 0xFF);
    blk[1] = (uint8_t)(d_bits >> 8);
}

INLINE void encode_block(int bits, int n, const struct block_plan *plan,
                         const struct quant_tables *qt, const float *y, uint8_t *blk)
{
    if (plan->kind == PLAN_ZERO || plan->kind == PLAN_NAN) {
        const int zero = plan->kind == PLAN_ZERO;
        const uint16_t d_bits = zero ? 0 : TQ_D_NAN;
        const __m256i b = _mm256_set1_epi8((char)(zero ? qt->zero_idx : 0));
        uint8_t *lo = blk + 2;
        uint8_t *hi = blk + tq_hi_offset(bits, n);
        const int lo_step = 32 * tq_lo_bits(bits) / 8;
        blk[0] = (uint8_t)(d_bits & 0xFF);
        blk[1] = (uint8_t)(d_bits >> 8);
        for (int g = 0; g < n / 32; g++) {
            pack32(bits, b, lo + g * lo_step, hi + g * 4);
        }
    } else if (plan->kind == PLAN_MAGNITUDE) {
        encode_values(bits, n, 1, plan, qt, y, blk);
    } else {
        encode_values(bits, n, 0, plan, qt, y, blk);
    }
}

/* Blocks go through in batches: norms of the whole batch, then its thresholds (independent
 * latency-bound chains, so they overlap), then the throughput-bound index passes. */
#define BATCH 4

INLINE void quantize_batch(int bits, int n, int count, const struct quant_tables *qt,
                           const float *y, uint8_t *dst, size_t nbytes)
{
    double gamma[BATCH];
    struct block_plan plan[BATCH];
    block_norms(n, y, count, gamma);
    for (int b = 0; b < count; b++) {
        plan_block(bits, qt, gamma[b], &plan[b]);
    }
    for (int b = 0; b < count; b++) {
        encode_block(bits, n, &plan[b], qt, y + b * n, dst + (size_t)b * nbytes);
    }
}

INLINE void quantize_blocks(int bits, const struct tq_codebook *cb, const float *y,
                            uint8_t *dst, int64_t nblocks)
{
    const int n = cb->n;
    const size_t nbytes = tq_block_size(cb);
    struct quant_tables qt;
    quant_tables_init(bits, cb, &qt);
    int64_t b = 0;
    for (; b + BATCH <= nblocks; b += BATCH) {
        quantize_batch(bits, n, BATCH, &qt, y + b * n, dst + (size_t)b * nbytes, nbytes);
    }
    for (; b < nblocks; b++) {
        quantize_batch(bits, n, 1, &qt, y + b * n, dst + (size_t)b * nbytes, nbytes);
    }
}

void tq_quantize_blocks_avx2(const struct tq_codebook *cb, const float *y, uint8_t *dst,
                             int64_t nblocks)
{
    switch (cb->bits) {
    case 2: quantize_blocks(2, cb, y, dst, nblocks); break;
    case 3: quantize_blocks(3, cb, y, dst, nblocks); break;
    case 4: quantize_blocks(4, cb, y, dst, nblocks); break;
    default: quantize_blocks(5, cb, y, dst, nblocks); break;
    }
}

/* Indices of values 8g .. 8g+7 as 32-bit lanes. Loads only the bytes that hold them, so the
 * last group of the last block never reads past the row. */
INLINE __m256i indices8(int bits, int n, const uint8_t *blk, int g)
{
    __m256i k;
    if (bits == 3) {
        /* both planes in one broadcast word: low bits 2i..2i+1, high bit 16 + i, which a
         * shift by 14 + i leaves at bit 2 */
        uint16_t lo;
        memcpy(&lo, blk + 2 + 2 * g, sizeof lo);
        const __m256i w = _mm256_set1_epi32((int)(lo | (uint32_t)blk[tq_hi_offset(bits, n) + g] << 16));
        k = _mm256_and_si256(_mm256_srlv_epi32(w, _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)),
                             _mm256_set1_epi32(0x03));
        const __m256i h = _mm256_and_si256(
            _mm256_srlv_epi32(w, _mm256_setr_epi32(14, 15, 16, 17, 18, 19, 20, 21)), _mm256_set1_epi32(0x04));
        return _mm256_or_si256(k, h);
    }
    if (tq_lo_bits(bits) == 4) {
        uint32_t w;
        memcpy(&w, blk + 2 + 4 * g, sizeof w);
        const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
        k = _mm256_srlv_epi32(_mm256_set1_epi32((int)w), shifts);
        k = _mm256_and_si256(k, _mm256_set1_epi32(0x0F));
    } else {
        uint16_t w;
        memcpy(&w, blk + 2 + 2 * g, sizeof w);
        k = _mm256_srlv_epi32(_mm256_set1_epi32(w), _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14));
        k = _mm256_and_si256(k, _mm256_set1_epi32(0x03));
    }
    if (bits == 5) {
        /* high bit i lands on bit 4 */
        const __m256i h = _mm256_srlv_epi32(_mm256_set1_epi32(blk[tq_hi_offset(bits, n) + g] << 4),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        k = _mm256_or_si256(k, _mm256_and_si256(h, _mm256_set1_epi32(0x10)));
    }
    return k;
}

INLINE void dequantize_blocks(int bits, const struct tq_codebook *cb, const uint8_t *src,
                              float *y, int64_t nblocks)
{
    const int n = cb->n;
    const int nlev = 1 << bits;
    const size_t nbytes = tq_block_size(cb);
    const struct lut lv = lut_load(cb->levels, nlev);

    for (int64_t b = 0; b < nblocks; b++) {
        const uint8_t *blk = src + (size_t)b * nbytes;
        const struct lut scaled = block_lut(&lv, nlev, blk);
        for (int g = 0; g < n / 8; g++) {
            _mm256_storeu_ps(y + b * n + 8 * g, lut_get(&scaled, nlev, indices8(bits, n, blk, g)));
        }
    }
}

/* ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)), as tq_dot.c sums its lanes. */
INLINE float lane_sum(__m256 acc)
{
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

/* tq_dot_blocks_decoded's result without the float buffer: the same products d * C[k] (the
 * scaled table), the same 8 lanes per chunk, the same reduction order, so bit-identical. */
INLINE void dot_blocks(int bits, const struct tq_codebook *cb, const uint8_t *src, const float *y,
                       int64_t nblocks, float *out)
{
    const int n = cb->n;
    const int nlev = 1 << bits;
    const size_t nbytes = tq_block_size(cb);
    const struct lut lv = lut_load(cb->levels, nlev);
    const int64_t per_chunk = TQ_DOT_CHUNK / n;
    float sum = 0.0f;
    for (int64_t c = 0; c < nblocks; c += per_chunk) {
        const int64_t end = c + per_chunk < nblocks ? c + per_chunk : nblocks;
        __m256 acc = _mm256_setzero_ps();
        for (int64_t b = c; b < end; b++) {
            const uint8_t *blk = src + (size_t)b * nbytes;
            const struct lut scaled = block_lut(&lv, nlev, blk);
            for (int g = 0; g < n / 8; g++) {
                const __m256 x = lut_get(&scaled, nlev, indices8(bits, n, blk, g));
                acc = _mm256_add_ps(acc, _mm256_mul_ps(x, _mm256_loadu_ps(y + b * n + 8 * g)));
            }
        }
        sum += lane_sum(acc);
    }
    *out = sum;
}

/* Up to 4 (G) of tq_dot_rows_decoded's dots of one row, row decoded once: for each query
 * exactly dot_blocks' products, lanes, chunks and reduction, so bit-identical to it. out[j *
 * ostride] takes query j's dot. */
INLINE void dot_row_group(int bits, int G, const struct tq_codebook *cb, const struct lut *lv,
                          const uint8_t *row, int64_t nblocks, const float *q, int64_t k,
                          float *out, int64_t ostride)
{
    const int n = cb->n;
    const int nlev = 1 << bits;
    const size_t nbytes = tq_block_size(cb);
    const int64_t per_chunk = TQ_DOT_CHUNK / n;
    float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int64_t c = 0; c < nblocks; c += per_chunk) {
        const int64_t end = c + per_chunk < nblocks ? c + per_chunk : nblocks;
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                         _mm256_setzero_ps()};
        for (int64_t b = c; b < end; b++) {
            const uint8_t *blk = row + (size_t)b * nbytes;
            const struct lut scaled = block_lut(lv, nlev, blk);
            for (int g = 0; g < n / 8; g++) {
                const __m256 x = lut_get(&scaled, nlev, indices8(bits, n, blk, g));
                for (int j = 0; j < G; j++) {
                    const __m256 y = _mm256_loadu_ps(q + j * k + b * n + 8 * g);
                    acc[j] = _mm256_add_ps(acc[j], _mm256_mul_ps(x, y));
                }
            }
        }
        for (int j = 0; j < G; j++) {
            sum[j] += lane_sum(acc[j]);
        }
    }
    for (int j = 0; j < G; j++) {
        out[j * ostride] = sum[j];
    }
}

/* Calls F(G, j) for queries j .. j+G-1 of nq: groups of 4, then the rest as one group, each
 * G a constant so that the group's loop unrolls and its accumulators stay in registers. */
#define QUERY_GROUPS(nq, F)                                                                   \
    do {                                                                                      \
        int j_ = 0;                                                                           \
        for (; j_ + 4 <= (nq); j_ += 4) {                                                     \
            F(4, j_);                                                                         \
        }                                                                                     \
        switch ((nq) - j_) {                                                                  \
        case 3: F(3, j_); break;                                                              \
        case 2: F(2, j_); break;                                                              \
        case 1: F(1, j_); break;                                                              \
        default: break;                                                                       \
        }                                                                                     \
    } while (0)

/* dot_row_group over two rows at once: each query's 8 values load once for both rows, and
 * the two rows' accumulators are independent chains. Each dot keeps dot_blocks' products,
 * lanes, chunks and reduction, so bit-identical to it. For widths of at most 16 levels, whose
 * two scaled tables and 2G accumulators fit the 16 registers. */
INLINE void dot_row_pair(int bits, int G, const struct tq_codebook *cb, const struct lut *lv,
                         const uint8_t *row0, size_t stride, int64_t nblocks, const float *q,
                         int64_t k, float *out, int64_t ostride)
{
    const int n = cb->n;
    const int nlev = 1 << bits;
    const size_t nbytes = tq_block_size(cb);
    const int64_t per_chunk = TQ_DOT_CHUNK / n;
    float sum[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
    for (int64_t c = 0; c < nblocks; c += per_chunk) {
        const int64_t end = c + per_chunk < nblocks ? c + per_chunk : nblocks;
        __m256 acc[2][4];
        for (int j = 0; j < G; j++) {
            acc[0][j] = _mm256_setzero_ps();
            acc[1][j] = _mm256_setzero_ps();
        }
        for (int64_t b = c; b < end; b++) {
            const uint8_t *blk0 = row0 + (size_t)b * nbytes;
            const uint8_t *blk1 = blk0 + stride;
            const struct lut scaled0 = block_lut(lv, nlev, blk0);
            const struct lut scaled1 = block_lut(lv, nlev, blk1);
            for (int g = 0; g < n / 8; g++) {
                const __m256 x0 = lut_get(&scaled0, nlev, indices8(bits, n, blk0, g));
                const __m256 x1 = lut_get(&scaled1, nlev, indices8(bits, n, blk1, g));
                for (int j = 0; j < G; j++) {
                    const __m256 y = _mm256_loadu_ps(q + j * k + b * n + 8 * g);
                    acc[0][j] = _mm256_add_ps(acc[0][j], _mm256_mul_ps(x0, y));
                    acc[1][j] = _mm256_add_ps(acc[1][j], _mm256_mul_ps(x1, y));
                }
            }
        }
        for (int i = 0; i < 2; i++) {
            for (int j = 0; j < G; j++) {
                sum[i][j] += lane_sum(acc[i][j]);
            }
        }
    }
    for (int j = 0; j < G; j++) {
        out[j * ostride] = sum[0][j];
        out[j * ostride + 1] = sum[1][j];
    }
}

INLINE void dot_rows(int bits, const struct tq_codebook *cb, const struct tq_tile *t,
                     const float *q, int nq, float *out)
{
    const struct lut lv = lut_load(cb->levels, 1 << bits);
    const int64_t k = t->nblocks * cb->n;
    int64_t r = 0;
    if (bits <= 4) {
        for (; r + 2 <= t->nrows; r += 2) {
            const uint8_t *row = t->src + (size_t)r * t->stride;
#define DOT_PAIR(G, j)                                                                         \
    dot_row_pair(bits, G, cb, &lv, row, t->stride, t->nblocks, q + (j) * k, k,                 \
                 out + (j) * t->nrows + r, t->nrows)
            QUERY_GROUPS(nq, DOT_PAIR);
#undef DOT_PAIR
        }
    }
    for (; r < t->nrows; r++) {
        const uint8_t *row = t->src + (size_t)r * t->stride;
#define DOT_GROUP(G, j)                                                                        \
    dot_row_group(bits, G, cb, &lv, row, t->nblocks, q + (j) * k, k, out + (j) * t->nrows + r, \
                  t->nrows)
        QUERY_GROUPS(nq, DOT_GROUP);
#undef DOT_GROUP
    }
}

/* tq_mad_rows_decoded's sums without the buffer, rows innermost: for each 8 values of a
 * block, the G queries' 8 accumulators stay in registers while the rows of the tile add
 * w * value into them in row order (the same one multiply and one add per value, a query's
 * zero-weight rows skipped), so no accumulator is loaded and stored per row. Rows go
 * MAD_ROWS at a time, their scaled levels and broadcast weights prepared once per block. */
#define MAD_ROWS 16

INLINE void mad_slices(int bits, int G, const struct tq_codebook *cb, const struct lut *lv,
                       const struct tq_tile *t, int64_t r0, int nr, const float *w,
                       float *acc, int64_t k)
{
    const int n = cb->n;
    const int nlev = 1 << bits;
    const size_t nbytes = tq_block_size(cb);
    int64_t rows[MAD_ROWS];
    __m256 wv[MAD_ROWS][4];
    int live[MAD_ROWS][4];
    int count = 0;
    for (int i = 0; i < nr; i++) {
        int any = 0;
        for (int j = 0; j < G; j++) {
            const float wj = w[j * t->nrows + r0 + i];
            live[count][j] = wj != 0.0f;
            wv[count][j] = _mm256_set1_ps(wj);
            any |= live[count][j];
        }
        if (any) {
            rows[count++] = r0 + i;
        }
    }
    if (count == 0) {
        return;
    }
    for (int64_t b = 0; b < t->nblocks; b++) {
        const uint8_t *blk[MAD_ROWS];
        struct lut scaled[MAD_ROWS];
        for (int i = 0; i < count; i++) {
            blk[i] = t->src + (size_t)rows[i] * t->stride + (size_t)b * nbytes;
            scaled[i] = block_lut(lv, nlev, blk[i]);
        }
        for (int g = 0; g < n / 8; g++) {
            float *a0 = acc + b * n + 8 * g;
            __m256 a[4];
            for (int j = 0; j < G; j++) {
                a[j] = _mm256_loadu_ps(a0 + j * k);
            }
            for (int i = 0; i < count; i++) {
                const __m256 x = lut_get(&scaled[i], nlev, indices8(bits, n, blk[i], g));
                for (int j = 0; j < G; j++) {
                    if (live[i][j]) {
                        a[j] = _mm256_add_ps(a[j], _mm256_mul_ps(wv[i][j], x));
                    }
                }
            }
            for (int j = 0; j < G; j++) {
                _mm256_storeu_ps(a0 + j * k, a[j]);
            }
        }
    }
}

INLINE void mad_rows(int bits, const struct tq_codebook *cb, const struct tq_tile *t,
                     const float *w, int nq, float *acc)
{
    const struct lut lv = lut_load(cb->levels, 1 << bits);
    const int64_t k = t->nblocks * cb->n;
    for (int64_t r0 = 0; r0 < t->nrows; r0 += MAD_ROWS) {
        const int nr = t->nrows - r0 < MAD_ROWS ? (int)(t->nrows - r0) : MAD_ROWS;
#define MAD_GROUP(G, j) mad_slices(bits, G, cb, &lv, t, r0, nr, w + (j) * t->nrows, acc + (j) * k, k)
        QUERY_GROUPS(nq, MAD_GROUP);
#undef MAD_GROUP
    }
}

#undef QUERY_GROUPS

void tq_dot_rows_avx2(const struct tq_codebook *cb, const struct tq_tile *t, const float *q,
                      int nq, float *out)
{
    switch (cb->bits) {
    case 2: dot_rows(2, cb, t, q, nq, out); break;
    case 3: dot_rows(3, cb, t, q, nq, out); break;
    case 4: dot_rows(4, cb, t, q, nq, out); break;
    default: dot_rows(5, cb, t, q, nq, out); break;
    }
}

void tq_mad_rows_avx2(const struct tq_codebook *cb, const struct tq_tile *t, const float *w,
                      int nq, float *acc)
{
    switch (cb->bits) {
    case 2: mad_rows(2, cb, t, w, nq, acc); break;
    case 3: mad_rows(3, cb, t, w, nq, acc); break;
    case 4: mad_rows(4, cb, t, w, nq, acc); break;
    default: mad_rows(5, cb, t, w, nq, acc); break;
    }
}

void tq_dot_blocks_avx2(const struct tq_codebook *cb, const uint8_t *src, const float *y,
                        int64_t nblocks, float *out)
{
    switch (cb->bits) {
    case 2: dot_blocks(2, cb, src, y, nblocks, out); break;
    case 3: dot_blocks(3, cb, src, y, nblocks, out); break;
    case 4: dot_blocks(4, cb, src, y, nblocks, out); break;
    default: dot_blocks(5, cb, src, y, nblocks, out); break;
    }
}

void tq_dequantize_blocks_avx2(const struct tq_codebook *cb, const uint8_t *src, float *y,
                               int64_t nblocks)
{
    switch (cb->bits) {
    case 2: dequantize_blocks(2, cb, src, y, nblocks); break;
    case 3: dequantize_blocks(3, cb, src, y, nblocks); break;
    case 4: dequantize_blocks(4, cb, src, y, nblocks); break;
    default: dequantize_blocks(5, cb, src, y, nblocks); break;
    }
}

INLINE void rotate_block(int n, float *x, const float *first, const float *second, __m256 scale)
{
    __m256 v[TQ_MAX_BLOCK / 8];
    const int regs = n / 8;
    for (int r = 0; r < regs; r++) {
        v[r] = _mm256_mul_ps(_mm256_loadu_ps(x + 8 * r), _mm256_loadu_ps(first + 8 * r));
        /* Butterflies h = 1, 2, 4 inside the register: with p each element's partner, the
         * lower of a pair takes a + b = v + p, the upper a - b = p - v. */
        __m256 p = _mm256_permute_ps(v[r], 0xB1);
        v[r] = _mm256_blend_ps(_mm256_add_ps(v[r], p), _mm256_sub_ps(p, v[r]), 0xAA);
        p = _mm256_permute_ps(v[r], 0x4E);
        v[r] = _mm256_blend_ps(_mm256_add_ps(v[r], p), _mm256_sub_ps(p, v[r]), 0xCC);
        p = _mm256_permute2f128_ps(v[r], v[r], 0x01);
        v[r] = _mm256_blend_ps(_mm256_add_ps(v[r], p), _mm256_sub_ps(p, v[r]), 0xF0);
    }
    for (int h = 1; h < regs; h *= 2) {
        for (int r = 0; r < regs; r++) {
            if (r & h) {
                continue;
            }
            const __m256 a = v[r];
            const __m256 b = v[r + h];
            v[r] = _mm256_add_ps(a, b);
            v[r + h] = _mm256_sub_ps(a, b);
        }
    }
    for (int r = 0; r < regs; r++) {
        const __m256 scaled = _mm256_mul_ps(v[r], scale);
        _mm256_storeu_ps(x + 8 * r, _mm256_mul_ps(scaled, _mm256_loadu_ps(second + 8 * r)));
    }
}

void tq_rotate_blocks_avx2(int n, float *x, int64_t nblocks, int inverse)
{
    const float *first = inverse ? tq_sign2 : tq_sign1;
    const float *second = inverse ? tq_sign1 : tq_sign2;
    const __m256 scale = _mm256_set1_ps((float)(1.0 / sqrt((double)n)));
    for (int64_t b = 0; b < nblocks; b++) {
        rotate_block(n, x + b * n, first, second, scale);
    }
}
