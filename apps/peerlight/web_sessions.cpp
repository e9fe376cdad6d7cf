#include "apps/peerlight/web_sessions.h"

#include <sys/stat.h>

#include <cmath>
#include <list>
#include <thread>

#include "core/cluster/memory_budget.h"
#include "core/scene/compile.h"
#include "core/scene/load.h"
#include "core/scene/scene_edit.h"
#include "core/util/log.h"
#include "discovery/peer_watch.h"
#include "transport/node_service.h"
#include "transport/render_session.h"
#include "transport/uv_kj_loop.h"

namespace pl::app {

struct WebSessions::Impl {
  struct Entry {
    Info info;
    Scene scene;
    CompileOptions options;
    std::unique_ptr<RenderSession> session;
    std::thread loader;
  };

  UvKjLoop& loop;
  NodeService& node;
  ClusterKey key;
  PeerWatch* watch;
  MemoryBudget* budget;  // may be null
  WebSessions& owner;
  std::list<std::unique_ptr<Entry>> entries;
  uint64_t nextId = 1;
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);

  Impl(UvKjLoop& loop, NodeService& node, ClusterKey key, PeerWatch* watch, MemoryBudget* budget,
       WebSessions& owner)
      : loop(loop), node(node), key(std::move(key)), watch(watch), budget(budget), owner(owner) {}

  ~Impl() {
    *alive = false;
    for (auto& e : entries) {
      if (e->loader.joinable()) e->loader.join();
      releaseMemory(*e);
    }
  }

  static uint64_t filmBytes(const Info& info) {
    return uint64_t(info.width) * info.height * kernel::kBeautyChannels * sizeof(int64_t);
  }
  // Sets the session's reservation; the refusal's words when it does not fit.
  Status reserveMemory(const Info& info, uint64_t bytes) {
    if (budget == nullptr) return Status();
    MemoryGrant grant = budget->reserve({MemoryHolder::Kind::PageSession, info.id}, bytes);
    if (!grant.granted) return Error{budget->refusalText(grant)};
    node.memoryEvicted(grant.evict);
    return Status();
  }
  void releaseMemory(const Entry& e) {
    if (budget != nullptr) budget->release({MemoryHolder::Kind::PageSession, e.info.id});
  }

  Entry* find(uint64_t id) {
    for (auto& e : entries)
      if (e->info.id == id) return e.get();
    return nullptr;
  }
  const Entry* find(uint64_t id) const { return const_cast<Impl*>(this)->find(id); }

  void changed() {
    if (owner.onChange) owner.onChange();
  }

  // The look-at of a compiled camera: its eye, up and field of view, and a target in front of
  // it at the distance of the scene's centre (what an orbit turns around).
  static LookAt viewOf(const kernel::Camera& c, const kernel::SceneGlobals& g) {
    const kernel::Vec3f centre = (g.boundsMin + g.boundsMax) * 0.5f;
    const kernel::Vec3f d = centre - c.position;
    float distance = std::sqrt(d.x * d.x + d.y * d.y + d.z * d.z);
    if (!(distance > 1e-3f) || !std::isfinite(distance)) distance = 1.0f;
    LookAt view;
    view.eye = c.position;
    view.target = c.position + c.forward * distance;
    view.up = c.up;
    view.yfovDegrees = float(2.0 * std::atan(double(c.tanHalfFovY)) * 180.0 / M_PI);
    return view;
  }

  void loaded(Entry& e, Result<Scene> scene, Result<RenderData> data) {
    if (e.loader.joinable()) e.loader.join();
    Status fits = scene.ok() && data.ok()
                      ? reserveMemory(e.info, 2 * data->byteSize() + filmBytes(e.info))
                      : Status();
    if (!scene.ok() || !data.ok() || !fits.ok()) {
      releaseMemory(e);
      e.info.state = "failed";
      e.info.error = !scene.ok()  ? scene.error().message
                     : !data.ok() ? data.error().message
                                  : "scene: " + fits.error().message;
      PL_LOG_WARN("web session %llu: %s", (unsigned long long)e.info.id, e.info.error.c_str());
      return changed();
    }
    e.scene = std::move(scene).value();
    auto shared = std::make_shared<const RenderData>(std::move(data).value());
    e.info.view = viewOf(shared->camera[0], shared->globals[0]);

    ClusterRenderOptions options;
    options.inProcessNode = [this] { return node.newTrustedNode("web session"); };
    // The nodes usable now; those found later come as events (nodeFound()).
    if (watch != nullptr) {
      options.peers = watch->usableAddresses();
      options.peersMayAppear = true;
    }
    options.key = key;
    options.primaryName = "live view (session " + std::to_string(e.info.id) + ")";
    options.scheduler = interactiveSchedulerOptions();
    options.noDeviceTimeout = std::chrono::milliseconds(0);  // waits for devices
    RenderSessionEvents events;
    const uint64_t id = e.info.id;
    events.onFatal = [this, id](const std::string& message) {
      Entry* entry = find(id);
      if (entry == nullptr) return;
      entry->info.state = "failed";
      entry->info.error = message;
      entry->info.session = nullptr;
      releaseMemory(*entry);
      // Destroyed a turn later: we are inside its callback.
      auto dead = std::make_shared<std::unique_ptr<RenderSession>>(std::move(entry->session));
      loop.post([dead] { dead->reset(); });
      changed();
    };
    e.session = std::make_unique<RenderSession>(loop, options, events);
    if (Status s = e.session->start(shared, e.info.spp); !s.ok()) {
      e.session.reset();
      releaseMemory(e);
      e.info.state = "failed";
      e.info.error = s.error().message;
      return changed();
    }
    e.info.session = e.session.get();
    e.info.state = "rendering";
    changed();
  }
};

WebSessions::WebSessions(UvKjLoop& loop, NodeService& node, ClusterKey key, PeerWatch* watch,
                         MemoryBudget* budget)
    : impl_(std::make_unique<Impl>(loop, node, std::move(key), watch, budget, *this)) {}

WebSessions::~WebSessions() = default;

Result<uint64_t> WebSessions::start(const std::string& scene, uint32_t width, uint32_t height,
                                    uint32_t spp) {
  if (impl_->entries.size() >= kMaxSessions)
    return Error{"busy: " + std::to_string(kMaxSessions) + " sessions are open here"};
  if (width == 0 || height == 0 || width > 4096 || height > 4096)
    return Error{"size: width and height must be 1 to 4096"};
  if (spp == 0 || spp > (1u << 20)) return Error{"spp: must be 1 to 1048576"};
  auto dot = scene.rfind('.');
  const std::string ext = dot == std::string::npos ? "" : scene.substr(dot);
  if (ext != ".gltf" && ext != ".glb" && ext != ".obj")
    return Error{"scene: " + scene + " is not a .gltf, .glb or .obj file"};
  struct stat st {};
  if (::stat(scene.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
    return Error{"scene: " + scene + " is not a file this node can read"};

  auto entry = std::make_unique<Impl::Entry>();
  Impl::Entry* e = entry.get();
  e->info.id = impl_->nextId;
  e->info.width = width;
  e->info.height = height;
  // While it loads: its film and twice the file (the scene, then its compiled data).
  if (Status s = impl_->reserveMemory(e->info, 2 * uint64_t(st.st_size) + Impl::filmBytes(e->info));
      !s.ok())
    return Error{"scene: " + s.error().message};
  impl_->nextId++;
  e->info.scene = scene;
  e->info.state = "loading";
  e->info.width = width;
  e->info.height = height;
  e->info.spp = spp;
  e->options.width = width;
  e->options.height = height;
  impl_->entries.push_back(std::move(entry));
  const uint64_t id = e->info.id;
  e->loader = std::thread([impl = impl_.get(), alive = impl_->alive, id, scene,
                           options = e->options] {
    auto loadedScene = std::make_shared<Result<Scene>>(loadScene(scene));
    auto data = std::make_shared<Result<RenderData>>(
        loadedScene->ok() ? compile(**loadedScene, options) : Result<RenderData>(Error{""}));
    impl->loop.post([impl, alive, id, loadedScene, data] {
      if (!*alive) return;
      if (Impl::Entry* entry = impl->find(id))
        impl->loaded(*entry, std::move(*loadedScene), std::move(*data));
    });
  });
  impl_->changed();
  return id;
}

Status WebSessions::camera(uint64_t id, const LookAt& view) {
  Impl::Entry* e = impl_->find(id);
  if (e == nullptr) return Error{"session " + std::to_string(id) + ": no such session"};
  if (e->session == nullptr) return Error{"session " + std::to_string(id) + ": not rendering"};
  if (Status s = validateLookAt(view); !s.ok()) return Error{"camera: " + s.error().message};
  CompileOptions next = e->options;
  CameraEdit edit;
  edit.lookAt = view;
  if (Status s = applyCameraEdit(e->scene, next, edit); !s.ok()) return s;
  Result<kernel::Camera> camera = compileCamera(e->scene, next);
  if (!camera.ok()) return camera.error();
  e->options = std::move(next);
  e->info.view = view;
  e->session->updateCamera(*camera, e->info.spp);
  impl_->changed();
  return Status();
}

Status WebSessions::cancel(uint64_t id) {
  for (auto it = impl_->entries.begin(); it != impl_->entries.end(); ++it) {
    if ((*it)->info.id != id) continue;
    if ((*it)->loader.joinable()) return Error{"session " + std::to_string(id) + ": loading"};
    impl_->releaseMemory(**it);
    impl_->entries.erase(it);
    impl_->changed();
    return Status();
  }
  return Error{"session " + std::to_string(id) + ": no such session"};
}

void WebSessions::nodeFound(const std::string& address) {
  for (const auto& e : impl_->entries) {
    if (e->session != nullptr) e->session->addPeer(address);
  }
}

std::vector<WebSessions::Info> WebSessions::list() const {
  std::vector<Info> out;
  for (const auto& e : impl_->entries) out.push_back(e->info);
  return out;
}

}  // namespace pl::app
