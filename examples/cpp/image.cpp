#include "image.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <stdexcept>

namespace sgformer
{
namespace
{
constexpr float kMEAN[3] = {0.485F, 0.456F, 0.406F};
constexpr float kSTD[3] = {0.229F, 0.224F, 0.225F};
constexpr double kBICUBIC_A = -0.5; // the same kernel as Pillow's BICUBIC

//! Next header token of a PPM, skipping whitespace and '#' comments.
std::string nextToken(std::istream& in)
{
    std::string token;
    int c = in.get();
    while (c != EOF)
    {
        if (c == '#')
        {
            while (c != EOF && c != '\n')
            {
                c = in.get();
            }
        }
        else if (std::isspace(c))
        {
            if (!token.empty())
            {
                break;
            }
        }
        else
        {
            token.push_back(static_cast<char>(c));
        }
        c = in.get();
    }
    return token;
}

double bicubic(double x)
{
    x = std::fabs(x);
    if (x < 1.0)
    {
        return ((kBICUBIC_A + 2.0) * x - (kBICUBIC_A + 3.0)) * x * x + 1.0;
    }
    if (x < 2.0)
    {
        return (((x - 5.0) * x + 8.0) * x - 4.0) * kBICUBIC_A;
    }
    return 0.0;
}

//! Resample one axis like Pillow: the kernel is widened by the scale when shrinking (antialiasing).
//! src has `inLen` samples of `channels` values spaced `stride` apart along the axis; `count` lines are processed.
struct AxisWeights
{
    std::vector<int32_t> first;
    std::vector<int32_t> size;
    std::vector<double> weights; // outLen * maxTaps
    int32_t maxTaps{0};
};

AxisWeights axisWeights(int32_t inLen, int32_t outLen)
{
    double const scale = static_cast<double>(inLen) / outLen;
    double const filterScale = std::max(scale, 1.0);
    double const support = 2.0 * filterScale;
    AxisWeights aw;
    aw.maxTaps = static_cast<int32_t>(std::ceil(support)) * 2 + 1;
    aw.first.resize(outLen);
    aw.size.resize(outLen);
    aw.weights.assign(static_cast<size_t>(outLen) * aw.maxTaps, 0.0);
    for (int32_t i = 0; i < outLen; ++i)
    {
        double const center = (i + 0.5) * scale;
        int32_t const lo = std::max(0, static_cast<int32_t>(center - support + 0.5));
        int32_t const hi = std::min(inLen, static_cast<int32_t>(center + support + 0.5));
        double total = 0.0;
        double* w = &aw.weights[static_cast<size_t>(i) * aw.maxTaps];
        for (int32_t j = lo; j < hi; ++j)
        {
            w[j - lo] = bicubic((j - center + 0.5) / filterScale);
            total += w[j - lo];
        }
        for (int32_t j = 0; j < hi - lo && total != 0.0; ++j)
        {
            w[j] /= total;
        }
        aw.first[i] = lo;
        aw.size[i] = hi - lo;
    }
    return aw;
}

//! Bicubic resize of an HWC float image (3 channels).
std::vector<float> resize(std::vector<float> const& src, int32_t w, int32_t h, int32_t outW, int32_t outH)
{
    AxisWeights const ax = axisWeights(w, outW);
    std::vector<float> tmp(static_cast<size_t>(h) * outW * 3);
    for (int32_t y = 0; y < h; ++y)
    {
        for (int32_t x = 0; x < outW; ++x)
        {
            double const* wt = &ax.weights[static_cast<size_t>(x) * ax.maxTaps];
            for (int32_t c = 0; c < 3; ++c)
            {
                double acc = 0.0;
                for (int32_t k = 0; k < ax.size[x]; ++k)
                {
                    acc += wt[k] * src[(static_cast<size_t>(y) * w + ax.first[x] + k) * 3 + c];
                }
                // Pillow keeps 8-bit images 8-bit between the two passes.
                tmp[(static_cast<size_t>(y) * outW + x) * 3 + c]
                    = static_cast<float>(std::clamp(std::round(acc), 0.0, 255.0));
            }
        }
    }
    AxisWeights const ay = axisWeights(h, outH);
    std::vector<float> out(static_cast<size_t>(outH) * outW * 3);
    for (int32_t y = 0; y < outH; ++y)
    {
        double const* wt = &ay.weights[static_cast<size_t>(y) * ay.maxTaps];
        for (int32_t x = 0; x < outW; ++x)
        {
            for (int32_t c = 0; c < 3; ++c)
            {
                double acc = 0.0;
                for (int32_t k = 0; k < ay.size[y]; ++k)
                {
                    acc += wt[k] * tmp[(static_cast<size_t>(ay.first[y] + k) * outW + x) * 3 + c];
                }
                // Pillow rounds to 8 bits after resizing; do the same so the numbers match pipeline/images.py.
                out[(static_cast<size_t>(y) * outW + x) * 3 + c]
                    = static_cast<float>(std::clamp(std::round(acc), 0.0, 255.0));
            }
        }
    }
    return out;
}
} // namespace

RgbImage readPpm(std::string const& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
    {
        throw std::runtime_error("cannot open image " + path);
    }
    if (nextToken(in) != "P6")
    {
        throw std::runtime_error(path + " is not a binary PPM (P6); convert it, e.g. `convert photo.jpg photo.ppm`");
    }
    RgbImage image;
    int32_t maxval = 0;
    try
    {
        image.width = std::stoi(nextToken(in));
        image.height = std::stoi(nextToken(in));
        maxval = std::stoi(nextToken(in));
    }
    catch (std::exception const&)
    {
        throw std::runtime_error(path + ": malformed PPM header");
    }
    if (image.width <= 0 || image.height <= 0 || maxval != 255)
    {
        throw std::runtime_error(path + ": expected a positive size and maxval 255 (8-bit RGB)");
    }
    image.pixels.resize(static_cast<size_t>(image.width) * image.height * 3);
    in.read(reinterpret_cast<char*>(image.pixels.data()), static_cast<std::streamsize>(image.pixels.size()));
    if (in.gcount() != static_cast<std::streamsize>(image.pixels.size()))
    {
        throw std::runtime_error(path + ": truncated pixel data");
    }
    return image;
}

InputFormat parseInputFormat(std::string const& text)
{
    if (text == "normalized")
    {
        return InputFormat::kNORMALIZED;
    }
    if (text == "rgb-float01")
    {
        return InputFormat::kRGB_FLOAT01;
    }
    if (text == "rgb-uint8")
    {
        return InputFormat::kRGB_UINT8;
    }
    throw std::invalid_argument("input format '" + text + "' is not one of normalized, rgb-float01, rgb-uint8");
}

std::vector<uint8_t> cropPixels(RgbImage const& image, int32_t height, int32_t width, float cropPct)
{
    // Cover floor(height / cropPct) x floor(width / cropPct) keeping the aspect ratio (for a square: the shorter
    // side to floor(size / cropPct)), then center-crop height x width, as pipeline/data/images.py does.
    int32_t const boxH = static_cast<int32_t>(std::floor(height / static_cast<double>(cropPct)));
    int32_t const boxW = static_cast<int32_t>(std::floor(width / static_cast<double>(cropPct)));
    int32_t newW = boxW;
    int32_t newH = boxH;
    if (static_cast<int64_t>(image.width) * boxH <= static_cast<int64_t>(image.height) * boxW)
    {
        newH = std::max(boxH, static_cast<int32_t>(static_cast<int64_t>(boxW) * image.height / image.width));
    }
    else
    {
        newW = std::max(boxW, static_cast<int32_t>(static_cast<int64_t>(boxH) * image.width / image.height));
    }
    std::vector<float> src(image.pixels.begin(), image.pixels.end());
    std::vector<float> const resized = resize(src, image.width, image.height, newW, newH); // rounded to 0..255
    // Python's round() rounds half to even; nearbyint does too in the default rounding mode.
    int32_t const left = static_cast<int32_t>(std::nearbyint((newW - width) / 2.0));
    int32_t const top = static_cast<int32_t>(std::nearbyint((newH - height) / 2.0));
    std::vector<uint8_t> chw(static_cast<size_t>(3) * height * width);
    for (int32_t c = 0; c < 3; ++c)
    {
        for (int32_t y = 0; y < height; ++y)
        {
            for (int32_t x = 0; x < width; ++x)
            {
                float const v = resized[(static_cast<size_t>(top + y) * newW + left + x) * 3 + c];
                chw[(static_cast<size_t>(c) * height + y) * width + x] = static_cast<uint8_t>(v);
            }
        }
    }
    return chw;
}

std::vector<uint8_t> cropPixels(RgbImage const& image, int32_t size, float cropPct)
{
    return cropPixels(image, size, size, cropPct);
}

std::vector<float> toFloatInput(std::vector<uint8_t> const& chw, InputFormat format)
{
    size_t const plane = chw.size() / 3;
    std::vector<float> out(chw.size());
    for (size_t i = 0; i < chw.size(); ++i)
    {
        size_t const c = i / plane;
        float const v = static_cast<float>(chw[i]);
        if (format == InputFormat::kRGB_UINT8)
        {
            out[i] = v;
        }
        else if (format == InputFormat::kRGB_FLOAT01)
        {
            out[i] = v / 255.0F;
        }
        else
        {
            out[i] = (v / 255.0F - kMEAN[c]) / kSTD[c];
        }
    }
    return out;
}

std::vector<float> preprocess(RgbImage const& image, int32_t size, float cropPct)
{
    return toFloatInput(cropPixels(image, size, cropPct), InputFormat::kNORMALIZED);
}

} // namespace sgformer
