#pragma once
// Helpers for the scheduler's tests: a manual clock in milliseconds, simulated devices that
// render at a fixed speed, and synthetic results whose sums identify the samples they hold.

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <random>
#include <vector>

#include "core/cluster/scheduler.h"
#include "core/render/work_unit.h"

namespace pl::sim {

inline SchedulerTime at(int64_t ms) { return SchedulerTime{} + std::chrono::milliseconds(ms); }
inline uint64_t work(const WorkUnit& u) { return u.tile.pixelCount() * u.sampleCount(); }

// A synthetic result whose sums identify the samples: R counts them, G sums their indices,
// B sums their squares. A film that sums to spp, sum(s), sum(s^2) per pixel got each sample
// of each pixel once (overlaps and gaps cannot cancel in all three).
inline TileResult syntheticResult(const WorkUnit& u) {
  TileResult r;
  r.unit = u;
  int64_t count = 0, sum = 0, squares = 0;
  for (int64_t s = u.sampleBegin; s < u.sampleEnd; ++s) {
    ++count;
    sum += s;
    squares += s * s;
  }
  r.sums.reserve(u.tile.pixelCount() * 3);
  for (uint64_t i = 0; i < u.tile.pixelCount(); ++i) {
    r.sums.push_back(count);
    r.sums.push_back(sum);
    r.sums.push_back(squares);
  }
  return r;
}

struct SimDevice {
  DeviceId id;
  double speed;
  bool alive = true;
  std::deque<WorkUnit> queue;
  double progress = 0;  // pixel samples done of queue.front()
};

// A device joins (at time 0): id devices.size() + 1, 1 to 4 units in flight, 20 to 3000 pixel
// samples per ms.
inline void joinRandomDevice(Scheduler& s, std::vector<SimDevice>& devices, std::mt19937& rng) {
  auto uniform = [&](uint32_t lo, uint32_t hi) {
    return std::uniform_int_distribution<uint32_t>(lo, hi)(rng);
  };
  const DeviceId id{devices.size() + 1};
  s.addDevice(id, at(0), uniform(1, 4));
  devices.push_back({id, double(uniform(20, 3000)), true, {}});
}

// Steps time by 1 ms: devices ask for work, then make progress; finished units complete().
// Calls onResult(device, unit, accepted) for each result.
template <typename OnResult>
void step(Scheduler& s, std::vector<SimDevice>& devices, int64_t t, OnResult&& onResult) {
  for (SimDevice& d : devices) {
    if (!d.alive) continue;
    while (std::optional<WorkUnit> u = s.nextUnit(d.id, at(t))) d.queue.push_back(*u);
    double budget = d.speed;
    while (!d.queue.empty() && budget > 0) {
      const double need = double(work(d.queue.front())) - d.progress;
      if (budget < need) {
        d.progress += budget;
        break;
      }
      budget -= need;
      d.progress = 0;
      WorkUnit done = d.queue.front();
      d.queue.pop_front();
      onResult(d, done, s.complete(d.id, done, at(t + 1)));
    }
  }
}

}  // namespace pl::sim
