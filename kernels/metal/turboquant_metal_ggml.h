/*
 * The turbo block types and the function shapes ggml's Metal kernel templates take
 * (kernels/quantize.metal, fa_aux.metal, fa_vec_common.metal of ggml-metal):
 *
 *   quantize_turbo<B, N>(src, dst)            set_rows and cpy from f32: one block
 *   dequantize_turbo<B, N>(blk, il, reg4x4)   get_rows, cpy, f16 conversion: values 16*il..
 *   dequantize_turbo_t4<B, N>(blk, il, reg4)  flash-attention vec kernels: values 4*il..
 *
 * A block is plain bytes (2 bytes of fp16 scale, then the index planes), so its struct has
 * byte alignment and the kernels can step over blocks of 34..82 bytes with pointer math.
 * Compiled by the Metal compiler inside ggml's library and, through shim/metal_shim.h, as
 * C++17 by `nox -s parity`, which checks these exact functions against the reference.
 */
#ifndef TURBOQUANT_METAL_GGML_H
#define TURBOQUANT_METAL_GGML_H

#include "turboquant_metal.h"

template <int B, int N> struct block_tq {
    uchar qs[2 + N * B / 8];
};

typedef block_tq<2, 128> block_turbo2;
typedef block_tq<3, 128> block_turbo3;
typedef block_tq<4, 128> block_turbo4;
typedef block_tq<5, 128> block_turbo5;
typedef block_tq<2, 64> block_turbo2_64;
typedef block_tq<3, 64> block_turbo3_64;
typedef block_tq<4, 64> block_turbo4_64;
typedef block_tq<5, 64> block_turbo5_64;

template <int B, int N> void quantize_turbo(device const float *src, device block_tq<B, N> &dst)
{
    tq_quantize_block(src, B, N, dst.qs);
}

template <int B, int N, typename type4x4>
void dequantize_turbo(device const block_tq<B, N> *xb, short il, thread type4x4 &reg)
{
    float v[16];
    tq_dequantize_16(xb->qs, B, N, il, v);
    for (short i = 0; i < 16; i++) {
        reg[i / 4][i % 4] = v[i];
    }
}

template <int B, int N, typename type4>
void dequantize_turbo_t4(device const block_tq<B, N> *xb, short il, thread type4 &reg)
{
    float v[4];
    tq_dequantize_4(xb->qs, B, N, il, v);
    reg = type4(float4(v[0], v[1], v[2], v[3]));
}

#endif /* TURBOQUANT_METAL_GGML_H */
