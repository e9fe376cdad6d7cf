// CompiledCache (core/scene/compiled_cache.h): the key covers every input byte and option; a
// stored scene's bytes come back bitwise (mapped); a corrupt file is a miss and goes; old files
// are evicted. (What the commands store there, a scene's encoded form, is tested with the chunk
// codec.)

#include "core/scene/compiled_cache.h"

#include <gtest/gtest.h>

#include <sys/stat.h>

#include <filesystem>

#include "tests/core/scene/test_files.h"

namespace pl {
namespace {

using test::TempDir;
using test::TriangleGltf;

const Hash128 kSalt{1, 2};

// A one-triangle glTF whose buffer is an external .bin file.
std::string writeScene(const TempDir& dir) {
  dir.write("tri.bin", test::triangleBuffer());
  TriangleGltf g;
  g.bufferUri = "tri.bin";
  return dir.write("tri.gltf", g.json());
}

TEST(CompiledCacheTest, KeyCoversTheSceneItsFilesTheOptionsAndTheSalt) {
  TempDir dir;
  const std::string scene = writeScene(dir);
  CompileOptions options;
  Result<Hash128> key = compiledCacheKey(scene, options, kSalt);
  ASSERT_TRUE(key.ok()) << key.error().message;
  EXPECT_EQ(*compiledCacheKey(scene, options, kSalt), *key) << "deterministic";
  EXPECT_NE(*compiledCacheKey(scene, options, Hash128{1, 3}), *key) << "salt";

  CompileOptions other = options;
  other.width = 640;
  EXPECT_NE(*compiledCacheKey(scene, other, kSalt), *key) << "size";
  other = options;
  other.envColor = kernel::Vec3f{1, 0, 0};
  EXPECT_NE(*compiledCacheKey(scene, other, kSalt), *key) << "environment";
  other = options;
  other.lookAt = LookAt{{0, 0, 5}, {0, 0, 0}, {0, 1, 0}, 30};
  EXPECT_NE(*compiledCacheKey(scene, other, kSalt), *key) << "look-at";
  other = options;
  other.seed = 9;
  EXPECT_NE(*compiledCacheKey(scene, other, kSalt), *key) << "seed";
  other = options;
  other.passes = kernel::kPassDepth;
  EXPECT_NE(*compiledCacheKey(scene, other, kSalt), *key) << "passes";

  // A changed byte in the referenced buffer changes the key; so does the glTF itself.
  std::vector<uint8_t> bin = test::triangleBuffer();
  bin[0] ^= 1;
  dir.write("tri.bin", bin);
  EXPECT_NE(*compiledCacheKey(scene, options, kSalt), *key) << "buffer bytes";
  dir.write("tri.bin", test::triangleBuffer());
  EXPECT_EQ(*compiledCacheKey(scene, options, kSalt), *key);

  // A missing input is an error (the load says the rest).
  std::filesystem::remove(dir.file("tri.bin"));
  EXPECT_FALSE(compiledCacheKey(scene, options, kSalt).ok());
}

TEST(CompiledCacheTest, StoredDataComesBackBitwiseAndCorruptFilesAreMisses) {
  TempDir dir;
  const std::string scene = writeScene(dir);
  CompileOptions options;
  Result<RenderData> data = loadAndCompile(scene, options);
  ASSERT_TRUE(data.ok()) << data.error().message;
  const Hash128 key = *compiledCacheKey(scene, options, kSalt);
  CompiledCache cache(dir.file("cache"), 1 << 20);
  EXPECT_FALSE(cache.find(key));
  const std::vector<uint8_t> stored = serialize(*data);
  cache.store(key, stored);
  {
    std::optional<CachedBytes> back = cache.find(key);
    ASSERT_TRUE(back);
    EXPECT_EQ(std::vector<uint8_t>(back->bytes.begin(), back->bytes.end()), stored);
    // The caller found bytes it cannot use: remove() takes the file away.
    cache.remove(key, "test");
    EXPECT_FALSE(cache.find(key));
    // The mapping stays valid while held, though the file is gone.
    EXPECT_EQ(std::vector<uint8_t>(back->bytes.begin(), back->bytes.end()), stored);
  }
  cache.store(key, stored);

  // Flip a byte in the middle of the file: the file's hash catches it; the file goes.
  const std::string file = dir.file("cache") + "/" + key.hex() + ".plrd";
  std::vector<uint8_t> bytes(std::filesystem::file_size(file));
  {
    std::ifstream in(file, std::ios::binary);
    in.read(reinterpret_cast<char*>(bytes.data()), std::streamsize(bytes.size()));
  }
  bytes[bytes.size() / 2] ^= 0x55;
  {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  }
  EXPECT_FALSE(cache.find(key));
  EXPECT_FALSE(std::filesystem::exists(file));
  // Truncated: also a miss.
  cache.store(key, stored);
  std::filesystem::resize_file(file, 10);
  EXPECT_FALSE(cache.find(key));
}

TEST(CompiledCacheTest, AFolderOthersMayUseOrALinkIsNeverRead) {
  TempDir dir;
  const std::string scene = writeScene(dir);
  Result<RenderData> data = loadAndCompile(scene, CompileOptions());
  ASSERT_TRUE(data.ok());
  const Hash128 key{7, 7};
  {
    CompiledCache cache(dir.file("cache"), 1 << 20);
    cache.store(key, serialize(*data));
    ASSERT_TRUE(cache.find(key));
  }
  // Another user could have written into a folder that others may write to: unused.
  ::chmod(dir.file("cache").c_str(), 0777);
  EXPECT_FALSE(CompiledCache(dir.file("cache"), 1 << 20).find(key));
  ::chmod(dir.file("cache").c_str(), 0700);
  // A cache file that is a link (to a file planted elsewhere) is not followed.
  const std::string file = dir.file("cache") + "/" + key.hex() + ".plrd";
  std::filesystem::rename(file, dir.file("planted"));
  std::filesystem::create_symlink(dir.file("planted"), file);
  EXPECT_FALSE(CompiledCache(dir.file("cache"), 1 << 20).find(key));
  // The folder itself as a link: unused.
  std::filesystem::create_directory_symlink(dir.file("cache"), dir.file("linked"));
  EXPECT_FALSE(CompiledCache(dir.file("linked"), 1 << 20).find(Hash128{8, 8}));
  // OBJ scenes have no key (their inputs are only known to the loader).
  EXPECT_FALSE(compiledCacheKey(dir.write("x.obj", "v 0 0 0\n"), CompileOptions(), kSalt).ok());
}

TEST(CompiledCacheTest, OldestFilesGoBeyondTheBound) {
  TempDir dir;
  const std::string scene = writeScene(dir);
  Result<RenderData> data = loadAndCompile(scene, CompileOptions());
  ASSERT_TRUE(data.ok());
  const uint64_t one = serialize(*data).size();
  CompiledCache cache(dir.file("cache"), 2 * one + one / 2);  // room for two
  const Hash128 a{1, 1}, b{2, 2}, c{3, 3};
  cache.store(a, serialize(*data));
  cache.store(b, serialize(*data));
  // a was used last: b is the oldest when c comes.
  auto past = std::filesystem::file_time_type::clock::now() - std::chrono::hours(1);
  std::filesystem::last_write_time(dir.file("cache") + "/" + b.hex() + ".plrd", past);
  ASSERT_TRUE(cache.find(a));
  cache.store(c, serialize(*data));
  EXPECT_TRUE(cache.find(a));
  EXPECT_FALSE(cache.find(b));
  EXPECT_TRUE(cache.find(c));
}

}  // namespace
}  // namespace pl
