/*
 * cudahost: run CUDA C++ sources on the CPU with a plain C++17 compiler (g++), for CI without a GPU.
 *
 * Usage (cudahost/README.md): translate the .cu with cu2host.py (rewrites `k<<<cfg>>>(args)` launches
 * and `extern __shared__ T name[];` declarations, the two constructs C++ cannot express; nothing else
 * changes and #line keeps the original file and line numbers), then compile it with
 *   g++ -std=c++17 -include cudahost.h -I cudahost/include ...
 * cudahost/include holds stand-ins for <cuda_runtime_api.h>, <cuda_runtime.h>, <cuda_fp16.h> and the
 * CUB headers the project uses.
 *
 * Execution model (the CUDA semantics a kernel may rely on; nothing more):
 *   - Every CUDA thread of a block is a fiber (own stack; see switchContext); the block's fibers run on one OS
 *     thread and switch only at barriers, round-robin from thread 0. That is one legal CUDA schedule,
 *     and a hostile one for races: a thread runs to its next barrier before the next thread starts,
 *     so a missing __syncthreads between a shared-memory write and another thread's read is observed.
 *   - __syncthreads() is a real per-block barrier (all non-exited threads of the block).
 *   - Warp collectives (__syncwarp, __shfl*_sync, __ballot_sync, __any/__all_sync) are barriers of the
 *     32 lanes of the warp with value exchange; the mask must name exactly the lanes the warp has.
 *   - Blocks run one after another (CUDA guarantees no inter-block order or concurrency; a kernel
 *     that needs co-resident blocks deadlocks here, as it may on a GPU).
 *   - __shared__ variables are function statics (one block at a time, launches serialized by a mutex);
 *     dynamic shared memory is a per-launch buffer, filled with 0xA5 before every block.
 *   - Launches are synchronous; streams are accepted and ignored (stream order is trivially kept).
 *   - Launch configuration is checked like a GPU does (block <= 1024 threads, grid y/z <= 65535,
 *     dynamic shared memory > 48 KiB needs cudaFuncSetAttribute, <= the emulated device's opt-in limit).
 * The emulated device (opt-in shared memory per block, SM count, compute capability) defaults to an
 * H100 (sm_90) and is set with cudahost::setDevice or CUDAHOST_SM=<cc> in the environment.
 * __CUDA_ARCH__ is not defined: __host__ __device__ code takes its host branches.
 */
#ifndef CUDAHOST_H
#define CUDAHOST_H

#define CUDAHOST 1

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <sys/mman.h>
#include <ucontext.h>

// ---- qualifiers ----------------------------------------------------------------------------------
#define __host__
#define __device__
#define __global__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __shared__ static
#define __constant__ static const

// ---- runtime types -------------------------------------------------------------------------------
struct uint3
{
    unsigned int x, y, z;
};

struct dim3
{
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
        : x(vx)
        , y(vy)
        , z(vz)
    {
    }
};

enum cudaError
{
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDeviceFunction = 98,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorIllegalAddress = 700,
    cudaErrorLaunchOutOfResources = 701,
    cudaErrorMisalignedAddress = 716,
    cudaErrorLaunchFailure = 719,
    cudaErrorNotSupported = 801,
};
typedef enum cudaError cudaError_t;

typedef struct CUstream_st* cudaStream_t;
typedef struct CUevent_st* cudaEvent_t;

enum cudaMemcpyKind
{
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
};

enum cudaDeviceAttr
{
    cudaDevAttrMaxThreadsPerBlock = 1,
    cudaDevAttrMaxSharedMemoryPerBlock = 8,
    cudaDevAttrMultiProcessorCount = 16,
    cudaDevAttrComputeCapabilityMajor = 75,
    cudaDevAttrComputeCapabilityMinor = 76,
    cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};

enum cudaFuncAttribute
{
    cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
};

//! The fields of cudaFuncGetAttributes the project reads (others are zero).
struct cudaFuncAttributes
{
    size_t sharedSizeBytes;
    size_t constSizeBytes;
    size_t localSizeBytes;
    int maxThreadsPerBlock;
    int numRegs;
    int ptxVersion;
    int binaryVersion;
    int cacheModeCA;
    int maxDynamicSharedSizeBytes;
    int preferredShmemCarveout;
};

namespace cudahost
{

//! The emulated GPU.
struct Device
{
    int computeCapability{90};
    int sharedBytesPerBlockOptin{232448}; // 227 KiB (sm_90)
    int multiProcessors{132};
};

//! Opt-in shared memory per block by compute capability (CUDA programming guide, "Technical Specifications").
inline int sharedOptinForComputeCapability(int cc)
{
    switch (cc)
    {
    case 75: return 65536;
    case 80:
    case 87: return 166912;
    case 86:
    case 89:
    case 120:
    case 121: return 101376;
    case 90:
    case 100:
    case 103:
    case 110: return 232448;
    default: return 49152;
    }
}

namespace detail
{

enum FiberState
{
    kRUNNABLE = 0,
    kAT_BLOCK_BARRIER = 1,
    kAT_WARP_BARRIER = 2,
    kDONE = 3,
};

enum WarpOp
{
    kOP_NONE = 0,
    kOP_SYNC = 1,
    kOP_SHFL = 2,
    kOP_VOTE = 3,
};

struct Context;

//! One thread's access to dynamic shared memory: `site` is the code address of the access, `occurrence`
//! how many times this thread ran that site since the last barrier. Lanes of a warp with the same
//! (site, occurrence) form one warp-wide request, as on a GPU running the warp converged.
struct SharedAccess
{
    uintptr_t site;
    uint32_t occurrence;
    uint32_t lane;
    uintptr_t address;
    uint32_t bytes;
};

struct Fiber
{
    Context* context{nullptr};
    FiberState state{kRUNNABLE};
    uint3 threadIdx{0, 0, 0};
    unsigned int linear{0};
    unsigned int warpOps{0};
    unsigned int barriers{0}; //!< __syncthreads passed (diagnostics)
    //! Dynamic shared-memory accesses since the last block barrier (bank-conflict accounting).
    std::vector<SharedAccess> accesses;
    std::vector<std::pair<uintptr_t, uint32_t>> siteCounts; //!< (site, accesses so far) in this barrier interval
};

//! Bank-conflict figures of one kernel (all its launches since the counters were reset).
struct BankStats
{
    long long requests{0};   //!< warp-wide shared-memory requests (one per instruction per warp)
    long long wavefronts{0}; //!< shared-memory cycles those requests took (32 banks x 4 bytes)
    int maxWays{0};          //!< worst request: wavefronts of one request
};

struct Warp
{
    unsigned int existingMask{0};
    unsigned int liveMask{0};
    unsigned int arrived{0};
    int op[2]{kOP_NONE, kOP_NONE};
    uint64_t slots[2][32]{};
};

struct Stack
{
    void* base{nullptr};
    size_t bytes{0};
};

/*
 * Fiber context switch. x86-64: a 20-instruction switch of the callee-saved registers, MXCSR and the
 * x87 control word (what the SysV ABI preserves across a call); no signal-mask syscall, so a switch
 * costs nanoseconds instead of the microseconds of swapcontext. Elsewhere: ucontext.
 */
#if defined(__x86_64__) && !defined(CUDAHOST_USE_UCONTEXT)
#define CUDAHOST_ASM_SWITCH 1
extern "C" void cudahost_switch_x86_64(void** saveSp, void* loadSp);
extern "C" void cudahost_fiber_start_x86_64();
__asm__(R"(
    .text
    .weak cudahost_switch_x86_64
    .hidden cudahost_switch_x86_64
    .type cudahost_switch_x86_64,@function
cudahost_switch_x86_64:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size cudahost_switch_x86_64, .-cudahost_switch_x86_64

    .weak cudahost_fiber_start_x86_64
    .hidden cudahost_fiber_start_x86_64
    .type cudahost_fiber_start_x86_64,@function
cudahost_fiber_start_x86_64:
    callq *%r13
    ud2
    .size cudahost_fiber_start_x86_64, .-cudahost_fiber_start_x86_64
)");
#endif

struct Context
{
#if defined(CUDAHOST_ASM_SWITCH)
    void* sp{nullptr};
#else
    ucontext_t uc;
#endif
};

inline void switchContext(Context& from, Context& to)
{
#if defined(CUDAHOST_ASM_SWITCH)
    cudahost_switch_x86_64(&from.sp, to.sp);
#else
    swapcontext(&from.uc, &to.uc);
#endif
}

//! Prepare `ctx` to run entry() on [stackBase, stackBase + bytes); entry must never return.
inline void makeContext(Context& ctx, void* stackBase, size_t bytes, void (*entry)())
{
#if defined(CUDAHOST_ASM_SWITCH)
    uintptr_t top = (reinterpret_cast<uintptr_t>(stackBase) + bytes) & ~uintptr_t{15};
    auto* sp = reinterpret_cast<uint64_t*>(top - 64 - 16); // 16-byte aligned
    uint32_t const mxcsr = 0x1f80u;                        // defaults: all exceptions masked, round to nearest
    uint16_t const fpcw = 0x037fu;
    std::memset(sp, 0, 64);
    std::memcpy(sp, &mxcsr, sizeof(mxcsr));
    std::memcpy(reinterpret_cast<char*>(sp) + 4, &fpcw, sizeof(fpcw));
    sp[1] = 0;                                                      // r15
    sp[2] = 0;                                                      // r14
    sp[3] = reinterpret_cast<uint64_t>(entry);                      // r13: called by the start stub
    sp[4] = 0;                                                      // r12
    sp[5] = 0;                                                      // rbx
    sp[6] = 0;                                                      // rbp
    sp[7] = reinterpret_cast<uint64_t>(&cudahost_fiber_start_x86_64); // return address of the first switch
    ctx.sp = sp;
#else
    getcontext(&ctx.uc);
    ctx.uc.uc_stack.ss_sp = stackBase;
    ctx.uc.uc_stack.ss_size = bytes;
    ctx.uc.uc_link = nullptr;
    makecontext(&ctx.uc, entry, 0);
#endif
}

constexpr size_t kSTACK_BYTES = size_t{256} << 10;
constexpr size_t kGUARD_BYTES = size_t{4} << 10;
constexpr size_t kDEFAULT_DYNAMIC_SHARED_LIMIT = 48 << 10;

struct State
{
    std::mutex launchMutex;
    Device device{};
    bool deviceFromEnv{false};
    cudaError_t lastError{cudaSuccess};
    std::string lastMessage;
    //! cudaFuncSetAttribute values per (context, kernel): a function attribute belongs to the kernel in one
    //! context, so cudaDeviceReset or another context starts from the default again.
    std::map<std::pair<int, void const*>, int> maxDynamicShared;
    int context{1};     //!< current context (cudahost_create_context / cudahost_set_context / cudaDeviceReset)
    int lastContext{1}; //!< highest context id handed out
    cudaError_t sticky{cudaSuccess}; //!< a fault that killed the context (misaligned/illegal address) until reset
    std::map<std::string, BankStats> bankStats;
    std::string kernelName; //!< the running launch's kernel (as written at the launch)
    int cubRadixBits{6};    //!< bits per pass of the CUB stand-in (decides the buffer the result ends in)
    std::vector<Stack> stacks;
    long long launches{0};
    long long libraryCalls{0};
    long long blocksRun{0};
    long long funcAttributeCalls{0}; // successful cudaFuncSetAttribute calls
    long long funcAttributeQueries{0}; // cudaFuncGetAttributes calls

    // current launch / block
    dim3 gridDim{};
    dim3 blockDim{};
    uint3 blockIdx{0, 0, 0};
    std::vector<Fiber> fibers;
    std::vector<Context> contexts;
    std::vector<Warp> warps;
    Context scheduler;
    unsigned int current{0};
    unsigned int live{0};
    unsigned int blockArrived{0};
    std::vector<unsigned char> dynamicShared;
    std::function<void()> const* body{nullptr};
    std::string error;
    cudaError_t errorCode{cudaErrorLaunchFailure};
};

inline State& state()
{
    static State s;
    return s;
}

inline void setError(cudaError_t e, std::string message)
{
    State& s = state();
    s.lastError = e;
    s.lastMessage = std::move(message);
    if (std::getenv("CUDAHOST_VERBOSE") != nullptr)
    {
        std::fprintf(stderr, "cudahost: %s\n", s.lastMessage.c_str());
    }
}

inline Device& device()
{
    State& s = state();
    if (!s.deviceFromEnv)
    {
        s.deviceFromEnv = true;
        if (char const* cc = std::getenv("CUDAHOST_SM"))
        {
            int const v = std::atoi(cc);
            s.device.computeCapability = v;
            s.device.sharedBytesPerBlockOptin = sharedOptinForComputeCapability(v);
        }
    }
    return s.device;
}

inline Stack& stackFor(unsigned int i)
{
    State& s = state();
    while (s.stacks.size() <= i)
    {
        size_t const total = kSTACK_BYTES + kGUARD_BYTES;
        void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED)
        {
            std::fprintf(stderr, "cudahost: cannot map a fiber stack\n");
            std::abort();
        }
        mprotect(p, kGUARD_BYTES, PROT_NONE); // stacks grow down: overflow hits the guard page
        s.stacks.push_back(Stack{p, total});
    }
    return s.stacks[i];
}

//! Switch from the running fiber back to the scheduler (the fiber's state says why).
inline void yieldToScheduler()
{
    State& s = state();
    switchContext(*s.fibers[s.current].context, s.scheduler);
}

//! Distinct 4-byte words per bank of one phase of a warp request: the cycles (wavefronts) it takes.
inline int phaseWavefronts(std::vector<std::pair<uint32_t, uintptr_t>>& bankWords)
{
    std::sort(bankWords.begin(), bankWords.end());
    bankWords.erase(std::unique(bankWords.begin(), bankWords.end()), bankWords.end());
    int worst = 0;
    for (size_t i = 0; i < bankWords.size();)
    {
        size_t j = i;
        while (j < bankWords.size() && bankWords[j].first == bankWords[i].first)
        {
            ++j;
        }
        worst = std::max(worst, static_cast<int>(j - i));
        i = j;
    }
    return worst;
}

/*!
 * Bank-conflict accounting of the accesses logged since the last barrier (dynamic shared memory only).
 * Lanes of one warp with the same (site, occurrence) are one request; 32 banks of 4 bytes; lanes reading
 * the same word share it (broadcast); a request wider than 4 bytes per lane is served in phases of
 * 128 bytes (16 lanes for 8-byte, 8 lanes for 16-byte accesses), as the hardware does.
 */
inline void accountSharedAccesses()
{
    State& s = state();
    std::vector<SharedAccess> log;
    std::vector<std::pair<uint32_t, uintptr_t>> bankWords;
    BankStats* stats = nullptr;
    for (size_t w = 0; w < s.warps.size(); ++w)
    {
        log.clear();
        for (size_t t = w * 32; t < std::min(s.fibers.size(), w * 32 + 32); ++t)
        {
            Fiber& f = s.fibers[t];
            log.insert(log.end(), f.accesses.begin(), f.accesses.end());
            f.accesses.clear();
            f.siteCounts.clear();
        }
        if (log.empty())
        {
            continue;
        }
        if (stats == nullptr)
        {
            stats = &s.bankStats[s.kernelName];
        }
        std::sort(log.begin(), log.end(), [](SharedAccess const& a, SharedAccess const& b) {
            return std::tie(a.site, a.occurrence, a.lane) < std::tie(b.site, b.occurrence, b.lane);
        });
        for (size_t i = 0; i < log.size();)
        {
            size_t j = i;
            uint32_t bytes = 0;
            while (j < log.size() && log[j].site == log[i].site && log[j].occurrence == log[i].occurrence)
            {
                bytes = std::max(bytes, log[j].bytes);
                ++j;
            }
            uint32_t const lanesPerPhase = 32u / std::max(1u, bytes / 4u);
            int wavefronts = 0;
            for (uint32_t phase = 0; phase < 32u; phase += lanesPerPhase)
            {
                bankWords.clear();
                for (size_t k = i; k < j; ++k)
                {
                    if (log[k].lane < phase || log[k].lane >= phase + lanesPerPhase)
                    {
                        continue;
                    }
                    for (uintptr_t word = log[k].address / 4; word <= (log[k].address + log[k].bytes - 1) / 4; ++word)
                    {
                        bankWords.emplace_back(static_cast<uint32_t>(word % 32), word);
                    }
                }
                wavefronts += phaseWavefronts(bankWords);
            }
            ++stats->requests;
            stats->wavefronts += wavefronts;
            stats->maxWays = std::max(stats->maxWays, wavefronts);
            i = j;
        }
    }
}

inline void releaseBlockBarrierIfComplete()
{
    State& s = state();
    if (s.blockArrived > 0 && s.blockArrived == s.live)
    {
        accountSharedAccesses();
        s.blockArrived = 0;
        for (Fiber& f : s.fibers)
        {
            if (f.state == kAT_BLOCK_BARRIER)
            {
                f.state = kRUNNABLE;
            }
        }
    }
}

inline void releaseWarpIfComplete(unsigned int warp)
{
    State& s = state();
    Warp& w = s.warps[warp];
    if (w.arrived > 0 && w.arrived == static_cast<unsigned int>(__builtin_popcount(w.liveMask)))
    {
        w.arrived = 0;
        for (unsigned int lane = 0; lane < 32; ++lane)
        {
            unsigned int const t = warp * 32 + lane;
            if (t < s.fibers.size() && s.fibers[t].state == kAT_WARP_BARRIER)
            {
                s.fibers[t].state = kRUNNABLE;
            }
        }
    }
}

inline void fiberMain()
{
    State& s = state();
    (*s.body)();
    Fiber& f = s.fibers[s.current];
    f.state = kDONE;
    --s.live;
    s.warps[f.linear / 32].liveMask &= ~(1u << (f.linear % 32));
    // An exited thread no longer counts for __syncthreads (as on sm_70+); warps check their masks.
    releaseBlockBarrierIfComplete();
    switchContext(*f.context, s.scheduler); // never resumed
    std::abort();
}

[[noreturn]] inline void kernelFault(std::string const& message, cudaError_t code = cudaErrorLaunchFailure)
{
    State& s = state();
    s.error = message;
    s.errorCode = code;
    // Leave the fiber for good: the scheduler sees the error and abandons the block.
    Fiber& f = s.fibers[s.current];
    f.state = kDONE;
    switchContext(*f.context, s.scheduler); // never resumed
    std::abort();
}

//! One warp-collective: publish `value`, wait for every lane of the warp, return the lanes' values.
inline uint64_t const* warpExchange(unsigned int mask, uint64_t value, WarpOp op, char const* what)
{
    State& s = state();
    Fiber& f = s.fibers[s.current];
    unsigned int const warp = f.linear / 32;
    unsigned int const lane = f.linear % 32;
    Warp& w = s.warps[warp];
    if (mask != w.existingMask)
    {
        char buf[200];
        std::snprintf(buf, sizeof(buf), "%s: mask 0x%08x must name exactly the warp's lanes 0x%08x (partial masks are "
            "not emulated)", what, mask, w.existingMask);
        kernelFault(buf);
    }
    if (w.liveMask != w.existingMask)
    {
        kernelFault(std::string(what) + ": a lane named in the mask has exited (undefined behaviour in CUDA)");
    }
    unsigned int const gen = f.warpOps++ & 1u;
    if (w.arrived == 0)
    {
        w.op[gen] = op;
    }
    else if (w.op[gen] != op)
    {
        kernelFault(std::string(what) + ": lanes of one warp reached different warp collectives (divergent code)");
    }
    w.slots[gen][lane] = value;
    ++w.arrived;
    if (w.arrived == static_cast<unsigned int>(__builtin_popcount(w.liveMask)))
    {
        releaseWarpIfComplete(warp);
    }
    else
    {
        f.state = kAT_WARP_BARRIER;
        yieldToScheduler();
    }
    return w.slots[gen];
}

template <typename T>
uint64_t toBits(T v)
{
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a type up to 8 bytes");
    uint64_t u = 0;
    std::memcpy(&u, &v, sizeof(T));
    return u;
}

template <typename T>
T fromBits(uint64_t u)
{
    T v;
    std::memcpy(&v, &u, sizeof(T));
    return v;
}

inline unsigned int laneId()
{
    State& s = state();
    return s.fibers[s.current].linear % 32;
}

inline void checkWidth(int width, char const* what)
{
    if (width != 32)
    {
        kernelFault(std::string(what) + ": only width 32 is emulated");
    }
}

//! Run one block: every thread a fiber, round-robin until all are done (or the block faults).
inline bool runBlock(std::string& message)
{
    State& s = state();
    unsigned int const threads = s.blockDim.x * s.blockDim.y * s.blockDim.z;
    s.fibers.assign(threads, Fiber{});
    unsigned int const nWarps = (threads + 31) / 32;
    s.warps.assign(nWarps, Warp{});
    for (unsigned int w = 0; w < nWarps; ++w)
    {
        unsigned int const lanes = std::min(32u, threads - w * 32);
        s.warps[w].existingMask = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1u);
        s.warps[w].liveMask = s.warps[w].existingMask;
    }
    if (s.contexts.size() < threads)
    {
        s.contexts.resize(threads);
    }
    for (unsigned int i = 0; i < threads; ++i)
    {
        Fiber& f = s.fibers[i];
        f.linear = i;
        f.threadIdx = uint3{i % s.blockDim.x, (i / s.blockDim.x) % s.blockDim.y, i / (s.blockDim.x * s.blockDim.y)};
        f.context = &s.contexts[i];
        Stack& st = stackFor(i);
        makeContext(*f.context, st.base, st.bytes, fiberMain);
    }
    if (!s.dynamicShared.empty())
    {
        std::memset(s.dynamicShared.data(), 0xA5, s.dynamicShared.size());
    }
    s.live = threads;
    s.blockArrived = 0;
    s.error.clear();
    s.errorCode = cudaErrorLaunchFailure;
    unsigned int done = 0;
    while (done < threads)
    {
        bool progressed = false;
        done = 0;
        for (unsigned int i = 0; i < threads; ++i)
        {
            if (s.fibers[i].state == kRUNNABLE)
            {
                s.current = i;
                switchContext(s.scheduler, *s.fibers[i].context);
                progressed = true;
                if (!s.error.empty())
                {
                    message = s.error;
                    return false;
                }
            }
            done += s.fibers[i].state == kDONE ? 1u : 0u;
        }
        if (!progressed && done < threads)
        {
            unsigned int atBlock = 0;
            unsigned int atWarp = 0;
            for (Fiber const& f : s.fibers)
            {
                atBlock += f.state == kAT_BLOCK_BARRIER ? 1u : 0u;
                atWarp += f.state == kAT_WARP_BARRIER ? 1u : 0u;
            }
            message = "deadlock: " + std::to_string(atBlock) + " threads wait at __syncthreads and "
                + std::to_string(atWarp) + " at a warp collective that can never complete";
            for (Fiber const& f : s.fibers)
            {
                if (f.state == kDONE)
                {
                    message += "; thread " + std::to_string(f.linear) + " exited after "
                        + std::to_string(f.barriers) + " __syncthreads";
                    break;
                }
            }
            message += "; thread 0 is at __syncthreads #" + std::to_string(s.fibers[0].barriers + 1);
            return false;
        }
    }
    accountSharedAccesses();
    return true;
}

//! True while this OS thread runs the fibers of a kernel (device code), false in host code.
inline bool& inKernel()
{
    static thread_local bool flag = false;
    return flag;
}

//! A fault that kills the context on a GPU (every later call fails until cudaDeviceReset).
inline bool isSticky(cudaError_t e)
{
    return e == cudaErrorMisalignedAddress || e == cudaErrorIllegalAddress;
}

inline cudaError_t runGrid(dim3 grid, dim3 block, size_t dynamicSmem, void const* kernel, char const* name,
    std::function<void()> const& body)
{
    State& s = state();
    std::lock_guard<std::mutex> lock(s.launchMutex);
    Device const& dev = device();
    if (s.sticky != cudaSuccess)
    {
        setError(s.sticky, "launch: the context was lost to an earlier fault (cudaDeviceReset clears it)");
        return s.sticky;
    }
    unsigned long long const threads = static_cast<unsigned long long>(block.x) * block.y * block.z;
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0 || threads > 1024 || block.x > 1024
        || block.y > 1024 || block.z > 64 || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535)
    {
        setError(cudaErrorInvalidConfiguration, "launch: invalid grid/block configuration");
        return cudaErrorInvalidConfiguration;
    }
    int allowed = static_cast<int>(kDEFAULT_DYNAMIC_SHARED_LIMIT);
    auto const it = s.maxDynamicShared.find({s.context, kernel});
    if (it != s.maxDynamicShared.end())
    {
        allowed = it->second;
    }
    if (dynamicSmem > static_cast<size_t>(allowed) || dynamicSmem > static_cast<size_t>(dev.sharedBytesPerBlockOptin))
    {
        setError(cudaErrorInvalidValue,
            "launch: " + std::to_string(dynamicSmem) + " bytes of dynamic shared memory exceed the kernel's limit "
                + std::to_string(allowed) + " (cudaFuncSetAttribute in this context) or the device's "
                + std::to_string(dev.sharedBytesPerBlockOptin) + " (" + name + ")");
        return cudaErrorInvalidValue;
    }
    ++s.launches;
    s.gridDim = grid;
    s.blockDim = block;
    s.dynamicShared.assign(dynamicSmem, 0);
    s.body = &body;
    s.kernelName = name;
    inKernel() = true;
    for (unsigned int z = 0; z < grid.z; ++z)
    {
        for (unsigned int y = 0; y < grid.y; ++y)
        {
            for (unsigned int x = 0; x < grid.x; ++x)
            {
                s.blockIdx = uint3{x, y, z};
                std::string message;
                ++s.blocksRun;
                if (!runBlock(message))
                {
                    s.body = nullptr;
                    inKernel() = false;
                    for (Fiber& f : s.fibers)
                    {
                        f.accesses.clear();
                    }
                    cudaError_t const code = s.errorCode;
                    setError(code,
                        "kernel fault in " + std::string(name) + " block (" + std::to_string(x) + ","
                            + std::to_string(y) + "," + std::to_string(z) + "): " + message);
                    if (isSticky(code))
                    {
                        s.sticky = code;
                    }
                    return code;
                }
            }
        }
    }
    s.body = nullptr;
    inKernel() = false;
    return cudaSuccess;
}

//! Log one access of the running thread to dynamic shared memory; an access outside the launch's
//! dynamic shared memory is an illegal address (sticky, like on a GPU). noinline: the return address
//! is the access site in the kernel.
__attribute__((noinline)) inline void recordShared(void const* p, uint32_t bytes)
{
    if (!inKernel())
    {
        return;
    }
    State& s = state();
    uintptr_t const site = reinterpret_cast<uintptr_t>(__builtin_return_address(0));
    uintptr_t const address = reinterpret_cast<uintptr_t>(p);
    uintptr_t const base = reinterpret_cast<uintptr_t>(s.dynamicShared.data());
    if (address < base || address + bytes > base + s.dynamicShared.size())
    {
        char buf[240];
        std::snprintf(buf, sizeof(buf), "illegal address: %s accesses %u bytes at offset %lld of %zu bytes of dynamic "
            "shared memory", s.kernelName.c_str(), bytes, static_cast<long long>(address - base), s.dynamicShared.size());
        kernelFault(buf, cudaErrorIllegalAddress);
    }
    Fiber& f = s.fibers[s.current];
    uint32_t occurrence = 0;
    bool found = false;
    for (auto& sc : f.siteCounts)
    {
        if (sc.first == site)
        {
            occurrence = sc.second++;
            found = true;
            break;
        }
    }
    if (!found)
    {
        f.siteCounts.emplace_back(site, 1u);
    }
    f.accesses.push_back(SharedAccess{site, occurrence, f.linear % 32u, address - base, bytes});
}

//! A vector or scalar access at `address` of `bytes` must be aligned to `align` (else the GPU traps with
//! cudaErrorMisalignedAddress, sticky). Checked in device code only.
inline void checkAlignment(uintptr_t address, size_t align, char const* type, char const* expr, char const* func)
{
    if (!inKernel() || align <= 1 || address % align == 0)
    {
        return;
    }
    char buf[400];
    std::snprintf(buf, sizeof(buf), "misaligned address: kernel %s (in %s) accesses `%s` = %#llx as %s, which needs "
        "%zu-byte alignment", state().kernelName.c_str(), func, expr, static_cast<unsigned long long>(address), type, align);
    kernelFault(buf, cudaErrorMisalignedAddress);
}

} // namespace detail

//! An element of dynamic shared memory: reads and writes are logged for bank-conflict accounting.
template <typename T>
struct SharedRef
{
    T* p;
    __forceinline__ operator T() const
    {
        detail::recordShared(p, sizeof(T));
        return *p;
    }
    __forceinline__ SharedRef const& operator=(T v) const
    {
        detail::recordShared(p, sizeof(T));
        *p = v;
        return *this;
    }
    __forceinline__ SharedRef const& operator=(SharedRef const& other) const
    {
        T const v = other;
        return *this = v;
    }
    template <typename U>
    __forceinline__ SharedRef const& operator+=(U const& v) const
    {
        T const cur = *this;
        return *this = static_cast<T>(cur + v);
    }
};

//! A pointer into dynamic shared memory (what `extern __shared__ T name[]` and casts of it become).
template <typename T>
struct SharedPtr
{
    T* p;
    __forceinline__ SharedRef<T> operator[](std::ptrdiff_t i) const
    {
        return SharedRef<T>{p + i};
    }
    __forceinline__ SharedRef<T> operator*() const
    {
        return SharedRef<T>{p};
    }
    __forceinline__ SharedPtr operator+(std::ptrdiff_t i) const
    {
        return SharedPtr{p + i};
    }
    __forceinline__ SharedPtr operator-(std::ptrdiff_t i) const
    {
        return SharedPtr{p - i};
    }
};

template <typename T>
struct IsSharedPtr : std::false_type
{
};
template <typename T>
struct IsSharedPtr<SharedPtr<T>> : std::true_type
{
};

//! `reinterpret_cast<To>(from)` in translated CUDA sources (cu2host.py): in device code a cast to a pointer
//! is checked for the alignment of the type it points to (the kernels dereference what they cast), and a
//! cast of shared memory stays tracked.
template <typename To, typename From>
__forceinline__ auto pointerCast(From const& from, char const* expr, char const* func)
{
    if constexpr (IsSharedPtr<From>::value)
    {
        static_assert(std::is_pointer<To>::value, "shared memory is cast to a pointer type");
        using U = std::remove_pointer_t<To>;
        detail::checkAlignment(reinterpret_cast<uintptr_t>(from.p), alignof(U), "shared memory", expr, func);
        return SharedPtr<U>{reinterpret_cast<U*>(from.p)};
    }
    else
    {
        To to = reinterpret_cast<To>(from);
        if constexpr (std::is_pointer<To>::value && std::is_pointer<From>::value)
        {
            using U = std::remove_cv_t<std::remove_pointer_t<To>>;
            if constexpr (!std::is_void<U>::value && !std::is_function<U>::value)
            {
                char type[64];
                std::snprintf(type, sizeof(type), "a %zu-byte access", sizeof(U));
                detail::checkAlignment(reinterpret_cast<uintptr_t>(to), alignof(U), type, expr, func);
            }
        }
        return to;
    }
}

inline void setDevice(int computeCapability, int sharedBytesPerBlockOptin, int multiProcessors)
{
    detail::State& s = detail::state();
    std::lock_guard<std::mutex> lock(s.launchMutex);
    detail::device();
    int const optin
        = sharedBytesPerBlockOptin > 0 ? sharedBytesPerBlockOptin : sharedOptinForComputeCapability(computeCapability);
    if (computeCapability != s.device.computeCapability || optin != s.device.sharedBytesPerBlockOptin)
    {
        s.context = ++s.lastContext; // another GPU: its own (primary) context
    }
    s.device.computeCapability = computeCapability;
    s.device.sharedBytesPerBlockOptin
        = sharedBytesPerBlockOptin > 0 ? sharedBytesPerBlockOptin : sharedOptinForComputeCapability(computeCapability);
    s.device.multiProcessors = multiProcessors > 0 ? multiProcessors : s.device.multiProcessors;
}

//! Arguments of a `<<<grid, block, smem, stream>>>` launch (cu2host.py builds one per launch).
struct LaunchConfig
{
    dim3 grid;
    dim3 block;
    size_t sharedBytes;
    cudaStream_t stream;
    LaunchConfig(dim3 g, dim3 b, size_t smem = 0, cudaStream_t st = nullptr)
        : grid(g)
        , block(b)
        , sharedBytes(smem)
        , stream(st)
    {
    }
};

//! `kernel<<<cfg>>>(args...)`: arguments are converted to the parameter types (by value, as CUDA does).
template <typename... P, typename... A>
void launchKernel(LaunchConfig const& cfg, char const* name, void (*kernel)(P...), A&&... args)
{
    std::tuple<std::decay_t<P>...> params(static_cast<std::decay_t<P>>(std::forward<A>(args))...);
    std::function<void()> const body = [&]() { std::apply(kernel, params); };
    detail::runGrid(cfg.grid, cfg.block, cfg.sharedBytes, reinterpret_cast<void const*>(kernel), name, body);
}

//! `extern __shared__ T name[];` (cu2host.py rewrites the declaration to this call): a tracked pointer.
template <typename T>
SharedPtr<T> dynamicSharedMemory()
{
    return SharedPtr<T>{reinterpret_cast<T*>(detail::state().dynamicShared.data())};
}

//! A new context on the emulated device, made current (like cuCtxCreate): function attributes start over.
inline int createContext()
{
    detail::State& s = detail::state();
    std::lock_guard<std::mutex> lock(s.launchMutex);
    s.context = ++s.lastContext;
    return s.context;
}

//! Make an existing context current (like cuCtxSetCurrent); returns false for an unknown id.
inline bool setContext(int context)
{
    detail::State& s = detail::state();
    std::lock_guard<std::mutex> lock(s.launchMutex);
    if (context < 1 || context > s.lastContext)
    {
        return false;
    }
    s.context = context;
    return true;
}

inline int currentContext()
{
    return detail::state().context;
}

//! Bank-conflict figures of one kernel (by the name written at its launch, template arguments dropped).
inline detail::BankStats bankStats(std::string const& kernel)
{
    detail::State& s = detail::state();
    auto const it = s.bankStats.find(kernel);
    return it == s.bankStats.end() ? detail::BankStats{} : it->second;
}

inline void resetBankStats()
{
    detail::state().bankStats.clear();
}

//! Counters for tests: kernel launches, CUB stand-in calls, blocks run, cudaFuncSetAttribute calls.
inline long long launchCount()
{
    return detail::state().launches;
}
inline long long libraryCallCount()
{
    return detail::state().libraryCalls;
}
inline long long blockCount()
{
    return detail::state().blocksRun;
}
inline long long funcAttributeCallCount()
{
    return detail::state().funcAttributeCalls;
}
inline std::string const& lastMessage()
{
    return detail::state().lastMessage;
}

} // namespace cudahost

// ---- built-in variables (per fiber / block / launch) -------------------------------------------
#define threadIdx (::cudahost::detail::state().fibers[::cudahost::detail::state().current].threadIdx)
#define blockIdx (::cudahost::detail::state().blockIdx)
#define blockDim (::cudahost::detail::state().blockDim)
#define gridDim (::cudahost::detail::state().gridDim)
#define warpSize 32

// ---- synchronization and warp intrinsics ---------------------------------------------------------
inline void __syncthreads()
{
    using namespace cudahost::detail;
    State& s = state();
    Fiber& f = s.fibers[s.current];
    ++f.barriers;
    ++s.blockArrived;
    if (s.blockArrived == s.live)
    {
        releaseBlockBarrierIfComplete();
    }
    else
    {
        f.state = kAT_BLOCK_BARRIER;
        yieldToScheduler();
    }
}

inline void __syncwarp(unsigned int mask = 0xffffffffu)
{
    cudahost::detail::warpExchange(mask, 0, cudahost::detail::kOP_SYNC, "__syncwarp");
}

template <typename T>
T __shfl_sync(unsigned int mask, T value, int srcLane, int width = 32)
{
    using namespace cudahost::detail;
    checkWidth(width, "__shfl_sync");
    uint64_t const* v = warpExchange(mask, toBits(value), kOP_SHFL, "__shfl_sync");
    return fromBits<T>(v[static_cast<unsigned int>(srcLane) % 32u]);
}

template <typename T>
T __shfl_up_sync(unsigned int mask, T value, unsigned int delta, int width = 32)
{
    using namespace cudahost::detail;
    checkWidth(width, "__shfl_up_sync");
    unsigned int const lane = laneId();
    uint64_t const* v = warpExchange(mask, toBits(value), kOP_SHFL, "__shfl_up_sync");
    return lane >= delta ? fromBits<T>(v[lane - delta]) : value;
}

template <typename T>
T __shfl_down_sync(unsigned int mask, T value, unsigned int delta, int width = 32)
{
    using namespace cudahost::detail;
    checkWidth(width, "__shfl_down_sync");
    unsigned int const lane = laneId();
    uint64_t const* v = warpExchange(mask, toBits(value), kOP_SHFL, "__shfl_down_sync");
    return lane + delta < 32u ? fromBits<T>(v[lane + delta]) : value;
}

template <typename T>
T __shfl_xor_sync(unsigned int mask, T value, int laneMask, int width = 32)
{
    using namespace cudahost::detail;
    checkWidth(width, "__shfl_xor_sync");
    unsigned int const lane = laneId();
    uint64_t const* v = warpExchange(mask, toBits(value), kOP_SHFL, "__shfl_xor_sync");
    return fromBits<T>(v[(lane ^ static_cast<unsigned int>(laneMask)) % 32u]);
}

inline unsigned int __ballot_sync(unsigned int mask, int predicate)
{
    using namespace cudahost::detail;
    uint64_t const* v = warpExchange(mask, predicate != 0 ? 1u : 0u, kOP_VOTE, "__ballot_sync");
    unsigned int bits = 0;
    for (unsigned int lane = 0; lane < 32; ++lane)
    {
        bits |= ((mask >> lane) & 1u) && v[lane] ? (1u << lane) : 0u;
    }
    return bits;
}

inline int __any_sync(unsigned int mask, int predicate)
{
    return __ballot_sync(mask, predicate) != 0u;
}

inline int __all_sync(unsigned int mask, int predicate)
{
    return __ballot_sync(mask, predicate) == mask;
}

// ---- device math / bit intrinsics ----------------------------------------------------------------
inline int min(int a, int b)
{
    return a < b ? a : b;
}
inline int max(int a, int b)
{
    return a > b ? a : b;
}
inline unsigned int min(unsigned int a, unsigned int b)
{
    return a < b ? a : b;
}
inline unsigned int max(unsigned int a, unsigned int b)
{
    return a > b ? a : b;
}
inline long long min(long long a, long long b)
{
    return a < b ? a : b;
}
inline long long max(long long a, long long b)
{
    return a > b ? a : b;
}
inline long min(long a, long b)
{
    return a < b ? a : b;
}
inline long max(long a, long b)
{
    return a > b ? a : b;
}
inline unsigned int __float_as_uint(float x)
{
    unsigned int u;
    std::memcpy(&u, &x, sizeof(u));
    return u;
}
inline float __uint_as_float(unsigned int u)
{
    float x;
    std::memcpy(&x, &u, sizeof(x));
    return x;
}
inline int __popc(unsigned int x)
{
    return __builtin_popcount(x);
}
inline int __clz(unsigned int x)
{
    return x == 0 ? 32 : __builtin_clz(x);
}
inline int __ffs(unsigned int x)
{
    return __builtin_ffs(static_cast<int>(x));
}
template <typename T>
T __ldg(T const* p)
{
    return *p;
}

// ---- runtime API ---------------------------------------------------------------------------------
inline cudaError_t cudaGetLastError()
{
    cudahost::detail::State& s = cudahost::detail::state();
    cudaError_t const e = s.lastError;
    s.lastError = s.sticky; // a sticky error stays (CUDA: until the context is destroyed)
    return e != cudaSuccess ? e : s.sticky;
}

inline cudaError_t cudaPeekAtLastError()
{
    cudahost::detail::State& s = cudahost::detail::state();
    return s.lastError != cudaSuccess ? s.lastError : s.sticky;
}

//! Destroys the current context and starts a new one: sticky errors and function attributes are gone.
inline cudaError_t cudaDeviceReset()
{
    cudahost::detail::State& s = cudahost::detail::state();
    std::lock_guard<std::mutex> lock(s.launchMutex);
    s.context = ++s.lastContext;
    s.sticky = cudaSuccess;
    s.lastError = cudaSuccess;
    return cudaSuccess;
}

inline char const* cudaGetErrorName(cudaError_t e)
{
    switch (e)
    {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDeviceFunction: return "cudaErrorInvalidDeviceFunction";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    case cudaErrorMisalignedAddress: return "cudaErrorMisalignedAddress";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    }
    return "cudaErrorUnknown";
}

inline char const* cudaGetErrorString(cudaError_t e)
{
    switch (e)
    {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchFailure: return "unspecified launch failure (cudahost: see cudahost_last_message)";
    default: return cudaGetErrorName(e);
    }
}

inline cudaError_t cudaMalloc(void** p, size_t bytes)
{
    if (p == nullptr)
    {
        return cudaErrorInvalidValue;
    }
    size_t const rounded = (std::max<size_t>(bytes, 1) + 255) / 256 * 256;
    *p = std::aligned_alloc(256, rounded);
    if (*p == nullptr)
    {
        return cudaErrorMemoryAllocation;
    }
    std::memset(*p, 0xCD, rounded); // device memory is not zeroed
    return cudaSuccess;
}

template <typename T>
cudaError_t cudaMalloc(T** p, size_t bytes)
{
    return cudaMalloc(reinterpret_cast<void**>(p), bytes);
}

inline cudaError_t cudaFree(void* p)
{
    std::free(p);
    return cudaSuccess;
}

inline cudaError_t cudaMemcpy(void* dst, void const* src, size_t bytes, cudaMemcpyKind /*kind*/)
{
    if (cudahost::detail::state().sticky != cudaSuccess)
    {
        return cudahost::detail::state().sticky;
    }
    if (bytes > 0 && (dst == nullptr || src == nullptr))
    {
        return cudaErrorInvalidValue;
    }
    std::memmove(dst, src, bytes);
    return cudaSuccess;
}

inline cudaError_t cudaMemcpyAsync(void* dst, void const* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t = nullptr)
{
    return cudaMemcpy(dst, src, bytes, kind);
}

inline cudaError_t cudaMemset(void* dst, int value, size_t bytes)
{
    if (bytes > 0 && dst == nullptr)
    {
        return cudaErrorInvalidValue;
    }
    std::memset(dst, value, bytes);
    return cudaSuccess;
}

inline cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t = nullptr)
{
    return cudaMemset(dst, value, bytes);
}

inline cudaError_t cudaStreamCreate(cudaStream_t* stream)
{
    static char token;
    *stream = reinterpret_cast<cudaStream_t>(&token);
    return cudaSuccess;
}

inline cudaError_t cudaStreamDestroy(cudaStream_t)
{
    return cudaSuccess;
}

inline cudaError_t cudaStreamSynchronize(cudaStream_t)
{
    return cudaSuccess;
}

inline cudaError_t cudaDeviceSynchronize()
{
    return cudaSuccess;
}

inline cudaError_t cudaGetDeviceCount(int* count)
{
    *count = 1;
    return cudaSuccess;
}

inline cudaError_t cudaGetDevice(int* device)
{
    *device = 0;
    return cudaSuccess;
}

inline cudaError_t cudaSetDevice(int device)
{
    return device == 0 ? cudaSuccess : cudaErrorInvalidDevice;
}

inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device)
{
    if (value == nullptr || device != 0)
    {
        return cudaErrorInvalidValue;
    }
    cudahost::Device const& d = cudahost::detail::device();
    switch (attr)
    {
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = 49152; return cudaSuccess;
    case cudaDevAttrMultiProcessorCount: *value = d.multiProcessors; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor: *value = d.computeCapability / 10; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *value = d.computeCapability % 10; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = d.sharedBytesPerBlockOptin; return cudaSuccess;
    }
    return cudaErrorInvalidValue;
}

template <typename F>
cudaError_t cudaFuncSetAttribute(F* kernel, cudaFuncAttribute attr, int value)
{
    cudahost::detail::State& s = cudahost::detail::state();
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0
        || value > cudahost::detail::device().sharedBytesPerBlockOptin)
    {
        cudahost::detail::setError(cudaErrorInvalidValue, "cudaFuncSetAttribute: value " + std::to_string(value)
                + " above the device's opt-in shared memory per block");
        return cudaErrorInvalidValue;
    }
    std::lock_guard<std::mutex> lock(s.launchMutex);
    s.maxDynamicShared[{s.context, reinterpret_cast<void const*>(kernel)}] = value;
    ++s.funcAttributeCalls;
    return cudaSuccess;
}

//! The kernel's attributes in the current context; only maxDynamicSharedSizeBytes and maxThreadsPerBlock are
//! emulated (sharedSizeBytes, the static shared memory, is not known here and reads 0).
template <typename F>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, F* kernel)
{
    cudahost::detail::State& s = cudahost::detail::state();
    if (attr == nullptr || kernel == nullptr)
    {
        return cudaErrorInvalidValue;
    }
    std::lock_guard<std::mutex> lock(s.launchMutex);
    *attr = cudaFuncAttributes{};
    attr->maxThreadsPerBlock = 1024;
    auto const it = s.maxDynamicShared.find({s.context, reinterpret_cast<void const*>(kernel)});
    attr->maxDynamicSharedSizeBytes = it == s.maxDynamicShared.end()
        ? static_cast<int>(cudahost::detail::kDEFAULT_DYNAMIC_SHARED_LIMIT) : it->second;
    ++s.funcAttributeQueries;
    return cudaSuccess;
}

#endif // CUDAHOST_H
