#include "core/cluster/pending_admissions.h"

#include <arpa/inet.h>

#include <cstring>

namespace pl {

AdmissionDecision PendingAdmissions::admit(uint64_t id, const std::string& source) {
  AdmissionDecision d;
  const size_t mine = pendingFrom(source);
  if (limits_.perSource != 0 && mine >= limits_.perSource) {
    d.refusal = AdmissionDecision::Refusal::kSourceFull;
    return d;
  }
  if (limits_.globalCap != 0 && byId_.size() >= limits_.globalCap) {
    // The source holding the most; ties: the one whose oldest connection is older.
    const std::string* biggest = nullptr;
    size_t most = 0;
    uint64_t oldest = 0;
    for (const auto& [s, orders] : bySource_) {
      if (orders.empty()) continue;
      const uint64_t first = orders.begin()->first;
      if (orders.size() > most || (orders.size() == most && first < oldest)) {
        biggest = &s;
        most = orders.size();
        oldest = first;
      }
    }
    if (biggest == nullptr || most <= mine) {
      d.refusal = AdmissionDecision::Refusal::kCapReached;
      return d;
    }
    d.evict = bySource_[*biggest].begin()->second;
    d.evictedSource = *biggest;
    remove(*d.evict);
  }
  const uint64_t order = nextOrder_++;
  byId_[id] = Entry{source, order};
  bySource_[source][order] = id;
  d.admitted = true;
  return d;
}

void PendingAdmissions::remove(uint64_t id) {
  auto it = byId_.find(id);
  if (it == byId_.end()) return;
  auto source = bySource_.find(it->second.source);
  source->second.erase(it->second.order);
  if (source->second.empty()) bySource_.erase(source);
  byId_.erase(it);
}

size_t PendingAdmissions::pendingFrom(const std::string& source) const {
  auto it = bySource_.find(source);
  return it == bySource_.end() ? 0 : it->second.size();
}

std::string admissionSource(const std::string& address) {
  struct in6_addr six {};
  if (inet_pton(AF_INET6, address.c_str(), &six) != 1) return address;  // IPv4, or a name
  static const uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  char text[INET6_ADDRSTRLEN] = "";
  if (std::memcmp(six.s6_addr, kMapped, sizeof(kMapped)) == 0) {
    struct in_addr four {};
    std::memcpy(&four, six.s6_addr + 12, 4);
    inet_ntop(AF_INET, &four, text, sizeof(text));
    return text;
  }
  // Link-local addresses (fe80::/10): every host of the segment shares one /64, so each
  // address counts for itself; elsewhere one host may own a whole /64.
  if (six.s6_addr[0] == 0xfe && (six.s6_addr[1] & 0xc0) == 0x80) {
    inet_ntop(AF_INET6, &six, text, sizeof(text));
    return "[" + std::string(text) + "]";
  }
  std::memset(six.s6_addr + 8, 0, 8);
  inet_ntop(AF_INET6, &six, text, sizeof(text));
  return "[" + std::string(text) + "]/64";
}

}  // namespace pl
