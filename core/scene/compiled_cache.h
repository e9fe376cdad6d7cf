#pragma once
// CompiledCache: compiled scenes kept on disk, so that a second render of an unchanged scene
// file skips loading it (for Sponza, 3 s of glTF, PNG and JPEG decoding on a 2-core machine).
// What is kept is the caller's bytes (the render commands keep a scene's encoded form:
// transport/chunk_codec.h EncodedScene, the chunks a session sends to nodes as they are).
//
//   CompiledCache cache(defaultCompiledCacheDir(), 4ull << 30);
//   Result<Hash128> key = compiledCacheKey(scenePath, options, salt);
//   if (std::optional<CachedBytes> hit = cache.find(*key)) ... parse hit->bytes (or
//   cache.remove(*key, why)) ... else { compile; cache.store(*key, bytes); }
//
// The key is a hash of every byte the compile reads: the scene file, the files it references
// (a glTF's buffers and images by URI, a GLB's external images), the environment map, every
// compile option, and a salt that changes with the program (its build ID), so that a new build
// never reads an old build's data. OBJ scenes are not cached (only their loader knows which
// files they read).
//
// Trust: the folder must be a real folder owned by this user with no access for others (else
// the cache is not used, with one warning); files are opened without following links, must be
// regular files of this user's, and are bounded before they are mapped. The hash in a file
// guards against corruption, not against this user's own tampering (a file is mapped, not
// read: this user truncating it under a running render would crash that render).
// A cached file is the XXH3-128 of the rest, then the bytes stored: a corrupt or truncated file
// is a miss (and is removed); the caller parses the bytes and removes what does not parse.
// Files are written to a temporary name and renamed, so that concurrent renders never see half
// a file (and a mapped file is never rewritten in place). Beyond maxBytes the least recently
// used files go (by modification time, which find() refreshes).
//
// Not thread-safe; several processes may share one directory.

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "core/scene/compile.h"
#include "core/scene/render_data.h"
#include "core/util/hash.h"
#include "core/util/status.h"

namespace pl {

// $XDG_CACHE_HOME/peerlight/compiled, else ~/.cache/peerlight/compiled; "" without either.
std::string defaultCompiledCacheDir();

// The key of compiling `scenePath` with `options`: fails when a file cannot be read (the load
// will then say what is wrong).
Result<Hash128> compiledCacheKey(const std::string& scenePath, const CompileOptions& options,
                                 const Hash128& salt);

// The bytes of a cached file, mapped read-only: valid while `owner` lives.
struct CachedBytes {
  std::shared_ptr<const void> owner;
  std::span<const uint8_t> bytes;
};

class CompiledCache {
 public:
  // dir: created when missing (mode 0700); see Trust above. maxBytes: 0 disables storing.
  CompiledCache(std::string dir, uint64_t maxBytes);

  // The cached bytes for `key`, or nothing (absent, unreadable or corrupt).
  std::optional<CachedBytes> find(const Hash128& key);
  // Removes the file of `key` (its bytes did not parse), logging why.
  void remove(const Hash128& key, const std::string& why);
  // Stores `bytes` under `key` and evicts the oldest files beyond maxBytes. Failures (a full
  // disk, no permission) only log a warning: the cache is an optimisation.
  void store(const Hash128& key, std::span<const uint8_t> bytes);

  const std::string& dir() const { return dir_; }

 private:
  std::string path(const Hash128& key) const;
  bool usable();
  void evict();

  std::string dir_;
  uint64_t maxBytes_;
  bool checked_ = false, usable_ = false;
};

}  // namespace pl
