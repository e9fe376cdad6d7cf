#pragma once
// The Render Node's state shared by its parts (an internal header of transport/node_service.*,
// session_server.*): what the node owns for every session (NodeResources: devices and their
// threads, the chunk cache, the codec pool, decoded scenes) and what it keeps per lease
// (LeaseState). Which device belongs to which lease is the LeaseTable's
// (core/cluster/lease_table.h); LeaseState only carries a lease's session out. Which idle
// worker processes a daemon keeps is WarmWorkerPool's (pure logic, below).
//
// Threads: loop thread only, except where a member says otherwise.

#include <kj/async.h>
#include <kj/refcount.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/cluster/lease_table.h"
#include "core/cluster/load_admission.h"
#include "core/kernel/types.h"
#include "core/render/device.h"
#include "core/scene/render_data.h"
#include "core/util/hash.h"
#include "core/util/status.h"
#include "transport/chunk_cache.h"
#include "transport/chunk_codec.h"
#include "transport/node_service.h"
#include "transport/prepared_load.h"
#include "transport/protocol.capnp.h"
#include "transport/job_queue.h"

namespace pl {

class WorkerProcess;

// Throws the KJ exception (FAILED) that a failed RPC call of the node's carries to the peer.
[[noreturn]] void failCall(const std::string& message);
// "0,2,3".
std::string joinIndices(const std::vector<uint32_t>& indices);

// The hash of a manifest without its camera array: manifests that differ only in the camera
// have the same key, and share one decoded RenderData (each scene carries its own camera).
Hash128 geometryKeyOf(const ChunkManifest& manifest);

// Decodes and validates the manifest's camera array alone (exactly one camera, its chunks from
// `chunks`, each verified against its hash; validateCamera()). Bounded before any work: the
// array must declare exactly one Camera's bytes. Cheap (about 100 bytes), so it runs where it
// is called (the loop thread).
Result<kernel::Camera> decodeCamera(const ChunkManifest& manifest, ChunkCache& chunks);

// Bitwise equality of two cameras (the bytes a camera chunk carries).
bool sameCamera(const kernel::Camera& a, const kernel::Camera& b);

// Counters for tests and figures. Written on the loop thread (decodes) and on device threads
// (loads), read anywhere.
struct NodeCounters {
  std::atomic<uint64_t> scenesDecoded{0};  // loads that decoded their render data in full
  std::atomic<uint64_t> scenesPrepared{0};  // of those, decoded as the puts came (prepare)
  std::atomic<uint64_t> putsForwarded{0};   // worker mode: puts handed on as they came
  // Worker mode: of those, puts handed on unchecked that the worker took (checked them).
  std::atomic<uint64_t> forwardsCheckedByWorker{0};
  // Loads that reused decoded data (the same scene, or one that differs in the camera alone):
  // they decoded their camera chunk only.
  std::atomic<uint64_t> camerasDecoded{0};
  std::atomic<uint64_t> deviceLoads{0};     // Device::load() calls (a BVH build, an upload)
  std::atomic<uint64_t> cameraSwitches{0};  // Device::setCamera() calls that succeeded
  std::atomic<uint64_t> unitsStopped{0};    // renders cancelled by their caller mid-unit
};

// A scene a session has loaded: the render data, shared (read-only) by every scene whose
// manifest differs from it only in the camera, and this scene's own camera. In worker mode the
// daemon's sessions keep the id alone (the data lives in the worker).
struct LoadedScene {
  Hash128 id;  // the manifest's hash
  std::shared_ptr<const RenderData> data;
  kernel::Camera camera{};  // this scene's camera (data->camera[0] may be another one)
  uint32_t width = 0, height = 0;
};

// One device and its own thread.
struct DeviceSlot {
  std::unique_ptr<Device> device;
  DeviceInfo info;  // cached: info() is not called while the device renders
  // The device's thread only: what the device has loaded (kept across leases), the camera it
  // renders with, and whether it refused setCamera() once (then it gets copies of the data
  // that hold the camera instead).
  Hash128 loadedScene;
  std::shared_ptr<const RenderData> loadedData;
  kernel::Camera camera{};
  bool cannotSetCamera = false;
  std::unique_ptr<JobQueue> thread;  // one thread; last: destroyed (joined) first
};

// Brings a device to `scene` (on the device's thread). No-op when it has it already. When the
// device holds the scene's render data with another camera, it only switches the camera
// (Device::setCamera(): no BVH build, no upload); a device that cannot do that loads a copy of
// the data that holds the scene's camera. The device renders bitwise what loading the full
// data of the scene gives, either way.
Status ensureLoaded(DeviceSlot& slot, const LoadedScene& scene, NodeCounters& counters);

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

struct LeaseState;

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
  // Decoded render data by geometryKeyOf() its manifest, while some device or session still
  // holds it: a load whose manifest differs only in the camera decodes the camera alone, and
  // any other load copies the chunks it shares with one of them instead of decoding them (so
  // they need not be cached: missing() reports them present).
  struct Decoded {
    std::weak_ptr<const RenderData> data;
    ChunkManifest manifest;  // the one `data` was decoded from
    std::shared_ptr<const RawChunkIndex> index;
  };
  std::map<std::pair<uint64_t, uint64_t>, Decoded> decoded;
  // Geometry keys whose full decode is in flight: a load of the same geometry waits for it
  // (resolves, decoded or not, when it ends), then shares the data.
  std::map<std::pair<uint64_t, uint64_t>, kj::ForkedPromise<void>> decoding;
  // Whether alive decoded data holds the chunk's raw bytes; if so, that data (for the caller to
  // hold while it relies on them).
  std::shared_ptr<const RenderData> decodedHolding(const Hash128& hash);
  // Views of `manifest`'s chunks that alive decoded data holds, and that data (to keep alive
  // while the views are used).
  RawChunks rawChunksFor(const ChunkManifest& manifest,
                         std::vector<std::shared_ptr<const RenderData>>& keep);
  void forgetExpiredDecoded();
  NodeCounters counters;
  WorkerChunkRefs workerChunkRefs;
  // Admits a load of `manifest` by `lease` (core/cluster/load_admission.h: the scene limit and
  // NodeOptions::memoryBudget). A refusal has ended the lease (LeaseEnd::MemoryBudget or
  // SceneTooLarge); its error is the load's answer. Set by the node.
  std::function<Status(LeaseState& lease, const ChunkManifest& manifest)> admitLoad;
  // Before an upload (missing() naming the scene's decoded size): a scene this node can never
  // load ends the lease (LeaseEnd::SceneTooLarge) and fails.
  std::function<Status(LeaseState& lease, uint64_t sceneBytes)> admitUpload;
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
  // The scenes this lease loaded (at most the node's maxScenesPerSession): what it reserves in
  // the node's memory budget. A lease of this process's own (a daemon's render job or page
  // session, through newTrustedNode()) reserves nothing: its job reserved its scene already.
  SceneWindow memoryScenes{node.options.maxScenesPerSession};
  bool budgeted = true;
  const std::string primary;  // "name (address)" for log lines
  const std::vector<uint32_t> devices;
  const std::chrono::steady_clock::time_point granted = std::chrono::steady_clock::now();
  uint64_t samplesRendered = 0;  // pixel samples of the render calls answered
  bool loadedOnce = false;       // a load has completed (logged once)
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
  // load() and render() calls not answered yet, and whether the last of them to end ended
  // without its answer (failed, or dropped by its caller). A lease that ends quiet (neither,
  // and no put in flight) had a Primary that was done with it: its worker may stay warm.
  uint32_t callsInFlight = 0;
  bool lastCallUnanswered = false;
  bool quiet() const { return callsInFlight == 0 && putsInFlight == 0 && !lastCallUnanswered; }
  // Chunks this session pinned in the node's cache, until the load that uses them or the end.
  ChunkPins pins;
  // Worker mode (NodeOptions::workerArgv): the worker process serving this lease (owned by the
  // node; null once the lease ended) and its session, which the worker keeps for its whole
  // life (a warm worker serves several leases through it; this lease's scenes are the ids in
  // `scenes`, and render() names no other). onLoaded(manifest) reports each load the worker
  // answered (the node's estimate of what the worker holds).
  WorkerProcess* worker = nullptr;
  proto::RenderSession::Client workerSession = nullptr;
  std::function<void(const ChunkManifest&)> onLoaded;

  // The session's part of ending the lease (the LeaseTable has ended it): later calls fail,
  // queued device jobs are skipped, scenes and pins are released, and the worker is let go
  // (the node decides whether it stops or stays warm).
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
  // prepare(): in-process, the load decoding into place as the puts arrive (taken by the load
  // of the same manifest, dropped by a load of another). In worker mode the worker has it, and
  // the daemon hands the puts of forwardToWorker's chunks on to it as they come.
  std::shared_ptr<PreparedLoad> prepared;
  std::vector<std::shared_ptr<PreparedLoad>> finishing;  // taken by loads not answered yet
  // Whether a prepared load of this lease (waiting, or being finished) holds the chunk.
  bool holdsPrepared(const Hash128& hash) const {
    if (prepared != nullptr && prepared->holds(hash)) return true;
    for (const auto& p : finishing)
      if (p->holds(hash)) return true;
    return false;
  }
  std::unordered_map<Hash128, uint32_t, Hash128Hasher> forwardToWorker;  // hash -> raw bytes
  // The puts on their way to the worker (copies: each counted in putsInFlight until sent; the
  // put's answer does not wait for it). One that fails (the worker refused it, which breaks
  // the worker's put stream for good) makes the lease end unquiet: its worker is not kept.
  class ForwardErrors final : public kj::TaskSet::ErrorHandler {
   public:
    explicit ForwardErrors(LeaseState& lease) : lease_(lease) {}
    void taskFailed(kj::Exception&& e) override;

   private:
    LeaseState& lease_;
  } forwardErrors{*this};
  kj::TaskSet forwards{forwardErrors};
  // Decoded render data that holds chunks missing() reported present without a cached copy:
  // kept until no load of this session is in flight (or the lease ends).
  std::vector<std::shared_ptr<const RenderData>> heldForLoads;
  uint32_t loadsInFlight = 0;
  // Stores a verified chunk this session put, pinned for it while the pin limit allows.
  void store(const Hash128& hash, std::shared_ptr<const std::vector<uint8_t>> bytes) {
    node.chunks.put(hash, std::move(bytes));  // never evicts the chunk just stored
    pin(hash);
  }

  kj::Promise<void> putsDone();
  void putFinished();
  const LoadedScene* findScene(const Hash128& scene) const;
  // Adds a loaded scene as the most recent (last), keeping at most the node's
  // maxScenesPerSession (the least recently loaded go first).
  void remember(LoadedScene scene);
};

// Which idle worker processes a daemon keeps (pure logic: no processes, no clock; tested in
// tests/transport/node_warm_test.cpp). Workers are named by a number the daemon gives them. A
// warm worker holds the render data (and the devices' BVHs) of its last scenes, and its device
// set; its devices are free for any lease. The rule (node_service.h, "Warm workers"):
// - keeps(): only the worker of a lease that ended released or with its connection lost, and
//   quiet (every call answered: the Primary was done). Expired, revoked (owner, fair share),
//   failed and shut-down leases stop their workers, as does a lease that ended mid-work.
// - offer(): the worker joins as the most recently used; then the least recently used are
//   evicted while there are more than maxWorkers or their bytes exceed maxBytes. A worker whose
//   bytes alone exceed maxBytes is not kept.
// - take(devices): a new lease reuses the warm worker whose device set is exactly its own; every
//   other warm worker that holds one of its devices is stopped (the lease needs the device).
// Warm workers' device sets never overlap (a lease's devices are its own, and take() removed
// every warm worker that held one), so there are at most as many as devices.
class WarmWorkerPool {
 public:
  struct Limits {
    uint64_t maxBytes = 0;
    uint32_t maxWorkers = 0;  // 0: none is kept
  };
  explicit WarmWorkerPool(Limits limits) : limits_(limits) {}

  static bool keeps(LeaseEnd reason, bool quiet) {
    return quiet && (reason == LeaseEnd::Released || reason == LeaseEnd::ConnectionLost);
  }
  // Offers an idle worker holding `devices` and about `bytes` of render data. Returns the
  // workers to stop: evicted ones, least recently used first, or `worker` itself if not kept.
  std::vector<uint64_t> offer(uint64_t worker, std::vector<uint32_t> devices, uint64_t bytes);
  struct Take {
    std::optional<uint64_t> reuse;  // left the pool: it serves the lease now
    std::vector<uint64_t> stop;     // left the pool: to be stopped
  };
  Take take(std::vector<uint32_t> devices);
  // Forgets a worker (it failed, or the node stops it); false when it was not in the pool.
  bool remove(uint64_t worker);
  // Removes and returns every worker.
  std::vector<uint64_t> clear();

  bool contains(uint64_t worker) const;
  size_t size() const { return entries_.size(); }
  uint64_t bytes() const;
  const Limits& limits() const { return limits_; }

 private:
  struct Entry {
    uint64_t worker;
    std::vector<uint32_t> devices;  // sorted
    uint64_t bytes;
  };
  Limits limits_;
  std::list<Entry> entries_;  // least recently used first
};

}  // namespace pl
