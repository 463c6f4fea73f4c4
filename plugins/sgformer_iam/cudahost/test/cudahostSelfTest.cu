/*
 * cudahost self-test: CUDA semantics the SGFormerIAM kernels rely on, checked on the emulator
 * (linked into libsgformer_iam_emu.so; tests/plugins/test_iam_kernel_emu.py calls cudahost_selftest).
 * Valid CUDA as well: it would pass on a GPU.
 */
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstring>
#include <string>

namespace
{

__global__ void warpIntrinsicsKernel(unsigned int* out)
{
    unsigned int const lane = threadIdx.x & 31u;
    unsigned int const base = (threadIdx.x / 32u) * 6u * 32u;
    unsigned int const v = lane * 7u + 3u;
    out[base + 0 * 32 + lane] = __shfl_sync(0xffffffffu, v, 5);
    out[base + 1 * 32 + lane] = __shfl_up_sync(0xffffffffu, v, 3);
    out[base + 2 * 32 + lane] = __shfl_down_sync(0xffffffffu, v, 4);
    out[base + 3 * 32 + lane] = __shfl_xor_sync(0xffffffffu, v, 9);
    out[base + 4 * 32 + lane] = __ballot_sync(0xffffffffu, (lane % 3u) == 0u);
    // a value exchanged after a second collective must not be overwritten by a faster lane
    unsigned int const a = __shfl_xor_sync(0xffffffffu, v, 1);
    unsigned int const b = __shfl_xor_sync(0xffffffffu, a + 1000u, 2);
    out[base + 5 * 32 + lane] = b;
}

__global__ void blockReduceKernel(int const* in, int* out, int n)
{
    extern __shared__ int sPartial[];
    int sum = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
    {
        sum += in[blockIdx.x * n + i];
    }
    sPartial[threadIdx.x] = sum;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2)
    {
        if (static_cast<int>(threadIdx.x) < stride)
        {
            sPartial[threadIdx.x] += sPartial[threadIdx.x + stride];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0)
    {
        out[blockIdx.x] = sPartial[0];
    }
}

__global__ void staticSharedKernel(int* out)
{
    __shared__ int sValue[64];
    sValue[63 - threadIdx.x] = static_cast<int>(threadIdx.x + blockIdx.x * 100);
    __syncthreads();
    out[blockIdx.x * 64 + threadIdx.x] = sValue[threadIdx.x];
}

__global__ void divergentWarpKernel(int* out)
{
    if (threadIdx.x < 16)
    {
        out[threadIdx.x] = __shfl_sync(0xffffffffu, 1, 0); // lanes 16..31 have exited: undefined in CUDA
    }
}

__global__ void bigSharedKernel(int* out)
{
    extern __shared__ int sBig[];
    sBig[threadIdx.x] = 1;
    out[threadIdx.x] = sBig[threadIdx.x];
}

} // namespace

extern "C" __attribute__((visibility("default"))) int cudahost_selftest(char* message, int size)
{
    int failures = 0;
    std::string log;
    auto expect = [&](bool ok, char const* what) {
        if (!ok)
        {
            ++failures;
            log += std::string(what) + "; ";
        }
    };
    // 1. warp intrinsics, two warps
    unsigned int* w = nullptr;
    cudaMalloc(&w, 2 * 6 * 32 * sizeof(unsigned int));
    warpIntrinsicsKernel<<<1, 64>>>(w);
    expect(cudaGetLastError() == cudaSuccess, "warp kernel launch");
    for (unsigned int warp = 0; warp < 2; ++warp)
    {
        unsigned int const* o = w + warp * 6 * 32;
        for (unsigned int lane = 0; lane < 32; ++lane)
        {
            auto val = [](unsigned int l) { return l * 7u + 3u; };
            expect(o[lane] == val(5), "__shfl_sync");
            expect(o[32 + lane] == (lane >= 3 ? val(lane - 3) : val(lane)), "__shfl_up_sync");
            expect(o[64 + lane] == (lane + 4 < 32 ? val(lane + 4) : val(lane)), "__shfl_down_sync");
            expect(o[96 + lane] == val(lane ^ 9u), "__shfl_xor_sync");
            unsigned int ballot = 0;
            for (unsigned int l = 0; l < 32; ++l)
            {
                ballot |= (l % 3u == 0u) ? (1u << l) : 0u;
            }
            expect(o[128 + lane] == ballot, "__ballot_sync");
            expect(o[160 + lane] == val(lane ^ 3u) + 1000u, "chained __shfl_xor_sync");
        }
    }
    cudaFree(w);
    // 2. block reduction through dynamic shared memory, 3 blocks
    int host[3 * 1000];
    int* in = nullptr;
    int* out = nullptr;
    cudaMalloc(&in, sizeof(host));
    cudaMalloc(&out, 3 * sizeof(int));
    long long want[3] = {0, 0, 0};
    for (int i = 0; i < 3 * 1000; ++i)
    {
        host[i] = (i * 37) % 101 - 50;
        want[i / 1000] += host[i];
    }
    cudaMemcpy(in, host, sizeof(host), cudaMemcpyHostToDevice);
    blockReduceKernel<<<3, 128, 128 * sizeof(int)>>>(in, out, 1000);
    int got[3] = {};
    cudaMemcpy(got, out, sizeof(got), cudaMemcpyDeviceToHost);
    expect(cudaGetLastError() == cudaSuccess && got[0] == want[0] && got[1] == want[1] && got[2] == want[2],
        "block reduction with __syncthreads");
    // 3. static __shared__ per block
    int* s = nullptr;
    cudaMalloc(&s, 2 * 64 * sizeof(int));
    staticSharedKernel<<<2, 64>>>(s);
    int sh[128];
    cudaMemcpy(sh, s, sizeof(sh), cudaMemcpyDeviceToHost);
    bool okShared = true;
    for (int b = 0; b < 2; ++b)
    {
        for (int t = 0; t < 64; ++t)
        {
            okShared = okShared && sh[b * 64 + t] == (63 - t) + b * 100;
        }
    }
    expect(okShared, "static __shared__ with __syncthreads");
    // 4. a warp collective with exited lanes is reported, not silently run
    divergentWarpKernel<<<1, 32>>>(s);
    expect(cudaGetLastError() == cudaErrorLaunchFailure, "divergent warp collective must fail");
    // 5. > 48 KiB dynamic shared memory needs cudaFuncSetAttribute
    bigSharedKernel<<<1, 32, 64 << 10>>>(s);
    expect(cudaGetLastError() == cudaErrorInvalidValue, "64 KiB dynamic smem without the attribute must fail");
    cudaFuncSetAttribute(bigSharedKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 << 10);
    bigSharedKernel<<<1, 32, 64 << 10>>>(s);
    expect(cudaGetLastError() == cudaSuccess, "64 KiB dynamic smem with the attribute");
    // 6. launch configuration limits
    bigSharedKernel<<<1, 2048>>>(s);
    expect(cudaGetLastError() == cudaErrorInvalidConfiguration, "2048 threads per block must fail");
    cudaFree(in);
    cudaFree(out);
    cudaFree(s);
    if (message != nullptr && size > 0)
    {
        std::snprintf(message, static_cast<size_t>(size), "%s", log.c_str());
    }
    return failures;
}

namespace
{

//! One warp reads dynamic shared memory with a word stride (0: all lanes on word 0, a broadcast).
__global__ void bankStrideKernel(int* out, int stride)
{
    extern __shared__ int sWords[];
    sWords[threadIdx.x * stride] = static_cast<int>(threadIdx.x);
    out[threadIdx.x] = sWords[threadIdx.x * stride];
}

} // namespace

//! The bank rule on known patterns: stride 1 -> 1 wavefront per request, 2 -> 2, 32 -> 32, 33 -> 1, 0 -> 1
//! (broadcast). 0 if every figure matches, else the first failing stride + 1 (cudahost_last_message says more).
extern "C" __attribute__((visibility("default"))) int cudahost_bank_selftest(void)
{
    int const strides[] = {1, 2, 32, 33, 0};
    int const ways[] = {1, 2, 32, 1, 1};
    int* out = nullptr;
    cudaMalloc(&out, 32 * sizeof(int));
    for (int i = 0; i < 5; ++i)
    {
        cudahost::resetBankStats();
        bankStrideKernel<<<1, 32, 34 * 32 * sizeof(int)>>>(out, strides[i]);
        cudahost::detail::BankStats const st = cudahost::bankStats("bankStrideKernel");
        if (cudaGetLastError() != cudaSuccess || st.requests != 2 || st.wavefronts != 2 * ways[i] || st.maxWays != ways[i])
        {
            cudahost::detail::setError(cudaSuccess, "bank self-test, stride " + std::to_string(strides[i]) + ": "
                    + std::to_string(st.requests) + " requests, " + std::to_string(st.wavefronts) + " wavefronts, worst "
                    + std::to_string(st.maxWays) + "; expected 2 requests of " + std::to_string(ways[i]));
            cudaFree(out);
            return i + 1;
        }
    }
    cudaFree(out);
    return 0;
}
