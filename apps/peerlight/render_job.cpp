#include "apps/peerlight/render_job.h"

#include <chrono>
#include <cstring>
#include <list>

#include "core/render/film.h"
#include "core/scene/render_data.h"
#include "core/util/log.h"
#include "discovery/peer_watch.h"
#include "transport/control_socket.h"
#include "transport/node_service.h"
#include "transport/render_session.h"
#include "transport/uv_kj_loop.h"

namespace pl {

// The wire form of the stats: every member, by its name; missing keys keep their defaults.
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(DeviceInfo, kind, name, memoryBytes, threads,
                                                computeMajor, computeMinor, ordinal)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(SchedulerStats, issuedUnits, duplicateUnits,
                                                acceptedUnits, rejectedResults, requeuedUnits)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(LocalDeviceRenderStats, info, workUnits, samples,
                                                raysTraced, duplicateResults, error)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(
    NodeRenderStats, address, name, nodeId, devices, workUnits, samples, raysTraced,
    duplicateResults, renderDataBytesRaw, renderDataBytesSent, chunksSent, chunksTotal,
    manifestBytes, resultBytes, resultBytesRaw, secondsToFirstResult, secondsToDataLoaded,
    uploadSeconds, connections, losses, state, error)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(ClusterRenderStats, seconds, samples, raysTraced,
                                                scheduler, local, nodes, renderDataChunks,
                                                renderDataRawBytes, renderDataEncodedBytes,
                                                encodeSeconds)

namespace app {

using Clock = std::chrono::steady_clock;

nlohmann::json statsToJson(const ClusterRenderStats& stats) { return stats; }

Result<ClusterRenderStats> statsFromJson(const nlohmann::json& json) {
  try {
    return json.get<ClusterRenderStats>();
  } catch (const nlohmann::json::exception& e) {
    return Error{std::string("render statistics from the node daemon: ") + e.what()};
  }
}

nlohmann::json paramsToJson(const RenderJobParams& p) {
  return {{"width", p.width},
          {"height", p.height},
          {"spp", p.spp},
          {"peers", p.peers},
          {"local_only", p.localOnly},
          {"no_local", p.noLocal},
          {"no_owner_preempt", p.noOwnerPreempt},
          {"no_mdns", p.noMdns},
          {"primary", p.primaryName}};
}

Result<RenderJobParams> paramsFromJson(const std::string& text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Error{"render job: params are not a JSON object"};
  RenderJobParams p;
  try {
    p.width = j.at("width").get<uint32_t>();
    p.height = j.at("height").get<uint32_t>();
    p.spp = j.at("spp").get<uint32_t>();
    p.peers = j.value("peers", std::vector<std::string>{});
    p.localOnly = j.value("local_only", false);
    p.noLocal = j.value("no_local", false);
    p.noOwnerPreempt = j.value("no_owner_preempt", false);
    p.noMdns = j.value("no_mdns", false);
    p.primaryName = j.value("primary", std::string("local"));
  } catch (const nlohmann::json::exception& e) {
    return Error{std::string("render job params: ") + e.what()};
  }
  if (Status s = Scheduler::validateFrame(FrameSpec{p.width, p.height, p.spp, 64}); !s.ok())
    return Error{"render job: " + s.error().message};
  if (p.peers.size() > 1024) return Error{"render job: more than 1024 peers"};
  if (p.localOnly && p.noLocal) return Error{"render job: local_only and no_local both set"};
  // The film's sums (24 bytes a pixel) are held twice at the end (film and reply): at most
  // 8 GiB, so that an absurd frame is refused here rather than failing an allocation later.
  const uint64_t filmBytes = uint64_t(p.width) * p.height * 3 * sizeof(int64_t);
  if (filmBytes > (uint64_t(4) << 30))
    return Error{"render job: a " + std::to_string(p.width) + "x" + std::to_string(p.height) +
                 " film needs " + std::to_string(filmBytes >> 20) +
                 " MiB, more than this node gives one job (4096 MiB)"};
  return p;
}

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
  };

  UvKjLoop& loop;
  NodeService& node;
  ClusterKey key;
  PeerWatch* watch;
  std::list<std::unique_ptr<Running>> jobs;
  std::function<void()> whenIdle;
  bool stopping = false;  // cancelAll() was called: no new jobs
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);

  Impl(UvKjLoop& loop, NodeService& node, ClusterKey key, PeerWatch* watch)
      : loop(loop), node(node), key(std::move(key)), watch(watch) {}

  ~Impl() {
    *alive = false;
    for (auto& r : jobs) {
      r->session.reset();
      if (r->owner) node.ownerJobEnded(r->job->token());
    }
  }

  void start(std::shared_ptr<ControlRenderJob> job) {
    Result<RenderJobParams> params = paramsFromJson(job->params());
    const std::string label = "render job " + job->token().substr(0, 8);
    if (!params.ok()) {
      PL_LOG_WARN("%s refused: %s", label.c_str(), params.error().message.c_str());
      job->fail(params.error().message);
      return;
    }
    if (stopping) {
      job->fail("the node daemon is shutting down");
      return;
    }
    if (jobs.size() >= kMaxJobs) {
      PL_LOG_WARN("%s refused: %zu render jobs run already", label.c_str(), jobs.size());
      job->fail("busy: " + std::to_string(jobs.size()) + " render jobs run on this node");
      return;
    }
    auto running = std::make_unique<Running>();
    Running* r = running.get();
    r->job = job;
    r->params = std::move(params).value();
    r->label = label;
    PL_LOG_INFO("%s from %s (uid %u): %ux%u at %u spp, %zu bytes of render data; this node is "
                "its Primary",
                label.c_str(), r->params.primaryName.c_str(), job->clientUid(), r->params.width,
                r->params.height, r->params.spp, job->payload().size());
    job->accept();
    jobs.push_back(std::move(running));
    if (!r->params.noLocal && !r->params.noOwnerPreempt) {
      // The machine's owner renders: remote leases on this machine's devices go now.
      node.ownerJobStarted(job->token());
      r->owner = true;
    }
    // Decoded here, on the loop (a few milliseconds per 10 MB; the payload is bounded by the
    // control socket).
    Result<RenderData> data = deserialize(job->payload().data(), job->payload().size());
    std::vector<uint8_t>().swap(job->payload());
    if (!data.ok()) return finish(*r, "", {}, "render data: " + data.error().message);
    const kernel::Camera& camera = data->camera[0];
    if (camera.width != r->params.width || camera.height != r->params.height)
      return finish(*r, "", {},
                    "render data: camera of " + std::to_string(camera.width) + "x" +
                        std::to_string(camera.height) + ", frame of " +
                        std::to_string(r->params.width) + "x" + std::to_string(r->params.height));
    job->onDisconnect([this, r, alive = alive] {
      if (!*alive || r->over) return;
      PL_LOG_INFO("%s: the client went away; cancelling", r->label.c_str());
      finish(*r, "", {}, "render cancelled: the client went away");
    });

    ClusterRenderOptions options;
    // This machine's devices through the daemon's own node, in process: they render in its
    // worker processes, leased as the owner's.
    if (!r->params.noLocal)
      options.inProcessNode = [this] { return node.newTrustedNode("owner job"); };
    if (!r->params.localOnly) {
      options.peers = r->params.peers;
      // As in `peerlight render`: mDNS nodes when no --peer is given: those known now, and
      // those found later (nodeFound(), a discovery event on this loop).
      if (watch != nullptr && r->params.peers.empty() && !r->params.noMdns) {
        options.peers = watch->usableAddresses();
        r->mdns = true;
      }
    }
    options.key = key;
    options.primaryName = r->params.primaryName;
    options.ownerToken = job->token();
    RenderSessionEvents events;
    events.onPass = [this, r](uint64_t, uint32_t spp, double) {
      if (spp != r->params.spp || r->over) return;
      const Film film = r->session->film().snapshot();
      std::vector<uint8_t> bytes(film.sums().size() * sizeof(int64_t));
      std::memcpy(bytes.data(), film.sums().data(), bytes.size());
      ClusterRenderStats stats = r->session->stats(/*finishing=*/true);
      finish(*r, statsToJson(stats).dump(), std::move(bytes), "");
    };
    events.onFatal = [this, r](const std::string& message) { finish(*r, "", {}, message); };
    events.onProgress = [this, r](uint64_t done, uint64_t total) {
      const Clock::time_point t = Clock::now();
      if (r->over || (done < total && t - r->lastProgress < std::chrono::milliseconds(200)))
        return;
      r->lastProgress = t;
      r->job->progress(nlohmann::json{{"done", done},
                                      {"total", total},
                                      {"stats", statsToJson(r->session->stats())}}
                           .dump());
    };
    r->session = std::make_unique<RenderSession>(loop, options, events);
    auto shared = std::make_shared<const RenderData>(std::move(data).value());
    if (Status st = r->session->start(shared, r->params.spp); !st.ok())
      finish(*r, "", {}, st.error().message);
  }

  void nodeFound(const std::string& address) {
    for (auto& r : jobs) {
      if (r->mdns && !r->over && r->session) r->session->addPeer(address);
    }
  }

  // The job's end: done (text, film) or failed (error). Called from the session's events, so
  // the session is destroyed a turn later, outside its own callbacks.
  void finish(Running& r, std::string text, std::vector<uint8_t> film, std::string error) {
    if (r.over) return;
    r.over = true;
    if (error.empty()) r.job->done(text, std::move(film));
    else r.job->fail(error);
    loop.post([this, &r, alive = alive, error] {
      if (*alive) ended(r, error);
    });
  }

  void ended(Running& r, const std::string& error) {
    r.session.reset();  // its leases go with its connections
    if (r.owner) node.ownerJobEnded(r.job->token());
    if (error.empty()) PL_LOG_INFO("%s done", r.label.c_str());
    else PL_LOG_INFO("%s ended: %s", r.label.c_str(), error.c_str());
    jobs.remove_if([&](const std::unique_ptr<Running>& j) { return j.get() == &r; });
    if (jobs.empty() && whenIdle) {
      auto callback = std::move(whenIdle);
      whenIdle = nullptr;
      callback();
    }
  }
};

RenderJobs::RenderJobs(UvKjLoop& loop, NodeService& node, ClusterKey key, PeerWatch* watch)
    : impl_(std::make_unique<Impl>(loop, node, std::move(key), watch)) {}
RenderJobs::~RenderJobs() = default;
void RenderJobs::start(std::shared_ptr<ControlRenderJob> job) { impl_->start(std::move(job)); }
size_t RenderJobs::active() const { return impl_->jobs.size(); }
void RenderJobs::nodeFound(const std::string& address) { impl_->nodeFound(address); }
void RenderJobs::cancelAll(std::function<void()> whenIdle) {
  impl_->stopping = true;
  std::vector<RenderJobs::Impl::Running*> running;
  for (auto& r : impl_->jobs) running.push_back(r.get());
  for (RenderJobs::Impl::Running* r : running)
    impl_->finish(*r, "", {}, "render cancelled: the node daemon is shutting down");
  if (impl_->jobs.empty()) {
    if (whenIdle) whenIdle();
    return;
  }
  impl_->whenIdle = std::move(whenIdle);
}

}  // namespace app
}  // namespace pl
