// PeerDirectory: see peer_directory.h.

#include "discovery/peer_directory.h"

#include <algorithm>
#include <set>

namespace pl {

std::string PeerDirectory::normalize(const std::string& address) {
  const std::string local = "localhost:";
  if (address.compare(0, local.size(), local) == 0) {
    return "127.0.0.1:" + address.substr(local.size());
  }
  return address;
}

void PeerDirectory::addStatic(const std::string& address) {
  std::string a = normalize(address);
  if (std::find(static_.begin(), static_.end(), a) == static_.end()) static_.push_back(a);
}

bool PeerDirectory::apply(PeerEvent event, const DiscoveredPeer& peer) {
  if (!ignoreNodeId_.empty() && peer.txtValue("id") == ignoreNodeId_) return false;
  auto it = found_.find(peer.instanceName);
  if (event == PeerEvent::kRemoved) {
    if (it == found_.end()) return false;
    found_.erase(it);
    return true;
  }
  if (it != found_.end() && it->second.host == peer.host && it->second.port == peer.port &&
      it->second.txt == peer.txt) {
    return false;
  }
  found_[peer.instanceName] = peer;
  return true;
}

std::vector<PeerEntry> PeerDirectory::entries() const {
  std::vector<PeerEntry> out;
  std::set<std::string> used;  // addresses already listed
  for (const std::string& address : static_) {
    PeerEntry e;
    e.address = address;
    e.isStatic = true;
    for (const auto& [name, peer] : found_) {
      if (normalize(peer.address()) == address) {
        e.discovered = true;
        e.record = peer;
        break;
      }
    }
    used.insert(address);
    out.push_back(std::move(e));
  }
  for (const auto& [name, peer] : found_) {
    std::string address = normalize(peer.address());
    if (!used.insert(address).second) continue;
    PeerEntry e;
    e.address = address;
    e.discovered = true;
    e.record = peer;
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace pl
