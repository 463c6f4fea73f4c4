/*
 * ctypes harness of the plugin's TensorRT path without TensorRT: drives the IPluginV3 object the way
 * the builder and the runtime do (getCreators -> createPlugin(kBUILD) -> configurePlugin ->
 * getWorkspaceSize -> getFieldsToSerialize -> createPlugin(kRUNTIME) from those fields ->
 * onShapeChange -> attachToContext -> enqueue) on buffers from cudaMalloc.
 *
 * Built through cudahost (tests/plugins/test_iam_kernel_emu.py, CPU) and linkable against cudart for
 * a GPU. Same C signature as the host reference (sgformerIamRef.h) plus the profile's batch range.
 * Plugin error messages (ILogger kERROR/kINTERNAL_ERROR) are captured: sgformer_iam_plugin_last_error().
 */
#include "sgformerIamFields.h"

#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

extern "C" void setLoggerFinder(nvinfer1::ILoggerFinder* finder);
extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);

namespace
{

thread_local std::string tLastError;

class CapturingLogger : public nvinfer1::ILogger
{
public:
    void log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept override
    {
        if (severity <= Severity::kERROR && msg != nullptr)
        {
            tLastError += (tLastError.empty() ? "" : "\n") + std::string(msg);
        }
    }
};

class Finder : public nvinfer1::ILoggerFinder
{
public:
    nvinfer1::ILogger* findLogger() noexcept override
    {
        return &mLogger;
    }

private:
    CapturingLogger mLogger;
};

Finder gFinder;

struct PluginDeleter
{
    void operator()(nvinfer1::IPluginV3* p) const
    {
        delete p;
    }
};
using PluginPtr = std::unique_ptr<nvinfer1::IPluginV3, PluginDeleter>;

struct DeviceBuffer
{
    void* ptr{nullptr};
    explicit DeviceBuffer(size_t bytes)
    {
        if (cudaMalloc(&ptr, bytes > 0 ? bytes : 1) != cudaSuccess)
        {
            ptr = nullptr;
        }
    }
    ~DeviceBuffer()
    {
        if (ptr != nullptr)
        {
            cudaFree(ptr);
        }
    }
    DeviceBuffer(DeviceBuffer const&) = delete;
    DeviceBuffer& operator=(DeviceBuffer const&) = delete;
};

int fail(std::string const& what)
{
    tLastError = what + (tLastError.empty() ? "" : ": " + tLastError);
    return 1;
}

nvinfer1::IPluginCreatorV3One* findCreator()
{
    setLoggerFinder(&gFinder);
    int32_t count = 0;
    nvinfer1::IPluginCreatorInterface* const* creators = getCreators(count);
    for (int32_t i = 0; i < count; ++i)
    {
        nvinfer1::InterfaceInfo const info = creators[i]->getInterfaceInfo();
        if (std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") == 0)
        {
            auto* c = static_cast<nvinfer1::IPluginCreatorV3One*>(creators[i]);
            if (std::strcmp(c->getPluginName(), sgformer::iam::kPLUGIN_NAME) == 0)
            {
                return c;
            }
        }
    }
    return nullptr;
}

nvinfer1::Dims dims(std::initializer_list<int64_t> values)
{
    nvinfer1::Dims d{};
    d.nbDims = static_cast<int32_t>(values.size());
    int32_t i = 0;
    for (int64_t v : values)
    {
        d.d[i++] = v;
    }
    return d;
}

struct Layout
{
    int32_t height, width, channels, nTiers;
    std::vector<int32_t> groups, tiers;
    int64_t numTokens() const
    {
        return int64_t{height} * width;
    }
    int32_t totalWeights() const
    {
        int32_t s = 0;
        for (int32_t g : groups)
        {
            s += g;
        }
        return s;
    }
    int32_t outTokens() const
    {
        int32_t s = 0;
        for (int32_t t = 0; t < nTiers; ++t)
        {
            s += tiers[t] / groups[t];
        }
        return s;
    }
};

//! Build-phase plugin + the descriptors of a profile [minBatch, maxBatch]; returns null with tLastError.
PluginPtr configure(nvinfer1::IPluginCreatorV3One* creator, Layout const& L, nvinfer1::DataType type, int64_t minBatch,
    int64_t maxBatch, size_t* workspaceBytes)
{
    using nvinfer1::PluginField;
    using nvinfer1::PluginFieldType;
    int32_t height = L.height;
    int32_t width = L.width;
    PluginField fields[4] = {
        PluginField(sgformer::iam::kFIELD_HEIGHT, &height, PluginFieldType::kINT32, 1),
        PluginField(sgformer::iam::kFIELD_WIDTH, &width, PluginFieldType::kINT32, 1),
        PluginField(sgformer::iam::kFIELD_GROUP_SIZES, L.groups.data(), PluginFieldType::kINT32, L.nTiers),
        PluginField(sgformer::iam::kFIELD_TIER_SIZES, L.tiers.data(), PluginFieldType::kINT32, L.nTiers),
    };
    nvinfer1::PluginFieldCollection fc{4, fields};
    PluginPtr plugin(creator->createPlugin("iam0", &fc, nvinfer1::TensorRTPhase::kBUILD));
    if (!plugin)
    {
        fail("createPlugin(kBUILD) returned null");
        return nullptr;
    }
    auto* build = static_cast<nvinfer1::IPluginV3OneBuild*>(
        plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kBUILD));
    int64_t const n = L.numTokens();
    int64_t const c = L.channels;
    nvinfer1::DynamicPluginTensorDesc in[4]{};
    nvinfer1::DynamicPluginTensorDesc out[2]{};
    auto set = [&](nvinfer1::DynamicPluginTensorDesc& d, nvinfer1::DataType t, nvinfer1::Dims runtime,
                   nvinfer1::Dims lo, nvinfer1::Dims hi) {
        d.desc.type = t;
        d.desc.format = nvinfer1::TensorFormat::kLINEAR;
        d.desc.dims = runtime;
        d.min = lo;
        d.opt = hi;
        d.max = hi;
    };
    set(in[0], type, dims({-1, n, c}), dims({minBatch, n, c}), dims({maxBatch, n, c}));
    set(in[1], nvinfer1::DataType::kFLOAT, dims({-1, n}), dims({minBatch, n}), dims({maxBatch, n}));
    set(in[2], nvinfer1::DataType::kFLOAT, dims({L.totalWeights()}), dims({L.totalWeights()}), dims({L.totalWeights()}));
    set(in[3], nvinfer1::DataType::kFLOAT, dims({L.nTiers}), dims({L.nTiers}), dims({L.nTiers}));
    int64_t const t = L.outTokens();
    for (auto& o : out)
    {
        set(o, type, dims({-1, t, c}), dims({minBatch, t, c}), dims({maxBatch, t, c}));
    }
    if (build->configurePlugin(in, 4, out, 2) != 0)
    {
        fail("configurePlugin rejected the profile");
        return nullptr;
    }
    *workspaceBytes = build->getWorkspaceSize(in, 4, out, 2);
    return plugin;
}

int run(nvinfer1::DataType type, size_t elementBytes, void const* tokens, float const* importance, float const* weight,
    float const* bias, int batch, int height, int width, int channels, int const* groupSizes, int const* tierSizes,
    int nTiers, void* seqRow, void* seqCol, int maxBatch)
{
    tLastError.clear();
    nvinfer1::IPluginCreatorV3One* creator = findCreator();
    if (creator == nullptr)
    {
        return fail("no SGFormerIAM creator in getCreators()");
    }
    if (nTiers < 1 || nTiers > 3 || batch < 0 || maxBatch < batch)
    {
        return fail("bad harness arguments");
    }
    Layout L{height, width, channels, nTiers, std::vector<int32_t>(groupSizes, groupSizes + nTiers),
        std::vector<int32_t>(tierSizes, tierSizes + nTiers)};
    size_t workspaceBytes = 0;
    PluginPtr built = configure(creator, L, type, batch < 1 ? 0 : 1, maxBatch, &workspaceBytes);
    if (!built)
    {
        return 1;
    }
    // Runtime: a plugin made from the serialized fields, as deserialization does.
    auto* builtRuntime = static_cast<nvinfer1::IPluginV3OneRuntime*>(
        built->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
    nvinfer1::PluginFieldCollection const* serialized = builtRuntime->getFieldsToSerialize();
    if (serialized == nullptr)
    {
        return fail("getFieldsToSerialize returned null");
    }
    PluginPtr deserialized(creator->createPlugin("iam0", serialized, nvinfer1::TensorRTPhase::kRUNTIME));
    if (!deserialized)
    {
        return fail("createPlugin(kRUNTIME) from the serialized fields returned null");
    }
    auto* runtime0 = static_cast<nvinfer1::IPluginV3OneRuntime*>(
        deserialized->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
    PluginPtr context(runtime0->attachToContext(nullptr));
    if (!context)
    {
        return fail("attachToContext returned null");
    }
    auto* runtime = static_cast<nvinfer1::IPluginV3OneRuntime*>(
        context->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));

    int64_t const n = L.numTokens();
    int64_t const t = L.outTokens();
    nvinfer1::PluginTensorDesc in[4]{};
    nvinfer1::PluginTensorDesc out[2]{};
    auto set = [](nvinfer1::PluginTensorDesc& d, nvinfer1::DataType ty, nvinfer1::Dims dd) {
        d.type = ty;
        d.format = nvinfer1::TensorFormat::kLINEAR;
        d.dims = dd;
        d.scale = 1.0f;
    };
    set(in[0], type, dims({batch, n, channels}));
    set(in[1], nvinfer1::DataType::kFLOAT, dims({batch, n}));
    set(in[2], nvinfer1::DataType::kFLOAT, dims({L.totalWeights()}));
    set(in[3], nvinfer1::DataType::kFLOAT, dims({nTiers}));
    set(out[0], type, dims({batch, t, channels}));
    set(out[1], type, dims({batch, t, channels}));
    if (runtime->onShapeChange(in, 4, out, 2) != 0)
    {
        return fail("onShapeChange failed");
    }

    size_t const inBytes = static_cast<size_t>(batch) * n * channels * elementBytes;
    size_t const outBytes = static_cast<size_t>(batch) * t * channels * elementBytes;
    size_t const impBytes = static_cast<size_t>(batch) * n * sizeof(float);
    DeviceBuffer dTok(inBytes), dImp(impBytes), dW(L.totalWeights() * sizeof(float)), dB(nTiers * sizeof(float)),
        dRow(outBytes), dCol(outBytes), dWs(workspaceBytes);
    if (!dTok.ptr || !dImp.ptr || !dW.ptr || !dB.ptr || !dRow.ptr || !dCol.ptr || !dWs.ptr)
    {
        return fail("cudaMalloc failed");
    }
    cudaStream_t stream{};
    if (cudaStreamCreate(&stream) != cudaSuccess)
    {
        return fail("cudaStreamCreate failed");
    }
    cudaMemcpyAsync(dTok.ptr, tokens, inBytes, cudaMemcpyHostToDevice, stream);
    cudaMemcpyAsync(dImp.ptr, importance, impBytes, cudaMemcpyHostToDevice, stream);
    cudaMemcpyAsync(dW.ptr, weight, L.totalWeights() * sizeof(float), cudaMemcpyHostToDevice, stream);
    cudaMemcpyAsync(dB.ptr, bias, nTiers * sizeof(float), cudaMemcpyHostToDevice, stream);
    cudaMemsetAsync(dRow.ptr, 0xff, outBytes, stream);
    cudaMemsetAsync(dCol.ptr, 0xff, outBytes, stream);
    void const* inputs[4] = {dTok.ptr, dImp.ptr, dW.ptr, dB.ptr};
    void* outputs[2] = {dRow.ptr, dCol.ptr};
    int32_t const status = runtime->enqueue(in, out, inputs, outputs, dWs.ptr, stream);
    cudaMemcpyAsync(seqRow, dRow.ptr, outBytes, cudaMemcpyDeviceToHost, stream);
    cudaMemcpyAsync(seqCol, dCol.ptr, outBytes, cudaMemcpyDeviceToHost, stream);
    cudaError_t const sync = cudaStreamSynchronize(stream);
    cudaStreamDestroy(stream);
    if (status != 0)
    {
        return fail("enqueue failed");
    }
    if (sync != cudaSuccess)
    {
        return fail(std::string("cudaStreamSynchronize: ") + cudaGetErrorName(sync));
    }
    return 0;
}

} // namespace

extern "C"
{

__attribute__((visibility("default"))) int sgformer_iam_plugin_fp32(float const* tokens, float const* importance,
    float const* agg_weight, float const* agg_bias, int batch, int height, int width, int channels,
    int const* group_sizes, int const* tier_sizes, int n_tiers, float* seq_row, float* seq_col, int max_batch)
{
    return run(nvinfer1::DataType::kFLOAT, sizeof(float), tokens, importance, agg_weight, agg_bias, batch, height,
        width, channels, group_sizes, tier_sizes, n_tiers, seq_row, seq_col, max_batch);
}

__attribute__((visibility("default"))) int sgformer_iam_plugin_fp16(uint16_t const* tokens, float const* importance,
    float const* agg_weight, float const* agg_bias, int batch, int height, int width, int channels,
    int const* group_sizes, int const* tier_sizes, int n_tiers, uint16_t* seq_row, uint16_t* seq_col, int max_batch)
{
    return run(nvinfer1::DataType::kHALF, sizeof(uint16_t), tokens, importance, agg_weight, agg_bias, batch, height,
        width, channels, group_sizes, tier_sizes, n_tiers, seq_row, seq_col, max_batch);
}

//! Build phase only: 0 and the workspace size if configurePlugin accepts the profile, else 1 (message).
__attribute__((visibility("default"))) int sgformer_iam_plugin_configure(int height, int width, int channels,
    int const* group_sizes, int const* tier_sizes, int n_tiers, long long min_batch, long long max_batch,
    unsigned long long* workspace_bytes)
{
    tLastError.clear();
    nvinfer1::IPluginCreatorV3One* creator = findCreator();
    if (creator == nullptr || n_tiers < 1 || n_tiers > 3)
    {
        return fail("no creator or bad n_tiers");
    }
    Layout L{height, width, channels, n_tiers, std::vector<int32_t>(group_sizes, group_sizes + n_tiers),
        std::vector<int32_t>(tier_sizes, tier_sizes + n_tiers)};
    size_t ws = 0;
    PluginPtr p = configure(creator, L, nvinfer1::DataType::kFLOAT, min_batch, max_batch, &ws);
    if (!p)
    {
        return 1;
    }
    if (workspace_bytes != nullptr)
    {
        *workspace_bytes = ws;
    }
    return 0;
}

__attribute__((visibility("default"))) char const* sgformer_iam_plugin_last_error(void)
{
    return tLastError.c_str();
}

} // extern "C"
