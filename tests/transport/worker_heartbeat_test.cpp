// The worker's heartbeats (transport/worker_process.h, HeartbeatSender): they keep coming while
// the daemon's answers wait (behind chunks on the same socket), and a failed call is reported
// once.

#include <gtest/gtest.h>
#include <kj/async.h>

#include <functional>
#include <string>

#include "tests/transport/loop_test_util.h"
#include "transport/worker_process.h"

namespace pl {
namespace {

// A supervisor that counts heartbeats and answers none of them (NEVER_DONE), or fails them.
// Runs the loop until `done` holds, in 5 ms steps; fails after `ms` (a loaded machine's
// timers come late, so the tests wait on what happened rather than on a fixed window).
bool runUntil(UvKjLoop& loop, const std::function<bool()>& done, int64_t ms = 10000) {
  for (int64_t waited = 0; !done(); waited += 5) {
    if (waited >= ms) return false;
    testing::waitFor(loop, loop.timer().afterDelay(5 * kj::MILLISECONDS));
  }
  return true;
}

class SlowSupervisor final : public proto::Supervisor::Server {
 public:
  SlowSupervisor(uint32_t& calls, bool fail) : calls_(calls), fail_(fail) {}
  kj::Promise<void> heartbeat(HeartbeatContext) override {
    ++calls_;
    if (fail_) return KJ_EXCEPTION(DISCONNECTED, "the daemon is gone");
    return kj::NEVER_DONE;
  }

 private:
  uint32_t& calls_;
  bool fail_;
};

TEST(WorkerHeartbeats, KeepComingWhileTheAnswersWait) {
  UvKjLoop loop;
  uint32_t calls = 0;
  bool failed = false;
  HeartbeatSender sender(loop, kj::heap<SlowSupervisor>(calls, false), 10,
                         [&failed](const kj::Exception&) { failed = true; });
  // A sender that waited for each answer would make one call.
  EXPECT_TRUE(runUntil(loop, [&] { return calls >= 10; })) << calls;
  EXPECT_LE(sender.sent() - calls, 1u);  // the last one may still be on its way
  EXPECT_FALSE(failed);
}

TEST(WorkerHeartbeats, StopWhenSixtyFourWaitAndNeverFailForWaiting) {
  UvKjLoop loop;
  uint32_t calls = 0;
  bool failed = false;
  HeartbeatSender sender(loop, kj::heap<SlowSupervisor>(calls, false), 1,
                         [&failed](const kj::Exception&) { failed = true; });
  ASSERT_TRUE(runUntil(loop, [&] { return calls >= 64; })) << calls;
  // Fifty periods more: none sent.
  testing::waitFor(loop, loop.timer().afterDelay(50 * kj::MILLISECONDS));
  EXPECT_EQ(calls, 64u);
  EXPECT_EQ(sender.sent(), 64u);
  EXPECT_FALSE(failed);
}

TEST(WorkerHeartbeats, AFailedCallIsReportedOnceAndEndsThem) {
  UvKjLoop loop;
  uint32_t calls = 0;
  int failures = 0;
  std::string why;
  HeartbeatSender sender(loop, kj::heap<SlowSupervisor>(calls, true), 5,
                         [&](const kj::Exception& e) {
                           ++failures;
                           why = e.getDescription().cStr();
                         });
  ASSERT_TRUE(runUntil(loop, [&] { return failures > 0; }));
  testing::waitFor(loop, loop.timer().afterDelay(50 * kj::MILLISECONDS));
  EXPECT_EQ(failures, 1);
  EXPECT_NE(why.find("the daemon is gone"), std::string::npos) << why;
  EXPECT_LE(calls, 2u);  // none after the failure was seen
}

}  // namespace
}  // namespace pl
