#include "core/render/embree_tracer.h"

#include <algorithm>
#include <cstring>
#include <mutex>

#include "core/kernel/surface.h"
#include "core/util/hash.h"

namespace pl {

namespace {
const char* errorName(RTCError code) {
  switch (code) {
    case RTC_ERROR_NONE: return "no error";
    case RTC_ERROR_UNKNOWN: return "unknown error";
    case RTC_ERROR_INVALID_ARGUMENT: return "invalid argument";
    case RTC_ERROR_INVALID_OPERATION: return "invalid operation";
    case RTC_ERROR_OUT_OF_MEMORY: return "out of memory";
    case RTC_ERROR_UNSUPPORTED_CPU: return "unsupported CPU";
    case RTC_ERROR_CANCELLED: return "cancelled";
  }
  return "unrecognized error";
}
}  // namespace

// One Embree device, shared by the scenes of successive loads, and its first error.
struct EmbreeDevice {
  RTCDevice device = nullptr;
  uint32_t threads = 0;
  std::mutex mutex;
  std::string error;  // first error since takeError(); empty when none

  ~EmbreeDevice() {
    if (device) rtcReleaseDevice(device);
  }

  static void errorCallback(void* user, RTCError code, const char* message) {
    auto* self = static_cast<EmbreeDevice*>(user);
    std::lock_guard<std::mutex> lock(self->mutex);
    if (!self->error.empty()) return;  // first error wins
    self->error = std::string("embree: ") + errorName(code) + (message ? ": " : "") +
                  (message ? message : "");
  }

  Status takeError() {
    std::lock_guard<std::mutex> lock(mutex);
    if (error.empty()) return Status();
    Error e{std::move(error)};
    error.clear();
    return e;
  }

  static Result<std::shared_ptr<EmbreeDevice>> create(uint32_t threads) {
    auto self = std::make_shared<EmbreeDevice>();
    std::string config = "threads=" + std::to_string(threads) + ",set_affinity=0";
    self->device = rtcNewDevice(config.c_str());
    if (!self->device) {
      return Error{std::string("embree: cannot create a device: ") +
                   errorName(rtcGetDeviceError(nullptr))};
    }
    self->threads = threads;
    // Shadow rays through alpha masks use a filter (passMaskCutOuts()); without one a node
    // would trace them another way, with other bits, under the same kernel identity.
    if (rtcGetDeviceProperty(self->device, RTC_DEVICE_PROPERTY_FILTER_FUNCTION_SUPPORTED) == 0)
      return Error{"embree: this Embree library was built without filter functions "
                   "(EMBREE_FILTER_FUNCTION), which peerlight's CPU device needs"};
    rtcSetDeviceErrorFunction(self->device, &EmbreeDevice::errorCallback, self.get());
    return self;
  }
};

namespace {

// The vertices and triangles of the meshes that `take` selects, rebased to their own vertex
// list: what one Embree geometry reads.
template <class Take>
EmbreeMeshBuffers gatherMeshes(const RenderData& data, const std::vector<kernel::MeshRange>& meshes,
                               Take take) {
  size_t vertices = 0, triangles = 0;
  for (const kernel::MeshRange& m : meshes)
    if (take(m)) {
      vertices += m.vertexCount;
      triangles += m.triangleCount;
    }
  EmbreeMeshBuffers out;
  out.positions.assign(vertices * 3 + 1, 0.0f);  // one float of padding: 16-byte loads
  out.indices.reserve(triangles * 3);
  uint32_t base = 0;
  for (const kernel::MeshRange& m : meshes) {
    if (!take(m)) continue;
    if (m.vertexCount > 0)
      std::memcpy(out.positions.data() + size_t(base) * 3, &data.positions[m.firstVertex],
                  size_t(m.vertexCount) * sizeof(kernel::Vec3f));
    for (uint32_t t = m.firstTriangle; t < m.firstTriangle + m.triangleCount; ++t) {
      const kernel::Triangle& tri = data.triangles[t];
      for (uint32_t v : {tri.v0, tri.v1, tri.v2}) out.indices.push_back(v - m.firstVertex + base);
    }
    base += m.vertexCount;
  }
  return out;
}

// A triangle geometry over `buffers`, which it reads in place (they must outlive it); null
// when there are no triangles.
RTCGeometry triangleGeometry(RTCDevice device, const EmbreeMeshBuffers& buffers) {
  if (buffers.indices.empty()) return nullptr;
  RTCGeometry geometry = rtcNewGeometry(device, RTC_GEOMETRY_TYPE_TRIANGLE);
  rtcSetSharedGeometryBuffer(geometry, RTC_BUFFER_TYPE_VERTEX, 0, RTC_FORMAT_FLOAT3,
                             buffers.positions.data(), 0, 3 * sizeof(float),
                             (buffers.positions.size() - 1) / 3);
  rtcSetSharedGeometryBuffer(geometry, RTC_BUFFER_TYPE_INDEX, 0, RTC_FORMAT_UINT3,
                             buffers.indices.data(), 0, 3 * sizeof(uint32_t),
                             buffers.indices.size() / 3);
  rtcSetGeometryBuildQuality(geometry, RTC_BUILD_QUALITY_HIGH);
  rtcCommitGeometry(geometry);
  return geometry;
}

bool isDynamic(const kernel::MeshRange& m) { return (m.flags & kernel::kMeshDynamic) != 0; }

void attach(RTCScene scene, RTCGeometry geometry, uint32_t id) {
  if (!geometry) return;
  rtcAttachGeometryByID(scene, geometry, id);
  rtcReleaseGeometry(geometry);
}

// A new Embree scene of high quality: spatial splits, a better BVH for renders that trace
// billions of rays (on Sponza it traced 40% faster than medium or robust mode, which
// disables spatial splits, for 5x the build time: 0.3 s). Robust mode is off: its watertight
// edges matter little for a path tracer (a rare ray through a seam), and it costs 30% on
// Sponza.
RTCScene highQualityScene(RTCDevice device) {
  RTCScene scene = rtcNewScene(device);
  rtcSetSceneBuildQuality(scene, RTC_BUILD_QUALITY_HIGH);
  rtcSetSceneFlags(scene, RTC_SCENE_FLAG_CONTEXT_FILTER_FUNCTION);  // passMaskCutOuts()
  return scene;
}

// Whether the view has alpha and every alpha material is a mask.
bool alphaIsMasksOnly(const kernel::SceneView& view) {
  if (!view.global().hasAlpha) return false;
  for (uint32_t i = 0; i < view.materialsCount; ++i)
    if (view.materials[i].alphaMode == kernel::kAlphaBlend) return false;
  return true;
}

}  // namespace

// The static meshes' scene, over its own buffers; its key a hash of them.
struct EmbreeStaticPart {
  std::shared_ptr<EmbreeDevice> device;  // outlives the scene
  RTCScene scene = nullptr;
  EmbreeMeshBuffers buffers;
  Hash128 key;

  ~EmbreeStaticPart() {
    if (scene) rtcReleaseScene(scene);
  }
};

Status EmbreeScene::takeError() { return device_->takeError(); }

void detail::passMaskCutOuts(const RTCFilterFunctionNArguments* args) {
  const EmbreeTracer& tracer = *reinterpret_cast<const MaskFilterContext*>(args->context)->tracer;
  for (unsigned i = 0; i < args->N; ++i) {
    if (args->valid[i] != -1) continue;
    const RTCHit hit = rtcGetHitFromHitN(args->hit, args->N, i);
    if (kernel::maskCutOutAt(*tracer.masks, tracer.triangle(hit), hit.u, hit.v))
      args->valid[i] = 0;
  }
}

EmbreeTracer EmbreeScene::tracer(const kernel::SceneView* view) const {
  EmbreeTracer t;
  if (view != nullptr && alphaIsMasksOnly(*view)) t.masks = view;
  t.scene = scene_;
  t.staticTriangles = staticTriangles_.empty() ? nullptr : staticTriangles_.data();
  t.dynamicFirstTriangle = dynamicFirstTriangle_.empty() ? nullptr : dynamicFirstTriangle_.data();
  return t;
}

Result<std::unique_ptr<EmbreeScene>> EmbreeScene::build(const RenderData& data, uint32_t threads,
                                                        const EmbreeScene* previous,
                                                        const EmbreeScene* also) {
  std::unique_ptr<EmbreeScene> self(new EmbreeScene());
  // The device of either scene given (at this thread count); parts of another device cannot
  // be used.
  for (const EmbreeScene* given : {previous, also})
    if (!self->device_ && given && given->device_->threads == threads)
      self->device_ = given->device_;
  if (!self->device_) {
    Result<std::shared_ptr<EmbreeDevice>> device = EmbreeDevice::create(threads);
    if (!device.ok()) return device.error();
    self->device_ = std::move(device).value();
  }
  if (previous && previous->device_ != self->device_) previous = nullptr;
  if (also && also->device_ != self->device_) also = nullptr;
  // An error left by the previous scene's renders belongs to them.
  (void)self->device_->takeError();

  const std::vector<kernel::MeshRange> meshes = structureMeshes(data);
  self->buildStaticPart(data, meshes, previous, also);
  if (std::any_of(meshes.begin(), meshes.end(), isDynamic))
    self->buildTopLevel(data, meshes);
  else
    self->scene_ = self->static_->scene;
  self->triangleCount_ = static_cast<uint32_t>(data.triangles.size());

  if (Status s = self->device_->takeError(); !s.ok()) return s.error();
  if (rtcGetDeviceError(self->device_->device) != RTC_ERROR_NONE)
    return Error{"embree: scene build failed"};
  return self;
}

void EmbreeScene::buildStaticPart(const RenderData& data,
                                  const std::vector<kernel::MeshRange>& meshes,
                                  const EmbreeScene* previous, const EmbreeScene* also) {
  auto part = std::make_shared<EmbreeStaticPart>();
  part->buffers =
      gatherMeshes(data, meshes, [](const kernel::MeshRange& m) { return !isDynamic(m); });
  const Hash128 both[2] = {
      hash128(part->buffers.positions.data(), part->buffers.positions.size() * sizeof(float)),
      hash128(part->buffers.indices.data(), part->buffers.indices.size() * sizeof(uint32_t))};
  part->key = hash128(both, sizeof(both));

  // Its triangle i is RenderData triangle i unless a dynamic mesh comes before a static one.
  uint32_t listed = 0;
  bool identity = true;
  for (const kernel::MeshRange& m : meshes) {
    if (isDynamic(m)) continue;
    identity = identity && m.firstTriangle == listed;
    listed += m.triangleCount;
  }
  if (!identity)
    for (const kernel::MeshRange& m : meshes)
      if (!isDynamic(m))
        for (uint32_t t = m.firstTriangle; t < m.firstTriangle + m.triangleCount; ++t)
          staticTriangles_.push_back(t);

  const EmbreeScene* reuse = nullptr;
  for (const EmbreeScene* candidate : {also, previous})
    if (!reuse && candidate && candidate->static_ && candidate->static_->key == part->key)
      reuse = candidate;
  if (reuse) {
    static_ = reuse->static_;
    stats_.staticReused = true;
  } else {
    part->device = device_;
    part->scene = highQualityScene(device_->device);
    attach(part->scene, triangleGeometry(device_->device, part->buffers), 0);
    rtcCommitScene(part->scene);
    stats_.trianglesBuilt += part->buffers.indices.size() / 3;
    static_ = std::move(part);
  }
  stats_.staticTriangles = uint32_t(static_->buffers.indices.size() / 3);
}

void EmbreeScene::buildTopLevel(const RenderData& data,
                                const std::vector<kernel::MeshRange>& meshes) {
  const RTCDevice device = device_->device;
  top_ = highQualityScene(device);
  if (stats_.staticTriangles > 0) {
    RTCGeometry instance = rtcNewGeometry(device, RTC_GEOMETRY_TYPE_INSTANCE);
    rtcSetGeometryInstancedScene(instance, static_->scene);
    const float identity[12] = {1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0};
    rtcSetGeometryTransform(instance, 0, RTC_FORMAT_FLOAT3X4_COLUMN_MAJOR, identity);
    rtcCommitGeometry(instance);
    attach(top_, instance, 0);
  }
  for (const kernel::MeshRange& m : meshes) {
    if (!isDynamic(m)) continue;
    const uint32_t k = uint32_t(dynamicFirstTriangle_.size());
    dynamicFirstTriangle_.push_back(m.firstTriangle);
    dynamic_.push_back(std::make_unique<EmbreeMeshBuffers>(
        gatherMeshes(data, meshes, [&m](const kernel::MeshRange& r) { return &r == &m; })));
    attach(top_, triangleGeometry(device, *dynamic_.back()), 1 + k);
    stats_.trianglesBuilt += m.triangleCount;
    ++stats_.dynamicMeshes;
  }
  rtcCommitScene(top_);
  scene_ = top_;
}

EmbreeScene::~EmbreeScene() {
  if (top_) rtcReleaseScene(top_);
  // static_ and device_ release the rest, the device last.
}

}  // namespace pl
