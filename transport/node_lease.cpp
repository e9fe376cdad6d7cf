#include "transport/node_lease.h"

#include <kj/debug.h>

#include "core/util/check.h"
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

Status ensureLoaded(DeviceSlot& slot, const Hash128& id,
                    const std::shared_ptr<const RenderData>& data) {
  if (slot.loadedData != nullptr && slot.loadedScene == id) return Status();
  Status loaded = slot.device->load(data);
  if (!loaded.ok()) {
    return Error{"device " + slot.info.name + ": load failed: " + loaded.error().message};
  }
  slot.loadedScene = id;
  slot.loadedData = data;
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
  if (worker != nullptr) {
    worker->stop("lease " + std::to_string(uint64_t(id)) + " " + endSummary);
    worker = nullptr;
  }
  workerSession = nullptr;
  workerLease = nullptr;
}

kj::Promise<void> LeaseState::whenEnded() {
  if (ended) return kj::READY_NOW;
  auto paf = kj::newPromiseAndFulfiller<void>();
  endWaiters.push_back(kj::mv(paf.fulfiller));
  return kj::mv(paf.promise);
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

}  // namespace pl
