#pragma once
// Discovery: finding peerlight nodes on the LAN (docs/DESIGN.md section 6). A backend
// publishes this node as one DNS-SD service of type `_peerlight._tcp` and browses for the
// others, resolving each to a numeric address and port with its TXT records.
//
//   std::unique_ptr<Discovery> d = makeDiscovery(loop.uv());   // this platform's backend
//   d->publish({"render-3 [a1b2c3d4]", port, advertTxt(advert)});
//   d->browse([](PeerEvent e, const DiscoveredPeer& p) { ... });
//   d->updateTxt(advertTxt(advertWithNewState));               // when the state changes
//
// mDNS finds peers; it says nothing about liveness (a dead service stays resolvable for a
// while): liveness comes from leases and heartbeats.
//
// Backends: avahi_discovery.{h,cpp} (Linux, avahi-client over D-Bus). A macOS backend
// (dns_sd.h: DNSServiceRegister / DNSServiceBrowse / DNSServiceResolve, its socket watched
// with a uv_poll_t) is one new file implementing this interface plus a branch in
// makeDiscovery().
//
// Degraded operation: when the platform's mDNS service is not reachable, a backend logs ONE
// line "no mDNS (...): using static peers only", and every call still succeeds (nothing is
// published or found); when the service appears later the backend may start working then.
//
// Threads: the loop thread; callbacks run on it. Not re-entrant from callbacks except for
// updateTxt().

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/util/status.h"

namespace pl {

constexpr const char* kServiceType = "_peerlight._tcp";

// TXT records: "key=value" strings, each at most kMaxTxtStringBytes (a DNS character-string).
using TxtRecords = std::vector<std::pair<std::string, std::string>>;
constexpr size_t kMaxTxtStringBytes = 255;

struct ServiceRecord {
  // Service instance name, unique on the LAN (a backend renames it on a collision and logs
  // the new name). At most 63 bytes.
  std::string instanceName;
  uint16_t port = 0;
  TxtRecords txt;
};

struct DiscoveredPeer {
  std::string instanceName;
  std::string host;  // numeric address: "192.168.1.7", or "fe80::1" for IPv6
  uint16_t port = 0;
  TxtRecords txt;
  // "HOST:PORT" in transport/tcp.h syntax (IPv6 in brackets).
  std::string address() const;
  // The value of TXT key `key`, or "" when absent.
  std::string txtValue(const std::string& key) const;
};

enum class PeerEvent { kFound, kUpdated, kRemoved };
const char* peerEventName(PeerEvent event);

// found: resolved for the first time; updated: its address or TXT changed; removed: its
// service went away (the record passed is the last one seen).
using BrowseCallback = std::function<void(PeerEvent, const DiscoveredPeer&)>;

class Discovery {
 public:
  virtual ~Discovery() = default;

  // Advertises this node (replacing an earlier publish()).
  virtual Status publish(const ServiceRecord& record) = 0;
  // Replaces the TXT records of the published service (e.g. state=leased). Before publish():
  // an error.
  virtual Status updateTxt(const TxtRecords& txt) = 0;
  // Starts browsing; `callback` gets every peer, this node's own service included (callers
  // filter by node id). One browse per object.
  virtual Status browse(BrowseCallback callback) = 0;
  // Whether the mDNS service is reachable right now.
  virtual bool available() const = 0;
};

// The backend of this platform (Avahi on Linux). Never fails: without an mDNS service the
// object is a no-op that says so once.
std::unique_ptr<Discovery> makeDiscovery(uv_loop_t* loop);
// A backend that publishes and finds nothing, silently (--no-mdns; tests in the root network
// namespace, which must not advertise on a real interface).
std::unique_ptr<Discovery> makeNullDiscovery();

}  // namespace pl
