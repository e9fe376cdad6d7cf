#pragma once
// The Render Node's state shared by its parts (an internal header of transport/node_service.*,
// session_server.*): what the node owns for every session (NodeResources: devices and their
// threads, the chunk cache, the codec pool, decoded scenes) and what it keeps per lease
// (LeaseState). Which device belongs to which lease is the LeaseTable's
// (core/cluster/lease_table.h); LeaseState only carries a lease's session out.
//
// Threads: loop thread only, except where a member says otherwise.

#include <kj/async.h>
#include <kj/refcount.h>

#include <algorithm>
#include <atomic>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/cluster/lease_table.h"
#include "core/render/device.h"
#include "core/scene/render_data.h"
#include "core/util/hash.h"
#include "core/util/status.h"
#include "transport/chunk_cache.h"
#include "transport/node_service.h"
#include "transport/protocol.capnp.h"
#include "transport/job_queue.h"

namespace pl {

class WorkerProcess;

// Throws the KJ exception (FAILED) that a failed RPC call of the node's carries to the peer.
[[noreturn]] void failCall(const std::string& message);
// "0,2,3".
std::string joinIndices(const std::vector<uint32_t>& indices);

// One device and its own thread.
struct DeviceSlot {
  std::unique_ptr<Device> device;
  DeviceInfo info;  // cached: info() is not called while the device renders
  // The device's thread only: what the device has loaded.
  Hash128 loadedScene;
  std::shared_ptr<const RenderData> loadedData;
  std::unique_ptr<JobQueue> thread;  // one thread; last: destroyed (joined) first
};

// Brings a device to scene `id` (on the device's thread). No-op when it has it already.
Status ensureLoaded(DeviceSlot& slot, const Hash128& id,
                    const std::shared_ptr<const RenderData>& data);

struct LoadedScene {
  Hash128 id;
  std::shared_ptr<const RenderData> data;
  uint32_t width = 0, height = 0;
};

// Worker mode: cached chunk bytes that put messages to a worker process reference (not copy).
// Held until that worker answers the load they were sent for (it has read them all then) or,
// when the load ends otherwise, until the worker's connection is gone (forget()).
class WorkerChunkRefs {
 public:
  using Refs = std::vector<std::shared_ptr<const std::vector<uint8_t>>>;
  void hold(const WorkerProcess* worker, std::shared_ptr<Refs> refs) {
    held_[worker].push_back(std::move(refs));
  }
  void release(const WorkerProcess* worker, const std::shared_ptr<Refs>& refs) {
    auto it = held_.find(worker);
    if (it == held_.end()) return;
    it->second.remove(refs);
    if (it->second.empty()) held_.erase(it);
  }
  void forget(const WorkerProcess* worker) { held_.erase(worker); }
  void clear() { held_.clear(); }

 private:
  std::unordered_map<const WorkerProcess*, std::list<std::shared_ptr<Refs>>> held_;
};

// What the node owns for all its sessions. Owned by NodeService::Impl; outlives every lease.
struct NodeResources {
  NodeResources(const NodeOptions& options, uint64_t maxSceneBytes)
      : options(options), maxSceneBytes(maxSceneBytes), chunks(options.chunkCacheBytes) {}

  const NodeOptions& options;  // normalized by the node
  // The largest scene (decoded bytes) this node loads (NodeOptions::maxSceneBytes, or half the
  // memory), and the encoded bytes one session may pin: about that (a chunk's encoding may be
  // slightly larger than its raw bytes).
  const uint64_t maxSceneBytes;
  uint64_t pinLimitBytes() const { return maxSceneBytes + maxSceneBytes / 64; }

  std::vector<std::unique_ptr<DeviceSlot>> slots;  // by device index
  // Verifies put() chunks and decodes render data for load() (options.codecThreads threads).
  std::unique_ptr<JobQueue> codecPool;
  ChunkCache chunks;
  // Decoded render data by scene id, while some device or session still holds it.
  std::map<std::pair<uint64_t, uint64_t>, std::weak_ptr<const RenderData>> decoded;
  WorkerChunkRefs workerChunkRefs;
};

// One lease and its session's state. Shared (refcounted) by the Lease and RenderSession
// capabilities and by calls in flight; it may outlive its lease (then `ended`).
struct LeaseState final : public kj::Refcounted {
  LeaseState(NodeResources& node, LeaseId id, std::string primary, std::vector<uint32_t> devices,
             std::shared_ptr<bool> connectionLost)
      : node(node), id(id), primary(std::move(primary)), devices(std::move(devices)),
        connectionLost(std::move(connectionLost)),
        pins(node.chunks, node.pinLimitBytes(),
             "lease " + std::to_string(uint64_t(id)) + " of " + this->primary) {}

  NodeResources& node;
  const LeaseId id;
  const std::string primary;  // "name (address)" for log lines
  const std::vector<uint32_t> devices;
  // Set once the lease's connection is known to be gone. (Cap'n Proto usually releases the
  // capabilities of a broken connection before it reports the disconnect, so a lease ended by
  // a lost connection often logs as released.)
  std::shared_ptr<bool> connectionLost;
  bool ended = false;
  std::string endSummary;
  std::optional<LeaseEnding> ending;  // once ended
  // Lease.ended() calls waiting for the end (answered first when it comes).
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> endWaiters;
  // Answers when the lease has ended (at once if it has).
  kj::Promise<void> whenEnded();  // LeaseEnding::summary(): "expired", "ended: <text>"
  // Set when the lease ends, read by queued jobs on device threads: they skip their work.
  std::shared_ptr<std::atomic<bool>> cancelled = std::make_shared<std::atomic<bool>>(false);
  std::vector<LoadedScene> scenes;  // most recently loaded last
  // put() calls still being verified; missing() and load() wait for them.
  uint32_t putsInFlight = 0;
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> putWaiters;
  // Chunks this session pinned in the node's cache, until the load that uses them or the end.
  ChunkPins pins;
  // Worker mode (NodeOptions::workerArgv): the worker process serving this lease (owned by the
  // node; null once the lease ended) and its session and lease.
  WorkerProcess* worker = nullptr;
  proto::RenderSession::Client workerSession = nullptr;
  proto::Lease::Client workerLease = nullptr;

  // The session's part of ending the lease (the LeaseTable has ended it): later calls fail,
  // queued device jobs are skipped, scenes and pins are released, the worker is stopped.
  void end(const LeaseEnding& ending);

  // Fails the call when the lease has ended: "lease expired" / "lease ended: <text>".
  void checkServing() const {
    if (ended) failCall("lease " + endSummary);
  }
  bool holdsDevice(uint32_t device) const {
    return std::find(devices.begin(), devices.end(), device) != devices.end();
  }
  // Pins a cached chunk for this session until its load (see ChunkPins); false once ended.
  bool pin(const Hash128& hash) { return !ended && pins.pin(hash); }
  // Stores a verified chunk this session put, pinned for it while the pin limit allows.
  void store(const Hash128& hash, std::shared_ptr<const std::vector<uint8_t>> bytes) {
    node.chunks.put(hash, std::move(bytes));  // never evicts the chunk just stored
    pin(hash);
  }

  kj::Promise<void> putsDone();
  void putFinished();
  const LoadedScene* findScene(const Hash128& scene) const;
};

}  // namespace pl
