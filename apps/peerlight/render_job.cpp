#include "apps/peerlight/render_job.h"

#include <algorithm>
#include <chrono>
#include <list>

#include "apps/peerlight/session_job.h"
#include "core/cluster/memory_budget.h"
#include "core/render/film.h"
#include "core/scene/render_data.h"
#include "core/util/log.h"
#include "discovery/peer_watch.h"
#include "transport/node_service.h"
#include "transport/render_session.h"
#include "transport/uv_kj_loop.h"

namespace pl::app {

using Clock = std::chrono::steady_clock;

namespace {

// A session's chunks may add up to twice its declared data and this much more (each chunk is
// charged at least 512 bytes: a scene of many small arrays needs the room).
constexpr uint64_t kSessionChunkSlack = uint64_t(16) << 20;

ControlOutcome refusal(ctl::Outcome outcome, std::string message) {
  return ControlOutcome{outcome, std::move(message)};
}

}  // namespace

struct RenderJobs::Impl {
  struct Running {
    std::shared_ptr<ControlRenderJob> job;
    RenderJobParams params;
    std::string label;   // "render job <token prefix>" for the log
    bool owner = false;  // announced as the owner job on the node
    std::unique_ptr<RenderSession> session;
    Clock::time_point lastProgress{};
    bool over = false;  // done, failed or cancelled: being taken down
    bool mdns = false;  // takes the nodes that mDNS finds
    uint64_t serial = 0;  // names its reservation in the memory budget
  };

  // A session held for a control-socket client; the SessionJob itself is its capability's.
  struct HeldSession {
    SessionJob* job;
    uint64_t serial;    // its reservation in the memory budget
    bool owner = false;  // announced as the owner job on the node
    bool mdns = false;
  };

  UvKjLoop& loop;
  NodeService& node;
  ClusterKey key;
  PeerWatch* watch;
  MemoryBudget* budget;  // may be null
  uint64_t nextSerial = 1;
  std::list<std::unique_ptr<Running>> jobs;
  std::list<HeldSession> sessions;
  std::function<void()> whenIdle;
  bool stopping = false;  // cancelAll() was called: no new jobs
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);

  Impl(UvKjLoop& loop, NodeService& node, ClusterKey key, PeerWatch* watch, MemoryBudget* budget)
      : loop(loop), node(node), key(std::move(key)), watch(watch), budget(budget) {}

  ~Impl() {
    *alive = false;
    for (HeldSession& h : sessions) {
      h.job->end(ctl::Outcome::SHUTTING_DOWN, "the node daemon is shutting down",
                 /*now=*/true);
      released(h.owner, h.job->request().token, h.serial);
    }
    for (auto& r : jobs) {
      r->session.reset();
      released(r->owner, r->job->token(), r->serial);
    }
  }

  // What a job and a session are both checked for before their data travels: the frame, the
  // devices, the film's size (colour only: passes are known once the data has come), a daemon
  // that stops. `what`: "render job" or "session", for the messages.
  ControlOutcome checkParams(const RenderJobParams& p, const std::string& what) const {
    FrameSpec frame{p.width, p.height, p.spp, 64};
    frame.region = p.region;
    if (Status s = Scheduler::validateFrame(frame); !s.ok())
      return refusal(ctl::Outcome::BAD_PARAMS, what + ": " + s.error().message);
    if (p.localOnly && p.noLocal)
      return refusal(ctl::Outcome::BAD_PARAMS, what + ": localOnly and noLocal both set");
    if (ControlOutcome big =
            filmSize(p.width, p.height, kernel::kBeautyChannels, what);
        !big.ok())
      return big;
    if (stopping) return refusal(ctl::Outcome::SHUTTING_DOWN, "the node daemon is shutting down");
    return ControlOutcome{};
  }

  ControlOutcome admit(const RenderJobParams& p, uint64_t dataBytes) const {
    if (ControlOutcome checked = checkParams(p, "render job"); !checked.ok()) return checked;
    if (jobs.size() >= kMaxJobs)
      return refusal(ctl::Outcome::BUSY,
                     "busy: " + std::to_string(jobs.size()) + " render jobs run on this node");
    // The memory budget, as it stands now (start() reserves, once the passes are known).
    const uint64_t bytes = memoryOf(p, dataBytes, kernel::kBeautyChannels);
    if (budget != nullptr) {
      MemoryGrant assessed = budget->assess({MemoryHolder::Kind::RenderJob, nextSerial}, bytes);
      if (!assessed.granted)
        return refusal(ctl::Outcome::BUSY, "render job: " + budget->refusalText(assessed));
    }
    return ControlOutcome{};
  }

  // What a job holds in the daemon: its payload, and its film's sums twice (see filmSize()).
  static uint64_t memoryOf(const RenderJobParams& p, uint64_t dataBytes, uint32_t channels) {
    return dataBytes + 2 * uint64_t(p.width) * p.height * channels * sizeof(int64_t);
  }

  // The film's sums (24 bytes a pixel, 80 with passes) are held twice at the end (the
  // session's film and the copy the client reads): at most 8 GiB, so that an absurd frame is
  // refused before its data travels rather than failing an allocation later.
  static ControlOutcome filmSize(uint32_t width, uint32_t height, uint32_t channels,
                                 const std::string& what = "render job") {
    const uint64_t filmBytes = uint64_t(width) * height * channels * sizeof(int64_t);
    if (filmBytes > (uint64_t(4) << 30))
      return refusal(ctl::Outcome::TOO_LARGE,
                     what + ": a " + std::to_string(width) + "x" + std::to_string(height) +
                         " film needs " + std::to_string(filmBytes >> 20) + " MiB (" +
                         std::to_string(channels) + " values a pixel), more than this node "
                         "gives one " + what + " (4096 MiB)");
    return ControlOutcome{};
  }

  // A job's or session's end: its owner job on this node and its memory reservation go.
  void released(bool owner, const std::string& token, uint64_t serial) {
    if (owner) node.ownerJobEnded(token);
    if (budget != nullptr) budget->release({MemoryHolder::Kind::RenderJob, serial});
  }

  void start(std::shared_ptr<ControlRenderJob> job) {
    const std::string label = "render job " + job->token().substr(0, 8);
    // Checked again: jobs may have started, or the daemon begun to stop, during the upload.
    if (ControlOutcome admitted = admit(job->params(), job->payload().size()); !admitted.ok()) {
      PL_LOG_WARN("%s refused: %s", label.c_str(), admitted.message.c_str());
      job->fail(admitted.outcome, admitted.message);
      return;
    }
    // The scene in its encoded form (transport/chunk_codec.h), parsed here on the loop: its
    // manifest and chunk list are checked now (the payload is bounded by the control socket),
    // the chunks' contents when the node decodes them. Nothing is copied or re-encoded: the
    // session sends the chunks to the nodes as they came.
    auto payload = std::make_shared<std::vector<uint8_t>>(std::move(job->payload()));
    const size_t payloadBytes = payload->size();
    Result<EncodedScene> encoded = parseEncodedScene(*payload, payload);
    SceneSource scene;
    std::string bad;
    uint32_t channels = kernel::kBeautyChannels;
    if (!encoded.ok()) {
      bad = "render data: " + encoded.error().message;
    } else {
      scene.encoded = std::make_shared<const EncodedScene>(std::move(encoded).value());
      Result<kernel::Camera> camera = scene.camera();
      if (!camera.ok()) {
        bad = "render data: " + camera.error().message;
      } else if (camera->width != job->params().width ||
                 camera->height != job->params().height) {
        bad = "render data: camera of " + std::to_string(camera->width) + "x" +
              std::to_string(camera->height) + ", frame of " +
              std::to_string(job->params().width) + "x" + std::to_string(job->params().height);
      } else if (ControlOutcome big = filmSize(
                     job->params().width, job->params().height,
                     channels = kernel::filmChannels(camera->passes));
                 !big.ok()) {
        PL_LOG_WARN("%s refused: %s", label.c_str(), big.message.c_str());
        job->fail(big.outcome, big.message);
        return;
      }
    }
    if (!bad.empty()) {
      PL_LOG_WARN("%s refused: %s", label.c_str(), bad.c_str());
      job->fail(ctl::Outcome::BAD_DATA, bad);
      return;
    }
    const uint64_t serial = nextSerial++;
    if (budget != nullptr) {
      // Its payload and films, and the scene decoded for this machine's devices (their lease
      // is the job's own: it reserves nothing more).
      const uint64_t decoded = job->params().noLocal ? 0 : scene.encoded->manifest.rawBytes();
      const MemoryHolder holder{MemoryHolder::Kind::RenderJob, serial};
      MemoryGrant grant =
          budget->reserve(holder, memoryOf(job->params(), payloadBytes, channels) + decoded);
      if (!grant.granted) {
        const std::string why = "render job: " + budget->refusalText(grant);
        PL_LOG_WARN("%s refused: %s", label.c_str(), why.c_str());
        job->fail(ctl::Outcome::BUSY, why);
        return;
      }
      node.memoryEvicted(grant.evict);  // warm workers that made room
    }
    auto running = std::make_unique<Running>();
    Running* r = running.get();
    r->serial = serial;
    r->job = job;
    r->params = job->params();
    r->label = label;
    PL_LOG_INFO("%s from %s (uid %u): %ux%u at %u spp, %zu bytes of render data; this node is "
                "its Primary",
                label.c_str(), r->params.primaryName.c_str(), job->clientUid(), r->params.width,
                r->params.height, r->params.spp, payloadBytes);
    job->accept();
    jobs.push_back(std::move(running));
    if (!r->params.noLocal && !r->params.noOwnerPreempt) {
      // The machine's owner renders: remote leases on this machine's devices go now.
      node.ownerJobStarted(job->token());
      r->owner = true;
    }
    job->onDisconnect([this, r, alive = alive] {
      if (!*alive || r->over) return;
      PL_LOG_INFO("%s: the client went away; cancelling", r->label.c_str());
      finish(*r, ctl::Outcome::CANCELLED, "render cancelled: the client went away");
    });

    ClusterRenderOptions options = clusterOptions(r->params, job->token(), &r->mdns);
    RenderSessionEvents events;
    // Done at the frame's spp, or at the last complete pass when the time limit ends it.
    auto done = [this, r](uint32_t spp) {
      if (r->over) return;
      r->over = true;
      r->job->done(r->session->stats(/*finishing=*/true), r->session->film().committedSums(),
                   r->session->film().pixelSamples(), spp);
      end(*r, "");
    };
    events.onPass = [r, done](uint64_t, uint32_t spp, double) {
      if (spp == r->params.spp) done(spp);
    };
    events.onStopped = [done](uint64_t, uint32_t spp, double) { done(spp); };
    events.onFatal = [this, r](const std::string& message) {
      finish(*r, ctl::Outcome::FAILED, message);
    };
    events.onProgress = [this, r](uint64_t done, uint64_t total) {
      const Clock::time_point t = Clock::now();
      if (r->over || (done < total && t - r->lastProgress < std::chrono::milliseconds(200)))
        return;
      r->lastProgress = t;
      r->job->progress(done, total, r->session->stats());
    };
    r->session = std::make_unique<RenderSession>(loop, options, events);
    if (Status st = r->session->start(scene, r->params.spp); !st.ok())
      return finish(*r, ctl::Outcome::FAILED, st.error().message);
    // The client may have gone before onDisconnect() was set (nothing would tell us then).
    if (!job->connected()) {
      PL_LOG_INFO("%s: the client went away; cancelling", r->label.c_str());
      finish(*r, ctl::Outcome::CANCELLED, "render cancelled: the client went away");
    }
  }

  // The Primary's options for a job or session: this machine's devices through the daemon's
  // own node, in process (they render in its worker processes, leased as the owner's), the
  // peers, the key; `*mdns` set when it takes the nodes mDNS finds.
  ClusterRenderOptions clusterOptions(const RenderJobParams& p, const std::string& token,
                                      bool* mdns) {
    ClusterRenderOptions options;
    if (!p.noLocal) options.inProcessNode = [this] { return node.newTrustedNode("owner job"); };
    if (!p.localOnly) {
      options.peers = p.peers;
      // As in `peerlight render`: mDNS nodes when no --peer is given: those known now, and
      // those found later (nodeFound(), a discovery event on this loop).
      if (watch != nullptr && p.peers.empty() && !p.noMdns) {
        options.peers = watch->usableAddresses();
        *mdns = true;
      }
    }
    options.key = key;
    options.primaryName = p.primaryName;
    options.ownerToken = token;
    options.timeLimit = std::chrono::milliseconds(p.timeLimitMs);
    options.region = p.region;
    options.noiseThreshold = p.noiseThreshold;
    return options;
  }

  ControlSessionOpened openSession(ControlSessionRequest request,
                                   ctl::SessionListener::Client listener, kj::Own<void> slot) {
    const RenderJobParams& p = request.params;
    const std::string label = "session " + request.token.substr(0, 8);
    auto refused = [&](ctl::Outcome outcome, const std::string& why) {
      PL_LOG_WARN("%s refused: %s", label.c_str(), why.c_str());
      return ControlSessionOpened{refusal(outcome, why), nullptr};
    };
    if (ControlOutcome checked = checkParams(p, "session"); !checked.ok())
      return refused(checked.outcome, checked.message);
    if (sessions.size() >= kMaxSessions)
      return refused(ctl::Outcome::BUSY, "busy: " + std::to_string(sessions.size()) +
                                             " sessions run on this node");
    const uint64_t serial = nextSerial++;
    // What the session holds: its chunks, the scene decoded for this machine's devices (before
    // the first manifest, about 2.5 times its encoded size on our scenes: 3 reserved; then the
    // largest scene's raw size), and its films (the session's own with its passes in progress,
    // the copy a settle makes, and those the client holds: SessionJob::kMaxHeldFilms of each
    // use), grown when a generation needs more (limits.fit below).
    const uint64_t dataBytes = request.dataBytes;
    const uint64_t chunkBytes = 2 * dataBytes + kSessionChunkSlack;
    const bool local = !p.noLocal;
    struct Reserved {
      uint64_t film, scene;
    };
    auto sessionBytes = [chunkBytes, local](const Reserved& r) {
      return chunkBytes + (local ? r.scene : 0) + (4 + 2 * SessionJob::kMaxHeldFilms) * r.film;
    };
    auto reserved = std::make_shared<Reserved>(Reserved{
        uint64_t(p.width) * p.height * kernel::kBeautyChannels * sizeof(int64_t),
        3 * dataBytes});
    if (budget != nullptr) {
      MemoryGrant grant =
          budget->reserve({MemoryHolder::Kind::RenderJob, serial}, sessionBytes(*reserved));
      if (!grant.granted)
        return refused(ctl::Outcome::BUSY, "session: " + budget->refusalText(grant));
      node.memoryEvicted(grant.evict);  // warm workers that made room
    }
    HeldSession held{nullptr, serial};
    ClusterRenderOptions options = clusterOptions(p, request.token, &held.mdns);
    options.primaryName = p.primaryName + " (session)";
    options.scheduler = interactiveSchedulerOptions();  // the first pass after an update: fast
    options.noDeviceTimeout = std::chrono::milliseconds(0);  // a session waits for devices
    if (!p.noLocal && !p.noOwnerPreempt) {
      // The machine's owner renders: remote leases on this machine's devices go now.
      node.ownerJobStarted(request.token);
      held.owner = true;
    }
    SessionJob::Limits limits;
    limits.chunkBytes = chunkBytes;
    limits.fit = [this, serial, sessionBytes, reserved, alive = alive](
                     const kernel::Camera& camera, uint64_t sceneBytes) {
      if (ControlOutcome big = filmSize(camera.width, camera.height,
                                        kernel::filmChannels(camera.passes), "session");
          !big.ok())
        return big;
      Reserved want = *reserved;
      want.film = std::max<uint64_t>(want.film, uint64_t(camera.width) * camera.height *
                                                    kernel::filmChannels(camera.passes) *
                                                    sizeof(int64_t));
      want.scene = std::max(want.scene, sceneBytes);
      if (!*alive || sessionBytes(want) <= sessionBytes(*reserved) || budget == nullptr)
        return ControlOutcome{};
      MemoryGrant grant =
          budget->reserve({MemoryHolder::Kind::RenderJob, serial}, sessionBytes(want));
      if (!grant.granted) return refusal(ctl::Outcome::BUSY, budget->refusalText(grant));
      node.memoryEvicted(grant.evict);
      *reserved = want;
      return ControlOutcome{};
    };
    auto job = kj::heap<SessionJob>(loop, std::move(options), std::move(request), limits,
                                    kj::mv(listener), kj::mv(slot),
                                    [this, serial, alive = alive] {
                                      if (*alive) sessionEnded(serial);
                                    });
    held.job = job.get();
    sessions.push_back(held);
    PL_LOG_INFO("%s opened", label.c_str());
    return ControlSessionOpened{ControlOutcome{}, ctl::SessionJob::Client(kj::mv(job))};
  }

  void sessionEnded(uint64_t serial) {
    auto it = std::find_if(sessions.begin(), sessions.end(),
                           [&](const HeldSession& h) { return h.serial == serial; });
    if (it == sessions.end()) return;
    released(it->owner, it->job->request().token, serial);
    sessions.erase(it);
    idleCheck();
  }

  void idleCheck() {
    if (jobs.empty() && sessions.empty() && whenIdle) {
      auto callback = std::move(whenIdle);
      whenIdle = nullptr;
      callback();
    }
  }

  void nodeFound(const std::string& address) {
    for (auto& r : jobs) {
      if (r->mdns && !r->over && r->session) r->session->addPeer(address);
    }
    for (HeldSession& h : sessions)
      if (h.mdns) h.job->nodeFound(address);
  }

  // The job failed or was cancelled: its client is told (when it is still there), and the
  // job is taken down. Called from the session's events, so the session is destroyed a turn
  // later, outside its own callbacks (end()).
  void finish(Running& r, ctl::Outcome outcome, const std::string& error) {
    if (r.over) return;
    r.over = true;
    r.job->fail(outcome, error);
    end(r, error);
  }

  void end(Running& r, std::string error) {
    loop.post([this, &r, alive = alive, error = std::move(error)] {
      if (*alive) ended(r, error);
    });
  }

  void ended(Running& r, const std::string& error) {
    r.session.reset();  // its leases go with its connections
    released(r.owner, r.job->token(), r.serial);
    if (error.empty()) PL_LOG_INFO("%s done", r.label.c_str());
    else PL_LOG_INFO("%s ended: %s", r.label.c_str(), error.c_str());
    jobs.remove_if([&](const std::unique_ptr<Running>& j) { return j.get() == &r; });
    idleCheck();
  }
};

RenderJobs::RenderJobs(UvKjLoop& loop, NodeService& node, ClusterKey key, PeerWatch* watch,
                       MemoryBudget* budget)
    : impl_(std::make_unique<Impl>(loop, node, std::move(key), watch, budget)) {}
RenderJobs::~RenderJobs() = default;
ControlOutcome RenderJobs::admit(const RenderJobParams& params, uint64_t dataBytes) const {
  return impl_->admit(params, dataBytes);
}
void RenderJobs::start(std::shared_ptr<ControlRenderJob> job) { impl_->start(std::move(job)); }
size_t RenderJobs::active() const { return impl_->jobs.size(); }
ControlSessionOpened RenderJobs::openSession(ControlSessionRequest request,
                                             ctl::SessionListener::Client listener,
                                             kj::Own<void> slot) {
  return impl_->openSession(std::move(request), kj::mv(listener), kj::mv(slot));
}
std::vector<RenderJobs::View> RenderJobs::views() const {
  std::vector<View> out;
  for (const auto& r : impl_->jobs) {
    if (r->over || r->session == nullptr) continue;
    out.push_back({r->label, r->params.primaryName, r->session.get()});
  }
  for (const Impl::HeldSession& h : impl_->sessions) {
    if (h.job->session() == nullptr) continue;
    out.push_back({h.job->label(), h.job->request().params.primaryName, h.job->session()});
  }
  return out;
}
void RenderJobs::nodeFound(const std::string& address) { impl_->nodeFound(address); }
void RenderJobs::cancelAll(std::function<void()> whenIdle) {
  impl_->stopping = true;
  std::vector<RenderJobs::Impl::Running*> running;
  for (auto& r : impl_->jobs) running.push_back(r.get());
  for (RenderJobs::Impl::Running* r : running)
    impl_->finish(*r, ctl::Outcome::SHUTTING_DOWN,
                  "render cancelled: the node daemon is shutting down");
  std::vector<SessionJob*> held;
  for (const Impl::HeldSession& h : impl_->sessions) held.push_back(h.job);
  for (SessionJob* job : held)
    job->end(ctl::Outcome::SHUTTING_DOWN, "session ended: the node daemon is shutting down");
  if (impl_->jobs.empty() && impl_->sessions.empty()) {
    if (whenIdle) whenIdle();
    return;
  }
  impl_->whenIdle = std::move(whenIdle);
}

}  // namespace pl::app
