#pragma once
// MemoryBudget: the node daemon's one memory budget (DESIGN.md, "Memory"), as pure logic. Each
// thing the daemon keeps in memory for somebody reserves its bytes here before it allocates
// them, and keeps the reservation until it lets them go:
//
// - a render job handed over the control socket: its payload and its films;
// - a lease: the decoded render data of the distinct scenes it loaded (the worker holds them);
// - a session started from the live view: its compiled data and its film;
// - the chunk cache: its capacity, reserved once for the daemon's life;
// - a warm worker (an idle worker kept for a later lease): its decoded data. Warm workers are
//   *evictable*: a reservation that does not fit otherwise makes room by stopping them, least
//   recently kept first.
//
// A reservation beyond the capacity, even after every evictable holder would go, is refused,
// and nothing changes (no holder is evicted for a refused request). The daemon answers such a
// request `busy` and keeps serving everything else. No clock, no threads; holders are named by
// the caller. Not thread-safe (the daemon's loop thread).
//
//   MemoryBudget budget(8ull << 30);
//   MemoryGrant g = budget.reserve({MemoryHolder::Kind::Lease, 7}, 900 << 20);
//   if (!g.granted) refuse(budget.refusalText(g));
//   for (MemoryHolder w : g.evict) stopWarmWorker(w.id);  // already released here
//   ...
//   budget.release({MemoryHolder::Kind::Lease, 7});

#include <compare>
#include <cstdint>
#include <list>
#include <map>
#include <string>
#include <vector>

namespace pl {

struct MemoryHolder {
  enum class Kind : uint8_t { ChunkCache, RenderJob, Lease, PageSession, WarmWorker };
  Kind kind = Kind::ChunkCache;
  uint64_t id = 0;  // the caller's: a job serial, a lease id, a worker number
  auto operator<=>(const MemoryHolder&) const = default;
};

// "render job 3", "lease 7", "warm worker 2", "the chunk cache", "page session 1".
std::string describe(const MemoryHolder& holder);

struct MemoryGrant {
  bool granted = false;
  // Granted: evictable holders released to make room, least recently kept first; the caller
  // stops them (their memory is counted as free from now on).
  std::vector<MemoryHolder> evict;
  // The request and the budget as they stood, for the refusal's words.
  MemoryHolder holder;
  uint64_t asked = 0;     // the holder's whole reservation asked for
  uint64_t held = 0;      // what the holder held before
  uint64_t reserved = 0;  // by everybody, evictable holders included, before the request
  uint64_t evictable = 0; // of which evictable (other than the holder)
  uint64_t capacity = 0;
};

class MemoryBudget {
 public:
  // capacity: bytes; 0 is a budget that nothing fits in.
  explicit MemoryBudget(uint64_t capacity) : capacity_(capacity) {}
  // Not copyable: the eviction order is a list of iterators into it.
  MemoryBudget(const MemoryBudget&) = delete;
  MemoryBudget& operator=(const MemoryBudget&) = delete;

  // Sets `holder`'s reservation to `bytes` (a new holder, or a change of an existing one:
  // shrinking always succeeds). An evictable holder's reservation may itself be evicted later by
  // somebody else's; a holder keeps the evictable flag it was given last.
  MemoryGrant reserve(const MemoryHolder& holder, uint64_t bytes, bool evictable = false);
  // Whether `bytes` more (for a new holder) would be granted now. Changes nothing.
  bool fits(uint64_t bytes) const;
  // What reserve(holder, bytes) would answer now (granted or not, the figures), with no
  // eviction listed. Changes nothing.
  MemoryGrant assess(const MemoryHolder& holder, uint64_t bytes) const;
  // Forgets the holder's reservation (no-op when it holds none).
  void release(const MemoryHolder& holder);

  uint64_t capacity() const { return capacity_; }
  uint64_t reserved() const { return reserved_; }  // evictable holders included
  uint64_t evictableBytes() const { return evictable_; }
  uint64_t heldBy(const MemoryHolder& holder) const;
  bool holds(const MemoryHolder& holder) const { return entries_.count(holder) != 0; }

  // "busy: <holder> needs 900 MiB; this node's memory budget of 1024 MiB has 600 MiB reserved
  // (by 2 holders)": the answer to a refused request.
  std::string refusalText(const MemoryGrant& refused) const;

 private:
  struct Entry {
    uint64_t bytes = 0;
    bool evictable = false;
    std::list<MemoryHolder>::iterator position;  // in evictionOrder_, when evictable
  };
  void forget(std::map<MemoryHolder, Entry>::iterator it);

  uint64_t capacity_;
  uint64_t reserved_ = 0;
  uint64_t evictable_ = 0;
  std::map<MemoryHolder, Entry> entries_;
  std::list<MemoryHolder> evictionOrder_;  // evictable holders, least recently kept first
};

}  // namespace pl
