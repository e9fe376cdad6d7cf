#include "apps/peerlight/live_view.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>

#include "apps/peerlight/render_job.h"
#include "apps/peerlight/web_sessions.h"
#include "core/render/film.h"
#include "core/render/image_io.h"
#include "core/util/log.h"
#include "discovery/peer_watch.h"
#include "transport/node_service.h"
#include "transport/render_session.h"
#include "core/util/uv_handle.h"
#include "transport/uv_kj_loop.h"
#include "transport/web_server.h"

namespace pl::app {

extern const char kWebPage[];  // web/index.html (generated web_page.cpp)

namespace {

using Json = nlohmann::json;
constexpr const char* kCookie = "peerlight_token";
constexpr uint32_t kPreviewPixels = 1024;  // the longest side of a preview frame

Json vec(const kernel::Vec3f& v) { return Json::array({v.x, v.y, v.z}); }

// JSON text that never throws: strings from the network (mDNS adverts, URLs) may hold bytes
// that are not UTF-8; they are replaced.
std::string text(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

// A finite number within +-1e30 (a float), else nothing.
std::optional<float> readFloat(const Json& j) {
  if (!j.is_number()) return std::nullopt;
  const double d = j.get<double>();
  if (!std::isfinite(d) || std::fabs(d) > 1e30) return std::nullopt;
  return float(d);
}

bool readVec(const Json& j, const char* name, kernel::Vec3f& out) {
  if (!j.contains(name) || !j[name].is_array() || j[name].size() != 3) return false;
  float v[3];
  for (int i = 0; i < 3; ++i) {
    std::optional<float> x = readFloat(j[name][i]);
    if (!x) return false;
    v[i] = *x;
  }
  out = {v[0], v[1], v[2]};
  return true;
}

WebResponse json(int status, const Json& body) {
  return WebResponse{status, "application/json", text(body), {}};
}

WebResponse error(int status, const std::string& message) {
  return json(status, Json{{"error", message}});
}

// The Host header names this machine's loopback (not a name that a DNS rebinding points here).
bool localHost(const std::string& host) {
  const std::string name = host.substr(0, host.rfind(':'));
  return name == "127.0.0.1" || name == "localhost" || name == "[::1]";
}

}  // namespace

std::string liveViewToken(const ClusterKey& key) {
  static const char kLabel[] = "peerlight live view token v1";
  uint8_t mac[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  HMAC(EVP_sha256(), key.bytes.data(), int(key.bytes.size()),
       reinterpret_cast<const uint8_t*>(kLabel), sizeof kLabel - 1, mac, &n);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < 16 && i < n; ++i) {
    out += hex[mac[i] >> 4];
    out += hex[mac[i] & 15];
  }
  return out;
}

struct LiveView::Impl {
  struct Client {
    std::string watching;  // a render key, or ""
    uint64_t sentGeneration = 0;
    uint32_t sentSpp = 0;
  };
  struct Preview {
    uint64_t generation = 0;
    uint32_t spp = 0;
    WebServer::Frame frame;  // one buffer for every client that watches
  };

  UvKjLoop& loop;
  NodeService& node;
  RenderJobs& jobs;
  PeerWatch* watch;
  std::string token;
  WebSessions sessions;
  std::unique_ptr<WebServer> server;
  std::map<uint64_t, Client> clients;
  std::map<std::string, Preview> previews;  // by render key
  UvHandle<uv_timer_t> timer;
  uint64_t ticks = 0;

  Impl(UvKjLoop& loop, NodeService& node, RenderJobs& jobs, PeerWatch* watch,
       MemoryBudget* budget, ClusterKey key)
      : loop(loop), node(node), jobs(jobs), watch(watch), token(liveViewToken(key)),
        sessions(loop, node, key, watch, budget) {}

  bool allowed(const WebRequest& r) const {
    if (r.loopback && localHost(r.host)) return true;
    const std::string given = !r.arg("token").empty() ? r.arg("token") : r.cookieValue(kCookie);
    return given.size() == token.size() &&
           CRYPTO_memcmp(given.data(), token.data(), token.size()) == 0;
  }

  // The session of a render key ("s<id>" exactly as the state names it, or "j<label>"), or
  // null.
  const RenderSession* sessionOf(const std::string& key) {
    if (key.size() > 1 && key[0] == 's') {
      for (const WebSessions::Info& s : sessions.list())
        if (key == "s" + std::to_string(s.id)) return s.session;
    } else if (key.size() > 1 && key[0] == 'j') {
      for (const RenderJobs::View& v : jobs.views())
        if (v.label == key.substr(1)) return v.session;
    }
    return nullptr;
  }

  // Whether `key` names a page session that is loading its scene.
  bool loading(const std::string& key) {
    for (const WebSessions::Info& s : sessions.list())
      if (key == "s" + std::to_string(s.id) && s.state == "loading") return true;
    return false;
  }

  // "waiting" while no device renders for the session's current generation (the devices of its
  // nodes, this machine's too, are busy with another Primary or the owner, or gone), else
  // "rendering" (the page says "done" once the generation holds its target).
  static const char* activity(const RenderSession& s) {
    if (s.generationDone()) return "rendering";
    const ClusterRenderStats stats = s.stats();
    for (const LocalDeviceRenderStats& d : stats.local)
      if (d.error.empty()) return "rendering";
    for (const NodeRenderStats& n : stats.nodes)
      if (n.state == "rendering") return "rendering";
    return "waiting";
  }

  static Json renderJson(const RenderSession& s) {
    Json shares = Json::array();
    uint64_t accepted = 0;
    for (const auto& [source, samples] : s.shares()) {
      shares.push_back({{"source", source}, {"samples", samples}});
      accepted += samples;
    }
    // The time left at the generation's rate so far (null before its first result).
    const double seconds = s.generationSeconds();
    const uint64_t total = uint64_t(s.film().width()) * s.film().height() * s.targetSpp();
    Json eta = nullptr;
    if (accepted >= total) eta = 0.0;
    else if (accepted > 0) eta = seconds * double(total - accepted) / double(accepted);
    // The nodes this render uses (found by mDNS, or named by the render's --peer) and theirs
    // states.
    Json nodes = Json::array();
    for (const NodeRenderStats& n : s.stats().nodes)
      nodes.push_back({{"address", n.address},
                       {"name", n.name},
                       {"state", n.state},
                       {"devices", n.devices},
                       {"error", n.error}});
    return {{"generation", s.generation()},
            {"nodes", nodes},
            {"seconds", seconds},
            {"eta_seconds", eta},
            {"width", s.film().width()},
            {"height", s.film().height()},
            {"spp", s.film().committedSamples()},
            {"target_spp", s.targetSpp()},
            {"shares", shares}};
  }

  Json state() {
    Json devices = Json::array();
    for (const DeviceInfo& d : node.deviceInfos())
      devices.push_back({{"kind", d.kind},
                         {"name", d.name},
                         {"threads", d.threads},
                         {"memory_bytes", d.memoryBytes}});
    Json leases = Json::array();
    for (const NodeService::LeaseView& l : node.leases())
      leases.push_back({{"id", l.id},
                        {"primary", l.primary},
                        {"devices", l.devices},
                        {"seconds", l.seconds},
                        {"samples_per_second", l.seconds > 0 ? double(l.samples) / l.seconds : 0}});
    Json events = Json::array();
    for (const auto& [seconds, text] : node.recentEvents())
      events.push_back({{"seconds", seconds}, {"text", text}});
    Json self{{"name", node.name()},
              {"id", node.nodeId()},
              {"devices", devices},
              {"leases", leases},
              {"free_devices", node.freeDeviceCount()},
              {"workers", node.workerCount()},
              {"owner_active", node.ownerActive()},
              {"events", events}};
    Json nodes = Json::array();
    if (watch != nullptr) {
      for (const PeerVerdict& v : watch->snapshot()) {
        Json devs = Json::array();
        for (const DeviceSummary& d : v.devices)
          devs.push_back({{"kind", d.kind},
                          {"model", d.model},
                          {"memory_gib", d.memoryGiB},
                          {"threads", d.threads}});
        nodes.push_back({{"name", v.name.empty() ? v.instanceName : v.name},
                         {"address", v.address},
                         {"version", v.protocolVersion},
                         {"state", v.state},
                         {"usable", v.usable},
                         {"why", v.why},
                         {"devices", devs}});
      }
    }
    Json renders = Json::array();
    for (const RenderJobs::View& v : jobs.views()) {
      Json r = renderJson(*v.session);
      r["key"] = "j" + v.label;
      r["kind"] = "job";
      r["label"] = v.label + " from " + v.primary;
      r["state"] = activity(*v.session);
      if (r["state"] == "waiting") r["eta_seconds"] = nullptr;  // no rate to go by
      renders.push_back(r);
    }
    for (const WebSessions::Info& s : sessions.list()) {
      Json r = s.session != nullptr ? renderJson(*s.session) : Json::object();
      r["key"] = "s" + std::to_string(s.id);
      r["kind"] = "session";
      r["label"] = s.scene;
      r["state"] = s.session != nullptr && s.state == "rendering" ? activity(*s.session) : s.state;
      if (r["state"] == "waiting") r["eta_seconds"] = nullptr;  // no rate to go by
      r["error"] = s.error;
      if (s.session != nullptr) {
        r["view"] = {{"eye", vec(s.view.eye)},
                     {"target", vec(s.view.target)},
                     {"up", vec(s.view.up)},
                     {"yfov", s.view.yfovDegrees}};
      } else {
        r["width"] = s.width;
        r["height"] = s.height;
        r["target_spp"] = s.spp;
      }
      renders.push_back(r);
    }
    return {{"event", "state"}, {"node", self}, {"nodes", nodes}, {"renders", renders}};
  }

  WebResponse http(const WebRequest& r) {
    if (!allowed(r)) return error(403, "this page needs the live view token (peerlight open)");
    if (r.method == "GET" && r.path == "/") {
      WebResponse page{200, "text/html; charset=utf-8", kWebPage, {}};
      // A token given once in the URL is kept in a cookie (never readable by scripts).
      if (!r.arg("token").empty())
        page.headers.push_back({"set-cookie", std::string(kCookie) + "=" + token +
                                                  "; Path=/; HttpOnly; SameSite=Strict"});
      return page;
    }
    if (r.method == "GET" && r.path == "/api/state") return json(200, state());
    if (r.method == "GET" && r.path == "/api/image") return image(r);
    if (r.method == "POST" && r.path == "/api/sessions") {
      if (!sameOrigin(r)) return error(403, "POST /api/sessions: from another site");
      if (r.contentType.rfind("application/json", 0) != 0)
        return error(415, "POST /api/sessions: Content-Type must be application/json");
      Json body = Json::parse(r.body, nullptr, false);
      if (body.is_discarded() || !body.is_object() || !body.contains("scene") ||
          !body["scene"].is_string())
        return error(400, "POST /api/sessions: a JSON object with \"scene\" (a path) is needed");
      // Out of range (or not a whole number): 0, which start() refuses naming the field.
      auto number = [&](const char* name, uint32_t fallback) -> uint32_t {
        if (!body.contains(name)) return fallback;
        if (!body[name].is_number_unsigned()) return 0;
        const uint64_t v = body[name].get<uint64_t>();
        return v > UINT32_MAX ? 0 : uint32_t(v);
      };
      Result<uint64_t> id = sessions.start(body["scene"].get<std::string>(),
                                           number("width", 512), number("height", 512),
                                           number("spp", 64));
      if (!id.ok()) return error(400, id.error().message);
      return json(200, Json{{"id", *id}, {"key", "s" + std::to_string(*id)}});
    }
    return error(404, r.method + " " + r.path + ": no such page");
  }

  WebResponse image(const WebRequest& r) {
    const std::string key = r.arg("key");
    const RenderSession* s = sessionOf(key);
    if (s == nullptr) return error(404, "image: no render " + key);
    if (r.arg("partial") != "1" && s->film().committedSamples() != s->targetSpp())
      return error(409, "image: " + std::to_string(s->film().committedSamples()) + " of " +
                            std::to_string(s->targetSpp()) + " samples per pixel so far");
    const Film film = s->film().snapshot();
    if (r.arg("format") == "exr") {
      // OpenEXR writes files: through a private temporary one.
      char path[] = "/tmp/peerlight-image-XXXXXX.exr";
      const int fd = ::mkstemps(path, 4);
      if (fd < 0) return error(500, "image: no temporary file");
      ::close(fd);
      Status st = writeExr(path, film.width(), film.height(), film.linearRgb());
      std::string bytes;
      if (st.ok()) {
        std::FILE* f = std::fopen(path, "rb");
        char buffer[65536];
        size_t n;
        while (f != nullptr && (n = std::fread(buffer, 1, sizeof buffer, f)) > 0)
          bytes.append(buffer, n);
        if (f != nullptr) std::fclose(f);
      }
      ::unlink(path);
      if (!st.ok()) return error(500, "image: " + st.error().message);
      return WebResponse{200, "image/x-exr", std::move(bytes), {}};
    }
    Result<std::vector<uint8_t>> png = encodePng(film.width(), film.height(), film.linearRgb());
    if (!png.ok()) return error(500, "image: " + png.error().message);
    return WebResponse{200, "image/png", std::string(png->begin(), png->end()), {}};
  }

  // Only this server's own page (or a client that sends no Origin, not a browser) may open a
  // socket or POST.
  static bool sameOrigin(const WebRequest& r) {
    if (r.origin.empty()) return true;
    const size_t scheme = r.origin.find("://");
    return scheme != std::string::npos && r.origin.substr(scheme + 3) == r.host;
  }

  bool acceptSocket(const WebRequest& r) { return allowed(r) && sameOrigin(r); }

  void sendError(uint64_t client, const std::string& op, const std::string& message) {
    server->send(client, text(Json{{"event", "error"}, {"op", op}, {"message", message}}));
  }

  void message(uint64_t client, const std::string& text) {
    Json m = Json::parse(text, nullptr, false);
    if (m.is_discarded() || !m.is_object() || !m.contains("op") || !m["op"].is_string())
      return sendError(client, "", "not a JSON object with an \"op\"");
    const std::string op = m["op"].get<std::string>();
    const std::string key = m.contains("key") && m["key"].is_string() ? m["key"].get<std::string>()
                                                                       : "";
    if (op == "watch") {
      // A session still loading may be watched: its previews come once it renders.
      if (!key.empty() && sessionOf(key) == nullptr && !loading(key))
        return sendError(client, op, "key: no render " + key);
      Client& c = clients[client];
      c.watching = key;
      c.sentGeneration = 0;
      c.sentSpp = 0;
      pushPreviews();
      return;
    }
    if (op == "camera" || op == "cancel") {
      if (key.size() < 2 || key[0] != 's')
        return sendError(client, op, "key: only sessions started here can be changed");
      const uint64_t id = std::strtoull(key.c_str() + 1, nullptr, 10);
      Status st;
      if (op == "cancel") {
        st = sessions.cancel(id);
      } else {
        LookAt view;
        if (!readVec(m, "eye", view.eye) || !readVec(m, "target", view.target))
          return sendError(client, op, "camera: eye and target must be [x, y, z]");
        if (m.contains("up") && !readVec(m, "up", view.up))
          return sendError(client, op, "camera: up must be [x, y, z]");
        if (m.contains("yfov")) {
          std::optional<float> yfov = readFloat(m["yfov"]);
          if (!yfov) return sendError(client, op, "camera: yfov must be a number of degrees");
          view.yfovDegrees = *yfov;
        }
        st = sessions.camera(id, view);
      }
      if (!st.ok()) sendError(client, op, st.error().message);
      return;
    }
    sendError(client, op, "unknown op '" + op + "' (watch, camera, cancel)");
  }

  // The preview of a render, made once per (generation, spp).
  const Preview* preview(const std::string& key) {
    const RenderSession* s = sessionOf(key);
    if (s == nullptr) return nullptr;
    const uint64_t generation = s->generation();
    const uint32_t spp = s->film().committedSamples();
    if (spp == 0) return nullptr;
    Preview& p = previews[key];
    if (p.generation == generation && p.spp == spp && p.frame != nullptr) return &p;
    const Film film = s->film().snapshot();
    // At most kPreviewPixels on a side (a box filter by a whole factor): the PNG is made on the
    // loop, and a browser needs no more.
    const uint32_t factor = (std::max(film.width(), film.height()) + kPreviewPixels - 1) /
                            kPreviewPixels;
    std::vector<float> rgb = film.linearRgb();
    uint32_t width = film.width(), height = film.height();
    if (factor > 1) {
      const uint32_t w = width / factor, h = height / factor;
      std::vector<float> small(size_t(w) * h * 3, 0.0f);
      const float scale = 1.0f / float(factor * factor);
      for (uint32_t y = 0; y < h * factor; ++y)
        for (uint32_t x = 0; x < w * factor; ++x)
          for (int c = 0; c < 3; ++c)
            small[(size_t(y / factor) * w + x / factor) * 3 + c] +=
                rgb[(size_t(y) * width + x) * 3 + c] * scale;
      rgb = std::move(small);
      width = w;
      height = h;
    }
    Result<std::vector<uint8_t>> png = encodePng(width, height, rgb);
    if (!png.ok()) return nullptr;
    p.generation = generation;
    p.spp = spp;
    std::vector<uint8_t> bytes;
    auto put32 = [&bytes](uint32_t v) {
      for (int i = 0; i < 4; ++i) bytes.push_back(uint8_t(v >> (8 * i)));
    };
    put32(uint32_t(key.size()));
    bytes.insert(bytes.end(), key.begin(), key.end());
    put32(uint32_t(generation));
    put32(spp);
    bytes.insert(bytes.end(), png->begin(), png->end());
    p.frame = WebServer::frame(bytes);
    return &p;
  }

  void pushPreviews() {
    for (auto& [id, c] : clients) {
      if (c.watching.empty()) continue;
      const Preview* p = preview(c.watching);
      if (p == nullptr || (p->generation == c.sentGeneration && p->spp == c.sentSpp)) continue;
      // A client that does not keep up misses frames: the next one sent is the newest.
      if (server->send(id, p->frame, /*binary=*/true)) {
        c.sentGeneration = p->generation;
        c.sentSpp = p->spp;
      }
    }
    // Previews that nobody watches, or of renders that are gone.
    for (auto it = previews.begin(); it != previews.end();) {
      bool watched = false;
      for (const auto& [id, c] : clients) watched = watched || c.watching == it->first;
      it = !watched || sessionOf(it->first) == nullptr ? previews.erase(it) : std::next(it);
    }
  }

  void tick() {
    pushPreviews();
    if (++ticks % 5 == 0 && !clients.empty()) broadcastState();
  }

  void broadcastState() {
    const std::string message = text(state());
    const WebServer::Frame framed = WebServer::frame(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(message.data()), message.size()));
    for (auto& [id, c] : clients) server->send(id, framed, /*binary=*/false);
  }
};

LiveView::LiveView(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<LiveView>> LiveView::start(UvKjLoop& loop, NodeService& node,
                                                  RenderJobs& jobs, PeerWatch* watch,
                                                  MemoryBudget* budget, ClusterKey key,
                                                  const std::string& host, uint16_t port) {
  auto impl = std::make_unique<Impl>(loop, node, jobs, watch, budget, std::move(key));
  Impl* self = impl.get();
  WebServer::Handlers h;
  h.http = [self](const WebRequest& r) { return self->http(r); };
  h.acceptSocket = [self](const WebRequest& r) { return self->acceptSocket(r); };
  h.socketOpened = [self](uint64_t client, const WebRequest&) {
    self->clients[client] = {};
    self->server->send(client, text(self->state()));
  };
  h.socketMessage = [self](uint64_t client, const std::string& m) { self->message(client, m); };
  h.socketClosed = [self](uint64_t client) { self->clients.erase(client); };
  Result<std::unique_ptr<WebServer>> server =
      WebServer::start(loop.uv(), host, port, "peerlight", std::move(h));
  if (!server.ok()) return server.error();
  impl->server = std::move(server).value();
  impl->sessions.onChange = [self] {
    if (!self->clients.empty()) self->broadcastState();
  };
  PL_CHECK(impl->timer.init(loop.uv(), uv_timer_init) == 0);
  impl->timer.get()->data = self;
  uv_timer_start(
      impl->timer.get(), [](uv_timer_t* t) { static_cast<Impl*>(t->data)->tick(); }, 200, 200);
  uv_unref(reinterpret_cast<uv_handle_t*>(impl->timer.get()));
  return std::unique_ptr<LiveView>(new LiveView(std::move(impl)));
}

LiveView::~LiveView() {
  uv_timer_stop(impl_->timer.get());
  impl_->server.reset();  // closes the sockets (their handlers use impl_) first
}

uint16_t LiveView::port() const { return impl_->server->port(); }

void LiveView::nodeFound(const std::string& address) { impl_->sessions.nodeFound(address); }

}  // namespace pl::app
