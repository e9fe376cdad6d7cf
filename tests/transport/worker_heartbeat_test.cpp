// The worker's heartbeats (transport/worker_process.h, HeartbeatSender): they keep coming while
// the daemon's answers wait (behind chunks on the same socket), and a failed call is reported
// once.

#include <gtest/gtest.h>
#include <kj/async.h>

#include <string>

#include "tests/transport/loop_test_util.h"
#include "transport/worker_process.h"

namespace pl {
namespace {

// A supervisor that counts heartbeats and answers none of them (NEVER_DONE), or fails them.
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
  testing::waitFor(loop, loop.timer().afterDelay(300 * kj::MILLISECONDS));
  // One call every 10 ms: a sender that waited for each answer would have made one.
  EXPECT_GE(calls, 10u);
  EXPECT_EQ(uint64_t(calls), sender.sent());
  EXPECT_FALSE(failed);
}

TEST(WorkerHeartbeats, StopWhenSixtyFourWaitAndNeverFailForWaiting) {
  UvKjLoop loop;
  uint32_t calls = 0;
  bool failed = false;
  HeartbeatSender sender(loop, kj::heap<SlowSupervisor>(calls, false), 1,
                         [&failed](const kj::Exception&) { failed = true; });
  testing::waitFor(loop, loop.timer().afterDelay(400 * kj::MILLISECONDS));
  EXPECT_EQ(calls, 64u);
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
  testing::waitFor(loop, loop.timer().afterDelay(100 * kj::MILLISECONDS));
  EXPECT_EQ(failures, 1);
  EXPECT_NE(why.find("the daemon is gone"), std::string::npos) << why;
  EXPECT_LE(calls, 2u);  // none after the failure was seen
}

}  // namespace
}  // namespace pl
