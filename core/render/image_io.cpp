#include "core/render/image_io.h"

#include <stb/stb_image_write.h>

#include <OpenEXR/ImfChannelList.h>
#include <OpenEXR/ImfFrameBuffer.h>
#include <OpenEXR/ImfHeader.h>
#include <OpenEXR/ImfInputFile.h>
#include <OpenEXR/ImfOutputFile.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>

#include "core/kernel/types.h"
#include "core/scene/render_data.h"

namespace pl {

namespace {

bool endsWith(const std::string& s, const char* suffix) {
  std::string lower = s;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return char(std::tolower(c)); });
  size_t n = std::char_traits<char>::length(suffix);
  return lower.size() >= n && lower.compare(lower.size() - n, n, suffix) == 0;
}

Status checkBuffer(const std::string& path, uint32_t width, uint32_t height,
                   const std::vector<float>& rgb) {
  if (width == 0 || height == 0 || width > kMaxImageDimension || height > kMaxImageDimension)
    return Error{path + ": bad image size " + std::to_string(width) + "x" +
                 std::to_string(height)};
  if (rgb.size() != size_t(width) * height * 3)
    return Error{path + ": pixel buffer holds " + std::to_string(rgb.size()) +
                 " floats, expected " + std::to_string(size_t(width) * height * 3)};
  return Status();
}

}  // namespace

float linearToSrgb(float v) {
  if (!(v > 0.0f)) return 0.0f;  // also NaN
  if (v >= 1.0f) return 1.0f;
  if (v <= 0.0031308f) return 12.92f * v;
  return 1.055f * std::pow(v, 1.0f / 2.4f) - 0.055f;
}

uint8_t linearToSrgb8(float linear, float exposure) {
  float v = exposure == 0.0f ? linear : linear * std::exp2(exposure);
  float s = linearToSrgb(v) * 255.0f;
  return static_cast<uint8_t>(std::min(255.0f, std::floor(s + 0.5f)));
}

Status writePng(const std::string& path, uint32_t width, uint32_t height,
                const std::vector<float>& rgb, float exposure) {
  Result<std::vector<uint8_t>> png = encodePng(width, height, rgb, exposure);
  if (!png.ok()) return Error{path + ": " + png.error().message};
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return Error{path + ": cannot write PNG"};
  const bool written = std::fwrite(png->data(), 1, png->size(), f) == png->size();
  if (std::fclose(f) != 0 || !written) return Error{path + ": cannot write PNG"};
  return Status();
}

Result<std::vector<uint8_t>> encodePng(uint32_t width, uint32_t height,
                                       const std::vector<float>& rgb, float exposure) {
  if (Status s = checkBuffer("PNG", width, height, rgb); !s.ok()) return s.error();
  std::vector<uint8_t> bytes(rgb.size());
  for (size_t i = 0; i < rgb.size(); ++i) bytes[i] = linearToSrgb8(rgb[i], exposure);
  std::vector<uint8_t> out;
  auto append = [](void* context, void* data, int size) {
    auto* o = static_cast<std::vector<uint8_t>*>(context);
    o->insert(o->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
  };
  if (!stbi_write_png_to_func(append, &out, int(width), int(height), 3, bytes.data(),
                              int(width) * 3))
    return Error{"cannot encode PNG"};
  return out;
}

Status writeExr(const std::string& path, uint32_t width, uint32_t height,
                const std::vector<float>& rgb, const std::vector<ExrLayer>& layers) {
  if (Status s = checkBuffer(path, width, height, rgb); !s.ok()) return s;
  for (const ExrLayer& layer : layers)
    if (Status s = checkBuffer(path + " layer " + layer.name, width, height, layer.values);
        !s.ok())
      return s;
  try {
    Imf::Header header{int(width), int(height)};
    header.compression() = Imf::ZIP_COMPRESSION;
    Imf::FrameBuffer frame;
    // Every channel reads 3 floats a pixel from its buffer, at its own offset.
    auto add = [&](const std::string& name, const std::vector<float>& values, int offset) {
      header.channels().insert(name, Imf::Channel(Imf::FLOAT));
      char* base = reinterpret_cast<char*>(const_cast<float*>(values.data()));
      frame.insert(name, Imf::Slice(Imf::FLOAT, base + offset * sizeof(float), 3 * sizeof(float),
                                    size_t(width) * 3 * sizeof(float)));
    };
    const char* names[3] = {"R", "G", "B"};
    for (int c = 0; c < 3; ++c) add(names[c], rgb, c);
    for (const ExrLayer& layer : layers)
      for (size_t c = 0; c < layer.channels.size() && c < 3; ++c)
        add(layer.name + "." + layer.channels[c], layer.values, int(c));
    Imf::OutputFile file(path.c_str(), header);
    file.setFrameBuffer(frame);
    file.writePixels(int(height));
  } catch (const std::exception& e) {
    return Error{path + ": cannot write EXR: " + e.what()};
  }
  return Status();
}

std::vector<ExrLayer> filmPassLayers(const Film& film, uint32_t passes) {
  std::vector<ExrLayer> layers;
  if (!film.hasPasses()) return layers;
  if (passes & kernel::kPassAlbedo)
    layers.push_back({"albedo", {"R", "G", "B"}, film.pass(kernel::kPassAlbedo)});
  if (passes & kernel::kPassNormal)
    layers.push_back({"normal", {"X", "Y", "Z"}, film.pass(kernel::kPassNormal)});
  if (passes & kernel::kPassDepth)
    layers.push_back({"depth", {"Z"}, film.pass(kernel::kPassDepth)});
  return layers;
}

Status writeFilm(const std::string& path, const Film& film, uint32_t passes, float exposure) {
  if (endsWith(path, ".exr"))
    return writeExr(path, film.width(), film.height(), film.linearRgb(),
                    filmPassLayers(film, passes));
  return writeImage(path, film.width(), film.height(), film.linearRgb(), exposure);
}

bool isExrPath(const std::string& path) { return endsWith(path, ".exr"); }

bool isSupportedImagePath(const std::string& path) {
  return endsWith(path, ".png") || endsWith(path, ".exr");
}

Status writeImage(const std::string& path, uint32_t width, uint32_t height,
                  const std::vector<float>& rgb, float exposure) {
  if (endsWith(path, ".png")) return writePng(path, width, height, rgb, exposure);
  if (endsWith(path, ".exr")) return writeExr(path, width, height, rgb);
  return Error{path + ": unknown image format (use .png or .exr)"};
}

Result<ImageRgb> readExr(const std::string& path, const std::string& layer) {
  try {
    Imf::InputFile file(path.c_str());
    const Imath::Box2i window = file.header().dataWindow();
    const int64_t width = int64_t(window.max.x) - window.min.x + 1;
    const int64_t height = int64_t(window.max.y) - window.min.y + 1;
    if (width <= 0 || height <= 0 || width > kMaxImageDimension || height > kMaxImageDimension)
      return Error{path + ": bad EXR data window " + std::to_string(width) + "x" +
                   std::to_string(height)};
    const Imf::ChannelList& channels = file.header().channels();
    std::string names[3] = {"R", "G", "B"};
    int count = 3;  // channels read; one is copied into all three
    if (!layer.empty()) {
      // layer.R/G/B, layer.X/Y/Z, or one layer.Z read into all three.
      const char* sets[3][3] = {{"R", "G", "B"}, {"X", "Y", "Z"}, {"Z", nullptr, nullptr}};
      count = 0;
      for (const auto& set : sets) {
        if (!channels.findChannel(layer + "." + set[0])) continue;
        for (int c = 0; c < 3 && set[c] != nullptr; ++c) names[count++] = layer + "." + set[c];
        break;
      }
      if (count == 0) return Error{path + ": EXR has no layer " + layer};
    }
    for (int c = 0; c < count; ++c) {
      if (!channels.findChannel(names[c]))
        return Error{path + ": EXR has no " + names[c] + " channel"};
    }
    ImageRgb image;
    image.width = uint32_t(width);
    image.height = uint32_t(height);
    image.rgb.assign(size_t(width) * size_t(height) * 3, 0.0f);
    Imf::FrameBuffer frame;
    char* base = reinterpret_cast<char*>(image.rgb.data());
    for (int c = 0; c < count; ++c) {
      frame.insert(names[c].c_str(), Imf::Slice::Make(Imf::FLOAT, base + c * sizeof(float), window,
                                              3 * sizeof(float), size_t(width) * 3 * sizeof(float)));
    }
    file.setFrameBuffer(frame);
    file.readPixels(window.min.y, window.max.y);
    if (count == 1)
      for (size_t p = 0; p < image.rgb.size(); p += 3)
        image.rgb[p + 1] = image.rgb[p + 2] = image.rgb[p];
    return image;
  } catch (const std::exception& e) {
    return Error{path + ": cannot read EXR: " + e.what()};
  }
}

}  // namespace pl
