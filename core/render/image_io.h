#pragma once
// Writing the film to disk, and reading EXR images back (for comparisons with references).
// Pixel buffers are linear RGB, 3 floats per pixel, row-major, top row first.

#include <cstdint>
#include <string>
#include <vector>

#include "core/util/status.h"

namespace pl {

struct ImageRgb {
  uint32_t width = 0, height = 0;
  std::vector<float> rgb;  // 3 floats per pixel, row-major, top row first
};

// The exact piecewise sRGB OETF (IEC 61966-2-1; Blender's "Standard" view transform) of a
// linear value: 12.92 v below 0.0031308, else 1.055 v^(1/2.4) - 0.055. Input clamped to
// [0, 1] first; NaN counts as 0.
float linearToSrgb(float linear);
// linearToSrgb(linear * 2^exposure), scaled to 0..255 and rounded to nearest.
uint8_t linearToSrgb8(float linear, float exposure = 0.0f);

// 8-bit sRGB PNG, RGB. exposure in stops (value * 2^exposure before the OETF).
Status writePng(const std::string& path, uint32_t width, uint32_t height,
                const std::vector<float>& rgb, float exposure = 0.0f);
// The same PNG in memory (the live view's preview frames: the same operator as a saved PNG).
Result<std::vector<uint8_t>> encodePng(uint32_t width, uint32_t height,
                                       const std::vector<float>& rgb, float exposure = 0.0f);
// OpenEXR with 32-bit float R, G, B channels (scene-linear, no exposure), ZIP compressed.
Status writeExr(const std::string& path, uint32_t width, uint32_t height,
                const std::vector<float>& rgb);
// By extension: ".png" (with exposure) or ".exr" (exposure ignored); anything else fails.
Status writeImage(const std::string& path, uint32_t width, uint32_t height,
                  const std::vector<float>& rgb, float exposure = 0.0f);
// True when writeImage() knows the extension of path.
bool isSupportedImagePath(const std::string& path);

// Reads R, G, B of an OpenEXR file (any pixel type, converted to float; alpha ignored).
Result<ImageRgb> readExr(const std::string& path);

}  // namespace pl
