#pragma once
// PeerWatch: a Primary's live view of the Render Nodes that mDNS finds. It browses on the
// caller's libuv loop (one loop per process) and tells the caller of new usable nodes as events
// on that loop, never by polling (`peerlight render` and `peerlight session` in process, the
// node daemon's jobs and page sessions):
//
//     PeerWatch watch(options, loop.uv(), {.onUsable = [&](const PeerVerdict& v) {
//                                            /* hand v.address to the render */ }});
//
// A node is usable when its advert parses, its protocol version and key fingerprint are ours,
// and its state is idle (or, with acceptLeased, leased: fair share may then give this Primary
// part of it). A node whose state is primary (its owner is rendering) is not usable.
// Without a reachable avahi-daemon nothing is found (the backend logs that once); browsing
// still starts, so nodes appear if the daemon comes up later (available() stays false).

#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/render/render_kernel.h"
#include "discovery/discovery.h"
#include "discovery/node_advert.h"

namespace pl {

struct PeerWatchOptions {
  uint32_t protocolVersion = 0;  // ours
  std::string keyFingerprint;    // ours
  std::string ignoreNodeId;      // this machine's own node (a daemon): never listed
  bool acceptLeased = false;
  bool useMdns = true;  // false: find nothing (a null backend; tests)
  std::string renderKernel = renderKernelId();  // ours: nodes of another build are not usable
};

struct PeerVerdict {
  std::string instanceName;
  std::string address;  // HOST:PORT
  std::string state;    // advertised state ("" when the advert does not parse)
  bool usable = false;
  std::string why;  // when not usable
  // From the advert, when it parses: the node's name, protocol version and devices.
  std::string name;
  uint32_t protocolVersion = 0;
  std::vector<DeviceSummary> devices;

  bool operator==(const PeerVerdict&) const = default;
};

// Whether a node with `advert` (or the parse error) is usable under `options`; "" if it is,
// else the reason, e.g. "wrong key (fingerprint 1a2b..., ours 3c4d...)".
std::string unusableReason(const Result<NodeAdvert>& advert, const PeerWatchOptions& options);

// What a watch tells its owner. Both run on the loop thread, from the loop (the
// backends report from it: never inside the constructor or the destructor), after snapshot()
// already shows the change. Either may be empty. They may call snapshot(), usableAddresses() and
// available(), but must not destroy the watch (checked: the backend is inside its own callback).
struct PeerWatchEvents {
  // A node became usable: found usable, its advert changed to usable (e.g. state primary ->
  // idle), or a usable node now has another address. Once per such change: a node that stays
  // usable while its advert changes (say its device list) is not reported again.
  std::function<void(const PeerVerdict&)> onUsable = nullptr;
  // snapshot() changed: a node appeared or went, or its address, state or verdict changed.
  // Called after the onUsable calls of the same change.
  std::function<void()> onChange = nullptr;
};

class PeerWatch {
 public:
  // Browses on `loop` with this platform's backend (discovery.h makeDiscovery; the
  // null backend when !options.useMdns). Opens no thread. Construct and destroy on the loop
  // thread; `loop` must outlive the watch and run once more after it (discovery.h's backends
  // close their handles then).
  PeerWatch(PeerWatchOptions options, uv_loop_t* loop, PeerWatchEvents events);
  // The same on a backend of the caller's (tests: a fake). The watch owns it and calls
  // browse() once; the backend's callbacks must run on its loop's thread (discovery.h's
  // contract), and the watch adds no libuv handle of its own.
  PeerWatch(PeerWatchOptions options, std::unique_ptr<Discovery> discovery, PeerWatchEvents events);
  // On the loop thread, not from inside an event; destroys the backend, which stops browsing
  // and closes its handles: no event and no callback of the watch runs afterwards.
  ~PeerWatch();
  PeerWatch(const PeerWatch&) = delete;
  PeerWatch& operator=(const PeerWatch&) = delete;

  // Every node found now, ordered by instance name.
  std::vector<PeerVerdict> snapshot() const;
  // The addresses of the usable ones.
  std::vector<std::string> usableAddresses() const;
  // Whether the mDNS service was reachable when browsing started.
  bool available() const;
  // Threads: these three read a copy kept under a mutex, so any thread may call them; the loop
  // thread is the natural caller (the view changes only there, announced by the events).

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace pl
