// tq_fa_bench: the flash-attention decode kernel alone, timed on the GPU. One decode step
// (1 query, 16 query heads / 8 KV heads, GQA 2, head 128: the shape of issue 10's speed
// model) over NKV random K/V rows (scales 1.0-1.5, random index bits), launched with the
// grid launch_fattn picks on an H200 for that shape (P = 66 parallel blocks by default) and
// the output rotation (ROT); prints the best and mean microseconds per launch over 5 runs of
// 200 back-to-back launches for turbo3, turbo4, q8_0-K/turbo3-V and turbo5-K/turbo3-V. No
// combine kernel, no graph: it isolates the kernel for A/B runs of variants built side by
// side (docs/measurements.md, 2026-12-01), where llama-bench rebuilds all of ggml-cuda.
//
// Build (nvcc links cudart statically, so the binary runs on a GPU machine without a
// toolkit), from a patched llama.cpp tree such as build/llama.cpp:
//   nvcc -std=c++17 -arch=sm_90 -O3 --use_fast_math -extended-lambda -Iggml/include \
//     -Iggml/src -Iggml/src/ggml-cuda -I<repo>/kernels/cuda -I<cuBLAS headers> \
//     -DGGML_USE_CUDA -DNDEBUG <repo>/kernels/cuda/tools/tq_fa_bench.cu -o tq_fa_bench
// Run: tq_fa_bench [NKV=32768] [P=66]
#include "common.cuh"
#include "fattn-common.cuh"
#include "turbo.cuh"
#include "turboquant_cuda_fattn.cuh"
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <random>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); exit(1); } } while (0)

template <int D, ggml_type TK, ggml_type TV>
static void bench(const char * name, int nkv, int P, int iters) {
    typedef tq_fa_staged<TK> SK;
    typedef tq_fa_staged<TV> SV;
    const int nh = 16, nhkv = 8;
    const int rbK = (D / SK::QK) * SK::NB, rbV = (D / SV::QK) * SV::NB;
    std::mt19937 rng(1);
    auto fill = [&](std::vector<uint8_t> & v, int nb) {
        for (auto & b : v) b = rng() & 0xFF;
        for (size_t o = 0; o + nb <= v.size(); o += nb) { uint16_t h = 0x3C00 | (rng() & 0x1FF); memcpy(&v[o], &h, 2); }
    };
    std::vector<uint8_t> hK((size_t) nkv * nhkv * rbK), hV((size_t) nkv * nhkv * rbV);
    fill(hK, SK::NB); fill(hV, SV::NB);
    std::vector<float> hQ(D * nh);
    for (auto & x : hQ) x = (rng() % 2001) / 1000.0f - 1.0f;
    std::vector<uint16_t> hM(nkv, 0);
    char *dQ, *dK, *dV, *dM; float * dO; float2 * dMeta;
    CK(cudaMalloc(&dQ, hQ.size() * 4)); CK(cudaMalloc(&dK, hK.size())); CK(cudaMalloc(&dV, hV.size()));
    CK(cudaMalloc(&dM, nkv * 2)); CK(cudaMalloc(&dO, (size_t) nh * P * D * 4)); CK(cudaMalloc(&dMeta, (size_t) nh * P * 8));
    CK(cudaMemcpy(dQ, hQ.data(), hQ.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dK, hK.data(), hK.size(), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dV, hV.data(), hV.size(), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dM, hM.data(), nkv * 2, cudaMemcpyHostToDevice));
    auto kernel = tq_flash_attn_ext_mma<D, 2, TK, TV, true>;
    const size_t smem = tq_fa_mma_smem<D, TK, TV>();
    CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int) smem));
    const dim3 grid(1, P, nhkv), block(32, 4);
    const uint3 ne01 = init_fastdiv_values(1);
    auto launch = [&]() {
        kernel<<<grid, block, smem>>>(dQ, dK, dV, dM, nullptr, nullptr, dO, dMeta, 1.0f / sqrtf((float) D), 0.0f, 1.0f, 1.0f, 16u, 0.0f,
            D, ne01, nh, 1, D * 4 * nh, D * 4, D * 4 * nh,
            D, nkv, nhkv, 1, nhkv * rbK, rbK, (int64_t) nkv * nhkv * rbK,
            nhkv * rbV, rbV, (int64_t) nkv * nhkv * rbV,
            1, 1, 1, nkv * 2, nkv * 2, (int64_t) nkv * 2);
    };
    for (int i = 0; i < 20; i++) launch();
    CK(cudaDeviceSynchronize());
    cudaEvent_t e0, e1; CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
    float best = 1e30f, tot = 0.0f;
    for (int rep = 0; rep < 5; rep++) {
        CK(cudaEventRecord(e0));
        for (int i = 0; i < iters; i++) launch();
        CK(cudaEventRecord(e1)); CK(cudaEventSynchronize(e1));
        float ms; CK(cudaEventElapsedTime(&ms, e0, e1));
        const float us = 1000.0f * ms / iters; best = fminf(best, us); tot += us;
    }
    std::vector<float> hO((size_t) nh * P * D);
    CK(cudaMemcpy(hO.data(), dO, hO.size() * 4, cudaMemcpyDeviceToHost));
    double cs = 0; for (float x : hO) cs += x;
    printf("%-14s nkv %6d P %3d: best %7.2f us  mean %7.2f us  (checksum %.6e)\n", name, nkv, P, best, tot / 5, cs);
    cudaFree(dQ); cudaFree(dK); cudaFree(dV); cudaFree(dM); cudaFree(dO); cudaFree(dMeta);
}

int main(int argc, char ** argv) {
    const int nkv = argc > 1 ? atoi(argv[1]) : 32768;
    const int P = argc > 2 ? atoi(argv[2]) : 66;
    bench<128, GGML_TYPE_TURBO3, GGML_TYPE_TURBO3>("turbo3", nkv, P, 200);
    bench<128, GGML_TYPE_TURBO4, GGML_TYPE_TURBO4>("turbo4", nkv, P, 200);
    bench<128, GGML_TYPE_Q8_0, GGML_TYPE_TURBO3>("q8_0/turbo3", nkv, P, 200);
    bench<128, GGML_TYPE_TURBO5, GGML_TYPE_TURBO3>("turbo5/turbo3", nkv, P, 200);
    return 0;
}
