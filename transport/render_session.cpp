// The Primary's side of the cluster protocol as a long-lived session: see render_session.h.
//
// Structure: one Impl per session, living on the loop thread. The current Generation holds the
// data, the Scheduler and the film; an update replaces it. Each peer has a Peer record
// (statistics, retry state) and, while connected, a Connection that owns the TCP stream, the RPC
// system, the capabilities and every promise on them: `tasks` for what lives as long as the
// connection (disconnect watch, lease renewal, pings), `generationTasks` for the upload and the
// render calls of the current generation (replaced, and so cancelled, by an update). A
// connection that fails is marked dead at once (its devices are declared lost to the scheduler)
// and destroyed a turn later, outside the callback that noticed the failure. Local devices each
// have a LocalDeviceThread fed through a small queue.

#include "transport/render_session.h"

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/debug.h>
#include <kj/timer.h>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "core/cluster/membership.h"
#include "core/cluster/pass_commit.h"
#include "core/cluster/upload_plan.h"
#include "core/util/log.h"
#include "transport/auth.h"
#include "transport/chunk_codec.h"
#include "transport/protocol.capnp.h"
#include "transport/protocol_convert.h"
#include "core/render/render_kernel.h"
#include "transport/node_handshake.h"
#include "transport/secure_channel.h"
#include "transport/tcp.h"

namespace pl {
namespace {

using Clock = std::chrono::steady_clock;

double secondsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

kj::Duration toKj(std::chrono::milliseconds ms) { return ms.count() * kj::MILLISECONDS; }

// The exception's description without Cap'n Proto's "remote exception: " and KJ's
// "message = " decorations (the node's own words are what a user needs).
std::string describe(const kj::Exception& e) {
  std::string text = e.getDescription().cStr();
  for (const char* prefix : {"remote exception: ", "message = "}) {
    if (text.rfind(prefix, 0) == 0) text.erase(0, std::strlen(prefix));
  }
  return text;
}

// The scene of one or more generations (a camera move shares it): its data, or its encoded form
// decoded once on first need (on a device thread, or on the loop thread for data()), and, on
// the loop thread only, its manifest once encoded.
class SceneState {
 public:
  SceneState(SceneSource source, const kernel::Camera& camera)
      : camera(camera), source_(std::move(source)) {}

  // The data; the first call decodes an encoded-only scene (others wait for it). Thread-safe.
  Result<std::shared_ptr<const RenderData>> data() const {
    if (source_.data != nullptr) return source_.data;
    std::call_once(decodeOnce_, [this] {
      Result<RenderData> decoded = decodeRenderData(
          source_.encoded->manifest, source_.encoded->chunks, nullptr, defaultCodecThreads());
      if (decoded.ok()) {
        decoded_ = std::make_shared<const RenderData>(std::move(decoded).value());
      } else {
        decodeError_ = decoded.error().message;
      }
    });
    if (decoded_ == nullptr) return Error{"render data of the encoded scene: " + decodeError_};
    return decoded_;
  }
  const SceneSource& source() const { return source_; }

  const kernel::Camera camera;  // the scene's own camera
  // Loop thread only: the manifest, once encoded (or taken from the encoded source).
  bool encoded = false;
  ChunkManifest manifest;

 private:
  const SceneSource source_;
  mutable std::once_flag decodeOnce_;
  mutable std::shared_ptr<const RenderData> decoded_;
  mutable std::string decodeError_;
};

// One local device, loading and rendering on a thread of its own. reset(), submit() and the
// destructor run on the loop thread; results come back through UvKjLoop::post(), tagged with
// the generation they belong to.
class LocalDeviceThread {
 public:
  using LoadedFn = std::function<void(size_t index, uint64_t generation, Status status)>;
  using ResultFn = std::function<void(size_t index, uint64_t generation, WorkUnit unit,
                                      Result<TileResult> result)>;

  LocalDeviceThread(UvKjLoop& loop, size_t index, Device* device, std::shared_ptr<bool> alive,
                    LoadedFn onLoaded, ResultFn onResult)
      : loop_(loop), index_(index), device_(device), alive_(std::move(alive)),
        onLoaded_(std::move(onLoaded)), onResult_(std::move(onResult)),
        thread_([this] { run(); }) {}

  ~LocalDeviceThread() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
      queue_.clear();
    }
    latest_.store(kNoGeneration);  // a unit being rendered stops (RenderStop)
    wake_.notify_all();
    thread_.join();
  }

  // Drops every queued job and loads `scene` with `camera` for `generation` next. With
  // `cameraOnly` the device may have the scene loaded already: then it only takes the camera.
  // A unit of an earlier generation being rendered stops (RenderStop).
  void reset(uint64_t generation, std::shared_ptr<const SceneState> scene,
             const kernel::Camera& camera, bool cameraOnly) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.clear();
      queue_.push_back(Job{generation, std::move(scene), WorkUnit{}, camera, cameraOnly});
      latest_.store(generation);  // before any unit of it can be queued
    }
    wake_.notify_one();
  }

  void submit(uint64_t generation, const WorkUnit& unit) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(Job{generation, nullptr, unit});
    }
    wake_.notify_one();
  }

 private:
  struct Job {
    uint64_t generation;
    std::shared_ptr<const SceneState> load;  // non-null: a load job
    WorkUnit unit;
    kernel::Camera camera{};  // a load job's camera
    bool cameraOnly = false;
  };

  // A load job, on this thread: the camera alone when the device can, else the data (decoded
  // here first when the scene came encoded; a copy with the camera in place, when it differs
  // from the data's own).
  Status load(Job& job) {
    // Only when the device holds this very scene: a load of another may have been dropped
    // from the queue by a later reset().
    if (job.cameraOnly && job.load == loaded_ && device_->setCamera(job.camera).ok())
      return Status();
    Result<std::shared_ptr<const RenderData>> data = job.load->data();
    if (!data.ok()) return data.error();
    Status status;
    if (std::memcmp(&job.load->camera, &job.camera, sizeof job.camera) == 0) {
      status = device_->load(*data);
    } else {
      auto copy = std::make_shared<RenderData>(**data);
      copy->camera[0] = job.camera;
      status = device_->load(std::move(copy));
    }
    loaded_ = status.ok() ? job.load : nullptr;
    return status;
  }

  void run() {
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (stopping_) return;
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      // `alive` is read and reset on the loop thread only, so the checks need no lock.
      if (job.load) {
        auto status = std::make_shared<Status>(load(job));
        loop_.post([alive = alive_, fn = &onLoaded_, index = index_, g = job.generation,
                    status]() {
          if (*alive) (*fn)(index, g, std::move(*status));
        });
        continue;
      }
      // A stopped unit's error reaches onResult_ tagged with its old generation: dropped there.
      auto result = std::make_shared<Result<TileResult>>(
          device_->render(job.unit, RenderStop(latest_, job.generation)));
      loop_.post([alive = alive_, fn = &onResult_, index = index_, g = job.generation,
                  unit = job.unit, result]() {
        if (*alive) (*fn)(index, g, unit, std::move(*result));
      });
    }
  }

  UvKjLoop& loop_;
  size_t index_;
  Device* device_;
  std::shared_ptr<bool> alive_;
  LoadedFn onLoaded_;
  ResultFn onResult_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job> queue_;
  bool stopping_ = false;
  static constexpr uint64_t kNoGeneration = ~uint64_t(0);
  // The generation of the last reset(): units of any other stop.
  std::atomic<uint64_t> latest_{0};
  // The device thread only: the scene the device holds (its camera may differ).
  std::shared_ptr<const SceneState> loaded_;
  std::thread thread_;  // last: started once everything above exists
};

// One state of the scene and everything rendered of it.
struct Generation {
  Generation(uint64_t id, std::shared_ptr<SceneState> scene, const kernel::Camera& camera,
             const FrameSpec& frame, const SchedulerOptions& options)
      : id(id), scene(std::move(scene)), camera(camera),
        scheduler(frame, options),
        film(frame.width, frame.height, frame.spp, kernel::filmChannels(camera.passes)),
        start(Clock::now()) {}

  uint64_t id;
  // The scene with `camera` in place of its own (a camera move shares the scene of the
  // generation before it instead of copying it).
  std::shared_ptr<SceneState> scene;
  kernel::Camera camera;
  Scheduler scheduler;
  ProgressiveFilm film;
  Clock::time_point start;
  bool stopped = false;  // the time limit ended it (RenderSessionEvents::onStopped was told)
  // The chunked data, made when the first peer needs it.
  bool encoded = false;
  ChunkManifest manifest;
  std::vector<Hash128> chunkHashes;
  // Pixel samples accepted per source ("local" or a peer's address).
  std::map<std::string, uint64_t> samplesBySource;
};

struct Peer;

// One connection to one node, and everything that lives on it.
struct Connection final : public kj::TaskSet::ErrorHandler {
  Connection(RenderSession::Impl& owner, Peer& peer, uint64_t serial)
      : owner(owner), peer(peer), serial(serial), tasks(*this) {}

  void taskFailed(kj::Exception&& exception) override;

  RenderSession::Impl& owner;
  Peer& peer;
  uint64_t serial;
  bool dead = false;
  bool ready = false;       // the current generation is loaded, devices registered
  bool everReady = false;   // some generation was loaded on this connection
  bool hasSession = false;  // pings and silence detection active
  bool preempting = false;  // its lease request may revoke another Primary's (fair share)
  // Set before throwing a failure that is not a plain loss: a refusal by the handshake
  // (AuthFailed, Incompatible) or the lease (Busy).
  std::optional<ConnectionFailure> refusal;
  // Why the node ended the lease (Lease.ended), when it said so before the connection failed.
  std::optional<proto::LeaseEnd> leaseEnd;

  // Destroyed in reverse order: capabilities before the RPC system before the stream.
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyClient> rpc;
  proto::Node::Client node = nullptr;
  proto::Lease::Client lease = nullptr;
  proto::RenderSession::Client session = nullptr;
  Hash128 scene;
  uint32_t ttlMs = 0;
  std::vector<uint32_t> nodeDevices;  // lease's device indices
  std::vector<bool> nodeDeviceIsGpu;  // by node device index (from Node.info)
  std::vector<DeviceId> deviceIds;    // scheduler ids of the current generation
  kj::TaskSet tasks;                  // the connection's own tasks
  // The current generation's upload and render calls; replaced (so cancelled) by an update.
  // Replaced sets are destroyed (their calls cancelled) a turn later, because an update may come
  // from inside one of their callbacks.
  std::vector<kj::Own<kj::TaskSet>> retiredTasks;
  kj::Own<kj::TaskSet> generationTasks = kj::heap<kj::TaskSet>(*this);
};

struct Peer {
  size_t index = 0;
  NodeRenderStats stats;
  kj::Own<Connection> connection;  // null while not connected
  PeerId member{};                 // in the session's Membership (liveness, retries)
  bool inProcess = false;          // options.inProcessNode: no connection
  bool everReady = false;          // joined once (onNode)
};

struct DeviceRef {
  bool local = false;
  size_t index = 0;             // local device or peer
  uint32_t nodeDevice = 0;      // remote: device index on the node
  Connection* connection = nullptr;
};

struct LocalDeviceState {
  LocalDeviceRenderStats stats;
  bool failed = false;
  uint64_t loadedGeneration = 0;  // 0: loading
  DeviceId id{0};                 // in the current generation's scheduler (when loaded)
};

}  // namespace

class RenderSession::Impl final : public kj::TaskSet::ErrorHandler {
 public:
  Impl(UvKjLoop& loop, const ClusterRenderOptions& options, RenderSessionEvents events)
      : loop_(loop), options_(options), events_(std::move(events)),
        members_(MembershipOptions{options.silenceTimeout, options.reconnectInterval,
                                   2 * options.pingInterval}),
        tasks_(*this) {}

  ~Impl() {
    *alive_ = false;
    for (Peer& peer : peers_) {
      if (peer.connection) {
        peer.connection->dead = true;
        graveyard_.push_back(kj::mv(peer.connection));
      }
    }
    graveyard_.clear();
    devices_.clear();
    localThreads_.clear();  // joins the device threads
  }

  Status start(const SceneSource& source, uint32_t spp);
  uint64_t update(std::shared_ptr<SceneState> scene, const kernel::Camera& camera, uint32_t spp);

  // Called by Connection::taskFailed and by the result handlers.
  // `decided`: Membership's decision when it made one already (silence); else asked here.
  void connectionFailed(Connection& c, const kj::Exception& e,
                        std::optional<PeerFailure> decided = std::nullopt);
  void taskFailed(kj::Exception&& exception) override {
    fatal(std::string("internal error: ") + describe(exception));
  }

  const Generation& generation() const { return *gen_; }
  // The frame of a generation starting now: its film's channels, and the deadline of
  // options.timeLimit.
  Result<FrameSpec> frameOf(const kernel::Camera& camera, uint32_t spp) const;
  ClusterRenderStats stats(bool finishing) const;
  std::vector<std::pair<std::string, uint64_t>> shares() const;

 private:
  Clock::time_point now() const { return Clock::now(); }
  // The time limit: arms the timer at the current generation's deadline, and stops the
  // generation when its scheduler says it is over (the deadline came with a pass complete).
  void armDeadline();
  void checkDeadline();
  std::shared_ptr<Generation> makeGeneration(std::shared_ptr<SceneState> scene,
                                             const kernel::Camera& camera,
                                             const FrameSpec& frame);
  void encode(Generation& g);
  void prepare(Connection& c, const Generation& g);

  // The first unit of a device: GPUs start at gpuInitialUnitWork (0: the scheduler's default).
  uint64_t initialUnitWork(bool gpu) const { return gpu ? options_.gpuInitialUnitWork : 0; }
  void startLocal();
  void onLocalLoaded(size_t index, uint64_t generation, Status status);
  Status addPeer(const std::string& address);
 public:
  // A discovery event: a new node joins; a known peer that was refused or waits is tried again
  // at once (it is usable anew).
  bool joinPeer(const std::string& address);
 private:
  void startPeer(Peer& peer);
  kj::Promise<void> handshake(Connection& c);
  kj::Promise<void> leaseOn(Connection& c);
  void watchLeaseEnd(Connection& c);
  void startUpload(Connection& c);
  kj::Promise<void> upload(Connection& c, std::shared_ptr<Generation> g);
  kj::Promise<void> putChunks(Connection& c, std::shared_ptr<Generation> g,
                              std::shared_ptr<std::vector<Hash128>> hashes, size_t next);
  void becomeReady(Connection& c);
  kj::Promise<void> renewLoop(Connection& c);
  // Fair share: at most one lease request that may revoke another Primary's lease is in
  // flight; when a node is lost, every other lease is renewed at once with the new count.
  bool preemptInFlight_ = false;
  void endPreempting(Connection& c) {
    if (c.preempting) preemptInFlight_ = false;
    c.preempting = false;
  }
  void renewAllNow();
  // Devices leased on nodes now (sessions granted and not lost), for fair share.
  uint32_t leasedDeviceCount() const;
  kj::Promise<void> pingLoop(Connection& c);
  // Any reply on the connection's session: the node is alive.
  void replied(Connection& c) { members_.replyReceived(c.peer.member, now()); }
  kj::Promise<void> tickLoop();
  void tick();

  void pump();
  void dispatchRemote(DeviceId id, DeviceRef& ref, const WorkUnit& unit);
  void onRemoteResult(Connection& c, uint64_t generation, DeviceId id, const WorkUnit& unit,
                      capnp::Response<proto::RenderSession::RenderResults>&& response);
  void onLocalResult(size_t index, uint64_t generation, WorkUnit unit,
                     Result<TileResult> result);
  void accept(const std::string& source, const WorkUnit& unit, const TileResult& result);
  void fatal(std::string message);
  bool anyDeviceUsable() const;
  void buryLater(kj::Own<Connection> c);

  UvKjLoop& loop_;
  const ClusterRenderOptions options_;
  RenderSessionEvents events_;
  // Shared with the continuations of its uploads, which may outlive an update by a turn.
  std::shared_ptr<Generation> gen_;
  kj::Promise<void> deadlineTimer_ = nullptr;  // the current generation's time limit
  uint64_t nextGenerationId_ = 1;
  Clock::time_point start_;  // options.start: origin of the seconds* figures
  Clock::time_point callStart_;
  Clock::time_point lastUsable_;
  double encodeSeconds_ = 0;
  bool started_ = false;
  bool closed_ = false;  // fatal: nothing more happens

  ChunkStore store_;  // encoded chunks of every generation (only what changed is added)

  // TLS for the peers' connections (options.tls), built at the first handshake.
  std::unique_ptr<SecureChannel> secure_;
  std::deque<Peer> peers_;  // a deque: Connection holds Peer&, and peers are added mid-session
  // Liveness policy (core/cluster/membership.h): when a node is lost, when it is tried again.
  Membership members_;
  std::vector<LocalDeviceState> local_;
  std::unordered_map<uint64_t, DeviceRef> devices_;  // current generation's scheduler ids
  uint64_t nextDeviceId_ = 1;
  uint64_t nextConnectionSerial_ = 1;
  std::vector<kj::Own<Connection>> graveyard_;

  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::vector<std::unique_ptr<LocalDeviceThread>> localThreads_;
  kj::TaskSet tasks_;  // after everything its tasks use
};

void Connection::taskFailed(kj::Exception&& exception) { owner.connectionFailed(*this, exception); }

// --- generations ------------------------------------------------------------------------------

Result<FrameSpec> RenderSession::Impl::frameOf(const kernel::Camera& camera,
                                               uint32_t spp) const {
  FrameSpec frame{camera.width, camera.height, spp, options_.tileSize};
  // Units hold maxUnitPixels at 3 sums a pixel: with passes (10) as many bytes, so that a result
  // stays within the message limits.
  frame.channels = kernel::filmChannels(camera.passes);
  if (options_.timeLimit.count() > 0) frame.deadline = now() + options_.timeLimit;
  frame.region = options_.region;
  if (options_.noiseThreshold > 0) {
    frame.adaptive = true;
    frame.tileSize = std::min(frame.tileSize, kAdaptiveTileSize);
  }
  if (Status s = Scheduler::validateFrame(frame); !s.ok()) return s.error();
  return frame;
}

void RenderSession::Impl::armDeadline() {
  const std::optional<SchedulerTime>& deadline = gen_->scheduler.frame().deadline;
  if (!deadline) {
    deadlineTimer_ = nullptr;
    return;
  }
  const auto wait = std::chrono::duration_cast<std::chrono::microseconds>(*deadline - now());
  deadlineTimer_ = loop_.timer()
                       .afterDelay(std::max<int64_t>(0, wait.count()) * kj::MICROSECONDS)
                       // A turn later: an owner that calls update() from onStopped replaces this
                       // very promise.
                       .then([this]() { tasks_.add(kj::evalLater([this]() { checkDeadline(); })); })
                       .eagerlyEvaluate(nullptr);
}

void RenderSession::Impl::checkDeadline() {
  Generation& g = *gen_;
  if (closed_ || g.stopped || g.scheduler.done() || !g.scheduler.finished(now())) return;
  // Every pass the scheduler counts complete is in the film (accept() commits them first).
  g.stopped = true;
  const std::shared_ptr<Generation> keep = gen_;
  if (events_.onStopped)
    events_.onStopped(g.id, g.film.committedSamples(), secondsBetween(g.start, now()));
}

std::shared_ptr<Generation> RenderSession::Impl::makeGeneration(
    std::shared_ptr<SceneState> scene, const kernel::Camera& camera,
    const FrameSpec& frame) {
  return std::make_shared<Generation>(nextGenerationId_++, std::move(scene), camera, frame,
                                      options_.scheduler);
}

// Cuts, hashes and compresses the generation's data; only chunks this session has not encoded
// before are compressed, and a scene that came encoded is not encoded at all (its chunks join
// the store as they are). A generation that shares the previous one's scene reuses its manifest
// and encodes only its camera (a camera move: one chunk of about 100 bytes, no hashing).
void RenderSession::Impl::encode(Generation& g) {
  if (g.encoded) return;
  const Clock::time_point encodeStart = now();
  SceneState& scene = *g.scene;
  if (!scene.encoded) {
    if (const std::shared_ptr<const EncodedScene>& encoded = scene.source().encoded) {
      store_.addViewsOf(encoded->chunks, encoded);
      scene.manifest = encoded->manifest;
    } else {
      scene.manifest = encodeRenderData(*scene.source().data, store_);
    }
    scene.encoded = true;
  }
  g.manifest = scene.manifest;
  if (std::memcmp(&scene.camera, &g.camera, sizeof g.camera) != 0) {
    RenderData cameraOnly;
    cameraOnly.camera = {g.camera};
    const uint32_t index = static_cast<uint32_t>(RenderDataArray::camera);
    g.manifest.arrays[index] = encodeRenderData(cameraOnly, store_).arrays[index];
  }
  g.chunkHashes = g.manifest.uploadOrder();
  g.encoded = true;
  encodeSeconds_ += secondsBetween(encodeStart, now());
}

Status RenderSession::Impl::start(const SceneSource& source, uint32_t spp) {
  KJ_REQUIRE(!started_, "RenderSession::start() called twice");
  callStart_ = now();
  start_ = options_.start == SchedulerTime{} ? callStart_ : options_.start;
  lastUsable_ = now();
  const bool anyPeers =
      !options_.peers.empty() || options_.peersMayAppear;
  if (options_.localDevices.empty() && !anyPeers && !options_.inProcessNode)
    return Error{"render: no device to render on (no local device and no --peer)"};
  if (anyPeers && options_.key.bytes.empty())
    return Error{"render: a cluster key is needed to use peers"};
  for (const std::string& address : options_.peers) {
    if (Result<TcpAddress> a = parseTcpAddress(address); !a.ok())
      return Error{"--peer " + address + ": " + a.error().message};
  }
  Result<kernel::Camera> camera = source.camera();
  if (!camera.ok()) return camera.error();
  Result<FrameSpec> frame = frameOf(*camera, spp);
  if (!frame.ok()) return frame.error();
  gen_ = makeGeneration(std::make_shared<SceneState>(source, *camera), *camera, *frame);
  started_ = true;
  armDeadline();
  if (options_.inProcessNode) {
    encode(*gen_);
    Peer& peer = peers_.emplace_back();
    peer.index = peers_.size() - 1;
    peer.inProcess = true;
    peer.member = members_.addPeer(now());
    peer.stats.address = "this machine";
    peer.stats.state = "connecting";
    peer.stats.chunksTotal = gen_->chunkHashes.size();
  }
  for (const std::string& address : options_.peers) (void)addPeer(address);
  startLocal();
  for (Peer& peer : peers_) startPeer(peer);
  tasks_.add(tickLoop());
  return Status();
}

uint64_t RenderSession::Impl::update(std::shared_ptr<SceneState> scene,
                                     const kernel::Camera& camera, uint32_t spp) {
  KJ_REQUIRE(started_, "RenderSession::update() before start()");
  Result<FrameSpec> frame = frameOf(camera, spp);
  KJ_REQUIRE(frame.ok(), "RenderSession::update(): a bad frame");
  const bool sameData = scene == gen_->scene;
  // The old generation's devices leave its scheduler; nothing of it is accepted any more.
  devices_.clear();
  gen_ = makeGeneration(std::move(scene), camera, *frame);
  armDeadline();
  if (!peers_.empty()) encode(*gen_);
  for (size_t i = 0; i < local_.size(); ++i) {
    if (local_[i].failed) continue;
    local_[i].loadedGeneration = 0;
    localThreads_[i]->reset(gen_->id, gen_->scene, gen_->camera, sameData);
  }
  for (Peer& peer : peers_) {
    Connection* c = peer.connection.get();
    if (c == nullptr || c->dead) continue;
    c->deviceIds.clear();
    c->ready = false;
    // Cancel the old generation's calls (the node drops the units it has not started), keeping
    // the task set itself alive until the next update: we may be inside one of its callbacks.
    c->retiredTasks.push_back(kj::mv(c->generationTasks));
    c->generationTasks = kj::heap<kj::TaskSet>(*c);
    // Cancelled in a later turn (we may be inside one of their callbacks), unless the
    // connection has gone with them already.
    tasks_.add(kj::evalLater([serial = c->serial, &peer]() {
      Connection* current = peer.connection.get();
      if (current != nullptr && current->serial == serial) current->retiredTasks.clear();
    }));
    if (c->hasSession) startUpload(*c);
  }
  return gen_->id;
}

// --- start-up ---------------------------------------------------------------------------------

void RenderSession::Impl::startLocal() {
  for (size_t i = 0; i < options_.localDevices.size(); ++i) {
    Device* device = options_.localDevices[i];
    LocalDeviceState& s = local_.emplace_back();
    s.stats.info = device->info();
    localThreads_.push_back(std::make_unique<LocalDeviceThread>(
        loop_, i, device, alive_,
        [this](size_t index, uint64_t generation, Status status) {
          onLocalLoaded(index, generation, std::move(status));
        },
        [this](size_t index, uint64_t generation, WorkUnit unit, Result<TileResult> result) {
          onLocalResult(index, generation, unit, std::move(result));
        }));
    localThreads_.back()->reset(gen_->id, gen_->scene, gen_->camera, false);
  }
}

void RenderSession::Impl::onLocalLoaded(size_t index, uint64_t generation, Status status) {
  if (closed_ || generation != gen_->id) return;
  LocalDeviceState& s = local_[index];
  if (s.failed) return;
  if (!status.ok()) {
    s.stats.error = status.error().message;
    PL_LOG_WARN("local device %zu (%s): %s", index, s.stats.info.name.c_str(),
                s.stats.error.c_str());
    s.failed = true;
    return;
  }
  s.loadedGeneration = generation;
  s.id = DeviceId{nextDeviceId_++};
  devices_[uint64_t(s.id)] = DeviceRef{true, index, 0, nullptr};
  gen_->scheduler.addDevice(s.id, now(), 0, initialUnitWork(s.stats.info.kind == "cuda"));
  pump();
}

// Appends a peer (not started). Fails on an address that does not parse.
Status RenderSession::Impl::addPeer(const std::string& address) {
  if (Result<TcpAddress> a = parseTcpAddress(address); !a.ok())
    return Error{"--peer " + address + ": " + a.error().message};
  encode(*gen_);  // when the first peer comes
  Peer& peer = peers_.emplace_back();
  peer.index = peers_.size() - 1;
  peer.member = members_.addPeer(now());
  peer.stats.address = address;
  peer.stats.state = "connecting";
  peer.stats.chunksTotal = gen_->chunkHashes.size();
  return Status();
}

// A node that appeared (mDNS, or a caller): connected and used from now on.
bool RenderSession::Impl::joinPeer(const std::string& address) {
  if (closed_ || !started_ || options_.key.bytes.empty()) return false;
  auto spelled = [](const std::string& a) {
    return a.rfind("localhost:", 0) == 0 ? "127.0.0.1:" + a.substr(10) : a;
  };
  for (Peer& peer : peers_) {
    if (peer.inProcess || spelled(peer.stats.address) != spelled(address)) continue;
    const PeerState before = members_.state(peer.member);
    if (!peer.connection && members_.rediscovered(peer.member, now())) {
      PL_LOG_INFO("node %s is usable again: trying it", address.c_str());
      // A refusal is over; a loss keeps its state and reason until the node is back.
      if (before == PeerState::GaveUp) {
        peer.stats.state = "connecting";
        peer.stats.error.clear();
      }
      startPeer(peer);
      if (events_.onNodesChanged) events_.onNodesChanged();
    }
    return true;
  }
  if (Status s = addPeer(address); !s.ok()) {
    PL_LOG_WARN("not using node %s: %s", address.c_str(), s.error().message.c_str());
    return false;
  }
  PL_LOG_INFO("node %s appeared: using it", address.c_str());
  startPeer(peers_.back());
  if (events_.onNodesChanged) events_.onNodesChanged();
  return true;
}

void RenderSession::Impl::startPeer(Peer& peer) {
  KJ_REQUIRE(!peer.connection);
  peer.connection = kj::heap<Connection>(*this, peer, nextConnectionSerial_++);
  Connection& c = *peer.connection;
  if (peer.inProcess) {
    c.node = options_.inProcessNode();
    c.tasks.add(loop_.timer()
                    .timeoutAfter(toKj(options_.handshakeTimeout), leaseOn(c))
                    .then([this, &c]() { startUpload(c); }));
    return;
  }
  c.tasks.add(loop_.timer()
                  .timeoutAfter(toKj(options_.handshakeTimeout), handshake(c))
                  .then([this, &c]() { startUpload(c); }));
}
kj::Promise<void> RenderSession::Impl::handshake(Connection& c) {
  if (options_.tls && secure_ == nullptr) {
    Result<std::unique_ptr<SecureChannel>> made = SecureChannel::create(options_.key);
    if (!made.ok()) return KJ_EXCEPTION(FAILED, made.error().message.c_str());
    secure_ = std::move(*made);
  }
  return handshakeWithNode(loop_.lowLevelIo(), options_.tls ? secure_.get() : nullptr,
                           options_.key, c.peer.stats.address, options_.primaryName)
      .then([this, &c](NodeHandshake&& h) -> kj::Promise<void> {
        NodeRenderStats& s = c.peer.stats;
        s.name = h.name;
        s.nodeId = h.nodeId;
        c.stream = kj::mv(h.stream);
        c.rpc = kj::mv(h.rpc);
        switch (h.refusal) {
          case HandshakeRefusal::WrongKey:
            c.refusal = ConnectionFailure::AuthFailed;
            return KJ_EXCEPTION(FAILED, kj::str(s.address.c_str(), ": authentication failed (",
                                                h.reason.c_str(), ")"));
          case HandshakeRefusal::Incompatible:
            c.refusal = ConnectionFailure::Incompatible;
            return KJ_EXCEPTION(FAILED, kj::str("node ", s.address.c_str(), " speaks protocol ",
                                                h.protocolVersion, ", this Primary speaks ",
                                                kProtocolVersion));
          case HandshakeRefusal::None:
            break;
        }
        c.tasks.add(c.rpc->onDisconnect().then([]() -> kj::Promise<void> {
          return KJ_EXCEPTION(DISCONNECTED, "connection closed");
        }));
        c.node = kj::mv(h.node);
        return leaseOn(c);
      });
}


// Node.info and Node.lease on an authenticated (or in-process) node; then the lease is renewed
// and the session pinged for as long as the connection lives.
kj::Promise<void> RenderSession::Impl::leaseOn(Connection& c) {
  return c.node.infoRequest().send().then(
      [this, &c](capnp::Response<proto::Node::InfoResults>&& info) {
        c.peer.stats.name = info.getInfo().getName();
        // Another build computes other bits: its pixels must not go into this image. (The
        // in-process node is this build.)
        if (std::string why = renderKernelMismatch(info.getInfo().getRenderKernel());
            !why.empty()) {
          c.refusal = ConnectionFailure::Incompatible;
          return kj::Promise<capnp::Response<proto::Node::LeaseResults>>(KJ_EXCEPTION(
              FAILED, kj::str("node ", c.peer.stats.address.c_str(), " ", why.c_str())));
        }
        c.nodeDeviceIsGpu.clear();
        for (auto d : info.getInfo().getDevices())
          c.nodeDeviceIsGpu.push_back(d.getKind() == proto::DeviceKind::CUDA);
        auto request = c.node.leaseRequest();
        auto lr = request.initRequest();
        lr.setPrimaryName(options_.primaryName);
        lr.setTtlMs(options_.leaseTtlMs);
        // The owner token goes only to this machine's own node (in process): a remote node
        // must never see it (it could replay it to this machine's daemon).
        if (!options_.ownerToken.empty() && c.peer.inProcess)
          lr.setOwnerToken(options_.ownerToken);
        lr.setHeldDevices(leasedDeviceCount());  // fair share
        lr.setReportsHeld(true);
        if (!preemptInFlight_) {  // one preempting request at a time
          preemptInFlight_ = true;
          c.preempting = true;
          lr.setPreempt(true);
        }
        return request.send().then(
            [this, &c](capnp::Response<proto::Node::LeaseResults>&& r) {
              endPreempting(c);
              return kj::mv(r);
            },
            [this, &c](kj::Exception&& e)
                -> capnp::Response<proto::Node::LeaseResults> {
              endPreempting(c);
              // "busy": another Primary holds the devices; retried like a loss.
              if (e.getType() == kj::Exception::Type::FAILED) c.refusal = ConnectionFailure::Busy;
              kj::throwFatalException(kj::mv(e));
            });
      }).then([this, &c](capnp::Response<proto::Node::LeaseResults>&& lease) {
        c.lease = lease.getLease();
        c.session = lease.getSession();
        c.ttlMs = lease.getTtlMs();
        for (uint32_t d : lease.getDevices()) c.nodeDevices.push_back(d);
        if (c.nodeDevices.empty() || c.nodeDevices.size() > kMaxDevicesPerNode) {
          c.refusal = ConnectionFailure::Busy;
          return kj::Promise<void>(KJ_EXCEPTION(
              FAILED, kj::str(c.peer.stats.address.c_str(),
                              ": the lease granted no device")));
        }
        c.peer.stats.devices = uint32_t(c.nodeDevices.size());
        c.hasSession = true;
        members_.leaseGranted(c.peer.member, now());
        watchLeaseEnd(c);
        c.tasks.add(renewLoop(c));
        c.tasks.add(pingLoop(c));
        return kj::Promise<void>(kj::READY_NOW);
      });
}

// Lease.ended(): the node says why it ended the lease, as a type, before it fails the session's
// calls. A node without the method (protocol 2), or a connection that breaks first, only leaves
// the failure to the connection's other tasks.
void RenderSession::Impl::watchLeaseEnd(Connection& c) {
  c.tasks.add(c.lease.endedRequest().send().then(
      [this, &c](capnp::Response<proto::Lease::EndedResults>&& ended) {
        c.leaseEnd = ended.getReason();
        connectionFailed(c, KJ_EXCEPTION(DISCONNECTED,
                                         kj::str("lease ended: ", ended.getDetail())));
      },
      [](kj::Exception&&) {}));
}

// Uploads the current generation to a node that holds a lease, then registers its devices.
void RenderSession::Impl::startUpload(Connection& c) {
  c.generationTasks->add(upload(c, gen_).then([this, &c, g = gen_]() {
    // Superseded while loading, or the connection failed (it is destroyed a turn later).
    if (g != gen_ || c.dead) return;
    becomeReady(c);
  }));
}

kj::Promise<void> RenderSession::Impl::upload(Connection& c, std::shared_ptr<Generation> g) {
  encode(*g);
  auto request = c.session.missingRequest();
  request.setSceneBytes(g->manifest.rawBytes());
  toProto(g->chunkHashes, request.initHashes(uint32_t(g->chunkHashes.size())));
  return request.send()
      .then([this, &c, g](capnp::Response<proto::RenderSession::MissingResults>&& response) {
        replied(c);
        Result<std::vector<Hash128>> missing = fromProto(response.getMissing());
        if (!missing.ok())
          return kj::Promise<void>(KJ_EXCEPTION(FAILED, missing.error().message.c_str()));
        // Each chunk at most once, and only chunks of this scene (a node cannot make the
        // Primary upload one chunk many times).
        Result<std::vector<Hash128>> plan = chunksToUpload(g->chunkHashes, *missing);
        if (!plan.ok())
          return kj::Promise<void>(KJ_EXCEPTION(FAILED, plan.error().message.c_str()));
        auto list = std::make_shared<std::vector<Hash128>>(std::move(plan).value());
        if (!list->empty()) prepare(c, *g);
        const Clock::time_point uploadStart = now();
        return putChunks(c, g, list, 0)
            .then([&c, list, g]() {
              // A put's stream promise resolves when flow control allows the next one, not
              // when the node has the chunk; and a put the node refused is reported only on a
              // later send. Asking `missing` again (the node answers it after every earlier
              // put) closes both gaps: the upload time includes the tail, and a refused chunk
              // is named here rather than as "missing" at load.
              auto again = c.session.missingRequest();
              again.setSceneBytes(g->manifest.rawBytes());
              toProto(*list, again.initHashes(uint32_t(list->size())));
              return again.send();
            })
            .then([this, &c, uploadStart](
                      capnp::Response<proto::RenderSession::MissingResults>&& response) {
              replied(c);
              c.peer.stats.uploadSeconds += secondsBetween(uploadStart, now());
              Result<std::vector<Hash128>> stillMissing = fromProto(response.getMissing());
              if (!stillMissing.ok())
                return kj::Promise<void>(
                    KJ_EXCEPTION(FAILED, stillMissing.error().message.c_str()));
              if (!stillMissing->empty())
                return kj::Promise<void>(KJ_EXCEPTION(
                    FAILED, kj::str("the node did not accept chunk ",
                                    (*stillMissing)[0].hex().c_str(), " (and ",
                                    stillMissing->size() - 1, " more)")));
              return kj::Promise<void>(kj::READY_NOW);
            });
      })
      .then([this, &c, g]() {
        auto request = c.session.loadRequest();
        toProto(g->manifest, request.initManifest());
        c.peer.stats.manifestBytes += request.totalSize().wordCount * 8;
        return request.send();
      })
      .then([this, &c](capnp::Response<proto::RenderSession::LoadResults>&& loaded) {
        replied(c);
        c.scene = fromProto(loaded.getScene());
      });
}

// Tells the node the manifest before the puts, so that it decodes each chunk as it arrives.
// Optional: a node that fails it (an older one answers UNIMPLEMENTED) still loads what the puts
// and the load bring; a refusal that ends the lease (its memory budget) comes as the lease's
// end and fails the load.
void RenderSession::Impl::prepare(Connection& c, const Generation& g) {
  auto request = c.session.prepareRequest();
  toProto(g.manifest, request.initManifest());
  c.peer.stats.manifestBytes += request.totalSize().wordCount * 8;
  c.generationTasks->add(request.send().ignoreResult().catch_([](kj::Exception&&) {}));
}

// Streams hashes[next..] with `put`; each send() resolves when flow control lets the next
// one go. The chunk bytes are referenced, not copied (the store keeps every chunk it encoded
// for the session's whole life).
kj::Promise<void> RenderSession::Impl::putChunks(Connection& c, std::shared_ptr<Generation> g,
                                                 std::shared_ptr<std::vector<Hash128>> hashes,
                                                 size_t next) {
  if (next == hashes->size()) return kj::READY_NOW;
  const Hash128& hash = (*hashes)[next];
  const std::optional<std::span<const uint8_t>> encoded = store_.find(hash);
  KJ_ASSERT(encoded.has_value());
  auto request = c.session.putRequest(capnp::MessageSize{16, 1});
  auto chunk = request.initChunk();
  toProto(hash, chunk.initHash());
  // By reference when Cap'n Proto may read it in whole words, else copied.
  if (referenceableBytes(encoded->data(), encoded->size())) {
    chunk.adoptData(capnp::Orphanage::getForMessageContaining(chunk).referenceExternalData(
        kj::arrayPtr(encoded->data(), encoded->size())));
  } else {
    chunk.setData(kj::arrayPtr(encoded->data(), encoded->size()));
  }
  NodeRenderStats& s = c.peer.stats;
  s.chunksSent += 1;
  s.renderDataBytesSent += encoded->size();
  // The raw size is in the manifest; find it once per chunk (few chunks per scene).
  for (const ArrayManifest& array : g->manifest.arrays) {
    bool found = false;
    for (const ChunkRef& ref : array.chunks) {
      if (ref.hash == hash) {
        s.renderDataBytesRaw += ref.rawBytes;
        found = true;
        break;
      }
    }
    if (found) break;
  }
  return request.send().then(
      [this, &c, g, hashes, next]() { return putChunks(c, g, hashes, next + 1); });
}

void RenderSession::Impl::becomeReady(Connection& c) {
  PL_CHECK(!c.dead);
  NodeRenderStats& s = c.peer.stats;
  const bool firstTime = !c.everReady;  // on this connection
  members_.dataLoaded(c.peer.member, now());
  c.ready = true;
  c.everReady = true;
  if (firstTime) s.connections += 1;
  s.state = "rendering";
  s.error.clear();
  s.chunksTotal = gen_->chunkHashes.size();
  if (s.secondsToDataLoaded < 0) s.secondsToDataLoaded = secondsBetween(start_, now());
  for (uint32_t nodeDevice : c.nodeDevices) {
    DeviceId id{nextDeviceId_++};
    c.deviceIds.push_back(id);
    devices_[uint64_t(id)] = DeviceRef{false, c.peer.index, nodeDevice, &c};
    const bool gpu = nodeDevice < c.nodeDeviceIsGpu.size() && c.nodeDeviceIsGpu[nodeDevice];
    gen_->scheduler.addDevice(id, now(), 0, initialUnitWork(gpu));
  }
  PL_LOG_DEBUG("%s (%s): %zu device(s), generation %llu loaded after %.2f s", s.address.c_str(),
               s.name.c_str(), c.nodeDevices.size(), (unsigned long long)gen_->id,
               secondsBetween(gen_->start, now()));
  if (firstTime && events_.onNode) events_.onNode(s, true);
  if (events_.onNodesChanged) events_.onNodesChanged();
  pump();
}

kj::Promise<void> RenderSession::Impl::renewLoop(Connection& c) {
  uint32_t ttl = c.ttlMs ? c.ttlMs : options_.leaseTtlMs;
  return loop_.timer().afterDelay(std::max<uint32_t>(ttl / 3, 10) * kj::MILLISECONDS)
      .then([this, &c]() {
        auto request = c.lease.renewRequest();
        request.setHeldDevices(leasedDeviceCount());  // fair share (LeaseRequest.heldDevices)
        return request.send();
      })
      .then([this, &c](capnp::Response<proto::Lease::RenewResults>&& r) {
        replied(c);
        if (r.getTtlMs() != 0) c.ttlMs = r.getTtlMs();
        return renewLoop(c);
      });
}

void RenderSession::Impl::renewAllNow() {
  for (Peer& peer : peers_) {
    Connection* c = peer.connection.get();
    if (c == nullptr || c->dead || !c->hasSession) continue;
    auto request = c->lease.renewRequest();
    request.setHeldDevices(leasedDeviceCount());
    c->tasks.add(request.send().then(
        [this, c](capnp::Response<proto::Lease::RenewResults>&&) { replied(*c); }));
  }
}

uint32_t RenderSession::Impl::leasedDeviceCount() const {
  uint32_t n = 0;
  for (const Peer& peer : peers_) {
    const Connection* c = peer.connection.get();
    if (c != nullptr && !c->dead && c->hasSession) n += uint32_t(c->nodeDevices.size());
  }
  return n;
}

kj::Promise<void> RenderSession::Impl::pingLoop(Connection& c) {
  c.tasks.add(c.session.pingRequest().send().then(
      [this, &c](capnp::Response<proto::RenderSession::PingResults>&&) { replied(c); }));
  return loop_.timer().afterDelay(toKj(options_.pingInterval)).then([this, &c]() {
    return pingLoop(c);
  });
}

kj::Promise<void> RenderSession::Impl::tickLoop() {
  return loop_.timer().afterDelay(50 * kj::MILLISECONDS).then([this]() {
    tick();
    if (closed_) return kj::Promise<void>(kj::READY_NOW);
    return tickLoop();
  });
}

// Silence detection, reconnects, and giving up when nothing can render.
void RenderSession::Impl::tick() {
  if (closed_) return;
  if (options_.cancelled && options_.cancelled()) {
    fatal("render cancelled");
    return;
  }
  const Clock::time_point t = now();
  // Silence and retries, as Membership (core/cluster/membership.h) decides them.
  for (const MembershipAction& action : members_.tick(t)) {
    Peer& peer = peers_[size_t(action.peer)];
    switch (action.kind) {
      case MembershipAction::Kind::DeclareLost:
        if (Connection* c = peer.connection.get(); c != nullptr && !c->dead)
          connectionFailed(*c,
                           KJ_EXCEPTION(DISCONNECTED, kj::str("no reply for ",
                                                              options_.silenceTimeout.count(),
                                                              " ms")),
                           action.failure);
        break;
      case MembershipAction::Kind::Connect:
        if (!peer.connection) startPeer(peer);
        break;
      case MembershipAction::Kind::Silent:
        PL_LOG_DEBUG("%s: no reply for %lld ms", peer.stats.address.c_str(),
                     (long long)std::chrono::duration_cast<std::chrono::milliseconds>(
                         members_.silentFor(action.peer, t))
                         .count());
        break;
    }
    if (closed_) return;
  }
  if (anyDeviceUsable() || gen_->scheduler.done()) {
    lastUsable_ = t;
  } else {
    const bool anyRetry =
        options_.peersMayAppear || members_.anyRetryPossible();
    std::string why;
    for (const Peer& peer : peers_) {
      if (!peer.stats.error.empty()) why += "; " + peer.stats.error;
    }
    if (!anyRetry) {
      fatal(std::string(peers_.empty() ? "every device failed" : "no device can render: every "
                                         "peer was refused and no local device is left") + why);
    } else if (options_.noDeviceTimeout.count() > 0 &&
               t - lastUsable_ > options_.noDeviceTimeout) {
      fatal("no device could render for " +
            std::to_string(options_.noDeviceTimeout.count() / 1000) + " s" + why);
    }
  }
}

bool RenderSession::Impl::anyDeviceUsable() const {
  for (const LocalDeviceState& s : local_) {
    if (!s.failed) return true;
  }
  // A node counts once it granted a lease (uploading or rendering); a connection still trying
  // (a node that is down keeps one in its handshake timeout) does not, so that noDeviceTimeout
  // ends a session whose every node is gone.
  for (const Peer& peer : peers_) {
    if (peer.connection && !peer.connection->dead && peer.connection->hasSession) return true;
  }
  return false;
}

// --- failures ---------------------------------------------------------------------------------

// How a connection ended, for Membership: the typed lease end when the node gave one, else
// what the handshake or the lease request found (refusal), else a plain break.
// A refused node's state in the session's statistics (NodeRenderStats::state).
static const char* refusalState(ConnectionFailure refusal) {
  switch (refusal) {
    case ConnectionFailure::AuthFailed: return "auth_failed";
    case ConnectionFailure::Incompatible: return "incompatible";
    case ConnectionFailure::Busy: return "busy";
    default: return "unreachable";
  }
}

static ConnectionFailure classify(const Connection& c) {
  if (c.leaseEnd == proto::LeaseEnd::REVOKED_FAIR_SHARE) return ConnectionFailure::RevokedFairShare;
  // Over the node's memory budget: busy, retried as when its devices are leased.
  if (c.leaseEnd == proto::LeaseEnd::MEMORY_BUDGET) return ConnectionFailure::Busy;
  // It will never hold this scene: not asked again in this session.
  if (c.leaseEnd == proto::LeaseEnd::SCENE_TOO_LARGE) return ConnectionFailure::SceneTooLarge;
  return c.refusal.value_or(ConnectionFailure::Broken);
}

void RenderSession::Impl::connectionFailed(Connection& c, const kj::Exception& e,
                                           std::optional<PeerFailure> decided) {
  if (c.dead) return;
  c.dead = true;
  Peer& peer = c.peer;
  NodeRenderStats& s = peer.stats;
  std::string message = describe(e);
  if (message.rfind(s.address, 0) != 0 && message.rfind("node " + s.address, 0) != 0)
    message = s.address + ": " + message;
  const Clock::time_point t = now();
  const PeerFailure f = decided ? *decided : members_.connectionFailed(peer.member, classify(c), t);
  // A node that fails again while it comes back from a loss stays "lost", with the loss's
  // reason (failed reconnects go to the log only).
  const bool retryAfterLoss = !f.lost && s.state == "lost";
  if (c.leaseEnd == proto::LeaseEnd::SCENE_TOO_LARGE) s.state = "too_large";
  else if (c.refusal) s.state = refusalState(*c.refusal);
  else if (f.lost) s.state = "lost";
  else if (!retryAfterLoss) s.state = "unreachable";
  endPreempting(c);
  if (f.newLoss) s.losses += 1;
  if (!retryAfterLoss || c.refusal) s.error = message;
  // Losses and refusals matter now; unreachable peers are summed up by the caller at the end
  // (a peer that is down would otherwise log a line per retry).
  if (f.permanent || f.newLoss) PL_LOG_WARN("%s", message.c_str());
  else PL_LOG_DEBUG("%s", message.c_str());

  for (DeviceId id : c.deviceIds) {
    gen_->scheduler.deviceLost(id, t);
    devices_.erase(uint64_t(id));
  }
  c.deviceIds.clear();
  c.ready = false;
  const bool wasReady = c.everReady;
  buryLater(kj::mv(peer.connection));
  if (f.newLoss && !closed_) renewAllNow();  // the nodes learn the new count (fair share)
  if (wasReady && events_.onNode) events_.onNode(s, false);
  if (events_.onNodesChanged) events_.onNodesChanged();
  pump();
}

void RenderSession::Impl::buryLater(kj::Own<Connection> c) {
  graveyard_.push_back(kj::mv(c));
  // Destroyed in a later turn: not inside one of its own tasks' callbacks.
  tasks_.add(kj::evalLater([this]() {
    auto dead = kj::mv(graveyard_);
    graveyard_.clear();
    (void)dead;
  }));
}

void RenderSession::Impl::fatal(std::string message) {
  if (closed_) return;
  closed_ = true;
  if (events_.onFatal) events_.onFatal(message);
}

// --- scheduling -------------------------------------------------------------------------------

void RenderSession::Impl::pump() {
  if (closed_) return;
  Generation& g = *gen_;
  const Clock::time_point t = now();
  for (size_t i = 0; i < local_.size(); ++i) {
    const LocalDeviceState& s = local_[i];
    if (s.failed || s.loadedGeneration != g.id) continue;
    while (std::optional<WorkUnit> unit = g.scheduler.nextUnit(s.id, t))
      localThreads_[i]->submit(g.id, *unit);
  }
  for (Peer& peer : peers_) {
    Connection* c = peer.connection.get();
    if (!c || c->dead || !c->ready) continue;
    for (DeviceId id : c->deviceIds) {
      DeviceRef& ref = devices_.at(uint64_t(id));
      while (std::optional<WorkUnit> unit = g.scheduler.nextUnit(id, t))
        dispatchRemote(id, ref, *unit);
    }
  }
}

void RenderSession::Impl::dispatchRemote(DeviceId id, DeviceRef& ref, const WorkUnit& unit) {
  Connection& c = *ref.connection;
  auto request = c.session.renderRequest();
  toProto(c.scene, request.initScene());
  request.setDevice(ref.nodeDevice);
  toProto(unit, request.initUnit());
  c.generationTasks->add(request.send().then(
      [this, &c, generation = gen_->id, id,
       unit](capnp::Response<proto::RenderSession::RenderResults>&& response) {
        onRemoteResult(c, generation, id, unit, kj::mv(response));
      }));
}

void RenderSession::Impl::onRemoteResult(
    Connection& c, uint64_t generation, DeviceId id, const WorkUnit& unit,
    capnp::Response<proto::RenderSession::RenderResults>&& response) {
  if (c.dead || closed_) return;
  const Clock::time_point t = now();
  replied(c);
  if (generation != gen_->id) return;  // an older generation's unit
  NodeRenderStats& s = c.peer.stats;
  proto::TileResult::Reader reader = response.getResult();
  s.resultBytes += reader.getSums().size();
  // Decoded within the unit asked for (nothing larger is allocated), and with the film's
  // channels (3, or 10 with passes): anything else costs the node its connection, not the
  // session its film.
  Result<TileResult> result = fromProto(reader, unit.tile.pixelCount());
  const uint64_t expectedSums = unit.tile.pixelCount() * gen_->film.channels();
  if (!result.ok() || !(result->unit == unit) || result->sums.size() != expectedSums) {
    std::string why = !result.ok() ? result.error().message
                      : !(result->unit == unit)
                          ? "a result for another unit (" + result->unit.describe() +
                                ", asked for " + unit.describe() + ")"
                          : std::to_string(result->sums.size()) + " sums for " +
                                unit.describe() + ", the film takes " +
                                std::to_string(expectedSums);
    connectionFailed(c, KJ_EXCEPTION(FAILED, kj::str("bad tile result: ", why.c_str())));
    return;
  }
  s.resultBytesRaw += result->sums.size() * sizeof(int64_t);
  if (s.secondsToFirstResult < 0) s.secondsToFirstResult = secondsBetween(start_, t);
  if (gen_->scheduler.complete(id, unit, t)) {
    s.workUnits += 1;
    s.samples += unit.tile.pixelCount() * unit.sampleCount();
    s.raysTraced += result->raysTraced;
    accept(s.address, unit, *result);
  } else {
    s.duplicateResults += 1;
  }
  pump();
}

void RenderSession::Impl::onLocalResult(size_t index, uint64_t generation, WorkUnit unit,
                                        Result<TileResult> result) {
  if (closed_ || generation != gen_->id) return;
  const Clock::time_point t = now();
  LocalDeviceState& state = local_[index];
  LocalDeviceRenderStats& s = state.stats;
  if (state.failed) return;
  if (!result.ok()) {
    s.error = result.error().message;
    PL_LOG_WARN("local device %zu (%s): %s", index, s.info.name.c_str(), s.error.c_str());
    state.failed = true;
    gen_->scheduler.deviceLost(state.id, t);
    devices_.erase(uint64_t(state.id));
    pump();
    return;
  }
  if (gen_->scheduler.complete(state.id, unit, t)) {
    s.workUnits += 1;
    s.samples += unit.tile.pixelCount() * unit.sampleCount();
    s.raysTraced += result->raysTraced;
    accept("local", unit, *result);
  } else {
    s.duplicateResults += 1;
  }
  pump();
}

// Merges an accepted result; when it completes passes, the generation's film commits them and
// the owner hears of it (which may start a new generation: nothing of `g` is used after that).
void RenderSession::Impl::accept(const std::string& source, const WorkUnit& unit,
                                 const TileResult& result) {
  Generation& g = *gen_;
  if (g.stopped) return;  // the time limit ended it: its film is final
  g.samplesBySource[source] += unit.tile.pixelCount() * unit.sampleCount();
  if (Status st = g.film.add(result, g.scheduler.passOf(unit)); !st.ok()) {
    fatal("merging " + result.unit.describe() + ": " + st.error().message);
    return;
  }
  // Keep `g` alive through the events: one of them may start a new generation.
  const std::shared_ptr<Generation> keep = gen_;
  if (events_.onProgress) events_.onProgress(g.scheduler.acceptedWork(), g.scheduler.totalWork());
  // Several passes may complete at once (a later pass's results came first): each is
  // committed (and, rendering until clean, judged) and reported, in order, so that every pass
  // end is seen.
  while (!closed_ && gen_ == keep && commitNextPass(g.scheduler, g.film, options_.noiseThreshold))
    if (events_.onPass) events_.onPass(g.id, g.film.committedSamples(), secondsBetween(g.start, now()));
  // Past its deadline, the first pass that completes ends the generation.
  if (!closed_ && gen_ == keep) checkDeadline();
}

// --- statistics -------------------------------------------------------------------------------

ClusterRenderStats RenderSession::Impl::stats(bool finishing) const {
  ClusterRenderStats stats;
  const Clock::time_point t = now();
  stats.seconds = secondsBetween(callStart_, t);
  if (gen_) stats.scheduler = gen_->scheduler.stats();
  for (const LocalDeviceState& s : local_) stats.local.push_back(s.stats);
  for (const Peer& peer : peers_) {
    NodeRenderStats n = peer.stats;
    const Connection* c = peer.connection.get();
    if (finishing && c != nullptr && !c->dead && c->everReady) {
      const auto silent = std::chrono::duration_cast<std::chrono::milliseconds>(
          members_.silentFor(peer.member, t));
      if (silent > 2 * options_.pingInterval) {
        // Paused or cut off, and the frame finished before silenceTimeout ran out.
        n.state = "lost";
        n.losses += 1;
        n.error = n.address + ": no reply for " + std::to_string(silent.count()) +
                  " ms (at the end of the render)";
      } else {
        n.state = "done";
      }
    }
    stats.nodes.push_back(std::move(n));
  }
  for (const auto& d : stats.local) {
    stats.samples += d.samples;
    stats.raysTraced += d.raysTraced;
  }
  for (const auto& n : stats.nodes) {
    stats.samples += n.samples;
    stats.raysTraced += n.raysTraced;
  }
  if (gen_ && gen_->encoded) {
    stats.renderDataChunks = gen_->chunkHashes.size();
    stats.renderDataRawBytes = gen_->manifest.rawBytes();
    stats.renderDataEncodedBytes = gen_->manifest.encodedBytes();
  }
  stats.encodeSeconds = encodeSeconds_;
  return stats;
}

std::vector<std::pair<std::string, uint64_t>> RenderSession::Impl::shares() const {
  std::vector<std::pair<std::string, uint64_t>> out;
  if (!gen_) return out;
  auto it = gen_->samplesBySource.find("local");
  if (it != gen_->samplesBySource.end()) out.emplace_back(*it);
  for (const Peer& peer : peers_) {
    auto p = gen_->samplesBySource.find(peer.stats.address);
    if (p != gen_->samplesBySource.end()) out.emplace_back(*p);
  }
  return out;
}

// --- RenderSession ----------------------------------------------------------------------------

RenderSession::RenderSession(UvKjLoop& loop, const ClusterRenderOptions& options,
                             RenderSessionEvents events)
    : impl_(std::make_unique<Impl>(loop, options, std::move(events))) {}

RenderSession::~RenderSession() = default;

Status RenderSession::start(const SceneSource& scene, uint32_t spp) {
  return impl_->start(scene, spp);
}

uint64_t RenderSession::update(std::shared_ptr<const RenderData> data, uint32_t spp) {
  const kernel::Camera camera = data->camera.at(0);
  return impl_->update(std::make_shared<SceneState>(SceneSource{std::move(data), nullptr}, camera),
                       camera, spp);
}

Result<uint64_t> RenderSession::update(const SceneSource& scene, uint32_t spp) {
  Result<kernel::Camera> camera = scene.camera();
  if (!camera.ok()) return camera.error();
  if (Result<FrameSpec> frame = impl_->frameOf(*camera, spp); !frame.ok()) return frame.error();
  return impl_->update(std::make_shared<SceneState>(scene, *camera), *camera, spp);
}

Status RenderSession::checkFrame(const kernel::Camera& camera, uint32_t spp) const {
  Result<FrameSpec> frame = impl_->frameOf(camera, spp);
  return frame.ok() ? Status() : Status(frame.error());
}

uint64_t RenderSession::updateCamera(const kernel::Camera& camera, uint32_t spp) {
  return impl_->update(impl_->generation().scene, camera, spp);
}

uint64_t RenderSession::restart(uint32_t spp) {
  return impl_->update(impl_->generation().scene, impl_->generation().camera, spp);
}

const kernel::Camera& RenderSession::camera() const { return impl_->generation().camera; }

bool RenderSession::addPeer(const std::string& address) {
  return impl_->joinPeer(address);
}
uint64_t RenderSession::generation() const { return impl_->generation().id; }
std::shared_ptr<const RenderData> RenderSession::data() const {
  Result<std::shared_ptr<const RenderData>> data = impl_->generation().scene->data();
  return data.ok() ? *data : nullptr;
}
const ProgressiveFilm& RenderSession::film() const { return impl_->generation().film; }
uint32_t RenderSession::targetSpp() const { return impl_->generation().film.samplesPerPixel(); }
bool RenderSession::generationDone() const { return impl_->generation().scheduler.done(); }
bool RenderSession::generationFinished() const {
  return impl_->generation().scheduler.done() || impl_->generation().stopped;
}
double RenderSession::generationSeconds() const {
  return secondsBetween(impl_->generation().start, Clock::now());
}
bool RenderSession::willReach(uint32_t spp) const {
  const Generation& g = impl_->generation();
  if (g.film.committedSamples() == spp) return true;
  if (g.stopped) return false;  // the time limit ended it: nothing more comes
  for (uint32_t pass = g.film.committedPasses(); pass < g.scheduler.passCount(); ++pass)
    if (g.scheduler.passRange(pass).second == spp) return true;
  return false;
}
ClusterRenderStats RenderSession::stats(bool finishing) const { return impl_->stats(finishing); }
std::vector<std::pair<std::string, uint64_t>> RenderSession::shares() const {
  return impl_->shares();
}

}  // namespace pl
