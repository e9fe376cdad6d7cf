#include "transport/node_lease.h"

#include <kj/debug.h>

#include <cstring>

#include "core/util/check.h"
#include "core/util/log.h"
#include "transport/protocol_convert.h"
#include "transport/worker_process.h"

namespace pl {

void failCall(const std::string& message) {
  kj::throwFatalException(KJ_EXCEPTION(FAILED, message));
}

std::string joinIndices(const std::vector<uint32_t>& indices) {
  std::string out;
  for (uint32_t i : indices) out += (out.empty() ? "" : ",") + std::to_string(i);
  return out;
}

Hash128 geometryKeyOf(const ChunkManifest& manifest) {
  ChunkManifest geometry = manifest;
  ArrayManifest& camera = geometry.arrays[size_t(RenderDataArray::camera)];
  camera.elementCount = 0;  // a scene always has one camera: no scene id is a geometry key
  camera.chunks.clear();
  return sceneIdOf(geometry);
}

Result<kernel::Camera> decodeCamera(const ChunkManifest& manifest, ChunkCache& chunks) {
  // The cache's shared buffers outlive the call: the lookups keep them until it returns.
  std::vector<std::shared_ptr<const std::vector<uint8_t>>> held;
  return decodeCamera(manifest,
                      [&](const Hash128& hash) -> std::optional<std::span<const uint8_t>> {
                        std::shared_ptr<const std::vector<uint8_t>> bytes = chunks.find(hash);
                        if (bytes == nullptr) return std::nullopt;
                        held.push_back(bytes);
                        return std::span<const uint8_t>(*bytes);
                      });
}

std::shared_ptr<const RenderData> NodeResources::decodedHolding(const Hash128& hash) {
  for (auto& [key, d] : decoded) {
    if (!d.index->contains(hash)) continue;
    if (auto data = d.data.lock()) return data;
  }
  return nullptr;
}

RawChunks NodeResources::rawChunksFor(const ChunkManifest& manifest,
                                      std::vector<std::shared_ptr<const RenderData>>& keep) {
  RawChunks raw;
  for (auto& [key, d] : decoded) {
    std::shared_ptr<const RenderData> data = d.data.lock();
    if (data == nullptr) continue;
    const size_t before = raw.size();
    d.index->addViews(manifest, *data, raw);
    if (raw.size() != before) keep.push_back(std::move(data));
  }
  return raw;
}

void NodeResources::forgetExpiredDecoded() {
  for (auto it = decoded.begin(); it != decoded.end();)
    it = it->second.data.expired() ? decoded.erase(it) : std::next(it);
}

bool sameCamera(const kernel::Camera& a, const kernel::Camera& b) {
  return std::memcmp(&a, &b, sizeof(kernel::Camera)) == 0;
}

namespace {

Status loadOnDevice(DeviceSlot& slot, std::shared_ptr<const RenderData> data,
                    NodeCounters& counters) {
  counters.deviceLoads.fetch_add(1, std::memory_order_relaxed);
  Status loaded = slot.device->load(data);
  if (!loaded.ok()) {
    // What the device holds after a failed load is its own business: load in full next time.
    slot.loadedData = nullptr;
    return Error{"device " + slot.info.name + ": load failed: " + loaded.error().message};
  }
  slot.camera = data->camera[0];
  slot.loadedData = std::move(data);
  return Status();
}

}  // namespace

Status ensureLoaded(DeviceSlot& slot, const LoadedScene& scene, NodeCounters& counters) {
  if (slot.loadedData != nullptr && slot.loadedScene == scene.id) return Status();
  PL_CHECK(scene.data != nullptr);
  const bool dataHasCamera = sameCamera(scene.data->camera[0], scene.camera);
  if (slot.loadedData != scene.data && (dataHasCamera || !slot.cannotSetCamera)) {
    if (Status s = loadOnDevice(slot, scene.data, counters); !s.ok()) return s;
  }
  if (slot.loadedData == scene.data && !slot.cannotSetCamera &&
      !sameCamera(slot.camera, scene.camera)) {
    if (slot.device->setCamera(scene.camera).ok()) {
      counters.cameraSwitches.fetch_add(1, std::memory_order_relaxed);
      slot.camera = scene.camera;
    } else {
      slot.cannotSetCamera = true;
    }
  }
  if (slot.loadedData != scene.data || !sameCamera(slot.camera, scene.camera)) {
    // A device that cannot switch cameras (a CUDA device): a copy of the data with this camera.
    auto copy = std::make_shared<RenderData>(*scene.data);
    copy->camera[0] = scene.camera;
    if (Status s = loadOnDevice(slot, std::move(copy), counters); !s.ok()) return s;
  }
  slot.loadedScene = scene.id;
  return Status();
}

void LeaseState::end(const LeaseEnding& how) {
  if (ended) return;
  ended = true;
  endSummary = how.summary();
  ending = how;
  // Lease.ended() first: its answer leaves before the failures of the session's calls.
  auto waiters = std::move(endWaiters);
  for (auto& waiter : waiters) waiter->fulfill();
  cancelled->store(true);
  scenes.clear();
  pins.releaseAll();
  heldForLoads.clear();
  prepared.reset();
  forwardToWorker.clear();
  worker = nullptr;
  workerSession = nullptr;
  onLoaded = nullptr;
}

kj::Promise<void> LeaseState::whenEnded() {
  if (ended) return kj::READY_NOW;
  // Calls the Primary cancelled leave fulfillers nobody waits on: drop them first, so that a
  // Primary calling ended() over and over cannot grow the list.
  endWaiters.erase(std::remove_if(endWaiters.begin(), endWaiters.end(),
                                  [](kj::Own<kj::PromiseFulfiller<void>>& f) {
                                    return !f->isWaiting();
                                  }),
                   endWaiters.end());
  if (endWaiters.size() >= 16) return KJ_EXCEPTION(FAILED, "too many Lease.ended() calls");
  auto paf = kj::newPromiseAndFulfiller<void>();
  endWaiters.push_back(kj::mv(paf.fulfiller));
  return kj::mv(paf.promise);
}

void LeaseState::ForwardErrors::taskFailed(kj::Exception&& e) {
  PL_LOG_WARN("lease %llu: a chunk for its worker was not taken: %s", (unsigned long long)lease_.id,
              e.getDescription().cStr());
  lease_.lastCallUnanswered = true;
}

kj::Promise<void> LeaseState::putsDone() {
  if (putsInFlight == 0) return kj::READY_NOW;
  auto paf = kj::newPromiseAndFulfiller<void>();
  putWaiters.push_back(kj::mv(paf.fulfiller));
  return kj::mv(paf.promise);
}

void LeaseState::putFinished() {
  PL_CHECK(putsInFlight > 0);
  if (--putsInFlight == 0) {
    auto waiters = std::move(putWaiters);
    putWaiters.clear();
    for (auto& waiter : waiters) waiter->fulfill();
  }
}

const LoadedScene* LeaseState::findScene(const Hash128& scene) const {
  for (const LoadedScene& s : scenes) {
    if (s.id == scene) return &s;
  }
  return nullptr;
}

void LeaseState::remember(LoadedScene scene) {
  // Loaded again: the most recent now (a warm worker's session and the daemon's sessions it
  // serves forget the same scenes first).
  std::erase_if(scenes, [&scene](const LoadedScene& s) { return s.id == scene.id; });
  // The first load of a lease: it renders from now on (one line a lease, not one a camera move).
  if (!loadedOnce) {
    loadedOnce = true;
    PL_LOG_INFO("lease %llu of %s: scene %.8s loaded after %.2f s", (unsigned long long)id,
                primary.c_str(), scene.id.hex().c_str(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - granted).count());
  }
  scenes.push_back(std::move(scene));
  const size_t keep = std::max<uint32_t>(node.options.maxScenesPerSession, 1);
  while (scenes.size() > keep) scenes.erase(scenes.begin());
}

// --- WarmWorkerPool ---------------------------------------------------------------------------

std::vector<uint64_t> WarmWorkerPool::offer(uint64_t worker, std::vector<uint32_t> devices,
                                            uint64_t bytes) {
  PL_CHECK(!contains(worker));
  if (limits_.maxWorkers == 0 || bytes > limits_.maxBytes) return {worker};
  std::sort(devices.begin(), devices.end());
  entries_.push_back(Entry{worker, std::move(devices), bytes});
  std::vector<uint64_t> evicted;
  while (entries_.size() > limits_.maxWorkers || this->bytes() > limits_.maxBytes) {
    evicted.push_back(entries_.front().worker);  // never the one just offered: it fits alone
    entries_.pop_front();
  }
  return evicted;
}

WarmWorkerPool::Take WarmWorkerPool::take(std::vector<uint32_t> devices) {
  std::sort(devices.begin(), devices.end());
  Take take;
  for (auto it = entries_.begin(); it != entries_.end();) {
    const std::vector<uint32_t>& held = it->devices;
    if (held == devices && !take.reuse) {
      take.reuse = it->worker;
    } else if (std::find_first_of(held.begin(), held.end(), devices.begin(), devices.end()) !=
               held.end()) {
      take.stop.push_back(it->worker);
    } else {
      ++it;
      continue;
    }
    it = entries_.erase(it);
  }
  return take;
}

bool WarmWorkerPool::remove(uint64_t worker) {
  auto it = std::find_if(entries_.begin(), entries_.end(),
                         [worker](const Entry& e) { return e.worker == worker; });
  if (it == entries_.end()) return false;
  entries_.erase(it);
  return true;
}

std::vector<uint64_t> WarmWorkerPool::clear() {
  std::vector<uint64_t> all;
  for (const Entry& e : entries_) all.push_back(e.worker);
  entries_.clear();
  return all;
}

bool WarmWorkerPool::contains(uint64_t worker) const {
  return std::any_of(entries_.begin(), entries_.end(),
                     [worker](const Entry& e) { return e.worker == worker; });
}

uint64_t WarmWorkerPool::bytes() const {
  uint64_t total = 0;
  for (const Entry& e : entries_) total += e.bytes;
  return total;
}

}  // namespace pl
