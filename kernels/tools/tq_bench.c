/*
 * Encode / decode throughput on one core, as a ratio to memcpy of the same bytes.
 *
 *   tq_bench [MIB [SECONDS]]
 *
 * One float buffer of MIB MiB (default 16: past the per-core L2, as a KV cache is) is
 * encoded into blocks and decoded back, per format; memcpy copies the same float buffer.
 * GB/s counts the float32 side (4 bytes per value) for every operation. Each operation is
 * timed in 3 rounds alternating with memcpy, SECONDS/6 each (default SECONDS 0.3), and the
 * best round of each gives the ratio. Output: a header row, then one tab-separated row per
 * format, block size and operation.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "turboquant.h"

/* C11's clock: no POSIX feature macros, which hide clock_gettime on macOS. */
static double now(void)
{
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

enum op { OP_MEMCPY, OP_ENCODE, OP_DECODE };

struct job {
    enum op op;
    int bits;
    int n;
    float *values;
    float *decoded;
    void *blocks;
    int64_t k;
};

static void run_once(const struct job *j)
{
    switch (j->op) {
    case OP_MEMCPY:
        memcpy(j->decoded, j->values, sizeof(float) * (size_t)j->k);
        break;
    case OP_ENCODE:
        tq_quantize_row(j->bits, j->n, j->values, j->blocks, j->k);
        break;
    case OP_DECODE:
        tq_dequantize_row(j->bits, j->n, j->blocks, j->decoded, j->k);
        break;
    }
}

/* Bytes of float32 data per second, best of `rounds` timed runs of at least `seconds`. */
static double timed(const struct job *j, double seconds)
{
    long reps = 0;
    const double t0 = now();
    double t1;
    do {
        run_once(j);
        reps++;
        t1 = now();
    } while (t1 - t0 < seconds);
    return (double)reps * sizeof(float) * (double)j->k / (t1 - t0);
}

/* The job's rate and memcpy's, measured in alternation so that both see the same machine
 * (this one is shared; a memcpy figure from a minute earlier would mislead the ratio). */
static void measure(const struct job *j, const struct job *copy, double seconds, double *rate,
                    double *copy_rate)
{
    *rate = 0.0;
    *copy_rate = 0.0;
    run_once(j);
    for (int r = 0; r < 3; r++) {
        const double c = timed(copy, seconds / 6.0);
        const double v = timed(j, seconds / 6.0);
        *copy_rate = c > *copy_rate ? c : *copy_rate;
        *rate = v > *rate ? v : *rate;
    }
}

int main(int argc, char **argv)
{
    const double mib = argc > 1 ? atof(argv[1]) : 16.0;
    const double seconds = argc > 2 ? atof(argv[2]) : 0.3;
    const int64_t k = ((int64_t)(mib * 1048576.0) / (int64_t)sizeof(float)) / 128 * 128;
    if (k <= 0 || seconds <= 0.0) {
        fprintf(stderr, "usage: %s [MIB [SECONDS]]\n", argv[0]);
        return 2;
    }
    float *values = malloc(sizeof(float) * (size_t)k);
    float *decoded = malloc(sizeof(float) * (size_t)k);
    void *blocks = malloc((size_t)k); /* at most 5 bits a value plus 2 bytes per 64 */
    if (values == NULL || decoded == NULL || blocks == NULL) {
        fprintf(stderr, "out of memory\n");
        return 2;
    }
    /* Gaussian values (Box-Muller on a fixed LCG): what a rotated KV row looks like. */
    uint64_t s = 1;
    for (int64_t i = 0; i < k; i += 2) {
        s = s * 6364136223846793005u + 1442695040888963407u;
        const double u1 = ((double)(s >> 11) + 1.0) / 9007199254740993.0;
        s = s * 6364136223846793005u + 1442695040888963407u;
        const double u2 = (double)(s >> 11) / 9007199254740992.0;
        const double r = sqrt(-2.0 * log(u1));
        values[i] = (float)(r * cos(6.283185307179586 * u2));
        values[i + 1] = (float)(r * sin(6.283185307179586 * u2));
    }
    memset(decoded, 0, sizeof(float) * (size_t)k);
    memset(blocks, 0, (size_t)k);

    const struct job copy = {OP_MEMCPY, 0, 0, values, decoded, blocks, k};
    printf("path\tformat\tblock\top\tGB/s\tmemcpy_GB/s\tx_memcpy\n");
    for (int n = 128; n >= 64; n /= 2) {
        for (int bits = 2; bits <= 5; bits++) {
            for (int op = OP_ENCODE; op <= OP_DECODE; op++) {
                const struct job j = {(enum op)op, bits, n, values, decoded, blocks, k};
                double rate;
                double copy_rate;
                measure(&j, &copy, seconds, &rate, &copy_rate);
                printf("%s\tturbo%d\t%d\t%s\t%.2f\t%.2f\t%.2f\n", tq_simd_path(), bits, n,
                       op == OP_ENCODE ? "encode" : "decode", rate / 1e9, copy_rate / 1e9,
                       rate / copy_rate);
                fflush(stdout);
            }
        }
    }
    free(values);
    free(decoded);
    free(blocks);
    return 0;
}
