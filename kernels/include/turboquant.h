/*
 * TurboQuant KV-cache block formats: public C API of libturboquant.
 *
 * The format (rotation, codebooks, quantizer, byte layout) is defined by docs/format-contract.md
 * and reference/SPEC.md; this library computes exactly what the numpy reference in reference/
 * computes, bit for bit, which `nox -s parity` checks on every build.
 *
 * All functions are single-threaded (the caller splits rows across threads), allocate nothing
 * and keep no state beyond read-only tables, so they are safe to call from any thread.
 */
#ifndef TURBOQUANT_H
#define TURBOQUANT_H

#include <stddef.h>
#include <stdint.h>

/* The library is built with hidden visibility; only this API is exported. */
#if defined(TQ_BUILDING) && (defined(__GNUC__) || defined(__clang__))
#define TQ_API __attribute__((visibility("default")))
#else
#define TQ_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

enum tq_format { TQ_TURBO2 = 2, TQ_TURBO3 = 3, TQ_TURBO4 = 4, TQ_TURBO5 = 5 };

/* Return codes. A row call either processes every block or touches no memory at all. */
enum tq_status {
    TQ_OK = 0,
    TQ_ERR_FORMAT = -1, /* (bits, n) is not one of the supported formats */
    TQ_ERR_LENGTH = -2  /* k is negative or not a multiple of n */
};

#define TQ_MAX_BLOCK 128
#define TQ_MAX_BITS 5

/* Bytes of one block of n values at `bits` bits; 0 for an unsupported pair. */
TQ_API size_t tq_block_bytes(int bits, int n);

/*
 * Encode k floats (k/n rotated blocks) into k/n blocks of tq_block_bytes(bits, n) bytes.
 * Dispatches to the SIMD path when the CPU has one; the _scalar and _simd variants are
 * exported so that parity can compare them (_simd falls back to scalar where no SIMD path
 * was compiled or the CPU lacks it; tq_simd_path() says which one runs).
 */
TQ_API int tq_quantize_row(int bits, int n, const float *y, void *dst, int64_t k);
TQ_API int tq_quantize_row_scalar(int bits, int n, const float *y, void *dst, int64_t k);
TQ_API int tq_quantize_row_simd(int bits, int n, const float *y, void *dst, int64_t k);

/* Decode k/n blocks into k floats, left in the rotated domain. Any input bytes are valid. */
TQ_API int tq_dequantize_row(int bits, int n, const void *src, float *y, int64_t k);
TQ_API int tq_dequantize_row_scalar(int bits, int n, const void *src, float *y, int64_t k);
TQ_API int tq_dequantize_row_simd(int bits, int n, const void *src, float *y, int64_t k);

/*
 * nrows rows of k values, row r read from src + r * src_stride bytes (a strided view, such as
 * one head of a KV cache) and written to y + r * k. The same floats as tq_dequantize_row on
 * each row; the checks and the path choice happen once, which is most of the cost of a row
 * of 64 or 128 values.
 */
TQ_API int tq_dequantize_rows(int bits, int n, const void *src, size_t src_stride, float *y,
                              int64_t k, int64_t nrows);

/*
 * *out = dot(decode(x), y) for k/n blocks of x and k floats of y: how a turbo K cache is read
 * against a float query. Not part of the format contract (the float summation order is the
 * library's own), but every path sums in that one order, so _scalar and _simd agree bit for
 * bit (the SIMD path fuses decode and dot instead of going through a buffer).
 */
TQ_API int tq_vec_dot_f32(int bits, int n, const void *x, const float *y, int64_t k, float *out);
TQ_API int tq_vec_dot_f32_scalar(int bits, int n, const void *x, const float *y, int64_t k,
                                 float *out);
TQ_API int tq_vec_dot_f32_simd(int bits, int n, const void *x, const float *y, int64_t k,
                               float *out);

/*
 * How flash attention's decode reads a tile of a turbo KV cache for the query heads of one
 * KV head (GQA) together: every row is decoded once for all nq queries. A tile is nrows rows
 * of k values, row r at src + r * src_stride bytes (one head of a KV cache).
 *
 * tq_vec_dot_rows_f32: out[j * nrows + r] = dot(decode(row r), q + j * k), each dot summed
 * in tq_vec_dot_f32's order, so it equals tq_vec_dot_f32 on that row bit for bit (K * Q).
 *
 * tq_vec_mad_rows_f32: acc[j * k + i] += w[j * nrows + r] * decode(row r)[i] for r in order,
 * skipping rows whose weight is 0 (a masked row adds nothing, not 0 * inf), one float multiply
 * then one add per value, no fused multiply-add: every path agrees bit for bit (P * V).
 *
 * Both return TQ_ERR_LENGTH for nrows < 0 or nq < 1 as well.
 */
TQ_API int tq_vec_dot_rows_f32(int bits, int n, const void *src, size_t src_stride, int64_t nrows,
                               const float *q, int nq, int64_t k, float *out);
TQ_API int tq_vec_dot_rows_f32_scalar(int bits, int n, const void *src, size_t src_stride,
                                      int64_t nrows, const float *q, int nq, int64_t k, float *out);
TQ_API int tq_vec_dot_rows_f32_simd(int bits, int n, const void *src, size_t src_stride,
                                    int64_t nrows, const float *q, int nq, int64_t k, float *out);
TQ_API int tq_vec_mad_rows_f32(int bits, int n, const void *src, size_t src_stride, int64_t nrows,
                               const float *w, int nq, int64_t k, float *acc);
TQ_API int tq_vec_mad_rows_f32_scalar(int bits, int n, const void *src, size_t src_stride,
                                      int64_t nrows, const float *w, int nq, int64_t k, float *acc);
TQ_API int tq_vec_mad_rows_f32_simd(int bits, int n, const void *src, size_t src_stride,
                                    int64_t nrows, const float *w, int nq, int64_t k, float *acc);

/*
 * In-place randomized Walsh-Hadamard rotation of k/n consecutive blocks of n (64 or 128)
 * floats. Returns TQ_OK, or an error code without touching x.
 */
TQ_API int tq_rotate_forward(int n, float *x, int64_t k);
TQ_API int tq_rotate_inverse(int n, float *x, int64_t k);
TQ_API int tq_rotate_forward_scalar(int n, float *x, int64_t k);
TQ_API int tq_rotate_inverse_scalar(int n, float *x, int64_t k);
TQ_API int tq_rotate_forward_simd(int n, float *x, int64_t k);
TQ_API int tq_rotate_inverse_simd(int n, float *x, int64_t k);

/*
 * Diagnostics: split k/n blocks into one index byte per value (k bytes) and the fp16 bit
 * pattern of each block's scale (k/n values).
 */
TQ_API int tq_unpack_indices(int bits, int n, const void *src, uint8_t *indices, uint16_t *d_bits,
                      int64_t k);

/* The generated codebook of a format: 2^bits float levels, 2^bits - 1 double midpoints. */
TQ_API const float *tq_levels(int bits, int n);
TQ_API const double *tq_midpoints(int bits, int n);

/* fp16 conversions of the format: float -> fp16 rounds to nearest even and saturates at
 * +-65504 (+-Inf included: the quantizer's Inf only comes from a finite scale beyond float);
 * NaN stays NaN. fp16 -> float is exact, NaN payloads kept. */
TQ_API uint16_t tq_fp16_from_float(float f);
TQ_API float tq_fp16_to_float(uint16_t h);

/* Name of the path the dispatching functions use: "avx2", "neon" or "scalar". */
TQ_API const char *tq_simd_path(void);

#ifdef __cplusplus
}
#endif

#endif /* TURBOQUANT_H */
