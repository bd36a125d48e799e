/*
 * Sanitizer driver: replays parity cases written by harness/parity.py and decodes random
 * bytes of random lengths, through every path (scalar, SIMD, Metal shim). Every buffer is
 * allocated at exactly the size the API may touch, so ASan reports any overrun.
 *
 *   tq_selftest CASES_FILE [FUZZ_ITERATIONS [SEED]]
 *
 * Case file (little-endian): "TQSELF01", u32 count, then per case: u32 kind, u32 bits,
 * u32 n, i64 k, u32 name length, name bytes, then the arrays of that kind:
 *   kind 0 encode: float y[k], u8 blocks[k/n * block bytes], float decoded[k]
 *   kind 1 decode: u8 blocks[k/n * block bytes], float decoded[k]
 *   kind 2 rotate: float x[k], float forward[k], float inverse[k]
 * Exit status 0 when every check passes, 1 on a mismatch, 2 on a bad file.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../metal/shim/turboquant_metal_shim.h"
#include "turboquant.h"

enum { KIND_ENCODE = 0, KIND_DECODE = 1, KIND_ROTATE = 2 };

typedef int (*quantize_fn)(int, int, const float *, void *, int64_t);
typedef int (*dequantize_fn)(int, int, const void *, float *, int64_t);
typedef int (*rotate_fn)(int, float *, int64_t);

static const struct {
    const char *name;
    quantize_fn fn;
} quantizers[] = {
    {"scalar", tq_quantize_row_scalar},
    {"simd", tq_quantize_row_simd},
    {"dispatch", tq_quantize_row},
    {"metal", tq_metal_quantize_row},
};

static const struct {
    const char *name;
    dequantize_fn fn;
} dequantizers[] = {
    {"scalar", tq_dequantize_row_scalar},
    {"simd", tq_dequantize_row_simd},
    {"dispatch", tq_dequantize_row},
    {"metal", tq_metal_dequantize_row},
    {"metal-t4", tq_metal_dequantize_row_t4},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static int failures;

static void fail(const char *name, const char *what, int64_t at)
{
    fprintf(stderr, "MISMATCH %s: %s at %" PRId64 "\n", name, what, at);
    failures++;
}

static void *xmalloc(size_t size)
{
    /* malloc(0) may return NULL; a 1-byte allocation keeps pointers valid for k = 0. */
    void *p = malloc(size == 0 ? 1 : size);
    if (p == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

static void read_exact(FILE *f, void *dst, size_t size)
{
    if (size != 0 && fread(dst, 1, size, f) != size) {
        fprintf(stderr, "case file truncated\n");
        exit(2);
    }
}

static void *read_array(FILE *f, size_t size)
{
    void *p = xmalloc(size);
    read_exact(f, p, size);
    return p;
}

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static int is_nan(float f) { return (bits_of(f) & 0x7FFFFFFFu) > 0x7F800000u; }

/* Decoded values must match bit for bit; rotation may differ only in which NaN comes out of
 * an operation on two NaNs (IEEE leaves that open), so there any NaN matches any NaN. */
static int64_t first_float_mismatch(const float *a, const float *b, int64_t k, int nan_class)
{
    for (int64_t i = 0; i < k; i++) {
        if (nan_class && is_nan(a[i]) && is_nan(b[i])) {
            continue;
        }
        if (bits_of(a[i]) != bits_of(b[i])) {
            return i;
        }
    }
    return -1;
}

static int64_t first_byte_mismatch(const uint8_t *a, const uint8_t *b, size_t size)
{
    for (size_t i = 0; i < size; i++) {
        if (a[i] != b[i]) {
            return (int64_t)i;
        }
    }
    return -1;
}

static void check_decoders(const char *name, int bits, int n, const uint8_t *blocks,
                           const float *expected, int64_t k)
{
    float *out = xmalloc(sizeof(float) * (size_t)k);
    for (size_t d = 0; d < COUNT(dequantizers); d++) {
        char what[64];
        snprintf(what, sizeof what, "decode %s", dequantizers[d].name);
        if (dequantizers[d].fn(bits, n, blocks, out, k) != TQ_OK) {
            fail(name, what, -1);
            continue;
        }
        const int64_t at = first_float_mismatch(out, expected, k, 0);
        if (at >= 0) {
            fail(name, what, at);
        }
    }
    free(out);
}

/* Flash attention's decode over a tile (tq_vec_dot_rows_f32, tq_vec_mad_rows_f32): the SIMD
 * and dispatching paths give the scalar path's floats bit for bit (a NaN matches any NaN),
 * one block per row, 3 queries, multiply-adds over tiles of 16 rows with some weights 0. */
#define TILE_Q 3
#define TILE_ROWS 16
static void check_tiles(const char *name, int bits, int n, const uint8_t *blocks, int64_t k)
{
    typedef int (*tile_fn)(int, int, const void *, size_t, int64_t, const float *, int, int64_t,
                           float *);
    static const tile_fn dots[3] = {tq_vec_dot_rows_f32_scalar, tq_vec_dot_rows_f32_simd,
                                    tq_vec_dot_rows_f32};
    static const tile_fn mads[3] = {tq_vec_mad_rows_f32_scalar, tq_vec_mad_rows_f32_simd,
                                    tq_vec_mad_rows_f32};
    const int64_t rows = k / n;
    const size_t stride = tq_block_bytes(bits, n);
    float *q = xmalloc(sizeof(float) * (size_t)(TILE_Q * n));
    float w[TILE_Q * TILE_ROWS];
    float acc[3][TILE_Q * TQ_MAX_BLOCK];
    float *dot[3];
    for (int i = 0; i < TILE_Q * n; i++) {
        q[i] = (float)((i * 37) % 19) / 9.0f - 1.0f;
    }
    for (int i = 0; i < TILE_Q * TILE_ROWS; i++) {
        w[i] = i % 5 == 0 ? 0.0f : (float)(i % 7) / 7.0f;
    }
    for (int p = 0; p < 3; p++) {
        dot[p] = xmalloc(sizeof(float) * (size_t)(TILE_Q * rows));
        if (dots[p](bits, n, blocks, stride, rows, q, TILE_Q, n, dot[p]) != TQ_OK) {
            fail(name, "tile dot rejected a valid tile", p);
        }
    }
    for (int p = 1; p < 3; p++) {
        const int64_t at = first_float_mismatch(dot[p], dot[0], TILE_Q * rows, 1);
        if (at >= 0) {
            fail(name, p == 1 ? "tile dot simd" : "tile dot dispatch", at);
        }
    }
    for (int64_t r0 = 0; r0 < rows; r0 += TILE_ROWS) {
        const int64_t nt = rows - r0 < TILE_ROWS ? rows - r0 : TILE_ROWS;
        for (int p = 0; p < 3; p++) {
            for (int i = 0; i < TILE_Q * n; i++) {
                acc[p][i] = (float)(i % 3);
            }
            if (mads[p](bits, n, blocks + (size_t)r0 * stride, stride, nt, w, TILE_Q, n,
                        acc[p]) != TQ_OK) {
                fail(name, "tile mad rejected a valid tile", p);
            }
        }
        for (int p = 1; p < 3; p++) {
            const int64_t at = first_float_mismatch(acc[p], acc[0], TILE_Q * n, 1);
            if (at >= 0) {
                fail(name, p == 1 ? "tile mad simd" : "tile mad dispatch", r0);
            }
        }
    }
    for (int p = 0; p < 3; p++) {
        free(dot[p]);
    }
    free(q);
}

static void check_encoders(const char *name, int bits, int n, const float *y,
                           const uint8_t *expected, size_t nbytes, int64_t k)
{
    uint8_t *out = xmalloc(nbytes);
    for (size_t q = 0; q < COUNT(quantizers); q++) {
        char what[64];
        snprintf(what, sizeof what, "encode %s", quantizers[q].name);
        if (quantizers[q].fn(bits, n, y, out, k) != TQ_OK) {
            fail(name, what, -1);
            continue;
        }
        const int64_t at = first_byte_mismatch(out, expected, nbytes);
        if (at >= 0) {
            fail(name, what, at);
        }
    }
    free(out);
}

static void check_rotation(const char *name, int n, const float *x, const float *expected,
                           int64_t k, const rotate_fn *fns, const char *dir)
{
    float *v = xmalloc(sizeof(float) * (size_t)k);
    for (int p = 0; p < 3; p++) {
        char what[64];
        snprintf(what, sizeof what, "rotate %s path %d", dir, p);
        if (k != 0) {
            memcpy(v, x, sizeof(float) * (size_t)k);
        }
        if (fns[p](n, v, k) != TQ_OK) {
            fail(name, what, -1);
            continue;
        }
        const int64_t at = first_float_mismatch(v, expected, k, 1);
        if (at >= 0) {
            fail(name, what, at);
        }
    }
    free(v);
}

static int replay(const char *path)
{
    static const rotate_fn forward[3] = {tq_rotate_forward_scalar, tq_rotate_forward_simd,
                                         tq_rotate_forward};
    static const rotate_fn inverse[3] = {tq_rotate_inverse_scalar, tq_rotate_inverse_simd,
                                         tq_rotate_inverse};
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    char magic[8];
    uint32_t count;
    read_exact(f, magic, sizeof magic);
    read_exact(f, &count, sizeof count);
    if (memcmp(magic, "TQSELF01", 8) != 0) {
        fprintf(stderr, "%s: not a tq_selftest case file\n", path);
        exit(2);
    }
    for (uint32_t c = 0; c < count; c++) {
        uint32_t kind, bits, n, name_len;
        int64_t k;
        read_exact(f, &kind, sizeof kind);
        read_exact(f, &bits, sizeof bits);
        read_exact(f, &n, sizeof n);
        read_exact(f, &k, sizeof k);
        read_exact(f, &name_len, sizeof name_len);
        if (k < 0 || n == 0 || k % n != 0 || name_len > 4096) {
            fprintf(stderr, "case %u: bad header\n", c);
            exit(2);
        }
        char *name = xmalloc(name_len + 1);
        read_exact(f, name, name_len);
        name[name_len] = '\0';
        const size_t floats = sizeof(float) * (size_t)k;
        if (kind == KIND_ROTATE) {
            float *x = read_array(f, floats);
            float *fwd = read_array(f, floats);
            float *inv = read_array(f, floats);
            check_rotation(name, (int)n, x, fwd, k, forward, "forward");
            check_rotation(name, (int)n, x, inv, k, inverse, "inverse");
            free(x);
            free(fwd);
            free(inv);
        } else {
            const size_t nbytes = (size_t)(k / n) * tq_block_bytes((int)bits, (int)n);
            float *y = kind == KIND_ENCODE ? read_array(f, floats) : NULL;
            uint8_t *blocks = read_array(f, nbytes);
            float *decoded = read_array(f, floats);
            if (y != NULL) {
                check_encoders(name, (int)bits, (int)n, y, blocks, nbytes, k);
            }
            check_decoders(name, (int)bits, (int)n, blocks, decoded, k);
            check_tiles(name, (int)bits, (int)n, blocks, k);
            free(y);
            free(blocks);
            free(decoded);
        }
        free(name);
    }
    fclose(f);
    return (int)count;
}

static uint64_t rng_state;

static uint64_t next_random(void)
{
    /* SplitMix64: any decent generator will do; this one needs no setup. */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

static void fill_random(void *dst, size_t size)
{
    uint8_t *p = dst;
    for (size_t i = 0; i < size; i++) {
        p[i] = (uint8_t)next_random();
    }
}

/* Arbitrary bytes decode the same through every path; arbitrary floats (NaN and Inf bit
 * patterns included) encode the same; bad (bits, n, k) return an error and touch nothing. */
static void fuzz(long iterations)
{
    static const int ns[] = {64, 128, 96, 0, -64};
    for (long it = 0; it < iterations; it++) {
        const int bits = 1 + (int)(next_random() % 6);
        const int n = ns[next_random() % COUNT(ns)];
        const int64_t blocks = (int64_t)(next_random() % 9);
        const int64_t k = blocks * (n > 0 ? n : 1) + ((next_random() % 4 == 0) ? 1 : 0) -
                          ((next_random() % 16 == 0) ? 3 * (int64_t)blocks + 1 : 0);
        char name[96];
        snprintf(name, sizeof name, "fuzz #%ld bits=%d n=%d k=%" PRId64, it, bits, n, k);
        const size_t nb = tq_block_bytes(bits, n);
        const int valid = nb != 0 && k >= 0 && k % n == 0;
        const size_t out_floats = k > 0 ? (size_t)k : 0;
        const size_t in_bytes = valid ? (size_t)(k / n) * nb : 16;

        uint8_t *src = xmalloc(in_bytes);
        float *ref = xmalloc(sizeof(float) * out_floats);
        float *out = xmalloc(sizeof(float) * out_floats);
        fill_random(src, in_bytes);
        for (size_t d = 0; d < COUNT(dequantizers); d++) {
            if (!valid) {
                /* A rejected call must not write: out is a single poisoned float. */
                float *guard = xmalloc(sizeof(float));
                const int rc = dequantizers[d].fn(bits, n, src, guard, k);
                if (rc >= 0) {
                    fail(name, "bad row accepted by decode", (int64_t)d);
                }
                free(guard);
                continue;
            }
            if (dequantizers[d].fn(bits, n, src, d == 0 ? ref : out, k) != TQ_OK) {
                fail(name, "decode rejected a valid row", (int64_t)d);
            } else if (d > 0) {
                const int64_t at = first_float_mismatch(out, ref, k, 0);
                if (at >= 0) {
                    fail(name, dequantizers[d].name, at);
                }
            }
        }
        if (valid) {
            float *y = xmalloc(sizeof(float) * out_floats);
            uint8_t *enc_ref = xmalloc(in_bytes);
            uint8_t *enc = xmalloc(in_bytes);
            fill_random(y, sizeof(float) * out_floats);
            for (size_t q = 0; q < COUNT(quantizers); q++) {
                if (quantizers[q].fn(bits, n, y, q == 0 ? enc_ref : enc, k) != TQ_OK) {
                    fail(name, "encode rejected a valid row", (int64_t)q);
                } else if (q > 0) {
                    const int64_t at = first_byte_mismatch(enc, enc_ref, in_bytes);
                    if (at >= 0) {
                        fail(name, quantizers[q].name, at);
                    }
                }
            }
            free(y);
            free(enc_ref);
            free(enc);
        } else {
            uint8_t *guard = xmalloc(1);
            for (size_t q = 0; q < COUNT(quantizers); q++) {
                if (quantizers[q].fn(bits, n, ref, guard, k) >= 0) {
                    fail(name, "bad row accepted by encode", (int64_t)q);
                }
            }
            free(guard);
        }
        free(src);
        free(ref);
        free(out);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: %s CASES_FILE [FUZZ_ITERATIONS [SEED]]\n", argv[0]);
        return 2;
    }
    const long iterations = argc >= 3 ? strtol(argv[2], NULL, 10) : 2000;
    rng_state = argc >= 4 ? strtoull(argv[3], NULL, 10) : 1;
    const int cases = replay(argv[1]);
    if (cases < 0) {
        return 2;
    }
    fuzz(iterations);
    printf("tq_selftest: %d cases, %ld fuzz iterations, simd path %s, %d mismatches\n", cases,
           iterations, tq_simd_path(), failures);
    return failures == 0 ? 0 : 1;
}
