// sgformer_classify: load the SG-Former plugin library and a TensorRT engine, classify PPM images, print the
// top-5 classes and the latency. Usage (see README.md):
//
//   sgformer_classify --engine engines/s-fp16-224/s-fp16.engine
//       --plugins engines/s-fp16-224/libsgformer_plugins.so [--labels imagenet_classes.txt]
//       [--input-format auto|normalized|rgb-float01|rgb-uint8] [--warmup 5] [--iters 20] image.ppm [image.ppm ...]
//
// --input-format auto (default): a uint8 input tensor means rgb-uint8; otherwise the "input_format" of the
// manifest.json beside the engine, else normalized (what `sgformer-trt export` writes by default).
#include "image.h"

#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <iterator>
#include <memory>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace
{

#define CUDA_CHECK(call)                                                                                               \
    do                                                                                                                 \
    {                                                                                                                  \
        cudaError_t const status_ = (call);                                                                            \
        if (status_ != cudaSuccess)                                                                                    \
        {                                                                                                              \
            throw std::runtime_error(std::string(#call) + ": " + cudaGetErrorString(status_));                          \
        }                                                                                                              \
    } while (0)

class Logger final : public nvinfer1::ILogger
{
public:
    void log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept override
    {
        if (severity <= Severity::kWARNING)
        {
            std::cerr << "[TensorRT] " << msg << "\n";
        }
    }
};

struct Options
{
    std::string engine;
    std::string plugins;
    std::string labels;
    std::string inputFormat{"auto"};
    int32_t warmup{5};
    int32_t iters{20};
    std::vector<std::string> images;
};

char const* const kHelp =
    "sgformer_classify: classify PPM images with an SG-Former TensorRT engine (the SGFormerIAM plugin loaded first)\n"
    "\n"
    "usage: sgformer_classify --engine FILE.engine [--plugins LIB.so] [--labels FILE]\n"
    "                         [--input-format auto|normalized|rgb-float01|rgb-uint8] [--warmup N] [--iters N]\n"
    "                         image.ppm [image.ppm ...]\n"
    "\n"
    "  --engine FILE        serialized engine (engines/<variant>-<precision>-<res>/<variant>-<precision>.engine)\n"
    "  --plugins LIB        libsgformer_plugins.so (the copy in the engine folder)\n"
    "  --labels FILE        class names, one per line (default: class indices)\n"
    "  --input-format F     what the engine's input holds; auto (default) reads the engine (uint8 -> rgb-uint8)\n"
    "  --warmup N           untimed runs first (default 5)\n"
    "  --iters N            timed runs (default 20)\n"
    "  -h, --help           show this help and exit\n"
    "\n"
    "Images: binary PPM (P6); resized and center-cropped like the Python pipeline. An engine made without a\n"
    "checkpoint has random weights: its predictions mean nothing (the engine folder's manifest.json says).\n";

[[noreturn]] void usage(char const* why)
{
    std::cerr << "error: " << why << "\nusage: sgformer_classify --engine FILE.engine [--plugins LIB.so] "
              << "[--labels FILE] [--input-format auto|normalized|rgb-float01|rgb-uint8] [--warmup N] [--iters N] "
              << "image.ppm [...]\n(sgformer_classify --help for the options)\n";
    std::exit(2);
}

Options parseArgs(int argc, char** argv)
{
    Options o;
    for (int i = 1; i < argc; ++i)
    {
        std::string const arg = argv[i];
        if (arg == "--help" || arg == "-h")
        {
            std::cout << kHelp;
            std::exit(0);
        }
        auto value = [&]() -> std::string {
            if (i + 1 >= argc)
            {
                usage(("missing value for " + arg).c_str());
            }
            return argv[++i];
        };
        if (arg == "--engine")
        {
            o.engine = value();
        }
        else if (arg == "--plugins")
        {
            o.plugins = value();
        }
        else if (arg == "--labels")
        {
            o.labels = value();
        }
        else if (arg == "--input-format")
        {
            o.inputFormat = value();
        }
        else if (arg == "--warmup")
        {
            o.warmup = std::stoi(value());
        }
        else if (arg == "--iters")
        {
            o.iters = std::max(1, std::stoi(value()));
        }
        else if (arg.rfind("--", 0) == 0)
        {
            usage(("unknown option " + arg).c_str());
        }
        else
        {
            o.images.push_back(arg);
        }
    }
    if (o.engine.empty() || o.images.empty())
    {
        usage("--engine and at least one image are required");
    }
    return o;
}

std::vector<char> readFile(std::string const& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
    {
        throw std::runtime_error("cannot open " + path);
    }
    return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

//! The "input_format" value of the manifest.json beside ``enginePath`` ("" when there is none). A string scan, not
//! a JSON parser: the manifest is written by pipeline/manifest.py with one `"key": value` per line.
std::string manifestInputFormat(std::string const& enginePath)
{
    std::string const dir = enginePath.find('/') == std::string::npos ? "." : enginePath.substr(0, enginePath.rfind('/'));
    std::ifstream in(dir + "/manifest.json");
    std::string line;
    std::string const key = "\"input_format\":";
    while (std::getline(in, line))
    {
        size_t const at = line.find(key);
        if (at == std::string::npos)
        {
            continue;
        }
        size_t const open = line.find('"', at + key.size());
        size_t const close = open == std::string::npos ? open : line.find('"', open + 1);
        if (close != std::string::npos)
        {
            return line.substr(open + 1, close - open - 1);
        }
    }
    return "";
}

std::vector<std::string> readLabels(std::string const& path)
{
    std::vector<std::string> labels;
    if (path.empty())
    {
        return labels;
    }
    std::ifstream in(path);
    if (!in)
    {
        throw std::runtime_error("cannot open labels file " + path);
    }
    for (std::string line; std::getline(in, line);)
    {
        labels.push_back(line);
    }
    return labels;
}

std::string dimsToString(nvinfer1::Dims const& d)
{
    std::ostringstream s;
    s << "[";
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        s << (i ? ", " : "") << d.d[i];
    }
    s << "]";
    return s.str();
}

struct DeviceBuffer
{
    void* ptr{nullptr};
    explicit DeviceBuffer(size_t bytes) { CUDA_CHECK(cudaMalloc(&ptr, bytes)); }
    ~DeviceBuffer() { cudaFree(ptr); }
    DeviceBuffer(DeviceBuffer const&) = delete;
    DeviceBuffer& operator=(DeviceBuffer const&) = delete;
};

int run(Options const& opt)
{
    Logger logger;
    std::unique_ptr<nvinfer1::IRuntime> runtime{nvinfer1::createInferRuntime(logger)};
    if (!runtime)
    {
        throw std::runtime_error("createInferRuntime failed (TensorRT library and headers differ?)");
    }
    if (!opt.plugins.empty() && runtime->getPluginRegistry().loadLibrary(opt.plugins.c_str()) == nullptr)
    {
        throw std::runtime_error("cannot load plugin library " + opt.plugins
            + " (it must export getCreators and be built for this TensorRT; `make plugins`)");
    }
    std::vector<char> const blob = readFile(opt.engine);
    std::unique_ptr<nvinfer1::ICudaEngine> engine{runtime->deserializeCudaEngine(blob.data(), blob.size())};
    if (!engine)
    {
        throw std::runtime_error("cannot deserialize " + opt.engine
            + ": engines only run with the TensorRT version and GPU architecture they were built for "
              "(see manifest.json; rebuild on this device with `make engine`)");
    }
    std::unique_ptr<nvinfer1::IExecutionContext> context{engine->createExecutionContext()};

    std::string input;
    std::vector<std::string> outputs; // a classifier: logits; a backbone (TASK=features): stage1..stage4
    bool uint8Input = false;
    for (int32_t i = 0; i < engine->getNbIOTensors(); ++i)
    {
        char const* name = engine->getIOTensorName(i);
        bool const isInput = engine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT;
        nvinfer1::DataType const type = engine->getTensorDataType(name);
        if (isInput && type == nvinfer1::DataType::kUINT8)
        {
            uint8Input = true;
        }
        else if (type != nvinfer1::DataType::kFLOAT)
        {
            throw std::runtime_error(std::string("tensor ") + name + " is neither float32 nor a uint8 image input; this "
                                     "example expects fp32 (or rgb-uint8) images in and fp32 logits out (precision "
                                     "lives inside the graph)");
        }
        if (isInput)
        {
            input = name;
        }
        else
        {
            outputs.emplace_back(name);
        }
    }
    std::string formatName = opt.inputFormat;
    if (formatName == "auto")
    {
        formatName = uint8Input ? "rgb-uint8" : manifestInputFormat(opt.engine);
        formatName = formatName.empty() ? "normalized" : formatName;
    }
    sgformer::InputFormat const format = sgformer::parseInputFormat(formatName);
    if ((format == sgformer::InputFormat::kRGB_UINT8) != uint8Input)
    {
        throw std::runtime_error("input format " + formatName + " does not match the engine's "
                                 + (uint8Input ? "uint8" : "float32") + " input tensor");
    }
    size_t const elementBytes = uint8Input ? 1 : sizeof(float);
    if (input.empty() || outputs.empty())
    {
        throw std::runtime_error("expected one input and at least one output tensor");
    }
    nvinfer1::Dims const maxShape = engine->getProfileShape(input.c_str(), 0, nvinfer1::OptProfileSelector::kMAX);
    nvinfer1::Dims const minShape = engine->getProfileShape(input.c_str(), 0, nvinfer1::OptProfileSelector::kMIN);
    if (maxShape.nbDims != 4 || maxShape.d[1] != 3)
    {
        throw std::runtime_error("unexpected input profile " + dimsToString(maxShape) + " (want [B, 3, H, W])");
    }
    int32_t const height = static_cast<int32_t>(maxShape.d[2]);
    int32_t const width = static_cast<int32_t>(maxShape.d[3]);
    int32_t const maxBatch = static_cast<int32_t>(maxShape.d[0]);
    int32_t const minBatch = static_cast<int32_t>(minShape.d[0]);
    std::vector<std::string> const labels = readLabels(opt.labels);

    // Preprocess every image; batches of up to the profile's max run one after another.
    size_t const imageFloats = static_cast<size_t>(3) * height * width; // elements per image
    std::vector<uint8_t> host; // the engine's input bytes for every image
    for (auto const& path : opt.images)
    {
        std::vector<uint8_t> const pixels = sgformer::cropPixels(sgformer::readPpm(path), height, width, 0.9F);
        if (uint8Input)
        {
            host.insert(host.end(), pixels.begin(), pixels.end());
            continue;
        }
        std::vector<float> const chw = sgformer::toFloatInput(pixels, format);
        auto const* bytes = reinterpret_cast<uint8_t const*>(chw.data());
        host.insert(host.end(), bytes, bytes + chw.size() * sizeof(float));
    }

    cudaStream_t stream{};
    CUDA_CHECK(cudaStreamCreate(&stream));
    context->setInputShape(input.c_str(), nvinfer1::Dims4{maxBatch, 3, height, width});
    DeviceBuffer dIn(imageFloats * maxBatch * elementBytes);
    context->setTensorAddress(input.c_str(), dIn.ptr);
    int32_t const total = static_cast<int32_t>(opt.images.size());
    // One device buffer and one host array per output; perImage: elements of one image's slice ([C] or [C, h, w]).
    std::vector<size_t> perImage;
    std::vector<nvinfer1::Dims> outShapes;
    std::vector<std::unique_ptr<DeviceBuffer>> dOuts;
    std::vector<std::vector<float>> results;
    for (auto const& name : outputs)
    {
        nvinfer1::Dims const shape = context->getTensorShape(name.c_str());
        size_t elems = 1;
        for (int32_t d = 1; d < shape.nbDims; ++d)
        {
            elems *= static_cast<size_t>(shape.d[d]);
        }
        perImage.push_back(elems);
        outShapes.push_back(shape);
        dOuts.push_back(std::make_unique<DeviceBuffer>(elems * maxBatch * sizeof(float)));
        context->setTensorAddress(name.c_str(), dOuts.back()->ptr);
        results.emplace_back(elems * total);
    }
    std::vector<double> latenciesMs;
    for (int32_t start = 0; start < total; start += maxBatch)
    {
        int32_t const n = std::min(maxBatch, total - start);
        int32_t const batch = std::max(n, minBatch); // pad up to the profile's min batch with zeros
        std::vector<uint8_t> chunk(imageFloats * batch * elementBytes, 0);
        std::copy_n(host.begin() + imageFloats * elementBytes * start, imageFloats * elementBytes * n, chunk.begin());
        if (!context->setInputShape(input.c_str(), nvinfer1::Dims4{batch, 3, height, width}))
        {
            throw std::runtime_error("batch " + std::to_string(batch) + " is outside the engine's profile");
        }
        CUDA_CHECK(cudaMemcpyAsync(dIn.ptr, chunk.data(), chunk.size(), cudaMemcpyHostToDevice, stream));
        cudaEvent_t begin{};
        cudaEvent_t end{};
        CUDA_CHECK(cudaEventCreate(&begin));
        CUDA_CHECK(cudaEventCreate(&end));
        for (int32_t i = 0; i < opt.warmup; ++i)
        {
            context->enqueueV3(stream);
        }
        CUDA_CHECK(cudaEventRecord(begin, stream));
        for (int32_t i = 0; i < opt.iters; ++i)
        {
            if (!context->enqueueV3(stream))
            {
                throw std::runtime_error("enqueueV3 failed (see the TensorRT messages above)");
            }
        }
        CUDA_CHECK(cudaEventRecord(end, stream));
        for (size_t o = 0; o < outputs.size(); ++o)
        {
            CUDA_CHECK(cudaMemcpyAsync(results[o].data() + perImage[o] * start, dOuts[o]->ptr,
                perImage[o] * n * sizeof(float), cudaMemcpyDeviceToHost, stream));
        }
        CUDA_CHECK(cudaStreamSynchronize(stream));
        float ms = 0.0F;
        CUDA_CHECK(cudaEventElapsedTime(&ms, begin, end));
        latenciesMs.push_back(ms / opt.iters);
        cudaEventDestroy(begin);
        cudaEventDestroy(end);
        std::cout << "batch " << batch << ": " << std::fixed << std::setprecision(3) << latenciesMs.back()
                  << " ms per inference (GPU time, mean of " << opt.iters << ")\n";
    }
    cudaStreamDestroy(stream);

    if (outputs.size() > 1 || outShapes[0].nbDims != 2)
    {
        // A backbone: print each map's shape and value range; a detector's neck would take these buffers.
        for (size_t o = 0; o < outputs.size(); ++o)
        {
            auto const [lo, hi] = std::minmax_element(results[o].begin(), results[o].end());
            nvinfer1::Dims shape = outShapes[o];
            shape.d[0] = total;
            std::cout << outputs[o] << ": shape " << dimsToString(shape) << " (N, C, H, W), values " << *lo << " .. "
                      << *hi << "\n";
        }
        return 0;
    }
    std::vector<float> const& logits = results[0];
    size_t const classes = perImage[0];
    for (int32_t img = 0; img < total; ++img)
    {
        float const* row = logits.data() + classes * img;
        float const peak = *std::max_element(row, row + classes);
        std::vector<double> prob(classes);
        double sum = 0.0;
        for (size_t c = 0; c < classes; ++c)
        {
            prob[c] = std::exp(static_cast<double>(row[c]) - peak);
            sum += prob[c];
        }
        std::vector<size_t> order(classes);
        std::iota(order.begin(), order.end(), 0);
        size_t const k = std::min<size_t>(5, classes);
        std::partial_sort(order.begin(), order.begin() + k, order.end(),
            [&](size_t a, size_t b) { return prob[a] > prob[b] || (prob[a] == prob[b] && a < b); });
        std::cout << opt.images[img] << ":";
        for (size_t r = 0; r < k; ++r)
        {
            size_t const c = order[r];
            std::cout << "  " << r + 1 << ". " << (c < labels.size() ? labels[c] : "class " + std::to_string(c))
                      << " (" << std::setprecision(3) << prob[c] / sum << ")";
        }
        std::cout << "\n";
    }
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    try
    {
        return run(parseArgs(argc, argv));
    }
    catch (std::exception const& e)
    {
        std::cerr << "sgformer_classify: error: " << e.what() << "\n";
        return 1;
    }
}
