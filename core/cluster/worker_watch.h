#pragma once
// The node daemon's judgement of a worker process's heartbeats, as pure logic (the daemon's
// WorkerProcess, transport/worker_process.h, looks every lookPeriod and carries it out).
//
//   WorkerWatch watch(options, now);       // the worker was started now
//   watch.heartbeat(now);                  // each Supervisor.heartbeat() call
//   WorkerVerdict v = watch.look(now);     // every lookPeriod: Fine, Hung or DidNotStart
//
// - Until its first heartbeat a worker is starting (opening devices: a CUDA context per GPU can
//   take seconds): it did not start when none came within startupTimeout (at least
//   heartbeatTimeout). After that it is hung when none came within heartbeatTimeout.
// - A look that comes more than loopStall after its period (the daemon's own loop was held up:
//   a long step, a starved core, a stopped process) does not judge: heartbeats that came
//   meanwhile are still unread, as libuv runs timers before it polls I/O. The next look judges
//   whatever its timing, so a loop that keeps stalling cannot keep a hung worker alive.
//
// No clock of its own: `now` is passed in. Not thread-safe.

#include <chrono>

#include "core/cluster/scheduler.h"

namespace pl {

struct WorkerWatchOptions {
  std::chrono::microseconds heartbeatTimeout = std::chrono::milliseconds(2000);
  std::chrono::microseconds startupTimeout = std::chrono::milliseconds(30000);
  std::chrono::microseconds lookPeriod = std::chrono::milliseconds(100);
  std::chrono::microseconds loopStall = std::chrono::milliseconds(400);
};

struct WorkerVerdict {
  enum class Kind { Fine, Hung, DidNotStart };
  Kind kind = Kind::Fine;
  std::chrono::microseconds silence{0};  // since the last heartbeat, or the start
};

class WorkerWatch {
 public:
  WorkerWatch(WorkerWatchOptions options, SchedulerTime started);

  // Returns true for the first heartbeat (the worker has started).
  bool heartbeat(SchedulerTime now);
  WorkerVerdict look(SchedulerTime now);

 private:
  WorkerWatchOptions options_;
  SchedulerTime started_;
  SchedulerTime lastLook_;
  bool beating_ = false;
  SchedulerTime lastBeat_{};
  bool graceTaken_ = false;
};

}  // namespace pl
