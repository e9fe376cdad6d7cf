#include "apps/peerlight/daemon_session.h"

#include <kj/debug.h>

#include <cstring>
#include <vector>

#include "core/cluster/scheduler.h"
#include "core/util/log.h"
#include "transport/chunk_codec.h"
#include "transport/control_client.h"
#include "transport/control_film.h"
#include "transport/protocol_convert.h"
#include "transport/uv_kj_loop.h"

namespace pl::app {

namespace {

std::string describe(const kj::Exception& e) { return e.getDescription().cStr(); }

capnp::Data::Reader nameOf(const Hash128& hash) {
  return capnp::Data::Reader(reinterpret_cast<const uint8_t*>(&hash), sizeof hash);
}

}  // namespace

struct DaemonSession::Impl final : private kj::TaskSet::ErrorHandler {
  class Listener;

  std::unique_ptr<ControlConnection> connection;
  ctl::SessionJob::Client job = nullptr;
  SessionBackendEvents events;
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);
  // The current generation as this process knows it.
  uint64_t generation = 0;
  uint32_t target = 0;
  uint32_t committed = 0;
  bool stopped = false;
  const uint32_t firstPassSamples = interactiveSchedulerOptions().firstPassSamples;
  // Every chunk encoded here (a later edit compresses only what changed) and the current
  // scene's manifest (a camera move keeps it).
  ChunkStore store;
  bool failed = false;
  std::string failure;  // why, once failed
  bool opened = false;  // open() returned it: failures go to events.onFatal from now on
  // Calls to the daemon, one after another; events from it, one after another.
  kj::Promise<void> outgoing = kj::READY_NOW;
  // Held until deliverEvents(): the caller's `ready` line goes first.
  kj::PromiseFulfillerPair<void> gate = kj::newPromiseAndFulfiller<void>();
  kj::Promise<void> incoming = kj::mv(gate.promise);
  kj::Promise<void> disconnect = kj::READY_NOW;

  ~Impl() { *alive = false; }

  void fatal(const std::string& message) {
    if (failed) return;
    failed = true;
    failure = message;
    if (opened && events.onFatal) events.onFatal(message);
  }

  // Runs `step` (() -> kj::Promise<void>) once every call before it has been answered.
  template <typename Step>
  void enqueue(Step&& step) {
    outgoing = outgoing.then(kj::fwd<Step>(step)).eagerlyEvaluate([this](kj::Exception&& e) {
      fatal("the node daemon's session: " + describe(e));
    });
  }

  // Sends a call whose answer later calls need not wait for (stats, filmAt, peer) in its turn:
  // once every call made before it has been answered. `send` () -> kj::Promise<T>.
  kj::TaskSet answers{*this};
  template <typename T, typename Send>
  kj::Promise<T> inTurn(Send&& send) {
    auto paf = kj::newPromiseAndFulfiller<T>();
    enqueue([this, send = kj::fwd<Send>(send),
             done = kj::mv(paf.fulfiller)]() mutable -> kj::Promise<void> {
      answers.add(send().then([done = kj::mv(done)](T value) mutable {
        done->fulfill(kj::mv(value));
      }));
      return kj::READY_NOW;
    });
    return kj::mv(paf.promise);
  }
  void taskFailed(kj::Exception&& e) override {
    fatal("the node daemon's session: " + describe(e));
  }

  void newGeneration(uint32_t spp) {
    ++generation;
    target = spp;
    committed = 0;
    stopped = false;
  }

  // Checks the daemon's answer to a call that started generation `expected`.
  template <typename Reply>
  void checkStarted(const Reply& reply, uint64_t expected) {
    if (reply.getOutcome() != ctl::Outcome::OK)
      return fatal("the node daemon refused generation " + std::to_string(expected) + " (" +
                   outcomeName(reply.getOutcome()) + "): " + reply.getMessage().cStr());
    if (reply.getGeneration() != expected)
      fatal("the node daemon started generation " + std::to_string(reply.getGeneration()) +
            ", not " + std::to_string(expected));
  }

  // The chunks of `manifest` that the daemon lacks, then the manifest: generation `expected`.
  kj::Promise<void> upload(ChunkManifest manifest, uint32_t spp, uint64_t expected) {
    auto hashes = std::make_shared<std::vector<Hash128>>(manifest.chunkHashes());
    KJ_REQUIRE(hashes->size() <= 65536, "a scene of more than 65536 chunks", hashes->size());
    auto ask = job.missingRequest();
    auto list = ask.initHashes(unsigned(hashes->size()));
    for (size_t i = 0; i < hashes->size(); ++i) list.set(unsigned(i), nameOf((*hashes)[i]));
    return ask.send()
        .then([this, hashes](auto reply) {
          auto lacking = std::make_shared<std::vector<Hash128>>();
          for (uint32_t i : reply.getMissing()) {
            KJ_REQUIRE(i < hashes->size(), "missing(): an index beyond the list", i);
            lacking->push_back((*hashes)[i]);
          }
          return put(lacking, 0);
        })
        .then([this, manifest = std::move(manifest), spp, expected]() {
          auto request = job.updateRequest();
          const std::vector<uint8_t> bytes = serializeManifest(manifest);
          request.setManifest(capnp::Data::Reader(bytes.data(), bytes.size()));
          request.setSpp(spp);
          return request.send().then(
              [this, expected](auto reply) { checkStarted(reply, expected); });
        });
  }

  // Puts (*chunks)[i...], one stream call each (flow control paces them).
  kj::Promise<void> put(std::shared_ptr<std::vector<Hash128>> chunks, size_t i) {
    if (i == chunks->size()) return kj::READY_NOW;
    const Hash128& hash = (*chunks)[i];
    std::optional<std::span<const uint8_t>> bytes = store.find(hash);
    KJ_ASSERT(bytes.has_value());
    auto request = job.putRequest();
    request.setHash(nameOf(hash));
    if (referenceableBytes(bytes->data(), bytes->size())) {
      capnp::Orphanage orphanage = capnp::Orphanage::getForMessageContaining(
          ctl::SessionJob::PutParams::Builder(request));
      request.adoptChunk(
          orphanage.referenceExternalData(capnp::Data::Reader(bytes->data(), bytes->size())));
    } else {
      request.setChunk(capnp::Data::Reader(bytes->data(), bytes->size()));
    }
    return request.send().then([this, chunks, i] { return put(chunks, i + 1); });
  }

  // Runs `step` on each event from the daemon in order; the call is answered once it is done
  // (so that the daemon's count of calls ahead is the client's backlog).
  template <typename Step>
  kj::Promise<void> deliver(Step&& step) {
    auto paf = kj::newPromiseAndFulfiller<void>();
    incoming = incoming
                   .then([step = kj::fwd<Step>(step), done = kj::mv(paf.fulfiller)]() mutable {
                     return step().then([done = kj::mv(done)]() mutable { done->fulfill(); });
                   })
                   .eagerlyEvaluate([this](kj::Exception&& e) {
                     fatal("the node daemon's session: " + describe(e));
                   });
    return kj::mv(paf.promise);
  }

  void passArrived(SessionPassEvent pass) {
    if (pass.generation != generation) return;  // replaced already
    committed = pass.spp;
    if (events.onPass) events.onPass(pass);
  }
};

class DaemonSession::Impl::Listener final : public ctl::SessionListener::Server {
 public:
  Listener(Impl& impl) : impl_(impl), alive_(impl.alive) {}

 protected:
  kj::Promise<void> pass(PassContext context) override {
    if (!*alive_) return kj::READY_NOW;
    auto p = context.getParams();
    SessionPassEvent pass;
    pass.generation = p.getGeneration();
    pass.spp = p.getSpp();
    pass.targetSpp = p.getTargetSpp();
    pass.width = p.getWidth();
    pass.height = p.getHeight();
    pass.seconds = p.getSeconds();
    for (auto share : p.getShares())
      pass.shares.emplace_back(share.getSource().cStr(), share.getSamples());
    pass.retiredPixels = p.getRetiredPixels();
    kj::Maybe<kj::Promise<Result<Film>>> film;
    if (p.hasData()) film = readFilm(p.getFilm(), p.getData());
    Impl& impl = impl_;
    return impl.deliver([&impl, pass = std::move(pass),
                         film = kj::mv(film)]() mutable -> kj::Promise<void> {
      KJ_IF_MAYBE(f, film) {
        return kj::mv(*f).then([&impl, pass = std::move(pass)](Result<Film> read) mutable {
          if (read.ok()) pass.film = std::make_shared<const Film>(std::move(read).value());
          else PL_LOG_WARN("session: pass %u: %s", pass.spp, read.error().message.c_str());
          impl.passArrived(std::move(pass));
        });
      }
      impl.passArrived(std::move(pass));
      return kj::READY_NOW;
    });
  }

  kj::Promise<void> node(NodeContext context) override {
    if (!*alive_) return kj::READY_NOW;
    auto p = context.getParams();
    NodeRenderStats node;
    node.address = p.getAddress().cStr();
    node.name = p.getName().cStr();
    node.error = p.getReason().cStr();
    const bool joined = p.getJoined();
    Impl& impl = impl_;
    return impl.deliver([&impl, node = std::move(node), joined]() -> kj::Promise<void> {
      if (impl.events.onNode) impl.events.onNode(node, joined);
      return kj::READY_NOW;
    });
  }

  kj::Promise<void> stopped(StoppedContext context) override {
    if (!*alive_) return kj::READY_NOW;
    auto p = context.getParams();
    const uint64_t generation = p.getGeneration();
    const uint32_t spp = p.getSpp();
    const double seconds = p.getSeconds();
    Impl& impl = impl_;
    return impl.deliver([&impl, generation, spp, seconds]() -> kj::Promise<void> {
      if (generation != impl.generation) return kj::READY_NOW;
      impl.stopped = true;
      impl.committed = spp;
      if (impl.events.onStopped) impl.events.onStopped(generation, spp, seconds);
      return kj::READY_NOW;
    });
  }

  kj::Promise<void> ended(EndedContext context) override {
    if (!*alive_) return kj::READY_NOW;
    std::string message = context.getParams().getMessage().cStr();
    Impl& impl = impl_;
    return impl.deliver([&impl, message = std::move(message)]() -> kj::Promise<void> {
      impl.fatal("the node daemon ended the session: " + message);
      return kj::READY_NOW;
    });
  }

 private:
  Impl& impl_;
  std::shared_ptr<bool> alive_;
};

Result<std::unique_ptr<DaemonSession>> DaemonSession::open(
    UvKjLoop& loop, const std::string& path, const std::string& token,
    const RenderJobParams& params, const SceneSource& scene, uint32_t spp, bool passFilms,
    SessionBackendEvents events, bool* refused) {
  const std::string where = "node daemon at " + path;
  *refused = true;
  if (!validControlToken(token)) return Error{where + ": invalid session token"};
  Result<std::unique_ptr<ControlConnection>> connection = ControlConnection::open(loop, path);
  if (!connection.ok()) return connection.error();
  auto impl = std::make_unique<Impl>();
  impl->connection = std::move(connection).value();
  impl->events = std::move(events);
  // The scene's chunks: as they came from the compiled cache, else encoded now.
  ChunkManifest manifest;
  if (scene.encoded != nullptr) {
    impl->store.addViewsOf(scene.encoded->chunks, scene.encoded);
    manifest = scene.encoded->manifest;
  } else {
    manifest = encodeRenderData(*scene.data, impl->store);
  }
  kj::WaitScope& waitScope = loop.waitScope();
  try {
    auto request = impl->connection->control().sessionRequest();
    auto r = request.initRequest();
    r.setToken(token);
    toControl(params, r.initParams());
    r.setDataBytes(std::max<uint64_t>(manifest.encodedBytes(), 1));
    r.setPassFilms(passFilms);
    request.setListener(kj::heap<Impl::Listener>(*impl));
    auto reply = request.send().wait(waitScope);
    if (reply.getOutcome() != ctl::Outcome::OK)
      return Error{where + ": refused (" + std::string(outcomeName(reply.getOutcome())) +
                   "): " + reply.getMessage().cStr()};
    impl->job = reply.getJob();
    // Generation 1: the chunks the daemon lacks, then the manifest. A refusal here is still the
    // caller's to answer by rendering itself.
    impl->newGeneration(spp);
    impl->upload(std::move(manifest), spp, 1).wait(waitScope);
    if (impl->failed) return Error{where + ": " + impl->failure};
  } catch (const kj::Exception& e) {
    return Error{where + ": " + describe(e)};
  }
  *refused = false;
  impl->opened = true;
  return std::unique_ptr<DaemonSession>(new DaemonSession(std::move(impl)));
}

DaemonSession::DaemonSession(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {
  // A daemon that goes away ends the session.
  Impl& i = *impl_;
  impl_->disconnect = impl_->connection->onDisconnect()
                          .then([&i] { i.fatal("the node daemon closed the connection"); })
                          .eagerlyEvaluate([&i](kj::Exception&& e) {
                            i.fatal("the connection to the node daemon broke: " + describe(e));
                          });
}

DaemonSession::~DaemonSession() = default;

void DaemonSession::deliverEvents() { impl_->gate.fulfiller->fulfill(); }

uint64_t DaemonSession::generation() const { return impl_->generation; }
uint32_t DaemonSession::targetSpp() const { return impl_->target; }
uint32_t DaemonSession::committedSamples() const { return impl_->committed; }
bool DaemonSession::generationDone() const { return impl_->committed == impl_->target; }
bool DaemonSession::generationFinished() const {
  return generationDone() || impl_->stopped;
}
bool DaemonSession::willReach(uint32_t spp) const {
  // As RenderSession::willReach() of the last pass heard of; the daemon may be further on
  // already (its filmAt() then answers `passed`, and the caller restarts).
  const Impl& i = *impl_;
  if (i.committed == spp) return true;
  return !i.stopped && spp > i.committed && passEndsAt(i.target, i.firstPassSamples, spp);
}

uint64_t DaemonSession::update(std::shared_ptr<const RenderData> data, uint32_t spp) {
  Impl& i = *impl_;
  i.newGeneration(spp);
  ChunkManifest manifest = encodeRenderData(*data, i.store);
  i.enqueue([&i, manifest = std::move(manifest), spp, expected = i.generation]() mutable {
    return i.upload(std::move(manifest), spp, expected);
  });
  return i.generation;
}

uint64_t DaemonSession::updateCamera(const kernel::Camera& camera, uint32_t spp) {
  Impl& i = *impl_;
  i.newGeneration(spp);
  i.enqueue([&i, camera, spp, expected = i.generation] {
    auto request = i.job.cameraRequest();
    request.setCamera(
        capnp::Data::Reader(reinterpret_cast<const uint8_t*>(&camera), sizeof camera));
    request.setSpp(spp);
    return request.send().then([&i, expected](auto reply) { i.checkStarted(reply, expected); });
  });
  return i.generation;
}

uint64_t DaemonSession::restart(uint32_t spp) {
  Impl& i = *impl_;
  i.newGeneration(spp);
  i.enqueue([&i, spp, expected = i.generation] {
    auto request = i.job.restartRequest();
    request.setSpp(spp);
    return request.send().then([&i, expected](auto reply) { i.checkStarted(reply, expected); });
  });
  return i.generation;
}

kj::Promise<Status> DaemonSession::addPeer(const std::string& address) {
  Impl& i = *impl_;
  return i.inTurn<Status>([&i, address] {
    auto request = i.job.peerRequest();
    request.setAddress(address);
    // A refusal, or a call the daemon fails (an address beyond its bound), is this request's
    // error; the session goes on.
    return request.send().then(
        [](auto reply) {
          return reply.getOutcome() == ctl::Outcome::OK
                     ? Status()
                     : Status(Error{reply.getMessage().cStr()});
        },
        [](kj::Exception&& e) { return Status(Error{describe(e)}); });
  });
}

kj::Promise<ClusterRenderStats> DaemonSession::stats() {
  Impl& i = *impl_;
  return i.inTurn<ClusterRenderStats>([&i] {
    return i.job.statsRequest().send().then(
        [](auto reply) { return fromControl(reply.getStats()); });
  });
}

kj::Promise<SessionFilm> DaemonSession::filmAt(uint64_t generation, uint32_t spp) {
  Impl& i = *impl_;
  return i.inTurn<SessionFilm>([&i, generation, spp] {
    auto request = i.job.filmAtRequest();
    request.setGeneration(generation);
    request.setSpp(spp);
    return request.send().then([generation](auto reply) -> kj::Promise<SessionFilm> {
      SessionFilm out;
      out.generation = generation;
      out.message = reply.getMessage().cStr();
      switch (reply.getOutcome()) {
        case ctl::Outcome::OK:
          break;
        case ctl::Outcome::CANCELLED:
          out.outcome = SessionFilm::Outcome::replaced;
          return kj::mv(out);
        case ctl::Outcome::PASSED:
          out.outcome = SessionFilm::Outcome::passed;
          return kj::mv(out);
        case ctl::Outcome::FAILED:
          out.outcome = SessionFilm::Outcome::stopped;
          return kj::mv(out);
        default:
          out.outcome = SessionFilm::Outcome::refused;
          return kj::mv(out);
      }
      out.spp = reply.getFilm().getSpp();
      return readFilm(reply.getFilm(), reply.getData())
          .then([out = kj::mv(out)](Result<Film> film) mutable {
            if (!film.ok()) {
              out.outcome = SessionFilm::Outcome::refused;
              out.message = film.error().message;
            } else {
              out.film = std::make_shared<const Film>(std::move(film).value());
            }
            return kj::mv(out);
          });
    });
  });
}

std::string DaemonSession::where() const {
  return "the node daemon at " + impl_->connection->path();
}

}  // namespace pl::app
