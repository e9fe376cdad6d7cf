#pragma once
// The Render Node's chunk cache (transport/node_service.h, Memory): encoded render-data chunks
// by hash, kept across loads and leases, least recently used first out; and ChunkPins, the
// chunks one session keeps in it until its load.
//
// Threads: loop thread only. The byte vectors are immutable once stored and shared (as
// shared_ptr<const ...>) with codec threads that decode them and with messages to worker
// processes, so eviction never invalidates bytes in use.

#include <algorithm>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/util/hash.h"
#include "transport/chunk_codec.h"  // Hash128Hasher

namespace pl {

// Pins: a pinned chunk is never evicted (sessions pin what they put, or what missing() told
// them is here, until their load uses it), so the cache may hold more than its capacity while
// chunks are pinned; unpinning the last pin evicts down to the capacity again. Each pin() is
// undone by one unpin(). Pinned chunks are kept off the LRU list. The cache's footprint is
// max(capacity, pinned bytes); setReservation() lets the owner refuse a pin that would grow it
// (the node's memory budget).
class ChunkCache {
 public:
  explicit ChunkCache(uint64_t capacityBytes) : capacity_(capacityBytes) {}

  // The chunk (marked most recently used), or null.
  std::shared_ptr<const std::vector<uint8_t>> find(const Hash128& hash);
  bool contains(const Hash128& hash) const { return entries_.count(hash) != 0; }
  // Encoded size of a cached chunk; 0 when absent.
  uint64_t sizeOf(const Hash128& hash) const;

  // Stores the chunk (if new). Evicts unpinned chunks, least recently used first, while
  // beyond the capacity, but never the chunk just stored.
  void put(const Hash128& hash, std::shared_ptr<const std::vector<uint8_t>> bytes);

  // False when the chunk is not cached, or when pinning it would grow the footprint beyond
  // what the reservation grants.
  bool pin(const Hash128& hash);
  // Checked: the chunk is cached and pinned.
  void unpin(const Hash128& hash);

  size_t count() const { return entries_.size(); }
  uint64_t bytes() const { return bytes_; }
  uint64_t pinnedBytes() const { return pinnedBytes_; }
  uint64_t capacity() const { return capacity_; }
  // What the cache may hold: its capacity, or its pinned chunks when they are more. (Its bytes
  // may pass this by one chunk: put() never evicts the chunk just stored.)
  uint64_t footprint() const { return std::max(capacity_, pinnedBytes_); }
  // Called with the footprint a pin would grow it to (false: refused, nothing changes), and
  // with the smaller one after an unpin (the answer is ignored: shrinking always fits).
  void setReservation(std::function<bool(uint64_t footprint)> reserve) {
    reserve_ = std::move(reserve);
  }

 private:
  struct Entry {
    std::shared_ptr<const std::vector<uint8_t>> bytes;
    uint32_t pins = 0;
    std::list<Hash128>::iterator position;  // in lru_; valid only while pins == 0
  };
  void trim(const Hash128* keep);

  uint64_t capacity_;
  uint64_t bytes_ = 0;
  uint64_t pinnedBytes_ = 0;
  std::function<bool(uint64_t)> reserve_;
  std::list<Hash128> lru_;  // unpinned chunks only
  std::unordered_map<Hash128, Entry, Hash128Hasher> entries_;
};

// The chunks one session pinned in `cache` (each once), released by the load that uses them or
// when the session ends. At most `limitBytes` encoded bytes, and only what the cache's
// reservation admits: beyond either a chunk stays cached unpinned (evictable, as without pins),
// and one warning naming `owner` is logged. The cache must outlive this object.
class ChunkPins {
 public:
  ChunkPins(ChunkCache& cache, uint64_t limitBytes, std::string owner)
      : cache_(cache), limitBytes_(limitBytes), owner_(std::move(owner)) {}
  ~ChunkPins() { releaseAll(); }
  ChunkPins(const ChunkPins&) = delete;
  ChunkPins& operator=(const ChunkPins&) = delete;

  // Pins the cached chunk `hash` (true also when pinned already). False when the chunk is not
  // cached or the limit keeps it unpinned.
  bool pin(const Hash128& hash);
  // Releases the pins on `hashes` (those this session holds).
  void release(const std::vector<Hash128>& hashes);
  void releaseAll();
  uint64_t bytes() const { return bytes_; }

 private:
  void unpin(const Hash128& hash);
  void warnOnce(const char* why);

  ChunkCache& cache_;
  const uint64_t limitBytes_;
  const std::string owner_;  // e.g. "lease 3 of host (addr)", for the warning
  std::unordered_set<Hash128, Hash128Hasher> pinned_;
  uint64_t bytes_ = 0;
  bool limitLogged_ = false;
};

}  // namespace pl
