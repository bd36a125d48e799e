/* The one translation unit that includes the generated tables (reference/gen_tables.py). */
#include <stddef.h>

#include "tq_internal.h"
#include "turboquant_tables.h"

#define TQ_CB(B, N) {B, N, 1 << (B), tq_levels_b##B##_n##N, tq_mid_b##B##_n##N}

static const struct tq_codebook codebooks[] = {
    TQ_CB(2, 64),  TQ_CB(3, 64),  TQ_CB(4, 64),  TQ_CB(5, 64),
    TQ_CB(2, 128), TQ_CB(3, 128), TQ_CB(4, 128), TQ_CB(5, 128),
};

/* codebooks[] is ordered by (n, bits), so the lookup is an index. */
const struct tq_codebook *tq_codebook_get(int bits, int n)
{
    if (bits < 2 || bits > 5 || (n != 64 && n != 128)) {
        return NULL;
    }
    return &codebooks[(n == 128 ? 4 : 0) + bits - 2];
}

const float *const tq_sign1 = tq_sign1_n128;
const float *const tq_sign2 = tq_sign2_n128;
