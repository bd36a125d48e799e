/*
 * NEON path (arm64, where NEON is baseline). Bit-identical to the scalar path by the same
 * means as the AVX2 one: float compares against per-block thresholds, the 8-lane double
 * sums kept as four 2-lane registers, decode as a byte-table lookup of the levels scaled by
 * d once per block. Built and run here under qemu by the tests; macOS CI runs it natively.
 */
#include <arm_neon.h>
#include <math.h>

#include "tq_internal.h"

/* ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)) with acc[0] = l0,l1 ... acc[3] = l6,l7. */
static double lane8_total(const float64x2_t acc[4])
{
    const float64x2_t u = vaddq_f64(vaddq_f64(acc[0], acc[2]), vaddq_f64(acc[1], acc[3]));
    return vgetq_lane_f64(u, 0) + vgetq_lane_f64(u, 1);
}

/* acc[j] += a_j * b_j for the 8 values of two float vectors, each widened exactly. The
 * product of two widened floats is exact in double, so the fused multiply-add rounds once to
 * the same double as the contract's multiply and add. */
static void accumulate8(float64x2_t acc[4], float32x4_t a0, float32x4_t a1, float32x4_t b0,
                        float32x4_t b1)
{
    acc[0] = vfmaq_f64(acc[0], vcvt_f64_f32(vget_low_f32(a0)), vcvt_f64_f32(vget_low_f32(b0)));
    acc[1] = vfmaq_f64(acc[1], vcvt_high_f64_f32(a0), vcvt_high_f64_f32(b0));
    acc[2] = vfmaq_f64(acc[2], vcvt_f64_f32(vget_low_f32(a1)), vcvt_f64_f32(vget_low_f32(b1)));
    acc[3] = vfmaq_f64(acc[3], vcvt_high_f64_f32(a1), vcvt_high_f64_f32(b1));
}

static void zero4(float64x2_t acc[4])
{
    for (int j = 0; j < 4; j++) {
        acc[j] = vdupq_n_f64(0.0);
    }
}

static uint32x4_t index4(float32x4_t v, const float *thr, int count)
{
    uint32x4_t k = vdupq_n_u32(0);
    for (int m = 0; m < count; m++) {
        /* An all-ones lane is -1: subtracting it counts the threshold. */
        k = vsubq_u32(k, vcgeq_f32(v, vdupq_n_f32(thr[m])));
    }
    return k;
}

static float32x4_t levels4(const float *levels, uint32x4_t k, uint8_t *idx)
{
    uint32_t lanes[4];
    vst1q_u32(lanes, k);
    float c[4];
    for (int l = 0; l < 4; l++) {
        idx[l] = (uint8_t)lanes[l];
        c[l] = levels[lanes[l]];
    }
    return vld1q_f32(c);
}

static void quantize_block(const struct tq_codebook *cb, uint8_t zero_idx, const float *y,
                           uint8_t *blk)
{
    const int n = cb->n;
    const int nlev = cb->nlev;
    uint8_t idx[TQ_MAX_BLOCK];
    float64x2_t acc[4];

    zero4(acc);
    for (int i = 0; i < n; i += 8) {
        const float32x4_t v0 = vld1q_f32(y + i);
        const float32x4_t v1 = vld1q_f32(y + i + 4);
        accumulate8(acc, v0, v1, v0, v1);
    }
    const double gamma = sqrt(lane8_total(acc));

    uint16_t d_bits = 0;
    if (!isfinite(gamma) || gamma == 0.0) {
        d_bits = gamma == 0.0 ? 0 : TQ_D_NAN;
        memset(idx, gamma == 0.0 ? zero_idx : 0, (size_t)n);
    } else {
        const double inv = 1.0 / gamma;
        float thr[TQ_MAX_LEVELS];
        for (int m = 0; m < nlev - 1; m++) {
            thr[m] = tq_float_threshold(cb->mid[m], gamma, inv);
        }
        float64x2_t p[4];
        float64x2_t q[4];
        zero4(p);
        zero4(q);
        for (int i = 0; i < n; i += 8) {
            const float32x4_t v0 = vld1q_f32(y + i);
            const float32x4_t v1 = vld1q_f32(y + i + 4);
            const float32x4_t c0 = levels4(cb->levels, index4(v0, thr, nlev - 1), idx + i);
            const float32x4_t c1 = levels4(cb->levels, index4(v1, thr, nlev - 1), idx + i + 4);
            accumulate8(p, v0, v1, c0, c1);
            accumulate8(q, c0, c1, c0, c1);
        }
        const double P = lane8_total(p);
        const double Q = lane8_total(q);
        d_bits = tq_fp16_from_float((float)(Q == 0.0 ? 0.0 : P / Q));
    }
    blk[0] = (uint8_t)(d_bits & 0xFF);
    blk[1] = (uint8_t)(d_bits >> 8);
    tq_pack_indices(cb->bits, n, idx, blk);
}

void tq_quantize_blocks_neon(const struct tq_codebook *cb, const float *y, uint8_t *dst,
                             int64_t nblocks)
{
    const size_t nbytes = tq_block_size(cb);
    uint8_t zero_idx = 0;
    for (int m = 0; m < cb->nlev - 1; m++) {
        zero_idx = (uint8_t)(zero_idx + (0.0 >= cb->mid[m]));
    }
    for (int64_t b = 0; b < nblocks; b++) {
        quantize_block(cb, zero_idx, y + b * cb->n, dst + (size_t)b * nbytes);
    }
}

/* Indices of values 16g .. 16g+15, one per byte; reads only the bytes that hold them. */
static uint8x16_t indices16(int bits, int n, const uint8_t *blk, int g)
{
    static const int8_t shift2[16] = {0, -2, -4, -6, 0, -2, -4, -6, 0, -2, -4, -6, 0, -2, -4, -6};
    static const int8_t shift4[16] = {0, -4, 0, -4, 0, -4, 0, -4, 0, -4, 0, -4, 0, -4, 0, -4};
    static const int8_t shift1[16] = {0, -1, -2, -3, -4, -5, -6, -7, 0, -1, -2, -3, -4, -5, -6, -7};
    static const uint8_t spread4[16] = {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3};
    static const uint8_t spread2[16] = {0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7};
    static const uint8_t spread8[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
    const int lo_bits = tq_lo_bits(bits);
    uint8_t raw[16] = {0};
    uint8x16_t k;
    if (lo_bits == 2) {
        memcpy(raw, blk + 2 + 4 * g, 4);
        k = vqtbl1q_u8(vld1q_u8(raw), vld1q_u8(spread4));
        k = vandq_u8(vshlq_u8(k, vld1q_s8(shift2)), vdupq_n_u8(3));
    } else {
        memcpy(raw, blk + 2 + 8 * g, 8);
        k = vqtbl1q_u8(vld1q_u8(raw), vld1q_u8(spread2));
        k = vandq_u8(vshlq_u8(k, vld1q_s8(shift4)), vdupq_n_u8(15));
    }
    if (bits != lo_bits) {
        uint8_t hi[16] = {0};
        memcpy(hi, blk + tq_hi_offset(bits, n) + 2 * g, 2);
        uint8x16_t h = vqtbl1q_u8(vld1q_u8(hi), vld1q_u8(spread8));
        h = vandq_u8(vshlq_u8(h, vld1q_s8(shift1)), vdupq_n_u8(1));
        k = vorrq_u8(k, vshlq_u8(h, vdupq_n_s8((int8_t)lo_bits)));
    }
    return k;
}

static void dequantize_block(const struct tq_codebook *cb, const uint8_t *blk, float *y)
{
    static const uint8_t byte_of_float[16] = {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3};
    static const uint8_t byte_in_float[16] = {0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3};
    const int nlev = cb->nlev;
    /* d * C[k] once per block (the scalar path's multiply), as a 64-byte table per 16
     * levels so vqtbl4 looks floats up by their bytes. */
    const float d = tq_half_to_float((uint16_t)(blk[0] | blk[1] << 8));
    float scaled[TQ_MAX_LEVELS] = {0};
    for (int k = 0; k < nlev; k++) {
        scaled[k] = d * cb->levels[k];
    }
    uint8x16x4_t lo_tab;
    uint8x16x4_t hi_tab;
    for (int j = 0; j < 4; j++) {
        lo_tab.val[j] = vreinterpretq_u8_f32(vld1q_f32(scaled + 4 * j));
        hi_tab.val[j] = vreinterpretq_u8_f32(vld1q_f32(scaled + 16 + 4 * j));
    }
    for (int g = 0; g < cb->n / 16; g++) {
        const uint8x16_t k = indices16(cb->bits, cb->n, blk, g);
        const uint8x16_t k_lo = vandq_u8(k, vdupq_n_u8(15));
        const uint8x16_t upper = vcgeq_u8(k, vdupq_n_u8(16));
        for (int q = 0; q < 4; q++) {
            const uint8x16_t pick = vaddq_u8(vld1q_u8(byte_of_float), vdupq_n_u8((uint8_t)(4 * q)));
            const uint8x16_t kk = vqtbl1q_u8(k_lo, pick);
            const uint8x16_t bytes = vaddq_u8(vshlq_n_u8(kk, 2), vld1q_u8(byte_in_float));
            uint8x16_t v = vqtbl4q_u8(lo_tab, bytes);
            if (nlev > 16) {
                v = vbslq_u8(vqtbl1q_u8(upper, pick), vqtbl4q_u8(hi_tab, bytes), v);
            }
            vst1q_f32(y + 16 * g + 4 * q, vreinterpretq_f32_u8(v));
        }
    }
}

void tq_dequantize_blocks_neon(const struct tq_codebook *cb, const uint8_t *src, float *y,
                               int64_t nblocks)
{
    const size_t nbytes = tq_block_size(cb);
    for (int64_t b = 0; b < nblocks; b++) {
        dequantize_block(cb, src + (size_t)b * nbytes, y + b * cb->n);
    }
}

/* One butterfly level inside a register: lanes where `odd` is set take partner - self
 * (that is a - b), the others self + partner. */
static float32x4_t butterfly_in(float32x4_t v, float32x4_t partner, uint32x4_t odd)
{
    return vbslq_f32(odd, vsubq_f32(partner, v), vaddq_f32(v, partner));
}

void tq_rotate_blocks_neon(int n, float *x, int64_t nblocks, int inverse)
{
    static const uint32_t odd1[4] = {0, ~0u, 0, ~0u};
    static const uint32_t odd2[4] = {0, 0, ~0u, ~0u};
    const float *first = inverse ? tq_sign2 : tq_sign1;
    const float *second = inverse ? tq_sign1 : tq_sign2;
    const float scale = (float)(1.0 / sqrt((double)n));
    const int regs = n / 4;

    for (int64_t b = 0; b < nblocks; b++) {
        float *blk = x + b * n;
        float32x4_t v[TQ_MAX_BLOCK / 4];
        for (int r = 0; r < regs; r++) {
            v[r] = vmulq_f32(vld1q_f32(blk + 4 * r), vld1q_f32(first + 4 * r));
            v[r] = butterfly_in(v[r], vrev64q_f32(v[r]), vld1q_u32(odd1));
            v[r] = butterfly_in(v[r], vextq_f32(v[r], v[r], 2), vld1q_u32(odd2));
        }
        for (int h = 1; h < regs; h *= 2) {
            for (int r = 0; r < regs; r++) {
                if (r & h) {
                    continue;
                }
                const float32x4_t a = v[r];
                const float32x4_t c = v[r + h];
                v[r] = vaddq_f32(a, c);
                v[r + h] = vsubq_f32(a, c);
            }
        }
        for (int r = 0; r < regs; r++) {
            const float32x4_t scaled = vmulq_f32(v[r], vdupq_n_f32(scale));
            vst1q_f32(blk + 4 * r, vmulq_f32(scaled, vld1q_f32(second + 4 * r)));
        }
    }
}
