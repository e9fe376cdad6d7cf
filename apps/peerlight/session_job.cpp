#include "apps/peerlight/session_job.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include <kj/debug.h>

#include "core/util/log.h"
#include "transport/chunk_codec.h"
#include "transport/control_convert.h"
#include "transport/control_film.h"
#include "transport/render_session.h"
#include "transport/session_films.h"
#include "transport/uv_kj_loop.h"

namespace pl::app {

namespace {

// What each chunk costs against the session's bound at least (the store's own bytes per entry).
constexpr uint64_t kChunkCharge = 512;

// A chunk name on the socket: Hash128's lo then hi, little-endian (16 bytes).
Hash128 hashOf(capnp::Data::Reader bytes) {
  KJ_REQUIRE(bytes.size() == sizeof(Hash128), "session: a chunk name is 16 bytes", bytes.size());
  Hash128 h;
  std::memcpy(&h, bytes.begin(), sizeof h);
  return h;
}

// An encoded chunk holds at most kMaxChunkBytes of raw bytes; zstd may grow incompressible
// bytes a little, and the header adds 4.
constexpr size_t kMaxEncodedChunkBytes = kMaxChunkBytes + kMaxChunkBytes / 64 + 1024;

}  // namespace

struct SessionJob::State final : private kj::TaskSet::ErrorHandler {
  enum FilmUse { kPassFilm = 0, kSaveFilm = 1 };

  ClusterRenderOptions options;
  Limits limits;
  ctl::SessionListener::Client listener;
  kj::Own<void> slot;
  std::function<void()> onEnd;
  // Every chunk the client sent (never erased while the session runs: generations' scenes hold
  // views of them), and what they are charged against Limits::chunkBytes.
  std::shared_ptr<ChunkStore> chunks = std::make_shared<ChunkStore>();
  uint64_t chunkCharge = 0;
  std::unique_ptr<SessionFilms> films;
  uint32_t unanswered = 0;  // listener calls not answered yet
  // Films handed to the client that it still holds, per use.
  std::vector<std::weak_ptr<const Film>> served[2];
  uint64_t lastPassGeneration = 0;  // the last pass sent to the listener
  uint32_t lastPassSpp = 0;
  bool ended = false;
  std::string endMessage;
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);
  kj::TaskSet calls{*this};
  kj::Promise<void> firstUpdate = nullptr;  // the deadline for the first update()

  State(ClusterRenderOptions options, Limits limits, ctl::SessionListener::Client listener,
        kj::Own<void> slot, std::function<void()> onEnd)
      : options(std::move(options)), limits(std::move(limits)), listener(kj::mv(listener)),
        slot(kj::mv(slot)), onEnd(std::move(onEnd)) {}
  ~State() { *alive = false; }

  // A listener call; its answer (or its failure: the client went away) is only counted.
  template <typename Request>
  void send(Request&& request) {
    ++unanswered;
    calls.add(request.send().ignoreResult().then([this] { --unanswered; }));
  }
  void taskFailed(kj::Exception&& e) override {
    --unanswered;
    PL_LOG_DEBUG("session: a listener call failed: %s", e.getDescription().cStr());
  }
  // Whether the client may be handed one more film for `use` (it holds fewer than
  // kMaxHeldFilms of them).
  bool mayServe(FilmUse use, const std::shared_ptr<const Film>& film = nullptr) {
    std::erase_if(served[use], [](const std::weak_ptr<const Film>& f) { return f.expired(); });
    if (film != nullptr && std::any_of(served[use].begin(), served[use].end(),
                                       [&](const std::weak_ptr<const Film>& f) {
                                         return f.lock() == film;
                                       }))
      return true;  // held already: no new copy
    return served[use].size() < kMaxHeldFilms;
  }
  ctl::FilmData::Client serve(FilmUse use, std::shared_ptr<const Film> film) {
    // One film shared by several saves (SessionFilms::settle) is held once.
    if (std::none_of(served[use].begin(), served[use].end(),
                     [&](const std::weak_ptr<const Film>& f) { return f.lock() == film; }))
      served[use].push_back(film);
    return serveFilm(std::move(film));
  }
  void callEnd() {
    if (!onEnd) return;
    auto callback = std::move(onEnd);
    onEnd = nullptr;
    callback();
  }
};

SessionJob::SessionJob(UvKjLoop& loop, ClusterRenderOptions options,
                       ControlSessionRequest request, Limits limits,
                       ctl::SessionListener::Client listener, kj::Own<void> slot,
                       std::function<void()> onEnd)
    : loop_(loop),
      label_("session " + request.token.substr(0, 8)),
      request_(std::move(request)),
      state_(std::make_unique<State>(std::move(options), std::move(limits), kj::mv(listener),
                                     kj::mv(slot), std::move(onEnd))) {
  // A session that never gets its scene gives its slot and reservation back.
  state_->firstUpdate = loop.timer()
                            .afterDelay(kFirstUpdateSeconds * kj::SECONDS)
                            .then([this] {
                              if (session_ == nullptr)
                                end(ctl::Outcome::FAILED,
                                    "session ended: no scene within " +
                                        std::to_string(kFirstUpdateSeconds) + " s");
                            })
                            .eagerlyEvaluate(nullptr);
}

SessionJob::~SessionJob() {
  state_->films.reset();
  session_.reset();  // its leases go with its connections; device threads are joined
  if (!state_->ended) PL_LOG_INFO("%s: the client went away; ended", label_.c_str());
  state_->callEnd();
}

void SessionJob::nodeFound(const std::string& address) {
  if (session_ != nullptr && !state_->ended) session_->addPeer(address);
}

void SessionJob::end(ctl::Outcome outcome, const std::string& message, bool now) {
  if (state_->ended) return;
  state_->ended = true;
  state_->endMessage = message;
  PL_LOG_INFO("%s ended: %s", label_.c_str(), message.c_str());
  auto request = state_->listener.endedRequest();
  request.setOutcome(outcome);
  request.setMessage(message);
  state_->send(kj::mv(request));
  state_->chunks.reset();  // freed with the generations' scenes that view them
  state_->slot = nullptr;  // the connection and its uid may open another session
  if (now) {
    state_->films.reset();
    session_.reset();
    state_->callEnd();
    return;
  }
  // Destroyed a turn later: this may run inside one of the session's own callbacks.
  auto films = std::make_shared<std::unique_ptr<SessionFilms>>(std::move(state_->films));
  auto session = std::make_shared<std::unique_ptr<RenderSession>>(std::move(session_));
  loop_.post([films, session] {
    films->reset();
    session->reset();
  });
  state_->callEnd();
}

kj::Promise<void> SessionJob::missing(MissingContext context) {
  KJ_REQUIRE(!state_->ended, "session: ended", state_->endMessage);
  auto hashes = context.getParams().getHashes();
  KJ_REQUIRE(hashes.size() <= kMaxMissingNames, "session: missing() of too many names",
             hashes.size());
  std::vector<uint32_t> lacking;
  for (uint32_t i = 0; i < hashes.size(); ++i)
    if (!state_->chunks->contains(hashOf(hashes[i]))) lacking.push_back(i);
  auto out = context.getResults().initMissing(unsigned(lacking.size()));
  for (size_t i = 0; i < lacking.size(); ++i) out.set(unsigned(i), lacking[i]);
  return kj::READY_NOW;
}

kj::Promise<void> SessionJob::put(PutContext context) {
  KJ_REQUIRE(!state_->ended, "session: ended", state_->endMessage);
  const Hash128 hash = hashOf(context.getParams().getHash());
  capnp::Data::Reader chunk = context.getParams().getChunk();
  KJ_REQUIRE(chunk.size() > 0 && chunk.size() <= kMaxEncodedChunkBytes,
             "session: a chunk of a bad size", chunk.size());
  if (state_->chunks->contains(hash)) return kj::READY_NOW;
  // Each chunk is charged at least kChunkCharge (the store's own bytes per entry), so that many
  // tiny chunks cannot hold more than the bound says.
  const uint64_t charge = std::max<uint64_t>(chunk.size(), kChunkCharge);
  KJ_REQUIRE(state_->chunkCharge + charge <= state_->limits.chunkBytes,
             "session: chunks beyond the session's bound (twice its declared data, and 16 MiB)",
             state_->limits.chunkBytes);
  state_->chunkCharge += charge;
  state_->chunks->put(hash, std::vector<uint8_t>(chunk.begin(), chunk.end()));
  return kj::READY_NOW;
}

namespace {

template <typename Results>
kj::Promise<void> refuse(const std::string& label, Results results, ctl::Outcome outcome,
                         const std::string& message) {
  PL_LOG_WARN("%s: %s refused: %s", label.c_str(), outcomeName(outcome), message.c_str());
  results.setOutcome(outcome);
  results.setMessage(message);
  return kj::READY_NOW;
}

}  // namespace

kj::Promise<void> SessionJob::update(UpdateContext context) {
  KJ_REQUIRE(!state_->ended, "session: ended", state_->endMessage);
  auto params = context.getParams();
  auto results = context.getResults();
  capnp::Data::Reader bytes = params.getManifest();
  Result<ChunkManifest> manifest = deserializeManifest(bytes.begin(), bytes.size());
  if (!manifest.ok())
    return refuse(label_, results, ctl::Outcome::BAD_DATA,
                  "session: manifest: " + manifest.error().message);
  if (const size_t lacking = state_->chunks->missing(*manifest).size(); lacking != 0)
    return refuse(label_, results, ctl::Outcome::BAD_DATA,
                  "session: the manifest names " + std::to_string(lacking) +
                      " chunk(s) this session does not hold (put them first)");
  auto encoded = std::make_shared<EncodedScene>();
  encoded->manifest = std::move(manifest).value();
  encoded->chunks.addViewsOf(*state_->chunks, state_->chunks);
  const SceneSource scene{nullptr, encoded};
  Result<kernel::Camera> camera = scene.camera();
  if (!camera.ok())
    return refuse(label_, results, ctl::Outcome::BAD_DATA, "session: " + camera.error().message);
  if (ControlOutcome fits = state_->limits.fit(*camera, encoded->manifest.rawBytes());
      !fits.ok())
    return refuse(label_, results, fits.outcome, fits.message);
  const uint32_t spp = params.getSpp();
  uint64_t generation = 0;
  if (session_ == nullptr) {
    // The session may outlive this object by a loop turn (end()): its events look first.
    RenderSessionEvents events;
    std::shared_ptr<bool> alive = state_->alive;
    events.onPass = [this, alive](uint64_t g, uint32_t s, double seconds) {
      if (*alive) onPass(g, s, seconds);
    };
    events.onNode = [this, alive](const NodeRenderStats& node, bool joined) {
      if (!*alive || state_->ended) return;
      auto request = state_->listener.nodeRequest();
      request.setAddress(node.address);
      request.setName(node.name);
      request.setJoined(joined);
      request.setReason(joined ? "" : node.error);
      state_->send(kj::mv(request));
    };
    events.onStopped = [this, alive](uint64_t g, uint32_t s, double seconds) {
      if (!*alive || state_->ended) return;
      state_->films->settle();
      // The pass it ended at, when the listener has not had it (a slow client's skipped one).
      if (state_->lastPassGeneration != g || state_->lastPassSpp != s) sendPass(g, s, seconds);
      if (state_->ended) return;  // sendPass() ended a session whose client answers nothing
      auto request = state_->listener.stoppedRequest();
      request.setGeneration(g);
      request.setSpp(s);
      request.setSeconds(seconds);
      state_->send(kj::mv(request));
    };
    events.onFatal = [this, alive](const std::string& message) {
      if (*alive) end(ctl::Outcome::FAILED, message);
    };
    session_ = std::make_unique<RenderSession>(loop_, state_->options, events);
    if (Status st = session_->start(scene, spp); !st.ok()) {
      session_.reset();
      return refuse(label_, results, ctl::Outcome::BAD_PARAMS, "session: " + st.error().message);
    }
    state_->films = std::make_unique<SessionFilms>(*session_);
    generation = session_->generation();
    PL_LOG_INFO("%s from %s (%s): %ux%u at %u spp, %llu bytes of chunks; this node is its "
                "Primary",
                label_.c_str(), request_.params.primaryName.c_str(), request_.who.c_str(),
                camera->width, camera->height, spp,
                (unsigned long long)state_->chunks->bytes());
  } else {
    Result<uint64_t> g = session_->update(scene, spp);
    if (!g.ok())
      return refuse(label_, results, ctl::Outcome::BAD_PARAMS, "session: " + g.error().message);
    generation = *g;
  }
  state_->films->settle();
  results.setOutcome(ctl::Outcome::OK);
  results.setGeneration(generation);
  return kj::READY_NOW;
}

kj::Promise<void> SessionJob::camera(CameraContext context) {
  KJ_REQUIRE(!state_->ended, "session: ended", state_->endMessage);
  KJ_REQUIRE(session_ != nullptr, "session: camera() before the first update()");
  auto params = context.getParams();
  auto results = context.getResults();
  capnp::Data::Reader bytes = params.getCamera();
  if (bytes.size() != sizeof(kernel::Camera))
    return refuse(label_, results, ctl::Outcome::BAD_PARAMS,
                  "session: a camera of " + std::to_string(bytes.size()) + " bytes (not " +
                      std::to_string(sizeof(kernel::Camera)) + ")");
  kernel::Camera camera;
  std::memcpy(&camera, bytes.begin(), sizeof camera);
  if (Status st = validateCamera(camera); !st.ok())
    return refuse(label_, results, ctl::Outcome::BAD_PARAMS, "session: " + st.error().message);
  if (ControlOutcome fits = state_->limits.fit(camera, 0); !fits.ok())
    return refuse(label_, results, fits.outcome, fits.message);
  if (Status st = session_->checkFrame(camera, params.getSpp()); !st.ok())
    return refuse(label_, results, ctl::Outcome::BAD_PARAMS, "session: " + st.error().message);
  results.setGeneration(session_->updateCamera(camera, params.getSpp()));
  state_->films->settle();
  results.setOutcome(ctl::Outcome::OK);
  return kj::READY_NOW;
}

kj::Promise<void> SessionJob::restart(RestartContext context) {
  KJ_REQUIRE(!state_->ended, "session: ended", state_->endMessage);
  KJ_REQUIRE(session_ != nullptr, "session: restart() before the first update()");
  const uint32_t spp = context.getParams().getSpp();
  auto results = context.getResults();
  if (Status st = session_->checkFrame(session_->camera(), spp); !st.ok())
    return refuse(label_, results, ctl::Outcome::BAD_PARAMS, "session: " + st.error().message);
  results.setGeneration(session_->restart(spp));
  state_->films->settle();
  results.setOutcome(ctl::Outcome::OK);
  return kj::READY_NOW;
}

kj::Promise<void> SessionJob::peer(PeerContext context) {
  KJ_REQUIRE(!state_->ended, "session: ended", state_->endMessage);
  KJ_REQUIRE(session_ != nullptr, "session: peer() before the first update()");
  const auto address = context.getParams().getAddress();
  KJ_REQUIRE(address.size() <= kMaxRenderJobNameBytes, "session: an address too long");
  auto results = context.getResults();
  if (!session_->addPeer(std::string(address.cStr(), address.size())))
    return refuse(label_, results, ctl::Outcome::BAD_PARAMS,
                  "session: '" + std::string(address.cStr()) +
                      "' is not HOST:PORT, or the daemon has no cluster key");
  results.setOutcome(ctl::Outcome::OK);
  return kj::READY_NOW;
}

kj::Promise<void> SessionJob::stats(StatsContext context) {
  ClusterRenderStats stats;
  if (session_ != nullptr) stats = session_->stats();
  toControl(stats, context.getResults().initStats());
  return kj::READY_NOW;
}

kj::Promise<void> SessionJob::filmAt(FilmAtContext context) {
  KJ_REQUIRE(!state_->ended, "session: ended", state_->endMessage);
  KJ_REQUIRE(session_ != nullptr, "session: filmAt() before the first update()");
  KJ_REQUIRE(state_->films->waiting() < kMaxWaitingFilms, "session: too many filmAt() waiting",
             kMaxWaitingFilms);
  context.allowCancellation();
  auto params = context.getParams();
  State& state = *state_;
  return state_->films->at(params.getGeneration(), params.getSpp())
      .then([context, &state](SessionFilm f) mutable {
        auto results = context.getResults();
        if (f.outcome == SessionFilm::Outcome::ok && !state.mayServe(State::kSaveFilm, f.film)) {
          f.outcome = SessionFilm::Outcome::refused;
          f.message = "the client holds " + std::to_string(kMaxHeldFilms) + " films already";
        }
        switch (f.outcome) {
          case SessionFilm::Outcome::ok:
            results.setOutcome(ctl::Outcome::OK);
            toControl(*f.film, f.generation, results.initFilm());
            results.setData(state.serve(State::kSaveFilm, std::move(f.film)));
            return;
          case SessionFilm::Outcome::replaced:
            results.setOutcome(ctl::Outcome::CANCELLED);
            break;
          case SessionFilm::Outcome::passed:
            results.setOutcome(ctl::Outcome::PASSED);
            break;
          case SessionFilm::Outcome::stopped:
            results.setOutcome(ctl::Outcome::FAILED);
            break;
          case SessionFilm::Outcome::refused:
            results.setOutcome(ctl::Outcome::BUSY);
            break;
        }
        results.setMessage(f.message);
      });
}

void SessionJob::onPass(uint64_t generation, uint32_t spp, double seconds) {
  if (state_->ended) return;  // the session goes a turn later
  state_->films->settle();
  if (state_->unanswered >= kMaxUnansweredCalls && spp != session_->targetSpp())
    return;  // a slow client: it gets a later pass
  sendPass(generation, spp, seconds);
}

void SessionJob::sendPass(uint64_t generation, uint32_t spp, double seconds) {
  if (state_->unanswered >= kMaxUnansweredHard)
    return end(ctl::Outcome::FAILED, "session ended: the client answers none of its events (" +
                                         std::to_string(kMaxUnansweredHard) + " waiting)");
  auto request = state_->listener.passRequest();
  request.setGeneration(generation);
  request.setSpp(spp);
  request.setTargetSpp(session_->targetSpp());
  request.setWidth(session_->film().width());
  request.setHeight(session_->film().height());
  request.setSeconds(seconds);
  const std::vector<std::pair<std::string, uint64_t>> shares = session_->shares();
  auto list = request.initShares(unsigned(shares.size()));
  for (size_t i = 0; i < shares.size(); ++i) {
    list[unsigned(i)].setSource(shares[i].first);
    list[unsigned(i)].setSamples(shares[i].second);
  }
  request.setRetiredPixels(session_->film().retiredPixels());
  if (request_.passFilms && state_->mayServe(State::kPassFilm)) {
    auto film = std::make_shared<const Film>(session_->film().snapshot());
    toControl(*film, generation, request.initFilm());
    request.setData(state_->serve(State::kPassFilm, std::move(film)));
  }
  state_->lastPassGeneration = generation;
  state_->lastPassSpp = spp;
  state_->send(kj::mv(request));
}

}  // namespace pl::app
