#include "transport/node_service.h"

#include <arpa/inet.h>
#include <capnp/rpc-twoparty.h>
#include <capnp/serialize-async.h>
#include <kj/debug.h>
#include <kj/function.h>
#include <netinet/in.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <list>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "core/util/check.h"
#include "core/util/log.h"
#include "core/util/system.h"
#include "transport/chunk_codec.h"
#include "transport/protocol_convert.h"
#include "transport/secure_channel.h"
#include "transport/tile_codec.h"
#include "transport/worker_process.h"

namespace pl {

struct LeaseState;

namespace {

// The largest encoded chunk a node accepts: the 4-byte header plus zstd's bound for 4 MiB.
const size_t kMaxEncodedChunkBytes = 4 + ZSTD_COMPRESSBOUND(kMaxChunkBytes);

[[noreturn]] void failWith(const std::string& message) {
  kj::throwFatalException(KJ_EXCEPTION(FAILED, message));
}

std::string peerAddress(kj::AsyncIoStream& stream) {
  struct sockaddr_storage addr {};
  uint length = sizeof(addr);
  try {
    stream.getpeername(reinterpret_cast<struct sockaddr*>(&addr), &length);
  } catch (...) {
    return "unknown peer";
  }
  char text[INET6_ADDRSTRLEN] = "?";
  if (addr.ss_family == AF_INET) {
    auto* in = reinterpret_cast<struct sockaddr_in*>(&addr);
    inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
    return std::string(text) + ":" + std::to_string(ntohs(in->sin_port));
  }
  if (addr.ss_family == AF_INET6) {
    auto* in6 = reinterpret_cast<struct sockaddr_in6*>(&addr);
    inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
    return "[" + std::string(text) + "]:" + std::to_string(ntohs(in6->sin6_port));
  }
  return "unix peer";
}

std::string hostName() {
  char buffer[256] = {};
  if (gethostname(buffer, sizeof(buffer) - 1) != 0 || buffer[0] == '\0') return "peerlight-node";
  return buffer;
}

std::string joinIndices(const std::vector<uint32_t>& indices) {
  std::string out;
  for (uint32_t i : indices) out += (out.empty() ? "" : ",") + std::to_string(i);
  return out;
}

// Threads that run jobs in submission order: with one thread (a device's), each job runs after
// the one before it has finished; with several (the codec pool), jobs start in submission order
// but run at the same time, so they must not depend on each other's results.
class WorkerPool {
 public:
  explicit WorkerPool(unsigned threads = 1) {
    threads = std::max(threads, 1u);
    threads_.reserve(threads);
    for (unsigned i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
  }
  // Waits for the running jobs; queued jobs are dropped (their fulfillers reject their promises).
  ~WorkerPool() {
    std::deque<kj::Function<void()>> dropped;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
      dropped.swap(jobs_);
    }
    wake_.notify_all();
    for (std::thread& thread : threads_) thread.join();
  }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Thread-safe.
  void submit(kj::Function<void()> job) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      jobs_.push_back(kj::mv(job));
    }
    wake_.notify_one();
  }

 private:
  void run() {
    for (;;) {
      kj::Function<void()> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
        if (stopping_) return;
        job = kj::mv(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<kj::Function<void()>> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;  // last: start after the members above exist
};

constexpr uint32_t kMaxCodecThreads = 64;  // a bound on NodeOptions::codecThreads
// Codec threads for NodeOptions::codecThreads == 0.
unsigned defaultCodecThreads() {
  return std::clamp(std::thread::hardware_concurrency(), 1u, 4u);
}

// Runs fn() -> T on one of `worker`'s threads; the promise resolves on the calling (loop)
// thread, through a cross-thread fulfiller (fn must touch no loop-thread state). When the
// promise is dropped before the job starts, the job is skipped.
template <typename T, typename Fn>
kj::Promise<T> runOn(WorkerPool& worker, Fn fn) {
  auto paf = kj::newPromiseAndCrossThreadFulfiller<T>();
  worker.submit([fulfiller = kj::mv(paf.fulfiller), fn = kj::mv(fn)]() mutable {
    if (!fulfiller->isWaiting()) return;
    try {
      fulfiller->fulfill(fn());
    } catch (const std::exception& e) {
      fulfiller->reject(KJ_EXCEPTION(FAILED, "node worker failed", e.what()));
    }
  });
  return kj::mv(paf.promise);
}

struct RenderOutput {
  WorkUnit unit;
  std::vector<uint8_t> encodedSums;
  uint64_t raysTraced = 0;
  double renderMs = 0;
};

// One device and its worker thread.
struct DeviceSlot {
  std::unique_ptr<Device> device;
  DeviceInfo info;  // cached: info() is not called while the device renders
  LeaseState* leasedBy = nullptr;  // loop thread
  // Worker thread only: what the device has loaded.
  Hash128 loadedScene;
  std::shared_ptr<const RenderData> loadedData;
  std::unique_ptr<WorkerPool> worker;  // one thread; last: destroyed (joined) first
};

// Brings a device to scene `id` (worker thread). No-op when it has it already.
Status ensureLoaded(DeviceSlot& slot, const Hash128& id,
                    const std::shared_ptr<const RenderData>& data) {
  if (slot.loadedData != nullptr && slot.loadedScene == id) return Status();
  Status loaded = slot.device->load(data);
  if (!loaded.ok()) {
    return Error{"device " + slot.info.name + ": load failed: " + loaded.error().message};
  }
  slot.loadedScene = id;
  slot.loadedData = data;
  return Status();
}

// Encoded chunks by hash, least recently used first out. Loop thread only. The byte vectors
// are immutable once stored and shared with the codec thread for load() and with messages to
// workers.
//
// Pins: a pinned chunk is never evicted (sessions pin what they put, or what missing() told
// them is here, until their load uses it), so the cache may hold more than its capacity while
// chunks are pinned; unpinning the last pin evicts down to the capacity again. Each pin() is
// undone by one unpin(). Pinned chunks are kept off the LRU list.
class ChunkCache {
 public:
  explicit ChunkCache(uint64_t capacityBytes) : capacity_(capacityBytes) {}

  std::shared_ptr<const std::vector<uint8_t>> find(const Hash128& hash) {
    auto it = entries_.find(hash);
    if (it == entries_.end()) return nullptr;
    if (it->second.pins == 0) lru_.splice(lru_.end(), lru_, it->second.position);
    return it->second.bytes;
  }
  bool contains(const Hash128& hash) const { return entries_.count(hash) != 0; }
  // Encoded size of a cached chunk; 0 when absent.
  uint64_t sizeOf(const Hash128& hash) const {
    auto it = entries_.find(hash);
    return it == entries_.end() ? 0 : it->second.bytes->size();
  }

  // Stores the chunk (if new). Evicts unpinned chunks, least recently used first, while
  // beyond the capacity, but never the chunk just stored.
  void put(const Hash128& hash, std::shared_ptr<const std::vector<uint8_t>> bytes) {
    if (contains(hash)) return;
    bytes_ += bytes->size();
    lru_.push_back(hash);
    entries_.emplace(hash, Entry{std::move(bytes), 0, std::prev(lru_.end())});
    trim(&hash);
  }

  // False when the chunk is not cached.
  bool pin(const Hash128& hash) {
    auto it = entries_.find(hash);
    if (it == entries_.end()) return false;
    Entry& e = it->second;
    if (e.pins++ == 0) {
      lru_.erase(e.position);
      pinnedBytes_ += e.bytes->size();
    }
    return true;
  }
  void unpin(const Hash128& hash) {
    auto it = entries_.find(hash);
    PL_CHECK(it != entries_.end() && it->second.pins > 0);
    Entry& e = it->second;
    if (--e.pins == 0) {
      pinnedBytes_ -= e.bytes->size();
      e.position = lru_.insert(lru_.end(), hash);  // most recently used: it was just needed
      trim(nullptr);
    }
  }

  size_t count() const { return entries_.size(); }
  uint64_t bytes() const { return bytes_; }
  uint64_t pinnedBytes() const { return pinnedBytes_; }

 private:
  struct Entry {
    std::shared_ptr<const std::vector<uint8_t>> bytes;
    uint32_t pins = 0;
    std::list<Hash128>::iterator position;  // in lru_; valid only while pins == 0
  };
  void trim(const Hash128* keep) {
    while (bytes_ > capacity_ && !lru_.empty() && !(keep != nullptr && lru_.front() == *keep)) {
      auto oldest = entries_.find(lru_.front());
      bytes_ -= oldest->second.bytes->size();
      entries_.erase(oldest);
      lru_.pop_front();
    }
  }

  uint64_t capacity_;
  uint64_t bytes_ = 0;
  uint64_t pinnedBytes_ = 0;
  std::list<Hash128> lru_;  // unpinned chunks only
  std::unordered_map<Hash128, Entry, Hash128Hasher> entries_;
};

struct LoadedScene {
  Hash128 id;
  std::shared_ptr<const RenderData> data;
  uint32_t width = 0, height = 0;
};

}  // namespace

// One lease and its session's state. Shared (refcounted) by the Lease and RenderSession
// capabilities and by calls in flight. Loop thread only.
struct LeaseState final : public kj::Refcounted {
  NodeService::Impl& node;
  uint64_t id;
  std::string primary;  // "name (address)" for log lines
  std::vector<uint32_t> devices;
  uint32_t ttlMs;
  std::string ownerToken;  // LeaseRequest.ownerToken (empty: a remote Primary)
  // Fair share: devices the lease's Primary holds in the cluster (this lease's included), as
  // last reported in the lease request or renew(); -1: it does not report them.
  int64_t heldDevices = -1;
  // Set once the lease's connection is known to be gone. (Cap'n Proto usually releases the
  // capabilities of a broken connection before it reports the disconnect, so a lease ended by
  // a lost connection often logs as released.)
  std::shared_ptr<bool> connectionLost;
  bool ended = false;
  std::string endReason;
  // Set when the lease ends, read by queued jobs on device threads: they skip their work.
  std::shared_ptr<std::atomic<bool>> cancelled = std::make_shared<std::atomic<bool>>(false);
  kj::Promise<void> expiry = nullptr;
  std::vector<LoadedScene> scenes;  // most recently loaded last
  // put() calls still being verified; missing() and load() wait for them.
  uint32_t putsInFlight = 0;
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> putWaiters;
  // Chunks this session pinned in the node's cache (each once; see Impl::pinForSession) and
  // their encoded bytes, released by the load that uses them or when the lease ends.
  std::unordered_set<Hash128, Hash128Hasher> pinned;
  uint64_t pinnedBytes = 0;
  bool pinLimitLogged = false;
  // Worker mode (NodeOptions::workerArgv): the worker process serving this lease (owned by
  // Impl::workers; null once the lease ended) and its session and lease.
  WorkerProcess* worker = nullptr;
  proto::RenderSession::Client workerSession = nullptr;
  proto::Lease::Client workerLease = nullptr;

  LeaseState(NodeService::Impl& node, uint64_t id, std::string primary,
             std::vector<uint32_t> devices, uint32_t ttlMs, std::shared_ptr<bool> connectionLost)
      : node(node), id(id), primary(std::move(primary)), devices(std::move(devices)),
        ttlMs(ttlMs), connectionLost(std::move(connectionLost)) {}

  void checkServing() const {
    if (ended) failWith(endReason == "expired" ? "lease expired" : "lease ended: " + endReason);
  }
  bool holdsDevice(uint32_t device) const {
    return std::find(devices.begin(), devices.end(), device) != devices.end();
  }
  kj::Promise<void> putsDone() {
    if (putsInFlight == 0) return kj::READY_NOW;
    auto paf = kj::newPromiseAndFulfiller<void>();
    putWaiters.push_back(kj::mv(paf.fulfiller));
    return kj::mv(paf.promise);
  }
  void putFinished() {
    PL_CHECK(putsInFlight > 0);
    if (--putsInFlight == 0) {
      auto waiters = std::move(putWaiters);
      putWaiters.clear();
      for (auto& waiter : waiters) waiter->fulfill();
    }
  }
  const LoadedScene* findScene(const Hash128& scene) const {
    for (const LoadedScene& s : scenes) {
      if (s.id == scene) return &s;
    }
    return nullptr;
  }
};

struct NodeService::Impl final : public kj::TaskSet::ErrorHandler {
  UvKjLoop& loop;
  ClusterKey key;
  NodeOptions options;

  uint64_t maxSceneBytes() const {
    if (options.maxSceneBytes != 0) return options.maxSceneBytes;
    const uint64_t memory = physicalMemoryBytes();
    if (memory == 0) return kMaxRenderDataBytes;
    return std::min<uint64_t>(memory / 2, kMaxRenderDataBytes);
  }
  std::vector<DeviceInfo> infos;
  std::vector<std::unique_ptr<DeviceSlot>> slots;
  // Verifies put() chunks and decodes render data for load() (options.codecThreads threads).
  std::unique_ptr<WorkerPool> codecWorkers;
  ChunkCache chunks;
  // Decoded render data by scene id, while some device or session still holds it.
  std::map<std::pair<uint64_t, uint64_t>, std::weak_ptr<const RenderData>> decoded;
  std::set<LeaseState*> leases;  // active (not ended)
  std::multiset<std::string> ownerJobs;  // tokens of the owner jobs running (control socket)
  uint64_t nextLeaseId = 1;
  size_t connections = 0;
  kj::Own<kj::TaskSet> connectionTasks = kj::heap<kj::TaskSet>(*this);
  // Worker processes, until they have exited (then swept a turn later).
  std::list<std::unique_ptr<WorkerProcess>> workers;
  // Worker mode: cached chunk bytes that put messages to a worker reference (not copy). Held
  // until that worker answers the load they were sent for (it has read them all then) or, when
  // the load ends otherwise, until the worker's connection is gone (its WorkerProcess swept).
  using ChunkRefs = std::vector<std::shared_ptr<const std::vector<uint8_t>>>;
  std::unordered_map<const WorkerProcess*, std::list<std::shared_ptr<ChunkRefs>>> workerChunkRefs;
  kj::Own<kj::TaskSet> sweeps = kj::heap<kj::TaskSet>(*this);
  // TLS for serve() / listen() (options.tls); null when off, or when it could not be built
  // (then every connection is refused with a log line).
  std::unique_ptr<SecureChannel> secure;

  Impl(UvKjLoop& loop, ClusterKey key, std::vector<std::unique_ptr<Device>> devices,
       NodeOptions options)
      : loop(loop), key(std::move(key)), options(std::move(options)),
        chunks(this->options.chunkCacheBytes) {
    if (this->options.name.empty()) this->options.name = hostName();
    if (this->options.nodeId.empty()) this->options.nodeId = randomHex(16);
    this->options.minTtlMs = std::max<uint32_t>(this->options.minTtlMs, 1);
    this->options.maxTtlMs = std::max(this->options.maxTtlMs, this->options.minTtlMs);
    this->options.defaultTtlMs =
        std::clamp(this->options.defaultTtlMs, this->options.minTtlMs, this->options.maxTtlMs);
    if (this->options.codecThreads == 0) this->options.codecThreads = defaultCodecThreads();
    this->options.codecThreads = std::min<uint32_t>(this->options.codecThreads, kMaxCodecThreads);
    codecWorkers = std::make_unique<WorkerPool>(this->options.codecThreads);
    if (this->options.tls) {
      Result<std::unique_ptr<SecureChannel>> made = SecureChannel::create(this->key);
      if (made.ok()) {
        secure = std::move(*made);
      } else {
        PL_LOG_ERROR("no TLS, so no connection will be accepted: %s",
                     made.error().message.c_str());
      }
    }
    for (auto& device : devices) {
      PL_CHECK(device != nullptr);
      auto slot = std::make_unique<DeviceSlot>();
      slot->info = device->info();
      slot->device = std::move(device);
      slot->worker = std::make_unique<WorkerPool>(1);
      infos.push_back(slot->info);
      slots.push_back(std::move(slot));
    }
  }

  ~Impl() {
    endAllLeases("node shutting down");
    connectionTasks = nullptr;
    sweeps = nullptr;
    workers.clear();  // SIGKILLs any still running
    workerChunkRefs.clear();  // after the connections that may still reference them
    // Join the workers before the devices and data they use go away.
    codecWorkers.reset();
    for (auto& slot : slots) slot->worker.reset();
  }

  void taskFailed(kj::Exception&& exception) override {
    PL_LOG_WARN("connection task failed: %s", exception.getDescription().cStr());
  }

  // --- leases --------------------------------------------------------------------------------

  void endLease(LeaseState& lease, const std::string& reason, bool fromExpiryTimer = false) {
    if (lease.ended) return;
    lease.ended = true;
    lease.endReason = reason;
    lease.cancelled->store(true);
    for (uint32_t d : lease.devices) {
      if (slots[d]->leasedBy == &lease) slots[d]->leasedBy = nullptr;
    }
    lease.scenes.clear();
    unpinForSession(lease, nullptr);
    if (lease.worker != nullptr) {
      lease.worker->stop("lease " + std::to_string(lease.id) + " " +
                         (reason == "expired" ? "expired" : "ended: " + reason));
      lease.worker = nullptr;
    }
    lease.workerSession = nullptr;
    lease.workerLease = nullptr;
    leases.erase(&lease);
    if (!fromExpiryTimer) lease.expiry = nullptr;  // cancels the timer
    PL_LOG_INFO("lease %llu of %s %s; devices %s are free", (unsigned long long)lease.id,
                lease.primary.c_str(), reason == "expired" ? "expired" : ("ended: " + reason).c_str(),
                joinIndices(lease.devices).c_str());
  }

  // --- chunk pins -----------------------------------------------------------------------------

  // The most encoded bytes one session may pin: about the largest scene this node accepts
  // (a chunk's encoding may be slightly larger than its raw bytes).
  uint64_t pinLimit() const { return pinLimitBytes; }
  const uint64_t pinLimitBytes = maxSceneBytes() + maxSceneBytes() / 64;  // after `options`

  // Pins the cached chunk `hash` for `lease` until its load uses it or it ends. Beyond
  // pinLimit() the chunk stays cached unpinned (evictable), as without pins. False when the
  // chunk is not cached or not pinned.
  bool pinForSession(LeaseState& lease, const Hash128& hash) {
    if (lease.ended) return false;
    if (lease.pinned.count(hash) != 0) return true;
    const uint64_t size = chunks.sizeOf(hash);
    if (size == 0) return false;
    if (lease.pinnedBytes + size > pinLimit()) {
      if (!lease.pinLimitLogged) {
        lease.pinLimitLogged = true;
        PL_LOG_WARN("lease %llu of %s: more than %.1f MiB of chunks waiting for a load; further "
                    "chunks may be evicted before it",
                    (unsigned long long)lease.id, lease.primary.c_str(),
                    double(pinLimit()) / double(1 << 20));
      }
      return false;
    }
    chunks.pin(hash);
    lease.pinned.insert(hash);
    lease.pinnedBytes += size;
    return true;
  }

  // Stores a verified chunk that `lease` put, pinned for it while its pin limit allows.
  void storeForSession(LeaseState& lease, const Hash128& hash,
                       std::shared_ptr<const std::vector<uint8_t>> bytes) {
    chunks.put(hash, std::move(bytes));  // never evicts the chunk just stored
    pinForSession(lease, hash);
  }

  // Releases the pins of `lease` on `hashes` (null: all of them).
  void unpinForSession(LeaseState& lease, const std::vector<Hash128>* hashes) {
    auto release = [&](const Hash128& hash) {
      lease.pinnedBytes -= chunks.sizeOf(hash);
      chunks.unpin(hash);  // may evict it
    };
    if (hashes == nullptr) {
      for (const Hash128& hash : lease.pinned) release(hash);
      lease.pinned.clear();
      return;
    }
    for (const Hash128& hash : *hashes) {
      if (lease.pinned.erase(hash) != 0) release(hash);
    }
  }

  void armExpiry(LeaseState& lease) {
    LeaseState* self = &lease;
    lease.expiry = loop.timer()
                       .afterDelay(lease.ttlMs * kj::MILLISECONDS)
                       .then([this, self]() { endLease(*self, "expired", true); })
                       .eagerlyEvaluate(nullptr);
  }

  void endAllLeases(const std::string& why) {
    while (!leases.empty()) endLease(**leases.begin(), why);
  }

  static constexpr const char* kOwnerBusy = "the owner is rendering";

  size_t ownerJobStarted(const std::string& token) {
    ownerJobs.insert(token);
    std::vector<LeaseState*> revoke;
    for (LeaseState* lease : leases) {
      if (lease->ownerToken.empty() || ownerJobs.count(lease->ownerToken) == 0) {
        revoke.push_back(lease);
      }
    }
    PL_LOG_INFO("owner job started: revoking %zu remote lease(s), refusing new ones",
                revoke.size());
    for (LeaseState* lease : revoke) endLease(*lease, std::string("revoked: ") + kOwnerBusy);
    return revoke.size();
  }

  void ownerJobEnded(const std::string& token) {
    auto it = ownerJobs.find(token);
    if (it == ownerJobs.end()) return;
    ownerJobs.erase(it);
    if (ownerJobs.empty()) PL_LOG_INFO("owner job ended: devices offered again");
  }

  // Worker mode: starts the worker of `lease` and leases its devices through it.
  void startWorker(LeaseState& lease) {
    std::vector<std::string> argv = options.workerArgv;
    argv.push_back("--devices");
    argv.push_back(joinIndices(lease.devices));
    WorkerProcessOptions workerOptions;
    workerOptions.heartbeatTimeoutMs = options.workerHeartbeatTimeoutMs;
    workerOptions.killGraceMs = options.workerKillGraceMs;
    workerOptions.maxMessageBytes = options.maxMessageBytes;
    LeaseState* self = &lease;  // a failure is reported only before stop(), i.e. endLease
    auto worker = WorkerProcess::start(
        loop, argv, "lease " + std::to_string(lease.id), workerOptions,
        [this, self](const std::string& why) { endLease(*self, why); },
        [this]() {
          sweeps->add(kj::evalLater([this]() {
            std::vector<const WorkerProcess*> gone;
            workers.remove_if([&gone](const std::unique_ptr<WorkerProcess>& w) {
              if (!w->exited()) return false;
              gone.push_back(w.get());
              return true;
            });
            for (const WorkerProcess* w : gone) workerChunkRefs.erase(w);  // now unreferenced
          }));
        });
    if (!worker.ok()) {
      endLease(lease, worker.error().message);
      failWith("lease: " + worker.error().message);
    }
    lease.worker = worker->get();
    auto request = (*worker)->node().leaseRequest();
    auto r = request.initRequest();
    r.setPrimaryName(lease.primary);
    auto devices = r.initDevices(uint32_t(lease.devices.size()));
    for (size_t i = 0; i < lease.devices.size(); ++i) devices.set(uint32_t(i), lease.devices[i]);
    auto leased = request.send();
    lease.workerSession = leased.getSession();
    lease.workerLease = leased.getLease();
    workers.push_back(std::move(*worker));
  }

  void holdForWorker(const WorkerProcess* worker, std::shared_ptr<ChunkRefs> refs) {
    workerChunkRefs[worker].push_back(std::move(refs));
  }
  void releaseForWorker(const WorkerProcess* worker, const std::shared_ptr<ChunkRefs>& refs) {
    auto it = workerChunkRefs.find(worker);
    if (it == workerChunkRefs.end()) return;
    it->second.remove(refs);
    if (it->second.empty()) workerChunkRefs.erase(it);
  }

  // --- connections ---------------------------------------------------------------------------

  // Cap'n Proto's own message framing on a connection's stream, with a traversal limit (which
  // also bounds what one message may make us allocate) that can change after construction:
  // TwoPartyVatNetwork takes fixed ReaderOptions, but passes them to this stream on every read,
  // so each read uses the limit current when it starts. (Cap'n Proto 0.9.2 has no other way to
  // change the limit of a live connection.)
  class LimitedMessageStream final : public capnp::MessageStream {
   public:
    LimitedMessageStream(kj::AsyncIoStream& stream, uint64_t limitBytes)
        : inner_(stream), limitWords_(limitBytes / sizeof(capnp::word)) {}
    void setLimitBytes(uint64_t bytes) { limitWords_ = bytes / sizeof(capnp::word); }

    kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> tryReadMessage(
        kj::ArrayPtr<kj::AutoCloseFd> fdSpace, capnp::ReaderOptions options,
        kj::ArrayPtr<capnp::word> scratchSpace) override {
      options.traversalLimitInWords = limitWords_;
      return inner_.tryReadMessage(fdSpace, options, scratchSpace);
    }
    kj::Promise<void> writeMessage(
        kj::ArrayPtr<const int> fds,
        kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments) override {
      return inner_.writeMessage(fds, segments);
    }
    kj::Promise<void> writeMessages(
        kj::ArrayPtr<kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>>> messages) override {
      return inner_.writeMessages(messages);
    }
    kj::Maybe<int> getSendBufferSize() override { return inner_.getSendBufferSize(); }
    kj::Promise<void> end() override { return inner_.end(); }

   private:
    capnp::AsyncIoMessageStream inner_;
    uint64_t limitWords_;
  };

  struct Connection;
  // Shared by a network connection and its Gate: whether the peer has authenticated.
  struct Handshake {
    bool authenticated = false;
    Connection* connection = nullptr;  // null once the connection is gone
  };

  // An accepted connection during its TLS handshake: counted as a connection and as pending.
  struct PendingTls {
    explicit PendingTls(Impl& impl) : impl(impl) {
      ++impl.connections;
      ++impl.pendingConnections;
    }
    ~PendingTls() {
      --impl.connections;
      --impl.pendingConnections;
    }
    Impl& impl;
  };

  // One accepted connection (after its TLS handshake). Until its peer authenticates it counts as
  // pending, and its messages are limited to options.handshakeMessageBytes.
  struct Connection {
    Connection(Impl& impl, kj::Own<kj::AsyncIoStream> streamIn, std::string peer,
               std::shared_ptr<bool> lost, std::shared_ptr<Handshake> handshakeIn)
        : impl(impl), stream(kj::mv(streamIn)),
          messages(*stream, std::min(impl.options.handshakeMessageBytes,
                                     impl.options.maxMessageBytes)),
          network(messages, capnp::rpc::twoparty::Side::SERVER),
          handshake(std::move(handshakeIn)),
          rpc(capnp::makeRpcServer(network, impl.newGate(std::move(peer), std::move(lost),
                                                          handshake))) {
      handshake->connection = this;
      ++impl.connections;
      ++impl.pendingConnections;
    }
    ~Connection() {
      handshake->connection = nullptr;
      --impl.connections;
      if (!handshake->authenticated) --impl.pendingConnections;
    }
    // The Gate authenticated the peer: full message size from the next read on.
    void authenticated() {
      if (handshake->authenticated) return;
      handshake->authenticated = true;
      --impl.pendingConnections;
      messages.setLimitBytes(impl.options.maxMessageBytes);
    }
    Impl& impl;
    kj::Own<kj::AsyncIoStream> stream;
    LimitedMessageStream messages;
    capnp::TwoPartyVatNetwork network;
    std::shared_ptr<Handshake> handshake;
    capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
  };

  // Beyond options.maxPendingConnections: the connection from `peer` is closed at once. Logged
  // at most once a second (with how many were refused since the last line).
  void refuseConnection(const std::string& peer) {
    ++refusedSinceLog;
    const kj::TimePoint now = loop.timer().now();
    if (refusalLogged && now - lastRefusalLog < 1 * kj::SECONDS) return;
    PL_LOG_WARN("closed %llu connection(s) at once (the latest from %s): %zu connections have "
                "not authenticated yet, the limit",
                (unsigned long long)refusedSinceLog, peer.c_str(), pendingConnections);
    refusedSinceLog = 0;
    refusalLogged = true;
    lastRefusalLog = now;
  }
  size_t pendingConnections = 0;
  uint64_t refusedSinceLog = 0;
  bool refusalLogged = false;
  kj::TimePoint lastRefusalLog = kj::origin<kj::TimePoint>();

  void serve(kj::Own<kj::AsyncIoStream> stream, std::string peer);
  // The RPC system of one connection (after TLS, if any); resolves when the connection is gone.
  kj::Promise<void> runConnection(kj::Own<kj::AsyncIoStream> stream, const std::string& peer,
                                  std::shared_ptr<Handshake> handshake);
  // handshake: the connection's, or null for an in-process Gate.
  proto::Gate::Client newGate(std::string peer, std::shared_ptr<bool> connectionLost,
                              std::shared_ptr<Handshake> handshake = nullptr);

  // Accepts until the promise is dropped. A failed accept (EMFILE, ENFILE: too many open
  // connections) must not stop the node listening for good: log it and try again shortly.
  kj::Promise<void> acceptLoop(kj::ConnectionReceiver& receiver) {
    return receiver.accept().then(
        [this, &receiver](kj::Own<kj::AsyncIoStream> stream) {
          serve(kj::mv(stream), "");
          return acceptLoop(receiver);
        },
        [this, &receiver](kj::Exception&& e) -> kj::Promise<void> {
          PL_LOG_WARN("accepting a connection failed (%s); retrying in 100 ms",
                      e.getDescription().cStr());
          return loop.timer().afterDelay(100 * kj::MILLISECONDS).then([this, &receiver]() {
            return acceptLoop(receiver);
          });
        });
  }
};

namespace {

using Impl = NodeService::Impl;

class RenderSessionImpl final : public proto::RenderSession::Server {
 public:
  explicit RenderSessionImpl(kj::Own<LeaseState> lease) : lease_(kj::mv(lease)) {}

  // put() is declared `-> stream`, and for such methods Cap'n Proto's server side holds back
  // every other call on the capability until the put finishes, and breaks the capability for
  // good when one put fails. Neither suits a node: ping() must answer while chunks are being
  // verified, and one bad chunk must fail only its own put (the Primary's flow control still
  // sees the error on its next put). So the server treats put() as an ordinary call; the client
  // still streams it with flow control.
  DispatchCallResult dispatchCall(
      uint64_t interfaceId, uint16_t methodId,
      capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer> context) override {
    DispatchCallResult result =
        proto::RenderSession::Server::dispatchCall(interfaceId, methodId, context);
    result.isStreaming = false;
    return result;
  }

  kj::Promise<void> missing(MissingContext context) override {
    lease_->checkServing();
    auto hashes = fromProto(context.getParams().getHashes());
    if (!hashes.ok()) failWith(hashes.error().message);
    auto lease = kj::addRef(*lease_);
    return lease_->putsDone().then(
        [context, hashes = std::move(*hashes), lease = kj::mv(lease)]() mutable {
          lease->checkServing();
          // What is here is pinned for this session: the Primary will not send it again.
          std::vector<Hash128> lacking;
          for (const Hash128& h : hashes) {
            if (!lease->node.pinForSession(*lease, h) && !lease->node.chunks.contains(h)) {
              lacking.push_back(h);
            }
          }
          toProto(lacking, context.getResults().initMissing(uint32_t(lacking.size())));
        });
  }

  kj::Promise<void> put(PutContext context) override {
    lease_->checkServing();
    auto chunk = context.getParams().getChunk();
    const Hash128 hash = fromProto(chunk.getHash());
    capnp::Data::Reader data = chunk.getData();
    const std::string name = "chunk " + hash.hex();
    if (data.size() > kMaxEncodedChunkBytes) {
      failWith(name + ": " + std::to_string(data.size()) + " encoded bytes, more than the limit of " +
               std::to_string(kMaxEncodedChunkBytes));
    }
    if (data.size() < 4 + 6) {  // header + the smallest zstd frame header
      failWith(name + ": truncated (" + std::to_string(data.size()) + " bytes)");
    }
    Impl& node = lease_->node;
    if (node.chunks.contains(hash)) {
      node.pinForSession(*lease_, hash);
      return kj::READY_NOW;
    }
    unsigned long long declared = ZSTD_getFrameContentSize(data.begin() + 4, data.size() - 4);
    if (declared == ZSTD_CONTENTSIZE_ERROR || declared == ZSTD_CONTENTSIZE_UNKNOWN) {
      failWith(name + ": not a zstd frame that declares its content size");
    }
    if (declared == 0 || declared > kMaxChunkBytes) {
      failWith(name + ": declares " + std::to_string(declared) + " raw bytes, outside 1.." +
               std::to_string(kMaxChunkBytes));
    }
    auto bytes = std::make_shared<const std::vector<uint8_t>>(data.begin(), data.end());
    ++lease_->putsInFlight;
    auto lease = kj::addRef(*lease_);
    return runOn<Status>(*node.codecWorkers,
                         [hash, bytes, declared]() -> Status {
                           auto decoded = decodeChunk(hash, bytes->data(), bytes->size(),
                                                      uint32_t(declared));
                           if (!decoded.ok()) return decoded.error();
                           return Status();
                         })
        .then([lease = kj::addRef(*lease), hash, bytes](Status verified) mutable {
          if (!verified.ok()) {
            PL_LOG_WARN("lease %llu: refused a chunk from %s: %s", (unsigned long long)lease->id,
                        lease->primary.c_str(), verified.error().message.c_str());
            failWith(verified.error().message);
          }
          lease->node.storeForSession(*lease, hash, bytes);
        })
        .attach(kj::defer([lease = kj::mv(lease)]() mutable { lease->putFinished(); }));
  }

  kj::Promise<void> load(LoadContext context) override {
    lease_->checkServing();
    auto manifest = fromProto(context.getParams().getManifest());
    if (!manifest.ok()) failWith(manifest.error().message);
    if (uint64_t limit = lease_->node.maxSceneBytes(); manifest->rawBytes() > limit)
      failWith("load: the scene needs " + std::to_string(manifest->rawBytes() >> 20) +
               " MiB of render data, more than this node accepts (" +
               std::to_string(limit >> 20) + " MiB)");
    // When the load is over (done, failed or cancelled), the session's pins on its chunks go.
    auto unpin = kj::defer(
        [lease = kj::addRef(*lease_), hashes = manifest->chunkHashes()]() mutable {
          lease->node.unpinForSession(*lease, &hashes);
        });
    auto lease = kj::addRef(*lease_);
    if (lease_->worker != nullptr) {
      return loadInWorker(context, kj::mv(lease), *manifest).attach(kj::mv(unpin));
    }
    return lease_->putsDone()
        .then([lease = kj::addRef(*lease), manifest = std::move(*manifest)]() mutable {
          return decodeScene(*lease, std::move(manifest));
        })
        .then([lease = kj::addRef(*lease)](LoadedScene scene) mutable {
          return loadOnDevices(*lease, scene).then([scene]() { return scene; });
        })
        .then([context, lease = kj::mv(lease)](LoadedScene scene) mutable {
          lease->checkServing();
          if (lease->findScene(scene.id) == nullptr) {
            lease->scenes.push_back(scene);
            uint32_t keep = std::max<uint32_t>(lease->node.options.maxScenesPerSession, 1);
            while (lease->scenes.size() > keep) lease->scenes.erase(lease->scenes.begin());
          }
          toProto(scene.id, context.getResults().initScene());
        })
        .attach(kj::mv(unpin));
  }

  kj::Promise<void> render(RenderContext context) override {
    lease_->checkServing();
    auto params = context.getParams();
    if (lease_->worker != nullptr) {
      if (!lease_->holdsDevice(params.getDevice())) {
        failWith("device " + std::to_string(params.getDevice()) +
                 " is not in this lease (devices " + joinIndices(lease_->devices) + ")");
      }
      auto request = lease_->workerSession.renderRequest();
      request.setScene(params.getScene());
      request.setDevice(params.getDevice());
      request.setUnit(params.getUnit());
      return request.send().then(
          [context, lease = kj::addRef(*lease_)](
              capnp::Response<proto::RenderSession::RenderResults>&& response) mutable {
            lease->checkServing();
            context.getResults().setResult(response.getResult());
          });
    }
    const Hash128 sceneId = fromProto(params.getScene());
    const LoadedScene* scene = lease_->findScene(sceneId);
    if (scene == nullptr) failWith("unknown scene " + sceneId.hex() + " (load it first)");
    const uint32_t device = params.getDevice();
    if (!lease_->holdsDevice(device)) {
      failWith("device " + std::to_string(device) + " is not in this lease (devices " +
               joinIndices(lease_->devices) + ")");
    }
    const WorkUnit unit = fromProto(params.getUnit());
    if (Status valid = unit.validate(scene->width, scene->height); !valid.ok()) {
      failWith(valid.error().message);
    }
    if (unit.tile.pixelCount() > kMaxTileResultPixels) {
      failWith("work unit " + unit.describe() + ": more than " +
               std::to_string(kMaxTileResultPixels) + " pixels");
    }
    DeviceSlot* slot = lease_->node.slots[device].get();
    auto cancelled = lease_->cancelled;
    auto render = [slot, cancelled, id = scene->id, data = scene->data,
                   unit]() -> Result<RenderOutput> {
      if (cancelled->load()) return Error{"lease ended"};
      if (Status s = ensureLoaded(*slot, id, data); !s.ok()) return s.error();
      auto start = std::chrono::steady_clock::now();
      Result<TileResult> result = slot->device->render(unit);
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                             start)
                      .count();
      if (!result.ok()) return result.error();
      RenderOutput out;
      out.unit = unit;
      out.raysTraced = result->raysTraced;
      out.renderMs = ms;
      out.encodedSums = encodeTileResult(*result);
      return out;
    };
    return runOn<Result<RenderOutput>>(*slot->worker, kj::mv(render))
        .then([context, lease = kj::addRef(*lease_)](Result<RenderOutput> out) mutable {
          lease->checkServing();
          if (!out.ok()) failWith(out.error().message);
          toProto(out->unit, out->encodedSums, out->raysTraced, out->renderMs,
                  context.getResults().initResult());
        });
  }

  kj::Promise<void> ping(PingContext context) override {
    lease_->checkServing();
    return kj::READY_NOW;
  }

 private:
  // Worker mode: hands the worker the manifest's chunks it lacks (from this node's cache), then
  // forwards the load. The chunks go as a `-> stream` of puts whose messages reference the
  // cached bytes (no copy), so the daemon holds about one flow-control window of messages
  // (the socket's send buffer, or one chunk when larger) beyond its cache, however big the scene.
  static kj::Promise<void> loadInWorker(LoadContext context, kj::Own<LeaseState> lease,
                                        const ChunkManifest& manifest) {
    std::vector<Hash128> hashes = manifest.chunkHashes();
    const WorkerProcess* worker = lease->worker;
    Impl& node = lease->node;
    auto refs = std::make_shared<Impl::ChunkRefs>();
    return lease->putsDone()
        .then([lease = kj::addRef(*lease), hashes]() mutable {
          lease->checkServing();
          auto request = lease->workerSession.missingRequest();
          toProto(hashes, request.initHashes(uint32_t(hashes.size())));
          return request.send();
        })
        .then([lease = kj::addRef(*lease), worker, refs](
                  capnp::Response<proto::RenderSession::MissingResults>&& response) mutable {
          lease->checkServing();
          auto lacking = fromProto(response.getMissing());
          if (!lacking.ok()) failWith(lacking.error().message);
          auto send = std::make_shared<const std::vector<Hash128>>(std::move(*lacking));
          for (const Hash128& hash : *send) {
            auto bytes = lease->node.chunks.find(hash);
            if (bytes == nullptr) {
              failWith("load: chunk " + hash.hex() + " is missing (put it first)");
            }
            refs->push_back(std::move(bytes));
          }
          if (!refs->empty()) lease->node.holdForWorker(worker, refs);
          return streamToWorker(kj::mv(lease), kj::mv(send), refs, 0);
        })
        .then([context, lease = kj::mv(lease)]() mutable {
          lease->checkServing();
          auto request = lease->workerSession.loadRequest();
          request.setManifest(context.getParams().getManifest());
          return request.send().then(
              [context, lease = kj::mv(lease)](
                  capnp::Response<proto::RenderSession::LoadResults>&& response) mutable {
                lease->checkServing();
                context.getResults().setScene(response.getScene());
              });
        })
        .then([&node, worker, refs]() {
          // The worker answered the load, so it has read every put sent before it.
          node.releaseForWorker(worker, refs);
        });
  }

  // Sends hashes[next..] (bytes: refs[next..]) to the lease's worker, one put at a time: each
  // send() resolves when Cap'n Proto's flow control lets the next one go. A put the worker
  // refused fails a later send (and so the load).
  static kj::Promise<void> streamToWorker(kj::Own<LeaseState> lease,
                                          std::shared_ptr<const std::vector<Hash128>> hashes,
                                          std::shared_ptr<Impl::ChunkRefs> refs, size_t next) {
    if (next == hashes->size()) return kj::READY_NOW;
    lease->checkServing();
    const std::vector<uint8_t>& bytes = *(*refs)[next];
    auto put = lease->workerSession.putRequest(capnp::MessageSize{16, 1});
    auto chunk = put.initChunk();
    toProto((*hashes)[next], chunk.initHash());
    chunk.adoptData(capnp::Orphanage::getForMessageContaining(chunk).referenceExternalData(
        kj::arrayPtr(bytes.data(), bytes.size())));
    return put.send().then([lease = kj::mv(lease), hashes = kj::mv(hashes), refs = kj::mv(refs),
                            next]() mutable {
      return streamToWorker(kj::mv(lease), kj::mv(hashes), kj::mv(refs), next + 1);
    });
  }

  // Assembles the manifest's render data (codec thread), or reuses it when some device still
  // holds the same scene.
  static kj::Promise<LoadedScene> decodeScene(LeaseState& lease, ChunkManifest manifest) {
    lease.checkServing();
    Impl& node = lease.node;
    LoadedScene scene;
    scene.id = sceneIdOf(manifest);
    if (const LoadedScene* known = lease.findScene(scene.id)) return *known;
    auto key = std::make_pair(scene.id.lo, scene.id.hi);
    if (auto it = node.decoded.find(key); it != node.decoded.end()) {
      if (auto data = it->second.lock()) {
        scene.data = std::move(data);
        scene.width = scene.data->camera[0].width;
        scene.height = scene.data->camera[0].height;
        return scene;
      }
      node.decoded.erase(it);
    }
    // Take the chunks out of the cache here (loop thread); the codec thread only reads them.
    std::vector<std::pair<Hash128, std::shared_ptr<const std::vector<uint8_t>>>> encoded;
    for (const Hash128& hash : manifest.chunkHashes()) {
      auto bytes = node.chunks.find(hash);
      if (bytes == nullptr) failWith("load: chunk " + hash.hex() + " is missing (put it first)");
      encoded.emplace_back(hash, std::move(bytes));
    }
    return runOn<Result<std::shared_ptr<const RenderData>>>(
               *node.codecWorkers,
               [manifest = std::move(manifest), encoded = std::move(encoded)]()
                   -> Result<std::shared_ptr<const RenderData>> {
                 ChunkStore store;
                 for (auto& [hash, bytes] : encoded) store.put(hash, *bytes);
                 Result<RenderData> data = decodeRenderData(manifest, store);
                 if (!data.ok()) return data.error();
                 return std::make_shared<const RenderData>(std::move(*data));
               })
        .then([&node, scene, key](Result<std::shared_ptr<const RenderData>> data) mutable {
          if (!data.ok()) failWith("load: " + data.error().message);
          scene.data = std::move(*data);
          scene.width = scene.data->camera[0].width;
          scene.height = scene.data->camera[0].height;
          for (auto it = node.decoded.begin(); it != node.decoded.end();) {
            it = it->second.expired() ? node.decoded.erase(it) : std::next(it);
          }
          node.decoded[key] = scene.data;
          return scene;
        });
  }

  // Loads the scene on every device of the lease, each on its own thread, in parallel.
  static kj::Promise<void> loadOnDevices(LeaseState& lease, const LoadedScene& scene) {
    lease.checkServing();
    kj::Vector<kj::Promise<Status>> loads;
    for (uint32_t d : lease.devices) {
      DeviceSlot* slot = lease.node.slots[d].get();
      loads.add(runOn<Status>(*slot->worker,
                              [slot, cancelled = lease.cancelled, id = scene.id,
                               data = scene.data]() -> Status {
                                if (cancelled->load()) return Error{"lease ended"};
                                return ensureLoaded(*slot, id, data);
                              }));
    }
    return kj::joinPromises(loads.releaseAsArray()).then([](kj::Array<Status> statuses) {
      for (const Status& s : statuses) {
        if (!s.ok()) failWith("load: " + s.error().message);
      }
    });
  }

  kj::Own<LeaseState> lease_;
};

class LeaseImpl final : public proto::Lease::Server {
 public:
  explicit LeaseImpl(kj::Own<LeaseState> lease) : lease_(kj::mv(lease)) {}
  ~LeaseImpl() noexcept(false) {
    lease_->node.endLease(*lease_,
                          *lease_->connectionLost ? "connection lost"
                                                  : "released (dropped by the primary, or its "
                                                    "connection closed)");
  }

  kj::Promise<void> renew(RenewContext context) override {
    lease_->checkServing();
    lease_->node.armExpiry(*lease_);
    if (lease_->heldDevices >= 0) {
      lease_->heldDevices = std::max<int64_t>(context.getParams().getHeldDevices(),
                                              int64_t(lease_->devices.size()));
    }
    context.getResults().setTtlMs(lease_->ttlMs);
    return kj::READY_NOW;
  }

 private:
  kj::Own<LeaseState> lease_;
};

class NodeImpl final : public proto::Node::Server {
 public:
  NodeImpl(Impl& node, std::string primary, std::shared_ptr<bool> connectionLost)
      : node_(node), primary_(std::move(primary)), connectionLost_(std::move(connectionLost)) {}

  kj::Promise<void> info(InfoContext context) override {
    auto info = context.getResults().initInfo();
    info.setProtocolVersion(node_.options.protocolVersion);
    info.setNodeId(node_.options.nodeId);
    info.setName(node_.options.name);
    auto devices = info.initDevices(uint32_t(node_.infos.size()));
    for (size_t i = 0; i < node_.infos.size(); ++i) toProto(node_.infos[i], devices[uint32_t(i)]);
    info.setState(!node_.ownerJobs.empty() ? proto::NodeState::PRIMARY
                  : node_.leases.empty()   ? proto::NodeState::IDLE
                                           : proto::NodeState::LEASED);
    return kj::READY_NOW;
  }

  kj::Promise<void> lease(LeaseContext context) override {
    auto request = context.getParams().getRequest();
    auto wanted = request.getDevices();
    const uint32_t deviceCount = uint32_t(node_.slots.size());
    if (wanted.size() > kMaxDevicesPerNode) {
      failWith("lease: " + std::to_string(wanted.size()) + " device indices, more than " +
               std::to_string(kMaxDevicesPerNode));
    }
    std::vector<uint32_t> candidates;
    if (wanted.size() == 0) {
      for (uint32_t d = 0; d < deviceCount; ++d) candidates.push_back(d);
    } else {
      for (uint32_t d : wanted) {
        if (d >= deviceCount) {
          failWith("lease: no device " + std::to_string(d) + " (this node has " +
                   std::to_string(deviceCount) + ")");
        }
        if (std::find(candidates.begin(), candidates.end(), d) == candidates.end()) {
          candidates.push_back(d);
        }
      }
    }
    std::string ownerToken(request.getOwnerToken().cStr(),
                           std::min<size_t>(request.getOwnerToken().size(), 64));
    if (!node_.ownerJobs.empty() &&
        (ownerToken.empty() || node_.ownerJobs.count(ownerToken) == 0)) {
      failWith(std::string("busy: ") + Impl::kOwnerBusy);
    }
    std::vector<uint32_t> granted;
    for (uint32_t d : candidates) {
      if (node_.slots[d]->leasedBy == nullptr) granted.push_back(d);
    }
    const int64_t requesterHeld =
        request.getReportsHeld() ? int64_t(std::min<uint32_t>(request.getHeldDevices(), 1u << 20))
                                 : -1;
    if (granted.empty() && requesterHeld >= 0 && request.getPreempt()) {
      // Fair share: the lease whose Primary holds the most gives the requester t of its
      // devices, t = min(its devices here, (holder - requester) / 2), so that afterwards the
      // holder still holds at least as many as the requester (they never swap back). The lease
      // is revoked whole (a lease's devices render in one worker); the devices beyond t stay
      // free for the holder to lease again when it reconnects.
      LeaseState* victim = nullptr;
      int64_t transfer = 0;
      for (uint32_t d : candidates) {
        LeaseState* holder = node_.slots[d]->leasedBy;
        if (holder == nullptr || holder->heldDevices < 0 || !holder->ownerToken.empty()) continue;
        const int64_t t = std::min<int64_t>(int64_t(holder->devices.size()),
                                            (holder->heldDevices - requesterHeld) / 2);
        if (t >= 1 && (victim == nullptr || holder->heldDevices > victim->heldDevices)) {
          victim = holder;
          transfer = t;
        }
      }
      if (victim != nullptr) {
        node_.endLease(*victim, "revoked: fair share (its primary holds " +
                                    std::to_string(victim->heldDevices) + " devices, " +
                                    primary_ + " holds " + std::to_string(requesterHeld) +
                                    "; " + std::to_string(transfer) + " change hands)");
        for (uint32_t d : candidates) {
          if (node_.slots[d]->leasedBy == nullptr && int64_t(granted.size()) < transfer)
            granted.push_back(d);
        }
      }
    }
    if (granted.empty()) failWith("busy: the devices asked for are leased to another primary");

    const NodeOptions& o = node_.options;
    uint32_t ttlMs = request.getTtlMs() == 0 ? o.defaultTtlMs
                                             : std::clamp(request.getTtlMs(), o.minTtlMs, o.maxTtlMs);
    std::string primaryName(request.getPrimaryName().cStr(),
                            std::min<size_t>(request.getPrimaryName().size(), 128));
    // primary_ is "<hello name> (<address>)"; name the lease's own primaryName when it differs.
    std::string label = primaryName.empty() || primary_.rfind(primaryName + " (", 0) == 0
                            ? primary_
                            : primaryName + " via " + primary_;
    auto state = kj::refcounted<LeaseState>(node_, node_.nextLeaseId++, std::move(label), granted,
                                            ttlMs, connectionLost_);
    state->ownerToken = std::move(ownerToken);
    if (requesterHeld >= 0) state->heldDevices = requesterHeld + int64_t(granted.size());
    for (uint32_t d : granted) node_.slots[d]->leasedBy = state.get();
    node_.leases.insert(state.get());
    node_.armExpiry(*state);
    PL_LOG_INFO("lease %llu granted to %s: devices %s, ttl %u ms", (unsigned long long)state->id,
                state->primary.c_str(), joinIndices(granted).c_str(), ttlMs);
    if (!node_.options.workerArgv.empty()) node_.startWorker(*state);

    auto results = context.getResults();
    results.setSession(kj::heap<RenderSessionImpl>(kj::addRef(*state)));
    results.setLease(kj::heap<LeaseImpl>(kj::mv(state)));
    results.setTtlMs(ttlMs);
    auto devices = results.initDevices(uint32_t(granted.size()));
    for (size_t i = 0; i < granted.size(); ++i) devices.set(uint32_t(i), granted[i]);
    return kj::READY_NOW;
  }

 private:
  Impl& node_;
  std::string primary_;
  std::shared_ptr<bool> connectionLost_;
};

class GateImpl final : public proto::Gate::Server {
 public:
  // handshake: the network connection's (null for an in-process Gate).
  GateImpl(Impl& node, std::string peer, std::shared_ptr<bool> connectionLost,
           std::shared_ptr<Impl::Handshake> handshake)
      : node_(node), peer_(std::move(peer)), connectionLost_(std::move(connectionLost)),
        handshake_(std::move(handshake)) {}

  kj::Promise<void> hello(HelloContext context) override {
    auto params = context.getParams();
    if (state_ != State::kNew) failWith("hello: already said hello on this connection");
    auto name = params.getPrimaryName();
    primaryName_ = std::string(name.cStr(), std::min<size_t>(name.size(), 128));
    auto results = context.getResults();
    results.setProtocolVersion(node_.options.protocolVersion);
    results.setNodeId(node_.options.nodeId);
    results.setName(node_.options.name);
    const uint32_t theirs = params.getProtocolVersion();
    if (theirs != node_.options.protocolVersion) {
      state_ = State::kIncompatible;
      PL_LOG_WARN("primary %s (%s) speaks protocol %u, this node speaks %u", primaryName_.c_str(),
                  peer_.c_str(), theirs, node_.options.protocolVersion);
      return kj::READY_NOW;
    }
    capnp::Data::Reader nonce = params.getNonce();
    if (nonce.size() != kNonceBytes) {
      state_ = State::kDone;
      failWith("hello: the nonce must be " + std::to_string(kNonceBytes) + " bytes, not " +
               std::to_string(nonce.size()));
    }
    std::copy(nonce.begin(), nonce.end(), primaryNonce_.begin());
    nodeNonce_ = randomNonce();
    Proof proof = nodeProof(node_.key, primaryNonce_, nodeNonce_);
    results.setNonce(kj::arrayPtr(nodeNonce_.data(), nodeNonce_.size()));
    results.setProof(kj::arrayPtr(proof.data(), proof.size()));
    state_ = State::kChallenged;
    return kj::READY_NOW;
  }

  kj::Promise<void> authenticate(AuthenticateContext context) override {
    const State state = state_;
    state_ = State::kDone;  // one attempt per connection
    if (state == State::kIncompatible) {
      failWith("protocol version mismatch: this node speaks protocol " +
               std::to_string(node_.options.protocolVersion));
    }
    capnp::Data::Reader proof = context.getParams().getProof();
    bool good = false;
    if (state == State::kChallenged) {
      Proof expected = primaryProof(node_.key, nodeNonce_, primaryNonce_);
      good = proofMatches(expected, std::span<const uint8_t>(proof.begin(), proof.size()));
    }
    const std::string who = (primaryName_.empty() ? std::string("primary") : primaryName_) +
                            " (" + peer_ + ")";
    if (!good) {
      PL_LOG_WARN("refused %s: authentication failed (%s)", who.c_str(),
                  state == State::kChallenged ? "wrong cluster key"
                                              : "no fresh hello before authenticate");
      failWith("authentication failed");
    }
    PL_LOG_INFO("%s authenticated", who.c_str());
    if (handshake_ != nullptr && handshake_->connection != nullptr) {
      handshake_->connection->authenticated();
    }
    context.getResults().setNode(kj::heap<NodeImpl>(node_, who, connectionLost_));
    return kj::READY_NOW;
  }

 private:
  enum class State { kNew, kChallenged, kIncompatible, kDone };
  Impl& node_;
  std::string peer_;
  std::shared_ptr<bool> connectionLost_;
  std::shared_ptr<Impl::Handshake> handshake_;
  State state_ = State::kNew;
  std::string primaryName_;
  Nonce primaryNonce_{};
  Nonce nodeNonce_{};
};

}  // namespace

void NodeService::Impl::serve(kj::Own<kj::AsyncIoStream> stream, std::string peer) {
  if (peer.empty()) peer = peerAddress(*stream);
  if (options.maxPendingConnections != 0 && pendingConnections >= options.maxPendingConnections) {
    refuseConnection(peer);
    return;  // dropping the stream closes it
  }
  // Pending from here until the Gate authenticates the peer: the TLS handshake and the Gate's
  // share one deadline (below).
  auto handshake = std::make_shared<Handshake>();
  kj::Promise<void> connection = nullptr;
  if (!options.tls) {
    connection = runConnection(kj::mv(stream), peer, handshake);
  } else if (secure == nullptr) {
    PL_LOG_WARN("closing the connection from %s: this node has no TLS context", peer.c_str());
    return;
  } else {
    auto pending = kj::heap<PendingTls>(*this);
    connection = secure->wrapServer(kj::mv(stream))
                     .then(
                         [this, peer, handshake, pending = kj::mv(pending)](
                             kj::Own<kj::AsyncIoStream> secured) mutable {
                           pending = nullptr;  // the Connection counts it from now on
                           return runConnection(kj::mv(secured), peer, handshake);
                         },
                         [peer](kj::Exception&& e) {
                           if (isTlsKeyMismatch(e)) {
                             PL_LOG_WARN("TLS handshake from %s failed: authentication failed, "
                                         "%s (a client without this cluster key?)",
                                         peer.c_str(), tlsFailureReason(e).c_str());
                           } else {
                             PL_LOG_WARN("TLS handshake from %s failed: %s (not a peerlight "
                                         "client, or one of another version?)",
                                         peer.c_str(), tlsFailureReason(e).c_str());
                           }
                         });
  }
  // A peer that has not authenticated within the handshake timeout is dropped (the same way).
  kj::Promise<void> timeout = kj::NEVER_DONE;
  if (options.handshakeTimeoutMs != 0) {
    timeout = loop.timer()
                  .afterDelay(options.handshakeTimeoutMs * kj::MILLISECONDS)
                  .then([handshake, peer, ms = options.handshakeTimeoutMs]() -> kj::Promise<void> {
                    if (handshake->authenticated) return kj::NEVER_DONE;
                    PL_LOG_WARN("closing the connection from %s: not authenticated within %u ms",
                                peer.c_str(), ms);
                    return kj::READY_NOW;
                  });
  }
  connectionTasks->add(connection.exclusiveJoin(kj::mv(timeout)));
}

kj::Promise<void> NodeService::Impl::runConnection(kj::Own<kj::AsyncIoStream> stream,
                                                   const std::string& peer,
                                                   std::shared_ptr<Handshake> handshake) {
  auto lost = std::make_shared<bool>(false);
  auto connection = kj::heap<Connection>(*this, kj::mv(stream), peer, lost, std::move(handshake));
  PL_LOG_DEBUG("connection from %s", peer.c_str());
  // When the connection is gone, flag it (for the log lines of its leases), then drop its RPC
  // system, which releases its capabilities and so ends its leases.
  auto disconnected = connection->network.onDisconnect().then(
      [lost, peer]() {
        *lost = true;
        PL_LOG_DEBUG("connection from %s closed", peer.c_str());
      },
      [lost](kj::Exception&&) { *lost = true; });
  return disconnected.attach(kj::mv(connection));
}

proto::Gate::Client NodeService::Impl::newGate(std::string peer,
                                               std::shared_ptr<bool> connectionLost,
                                               std::shared_ptr<Handshake> handshake) {
  return kj::heap<GateImpl>(*this, std::move(peer), std::move(connectionLost),
                            std::move(handshake));
}

NodeService::NodeService(UvKjLoop& loop, ClusterKey key,
                         std::vector<std::unique_ptr<Device>> devices, NodeOptions options)
    : impl_(std::make_unique<Impl>(loop, std::move(key), std::move(devices), std::move(options))) {}

NodeService::~NodeService() = default;

kj::Promise<void> NodeService::listen(kj::ConnectionReceiver& receiver) {
  return impl_->acceptLoop(receiver);
}

void NodeService::serve(kj::Own<kj::AsyncIoStream> stream, std::string peer) {
  impl_->serve(kj::mv(stream), std::move(peer));
}

proto::Gate::Client NodeService::newGate(std::string peer) {
  return impl_->newGate(std::move(peer), std::make_shared<bool>(false));
}

proto::Node::Client NodeService::newTrustedNode(std::string peer) {
  return kj::heap<NodeImpl>(*impl_, std::move(peer), std::make_shared<bool>(false));
}

size_t NodeService::workerCount() const {
  size_t running = 0;
  for (const auto& w : impl_->workers) running += w->exited() ? 0 : 1;
  return running;
}

void NodeService::endAllLeases(const std::string& why) { impl_->endAllLeases(why); }
size_t NodeService::ownerJobStarted(const std::string& token) {
  return impl_->ownerJobStarted(token);
}
void NodeService::ownerJobEnded(const std::string& token) { impl_->ownerJobEnded(token); }
bool NodeService::ownerActive() const { return !impl_->ownerJobs.empty(); }

void NodeService::disconnectAll() { impl_->connectionTasks = kj::heap<kj::TaskSet>(*impl_); }

const std::string& NodeService::nodeId() const { return impl_->options.nodeId; }
const std::string& NodeService::name() const { return impl_->options.name; }
const std::vector<DeviceInfo>& NodeService::deviceInfos() const { return impl_->infos; }
size_t NodeService::activeLeaseCount() const { return impl_->leases.size(); }
size_t NodeService::freeDeviceCount() const {
  size_t free = 0;
  for (const auto& slot : impl_->slots) free += slot->leasedBy == nullptr ? 1 : 0;
  return free;
}
size_t NodeService::connectionCount() const { return impl_->connections; }
size_t NodeService::cachedChunkCount() const { return impl_->chunks.count(); }
uint64_t NodeService::cachedChunkBytes() const { return impl_->chunks.bytes(); }
uint64_t NodeService::pinnedChunkBytes() const { return impl_->chunks.pinnedBytes(); }
size_t NodeService::pendingConnectionCount() const { return impl_->pendingConnections; }

}  // namespace pl
