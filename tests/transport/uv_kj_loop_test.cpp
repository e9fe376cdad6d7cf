// The libuv <-> KJ bridge: timers, run() lifetime, top-level wait, work from other threads.

#include "transport/uv_kj_loop.h"

#include <gtest/gtest.h>
#include <kj/vector.h>
#include <signal.h>

#include <string>
#include <thread>
#include <vector>

#include "tests/transport/loop_test_util.h"
#include "core/util/uv_handle.h"

namespace pl {
namespace {

using testing::waitFor;
using testing::Watchdog;

TEST(UvKjLoop, KjTimersFireInOrderOnTheUvLoop) {
  UvKjLoop loop;
  Watchdog watchdog(loop, 5000, /*keepAlive=*/false);
  std::vector<int> fired;
  std::vector<uint64_t> firedAtMs;
  uint64_t startMs = uv_now(loop.uv());
  kj::Vector<kj::Promise<void>> pending;
  for (int delayMs : {30, 10, 20, 0}) {
    pending.add(loop.timer()
                    .afterDelay(delayMs * kj::MILLISECONDS)
                    .then([&, delayMs]() {
                      fired.push_back(delayMs);
                      firedAtMs.push_back(uv_now(loop.uv()));
                    })
                    .eagerlyEvaluate(nullptr));
  }
  // Nothing else is alive: run() must keep going exactly while KJ timers are pending.
  loop.run();
  EXPECT_FALSE(watchdog.fired());
  ASSERT_EQ(fired, (std::vector<int>{0, 10, 20, 30}));
  for (size_t i = 0; i < fired.size(); ++i) {
    EXPECT_GE(firedAtMs[i] - startMs, uint64_t(fired[i])) << "timer " << fired[i] << " early";
  }
}

TEST(UvKjLoop, UvAndKjTimersInterleaveByDueTime) {
  UvKjLoop loop;
  Watchdog watchdog(loop, 5000, /*keepAlive=*/false);
  std::vector<std::string> order;

  struct UvTimer {
    UvHandle<uv_timer_t> handle;
    std::string name;
    std::vector<std::string>* order;
  };
  std::vector<std::unique_ptr<UvTimer>> uvTimers;
  for (int delayMs : {5, 15, 25}) {
    auto t = std::make_unique<UvTimer>();
    ASSERT_EQ(t->handle.init(loop.uv(), uv_timer_init), 0);
    t->name = "uv" + std::to_string(delayMs);
    t->order = &order;
    t->handle->data = t.get();
    uv_timer_start(
        t->handle.get(),
        [](uv_timer_t* h) {
          auto* self = static_cast<UvTimer*>(h->data);
          self->order->push_back(self->name);
        },
        delayMs, 0);
    uvTimers.push_back(std::move(t));
  }
  kj::Vector<kj::Promise<void>> pending;
  for (int delayMs : {10, 20, 30}) {
    pending.add(loop.timer()
                    .afterDelay(delayMs * kj::MILLISECONDS)
                    .then([&order, delayMs]() { order.push_back("kj" + std::to_string(delayMs)); })
                    .eagerlyEvaluate(nullptr));
  }
  // A KJ continuation started from a uv callback, and a uv timer started from KJ, both on time.
  pending.add(loop.timer()
                  .afterDelay(2 * kj::MILLISECONDS)
                  .then([&]() {
                    auto t = std::make_unique<UvTimer>();
                    EXPECT_EQ(t->handle.init(loop.uv(), uv_timer_init), 0);
                    t->name = "uv-from-kj35";
                    t->order = &order;
                    t->handle->data = t.get();
                    uv_timer_start(
                        t->handle.get(),
                        [](uv_timer_t* h) {
                          auto* self = static_cast<UvTimer*>(h->data);
                          self->order->push_back(self->name);
                        },
                        33, 0);
                    uvTimers.push_back(std::move(t));
                  })
                  .eagerlyEvaluate(nullptr));
  loop.run();
  EXPECT_FALSE(watchdog.fired());
  EXPECT_EQ(order, (std::vector<std::string>{"uv5", "kj10", "uv15", "kj20", "uv25", "kj30",
                                             "uv-from-kj35"}));
}

TEST(UvKjLoop, RunReturnsOnlyWhenKjWorkIsDone) {
  // Trap 2: pending KJ work must keep uv_run going, also with no timers or fds involved.
  UvKjLoop loop;
  Watchdog watchdog(loop, 5000, /*keepAlive=*/false);
  int steps = 0;
  kj::Promise<void> chain = kj::evalLater([&]() { ++steps; });
  for (int i = 0; i < 100; ++i)
    chain = chain.then([&]() { return kj::evalLater([&]() { ++steps; }); });
  chain = chain.eagerlyEvaluate(nullptr);
  loop.run();
  EXPECT_EQ(steps, 101);
  // And the loop still works afterwards (trap 1: runnable state must not go stale).
  auto more = kj::evalLater([&]() { ++steps; }).eagerlyEvaluate(nullptr);
  loop.run();
  EXPECT_EQ(steps, 102);
}

TEST(UvKjLoop, KjWorkStartedFromAPlainUvCallbackRuns) {
  // A plain uv callback (signals, process exits, ...) fulfilling a KJ promise. This only works
  // if KJ reports its runnable state to the port correctly after every turn (trap 1).
  UvKjLoop loop;
  Watchdog watchdog(loop, 5000, /*keepAlive=*/false);
  auto paf = kj::newPromiseAndFulfiller<void>();
  bool continued = false;
  auto continuation = paf.promise.then([&]() { continued = true; }).eagerlyEvaluate(nullptr);
  // Some KJ work first, turned by the bridge's own callbacks.
  auto warmUp = loop.timer().afterDelay(1 * kj::MILLISECONDS).eagerlyEvaluate(nullptr);
  UvHandle<uv_timer_t> plain;
  ASSERT_EQ(plain.init(loop.uv(), uv_timer_init), 0);
  plain->data = paf.fulfiller.get();
  uv_timer_start(
      plain.get(),
      [](uv_timer_t* h) { static_cast<kj::PromiseFulfiller<void>*>(h->data)->fulfill(); }, 10, 0);
  loop.run();
  EXPECT_TRUE(continued);
}

TEST(UvKjLoop, TopLevelWaitDrivesTheUvLoop) {
  UvKjLoop loop;
  int uvFired = 0;
  UvHandle<uv_timer_t> uvTimer;
  ASSERT_EQ(uvTimer.init(loop.uv(), uv_timer_init), 0);
  uvTimer->data = &uvFired;
  uv_timer_start(
      uvTimer.get(), [](uv_timer_t* h) { ++*static_cast<int*>(h->data); }, 1, 0);
  waitFor(loop, loop.timer().afterDelay(10 * kj::MILLISECONDS));
  EXPECT_EQ(uvFired, 1);  // the plain uv timer ran while KJ waited
  EXPECT_EQ(waitFor(loop, kj::evalLater([]() { return 42; })), 42);
  // Mixed: KJ work started by top-level wait, continued by run().
  bool done = false;
  auto p = loop.timer()
               .afterDelay(1 * kj::MILLISECONDS)
               .then([&]() { done = true; })
               .eagerlyEvaluate(nullptr);
  loop.run();
  EXPECT_TRUE(done);
}

TEST(UvKjLoop, IgnoresSigpipe) {
  UvKjLoop loop;
  struct sigaction current = {};
  ASSERT_EQ(sigaction(SIGPIPE, nullptr, &current), 0);
  EXPECT_EQ(current.sa_handler, SIG_IGN);
}

TEST(UvKjLoop, PostFromAnotherThreadRunsInOrderOnTheLoopThread) {
  UvKjLoop loop;
  Watchdog watchdog(loop, 8000, /*keepAlive=*/true);
  constexpr int kPosts = 1000;
  std::vector<int> seen;
  bool allOnLoopThread = true;
  const std::thread::id loopThread = std::this_thread::get_id();
  bool kjRanAfterPost = false;
  kj::Maybe<kj::Promise<void>> kjWork;

  std::thread poster([&]() {
    for (int i = 0; i < kPosts; ++i) {
      loop.post([&, i]() {
        seen.push_back(i);
        if (std::this_thread::get_id() != loopThread) allOnLoopThread = false;
        if (i == kPosts - 1) {
          // KJ work started from a posted function runs too, then ends the test.
          kjWork = kj::evalLater([&]() {
                     kjRanAfterPost = true;
                     loop.stop();
                   }).eagerlyEvaluate(nullptr);
        }
      });
    }
  });
  loop.run();
  poster.join();
  EXPECT_FALSE(watchdog.fired());
  ASSERT_EQ(seen.size(), size_t(kPosts));
  for (int i = 0; i < kPosts; ++i) ASSERT_EQ(seen[i], i);
  EXPECT_TRUE(allOnLoopThread);
  EXPECT_TRUE(kjRanAfterPost);
}

TEST(UvKjLoop, KjExecutorFromAnotherThreadWakesTheLoop) {
  UvKjLoop loop;
  Watchdog watchdog(loop, 8000, /*keepAlive=*/true);
  const kj::Executor& executor = loop.executor();
  const std::thread::id loopThread = std::this_thread::get_id();
  int counter = 0;  // touched only on the loop thread
  bool allOnLoopThread = true;
  int asyncAnswer = 0;

  std::thread caller([&]() {
    for (int i = 0; i < 100; ++i) {
      bool onLoop = executor.executeSync([&]() {
        ++counter;
        return std::this_thread::get_id() == loopThread;
      });
      if (!onLoop) allOnLoopThread = false;
    }
    // executeAsync needs a KJ loop on the calling thread: a second UvKjLoop.
    UvKjLoop own;
    asyncAnswer = executor.executeAsync([&]() { return counter + 1; }).wait(own.waitScope());
    executor.executeSync([&]() { loop.stop(); });
  });
  loop.run();
  caller.join();
  EXPECT_FALSE(watchdog.fired());
  EXPECT_EQ(counter, 100);
  EXPECT_TRUE(allOnLoopThread);
  EXPECT_EQ(asyncAnswer, 101);
}

TEST(UvKjLoop, BorrowedLoopIsDrivenAndLeftUsable) {
  uv_loop_t raw;
  ASSERT_EQ(uv_loop_init(&raw), 0);
  {
    UvKjLoop loop(&raw);
    int value =
        waitFor(loop, loop.timer().afterDelay(2 * kj::MILLISECONDS).then([]() { return 7; }));
    EXPECT_EQ(value, 7);
  }
  uv_run(&raw, UV_RUN_DEFAULT);  // frees the bridge's closed handles
  EXPECT_EQ(uv_loop_close(&raw), 0);
}

}  // namespace
}  // namespace pl
