#include "core/cluster/memory_budget.h"

namespace pl {

namespace {

std::string mib(uint64_t bytes) {
  return std::to_string((bytes + (uint64_t(1) << 20) - 1) >> 20) + " MiB";
}

}  // namespace

std::string describe(const MemoryHolder& holder) {
  const std::string id = std::to_string(holder.id);
  switch (holder.kind) {
    case MemoryHolder::Kind::ChunkCache: return "the chunk cache";
    case MemoryHolder::Kind::RenderJob: return "render job " + id;
    case MemoryHolder::Kind::Lease: return "lease " + id;
    case MemoryHolder::Kind::PageSession: return "page session " + id;
    case MemoryHolder::Kind::WarmWorker: return "warm worker " + id;
  }
  return "holder " + id;
}

uint64_t MemoryBudget::heldBy(const MemoryHolder& holder) const {
  auto it = entries_.find(holder);
  return it == entries_.end() ? 0 : it->second.bytes;
}

bool MemoryBudget::fits(uint64_t bytes) const {
  // Evictable holders count as free; overflow-safe (bytes may be absurd).
  const uint64_t firm = reserved_ - evictable_;
  return firm <= capacity_ && bytes <= capacity_ - firm;
}

void MemoryBudget::forget(std::map<MemoryHolder, Entry>::iterator it) {
  reserved_ -= it->second.bytes;
  if (it->second.evictable) {
    evictable_ -= it->second.bytes;
    evictionOrder_.erase(it->second.position);
  }
  entries_.erase(it);
}

MemoryGrant MemoryBudget::assess(const MemoryHolder& holder, uint64_t bytes) const {
  MemoryGrant grant;
  grant.holder = holder;
  grant.asked = bytes;
  grant.reserved = reserved_;
  grant.capacity = capacity_;
  auto it = entries_.find(holder);
  const uint64_t held = it == entries_.end() ? 0 : it->second.bytes;
  const bool heldEvictable = it != entries_.end() && it->second.evictable;
  grant.held = held;
  grant.evictable = evictable_ - (heldEvictable ? held : 0);
  // What stays whatever happens: everybody else's firm reservations.
  const uint64_t othersFirm = (reserved_ - held) - grant.evictable;
  grant.granted = bytes <= held || (othersFirm <= capacity_ && bytes <= capacity_ - othersFirm);
  return grant;
}

MemoryGrant MemoryBudget::reserve(const MemoryHolder& holder, uint64_t bytes, bool evictable) {
  MemoryGrant grant = assess(holder, bytes);
  if (!grant.granted) return grant;
  const uint64_t held = grant.held;
  if (auto it = entries_.find(holder); it != entries_.end()) forget(it);
  // Room first, then the reservation: evict the least recently kept until it fits.
  if (bytes > held) {
    for (auto e = evictionOrder_.begin();
         e != evictionOrder_.end() && reserved_ + bytes > capacity_;) {
      MemoryHolder victim = *e;
      ++e;
      grant.evict.push_back(victim);
      forget(entries_.find(victim));
    }
  }
  Entry entry;
  entry.bytes = bytes;
  entry.evictable = evictable;
  if (evictable) entry.position = evictionOrder_.insert(evictionOrder_.end(), holder);
  entries_.emplace(holder, entry);
  reserved_ += bytes;
  if (evictable) evictable_ += bytes;
  grant.granted = true;
  return grant;
}

void MemoryBudget::release(const MemoryHolder& holder) {
  auto it = entries_.find(holder);
  if (it != entries_.end()) forget(it);
}

std::string MemoryBudget::refusalText(const MemoryGrant& refused) const {
  const uint64_t firm = refused.reserved - refused.held - refused.evictable;
  return "busy: " + describe(refused.holder) + " needs " + mib(refused.asked) +
         "; this node's memory budget of " + mib(refused.capacity) + " has " + mib(firm) +
         " reserved by others (peerlight node --memory-budget)";
}

}  // namespace pl
