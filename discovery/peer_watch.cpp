#include "discovery/peer_watch.h"

#include <uv.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "core/util/check.h"
#include "core/util/log.h"
#include "discovery/discovery.h"
#include "discovery/peer_directory.h"

namespace pl {

std::string unusableReason(const Result<NodeAdvert>& advert, const PeerWatchOptions& options) {
  if (!advert.ok())
    return "not a peerlight node we understand (" + advert.error().message + ")";
  if (advert->protocolVersion != options.protocolVersion)
    return "speaks protocol " + std::to_string(advert->protocolVersion) + ", we speak " +
           std::to_string(options.protocolVersion);
  if (advert->keyFingerprint != options.keyFingerprint)
    return "wrong key (fingerprint " +
           (advert->keyFingerprint.empty() ? std::string("none") : advert->keyFingerprint) +
           ", ours " + options.keyFingerprint + ")";
  if (advert->state == "idle" || (options.acceptLeased && advert->state == "leased")) return "";
  return "not idle (" + advert->state + ")";
}

struct PeerWatch::Impl {
  PeerWatchOptions options;
  mutable std::mutex mutex;
  std::condition_variable started;
  bool ready = false;       // the thread set up its browse (guarded by mutex)
  bool mdnsAvailable = false;
  std::vector<PeerVerdict> verdicts;  // guarded by mutex

  uv_loop_t loop{};
  uv_async_t stop{};
  std::thread thread;

  void run() {
    PL_CHECK(uv_loop_init(&loop) == 0);
    PL_CHECK(uv_async_init(&loop, &stop, [](uv_async_t* a) {
               uv_close(reinterpret_cast<uv_handle_t*>(a), nullptr);
               static_cast<Impl*>(a->data)->discoveryOwner.reset();
               uv_stop(a->loop);  // whatever the backend left open is closed below
             }) == 0);
    stop.data = this;
    PeerDirectory directory;
    directory.setIgnoreNodeId(options.ignoreNodeId);
    discoveryOwner = options.useMdns ? makeDiscovery(&loop) : makeNullDiscovery();
    bool available = discoveryOwner->available();
    if (available) {
      Status browsing = discoveryOwner->browse([this, &directory](PeerEvent event,
                                                                  const DiscoveredPeer& peer) {
        PL_LOG_DEBUG("mDNS: %s %s at %s", peerEventName(event), peer.instanceName.c_str(),
                     peer.address().c_str());
        if (!directory.apply(event, peer)) return;
        std::vector<PeerVerdict> next;
        for (const PeerEntry& e : directory.entries()) {
          if (!e.record) continue;
          Result<NodeAdvert> advert = parseAdvert(e.record->txt);
          PeerVerdict v;
          v.instanceName = e.record->instanceName;
          v.address = e.address;
          v.state = advert.ok() ? advert->state : "";
          v.why = unusableReason(advert, options);
          v.usable = v.why.empty();
          next.push_back(std::move(v));
        }
        std::lock_guard<std::mutex> lock(mutex);
        verdicts = std::move(next);
      });
      if (!browsing.ok()) {
        PL_LOG_WARN("mDNS browse failed: %s", browsing.error().message.c_str());
        available = false;
      }
    }
    {
      std::lock_guard<std::mutex> lock(mutex);
      ready = true;
      mdnsAvailable = available;
    }
    started.notify_all();
    uv_run(&loop, UV_RUN_DEFAULT);
    discoveryOwner.reset();
    // Close what the backend may have left and let the close callbacks run.
    uv_walk(&loop, [](uv_handle_t* h, void*) {
      if (!uv_is_closing(h)) uv_close(h, nullptr);
    }, nullptr);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
  }

  std::unique_ptr<Discovery> discoveryOwner;  // thread only
};

PeerWatch::PeerWatch(PeerWatchOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  Impl* impl = impl_.get();
  impl->thread = std::thread([impl] { impl->run(); });
  std::unique_lock<std::mutex> lock(impl->mutex);
  impl->started.wait(lock, [impl] { return impl->ready; });
}

PeerWatch::~PeerWatch() {
  uv_async_send(&impl_->stop);
  impl_->thread.join();
}

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
