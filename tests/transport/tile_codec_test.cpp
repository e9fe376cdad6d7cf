#include "transport/tile_codec.h"

#include <gtest/gtest.h>
#include <zstd.h>

#include <chrono>
#include <cstring>
#include <random>

#include "core/render/cpu_device.h"
#include "core/scene/compile.h"
#include "core/util/hash.h"

namespace pl {
namespace {

TileResult randomResult(uint32_t width, uint32_t height, uint32_t seed) {
  std::mt19937_64 rng(seed);
  TileResult r;
  r.unit = WorkUnit{Rect{3, 5, width, height}, 8, 24, 64};
  r.raysTraced = rng();
  r.sums.resize(size_t(width) * height * 3);
  for (int64_t& v : r.sums) v = int64_t(rng() >> (rng() % 64)) * ((rng() & 1) ? -1 : 1);
  return r;
}

void expectEqual(const TileResult& a, const TileResult& b) {
  EXPECT_EQ(a.unit, b.unit);
  EXPECT_EQ(a.raysTraced, b.raysTraced);
  EXPECT_EQ(a.sums, b.sums);
}

// Rewrites the header checksum after a test edits header fields (format in tile_codec.h).
void fixChecksum(std::vector<uint8_t>& bytes) {
  const uint64_t sum = hash128(bytes.data(), 52).lo;
  std::memcpy(bytes.data() + 52, &sum, 8);
}

TEST(TileCodecTest, RoundTripsExactly) {
  for (auto [w, h] : {std::pair{1u, 1u}, {7u, 3u}, {64u, 64u}, {200u, 1u}}) {
    const TileResult r = randomResult(w, h, w * 31 + h);
    const std::vector<uint8_t> bytes = encodeTileResult(r);
    Result<TileResult> back = decodeTileResult(bytes.data(), bytes.size());
    ASSERT_TRUE(back.ok()) << back.error().message;
    expectEqual(r, *back);
  }
}

TEST(TileCodecTest, RejectsTruncatedAndTrailingInput) {
  const TileResult r = randomResult(16, 16, 1);
  const std::vector<uint8_t> bytes = encodeTileResult(r);
  for (size_t keep = 0; keep < bytes.size(); ++keep)
    EXPECT_FALSE(decodeTileResult(bytes.data(), keep).ok()) << "kept " << keep;
  std::vector<uint8_t> longer = bytes;
  longer.push_back(0);
  Result<TileResult> e = decodeTileResult(longer.data(), longer.size());
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message.find("after the frame"), std::string::npos) << e.error().message;
}

TEST(TileCodecTest, RejectsCorruptInput) {
  const TileResult r = randomResult(16, 16, 2);
  const std::vector<uint8_t> bytes = encodeTileResult(r);
  size_t caught = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (uint8_t flip : {uint8_t(0x01), uint8_t(0x80)}) {
      std::vector<uint8_t> bad = bytes;
      bad[i] ^= flip;
      Result<TileResult> back = decodeTileResult(bad.data(), bad.size());
      if (back.ok()) {
        expectEqual(r, *back);  // a bit zstd ignores: never a wrong result
      } else {
        ++caught;
        EXPECT_FALSE(back.error().message.empty());
      }
    }
  }
  EXPECT_GT(caught, bytes.size() * 2 * 95 / 100);
  // Every header byte is covered by the checksum.
  for (size_t i = 0; i < 60; ++i) {
    std::vector<uint8_t> bad = bytes;
    bad[i] ^= 0x10;
    EXPECT_FALSE(decodeTileResult(bad.data(), bad.size()).ok()) << "header byte " << i;
  }
}

TEST(TileCodecTest, BoundsDeclaredSizesBeforeAllocating) {
  const TileResult r = randomResult(64, 64, 3);
  const std::vector<uint8_t> bytes = encodeTileResult(r);
  // Over the caller's pixel limit.
  Result<TileResult> e = decodeTileResult(bytes.data(), bytes.size(), 1000);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message.find("over the limit"), std::string::npos) << e.error().message;
  EXPECT_NE(e.error().message.find("tile 3,5 64x64"), std::string::npos) << e.error().message;

  // A header claiming a 30000x30000 tile (21.6 GB of sums), consistently.
  std::vector<uint8_t> huge = bytes;
  const uint32_t side = 30000;
  const uint64_t raw = uint64_t(side) * side * 24;
  std::memcpy(huge.data() + 8 + 8, &side, 4);
  std::memcpy(huge.data() + 8 + 12, &side, 4);
  std::memcpy(huge.data() + 44, &raw, 8);
  fixChecksum(huge);
  e = decodeTileResult(huge.data(), huge.size());
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message.find("over the limit"), std::string::npos) << e.error().message;

  // Declared raw size disagreeing with the tile.
  std::vector<uint8_t> wrongRaw = bytes;
  const uint64_t small = 24;
  std::memcpy(wrongRaw.data() + 44, &small, 8);
  fixChecksum(wrongRaw);
  e = decodeTileResult(wrongRaw.data(), wrongRaw.size());
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message.find("the tile needs"), std::string::npos) << e.error().message;

  // A 64x64 header over the frame of a 32x32 tile.
  const std::vector<uint8_t> other = encodeTileResult(randomResult(32, 32, 4));
  std::vector<uint8_t> spliced(bytes.begin(), bytes.begin() + 60);
  spliced.insert(spliced.end(), other.begin() + 60, other.end());
  e = decodeTileResult(spliced.data(), spliced.size());
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message.find("zstd frame declares"), std::string::npos) << e.error().message;

  // Bad sample range and empty tile (consistent checksums).
  std::vector<uint8_t> badRange = bytes;
  const uint32_t end = 65;  // > totalSamples 64
  std::memcpy(badRange.data() + 8 + 20, &end, 4);
  fixChecksum(badRange);
  EXPECT_FALSE(decodeTileResult(badRange.data(), badRange.size()).ok());
  std::vector<uint8_t> empty = bytes;
  const uint32_t zero = 0;
  std::memcpy(empty.data() + 8 + 8, &zero, 4);
  fixChecksum(empty);
  EXPECT_FALSE(decodeTileResult(empty.data(), empty.size()).ok());
}

// A real tile: the Cornell box at 16 spp, a 64x64 tile of a 256x256 image.
TEST(TileCodecTest, PrintsCompressionOfARenderedTile) {
  CompileOptions options;
  options.width = options.height = 256;
  Result<RenderData> data =
      loadAndCompile(PEERLIGHT_SOURCE_DIR "/scenes/cornell_box.gltf", options);
  ASSERT_TRUE(data.ok()) << data.error().message;
  CpuDevice device(2);
  ASSERT_TRUE(device.load(std::make_shared<const RenderData>(std::move(data).value())).ok());
  for (uint32_t spp : {1u, 16u}) {
    Result<TileResult> tile = device.render(WorkUnit{Rect{96, 96, 64, 64}, 0, spp, 64});
    ASSERT_TRUE(tile.ok()) << tile.error().message;
    const uint64_t raw = tile->sums.size() * 8;
    const int iterations = 50;
    std::vector<uint8_t> bytes;
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iterations; ++i) bytes = encodeTileResult(*tile);
    auto t1 = std::chrono::steady_clock::now();
    Result<TileResult> back = decodeTileResult(bytes.data(), bytes.size());
    for (int i = 1; i < iterations; ++i) back = decodeTileResult(bytes.data(), bytes.size());
    auto t2 = std::chrono::steady_clock::now();
    ASSERT_TRUE(back.ok()) << back.error().message;
    expectEqual(*tile, *back);
    const double enc = std::chrono::duration<double>(t1 - t0).count() / iterations;
    const double dec = std::chrono::duration<double>(t2 - t1).count() / iterations;
    // For comparison: the same sums through zstd level 1 without the byte shuffle.
    std::vector<uint8_t> plain(ZSTD_compressBound(raw));
    const size_t plainBytes = ZSTD_compress(plain.data(), plain.size(), tile->sums.data(), raw, 1);
    ASSERT_FALSE(ZSTD_isError(plainBytes));
    std::printf(
        "rendered 64x64 tile, %u spp: %llu -> %zu bytes (%.2fx; %.2fx without shuffle); "
        "encode %.0f MB/s, decode %.0f MB/s (raw sums, 1 thread)\n",
        spp, (unsigned long long)raw, bytes.size(), double(raw) / bytes.size(),
        double(raw) / plainBytes, raw / 1e6 / enc, raw / 1e6 / dec);
  }
}

}  // namespace
}  // namespace pl
