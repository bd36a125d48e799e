/* Public entry points: validate (bits, n, k) once, then run the scalar or SIMD path. */
#include "tq_internal.h"

typedef void (*quantize_fn)(const struct tq_codebook *, const float *, uint8_t *, int64_t);
typedef void (*dequantize_fn)(const struct tq_codebook *, const uint8_t *, float *, int64_t);
typedef void (*rotate_fn)(int, float *, int64_t, int);
typedef void (*dot_fn)(const struct tq_codebook *, const uint8_t *, const float *, int64_t,
                       float *);
typedef void (*rows_fn)(const struct tq_codebook *, const struct tq_tile *, const float *, int,
                        float *);

/* dot, dot_rows, mad_rows NULL: decode into a buffer with this path's dequantize, then the
 * float arithmetic of tq_dot.c. */
struct simd_path {
    const char *name;
    quantize_fn quantize;
    dequantize_fn dequantize;
    rotate_fn rotate;
    dot_fn dot;
    rows_fn dot_rows;
    rows_fn mad_rows;
};

static const struct simd_path scalar_path = {"scalar",
                                             tq_quantize_blocks_scalar,
                                             tq_dequantize_blocks_scalar,
                                             tq_rotate_blocks_scalar,
                                             NULL,
                                             NULL,
                                             NULL};

/* Chosen on every call rather than cached: the check is a load and a test, and a cache would
 * be mutable global state shared by threads. */
static const struct simd_path *simd(void)
{
#if defined(TQ_HAVE_AVX2)
    static const struct simd_path avx2 = {"avx2",
                                          tq_quantize_blocks_avx2,
                                          tq_dequantize_blocks_avx2,
                                          tq_rotate_blocks_avx2,
                                          tq_dot_blocks_avx2,
                                          tq_dot_rows_avx2,
                                          tq_mad_rows_avx2};
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        return &avx2;
    }
#elif defined(TQ_HAVE_NEON)
    static const struct simd_path neon = {"neon",
                                          tq_quantize_blocks_neon,
                                          tq_dequantize_blocks_neon,
                                          tq_rotate_blocks_neon,
                                          NULL,
                                          NULL,
                                          NULL};
    return &neon;
#endif
    return &scalar_path;
}

size_t tq_block_bytes(int bits, int n)
{
    const struct tq_codebook *cb = tq_codebook_get(bits, n);
    return cb == NULL ? 0 : tq_block_size(cb);
}

const char *tq_simd_path(void) { return simd()->name; }

static int check_row(int bits, int n, int64_t k, const struct tq_codebook **cb)
{
    *cb = tq_codebook_get(bits, n);
    if (*cb == NULL) {
        return TQ_ERR_FORMAT;
    }
    if (k < 0 || k % n != 0) {
        return TQ_ERR_LENGTH;
    }
    return TQ_OK;
}

static int quantize(const struct simd_path *path, int bits, int n, const float *y, void *dst,
                    int64_t k)
{
    const struct tq_codebook *cb;
    const int rc = check_row(bits, n, k, &cb);
    if (rc == TQ_OK) {
        path->quantize(cb, y, dst, k / n);
    }
    return rc;
}

static int dequantize(const struct simd_path *path, int bits, int n, const void *src, float *y,
                      int64_t k)
{
    const struct tq_codebook *cb;
    const int rc = check_row(bits, n, k, &cb);
    if (rc == TQ_OK) {
        path->dequantize(cb, src, y, k / n);
    }
    return rc;
}

static int vec_dot(const struct simd_path *path, int bits, int n, const void *x, const float *y,
                   int64_t k, float *out)
{
    const struct tq_codebook *cb;
    const int rc = check_row(bits, n, k, &cb);
    if (rc == TQ_OK) {
        if (path->dot != NULL) {
            path->dot(cb, x, y, k / n, out);
        } else {
            tq_dot_blocks_decoded(path->dequantize, cb, x, y, k / n, out);
        }
    }
    return rc;
}

/* A tile of rows against nq queries (dot) or weights (mad): checked once for all rows. */
static int rows(const struct simd_path *path, int mad, int bits, int n, const void *src,
                size_t src_stride, int64_t nrows, const float *qw, int nq, int64_t k, float *out)
{
    const struct tq_codebook *cb;
    const int rc = check_row(bits, n, k, &cb);
    if (rc != TQ_OK) {
        return rc;
    }
    if (nrows < 0 || nq < 1) {
        return TQ_ERR_LENGTH;
    }
    const struct tq_tile t = {(const uint8_t *)src, src_stride, nrows, k / n};
    const rows_fn fast = mad ? path->mad_rows : path->dot_rows;
    if (fast != NULL) {
        fast(cb, &t, qw, nq, out);
    } else if (mad) {
        tq_mad_rows_decoded(path->dequantize, cb, &t, qw, nq, out);
    } else {
        tq_dot_rows_decoded(path->dequantize, cb, &t, qw, nq, out);
    }
    return TQ_OK;
}

int tq_vec_dot_rows_f32(int bits, int n, const void *src, size_t src_stride, int64_t nrows,
                        const float *q, int nq, int64_t k, float *out)
{
    return rows(simd(), 0, bits, n, src, src_stride, nrows, q, nq, k, out);
}

int tq_vec_dot_rows_f32_scalar(int bits, int n, const void *src, size_t src_stride, int64_t nrows,
                               const float *q, int nq, int64_t k, float *out)
{
    return rows(&scalar_path, 0, bits, n, src, src_stride, nrows, q, nq, k, out);
}

int tq_vec_dot_rows_f32_simd(int bits, int n, const void *src, size_t src_stride, int64_t nrows,
                             const float *q, int nq, int64_t k, float *out)
{
    return rows(simd(), 0, bits, n, src, src_stride, nrows, q, nq, k, out);
}

int tq_vec_mad_rows_f32(int bits, int n, const void *src, size_t src_stride, int64_t nrows,
                        const float *w, int nq, int64_t k, float *acc)
{
    return rows(simd(), 1, bits, n, src, src_stride, nrows, w, nq, k, acc);
}

int tq_vec_mad_rows_f32_scalar(int bits, int n, const void *src, size_t src_stride, int64_t nrows,
                               const float *w, int nq, int64_t k, float *acc)
{
    return rows(&scalar_path, 1, bits, n, src, src_stride, nrows, w, nq, k, acc);
}

int tq_vec_mad_rows_f32_simd(int bits, int n, const void *src, size_t src_stride, int64_t nrows,
                             const float *w, int nq, int64_t k, float *acc)
{
    return rows(simd(), 1, bits, n, src, src_stride, nrows, w, nq, k, acc);
}

static int rotate(const struct simd_path *path, int n, float *x, int64_t k, int inverse)
{
    if (n != 64 && n != 128) {
        return TQ_ERR_FORMAT;
    }
    if (k < 0 || k % n != 0) {
        return TQ_ERR_LENGTH;
    }
    path->rotate(n, x, k / n, inverse);
    return TQ_OK;
}

int tq_quantize_row(int bits, int n, const float *y, void *dst, int64_t k)
{
    return quantize(simd(), bits, n, y, dst, k);
}

int tq_quantize_row_scalar(int bits, int n, const float *y, void *dst, int64_t k)
{
    return quantize(&scalar_path, bits, n, y, dst, k);
}

int tq_quantize_row_simd(int bits, int n, const float *y, void *dst, int64_t k)
{
    return quantize(simd(), bits, n, y, dst, k);
}

int tq_dequantize_row(int bits, int n, const void *src, float *y, int64_t k)
{
    return dequantize(simd(), bits, n, src, y, k);
}

int tq_dequantize_rows(int bits, int n, const void *src, size_t src_stride, float *y, int64_t k,
                       int64_t nrows)
{
    const struct simd_path *path = simd();
    const struct tq_codebook *cb;
    const int rc = check_row(bits, n, k, &cb);
    if (rc != TQ_OK) {
        return rc;
    }
    if (nrows < 0) {
        return TQ_ERR_LENGTH;
    }
    for (int64_t r = 0; r < nrows; r++) {
        path->dequantize(cb, (const uint8_t *)src + (size_t)r * src_stride, y + r * k, k / n);
    }
    return TQ_OK;
}

int tq_dequantize_row_scalar(int bits, int n, const void *src, float *y, int64_t k)
{
    return dequantize(&scalar_path, bits, n, src, y, k);
}

int tq_dequantize_row_simd(int bits, int n, const void *src, float *y, int64_t k)
{
    return dequantize(simd(), bits, n, src, y, k);
}

int tq_vec_dot_f32(int bits, int n, const void *x, const float *y, int64_t k, float *out)
{
    return vec_dot(simd(), bits, n, x, y, k, out);
}

int tq_vec_dot_f32_scalar(int bits, int n, const void *x, const float *y, int64_t k, float *out)
{
    return vec_dot(&scalar_path, bits, n, x, y, k, out);
}

int tq_vec_dot_f32_simd(int bits, int n, const void *x, const float *y, int64_t k, float *out)
{
    return vec_dot(simd(), bits, n, x, y, k, out);
}

int tq_rotate_forward(int n, float *x, int64_t k) { return rotate(simd(), n, x, k, 0); }
int tq_rotate_inverse(int n, float *x, int64_t k) { return rotate(simd(), n, x, k, 1); }
int tq_rotate_forward_simd(int n, float *x, int64_t k) { return rotate(simd(), n, x, k, 0); }
int tq_rotate_inverse_simd(int n, float *x, int64_t k) { return rotate(simd(), n, x, k, 1); }

int tq_rotate_forward_scalar(int n, float *x, int64_t k)
{
    return rotate(&scalar_path, n, x, k, 0);
}

int tq_rotate_inverse_scalar(int n, float *x, int64_t k)
{
    return rotate(&scalar_path, n, x, k, 1);
}

const float *tq_levels(int bits, int n)
{
    const struct tq_codebook *cb = tq_codebook_get(bits, n);
    return cb == NULL ? NULL : cb->levels;
}

const double *tq_midpoints(int bits, int n)
{
    const struct tq_codebook *cb = tq_codebook_get(bits, n);
    return cb == NULL ? NULL : cb->mid;
}
