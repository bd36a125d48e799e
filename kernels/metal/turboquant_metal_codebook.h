/*
 * The codebook a Metal turbo kernel receives from the host, as one constant buffer. Valid
 * C, C++ and Metal Shading Language, so host and GPU agree on the layout.
 *
 * Metal has no double, so the fp64 decision midpoints travel as their bit patterns and the
 * quantizer compares them with integer arithmetic (turboquant_metal.h). The host fills the
 * struct from libturboquant's generated tables (tq_levels, tq_midpoints): no second copy of
 * any number exists.
 */
#ifndef TURBOQUANT_METAL_CODEBOOK_H
#define TURBOQUANT_METAL_CODEBOOK_H

#define TQ_METAL_MAX_LEVELS 32

#if defined(__METAL_VERSION__) || defined(TQ_METAL_SHIM)
typedef ulong tq_metal_u64;
#else
#include <stdint.h>
#include <string.h>
typedef uint64_t tq_metal_u64;
#endif

typedef struct tq_metal_codebook {
    tq_metal_u64 mid[TQ_METAL_MAX_LEVELS - 1]; /* fp64 bits of the 2^bits - 1 midpoints */
    float lv[TQ_METAL_MAX_LEVELS];             /* the 2^bits float32 levels */
} tq_metal_codebook;

#if !defined(__METAL_VERSION__)
static inline void tq_metal_codebook_fill(tq_metal_codebook *cb, const float *levels,
                                          const double *midpoints, int nlev)
{
    memset(cb, 0, sizeof *cb);
    memcpy(cb->mid, midpoints, sizeof(double) * (size_t)(nlev - 1));
    memcpy(cb->lv, levels, sizeof(float) * (size_t)nlev);
}
#endif

#endif /* TURBOQUANT_METAL_CODEBOOK_H */
