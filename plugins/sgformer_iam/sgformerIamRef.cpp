/*
 * SGFormerIAM: CPU host reference. Loops over the math of sgformerIamMath.h; built without CUDA.
 *
 * Two implementations of one contract:
 *   - the fast path (sgformer_iam_ref_run): a stable LSD radix sort of the importance keys and the
 *     group sums over output tokens, spread over a small worker pool (batch rows x two sequences for the sort,
 *     then batch rows x two sequences x chunks of output tokens for the sums), with grow-only thread-local
 *     scratch, so a call allocates nothing once the largest shape has been seen;
 *   - the plain path (sgformer_iam_ref_run_plain): the original single-threaded loops with
 *     std::stable_sort, kept as the executable specification the fast path is tested against bit for bit.
 * Both produce the same bits: the radix sort is stable, so equal keys keep ascending sequence position exactly as
 * std::stable_sort does, and every output element is the same chain of fmaf calls followed by one add
 * (sgformerIamMath.h), whichever thread computes it. fmaf is correctly rounded whether it is the FMA instruction
 * (x86-64 with FMA: the aggregation loop is compiled a second time for that target and picked at run time) or the
 * C library routine.
 */
#include "sgformerIamRef.h"

#include "sgformerIamMath.h"

#include <algorithm>
#include <cstddef>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

namespace
{

using sgformer::iam::SgformerIamParams;

constexpr int32_t kAPI_VERSION = 3;
constexpr int32_t kMAX_THREADS = 256;
//! Output tokens below which a sequence is not split further (the per-chunk cost would be mostly overhead).
constexpr int32_t kMIN_TOKENS_PER_CHUNK = 32;
//! Calls that read fewer token values (B * N * C) run on the calling thread only: waking a worker costs more.
constexpr int64_t kMIN_PARALLEL_VALUES = int64_t{1} << 17;

thread_local std::string tLastError;

int32_t setError(int32_t code, std::string message)
{
    tLastError = std::move(message);
    return code;
}

struct Fp32Tokens
{
    using Storage = float;
    static float load(float v)
    {
        return v;
    }
    static float store(float v)
    {
        return v;
    }
};

struct Fp16Tokens
{
    using Storage = uint16_t;
    static float load(uint16_t v)
    {
        return sgformer::iam::halfBitsToFloat(v);
    }
    static uint16_t store(float v)
    {
        return sgformer::iam::floatToHalfBits(v);
    }
};

int32_t checkArguments(SgformerIamCall const& c, SgformerIamParams& params)
{
    char msg[256] = {};
    if (sgformer::iam::makeIamParams(c.height, c.width, c.group_sizes, c.tier_sizes, c.n_tiers, params, msg,
            sizeof(msg))
        != 0)
    {
        return setError(SGFORMER_IAM_ERR_LAYOUT, msg);
    }
    if (c.batch < 0 || c.channels <= 0)
    {
        return setError(SGFORMER_IAM_ERR_ARGUMENT,
            "SGFormerIAM: batch=" + std::to_string(c.batch) + " must be >= 0 and channels="
                + std::to_string(c.channels) + " must be > 0");
    }
    if (c.batch > 0
        && (c.tokens == nullptr || c.importance == nullptr || c.agg_weight == nullptr || c.agg_bias == nullptr
            || c.seq_row == nullptr || c.seq_col == nullptr))
    {
        return setError(SGFORMER_IAM_ERR_ARGUMENT,
            "SGFormerIAM: null pointer among tokens (input 0), importance (1), agg_weight (2), agg_bias (3), "
            "seq_row (output 0), seq_col (output 1)");
    }
    params.batch = c.batch;
    params.channels = c.channels;
    return SGFORMER_IAM_OK;
}

template <typename F>
int32_t guarded(F&& body)
{
    try
    {
        return body();
    }
    catch (std::exception const& e)
    {
        return setError(SGFORMER_IAM_ERR_INTERNAL, std::string("SGFormerIAM: host reference failed: ") + e.what());
    }
    catch (...)
    {
        return setError(SGFORMER_IAM_ERR_INTERNAL, "SGFormerIAM: host reference failed with an unknown exception");
    }
}

// ------------------------------------------------------------------------------------------ plain path

//! One sequence (row- or column-major) of one batch row: the original loops, the specification.
template <typename Tokens>
void plainSequence(SgformerIamParams const& p, typename Tokens::Storage const* tokens, float const* importance,
    float const* weight, float const* bias, bool isColumn, std::vector<uint32_t>& keys, std::vector<int32_t>& order,
    std::vector<float>& acc, typename Tokens::Storage* out)
{
    using namespace sgformer::iam;
    int32_t const n = p.numTokens;
    int32_t const c = p.channels;
    for (int32_t i = 0; i < n; ++i)
    {
        keys[i] = importanceSortKey(importance[sequenceToToken(i, isColumn, p.height, p.width)]);
    }
    std::iota(order.begin(), order.end(), 0);
    // Stable: equal keys keep ascending sequence position, i.e. the lower index wins the tie.
    std::stable_sort(order.begin(), order.end(), [&keys](int32_t a, int32_t b) { return keys[a] < keys[b]; });

    for (int32_t t = 0; t < p.outTokens; ++t)
    {
        int32_t const tier = tierOfOutput(p, t);
        int32_t const first = groupFirstSorted(p, tier, t);
        float const* w = weight + p.weightOffset[tier];
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int32_t j = 0; j < p.groupSizes[tier]; ++j)
        {
            int32_t const token = sequenceToToken(order[first + j], isColumn, p.height, p.width);
            typename Tokens::Storage const* x = tokens + static_cast<size_t>(token) * c;
            for (int32_t ch = 0; ch < c; ++ch)
            {
                acc[ch] = accumulateStep(acc[ch], w[j], Tokens::load(x[ch]));
            }
        }
        typename Tokens::Storage* y = out + static_cast<size_t>(t) * c;
        for (int32_t ch = 0; ch < c; ++ch)
        {
            y[ch] = Tokens::store(finishGroup(acc[ch], bias[tier]));
        }
    }
}

template <typename Tokens>
int32_t runPlain(SgformerIamCall const& c)
{
    return guarded([&]() {
        SgformerIamParams p;
        int32_t const status = checkArguments(c, p);
        if (status != SGFORMER_IAM_OK)
        {
            return status;
        }
        using Storage = typename Tokens::Storage;
        auto const* tokens = static_cast<Storage const*>(c.tokens);
        float const* importance = c.importance;
        float const* weight = c.agg_weight;
        float const* bias = c.agg_bias;
        auto* seqRow = static_cast<Storage*>(c.seq_row);
        auto* seqCol = static_cast<Storage*>(c.seq_col);
        std::vector<uint32_t> keys(p.numTokens);
        std::vector<int32_t> order(p.numTokens);
        std::vector<float> acc(p.channels);
        size_t const inStride = static_cast<size_t>(p.numTokens) * p.channels;
        size_t const outStride = static_cast<size_t>(p.outTokens) * p.channels;
        for (int32_t b = 0; b < p.batch; ++b)
        {
            auto const* tok = tokens + b * inStride;
            float const* imp = importance + static_cast<size_t>(b) * p.numTokens;
            plainSequence<Tokens>(p, tok, imp, weight, bias, false, keys, order, acc, seqRow + b * outStride);
            plainSequence<Tokens>(p, tok, imp, weight, bias, true, keys, order, acc, seqCol + b * outStride);
        }
        tLastError.clear();
        return int32_t{SGFORMER_IAM_OK};
    });
}

// ------------------------------------------------------------------------------------------ worker pool

/*!
 * Persistent workers that run `fn(ctx, i)` for i in [0, count). The calling thread takes part, so a pool of
 * n threads has n - 1 workers. Idle workers block on a condition variable (no spinning: on a 2-core machine a
 * spinning worker would take the core onnxruntime's own pool needs). One parallel run at a time: a caller that
 * finds the pool busy (another thread is in a run) does its whole job inline instead of waiting.
 * The pool is created on first use and deliberately never destroyed (the library is loaded with dlopen and
 * never unloaded; joining threads from a static destructor at process exit is fragile).
 */
class WorkerPool
{
public:
    using Task = void (*)(void* ctx, int64_t index);

    static WorkerPool& instance()
    {
        static WorkerPool* pool = new WorkerPool();
        return *pool;
    }

    void setThreads(int32_t threads)
    {
        std::lock_guard<std::mutex> run(mRunMutex);
        mThreads.store(std::max(1, std::min(threads, kMAX_THREADS)));
    }

    int32_t threads() const
    {
        return mThreads.load();
    }

    void run(int64_t count, Task fn, void* ctx, int32_t maxThreads)
    {
        int32_t const wanted = static_cast<int32_t>(std::min<int64_t>(maxThreads, count));
        std::unique_lock<std::mutex> run(mRunMutex, std::try_to_lock);
        if (wanted <= 1 || !run.owns_lock())
        {
            for (int64_t i = 0; i < count; ++i)
            {
                fn(ctx, i);
            }
            return;
        }
        startWorkers(wanted - 1);
        {
            std::lock_guard<std::mutex> lock(mMutex);
            mTask = fn;
            mCtx = ctx;
            mCount = count;
            mNext.store(0);
            mActive = wanted - 1;
            mPending = wanted - 1;
            ++mGeneration;
        }
        mWake.notify_all();
        drain();
        std::unique_lock<std::mutex> lock(mMutex);
        mDone.wait(lock, [this]() { return mPending == 0; });
    }

private:
    WorkerPool()
    {
        char const* env = std::getenv("SGFORMER_IAM_THREADS");
        int32_t const fromEnv = env != nullptr ? std::atoi(env) : 0;
        mThreads.store(fromEnv > 0 ? std::min(fromEnv, kMAX_THREADS) : 1);
    }

    void drain()
    {
        for (int64_t i = mNext.fetch_add(1); i < mCount; i = mNext.fetch_add(1))
        {
            mTask(mCtx, i);
        }
    }

    void startWorkers(int32_t workers)
    {
        while (static_cast<int32_t>(mWorkers.size()) < workers)
        {
            int32_t const id = static_cast<int32_t>(mWorkers.size());
            mWorkers.emplace_back([this, id]() { workerLoop(id); });
            mWorkers.back().detach();
        }
    }

    void workerLoop(int32_t id)
    {
        uint64_t seen = 0;
        for (;;)
        {
            {
                std::unique_lock<std::mutex> lock(mMutex);
                mWake.wait(lock, [&]() { return mGeneration != seen; });
                seen = mGeneration;
                if (id >= mActive)
                {
                    continue; // not needed for this run
                }
            }
            drain();
            std::lock_guard<std::mutex> lock(mMutex);
            if (--mPending == 0)
            {
                mDone.notify_one();
            }
        }
    }

    std::atomic<int32_t> mThreads{1};
    std::mutex mRunMutex; //!< held for a whole parallel run
    std::mutex mMutex;    //!< guards the run description below
    std::condition_variable mWake;
    std::condition_variable mDone;
    std::vector<std::thread> mWorkers;
    uint64_t mGeneration{0};
    int32_t mActive{0};
    int32_t mPending{0};
    Task mTask{nullptr};
    void* mCtx{nullptr};
    int64_t mCount{0};
    std::atomic<int64_t> mNext{0};
};

// ------------------------------------------------------------------------------------------ fast path

//! Grow-only scratch of the thread that runs a sort or a group sum (no allocation once warm).
struct ThreadScratch
{
    std::vector<uint32_t> keys[2];
    std::vector<int32_t> index[2];
    std::vector<float> acc;
};

ThreadScratch& threadScratch()
{
    thread_local ThreadScratch scratch;
    return scratch;
}

//! Grow-only per-caller buffer for the sorted orders of every (batch row, sequence) of one call.
std::vector<int32_t>& callerOrders()
{
    thread_local std::vector<int32_t> orders;
    return orders;
}

template <typename T>
T* grow(std::vector<T>& v, size_t n)
{
    if (v.size() < n)
    {
        v.resize(n);
    }
    return v.data();
}

/*!
 * Stable ascending sort of sequence positions 0..n-1 by key: LSD radix sort, 8-bit digits, passes whose digit is
 * the same for every key skipped. LSD radix sort is stable, so ties keep ascending position (as std::stable_sort).
 */
void radixSortPositions(SgformerIamParams const& p, float const* importance, bool isColumn, int32_t* order)
{
    using namespace sgformer::iam;
    int32_t const n = p.numTokens;
    ThreadScratch& s = threadScratch();
    uint32_t* keyA = grow(s.keys[0], n);
    uint32_t* keyB = grow(s.keys[1], n);
    int32_t* idxA = grow(s.index[0], n);
    int32_t* idxB = grow(s.index[1], n);
    uint32_t counts[4][256] = {};
    for (int32_t i = 0; i < n; ++i)
    {
        uint32_t const key = importanceSortKey(importance[sequenceToToken(i, isColumn, p.height, p.width)]);
        keyA[i] = key;
        idxA[i] = i;
        ++counts[0][key & 0xffu];
        ++counts[1][(key >> 8) & 0xffu];
        ++counts[2][(key >> 16) & 0xffu];
        ++counts[3][key >> 24];
    }
    for (int32_t pass = 0; pass < 4; ++pass)
    {
        uint32_t const shift = 8u * static_cast<uint32_t>(pass);
        uint32_t* count = counts[pass];
        if (count[(keyA[0] >> shift) & 0xffu] == static_cast<uint32_t>(n))
        {
            continue; // every key has this digit: the pass would not move anything
        }
        uint32_t offset = 0;
        for (int32_t d = 0; d < 256; ++d)
        {
            uint32_t const c = count[d];
            count[d] = offset;
            offset += c;
        }
        for (int32_t i = 0; i < n; ++i)
        {
            uint32_t const slot = count[(keyA[i] >> shift) & 0xffu]++;
            keyB[slot] = keyA[i];
            idxB[slot] = idxA[i];
        }
        std::swap(keyA, keyB);
        std::swap(idxA, idxB);
    }
    std::copy(idxA, idxA + n, order);
}

//! Output tokens [tBegin, tEnd) of one sequence. Same arithmetic as plainSequence, element by element.
template <typename Tokens>
inline void aggregateRangeImpl(SgformerIamParams const& p, typename Tokens::Storage const* tokens,
    float const* weight, float const* bias, bool isColumn, int32_t const* order, int32_t tBegin, int32_t tEnd,
    float* acc, typename Tokens::Storage* out)
{
    using namespace sgformer::iam;
    int32_t const c = p.channels;
    for (int32_t t = tBegin; t < tEnd; ++t)
    {
        int32_t const tier = tierOfOutput(p, t);
        int32_t const first = groupFirstSorted(p, tier, t);
        float const* w = weight + p.weightOffset[tier];
        for (int32_t ch = 0; ch < c; ++ch)
        {
            acc[ch] = 0.0f;
        }
        for (int32_t j = 0; j < p.groupSizes[tier]; ++j)
        {
            int32_t const token = sequenceToToken(order[first + j], isColumn, p.height, p.width);
            typename Tokens::Storage const* x = tokens + static_cast<size_t>(token) * c;
            float const wj = w[j];
            for (int32_t ch = 0; ch < c; ++ch)
            {
                acc[ch] = accumulateStep(acc[ch], wj, Tokens::load(x[ch]));
            }
        }
        typename Tokens::Storage* y = out + static_cast<size_t>(t) * c;
        float const b = bias[tier];
        for (int32_t ch = 0; ch < c; ++ch)
        {
            y[ch] = Tokens::store(finishGroup(acc[ch], b));
        }
    }
}

template <typename Tokens>
void aggregateRangeGeneric(SgformerIamParams const& p, typename Tokens::Storage const* tokens, float const* weight,
    float const* bias, bool isColumn, int32_t const* order, int32_t tBegin, int32_t tEnd, float* acc,
    typename Tokens::Storage* out)
{
    aggregateRangeImpl<Tokens>(p, tokens, weight, bias, isColumn, order, tBegin, tEnd, acc, out);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SGFORMER_IAM_HAVE_FMA_CLONE 1
// The same loops compiled for AVX2 + FMA: fmaf becomes the (correctly rounded) vfmadd instruction and the channel
// loop is vectorized; no operation is reordered or contracted (-ffp-contract=off, no fast-math), so the bits are
// those of the generic version.
template <typename Tokens>
__attribute__((target("avx2,fma"))) void aggregateRangeFma(SgformerIamParams const& p,
    typename Tokens::Storage const* tokens, float const* weight, float const* bias, bool isColumn,
    int32_t const* order, int32_t tBegin, int32_t tEnd, float* acc, typename Tokens::Storage* out)
{
    aggregateRangeImpl<Tokens>(p, tokens, weight, bias, isColumn, order, tBegin, tEnd, acc, out);
}

bool cpuHasFma()
{
    static bool const has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return has;
}
#endif

template <typename Tokens>
struct FastJob
{
    SgformerIamParams const* p;
    typename Tokens::Storage const* tokens;
    float const* importance;
    float const* weight;
    float const* bias;
    typename Tokens::Storage* seqRow;
    typename Tokens::Storage* seqCol;
    int32_t* orders; //!< [batch * 2 * numTokens]
    int32_t chunks;  //!< output-token chunks per sequence
    bool fma;

    //! Task i = (batch row, sequence): the sorted order of that sequence.
    static void sortTask(void* ctx, int64_t i)
    {
        auto const& job = *static_cast<FastJob const*>(ctx);
        SgformerIamParams const& p = *job.p;
        int64_t const b = i / 2;
        bool const isColumn = (i % 2) != 0;
        radixSortPositions(p, job.importance + b * p.numTokens, isColumn, job.orders + i * p.numTokens);
    }

    //! Task i = (batch row, sequence, chunk of output tokens): the group sums of that chunk.
    static void sumTask(void* ctx, int64_t i)
    {
        auto const& job = *static_cast<FastJob const*>(ctx);
        SgformerIamParams const& p = *job.p;
        int64_t const sequence = i / job.chunks;
        int32_t const chunk = static_cast<int32_t>(i % job.chunks);
        int64_t const b = sequence / 2;
        bool const isColumn = (sequence % 2) != 0;
        int32_t const tBegin = static_cast<int32_t>(static_cast<int64_t>(p.outTokens) * chunk / job.chunks);
        int32_t const tEnd = static_cast<int32_t>(static_cast<int64_t>(p.outTokens) * (chunk + 1) / job.chunks);
        size_t const inStride = static_cast<size_t>(p.numTokens) * p.channels;
        size_t const outStride = static_cast<size_t>(p.outTokens) * p.channels;
        auto const* tok = job.tokens + b * inStride;
        auto* out = (isColumn ? job.seqCol : job.seqRow) + b * outStride;
        int32_t const* order = job.orders + sequence * p.numTokens;
        float* acc = grow(threadScratch().acc, static_cast<size_t>(p.channels));
#if defined(SGFORMER_IAM_HAVE_FMA_CLONE)
        if (job.fma)
        {
            aggregateRangeFma<Tokens>(p, tok, job.weight, job.bias, isColumn, order, tBegin, tEnd, acc, out);
            return;
        }
#endif
        aggregateRangeGeneric<Tokens>(p, tok, job.weight, job.bias, isColumn, order, tBegin, tEnd, acc, out);
    }
};

template <typename Tokens>
int32_t runFast(SgformerIamCall const& c)
{
    return guarded([&]() {
        SgformerIamParams p;
        int32_t const status = checkArguments(c, p);
        if (status != SGFORMER_IAM_OK)
        {
            return status;
        }
        using Storage = typename Tokens::Storage;
        if (p.batch == 0)
        {
            tLastError.clear();
            return int32_t{SGFORMER_IAM_OK};
        }
        WorkerPool& pool = WorkerPool::instance();
        int64_t const sequences = 2 * static_cast<int64_t>(p.batch);
        int64_t const values = static_cast<int64_t>(p.batch) * p.numTokens * p.channels;
        int32_t const threads = values < kMIN_PARALLEL_VALUES ? 1 : pool.threads();
        // Split each sequence's output tokens only when there are fewer sequences than threads to keep busy.
        int32_t chunks = 1;
        if (sequences < threads)
        {
            int64_t const want = (threads + sequences - 1) / sequences;
            chunks = static_cast<int32_t>(std::max<int64_t>(1, std::min<int64_t>(want, p.outTokens / kMIN_TOKENS_PER_CHUNK)));
        }
        FastJob<Tokens> job{&p, static_cast<Storage const*>(c.tokens), c.importance, c.agg_weight, c.agg_bias,
            static_cast<Storage*>(c.seq_row), static_cast<Storage*>(c.seq_col),
            grow(callerOrders(), static_cast<size_t>(sequences) * p.numTokens), chunks, false};
#if defined(SGFORMER_IAM_HAVE_FMA_CLONE)
        job.fma = cpuHasFma();
#endif
        pool.run(sequences, &FastJob<Tokens>::sortTask, &job, threads);
        pool.run(sequences * chunks, &FastJob<Tokens>::sumTask, &job, threads);
        tLastError.clear();
        return int32_t{SGFORMER_IAM_OK};
    });
}

//! One entry point for both token types: the call checked for null and an unknown token_type first.
int32_t dispatch(SgformerIamCall const* call, int32_t (*fp32)(SgformerIamCall const&),
    int32_t (*fp16)(SgformerIamCall const&))
{
    if (call == nullptr)
    {
        return setError(SGFORMER_IAM_ERR_ARGUMENT, "SGFormerIAM: the call struct is null");
    }
    if (call->token_type == SGFORMER_IAM_FLOAT32)
    {
        return fp32(*call);
    }
    if (call->token_type == SGFORMER_IAM_FLOAT16)
    {
        return fp16(*call);
    }
    return setError(SGFORMER_IAM_ERR_ARGUMENT,
        "SGFormerIAM: token_type=" + std::to_string(call->token_type) + " is neither 0 (float32) nor 1 (float16)");
}

} // namespace

extern "C"
{

int sgformer_iam_ref_api_version(void)
{
    return kAPI_VERSION;
}

int sgformer_iam_ref_run(SgformerIamCall const* call)
{
    return dispatch(call, &runFast<Fp32Tokens>, &runFast<Fp16Tokens>);
}

int sgformer_iam_ref_run_plain(SgformerIamCall const* call)
{
    return dispatch(call, &runPlain<Fp32Tokens>, &runPlain<Fp16Tokens>);
}

int sgformer_iam_ref_call_offsets(size_t* offsets, int capacity)
{
    size_t const all[] = {offsetof(SgformerIamCall, token_type), offsetof(SgformerIamCall, batch),
        offsetof(SgformerIamCall, height), offsetof(SgformerIamCall, width), offsetof(SgformerIamCall, channels),
        offsetof(SgformerIamCall, n_tiers), offsetof(SgformerIamCall, group_sizes),
        offsetof(SgformerIamCall, tier_sizes), offsetof(SgformerIamCall, tokens), offsetof(SgformerIamCall, importance),
        offsetof(SgformerIamCall, agg_weight), offsetof(SgformerIamCall, agg_bias), offsetof(SgformerIamCall, seq_row),
        offsetof(SgformerIamCall, seq_col), sizeof(SgformerIamCall)};
    int const count = static_cast<int>(sizeof(all) / sizeof(all[0]));
    for (int i = 0; offsets != nullptr && i < count && i < capacity; ++i)
    {
        offsets[i] = all[i];
    }
    return count;
}

int sgformer_iam_ref_set_threads(int threads)
{
    if (threads < 1)
    {
        return setError(SGFORMER_IAM_ERR_ARGUMENT,
            "SGFormerIAM: threads=" + std::to_string(threads) + " must be >= 1");
    }
    WorkerPool::instance().setThreads(threads);
    return SGFORMER_IAM_OK;
}

int sgformer_iam_ref_threads(void)
{
    return WorkerPool::instance().threads();
}

int sgformer_iam_ref_out_tokens(int height, int width, int const* group_sizes, int const* tier_sizes, int n_tiers)
{
    SgformerIamParams p;
    char msg[256] = {};
    if (sgformer::iam::makeIamParams(height, width, group_sizes, tier_sizes, n_tiers, p, msg, sizeof(msg)) != 0)
    {
        setError(SGFORMER_IAM_ERR_LAYOUT, msg);
        return -1;
    }
    return p.outTokens;
}

char const* sgformer_iam_ref_last_error(void)
{
    return tLastError.c_str();
}

} // extern "C"
