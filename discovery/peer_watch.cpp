// PeerWatch: see peer_watch.h. One Impl browses on the loop it is given and keeps the verdicts.

#include "discovery/peer_watch.h"

#include <mutex>

#include "core/util/check.h"
#include "core/util/log.h"
#include "discovery/peer_directory.h"

namespace pl {

std::string unusableReason(const Result<NodeAdvert>& advert, const PeerWatchOptions& options) {
  if (!advert.ok()) return "not a peerlight node we understand (" + advert.error().message + ")";
  if (advert->protocolVersion != options.protocolVersion)
    return "speaks protocol " + std::to_string(advert->protocolVersion) + ", we speak " +
           std::to_string(options.protocolVersion);
  if (advert->keyFingerprint != options.keyFingerprint)
    return "wrong key (fingerprint " +
           (advert->keyFingerprint.empty() ? std::string("none") : advert->keyFingerprint) +
           ", ours " + options.keyFingerprint + ")";
  if (advert->renderKernel != options.renderKernel)
    return renderKernelMismatch(advert->renderKernel);
  if (advert->state == "idle" || (options.acceptLeased && advert->state == "leased")) return "";
  return "not idle (" + advert->state + ")";
}

namespace {

std::vector<PeerVerdict> judge(const PeerDirectory& directory, const PeerWatchOptions& options) {
  std::vector<PeerVerdict> out;
  for (const PeerEntry& e : directory.entries()) {
    if (!e.record) continue;
    std::vector<DeviceSummary> devices;
    Result<NodeAdvert> advert = parseAdvert(e.record->txt, &devices);
    PeerVerdict v;
    v.instanceName = e.record->instanceName;
    v.address = e.address;
    v.state = advert.ok() ? advert->state : "";
    if (advert.ok()) {
      v.name = advert->name;
      v.protocolVersion = advert->protocolVersion;
      v.devices = std::move(devices);
    }
    v.why = unusableReason(advert, options);
    v.usable = v.why.empty();
    out.push_back(std::move(v));
  }
  return out;
}

bool wasUsable(const std::vector<PeerVerdict>& before, const PeerVerdict& now) {
  for (const PeerVerdict& v : before) {
    if (v.usable && v.instanceName == now.instanceName && v.address == now.address) return true;
  }
  return false;
}

}  // namespace

// The browse and its verdicts, on one loop thread (whose loop the backend was made for).
struct PeerWatch::Impl {
  Impl(PeerWatchOptions o, PeerWatchEvents e) : options(std::move(o)), events(std::move(e)) {
    directory.setIgnoreNodeId(options.ignoreNodeId);
  }

  // Takes the backend and starts browsing. Loop thread.
  void start(std::unique_ptr<Discovery> backend) {
    discovery = std::move(backend);
    bool available = discovery->available();
    // Browse even when mDNS is not reachable yet: the backend starts when its daemon appears.
    Status browsing = discovery->browse(
        [this](PeerEvent event, const DiscoveredPeer& peer) { onBrowse(event, peer); });
    if (!browsing.ok()) {
      PL_LOG_WARN("mDNS browse failed: %s", browsing.error().message.c_str());
      available = false;
    }
    std::lock_guard<std::mutex> lock(mutex);
    mdnsAvailable = available;
  }

  // Destroys the backend: no browse callback after this. Loop thread, not from an event.
  void stop() {
    PL_CHECK_MSG(!dispatching, "a PeerWatch destroyed from inside its own event");
    discovery.reset();
  }

  void onBrowse(PeerEvent event, const DiscoveredPeer& peer) {
    PL_LOG_DEBUG("mDNS: %s %s at %s", peerEventName(event), peer.instanceName.c_str(),
                 peer.address().c_str());
    if (!directory.apply(event, peer)) return;
    std::vector<PeerVerdict> next = judge(directory, options);
    std::vector<PeerVerdict> newlyUsable;
    bool changed = false;
    {
      std::lock_guard<std::mutex> lock(mutex);
      for (const PeerVerdict& v : next) {
        if (v.usable && !wasUsable(verdicts, v)) newlyUsable.push_back(v);
      }
      changed = next != verdicts;
      verdicts = std::move(next);
    }
    // Outside the lock: the events may read the view.
    dispatching = true;
    if (events.onUsable) {
      for (const PeerVerdict& v : newlyUsable) events.onUsable(v);
    }
    if (changed && events.onChange) events.onChange();
    dispatching = false;
  }

  const PeerWatchOptions options;
  const PeerWatchEvents events;
  PeerDirectory directory;               // loop thread
  std::unique_ptr<Discovery> discovery;  // loop thread
  bool dispatching = false;              // loop thread: inside an event

  mutable std::mutex mutex;
  std::vector<PeerVerdict> verdicts;  // guarded by mutex
  bool mdnsAvailable = false;         // guarded by mutex
};

PeerWatch::PeerWatch(PeerWatchOptions options, uv_loop_t* loop, PeerWatchEvents events)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(events))) {
  impl_->start(impl_->options.useMdns ? makeDiscovery(loop) : makeNullDiscovery());
}

PeerWatch::PeerWatch(PeerWatchOptions options, std::unique_ptr<Discovery> discovery,
                     PeerWatchEvents events)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(events))) {
  PL_CHECK(discovery != nullptr);
  impl_->start(std::move(discovery));
}

PeerWatch::~PeerWatch() { impl_->stop(); }

std::vector<PeerVerdict> PeerWatch::snapshot() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->verdicts;
}

std::vector<std::string> PeerWatch::usableAddresses() const {
  std::vector<std::string> out;
  std::lock_guard<std::mutex> lock(impl_->mutex);
  for (const PeerVerdict& v : impl_->verdicts) {
    if (v.usable) out.push_back(v.address);
  }
  return out;
}

bool PeerWatch::available() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->mdnsAvailable;
}

}  // namespace pl
