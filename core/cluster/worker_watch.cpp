#include "core/cluster/worker_watch.h"

#include <algorithm>

namespace pl {

WorkerWatch::WorkerWatch(WorkerWatchOptions options, SchedulerTime started)
    : options_(options), started_(started), lastLook_(started) {}

bool WorkerWatch::heartbeat(SchedulerTime now) {
  const bool first = !beating_;
  beating_ = true;
  lastBeat_ = now;
  return first;
}

WorkerVerdict WorkerWatch::look(SchedulerTime now) {
  const auto sinceLook = now - lastLook_;
  lastLook_ = now;
  if (sinceLook > options_.lookPeriod + options_.loopStall && !graceTaken_) {
    graceTaken_ = true;
    return {};
  }
  graceTaken_ = false;
  WorkerVerdict v;
  v.silence = std::chrono::duration_cast<std::chrono::microseconds>(
      now - (beating_ ? lastBeat_ : started_));
  const auto limit = beating_ ? options_.heartbeatTimeout
                              : std::max(options_.heartbeatTimeout, options_.startupTimeout);
  if (v.silence >= limit) v.kind = beating_ ? WorkerVerdict::Kind::Hung
                                            : WorkerVerdict::Kind::DidNotStart;
  return v;
}

}  // namespace pl
