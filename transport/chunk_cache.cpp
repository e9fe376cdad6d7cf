#include "transport/chunk_cache.h"

#include <cstdio>

#include "core/util/check.h"
#include "core/util/log.h"

namespace pl {

std::shared_ptr<const std::vector<uint8_t>> ChunkCache::find(const Hash128& hash) {
  auto it = entries_.find(hash);
  if (it == entries_.end()) return nullptr;
  if (it->second.pins == 0) lru_.splice(lru_.end(), lru_, it->second.position);
  return it->second.bytes;
}

uint64_t ChunkCache::sizeOf(const Hash128& hash) const {
  auto it = entries_.find(hash);
  return it == entries_.end() ? 0 : it->second.bytes->size();
}

void ChunkCache::put(const Hash128& hash, std::shared_ptr<const std::vector<uint8_t>> bytes) {
  if (contains(hash)) return;
  bytes_ += bytes->size();
  lru_.push_back(hash);
  entries_.emplace(hash, Entry{std::move(bytes), 0, std::prev(lru_.end())});
  trim(&hash);
}

bool ChunkCache::pin(const Hash128& hash) {
  auto it = entries_.find(hash);
  if (it == entries_.end()) return false;
  Entry& e = it->second;
  if (e.pins == 0) {
    const uint64_t grown = std::max(capacity_, pinnedBytes_ + e.bytes->size());
    if (reserve_ && grown > footprint() && !reserve_(grown)) return false;
    lru_.erase(e.position);
    pinnedBytes_ += e.bytes->size();
  }
  ++e.pins;
  return true;
}

void ChunkCache::unpin(const Hash128& hash) {
  auto it = entries_.find(hash);
  PL_CHECK(it != entries_.end() && it->second.pins > 0);
  Entry& e = it->second;
  if (--e.pins == 0) {
    const uint64_t before = footprint();
    pinnedBytes_ -= e.bytes->size();
    if (reserve_ && footprint() < before) reserve_(footprint());
    e.position = lru_.insert(lru_.end(), hash);  // most recently used: it was just needed
    trim(nullptr);
  }
}

void ChunkCache::trim(const Hash128* keep) {
  while (bytes_ > capacity_ && !lru_.empty() && !(keep != nullptr && lru_.front() == *keep)) {
    auto oldest = entries_.find(lru_.front());
    bytes_ -= oldest->second.bytes->size();
    entries_.erase(oldest);
    lru_.pop_front();
  }
}

bool ChunkPins::pin(const Hash128& hash) {
  if (pinned_.count(hash) != 0) return true;
  const uint64_t size = cache_.sizeOf(hash);
  if (size == 0) return false;
  if (bytes_ + size > limitBytes_) {
    char why[96];
    std::snprintf(why, sizeof why, "more than %.1f MiB of chunks waiting for a load",
                  double(limitBytes_) / double(1 << 20));
    warnOnce(why);
    return false;
  }
  if (!cache_.pin(hash)) {
    warnOnce("the chunks waiting for a load do not fit the node's memory budget");
    return false;
  }
  pinned_.insert(hash);
  bytes_ += size;
  return true;
}

void ChunkPins::warnOnce(const char* why) {
  if (limitLogged_) return;
  limitLogged_ = true;
  PL_LOG_WARN("%s: %s; further chunks may be evicted before it", owner_.c_str(), why);
}

void ChunkPins::unpin(const Hash128& hash) {
  bytes_ -= cache_.sizeOf(hash);
  cache_.unpin(hash);  // may evict it
}

void ChunkPins::release(const std::vector<Hash128>& hashes) {
  for (const Hash128& hash : hashes) {
    if (pinned_.erase(hash) != 0) unpin(hash);
  }
}

void ChunkPins::releaseAll() {
  for (const Hash128& hash : pinned_) unpin(hash);
  pinned_.clear();
}

}  // namespace pl
