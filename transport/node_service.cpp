// NodeService: the composition of a Render Node (see node_service.h). This file wires the parts
// together and carries out the lease policy's decisions; each part has a file of its own:
//   core/cluster/lease_table.h   which device belongs to which lease: grant, renew, expiry,
//                                owner preemption, fair share (pure logic; decides)
//   transport/admission.h        connections until they authenticate: TLS, limits, timeout
//   transport/node_gate.h        the Gate: hello / authenticate
//   transport/session_server.h   the RenderSession: missing / put / load / render / ping
//   transport/chunk_cache.h      the chunk cache and a session's pins in it
//   transport/node_lease.h       the state those parts share (devices, per-lease session state)
// Here: the Node (info, lease) and Lease (renew) capabilities, the one expiry timer, worker
// processes (started, reused warm, stopped: WarmWorkerPool decides which stay), and ending
// leases (the session's part, the worker, the log line).

#include "transport/node_service.h"

#include <kj/debug.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <list>
#include <map>
#include <optional>
#include <thread>

#include "core/cluster/lease_table.h"
#include "core/cluster/memory_budget.h"
#include "core/util/check.h"
#include "core/util/log.h"
#include "core/util/system.h"
#include "transport/admission.h"
#include "transport/chunk_codec.h"
#include "transport/node_gate.h"
#include "transport/node_lease.h"
#include "transport/protocol_convert.h"
#include "transport/session_server.h"
#include "transport/worker_process.h"

namespace pl {

namespace {

std::string hostName() {
  char buffer[256] = {};
  if (gethostname(buffer, sizeof(buffer) - 1) != 0 || buffer[0] == '\0') return "peerlight-node";
  return buffer;
}

constexpr uint32_t kMaxCodecThreads = 64;  // a bound on NodeOptions::codecThreads

uint64_t sceneLimitBytes(const NodeOptions& options) {
  if (options.maxSceneBytes != 0) return options.maxSceneBytes;
  const uint64_t memory = physicalMemoryBytes();
  if (memory == 0) return kMaxRenderDataBytes;
  return std::min<uint64_t>(memory / 2, kMaxRenderDataBytes);
}

uint64_t warmLimitBytes(const NodeOptions& options) {
  if (options.warmWorkerBytes != 0) return options.warmWorkerBytes;
  const uint64_t memory = physicalMemoryBytes();
  return memory == 0 ? uint64_t(1) << 30 : memory / 4;
}

NodeOptions normalized(NodeOptions options) {
  if (options.name.empty()) options.name = hostName();
  if (options.nodeId.empty()) options.nodeId = randomHex(16);
  if (options.codecThreads == 0) options.codecThreads = defaultCodecThreads();
  options.codecThreads = std::min<uint32_t>(options.codecThreads, kMaxCodecThreads);
  return options;
}

// The lease table's clock is the loop's KJ timer (libuv's, ms resolution), so that the one
// expiry timer fires exactly when the table says a lease is due.
SchedulerTime fromKj(kj::TimePoint t) {
  return SchedulerTime{} +
         std::chrono::nanoseconds((t - kj::origin<kj::TimePoint>()) / kj::NANOSECONDS);
}
kj::TimePoint toKj(SchedulerTime t) {
  return kj::origin<kj::TimePoint>() +
         std::chrono::duration_cast<std::chrono::nanoseconds>(t - SchedulerTime{}).count() *
             kj::NANOSECONDS;
}

}  // namespace

struct NodeService::Impl final : public kj::TaskSet::ErrorHandler {
  Impl(UvKjLoop& loop, ClusterKey key, std::vector<std::unique_ptr<Device>> devices,
       NodeOptions optionsIn);
  ~Impl();

  void taskFailed(kj::Exception&& exception) override {
    PL_LOG_WARN("node task failed: %s", exception.getDescription().cStr());
  }

  SchedulerTime now() const { return fromKj(loop.timer().now()); }

  // --- carrying out the lease table's decisions ------------------------------------------------

  // The table has ended a lease: end its session and worker, and log it.
  void carryOut(const LeaseEnding& ending);
  // The transport saw a lease end (released, connection lost, worker failed).
  void endLease(LeaseState& lease, LeaseEnd reason, std::string detail = "");
  void endAllLeases(const std::string& why);
  size_t ownerJobStarted(const std::string& token);
  void ownerJobEnded(const std::string& token);
  // Points the one expiry timer at the table's next expiry (after any change to the table).
  void rearmExpiry();
  kj::Promise<void> expireAt(SchedulerTime due);

  // Worker mode: a worker process, and what the daemon knows of it.
  struct WorkerRecord {
    uint64_t number = 0;  // its name in the warm pool
    std::unique_ptr<WorkerProcess> process;
    std::vector<uint32_t> devices;
    // The worker-side lease on all its devices and its session, for the worker's whole life.
    proto::Lease::Client lease = nullptr;
    proto::RenderSession::Client session = nullptr;
    LeaseState* serving = nullptr;  // the lease it serves; null while warm, or once let go
    // Its last scenes loaded (the worker's sessions keep as many): what it holds, for the warm
    // bound and the memory budget.
    SceneWindow recentLoads{1};
    uint64_t heldBytes() const;
  };
  // Gives `lease` a worker: a warm one with exactly its devices, else a new one (stopping the
  // warm workers that hold any of its devices).
  void attachWorker(LeaseState& lease);
  void startWorker(LeaseState& lease);
  void serveWith(WorkerRecord& worker, LeaseState& lease);
  // The lease is ending (`ending`): its worker stays warm or is stopped.
  void letGoOfWorker(LeaseState& lease, const LeaseEnding& ending);
  void stopWarmWorkers(const std::vector<uint64_t>& numbers, const std::string& why);

  // --- the memory budget (NodeOptions::memoryBudget) --------------------------------------------
  // Reserves the lease's scenes with the one `manifest` adds (NodeResources::admitLoad); a load
  // that does not fit ends the lease (LeaseEnd::MemoryBudget, or SceneTooLarge) and fails.
  Status admitLoad(LeaseState& lease, const ChunkManifest& manifest);
  // Stops the warm workers the budget evicted (they are out of it already).
  void stopEvicted(const std::vector<MemoryHolder>& evicted, const std::string& why);
  void releaseWarm(uint64_t number);
  WorkerRecord* findWorker(uint64_t number);
  WorkerRecord* findWorker(const WorkerProcess* process);

  proto::Gate::Client newGate(const std::string& peer, std::shared_ptr<bool> connectionLost,
                              std::shared_ptr<ConnectionHandshake> handshake);
  proto::Node::Client newNode(const std::string& primary, std::shared_ptr<bool> connectionLost,
                              bool trusted = false);

  UvKjLoop& loop;
  const NodeOptions options;  // normalized
  const GateIdentity identity;
  std::vector<DeviceInfo> infos;
  NodeResources resources;
  LeaseTable table;
  std::map<LeaseId, LeaseState*> leases;  // the table's active leases, as sessions
  // The last lease and worker events (recentEvents()).
  const std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  std::deque<std::pair<double, std::string>> events;
  void event(std::string text) {
    if (events.size() >= 64) events.pop_front();
    events.emplace_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(),
        std::move(text));
  }
  // The expiry timer, due at `expiryDue` (none: no lease); while it runs its own callback,
  // rearmExpiry() leaves it to the callback.
  kj::Promise<void> expiryTimer = nullptr;
  std::optional<SchedulerTime> expiryDue;
  bool expiring = false;
  // Worker processes, until they have exited (then swept a turn later), and the idle ones kept.
  std::list<WorkerRecord> workers;
  uint64_t nextWorkerNumber = 1;
  WarmWorkerPool warm;
  uint64_t workersStarted = 0;
  uint64_t warmReuses = 0;
  uint64_t leasesGranted = 0;
  kj::Own<kj::TaskSet> sweeps = kj::heap<kj::TaskSet>(*this);
  std::unique_ptr<Admission> admission;  // last: connections go first
};

namespace {

using Impl = NodeService::Impl;

proto::LeaseEnd toProto(LeaseEnd reason) {
  switch (reason) {
    case LeaseEnd::Released: return proto::LeaseEnd::RELEASED;
    case LeaseEnd::ConnectionLost: return proto::LeaseEnd::CONNECTION_LOST;
    case LeaseEnd::Expired: return proto::LeaseEnd::EXPIRED;
    case LeaseEnd::RevokedOwner: return proto::LeaseEnd::REVOKED_OWNER;
    case LeaseEnd::RevokedFairShare: return proto::LeaseEnd::REVOKED_FAIR_SHARE;
    case LeaseEnd::NodeShutdown: return proto::LeaseEnd::NODE_SHUTDOWN;
    case LeaseEnd::WorkerFailed: return proto::LeaseEnd::WORKER_FAILED;
    case LeaseEnd::MemoryBudget: return proto::LeaseEnd::MEMORY_BUDGET;
    case LeaseEnd::SceneTooLarge: return proto::LeaseEnd::SCENE_TOO_LARGE;
  }
  return proto::LeaseEnd::RELEASED;
}

class LeaseServer final : public proto::Lease::Server {
 public:
  LeaseServer(Impl& node, kj::Own<LeaseState> lease) : node_(node), lease_(kj::mv(lease)) {}
  ~LeaseServer() noexcept(false) {
    node_.endLease(*lease_,
                   *lease_->connectionLost ? LeaseEnd::ConnectionLost : LeaseEnd::Released);
  }

  kj::Promise<void> renew(RenewContext context) override {
    lease_->checkServing();
    LeaseRenewal renewal =
        node_.table.renew(lease_->id, context.getParams().getHeldDevices(), node_.now());
    if (renewal.outcome == LeaseRenewal::Outcome::Expired) {
      // Due, and the expiry timer has not run yet: it ends now.
      node_.carryOut(*renewal.ending);
      node_.rearmExpiry();
    }
    lease_->checkServing();
    PL_CHECK(renewal.outcome == LeaseRenewal::Outcome::Renewed);
    node_.rearmExpiry();
    context.getResults().setTtlMs(renewal.ttlMs);
    return kj::READY_NOW;
  }

  kj::Promise<void> ended(EndedContext context) override {
    // A pending ended() must not keep this server (and so the lease) alive when the Primary
    // drops the lease or its connection goes: Cap'n Proto 0.9 runs a server call to its end
    // unless it allows cancellation.
    context.allowCancellation();
    return lease_->whenEnded().then([context, lease = kj::addRef(*lease_)]() mutable {
      auto results = context.getResults();
      results.setReason(toProto(lease->ending->reason));
      results.setDetail(lease->ending->text());
    });
  }

 private:
  Impl& node_;
  kj::Own<LeaseState> lease_;
};

class NodeServer final : public proto::Node::Server {
 public:
  // trusted: a Node of this process (newTrustedNode()), the only kind whose lease requests may
  // name an owner job; a remote Primary's token is ignored (it could have learnt another
  // machine's token and replay it here).
  NodeServer(Impl& node, std::string primary, std::shared_ptr<bool> connectionLost, bool trusted)
      : node_(node), primary_(std::move(primary)), connectionLost_(std::move(connectionLost)),
        trusted_(trusted) {}

  kj::Promise<void> info(InfoContext context) override {
    auto info = context.getResults().initInfo();
    info.setProtocolVersion(node_.options.protocolVersion);
    info.setRenderKernel(node_.options.renderKernel);
    info.setNodeId(node_.options.nodeId);
    info.setName(node_.options.name);
    auto devices = info.initDevices(uint32_t(node_.infos.size()));
    for (size_t i = 0; i < node_.infos.size(); ++i) toProto(node_.infos[i], devices[uint32_t(i)]);
    info.setState(node_.table.ownerActive()             ? proto::NodeState::PRIMARY
                  : node_.table.activeLeaseCount() == 0 ? proto::NodeState::IDLE
                                                        : proto::NodeState::LEASED);
    return kj::READY_NOW;
  }

  kj::Promise<void> lease(LeaseContext context) override {
    auto request = context.getParams().getRequest();
    auto wanted = request.getDevices();
    if (wanted.size() > kMaxDevicesPerNode) {
      failCall("lease: " + std::to_string(wanted.size()) + " device indices, more than " +
               std::to_string(kMaxDevicesPerNode));
    }
    LeaseGrantRequest ask;
    for (uint32_t d : wanted) ask.devices.push_back(d);
    ask.ttlMs = request.getTtlMs();
    if (trusted_)
      ask.ownerToken = std::string(request.getOwnerToken().cStr(),
                                   std::min<size_t>(request.getOwnerToken().size(), 64));
    if (request.getReportsHeld()) ask.heldDevices = request.getHeldDevices();
    ask.preempt = request.getPreempt();
    ask.requester = primary_;
    LeaseGrant grant = node_.table.grant(ask, node_.now());
    for (const LeaseEnding& revoked : grant.revoked) node_.carryOut(revoked);
    node_.rearmExpiry();
    if (!grant.granted()) failCall(describeRefusal(grant));

    std::string primaryName(request.getPrimaryName().cStr(),
                            std::min<size_t>(request.getPrimaryName().size(), 128));
    // primary_ is "<hello name> (<address>)"; name the lease's own primaryName when it differs.
    std::string label = primaryName.empty() || primary_.rfind(primaryName + " (", 0) == 0
                            ? primary_
                            : primaryName + " via " + primary_;
    auto state = kj::refcounted<LeaseState>(node_.resources, grant.lease, std::move(label),
                                            grant.devices, connectionLost_);
    node_.leases[grant.lease] = state.get();
    ++node_.leasesGranted;
    state->budgeted = !trusted_;  // this process's own jobs reserved their scenes themselves
    PL_LOG_INFO("lease %llu granted to %s: devices %s, ttl %u ms",
                (unsigned long long)grant.lease, state->primary.c_str(),
                joinIndices(grant.devices).c_str(), grant.ttlMs);
    node_.event("lease " + std::to_string(uint64_t(grant.lease)) + " granted to " +
                state->primary + ": devices " + joinIndices(grant.devices));
    if (!node_.options.workerArgv.empty()) node_.attachWorker(*state);

    auto results = context.getResults();
    results.setSession(newSessionServer(kj::addRef(*state)));
    results.setLease(kj::heap<LeaseServer>(node_, kj::mv(state)));
    results.setTtlMs(grant.ttlMs);
    auto devices = results.initDevices(uint32_t(grant.devices.size()));
    for (size_t i = 0; i < grant.devices.size(); ++i) devices.set(uint32_t(i), grant.devices[i]);
    return kj::READY_NOW;
  }

 private:
  Impl& node_;
  std::string primary_;
  std::shared_ptr<bool> connectionLost_;
  bool trusted_;
};

}  // namespace

NodeService::Impl::Impl(UvKjLoop& loop, ClusterKey key,
                        std::vector<std::unique_ptr<Device>> devices, NodeOptions optionsIn)
    : loop(loop), options(normalized(std::move(optionsIn))),
      identity{options.protocolVersion, options.nodeId, options.name, std::move(key)},
      resources(options, sceneLimitBytes(options)),
      table(uint32_t(devices.size()),
            {options.defaultTtlMs, options.minTtlMs, options.maxTtlMs}),
      warm({warmLimitBytes(options), options.maxWarmWorkers}) {
  resources.codecPool = std::make_unique<JobQueue>(options.codecThreads);
  resources.admitLoad = [this](LeaseState& lease, const ChunkManifest& manifest) {
    return admitLoad(lease, manifest);
  };
  resources.admitUpload = [this](LeaseState& lease, uint64_t sceneBytes) {
    const std::string why =
        whySceneTooLarge(lease.budgeted ? this->options.memoryBudget : nullptr, sceneBytes,
                         resources.maxSceneBytes, resources.chunks.capacity());
    if (why.empty()) return Status();
    PL_LOG_WARN("lease %llu of %s: upload refused: %s", (unsigned long long)lease.id,
                lease.primary.c_str(), why.c_str());
    endLease(lease, LeaseEnd::SceneTooLarge, why);
    return Status(Error{"upload: " + why});
  };
  if (options.memoryBudget != nullptr) {
    // Chunks pinned beyond the cache's capacity (waiting for their loads) grow its reservation;
    // a pin that does not fit leaves its chunk unpinned (ChunkPins).
    resources.chunks.setReservation([this](uint64_t footprint) {
      MemoryGrant grant =
          this->options.memoryBudget->reserve({MemoryHolder::Kind::ChunkCache, 0}, footprint);
      stopEvicted(grant.evict, "evicted: its memory was needed by the chunks waiting for a load");
      return grant.granted;
    });
  }
  for (auto& device : devices) {
    PL_CHECK(device != nullptr);
    auto slot = std::make_unique<DeviceSlot>();
    slot->info = device->info();
    slot->device = std::move(device);
    slot->thread = std::make_unique<JobQueue>(1);
    infos.push_back(slot->info);
    resources.slots.push_back(std::move(slot));
  }
  AdmissionLimits limits;
  limits.handshakeTimeoutMs = options.handshakeTimeoutMs;
  limits.maxPendingConnections = options.maxPendingConnections;
  limits.tlsTimeoutMs = options.tlsTimeoutMs;
  limits.maxPendingPerSource = options.maxPendingPerSource;
  limits.handshakeMessageBytes = options.handshakeMessageBytes;
  limits.maxMessageBytes = options.maxMessageBytes;
  admission = std::make_unique<Admission>(
      loop, limits, options.tls, identity.key,
      [this](const std::string& peer, std::shared_ptr<bool> lost,
             std::shared_ptr<ConnectionHandshake> handshake) {
        return newGate(peer, std::move(lost), std::move(handshake));
      });
}

NodeService::Impl::~Impl() {
  endAllLeases(leaseEndText(LeaseEnd::NodeShutdown));
  admission.reset();  // closes the connections (their capabilities end nothing more)
  sweeps = nullptr;
  workers.clear();  // SIGKILLs any still running
  resources.workerChunkRefs.clear();  // after the connections that may still reference them
  expiryTimer = nullptr;
  // Join the threads before the devices and data they use go away.
  resources.codecPool.reset();
  for (auto& slot : resources.slots) slot->thread.reset();
}

void NodeService::Impl::carryOut(const LeaseEnding& ending) {
  auto it = leases.find(ending.lease);
  PL_CHECK(it != leases.end());
  LeaseState& lease = *it->second;
  leases.erase(it);
  if (options.memoryBudget != nullptr)
    options.memoryBudget->release({MemoryHolder::Kind::Lease, uint64_t(ending.lease)});
  if (lease.worker != nullptr) letGoOfWorker(lease, ending);
  lease.end(ending);
  PL_LOG_INFO("lease %llu of %s %s; devices %s are free", (unsigned long long)ending.lease,
              lease.primary.c_str(), ending.summary().c_str(), joinIndices(ending.devices).c_str());
  event("lease " + std::to_string(uint64_t(ending.lease)) + " of " + lease.primary + " " +
        ending.summary());
}

void NodeService::Impl::endLease(LeaseState& lease, LeaseEnd reason, std::string detail) {
  std::optional<LeaseEnding> ending = table.release(lease.id, reason, std::move(detail));
  if (!ending) return;  // ended before
  carryOut(*ending);
  rearmExpiry();
}

void NodeService::Impl::endAllLeases(const std::string& why) {
  for (const LeaseEnding& ending : table.releaseAll(LeaseEnd::NodeShutdown, why)) {
    carryOut(ending);
  }
  stopWarmWorkers(warm.clear(), why);
  rearmExpiry();
}

size_t NodeService::Impl::ownerJobStarted(const std::string& token) {
  std::vector<LeaseEnding> revoked = table.ownerJobStarted(token);
  PL_LOG_INFO("owner job started: revoking %zu remote lease(s), refusing new ones",
              revoked.size());
  for (const LeaseEnding& ending : revoked) carryOut(ending);
  rearmExpiry();
  return revoked.size();
}

void NodeService::Impl::ownerJobEnded(const std::string& token) {
  if (table.ownerJobEnded(token)) PL_LOG_INFO("owner job ended: devices offered again");
}

void NodeService::Impl::rearmExpiry() {
  if (expiring) return;  // the timer's callback re-arms when it is done
  const std::optional<SchedulerTime> due = table.nextExpiry();
  if (due == expiryDue) return;
  expiryDue = due;
  expiryTimer = due ? expireAt(*due).eagerlyEvaluate(nullptr) : nullptr;
}

kj::Promise<void> NodeService::Impl::expireAt(SchedulerTime due) {
  return loop.timer().atTime(toKj(due)).then([this]() -> kj::Promise<void> {
    expiring = true;
    for (const LeaseEnding& ending : table.expire(now()).ended) carryOut(ending);
    expiring = false;
    // Chained rather than assigned: this promise is expiryTimer itself.
    expiryDue = table.nextExpiry();
    if (!expiryDue) return kj::READY_NOW;
    return expireAt(*expiryDue);
  });
}

uint64_t NodeService::Impl::WorkerRecord::heldBytes() const {
  return recentLoads.bytes();
}

Status NodeService::Impl::admitLoad(LeaseState& lease, const ChunkManifest& manifest) {
  MemoryBudget* budget = lease.budgeted ? options.memoryBudget : nullptr;
  const LoadVerdict verdict =
      pl::admitLoad(budget, {MemoryHolder::Kind::Lease, uint64_t(lease.id)}, lease.memoryScenes,
                    {geometryKeyOf(manifest), manifest.rawBytes()}, resources.maxSceneBytes,
                    resources.chunks.capacity());
  if (verdict.outcome != LoadOutcome::Admitted) {
    const bool tooLarge = verdict.outcome == LoadOutcome::SceneTooLarge;
    PL_LOG_WARN("lease %llu of %s: load refused: %s", (unsigned long long)lease.id,
                lease.primary.c_str(), verdict.why.c_str());
    endLease(lease, tooLarge ? LeaseEnd::SceneTooLarge : LeaseEnd::MemoryBudget, verdict.why);
    return Error{"load: " + verdict.why};
  }
  lease.memoryScenes = verdict.scenes;
  stopEvicted(verdict.evict, "evicted: its memory was needed by lease " +
                                 std::to_string(uint64_t(lease.id)));
  return Status();
}

void NodeService::Impl::stopEvicted(const std::vector<MemoryHolder>& evicted,
                                    const std::string& why) {
  std::vector<uint64_t> numbers;
  for (const MemoryHolder& h : evicted) {
    if (h.kind != MemoryHolder::Kind::WarmWorker) continue;
    warm.remove(h.id);
    numbers.push_back(h.id);
  }
  stopWarmWorkers(numbers, why);
}

void NodeService::Impl::releaseWarm(uint64_t number) {
  if (options.memoryBudget != nullptr)
    options.memoryBudget->release({MemoryHolder::Kind::WarmWorker, number});
}

NodeService::Impl::WorkerRecord* NodeService::Impl::findWorker(uint64_t number) {
  for (WorkerRecord& w : workers) {
    if (w.number == number) return &w;
  }
  return nullptr;
}

NodeService::Impl::WorkerRecord* NodeService::Impl::findWorker(const WorkerProcess* process) {
  for (WorkerRecord& w : workers) {
    if (w.process.get() == process) return &w;
  }
  return nullptr;
}

void NodeService::Impl::attachWorker(LeaseState& lease) {
  WarmWorkerPool::Take take = warm.take(lease.devices);
  stopWarmWorkers(take.stop, "its devices are leased (lease " +
                                 std::to_string(uint64_t(lease.id)) + ": devices " +
                                 joinIndices(lease.devices) + ")");
  WorkerRecord* reuse = take.reuse ? findWorker(*take.reuse) : nullptr;
  if (take.reuse) releaseWarm(*take.reuse);
  if (reuse != nullptr && !reuse->process->exited() && options.memoryBudget != nullptr &&
      lease.budgeted) {
    // What the warm worker holds is the lease's from now on; a worker that no longer fits is
    // stopped and a fresh one starts (its loads reserve as they come).
    MemoryGrant grant = options.memoryBudget->reserve(
        {MemoryHolder::Kind::Lease, uint64_t(lease.id)}, reuse->heldBytes());
    if (grant.granted) {
      lease.memoryScenes = reuse->recentLoads;
      stopEvicted(grant.evict, "evicted: its memory was needed by lease " +
                                   std::to_string(uint64_t(lease.id)));
    } else {
      reuse->process->stop("not reused: " + options.memoryBudget->refusalText(grant));
      reuse = nullptr;
    }
  }
  if (reuse == nullptr || reuse->process->exited()) {
    startWorker(lease);
    return;
  }
  ++warmReuses;
  PL_LOG_INFO("worker %d (warm) serves lease %llu", int(reuse->process->pid()),
              (unsigned long long)lease.id);
  event("worker " + std::to_string(reuse->process->pid()) + " (warm) serves lease " +
        std::to_string(uint64_t(lease.id)));
  // The worker-side lease lasts about 49 days; each reuse starts that again.
  sweeps->add(reuse->lease.renewRequest().send().then([](auto&&) {}, [](kj::Exception&&) {}));
  serveWith(*reuse, lease);
}

void NodeService::Impl::startWorker(LeaseState& lease) {
  std::vector<std::string> argv = options.workerArgv;
  argv.push_back("--devices");
  argv.push_back(joinIndices(lease.devices));
  WorkerProcessOptions workerOptions;
  workerOptions.heartbeatTimeoutMs = options.workerHeartbeatTimeoutMs;
  workerOptions.killGraceMs = options.workerKillGraceMs;
  workerOptions.maxMessageBytes = options.maxMessageBytes;
  workerOptions.executable = options.workerExecutable;
  const uint64_t number = nextWorkerNumber++;
  const std::string label = "lease " + std::to_string(uint64_t(lease.id));
  auto worker = WorkerProcess::start(
      loop, argv, label, workerOptions,
      [this, number](const std::string& why) {
        // Reported at most once and never after stop(): the record is there.
        WorkerRecord* record = findWorker(number);
        if (record == nullptr) return;
        event("worker " + std::to_string(record->process->pid()) + " failed: " + why);
        if (record->serving != nullptr) {
          endLease(*record->serving, LeaseEnd::WorkerFailed, why);
        } else {
          warm.remove(number);  // a warm worker that failed is never reused
          releaseWarm(number);
        }
      },
      [this]() {
        sweeps->add(kj::evalLater([this]() {
          std::vector<const WorkerProcess*> gone;
          workers.remove_if([this, &gone](const WorkerRecord& w) {
            if (!w.process->exited()) return false;
            gone.push_back(w.process.get());
            warm.remove(w.number);
            releaseWarm(w.number);
            return true;
          });
          for (const WorkerProcess* w : gone) resources.workerChunkRefs.forget(w);
        }));
      });
  if (!worker.ok()) {
    endLease(lease, LeaseEnd::WorkerFailed, worker.error().message);
    failCall("lease: " + worker.error().message);
  }
  ++workersStarted;
  event("worker " + std::to_string((*worker)->pid()) + " started for " + label);
  WorkerRecord& record = workers.emplace_back();
  record.recentLoads = SceneWindow(options.maxScenesPerSession);
  record.number = number;
  record.process = std::move(*worker);
  record.devices = lease.devices;
  auto request = record.process->node().leaseRequest();
  auto r = request.initRequest();
  r.setPrimaryName("daemon");
  auto devices = r.initDevices(uint32_t(lease.devices.size()));
  for (size_t i = 0; i < lease.devices.size(); ++i) devices.set(uint32_t(i), lease.devices[i]);
  auto leased = request.send();
  record.session = leased.getSession();
  record.lease = leased.getLease();
  serveWith(record, lease);
}

void NodeService::Impl::serveWith(WorkerRecord& worker, LeaseState& lease) {
  worker.serving = &lease;
  worker.process->setLabel("lease " + std::to_string(uint64_t(lease.id)));
  lease.worker = worker.process.get();
  lease.workerSession = worker.session;
  lease.onLoaded = [this, number = worker.number](const ChunkManifest& manifest) {
    WorkerRecord* record = findWorker(number);
    if (record == nullptr) return;
    record->recentLoads = record->recentLoads.with({geometryKeyOf(manifest), manifest.rawBytes()});
  };
}

void NodeService::Impl::letGoOfWorker(LeaseState& lease, const LeaseEnding& ending) {
  WorkerRecord* record = findWorker(lease.worker);
  if (record == nullptr) return;
  record->serving = nullptr;
  const std::string why = "lease " + std::to_string(uint64_t(lease.id)) + " " + ending.summary();
  if (!WarmWorkerPool::keeps(ending.reason, lease.quiet()) || record->recentLoads.empty() ||
      record->process->exited()) {
    record->process->stop(why);
    return;
  }
  const uint64_t bytes = record->heldBytes();
  std::vector<uint64_t> stop = warm.offer(record->number, record->devices, bytes);
  if (std::find(stop.begin(), stop.end(), record->number) != stop.end()) {
    record->process->stop(why + "; not kept warm (" + std::to_string(bytes >> 20) +
                          " MiB of scenes, beyond the bound of " +
                          std::to_string(warm.limits().maxBytes >> 20) + " MiB)");
    return;
  }
  if (options.memoryBudget != nullptr) {
    MemoryGrant grant = options.memoryBudget->reserve(
        {MemoryHolder::Kind::WarmWorker, record->number}, bytes, /*evictable=*/true);
    if (!grant.granted) {
      warm.remove(record->number);
      record->process->stop(why + "; not kept warm (" + options.memoryBudget->refusalText(grant) +
                            ")");
      stopWarmWorkers(stop, "evicted: the least recently used of the warm workers");
      return;
    }
    stopEvicted(grant.evict, "evicted: its memory was needed by a newer warm worker");
  }
  record->process->setLabel("lease " + std::to_string(uint64_t(lease.id)) + " (warm)");
  PL_LOG_INFO("worker %d kept warm after lease %llu (devices %s, scenes of about %.1f MiB)",
              int(record->process->pid()), (unsigned long long)lease.id,
              joinIndices(record->devices).c_str(), double(bytes) / (1 << 20));
  event("worker " + std::to_string(record->process->pid()) + " kept warm after lease " +
        std::to_string(uint64_t(lease.id)));
  stopWarmWorkers(stop, "evicted: the least recently used of the warm workers (at most " +
                            std::to_string(warm.limits().maxWorkers) + ", " +
                            std::to_string(warm.limits().maxBytes >> 20) + " MiB)");
}

void NodeService::Impl::stopWarmWorkers(const std::vector<uint64_t>& numbers,
                                        const std::string& why) {
  for (uint64_t number : numbers) {
    releaseWarm(number);
    if (WorkerRecord* record = findWorker(number)) record->process->stop(why);
  }
}

proto::Gate::Client NodeService::Impl::newGate(const std::string& peer,
                                               std::shared_ptr<bool> connectionLost,
                                               std::shared_ptr<ConnectionHandshake> handshake) {
  return newNodeGate(identity, peer, std::move(handshake),
                     [this, connectionLost = std::move(connectionLost)](const std::string& who) {
                       return newNode(who, connectionLost);
                     });
}

proto::Node::Client NodeService::Impl::newNode(const std::string& primary,
                                               std::shared_ptr<bool> connectionLost,
                                               bool trusted) {
  return kj::heap<NodeServer>(*this, primary, std::move(connectionLost), trusted);
}

// --- NodeService ------------------------------------------------------------------------------

NodeService::NodeService(UvKjLoop& loop, ClusterKey key,
                         std::vector<std::unique_ptr<Device>> devices, NodeOptions options)
    : impl_(std::make_unique<Impl>(loop, std::move(key), std::move(devices), std::move(options))) {}

NodeService::~NodeService() = default;

kj::Promise<void> NodeService::listen(kj::ConnectionReceiver& receiver) {
  return impl_->admission->listen(receiver);
}

void NodeService::serve(kj::Own<kj::AsyncIoStream> stream, std::string peer) {
  impl_->admission->serve(kj::mv(stream), std::move(peer));
}

void NodeService::memoryEvicted(const std::vector<MemoryHolder>& evicted) {
  impl_->stopEvicted(evicted, "evicted: its memory was needed by a render job");
}

proto::Gate::Client NodeService::newGate(std::string peer) {
  return impl_->newGate(peer, std::make_shared<bool>(false), nullptr);
}

proto::Node::Client NodeService::newTrustedNode(std::string peer) {
  return impl_->newNode(peer, std::make_shared<bool>(false), /*trusted=*/true);
}

size_t NodeService::workerCount() const {
  size_t running = 0;
  for (const auto& w : impl_->workers) running += w.process->exited() ? 0 : 1;
  return running;
}

std::vector<int> NodeService::workerPids() const {
  std::vector<int> pids;
  for (const auto& w : impl_->workers) {
    if (!w.process->exited()) pids.push_back(int(w.process->pid()));
  }
  return pids;
}

std::vector<NodeService::LeaseView> NodeService::leases() const {
  std::vector<LeaseView> out;
  const auto now = std::chrono::steady_clock::now();
  for (const auto& [id, lease] : impl_->leases)
    out.push_back({uint64_t(id), lease->primary, lease->devices,
                   std::chrono::duration<double>(now - lease->granted).count(),
                   lease->samplesRendered});
  return out;
}

std::vector<std::pair<double, std::string>> NodeService::recentEvents() const {
  return {impl_->events.begin(), impl_->events.end()};
}

NodeStats NodeService::stats() const {
  const NodeCounters& c = impl_->resources.counters;
  NodeStats stats;
  stats.scenesDecoded = c.scenesDecoded.load();
  stats.scenesPrepared = c.scenesPrepared.load();
  stats.putsForwarded = c.putsForwarded.load();
  stats.forwardsCheckedByWorker = c.forwardsCheckedByWorker.load();
  stats.camerasDecoded = c.camerasDecoded.load();
  stats.deviceLoads = c.deviceLoads.load();
  stats.cameraSwitches = c.cameraSwitches.load();
  stats.unitsStopped = c.unitsStopped.load();
  stats.workersStarted = impl_->workersStarted;
  stats.warmReuses = impl_->warmReuses;
  stats.warmWorkers = impl_->warm.size();
  stats.warmWorkerBytes = impl_->warm.bytes();
  stats.leasesGranted = impl_->leasesGranted;
  return stats;
}

void NodeService::endAllLeases(const std::string& why) { impl_->endAllLeases(why); }
size_t NodeService::ownerJobStarted(const std::string& token) {
  return impl_->ownerJobStarted(token);
}
void NodeService::ownerJobEnded(const std::string& token) { impl_->ownerJobEnded(token); }
bool NodeService::ownerActive() const { return impl_->table.ownerActive(); }

void NodeService::disconnectAll() { impl_->admission->disconnectAll(); }

const std::string& NodeService::nodeId() const { return impl_->options.nodeId; }
const std::string& NodeService::name() const { return impl_->options.name; }
const std::vector<DeviceInfo>& NodeService::deviceInfos() const { return impl_->infos; }
size_t NodeService::activeLeaseCount() const { return impl_->table.activeLeaseCount(); }
size_t NodeService::freeDeviceCount() const { return impl_->table.freeDeviceCount(); }
size_t NodeService::connectionCount() const { return impl_->admission->connectionCount(); }
size_t NodeService::cachedChunkCount() const { return impl_->resources.chunks.count(); }
uint64_t NodeService::cachedChunkBytes() const { return impl_->resources.chunks.bytes(); }
uint64_t NodeService::pinnedChunkBytes() const { return impl_->resources.chunks.pinnedBytes(); }
size_t NodeService::pendingConnectionCount() const { return impl_->admission->pendingCount(); }

}  // namespace pl
