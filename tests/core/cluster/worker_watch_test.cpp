// The node daemon's judgement of its workers' heartbeats (core/cluster/worker_watch.h) on a
// manual clock.

#include "core/cluster/worker_watch.h"

#include <gtest/gtest.h>

namespace pl {
namespace {

using std::chrono::milliseconds;
using Kind = WorkerVerdict::Kind;

SchedulerTime at(int64_t ms) { return SchedulerTime{} + milliseconds(ms); }

WorkerWatchOptions options() {
  WorkerWatchOptions o;
  o.heartbeatTimeout = milliseconds(2000);
  o.startupTimeout = milliseconds(30000);
  o.lookPeriod = milliseconds(100);
  o.loopStall = milliseconds(400);
  return o;
}

// Looks every 100 ms from `from` (exclusive) to `to` (inclusive); the first verdict that is not
// Fine, or Fine.
WorkerVerdict lookEvery100(WorkerWatch& w, int64_t from, int64_t to) {
  for (int64_t t = from + 100; t <= to; t += 100) {
    const WorkerVerdict v = w.look(at(t));
    if (v.kind != Kind::Fine) return v;
  }
  return {};
}

TEST(WorkerWatch, AStartingWorkerHasTheStartUpAllowance) {
  WorkerWatch w(options(), at(0));
  EXPECT_EQ(lookEvery100(w, 0, 29900).kind, Kind::Fine);
  const WorkerVerdict v = w.look(at(30000));
  EXPECT_EQ(v.kind, Kind::DidNotStart);
  EXPECT_EQ(v.silence, milliseconds(30000));
}

TEST(WorkerWatch, HungWhenNoHeartbeatForTheTimeout) {
  WorkerWatch w(options(), at(0));
  EXPECT_TRUE(w.heartbeat(at(50)));   // the first: started
  EXPECT_FALSE(w.heartbeat(at(250)));
  EXPECT_EQ(lookEvery100(w, 0, 2200).kind, Kind::Fine);
  const WorkerVerdict v = w.look(at(2300));
  EXPECT_EQ(v.kind, Kind::Hung);
  EXPECT_EQ(v.silence, milliseconds(2050));
}

TEST(WorkerWatch, HeartbeatsKeepItFine) {
  WorkerWatch w(options(), at(0));
  for (int64_t t = 0; t < 10000; t += 100) {
    if (t % 250 == 0) w.heartbeat(at(t));
    EXPECT_EQ(w.look(at(t + 100)).kind, Kind::Fine) << t;
  }
}

// The daemon's loop stalls 3 s: the late look does not judge; the heartbeats read right after
// it keep the worker; had none come, the next look judges.
TEST(WorkerWatch, ALateLookWaitsForTheHeartbeatsStillUnread) {
  WorkerWatch w(options(), at(0));
  w.heartbeat(at(100));
  EXPECT_EQ(w.look(at(100)).kind, Kind::Fine);
  EXPECT_EQ(w.look(at(3100)).kind, Kind::Fine);  // 3 s late: no judgement
  w.heartbeat(at(3110));                          // what came during the stall, read now
  EXPECT_EQ(w.look(at(3200)).kind, Kind::Fine);

  WorkerWatch hung(options(), at(0));
  hung.heartbeat(at(100));
  EXPECT_EQ(hung.look(at(100)).kind, Kind::Fine);
  EXPECT_EQ(hung.look(at(3100)).kind, Kind::Fine);
  EXPECT_EQ(hung.look(at(3200)).kind, Kind::Hung);
}

// A loop late at every look still judges every second one.
TEST(WorkerWatch, ALoopThatKeepsStallingStillJudges) {
  WorkerWatch late(options(), at(0));
  late.heartbeat(at(0));
  EXPECT_EQ(late.look(at(1500)).kind, Kind::Fine);  // no judgement
  EXPECT_EQ(late.look(at(3000)).kind, Kind::Hung);  // judged although late too
}

}  // namespace
}  // namespace pl
