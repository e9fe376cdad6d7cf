#pragma once
// PendingAdmissions: which network connections a Render Node keeps while they have not yet
// authenticated, as pure logic (transport/admission.cpp carries the decisions out). Idle
// connections cost nothing to open and need no key, so one host must not be able to fill the
// node's room for them and lock every Primary out:
//
// - Each source (an IPv4 address; an IPv6 /64, which one host can fill, but a link-local
//   address for itself) holds at most
//   perSource pending connections: one more from it is refused.
// - All sources together hold at most globalCap. At the cap, a connection from a source that
//   holds fewer than the source holding the most (ties: the one whose oldest connection is
//   older) evicts that source's oldest pending connection; otherwise it is refused.
//
// So a probe from a host that holds nothing pending is admitted however many idle connections
// other hosts keep. No sockets, no clock; ids are the caller's. Not thread-safe.
//
//   PendingAdmissions pending({.perSource = 4, .globalCap = 32});
//   AdmissionDecision d = pending.admit(id, "10.0.0.7");
//   if (d.evict) close(*d.evict);      // already forgotten here
//   if (!d.admitted) close(id);
//   ...
//   pending.remove(id);                // authenticated, or closed

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace pl {

struct PendingAdmissionLimits {
  size_t perSource = 4;  // 0: no per-source limit
  size_t globalCap = 32;  // 0: no cap
};

struct AdmissionDecision {
  bool admitted = false;
  // Why not, when refused: the source holds perSource already, or the cap is reached and no
  // source holds more than this one.
  enum class Refusal { kNone, kSourceFull, kCapReached } refusal = Refusal::kNone;
  std::optional<uint64_t> evict;  // a pending connection to close to make room for this one
  std::string evictedSource;      // its source
};

class PendingAdmissions {
 public:
  explicit PendingAdmissions(PendingAdmissionLimits limits) : limits_(limits) {}

  // A new connection `id` (not admitted before) from `source`.
  AdmissionDecision admit(uint64_t id, const std::string& source);
  // The connection authenticated or closed: it no longer counts. Unknown ids are ignored.
  void remove(uint64_t id);

  size_t pending() const { return byId_.size(); }
  size_t pendingFrom(const std::string& source) const;

 private:
  struct Entry {
    std::string source;
    uint64_t order;  // admission order: lower is older
  };
  PendingAdmissionLimits limits_;
  std::map<uint64_t, Entry> byId_;
  std::map<std::string, std::map<uint64_t, uint64_t>> bySource_;  // source -> order -> id
  uint64_t nextOrder_ = 0;
};

// The source an address counts against: IPv4 "a.b.c.d" as it is; IPv6 its /64 ("[x:x:x:x::]/64"),
// except link-local addresses, which count each for itself ("[fe80::...]": a segment's hosts all
// share fe80::/64), and IPv4-mapped ones, as their IPv4 form; anything else as it is.
std::string admissionSource(const std::string& address);

}  // namespace pl
