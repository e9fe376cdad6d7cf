// Backend-neutral parts of discovery/discovery.h.

#include "discovery/discovery.h"

namespace pl {

std::string DiscoveredPeer::address() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

std::string DiscoveredPeer::txtValue(const std::string& key) const {
  for (const auto& [k, v] : txt) {
    if (k == key) return v;
  }
  return "";
}

const char* peerEventName(PeerEvent event) {
  switch (event) {
    case PeerEvent::kFound: return "found";
    case PeerEvent::kUpdated: return "updated";
    case PeerEvent::kRemoved: return "removed";
  }
  return "?";
}

namespace {

class NullDiscovery : public Discovery {
 public:
  Status publish(const ServiceRecord&) override {
    published_ = true;
    return Status();
  }
  Status updateTxt(const TxtRecords&) override {
    if (!published_) return Error{"mDNS: updateTxt() before publish()"};
    return Status();
  }
  Status browse(BrowseCallback) override { return Status(); }
  bool available() const override { return false; }

 private:
  bool published_ = false;
};

}  // namespace

std::unique_ptr<Discovery> makeNullDiscovery() { return std::make_unique<NullDiscovery>(); }

}  // namespace pl
