// Tiny, dependency-free image input for the example: binary PPM (P6, 8-bit RGB) reading and the SG-Former eval
// transform (resize shorter side to floor(size / 0.9) with bicubic, center crop, ImageNet mean/std, CHW float).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sgformer
{

struct RgbImage
{
    int32_t width{0};
    int32_t height{0};
    std::vector<uint8_t> pixels; // HWC, RGB
};

//! Read a binary PPM (P6, maxval 255). Throws std::runtime_error naming the file on any problem.
RgbImage readPpm(std::string const& path);

//! What the engine's images input holds (manifest.json "input_format"; `sgformer-trt export --input-format`).
enum class InputFormat
{
    kNORMALIZED,  //!< float32, ImageNet mean/std applied (the default export)
    kRGB_FLOAT01, //!< float32 RGB in [0, 1]; the engine normalizes
    kRGB_UINT8,   //!< uint8 RGB 0..255; the engine converts and normalizes
};

//! "normalized" | "rgb-float01" | "rgb-uint8"; throws std::invalid_argument naming the valid values otherwise.
InputFormat parseInputFormat(std::string const& text);

//! Resize (shorter side to floor(size / cropPct), bicubic) and center-crop: 3 * size * size pixels, CHW, RGB.
std::vector<uint8_t> cropPixels(RgbImage const& image, int32_t size, float cropPct = 0.9F);

//! H x W inputs: resize (bicubic, aspect kept) to cover floor(height / cropPct) x floor(width / cropPct), then
//! center-crop: 3 * height * width pixels, CHW, RGB.
std::vector<uint8_t> cropPixels(RgbImage const& image, int32_t height, int32_t width, float cropPct);

//! Cropped CHW pixels -> float input of ``format`` (kRGB_UINT8 takes the pixels as they are).
std::vector<float> toFloatInput(std::vector<uint8_t> const& chw, InputFormat format);

//! Eval transform of pipeline/images.py: returns 3 * size * size floats, CHW, normalized.
std::vector<float> preprocess(RgbImage const& image, int32_t size, float cropPct = 0.9F);

} // namespace sgformer
