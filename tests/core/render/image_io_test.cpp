#include "core/render/image_io.h"

#include <gtest/gtest.h>
#include <stb/stb_image.h>

#include <cmath>
#include <filesystem>
#include <limits>

#include "core/kernel/fixed_point.h"

namespace pl {
namespace {

std::string tempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("peerlight_image_io_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

TEST(ImageIoTest, SrgbOetfKnownValues) {
  EXPECT_EQ(linearToSrgb8(0.0f), 0);
  EXPECT_EQ(linearToSrgb8(1.0f), 255);
  EXPECT_EQ(linearToSrgb8(0.5f), 188);   // 1.055 * 0.5^(1/2.4) - 0.055 = 0.73536 -> 187.5
  EXPECT_EQ(linearToSrgb8(0.18f), 118);  // 0.46136 * 255 = 117.65
  EXPECT_EQ(linearToSrgb8(0.0031308f), 10);  // linear segment: 12.92 * v = 0.04045
  EXPECT_EQ(linearToSrgb8(0.001f), 3);   // 12.92e-3 * 255 = 3.29
  EXPECT_EQ(linearToSrgb8(0.214f), 127); // 0.49996 * 255 = 127.49
  EXPECT_EQ(linearToSrgb8(4.0f), 255);   // clamped
  EXPECT_EQ(linearToSrgb8(-1.0f), 0);
  EXPECT_EQ(linearToSrgb8(std::numeric_limits<float>::quiet_NaN()), 0);
  // Exposure in stops: 0.25 at +1 EV is 0.5.
  EXPECT_EQ(linearToSrgb8(0.25f, 1.0f), 188);
  EXPECT_EQ(linearToSrgb8(1.0f, -1.0f), 188);
  // The two segments meet (the OETF is continuous at the breakpoint).
  EXPECT_NEAR(linearToSrgb(0.0031308f), linearToSrgb(0.0031309f), 1e-5f);
}

TEST(ImageIoTest, PngRoundTrip) {
  const uint32_t w = 3, h = 2;
  std::vector<float> rgb = {0.0f, 0.5f, 1.0f,   0.18f, 2.0f, -1.0f,  0.001f, 0.214f, 0.5f,
                            1.0f, 1.0f, 1.0f,   0.0f,  0.0f, 0.0f,   0.25f,  0.25f,  0.25f};
  const std::string path = tempPath("rt.png");
  ASSERT_TRUE(writePng(path, w, h, rgb).ok());
  int x = 0, y = 0, n = 0;
  unsigned char* pixels = stbi_load(path.c_str(), &x, &y, &n, 3);
  ASSERT_NE(pixels, nullptr);
  EXPECT_EQ(x, 3);
  EXPECT_EQ(y, 2);
  const int expected[18] = {0, 188, 255, 118, 255, 0, 3, 127, 188,
                            255, 255, 255, 0, 0, 0, linearToSrgb8(0.25f), linearToSrgb8(0.25f),
                            linearToSrgb8(0.25f)};
  for (int i = 0; i < 18; ++i) EXPECT_EQ(int(pixels[i]), expected[i]) << "byte " << i;
  stbi_image_free(pixels);
  std::filesystem::remove(path);
}

TEST(ImageIoTest, ExrRoundTripIsExact) {
  const uint32_t w = 17, h = 9;
  std::vector<float> rgb(size_t(w) * h * 3);
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = float(i) * 0.37f + 1e-7f * float(i * i);
  rgb[5] = 123456.78f;
  rgb[6] = 0.0f;
  const std::string path = tempPath("rt.exr");
  ASSERT_TRUE(writeExr(path, w, h, rgb).ok());
  Result<ImageRgb> back = readExr(path);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->width, w);
  EXPECT_EQ(back->height, h);
  EXPECT_EQ(back->rgb, rgb);  // 32-bit float channels: bit exact
  // writeImage() picks the format by extension.
  ASSERT_TRUE(writeImage(path, w, h, rgb, 3.0f).ok());
  EXPECT_EQ(readExr(path)->rgb, rgb);  // exposure is for PNG only
  std::filesystem::remove(path);
}

TEST(ImageIoTest, FilmPassesAreExrLayers) {
  // A 2x1 film with passes, 2 spp: the sums decode to the means, normals from (n + 1) / 2.
  Film film(2, 1, 2, kernel::kMaxFilmChannels);
  TileResult r;
  r.unit = {{0, 0, 2, 1}, 0, 2, 2};
  const double s = 2.0 * double(kernel::kFixedScale);  // 2 samples of value 1
  for (int p = 0; p < 2; ++p) {
    const double values[10] = {0.5, 0.25, 1, 0.2, 0.4, 0.6, 0.5, 1.0, 0.0, 3.5};
    for (double v : values) r.sums.push_back(int64_t(v * s));
  }
  ASSERT_TRUE(film.add(r).ok());
  const std::string path = tempPath("passes.exr");
  ASSERT_TRUE(writeFilm(path, film, kernel::kPassNormal | kernel::kPassDepth).ok());
  Result<ImageRgb> colour = readExr(path);
  ASSERT_TRUE(colour.ok()) << colour.error().message;
  EXPECT_FLOAT_EQ(colour->rgb[1], 0.25f);
  Result<ImageRgb> normal = readExr(path, "normal");
  ASSERT_TRUE(normal.ok()) << normal.error().message;
  EXPECT_FLOAT_EQ(normal->rgb[0], 0.0f);   // (0.5 * 2) - 1
  EXPECT_FLOAT_EQ(normal->rgb[1], 1.0f);
  EXPECT_FLOAT_EQ(normal->rgb[2], -1.0f);
  Result<ImageRgb> depth = readExr(path, "depth");
  ASSERT_TRUE(depth.ok()) << depth.error().message;
  EXPECT_FLOAT_EQ(depth->rgb[3], 3.5f);
  EXPECT_FALSE(readExr(path, "albedo").ok()) << "only the passes asked for are written";
  std::filesystem::remove(path);
}

TEST(ImageIoTest, ErrorsNameTheFile) {
  std::vector<float> rgb(12, 0.5f);
  Status s = writeImage("/nonexistent-dir/x.exr", 2, 2, rgb);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("/nonexistent-dir/x.exr"), std::string::npos);
  EXPECT_FALSE(writeImage("/nonexistent-dir/x.png", 2, 2, rgb).ok());
  Status bad = writeImage(tempPath("x.tiff"), 2, 2, rgb);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("unknown image format"), std::string::npos);
  EXPECT_FALSE(writePng(tempPath("short.png"), 3, 2, rgb).ok());  // buffer too small

  Result<ImageRgb> missing = readExr("/nonexistent-dir/none.exr");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("none.exr"), std::string::npos);
  const std::string junk = tempPath("junk.exr");
  { FILE* f = std::fopen(junk.c_str(), "wb"); std::fputs("not an exr file", f); std::fclose(f); }
  EXPECT_FALSE(readExr(junk).ok());
  std::filesystem::remove(junk);
}

}  // namespace
}  // namespace pl
