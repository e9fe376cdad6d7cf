#pragma once
// PeerWatch: a Primary's live view of the Render Nodes that mDNS finds. It browses on a thread
// of its own (its own libuv loop), so that any thread may ask, at any time, which nodes are
// usable now: a render adds the nodes that appear while it runs (transport/primary.h,
// ClusterRenderOptions::morePeers), and the node daemon keeps one for the render jobs it runs.
//
//   PeerWatch watch({kProtocolVersion, keyFingerprint(key), ownNodeId});
//   std::this_thread::sleep_for(1s);                  // give mDNS a moment, if wanted
//   for (const PeerVerdict& v : watch.snapshot()) ...  // usable or not, and why
//   options.morePeers = [&] { return watch.usableAddresses(); };
//
// A node is usable when its advert parses, its protocol version and key fingerprint are ours,
// and its state is idle (or, with acceptLeased, leased: fair share may then give this Primary
// part of it). A node whose state is primary (its owner is rendering) is not usable.
// Without a reachable avahi-daemon nothing is found (the backend logs that once).
//
// Threads: every public function may be called from any thread. The destructor stops and joins
// the browsing thread.

#include <memory>
#include <string>
#include <vector>

#include "discovery/node_advert.h"

namespace pl {

struct PeerWatchOptions {
  uint32_t protocolVersion = 0;  // ours
  std::string keyFingerprint;    // ours
  std::string ignoreNodeId;      // this machine's own node (a daemon): never listed
  bool acceptLeased = false;
  bool useMdns = true;           // false: find nothing (a null backend; tests)
};

struct PeerVerdict {
  std::string instanceName;
  std::string address;  // HOST:PORT
  std::string state;    // advertised state ("" when the advert does not parse)
  bool usable = false;
  std::string why;      // when not usable
};

// Whether a node with `advert` (or the parse error) is usable under `options`; "" if it is,
// else the reason, e.g. "wrong key (fingerprint 1a2b..., ours 3c4d...)".
std::string unusableReason(const Result<NodeAdvert>& advert, const PeerWatchOptions& options);

class PeerWatch {
 public:
  explicit PeerWatch(PeerWatchOptions options);
  ~PeerWatch();
  PeerWatch(const PeerWatch&) = delete;
  PeerWatch& operator=(const PeerWatch&) = delete;

  // Every node found now, ordered by instance name.
  std::vector<PeerVerdict> snapshot() const;
  // The addresses of the usable ones.
  std::vector<std::string> usableAddresses() const;
  // Whether the mDNS service was reachable when browsing started.
  bool available() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace pl
