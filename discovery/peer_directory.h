#pragma once
// PeerDirectory: the peers a node or a Primary knows of, from two sources merged into one list:
// static entries (--peer HOST:PORT, a config file) and services found by mDNS browsing
// (discovery/discovery.h). Pure bookkeeping: no I/O.
//
// An mDNS peer whose address equals a static entry's is ONE entry (both sources). Addresses are
// compared after spelling "localhost" as 127.0.0.1. A static entry stays when its mDNS service
// goes away. Services whose TXT id equals ignoreNodeId() (this node's own) are left out.
//
// Threads: not thread-safe; one owner (the loop thread).

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "discovery/discovery.h"

namespace pl {

struct PeerEntry {
  std::string address;  // HOST:PORT
  bool isStatic = false;
  bool discovered = false;
  std::optional<DiscoveredPeer> record;  // the mDNS record, when discovered
};

class PeerDirectory {
 public:
  // Adds a static entry; a repeated address is ignored.
  void addStatic(const std::string& address);
  // Applies a browse event; returns whether entries() changed.
  bool apply(PeerEvent event, const DiscoveredPeer& peer);
  void setIgnoreNodeId(std::string nodeId) { ignoreNodeId_ = std::move(nodeId); }
  const std::string& ignoreNodeId() const { return ignoreNodeId_; }

  // Static entries in the order added, then mDNS-only entries ordered by instance name.
  std::vector<PeerEntry> entries() const;
  size_t size() const { return entries().size(); }

  // "localhost:P" -> "127.0.0.1:P"; other addresses unchanged.
  static std::string normalize(const std::string& address);

 private:
  std::vector<std::string> static_;                // normalized
  std::map<std::string, DiscoveredPeer> found_;  // by instance name
  std::string ignoreNodeId_;
};

}  // namespace pl
