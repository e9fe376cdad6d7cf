#pragma once
// Writing the film to disk, and reading EXR images back (for comparisons with references).
// Pixel buffers are linear RGB, 3 floats per pixel, row-major, top row first.

#include <cstdint>
#include <string>
#include <vector>

#include "core/render/film.h"
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
// A named group of channels in an EXR ("albedo" with R, G, B; "normal" with X, Y, Z; "depth"
// with Z), written as "name.channel". values: 3 floats per pixel (the first channels.size()
// of each are written).
struct ExrLayer {
  std::string name;
  std::vector<std::string> channels;
  std::vector<float> values;
};

// OpenEXR with 32-bit float R, G, B channels (scene-linear, no exposure) and the given
// layers, ZIP compressed.
Status writeExr(const std::string& path, uint32_t width, uint32_t height,
                const std::vector<float>& rgb, const std::vector<ExrLayer>& layers = {});
// The film's passes (kernel::FilmPass bits of `passes` that it holds) as EXR layers:
// albedo.R/G/B, normal.X/Y/Z, depth.Z.
std::vector<ExrLayer> filmPassLayers(const Film& film, uint32_t passes);
// The film as writeImage() writes its colour; an .exr also gets the passes asked for.
Status writeFilm(const std::string& path, const Film& film, uint32_t passes,
                 float exposure = 0.0f);
// By extension: ".png" (with exposure) or ".exr" (exposure ignored); anything else fails.
Status writeImage(const std::string& path, uint32_t width, uint32_t height,
                  const std::vector<float>& rgb, float exposure = 0.0f);
// True when writeImage() knows the extension of path.
bool isSupportedImagePath(const std::string& path);
bool isExrPath(const std::string& path);

// Reads R, G, B of an OpenEXR file (any pixel type, converted to float; alpha ignored), or
// of one of its layers: layer.R/G/B, layer.X/Y/Z, or layer.Z into all three.
Result<ImageRgb> readExr(const std::string& path, const std::string& layer = "");

}  // namespace pl
