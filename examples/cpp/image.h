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

//! Eval transform of pipeline/images.py: returns 3 * size * size floats, CHW, normalized.
std::vector<float> preprocess(RgbImage const& image, int32_t size, float cropPct = 0.9F);

} // namespace sgformer
