/*
 * SGFormerIAM: math shared by the CPU host reference and the CUDA kernels.
 *
 * Everything that decides a result bit lives here, as inline __host__ __device__ functions, so the
 * host reference (sgformerIamRef.cpp) and the kernel (sgformerIamKernel.cu) cannot drift apart:
 *   - the sort key of an importance value (ties, signed zeros),
 *   - the column-major -> row-major token mapping,
 *   - which sorted positions feed which output token,
 *   - the accumulation order of the group sum and where rounding happens.
 *
 * Accumulation order (the contract that makes fp32 kernel == host reference bit-exact):
 *   acc = 0.0f
 *   for j = 0 .. k-1:  acc = fmaf(w_t[j], x_j[c], acc)     (one fused multiply-add, rounded once)
 *   out[c] = acc + b_t                                       (one fp32 add)
 *   fp16 tokens: x_j is the exact fp32 value of the half; out is rounded once to fp16 (RNE).
 * fmaf is correctly rounded on the host (C99) and on the GPU, so both sides produce the same bits.
 *
 * Built by nvcc and by a plain C++ compiler (the host reference has no CUDA dependency).
 */
#ifndef SGFORMER_IAM_MATH_H
#define SGFORMER_IAM_MATH_H

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>

#if defined(__CUDACC__)
#define SGFORMER_IAM_HD __host__ __device__ __forceinline__
#else
#define SGFORMER_IAM_HD inline
#endif

namespace sgformer
{
namespace iam
{

constexpr int32_t kMIN_TIERS = 2;
constexpr int32_t kMAX_TIERS = 3;

//! Static layout of one IAM op plus the runtime batch and channel counts.
struct SgformerIamParams
{
    int32_t batch{0};     //!< B (runtime)
    int32_t channels{0};  //!< C (runtime)
    int32_t height{0};    //!< H of the token grid
    int32_t width{0};     //!< W of the token grid
    int32_t numTokens{0}; //!< N = H * W
    int32_t numTiers{0};  //!< 2 or 3
    int32_t outTokens{0}; //!< T = sum_t tierSizes[t] / groupSizes[t]
    int32_t totalWeights{0};              //!< sum_t groupSizes[t] (length of agg_weight)
    int32_t groupSizes[kMAX_TIERS]{};     //!< k_t: sorted tokens merged into one output token
    int32_t tierSizes[kMAX_TIERS]{};      //!< sorted tokens covered by tier t
    int32_t tierStart[kMAX_TIERS]{};      //!< first sorted position of tier t
    int32_t outStart[kMAX_TIERS + 1]{};   //!< first output token of tier t; outStart[numTiers] == T
    int32_t weightOffset[kMAX_TIERS]{};   //!< offset of w_t in agg_weight
};

//! Bit pattern of a float (no aliasing tricks).
SGFORMER_IAM_HD uint32_t floatBits(float x)
{
#if defined(__CUDA_ARCH__)
    return __float_as_uint(x);
#else
    uint32_t u;
    std::memcpy(&u, &x, sizeof(u));
    return u;
#endif
}

SGFORMER_IAM_HD float bitsToFloat(uint32_t u)
{
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    float x;
    std::memcpy(&x, &u, sizeof(x));
    return x;
#endif
}

/*!
 * Unsigned key whose ascending order is the ascending order of the importance value.
 * -0.0 is mapped to +0.0 first, so the two zeros tie (and the tie is broken by index).
 * NaN: positive NaNs sort after +inf, negative NaNs before -inf (same on host and GPU; PyTorch
 * puts every NaN last, so NaN importance is outside the contract).
 */
SGFORMER_IAM_HD uint32_t importanceSortKey(float value)
{
    uint32_t u = floatBits(value);
    if ((u & 0x7fffffffu) == 0u)
    {
        u = 0u;
    }
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

//! Row-major token index (h * W + w) of the token at column-major position p = w * H + h.
SGFORMER_IAM_HD int32_t columnMajorToRowMajor(int32_t p, int32_t height, int32_t width)
{
    int32_t const w = p / height;
    int32_t const h = p - w * height;
    return h * width + w;
}

//! Row-major token index of position p of the row-major (isColumn == false) or column-major sequence.
SGFORMER_IAM_HD int32_t sequenceToToken(int32_t p, bool isColumn, int32_t height, int32_t width)
{
    return isColumn ? columnMajorToRowMajor(p, height, width) : p;
}

//! values[tier] for 0 <= tier < kMAX_TIERS, written as a fixed-bound loop so a GPU kernel that reads a
//! by-value SgformerIamParams indexes it with constants (no local-memory copy of the parameter).
SGFORMER_IAM_HD int32_t tierValue(int32_t const (&values)[kMAX_TIERS], int32_t tier)
{
    int32_t v = values[0];
    for (int32_t i = 1; i < kMAX_TIERS; ++i)
    {
        v = tier == i ? values[i] : v;
    }
    return v;
}

//! Tier of output token t (0 <= t < params.outTokens): the last tier whose first output is <= t.
SGFORMER_IAM_HD int32_t tierOfOutput(SgformerIamParams const& params, int32_t t)
{
    int32_t tier = 0;
    for (int32_t i = 1; i < kMAX_TIERS; ++i)
    {
        tier = (i < params.numTiers && t >= params.outStart[i]) ? i : tier;
    }
    return tier;
}

//! First sorted position of the group that forms output token t of tier `tier`.
SGFORMER_IAM_HD int32_t groupFirstSorted(SgformerIamParams const& params, int32_t tier, int32_t t)
{
    int32_t outStart = params.outStart[0];
    for (int32_t i = 1; i < kMAX_TIERS; ++i)
    {
        outStart = tier == i ? params.outStart[i] : outStart;
    }
    return tierValue(params.tierStart, tier) + (t - outStart) * tierValue(params.groupSizes, tier);
}

//! One step of the group sum, in the order j = 0 .. k-1 (see the file comment).
SGFORMER_IAM_HD float accumulateStep(float acc, float weight, float x)
{
    return fmaf(weight, x, acc);
}

//! Output value of a group: its sum plus the tier bias, one fp32 add.
SGFORMER_IAM_HD float finishGroup(float acc, float bias)
{
    return acc + bias;
}

//! IEEE half bits -> float (exact). Host-side twin of __half2float.
SGFORMER_IAM_HD float halfBitsToFloat(uint16_t h)
{
    uint32_t const sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    uint32_t const exponent = (h >> 10) & 0x1fu;
    uint32_t const mantissa = h & 0x3ffu;
    if (exponent == 0x1fu)
    {
        return bitsToFloat(sign | 0x7f800000u | (mantissa << 13));
    }
    if (exponent == 0u)
    {
        // Zero or subnormal: mantissa * 2^-24, exact in fp32.
        float const magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
        return sign ? -magnitude : magnitude;
    }
    return bitsToFloat(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

//! float -> IEEE half bits, round to nearest even. Host-side twin of __float2half_rn (NaN payloads may differ).
SGFORMER_IAM_HD uint16_t floatToHalfBits(float value)
{
    uint32_t const u = floatBits(value);
    uint32_t const sign = (u >> 16) & 0x8000u;
    uint32_t const a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
    {
        return static_cast<uint16_t>(sign | 0x7e00u); // NaN
    }
    if (a >= 0x477ff000u)
    {
        return static_cast<uint16_t>(sign | 0x7c00u); // >= 65520 rounds to infinity
    }
    if (a >= 0x38800000u)
    {
        // Normal half: rebias the exponent, round the 13 dropped mantissa bits.
        uint32_t h = (((a >> 23) - 112u) << 10) | ((a >> 13) & 0x3ffu);
        uint32_t const rest = a & 0x1fffu;
        if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
        {
            ++h; // a carry into the exponent is the correct result
        }
        return static_cast<uint16_t>(sign | h);
    }
    if (a < 0x33000000u)
    {
        return static_cast<uint16_t>(sign); // below half the smallest subnormal: +-0
    }
    // Subnormal half: value / 2^-24 with round to nearest even.
    uint32_t const mantissa = (a & 0x7fffffu) | 0x800000u;
    uint32_t const shift = 126u - (a >> 23); // 14 .. 24
    uint32_t h = mantissa >> shift;
    uint32_t const rest = mantissa & ((1u << shift) - 1u);
    uint32_t const halfway = 1u << (shift - 1u);
    if (rest > halfway || (rest == halfway && (h & 1u)))
    {
        ++h;
    }
    return static_cast<uint16_t>(sign | h);
}

/*!
 * Validate a layout and fill the static part of `params` (batch and channels are left as they are).
 * Returns 0 on success; otherwise writes a message naming the field into `msg` and returns -1.
 * Host only.
 */
inline int32_t makeIamParams(int32_t height, int32_t width, int32_t const* groupSizes, int32_t const* tierSizes,
    int32_t numTiers, SgformerIamParams& params, char* msg, size_t msgSize)
{
    auto fail = [&](char const* fmt, auto... args) {
        if (msg != nullptr && msgSize > 0)
        {
            std::snprintf(msg, msgSize, fmt, static_cast<long long>(args)...);
        }
        return int32_t{-1};
    };
    if (height <= 0 || width <= 0)
    {
        return fail("SGFormerIAM: fields height=%lld and width=%lld must be positive", height, width);
    }
    long long const n = static_cast<long long>(height) * width;
    if (n > 0x3fffffffLL)
    {
        return fail("SGFormerIAM: fields height*width=%lld exceed the supported token count %lld", n, 0x3fffffffLL);
    }
    if (numTiers < kMIN_TIERS || numTiers > kMAX_TIERS)
    {
        return fail("SGFormerIAM: fields group_sizes/tier_sizes have %lld entries; expected %lld or %lld", numTiers,
            kMIN_TIERS, kMAX_TIERS);
    }
    if (groupSizes == nullptr || tierSizes == nullptr)
    {
        return fail("SGFormerIAM: fields group_sizes/tier_sizes are missing (null: %lld, %lld)",
            groupSizes == nullptr, tierSizes == nullptr);
    }
    long long sorted = 0;
    long long out = 0;
    long long weights = 0;
    for (int32_t t = 0; t < numTiers; ++t)
    {
        if (groupSizes[t] <= 0)
        {
            return fail("SGFormerIAM: field group_sizes[%lld]=%lld must be positive", t, groupSizes[t]);
        }
        if (tierSizes[t] <= 0 || tierSizes[t] % groupSizes[t] != 0)
        {
            return fail("SGFormerIAM: field tier_sizes[%lld]=%lld must be a positive multiple of group_sizes[%lld]=%lld",
                t, tierSizes[t], t, groupSizes[t]);
        }
        params.groupSizes[t] = groupSizes[t];
        params.tierSizes[t] = tierSizes[t];
        params.tierStart[t] = static_cast<int32_t>(sorted);
        params.outStart[t] = static_cast<int32_t>(out);
        params.weightOffset[t] = static_cast<int32_t>(weights);
        sorted += tierSizes[t];
        out += tierSizes[t] / groupSizes[t];
        weights += groupSizes[t];
        if (sorted > n)
        {
            break;
        }
    }
    if (sorted != n)
    {
        return fail("SGFormerIAM: field tier_sizes sums to %lld but height*width is %lld", sorted, n);
    }
    for (int32_t t = numTiers; t < kMAX_TIERS; ++t)
    {
        params.groupSizes[t] = 0;
        params.tierSizes[t] = 0;
        params.tierStart[t] = static_cast<int32_t>(n);
        params.weightOffset[t] = static_cast<int32_t>(weights);
    }
    params.height = height;
    params.width = width;
    params.numTokens = static_cast<int32_t>(n);
    params.numTiers = numTiers;
    params.outTokens = static_cast<int32_t>(out);
    for (int32_t t = numTiers; t <= kMAX_TIERS; ++t)
    {
        params.outStart[t] = static_cast<int32_t>(out);
    }
    params.totalWeights = static_cast<int32_t>(weights);
    return 0;
}

} // namespace iam
} // namespace sgformer

#endif // SGFORMER_IAM_MATH_H
