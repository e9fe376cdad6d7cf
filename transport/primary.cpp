// renderCluster(): one frame through a RenderSession on a loop of its own or the caller's (see
// primary.h).

#include "transport/primary.h"

#include <kj/async.h>
#include <kj/debug.h>

#include <cstring>
#include <optional>

#include "core/util/log.h"

#include "transport/render_session.h"
#include "transport/uv_kj_loop.h"

namespace pl {

Result<kernel::Camera> SceneSource::camera() const {
  if (data != nullptr) {
    if (data->camera.size() != 1) return Error{"render data: expected exactly one camera"};
    return data->camera[0];
  }
  if (encoded == nullptr) return Error{"render: no scene"};
  return decodeCamera(encoded->manifest, [this](const Hash128& hash) {
    return encoded->chunks.find(hash);
  });
}

uint64_t SceneSource::dataBytes() const {
  if (data != nullptr) return data->byteSize();
  return encoded != nullptr ? encoded->manifest.rawBytes() : 0;
}

uint64_t SceneSource::triangleCount() const {
  if (data != nullptr) return data->triangles.size();
  return encoded != nullptr
             ? encoded->manifest.arrays[size_t(RenderDataArray::triangles)].elementCount
             : 0;
}

Result<ClusterRenderStats> renderCluster(const RenderData& data, Film& film,
                                         const ClusterRenderOptions& options,
                                         const ClusterProgressCallback& progress) {
  // The caller keeps `data` alive for the call; devices hold it only while they render it.
  SceneSource scene;
  scene.data = std::shared_ptr<const RenderData>(std::shared_ptr<const RenderData>(), &data);
  return renderCluster(scene, film, options, progress);
}

Result<ClusterRenderStats> renderCluster(const SceneSource& scene, Film& film,
                                         const ClusterRenderOptions& options,
                                         const ClusterProgressCallback& progress) {
  UvKjLoop loop;
  return renderCluster(loop, scene, film, options, progress, nullptr);
}

Result<ClusterRenderStats> renderCluster(UvKjLoop& loop, const SceneSource& scene, Film& film,
                                         const ClusterRenderOptions& options,
                                         const ClusterProgressCallback& progress,
                                         const std::function<void(RenderSession*)>& attach) {
  FrameSpec frame{film.width(), film.height(), film.samplesPerPixel(), options.tileSize};
  frame.region = options.region;
  if (Status s = Scheduler::validateFrame(frame); !s.ok()) return s.error();
  const uint64_t pixels = renderedRect(frame.region, frame.width, frame.height).pixelCount();
  Result<kernel::Camera> camera = scene.camera();
  if (!camera.ok()) return camera.error();
  if (camera->width != film.width() || camera->height != film.height())
    return Error{"render: the film's size differs from the camera's"};
  if (kernel::filmChannels(camera->passes) != film.channels())
    return Error{"render: the film's channels differ from the passes the camera asks for"};

  Result<ClusterRenderStats> result = Error{"render did not run"};
  {
    auto done = kj::newPromiseAndFulfiller<void>();
    std::optional<std::string> failure;
    const std::chrono::steady_clock::time_point callStart = std::chrono::steady_clock::now();
    double finishSeconds = 0;
    RenderSession* sessionPtr = nullptr;
    RenderSessionEvents events;
    bool finished = false;
    auto finish = [&]() {
      if (finished) return;
      finished = true;
      finishSeconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - callStart).count();
      done.fulfiller->fulfill();
    };
    events.onPass = [&](uint64_t, uint32_t spp, double) {
      if (spp == film.samplesPerPixel()) finish();
    };
    events.onStopped = [&](uint64_t, uint32_t, double) { finish(); };  // the time limit
    events.onFatal = [&](const std::string& message) {
      failure = message;
      finishSeconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - callStart).count();
      done.fulfiller->fulfill();
    };
    const uint64_t total = pixels * frame.spp;
    if (progress) {
      events.onProgress = [&](uint64_t accepted, uint64_t all) {
        if (sessionPtr != nullptr) progress(sessionPtr->stats(), accepted, all);
      };
      events.onNodesChanged = [&]() {
        if (sessionPtr != nullptr)
          progress(sessionPtr->stats(), sessionPtr->film().committedSamples() * pixels, total);
      };
    }
    try {
      RenderSession session(loop, options, events);
      sessionPtr = &session;
      if (Status s = session.start(scene, film.samplesPerPixel()); !s.ok()) return s.error();
      if (attach) attach(&session);
      KJ_DEFER(if (attach) attach(nullptr));  // before the session goes
      done.promise.wait(loop.waitScope());
      if (failure) {
        result = Error{*failure};
      } else {
        const uint32_t reached = session.film().committedSamples();
        if (reached != film.samplesPerPixel())  // stopped by the time limit
          film = Film(film.width(), film.height(), reached, film.channels());
        if (Status s = film.setSums(session.film().committedSums()); !s.ok()) return s.error();
        if (Status s = film.setPixelSamples(session.film().pixelSamples()); !s.ok())
          return s.error();
        ClusterRenderStats stats = session.stats(/*finishing=*/true);
        stats.seconds = finishSeconds;
        for (const NodeRenderStats& n : stats.nodes)
          if (n.state == "lost" && n.error.find("at the end of the render") != std::string::npos)
            PL_LOG_WARN("%s", n.error.c_str());
        result = std::move(stats);
      }
      sessionPtr = nullptr;
    } catch (kj::Exception& e) {
      std::string text = e.getDescription().cStr();
      result = Error{"render: " + text};
    }
  }
  return result;
}

}  // namespace pl
