#include "transport/tile_codec.h"

#include <zstd.h>

#include <cstring>
#include <string>

#include "core/kernel/types.h"
#include "core/util/hash.h"
#include "transport/chunk_codec.h"

namespace pl {

namespace {

constexpr uint32_t kTileMagic = 0x52544c50;  // "PLTR"
constexpr uint16_t kTileVersion = 1;
constexpr uint8_t kSumStride = 8;
constexpr size_t kTileFieldBytes = 4 + 2 + 1 + 1 + 7 * 4 + 8 + 8;
constexpr size_t kTileHeaderBytes = kTileFieldBytes + 8;  // + checksum of the fields

}  // namespace

std::vector<uint8_t> encodeTileResult(const TileResult& result, int zstdLevel) {
  const WorkUnit& u = result.unit;
  const uint64_t pixels = u.tile.pixelCount();
  PL_CHECK(pixels > 0 && result.sums.size() % pixels == 0);
  const uint64_t channels = result.sums.size() / pixels;
  PL_CHECK(channels == kernel::kBeautyChannels || channels == kernel::kMaxFilmChannels);
  const uint64_t rawBytes = result.sums.size() * sizeof(int64_t);
  std::vector<uint8_t> shuffled(rawBytes);
  byteShuffle(reinterpret_cast<const uint8_t*>(result.sums.data()), shuffled.data(), rawBytes,
              kSumStride);

  std::vector<uint8_t> out(kTileHeaderBytes + ZSTD_compressBound(rawBytes));
  size_t pos = 0;
  auto put = [&](const auto& v) {
    std::memcpy(out.data() + pos, &v, sizeof v);
    pos += sizeof v;
  };
  put(kTileMagic);
  put(kTileVersion);
  put(kSumStride);
  put(uint8_t(channels));
  for (uint32_t v : {u.tile.x, u.tile.y, u.tile.width, u.tile.height, u.sampleBegin, u.sampleEnd,
                     u.totalSamples})
    put(v);
  put(result.raysTraced);
  put(rawBytes);
  PL_CHECK(pos == kTileFieldBytes);
  put(hash128(out.data(), kTileFieldBytes).lo);

  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, zstdLevel);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);  // no content hash here, unlike chunks
  const size_t n =
      ZSTD_compress2(cctx, out.data() + pos, out.size() - pos, shuffled.data(), rawBytes);
  ZSTD_freeCCtx(cctx);
  PL_CHECK_MSG(!ZSTD_isError(n), "zstd: %s", ZSTD_getErrorName(n));
  out.resize(pos + n);
  return out;
}

Result<TileResult> decodeTileResult(const uint8_t* bytes, size_t size, uint64_t maxPixels) {
  if (size < kTileHeaderBytes)
    return Error{"tile result: truncated header (" + std::to_string(size) + " bytes)"};
  size_t pos = 0;
  auto take = [&](auto& v) {
    std::memcpy(&v, bytes + pos, sizeof v);
    pos += sizeof v;
  };
  uint32_t magic;
  uint16_t version;
  uint8_t stride, channels;
  take(magic);
  take(version);
  if (magic != kTileMagic) return Error{"tile result: bad magic"};
  if (version != kTileVersion)
    return Error{"tile result: format version " + std::to_string(version) + ", expected " +
                 std::to_string(kTileVersion)};
  uint64_t checksum;
  std::memcpy(&checksum, bytes + kTileFieldBytes, 8);
  if (checksum != hash128(bytes, kTileFieldBytes).lo)
    return Error{"tile result: corrupt header (checksum mismatch)"};
  take(stride);
  take(channels);
  if (stride != kSumStride) return Error{"tile result: malformed header"};
  if (channels != kernel::kBeautyChannels && channels != kernel::kMaxFilmChannels)
    return Error{"tile result: " + std::to_string(channels) + " channels per pixel (expected " +
                 std::to_string(kernel::kBeautyChannels) + " or " +
                 std::to_string(kernel::kMaxFilmChannels) + ")"};
  TileResult result;
  WorkUnit& u = result.unit;
  take(u.tile.x);
  take(u.tile.y);
  take(u.tile.width);
  take(u.tile.height);
  take(u.sampleBegin);
  take(u.sampleEnd);
  take(u.totalSamples);
  take(result.raysTraced);
  uint64_t rawBytes;
  take(rawBytes);
  pos += 8;  // checksum

  const std::string what = "tile result " + u.describe();
  if (u.tile.width == 0 || u.tile.height == 0) return Error{what + ": empty tile"};
  if (u.sampleBegin >= u.sampleEnd || u.sampleEnd > u.totalSamples)
    return Error{what + ": bad sample range"};
  const uint64_t pixels = u.tile.pixelCount();
  if (pixels > maxPixels)
    return Error{what + ": " + std::to_string(pixels) + " pixels, over the limit of " +
                 std::to_string(maxPixels)};
  const uint64_t expected = pixels * channels * sizeof(int64_t);
  if (rawBytes != expected)
    return Error{what + ": declares " + std::to_string(rawBytes) +
                 " bytes of sums, the tile needs " + std::to_string(expected)};

  const uint8_t* frame = bytes + pos;
  const size_t frameSize = size - pos;
  const unsigned long long declared = ZSTD_getFrameContentSize(frame, frameSize);
  if (declared == ZSTD_CONTENTSIZE_ERROR)
    return Error{what + ": sums are not a zstd frame (or truncated)"};
  if (declared == ZSTD_CONTENTSIZE_UNKNOWN)
    return Error{what + ": zstd frame does not declare its content size"};
  if (declared != expected)
    return Error{what + ": zstd frame declares " + std::to_string(declared) + " bytes, expected " +
                 std::to_string(expected)};
  const size_t frameBytes = ZSTD_findFrameCompressedSize(frame, frameSize);
  if (ZSTD_isError(frameBytes))
    return Error{what + ": truncated or corrupt zstd frame (" + ZSTD_getErrorName(frameBytes) +
                 ")"};
  if (frameBytes != frameSize)
    return Error{what + ": " + std::to_string(frameSize - frameBytes) + " bytes after the frame"};

  std::vector<uint8_t> shuffled(expected);
  const size_t n = ZSTD_decompress(shuffled.data(), expected, frame, frameSize);
  if (ZSTD_isError(n)) return Error{what + ": corrupt zstd data (" + ZSTD_getErrorName(n) + ")"};
  if (n != expected)
    return Error{what + ": decompressed to " + std::to_string(n) + " bytes, expected " +
                 std::to_string(expected)};
  result.sums.resize(pixels * channels);
  byteUnshuffle(shuffled.data(), reinterpret_cast<uint8_t*>(result.sums.data()), expected,
                kSumStride);
  return result;
}

}  // namespace pl
