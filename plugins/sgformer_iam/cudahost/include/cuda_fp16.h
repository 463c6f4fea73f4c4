/*
 * cudahost stand-in for <cuda_fp16.h>: __half as IEEE binary16 bits. The conversions use the
 * compiler's _Float16 (correctly rounded, round to nearest even), deliberately not the project's
 * sgformerIamMath.h twins, so the emulated kernel checks those against an independent conversion.
 */
#ifndef CUDAHOST_CUDA_FP16_H
#define CUDAHOST_CUDA_FP16_H
#include "../cudahost.h"

#if !defined(__FLT16_MAX__)
#error "cudahost: the compiler has no _Float16 (needs GCC >= 12 on x86-64 or aarch64)"
#endif

struct __half
{
    unsigned short __x;
};

inline float __half2float(__half h)
{
    _Float16 f;
    std::memcpy(&f, &h.__x, sizeof(f));
    return static_cast<float>(f);
}

inline __half __float2half_rn(float x)
{
    _Float16 const f = static_cast<_Float16>(x);
    __half h;
    std::memcpy(&h.__x, &f, sizeof(f));
    return h;
}

inline __half __float2half(float x)
{
    return __float2half_rn(x);
}

inline unsigned short __half_as_ushort(__half h)
{
    return h.__x;
}

inline __half __ushort_as_half(unsigned short u)
{
    return __half{u};
}

#endif
