// The Primary's side of the cluster protocol: see primary.h.
//
// Structure: one ClusterRender object per frame, living on the loop thread. Each peer has a
// Peer record (statistics, retry state) and, while connected, a Connection that owns the TCP
// stream, the RPC system, the capabilities and every promise on them (a kj::TaskSet). A
// connection that fails is marked dead at once (its devices are declared lost to the
// scheduler) and destroyed a turn later, outside the callback that noticed the failure.
// Local devices each have a LocalWorker thread fed through a small queue.

#include "transport/primary.h"

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/debug.h>
#include <kj/timer.h>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "core/util/log.h"
#include "transport/auth.h"
#include "transport/chunk_codec.h"
#include "transport/protocol.capnp.h"
#include "transport/protocol_convert.h"
#include "transport/secure_channel.h"
#include "transport/tcp.h"
#include "transport/uv_kj_loop.h"

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

class ClusterRender;

// One local device, rendering on a thread of its own. submit() and the destructor run on the
// loop thread; results come back through UvKjLoop::post().
class LocalWorker {
 public:
  using ResultFn = std::function<void(size_t index, WorkUnit unit, Result<TileResult> result)>;

  LocalWorker(UvKjLoop& loop, size_t index, Device* device, std::shared_ptr<bool> alive,
              ResultFn onResult)
      : loop_(loop), index_(index), device_(device), alive_(std::move(alive)),
        onResult_(std::move(onResult)), thread_([this] { run(); }) {}

  ~LocalWorker() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
      queue_.clear();
    }
    wake_.notify_all();
    thread_.join();  // waits for a unit being rendered (a few hundred ms at most)
  }

  void submit(const WorkUnit& unit) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(unit);
    }
    wake_.notify_one();
  }

 private:
  void run() {
    for (;;) {
      WorkUnit unit;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (stopping_) return;
        unit = queue_.front();
        queue_.pop_front();
      }
      auto result = std::make_shared<Result<TileResult>>(device_->render(unit));
      // `alive` is read and reset on the loop thread only, so the check needs no lock.
      loop_.post([alive = alive_, fn = &onResult_, index = index_, unit, result]() {
        if (*alive) (*fn)(index, unit, std::move(*result));
      });
    }
  }

  UvKjLoop& loop_;
  size_t index_;
  Device* device_;
  std::shared_ptr<bool> alive_;
  ResultFn onResult_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<WorkUnit> queue_;
  bool stopping_ = false;
  std::thread thread_;  // last: started once everything above exists
};

struct Peer;

// One connection to one node, and everything that lives on it.
struct Connection final : public kj::TaskSet::ErrorHandler {
  Connection(ClusterRender& owner, Peer& peer, uint64_t generation)
      : owner(owner), peer(peer), generation(generation), tasks(*this) {}

  void taskFailed(kj::Exception&& exception) override;

  ClusterRender& owner;
  Peer& peer;
  uint64_t generation;
  bool dead = false;
  bool ready = false;       // data loaded, devices registered with the scheduler
  bool hasSession = false;  // pings and silence detection active
  bool preempting = false;  // its lease request may revoke another Primary's (fair share)
  Clock::time_point lastReply;
  std::string failState;    // set before throwing a failure that is not a plain loss

  // Destroyed in reverse order: capabilities before the RPC system before the stream.
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyClient> rpc;
  proto::Gate::Client gate = nullptr;
  proto::Node::Client node = nullptr;
  proto::Lease::Client lease = nullptr;
  proto::RenderSession::Client session = nullptr;
  Nonce primaryNonce{};
  Hash128 scene;
  uint32_t ttlMs = 0;
  std::vector<uint32_t> nodeDevices;  // lease's device indices
  std::vector<bool> nodeDeviceIsGpu;  // by node device index (from Node.info)
  std::vector<DeviceId> deviceIds;    // scheduler ids, parallel to nodeDevices
  kj::TaskSet tasks;                  // last member: destroyed (cancelled) first
};

struct Peer {
  size_t index = 0;
  NodeRenderStats stats;
  kj::Own<Connection> connection;  // null while not connected
  bool permanent = false;          // auth failed / incompatible: never retried
  Clock::time_point nextAttempt;
};

struct DeviceRef {
  bool local = false;
  size_t index = 0;             // local worker or peer
  uint32_t nodeDevice = 0;      // remote: device index on the node
  Connection* connection = nullptr;
};

class ClusterRender final : public kj::TaskSet::ErrorHandler {
 public:
  ClusterRender(UvKjLoop& loop, const RenderData& data, Film& film,
                const ClusterRenderOptions& options, const ClusterProgressCallback& progress)
      : loop_(loop), data_(data), film_(film), options_(options), progress_(progress),
        scheduler_(FrameSpec{film.width(), film.height(), film.samplesPerPixel(),
                             options.tileSize},
                   options.scheduler),
        tasks_(*this) {}

  ~ClusterRender() {
    *alive_ = false;
    workers_.clear();  // joins the device threads
  }

  Result<ClusterRenderStats> run();

  // Called by Connection::taskFailed and by the result handlers.
  void connectionFailed(Connection& c, const kj::Exception& e);
  void taskFailed(kj::Exception&& exception) override {
    fatal(std::string("internal error: ") + describe(exception));
  }

 private:
  Clock::time_point now() const { return Clock::now(); }

  // The first unit of a device: GPUs start at gpuInitialUnitWork (0: the scheduler's default).
  uint64_t initialUnitWork(bool gpu) const { return gpu ? options_.gpuInitialUnitWork : 0; }
  void startLocal();
  Status addPeer(const std::string& address);
  void pollMorePeers();
  void startPeer(Peer& peer);
  kj::Promise<void> handshake(Connection& c);
  kj::Promise<void> upload(Connection& c);
  kj::Promise<void> putChunks(Connection& c, std::shared_ptr<std::vector<Hash128>> hashes,
                              size_t next);
  void becomeReady(Connection& c);
  kj::Promise<void> renewLoop(Connection& c);
  // Fair share: at most one lease request that may revoke another Primary's lease is in
  // flight; when a node is lost, every other lease is renewed at once with the new count.
  bool preemptInFlight_ = false;
  void endPreempting(Connection& c) {
    if (c.preempting) preemptInFlight_ = false;
    c.preempting = false;
  }
  void renewAllNow() {
    for (Peer& peer : peers_) {
      Connection* c = peer.connection.get();
      if (c == nullptr || c->dead || !c->hasSession) continue;
      auto request = c->lease.renewRequest();
      request.setHeldDevices(leasedDeviceCount());
      c->tasks.add(request.send().then(
          [this, c](capnp::Response<proto::Lease::RenewResults>&&) { c->lastReply = now(); }));
    }
  }
  // Devices leased on nodes now (sessions granted and not lost), for fair share.
  uint32_t leasedDeviceCount() const {
    uint32_t n = 0;
    for (const Peer& peer : peers_) {
      const Connection* c = peer.connection.get();
      if (c != nullptr && !c->dead && c->hasSession) n += uint32_t(c->nodeDevices.size());
    }
    return n;
  }
  kj::Promise<void> pingLoop(Connection& c);
  kj::Promise<void> tickLoop();
  void tick();

  void pump();
  void dispatchRemote(DeviceId id, DeviceRef& ref, const WorkUnit& unit);
  void onRemoteResult(Connection& c, DeviceId id, const WorkUnit& unit,
                      capnp::Response<proto::RenderSession::RenderResults>&& response);
  void onLocalResult(size_t index, WorkUnit unit, Result<TileResult> result);
  void accept(const TileResult& result);
  void checkDone();
  void fatal(std::string message);
  void reportProgress();
  bool anyDeviceUsable() const;
  void buryLater(kj::Own<Connection> c);
  ClusterRenderStats snapshot() const;

  UvKjLoop& loop_;
  const RenderData& data_;
  Film& film_;
  const ClusterRenderOptions& options_;
  const ClusterProgressCallback& progress_;
  Scheduler scheduler_;
  Clock::time_point start_;      // options.start: origin of the seconds* figures
  Clock::time_point callStart_;  // run() called: origin of ClusterRenderStats::seconds
  Clock::time_point lastUsable_;
  double finishSeconds_ = 0;
  double encodeSeconds_ = 0;
  bool finished_ = false;
  std::optional<std::string> fatalError_;

  ChunkStore store_;
  ChunkManifest manifest_;
  std::vector<Hash128> chunkHashes_;

  // TLS for the peers' connections (options.tls), built at the first handshake.
  std::unique_ptr<SecureChannel> secure_;
  std::deque<Peer> peers_;  // a deque: Connection holds Peer&, and peers are added mid-frame
  Clock::time_point nextPeerPoll_{};
  std::vector<LocalDeviceRenderStats> localStats_;
  std::vector<bool> localFailed_;
  std::vector<DeviceId> localIds_;
  std::unordered_map<uint64_t, DeviceRef> devices_;
  uint64_t nextDeviceId_ = 1;
  uint64_t nextGeneration_ = 1;
  std::vector<kj::Own<Connection>> graveyard_;

  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::vector<std::unique_ptr<LocalWorker>> workers_;
  kj::TaskSet tasks_;  // after everything its tasks use
};

void Connection::taskFailed(kj::Exception&& exception) { owner.connectionFailed(*this, exception); }

// --- start-up ---------------------------------------------------------------------------------

Result<ClusterRenderStats> ClusterRender::run() {
  callStart_ = now();
  start_ = options_.start == SchedulerTime{} ? callStart_ : options_.start;
  lastUsable_ = now();
  const bool anyPeers = !options_.peers.empty() || options_.morePeers;
  if (options_.localDevices.empty() && !anyPeers)
    return Error{"render: no device to render on (no local device and no --peer)"};
  if (anyPeers && options_.key.bytes.empty())
    return Error{"render: a cluster key is needed to use peers"};

  for (const std::string& address : options_.peers) {
    if (Status s = addPeer(address); !s.ok()) return s.error();
  }
  startLocal();
  for (Peer& peer : peers_) startPeer(peer);
  pollMorePeers();
  tasks_.add(tickLoop());
  pump();
  checkDone();
  if (!finished_) loop_.run();

  // Tear down: connections first (dropping leases), then the device threads.
  const Clock::time_point end = now();
  for (Peer& peer : peers_) {
    if (peer.connection) {
      Connection& c = *peer.connection;
      const auto silent = std::chrono::duration_cast<std::chrono::milliseconds>(end - c.lastReply);
      if (c.ready && silent > 2 * options_.pingInterval) {
        // Paused or cut off, and the frame finished before silenceTimeout ran out.
        peer.stats.state = "lost";
        peer.stats.losses += 1;
        peer.stats.error = peer.stats.address + ": no reply for " +
                           std::to_string(silent.count()) + " ms (at the end of the render)";
        PL_LOG_WARN("%s", peer.stats.error.c_str());
      } else if (c.ready) {
        peer.stats.state = "done";
      }
      peer.connection->dead = true;
      graveyard_.push_back(kj::mv(peer.connection));
    }
  }
  ClusterRenderStats stats = snapshot();
  stats.seconds = finishSeconds_;
  graveyard_.clear();
  *alive_ = false;
  workers_.clear();
  if (fatalError_) return Error{*fatalError_};
  return stats;
}

void ClusterRender::startLocal() {
  for (size_t i = 0; i < options_.localDevices.size(); ++i) {
    Device* device = options_.localDevices[i];
    LocalDeviceRenderStats s;
    s.info = device->info();
    localStats_.push_back(s);
    localFailed_.push_back(false);
    DeviceId id{nextDeviceId_++};
    localIds_.push_back(id);
    devices_[uint64_t(id)] = DeviceRef{true, i, 0, nullptr};
    scheduler_.addDevice(id, now(), 0, initialUnitWork(s.info.kind == "cuda"));
    workers_.push_back(std::make_unique<LocalWorker>(
        loop_, i, device, alive_,
        [this](size_t index, WorkUnit unit, Result<TileResult> result) {
          onLocalResult(index, unit, std::move(result));
        }));
  }
}

// Appends a peer (not started). Fails on an address that does not parse.
Status ClusterRender::addPeer(const std::string& address) {
  if (Result<TcpAddress> a = parseTcpAddress(address); !a.ok())
    return Error{"--peer " + address + ": " + a.error().message};
  if (chunkHashes_.empty()) {  // encoded once, when the first peer comes
    const Clock::time_point encodeStart = now();
    manifest_ = encodeRenderData(data_, store_);
    chunkHashes_ = manifest_.chunkHashes();
    encodeSeconds_ = secondsBetween(encodeStart, now());
  }
  Peer& peer = peers_.emplace_back();
  peer.index = peers_.size() - 1;
  peer.stats.address = address;
  peer.stats.state = "connecting";
  peer.stats.chunksTotal = chunkHashes_.size();
  return Status();
}

// Nodes found during the render (options.morePeers): new addresses become peers at once.
void ClusterRender::pollMorePeers() {
  if (!options_.morePeers || finished_) return;
  const Clock::time_point t = now();
  if (t < nextPeerPoll_) return;
  nextPeerPoll_ = t + options_.peerPollInterval;
  auto spelled = [](const std::string& a) {
    return a.rfind("localhost:", 0) == 0 ? "127.0.0.1:" + a.substr(10) : a;
  };
  for (const std::string& address : options_.morePeers()) {
    bool known = false;
    for (const Peer& peer : peers_) known |= spelled(peer.stats.address) == spelled(address);
    if (known) continue;
    if (Status s = addPeer(address); !s.ok()) {
      PL_LOG_WARN("not using node %s: %s", address.c_str(), s.error().message.c_str());
      continue;
    }
    PL_LOG_INFO("node %s appeared during the render: using it", address.c_str());
    startPeer(peers_.back());
    reportProgress();
  }
}

void ClusterRender::startPeer(Peer& peer) {
  KJ_REQUIRE(!peer.connection);
  peer.connection = kj::heap<Connection>(*this, peer, nextGeneration_++);
  Connection& c = *peer.connection;
  c.tasks.add(loop_.timer()
                  .timeoutAfter(toKj(options_.handshakeTimeout), handshake(c))
                  .then([this, &c]() { return upload(c); }));
}

kj::Promise<void> ClusterRender::handshake(Connection& c) {
  kj::Promise<kj::Own<kj::AsyncIoStream>> connected =
      connectTcp(loop_.lowLevelIo(), c.peer.stats.address);
  if (options_.tls) {
    if (secure_ == nullptr) {
      Result<std::unique_ptr<SecureChannel>> made = SecureChannel::create(options_.key);
      if (!made.ok()) return KJ_EXCEPTION(FAILED, made.error().message.c_str());
      secure_ = std::move(*made);
    }
    // TLS first (secure_channel.h): a node without our key fails here, and that is final.
    connected = connected.then([this, &c](kj::Own<kj::AsyncIoStream> plain) {
      return secure_->wrapClient(kj::mv(plain))
          .catch_([&c](kj::Exception&& e) -> kj::Promise<kj::Own<kj::AsyncIoStream>> {
            if (!isTlsKeyMismatch(e)) return kj::mv(e);  // DISCONNECTED: retried
            c.failState = "auth_failed";
            return KJ_EXCEPTION(FAILED, kj::str(c.peer.stats.address.c_str(),
                                                ": authentication failed (TLS: the node does not "
                                                "hold this cluster key)"));
          });
    });
  }
  return connected
      .then([this, &c](kj::Own<kj::AsyncIoStream> stream) {
        c.stream = kj::mv(stream);
        c.rpc = kj::heap<capnp::TwoPartyClient>(*c.stream);
        c.tasks.add(c.rpc->onDisconnect().then([]() -> kj::Promise<void> {
          return KJ_EXCEPTION(DISCONNECTED, "connection closed");
        }));
        c.gate = c.rpc->bootstrap().castAs<proto::Gate>();
        c.primaryNonce = randomNonce();
        auto request = c.gate.helloRequest();
        request.setProtocolVersion(kProtocolVersion);
        request.setNonce(kj::arrayPtr(c.primaryNonce.data(), c.primaryNonce.size()));
        request.setPrimaryName(options_.primaryName);
        return request.send();
      })
      .then([this, &c](capnp::Response<proto::Gate::HelloResults>&& hello) {
        NodeRenderStats& s = c.peer.stats;
        s.name = hello.getName();
        s.nodeId = hello.getNodeId();
        if (hello.getProtocolVersion() != kProtocolVersion) {
          c.failState = "incompatible";
          return kj::Promise<void>(KJ_EXCEPTION(
              FAILED, kj::str("node ", s.address.c_str(), " speaks protocol ",
                              hello.getProtocolVersion(), ", this Primary speaks ",
                              kProtocolVersion)));
        }
        capnp::Data::Reader nodeNonce = hello.getNonce();
        capnp::Data::Reader proof = hello.getProof();
        std::span<const uint8_t> theirNonce(nodeNonce.begin(), nodeNonce.size());
        bool nodeOk =
            nodeNonce.size() == kNonceBytes &&
            proofMatches(nodeProof(options_.key, c.primaryNonce, theirNonce),
                         std::span<const uint8_t>(proof.begin(), proof.size()));
        Proof ours = primaryProof(options_.key, theirNonce, c.primaryNonce);
        // Authenticate even when the node's proof is wrong, so that the node logs the refused
        // attempt too; the Primary refuses the node either way. But then send random bytes,
        // never a valid proof: a node without the key must not get one to replay elsewhere.
        if (!nodeOk) randomBytes(ours.data(), ours.size());
        auto request = c.gate.authenticateRequest();
        request.setProof(kj::arrayPtr(ours.data(), ours.size()));
        return request.send().then(
            [this, &c, nodeOk](capnp::Response<proto::Gate::AuthenticateResults>&& r) {
              if (!nodeOk) {
                c.failState = "auth_failed";
                return kj::Promise<void>(KJ_EXCEPTION(
                    FAILED, kj::str(c.peer.stats.address.c_str(),
                                    ": authentication failed (the node does not hold this "
                                    "cluster key)")));
              }
              c.node = r.getNode();
              return c.node.infoRequest().send().then(
                  [this, &c](capnp::Response<proto::Node::InfoResults>&& info) {
                    c.peer.stats.name = info.getInfo().getName();
                    c.nodeDeviceIsGpu.clear();
                    for (auto d : info.getInfo().getDevices())
                      c.nodeDeviceIsGpu.push_back(d.getKind() == proto::DeviceKind::CUDA);
                    auto request = c.node.leaseRequest();
                    auto lr = request.initRequest();
                    lr.setPrimaryName(options_.primaryName);
                    lr.setTtlMs(options_.leaseTtlMs);
                    if (!options_.ownerToken.empty()) lr.setOwnerToken(options_.ownerToken);
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
                          if (e.getType() == kj::Exception::Type::FAILED) c.failState = "busy";
                          kj::throwFatalException(kj::mv(e));
                        });
                  }).then([this, &c](capnp::Response<proto::Node::LeaseResults>&& lease) {
                    c.lease = lease.getLease();
                    c.session = lease.getSession();
                    c.ttlMs = lease.getTtlMs();
                    for (uint32_t d : lease.getDevices()) c.nodeDevices.push_back(d);
                    if (c.nodeDevices.empty() || c.nodeDevices.size() > kMaxDevicesPerNode) {
                      c.failState = "busy";
                      return kj::Promise<void>(KJ_EXCEPTION(
                          FAILED, kj::str(c.peer.stats.address.c_str(),
                                          ": the lease granted no device")));
                    }
                    c.peer.stats.devices = uint32_t(c.nodeDevices.size());
                    c.hasSession = true;
                    c.lastReply = now();
                    c.tasks.add(renewLoop(c));
                    c.tasks.add(pingLoop(c));
                    return kj::Promise<void>(kj::READY_NOW);
                  });
            },
            [this, &c](kj::Exception&& e) -> kj::Promise<void> {
              if (e.getType() == kj::Exception::Type::FAILED) {
                c.failState = "auth_failed";
                return KJ_EXCEPTION(FAILED, kj::str(c.peer.stats.address.c_str(),
                                                    ": authentication failed (",
                                                    describe(e).c_str(), ")"));
              }
              return kj::mv(e);
            });
      });
}

kj::Promise<void> ClusterRender::upload(Connection& c) {
  auto request = c.session.missingRequest();
  toProto(chunkHashes_, request.initHashes(uint32_t(chunkHashes_.size())));
  return request.send()
      .then([this, &c](capnp::Response<proto::RenderSession::MissingResults>&& response) {
        c.lastReply = now();
        Result<std::vector<Hash128>> missing = fromProto(response.getMissing());
        if (!missing.ok())
          return kj::Promise<void>(KJ_EXCEPTION(FAILED, missing.error().message.c_str()));
        for (const Hash128& h : *missing) {
          if (!store_.contains(h))
            return kj::Promise<void>(
                KJ_EXCEPTION(FAILED, "the node asked for a chunk that is not in this scene"));
        }
        auto list = std::make_shared<std::vector<Hash128>>(std::move(missing).value());
        const Clock::time_point uploadStart = now();
        return putChunks(c, list, 0)
            .then([&c, list]() {
              // A put's stream promise resolves when flow control allows the next one, not
              // when the node has the chunk; and a put the node refused is reported only on a
              // later send. Asking `missing` again (the node answers it after every earlier
              // put) closes both gaps: the upload time includes the tail, and a refused chunk
              // is named here rather than as "missing" at load.
              auto again = c.session.missingRequest();
              toProto(*list, again.initHashes(uint32_t(list->size())));
              return again.send();
            })
            .then([this, &c, uploadStart](
                      capnp::Response<proto::RenderSession::MissingResults>&& response) {
              c.lastReply = now();
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
      .then([this, &c]() {
        auto request = c.session.loadRequest();
        toProto(manifest_, request.initManifest());
        c.peer.stats.manifestBytes += request.totalSize().wordCount * 8;
        return request.send();
      })
      .then([this, &c](capnp::Response<proto::RenderSession::LoadResults>&& loaded) {
        c.lastReply = now();
        c.scene = fromProto(loaded.getScene());
        becomeReady(c);
      });
}

// Streams hashes[next..] with `put`; each send() resolves when flow control lets the next
// one go. The chunk bytes are referenced, not copied (the store outlives the connection).
kj::Promise<void> ClusterRender::putChunks(Connection& c,
                                           std::shared_ptr<std::vector<Hash128>> hashes,
                                           size_t next) {
  if (next == hashes->size()) return kj::READY_NOW;
  const Hash128& hash = (*hashes)[next];
  const std::vector<uint8_t>* encoded = store_.find(hash);
  KJ_ASSERT(encoded != nullptr);
  auto request = c.session.putRequest(capnp::MessageSize{16, 1});
  auto chunk = request.initChunk();
  toProto(hash, chunk.initHash());
  chunk.adoptData(capnp::Orphanage::getForMessageContaining(chunk).referenceExternalData(
      kj::arrayPtr(encoded->data(), encoded->size())));
  NodeRenderStats& s = c.peer.stats;
  s.chunksSent += 1;
  s.renderDataBytesSent += encoded->size();
  // The raw size is in the manifest; find it once per chunk (few chunks per scene).
  for (const ArrayManifest& array : manifest_.arrays) {
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
      [this, &c, hashes, next]() { return putChunks(c, hashes, next + 1); });
}

void ClusterRender::becomeReady(Connection& c) {
  NodeRenderStats& s = c.peer.stats;
  c.ready = true;
  s.connections += 1;
  s.state = "rendering";
  s.error.clear();
  if (s.secondsToDataLoaded < 0) s.secondsToDataLoaded = secondsBetween(start_, now());
  for (uint32_t nodeDevice : c.nodeDevices) {
    DeviceId id{nextDeviceId_++};
    c.deviceIds.push_back(id);
    devices_[uint64_t(id)] = DeviceRef{false, c.peer.index, nodeDevice, &c};
    const bool gpu = nodeDevice < c.nodeDeviceIsGpu.size() && c.nodeDeviceIsGpu[nodeDevice];
    scheduler_.addDevice(id, now(), 0, initialUnitWork(gpu));
  }
  PL_LOG_DEBUG("%s (%s): %zu device(s), render data in after %.2f s", s.address.c_str(),
              s.name.c_str(), c.nodeDevices.size(), secondsBetween(start_, now()));
  reportProgress();
  pump();
}

kj::Promise<void> ClusterRender::renewLoop(Connection& c) {
  uint32_t ttl = c.ttlMs ? c.ttlMs : options_.leaseTtlMs;
  return loop_.timer().afterDelay(std::max<uint32_t>(ttl / 3, 10) * kj::MILLISECONDS)
      .then([this, &c]() {
        auto request = c.lease.renewRequest();
        request.setHeldDevices(leasedDeviceCount());  // fair share (LeaseRequest.heldDevices)
        return request.send();
      })
      .then([this, &c](capnp::Response<proto::Lease::RenewResults>&& r) {
        c.lastReply = now();
        if (r.getTtlMs() != 0) c.ttlMs = r.getTtlMs();
        return renewLoop(c);
      });
}

kj::Promise<void> ClusterRender::pingLoop(Connection& c) {
  c.tasks.add(c.session.pingRequest().send().then(
      [this, &c](capnp::Response<proto::RenderSession::PingResults>&&) { c.lastReply = now(); }));
  return loop_.timer().afterDelay(toKj(options_.pingInterval)).then([this, &c]() {
    return pingLoop(c);
  });
}

kj::Promise<void> ClusterRender::tickLoop() {
  return loop_.timer().afterDelay(50 * kj::MILLISECONDS).then([this]() {
    tick();
    if (finished_) return kj::Promise<void>(kj::READY_NOW);
    return tickLoop();
  });
}

// Silence detection, reconnects, and giving up when nothing can render.
void ClusterRender::tick() {
  if (finished_) return;
  if (options_.cancelled && options_.cancelled()) {
    fatal("render cancelled");
    return;
  }
  pollMorePeers();
  const Clock::time_point t = now();
  for (Peer& peer : peers_) {
    Connection* c = peer.connection.get();
    if (c && !c->dead && c->hasSession && t - c->lastReply > options_.silenceTimeout) {
      connectionFailed(*c, KJ_EXCEPTION(DISCONNECTED,
                                        kj::str("no reply for ",
                                                options_.silenceTimeout.count(), " ms")));
      continue;
    }
    if (!peer.connection && !peer.permanent && t >= peer.nextAttempt) startPeer(peer);
  }
  if (finished_) return;
  if (anyDeviceUsable()) {
    lastUsable_ = t;
  } else {
    bool anyRetry = bool(options_.morePeers);  // a node may still appear
    for (const Peer& peer : peers_) anyRetry |= !peer.permanent;
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

bool ClusterRender::anyDeviceUsable() const {
  for (size_t i = 0; i < localFailed_.size(); ++i) {
    if (!localFailed_[i]) return true;
  }
  // A node counts once it granted a lease (uploading or rendering); a connection still trying
  // (a node that is down keeps one in its handshake timeout) does not, so that noDeviceTimeout
  // ends a render whose every node is gone.
  for (const Peer& peer : peers_) {
    if (peer.connection && !peer.connection->dead && peer.connection->hasSession) return true;
  }
  return false;
}

// --- failures ---------------------------------------------------------------------------------

void ClusterRender::connectionFailed(Connection& c, const kj::Exception& e) {
  if (c.dead) return;
  c.dead = true;
  Peer& peer = c.peer;
  NodeRenderStats& s = peer.stats;
  std::string message = describe(e);
  if (message.rfind(s.address, 0) != 0 && message.rfind("node " + s.address, 0) != 0)
    message = s.address + ": " + message;
  const bool wasReady = c.ready;
  const bool retryAfterLoss = !wasReady && s.state == "lost";
  if (!c.failState.empty()) {
    s.state = c.failState;
    peer.permanent = c.failState == "auth_failed" || c.failState == "incompatible";
  } else if (wasReady || c.hasSession) {
    s.state = "lost";  // broke during the upload or while rendering
  } else if (!retryAfterLoss) {
    s.state = "unreachable";
  }
  const bool newLoss = wasReady || (c.hasSession && !retryAfterLoss);
  endPreempting(c);
  if (newLoss) s.losses += 1;
  // After a loss, keep its reason: failed reconnects only go to the log.
  if (!retryAfterLoss || !c.failState.empty()) s.error = message;
  // Losses and refusals matter now; unreachable peers are summed up by the caller at the end
  // (a peer that is down would otherwise log a line per retry).
  if (peer.permanent || newLoss) PL_LOG_WARN("%s", message.c_str());
  else PL_LOG_DEBUG("%s", message.c_str());

  const Clock::time_point t = now();
  for (DeviceId id : c.deviceIds) {
    scheduler_.deviceLost(id, t);
    devices_.erase(uint64_t(id));
  }
  c.deviceIds.clear();
  c.ready = false;
  // A lease revoked for fair share left this Primary's share of the node free: ask again at
  // once rather than after reconnectInterval (NodeService's fair-share rule).
  const bool fairShare = message.find("revoked: fair share") != std::string::npos;
  peer.nextAttempt = fairShare ? t : t + options_.reconnectInterval;
  buryLater(kj::mv(peer.connection));
  if (newLoss && !finished_) renewAllNow();  // the nodes learn the new count (fair share)
  reportProgress();
  pump();
}

void ClusterRender::buryLater(kj::Own<Connection> c) {
  graveyard_.push_back(kj::mv(c));
  // Destroyed in a later turn: not inside one of its own tasks' callbacks.
  tasks_.add(kj::evalLater([this]() {
    auto dead = kj::mv(graveyard_);
    graveyard_.clear();
    (void)dead;
  }));
}

void ClusterRender::fatal(std::string message) {
  if (finished_) return;
  fatalError_ = std::move(message);
  finished_ = true;
  finishSeconds_ = secondsBetween(callStart_, now());
  loop_.stop();
}

// --- scheduling -------------------------------------------------------------------------------

void ClusterRender::pump() {
  if (finished_) return;
  const Clock::time_point t = now();
  for (size_t i = 0; i < localIds_.size(); ++i) {
    if (localFailed_[i]) continue;
    while (std::optional<WorkUnit> unit = scheduler_.nextUnit(localIds_[i], t))
      workers_[i]->submit(*unit);
  }
  for (Peer& peer : peers_) {
    Connection* c = peer.connection.get();
    if (!c || c->dead || !c->ready) continue;
    for (DeviceId id : c->deviceIds) {
      DeviceRef& ref = devices_.at(uint64_t(id));
      while (std::optional<WorkUnit> unit = scheduler_.nextUnit(id, t))
        dispatchRemote(id, ref, *unit);
    }
  }
}

void ClusterRender::dispatchRemote(DeviceId id, DeviceRef& ref, const WorkUnit& unit) {
  Connection& c = *ref.connection;
  auto request = c.session.renderRequest();
  toProto(c.scene, request.initScene());
  request.setDevice(ref.nodeDevice);
  toProto(unit, request.initUnit());
  c.tasks.add(request.send().then(
      [this, &c, id, unit](capnp::Response<proto::RenderSession::RenderResults>&& response) {
        onRemoteResult(c, id, unit, kj::mv(response));
      }));
}

void ClusterRender::onRemoteResult(
    Connection& c, DeviceId id, const WorkUnit& unit,
    capnp::Response<proto::RenderSession::RenderResults>&& response) {
  if (c.dead || finished_) return;
  const Clock::time_point t = now();
  c.lastReply = t;
  NodeRenderStats& s = c.peer.stats;
  proto::TileResult::Reader reader = response.getResult();
  s.resultBytes += reader.getSums().size();
  Result<TileResult> result = fromProto(reader);
  if (!result.ok() || !(result->unit == unit)) {
    std::string why = result.ok() ? "a result for another unit (" + result->unit.describe() +
                                        ", asked for " + unit.describe() + ")"
                                  : result.error().message;
    connectionFailed(c, KJ_EXCEPTION(FAILED, kj::str("bad tile result: ", why.c_str())));
    return;
  }
  s.resultBytesRaw += result->sums.size() * sizeof(int64_t);
  if (s.secondsToFirstResult < 0) s.secondsToFirstResult = secondsBetween(start_, t);
  if (scheduler_.complete(id, unit, t)) {
    s.workUnits += 1;
    s.samples += unit.tile.pixelCount() * unit.sampleCount();
    s.raysTraced += result->raysTraced;
    accept(*result);
  } else {
    s.duplicateResults += 1;
  }
  pump();
  checkDone();
}

void ClusterRender::onLocalResult(size_t index, WorkUnit unit, Result<TileResult> result) {
  if (finished_) return;
  const Clock::time_point t = now();
  LocalDeviceRenderStats& s = localStats_[index];
  const DeviceId id = localIds_[index];
  if (localFailed_[index]) return;
  if (!result.ok()) {
    s.error = result.error().message;
    PL_LOG_WARN("local device %zu (%s): %s", index, s.info.name.c_str(), s.error.c_str());
    localFailed_[index] = true;
    scheduler_.deviceLost(id, t);
    devices_.erase(uint64_t(id));
    pump();
    return;
  }
  if (scheduler_.complete(id, unit, t)) {
    s.workUnits += 1;
    s.samples += unit.tile.pixelCount() * unit.sampleCount();
    s.raysTraced += result->raysTraced;
    accept(*result);
  } else {
    s.duplicateResults += 1;
  }
  pump();
  checkDone();
}

void ClusterRender::accept(const TileResult& result) {
  if (Status st = film_.add(result); !st.ok()) {
    fatal("merging " + result.unit.describe() + ": " + st.error().message);
    return;
  }
  reportProgress();
}

void ClusterRender::checkDone() {
  if (finished_ || !scheduler_.done()) return;
  finished_ = true;
  finishSeconds_ = secondsBetween(callStart_, now());
  loop_.stop();
}

ClusterRenderStats ClusterRender::snapshot() const {
  ClusterRenderStats stats;
  stats.seconds = secondsBetween(callStart_, now());
  stats.scheduler = scheduler_.stats();
  stats.local = localStats_;
  for (const Peer& peer : peers_) stats.nodes.push_back(peer.stats);
  for (const auto& d : stats.local) {
    stats.samples += d.samples;
    stats.raysTraced += d.raysTraced;
  }
  for (const auto& n : stats.nodes) {
    stats.samples += n.samples;
    stats.raysTraced += n.raysTraced;
  }
  stats.renderDataChunks = chunkHashes_.size();
  stats.renderDataRawBytes = manifest_.rawBytes();
  stats.renderDataEncodedBytes = manifest_.encodedBytes();
  stats.encodeSeconds = encodeSeconds_;
  return stats;
}

void ClusterRender::reportProgress() {
  if (!progress_) return;
  progress_(snapshot(), scheduler_.acceptedWork(), scheduler_.totalWork());
}

}  // namespace

Result<ClusterRenderStats> renderCluster(const RenderData& data, Film& film,
                                         const ClusterRenderOptions& options,
                                         const ClusterProgressCallback& progress) {
  if (Status s = Scheduler::validateFrame(FrameSpec{film.width(), film.height(),
                                                    film.samplesPerPixel(),
                                                    options.tileSize});
      !s.ok())
    return s.error();
  UvKjLoop loop;
  Result<ClusterRenderStats> result = Error{"render did not run"};
  {
    ClusterRender render(loop, data, film, options, progress);
    try {
      result = render.run();
    } catch (kj::Exception& e) {
      result = Error{"render: " + describe(e)};
    }
  }
  return result;
}

}  // namespace pl
