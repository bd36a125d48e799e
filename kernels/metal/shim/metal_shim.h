/*
 * Just enough of the Metal Shading Language for turboquant_metal.h to compile as C++17 on
 * a host without Metal. Anything the header uses that is not defined here fails to compile,
 * which keeps the header inside the subset both compilers accept.
 */
#ifndef TURBOQUANT_METAL_SHIM_H
#define TURBOQUANT_METAL_SHIM_H

#include <stdint.h>
#include <string.h>

#include <type_traits>

#define TQ_METAL_SHIM 1

/* Address spaces only matter to the GPU compiler. */
#define device
#define constant
#define thread
#define threadgroup

typedef uint8_t uchar;
typedef uint16_t ushort;
typedef uint32_t uint;
typedef uint64_t ulong;

/* Metal's bit cast. */
template <typename To, typename From> inline To as_type(From from)
{
    static_assert(sizeof(To) == sizeof(From), "as_type needs equal sizes");
    static_assert(std::is_trivially_copyable<From>::value, "as_type needs plain data");
    To to;
    memcpy(&to, &from, sizeof to);
    return to;
}

/* clz of Metal: 32 for zero. */
inline uint clz(uint x) { return x == 0u ? 32u : (uint)__builtin_clz(x); }

/* IEEE binary16 storage with Metal's exact widening to float (NaN payloads kept). */
struct half {
    ushort bits;

    operator float() const
    {
        const uint sign = (uint)(bits & 0x8000u) << 16;
        const uint exp = (bits >> 10) & 0x1Fu;
        uint mant = bits & 0x3FFu;
        uint f;
        if (exp == 0x1Fu) {
            f = sign | 0x7F800000u | (mant << 13);
        } else if (exp != 0u) {
            f = sign | ((exp + 112u) << 23) | (mant << 13);
        } else if (mant == 0u) {
            f = sign;
        } else {
            uint e = 113u;
            while ((mant & 0x400u) == 0u) {
                mant <<= 1;
                e--;
            }
            f = sign | (e << 23) | ((mant & 0x3FFu) << 13);
        }
        return as_type<float>(f);
    }
};
static_assert(sizeof(half) == 2, "half must be two bytes");

/* float4 and float4x4 (four float4 columns), with the indexing and constructors the ggml
 * adapters use. Half vectors are left out: the shim checks the float path, and a half
 * conversion on the GPU rounds the same float. */
struct float4 {
    float v[4];

    float4() : v{0.0f, 0.0f, 0.0f, 0.0f} {}
    float4(float x, float y, float z, float w) : v{x, y, z, w} {}
    float &operator[](int i) { return v[i]; }
    float operator[](int i) const { return v[i]; }
};

struct float4x4 {
    float4 c[4];

    float4 &operator[](int i) { return c[i]; }
    const float4 &operator[](int i) const { return c[i]; }
};

#endif /* TURBOQUANT_METAL_SHIM_H */
