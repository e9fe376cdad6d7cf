// UvAvahiPoll (discovery/avahi_poll.h): Avahi's AvahiPoll on libuv. No daemon needed: watches
// are tested on a socketpair, timeouts with the real clock.

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <thread>
#include <vector>

#include "discovery/avahi_poll.h"

namespace pl {
namespace {

int64_t nowUs() {
  struct timeval tv;
  gettimeofday(&tv, nullptr);
  return int64_t(tv.tv_sec) * 1000000 + tv.tv_usec;
}

struct timeval tvFromUs(int64_t us) {
  struct timeval tv;
  tv.tv_sec = us / 1000000;
  tv.tv_usec = us % 1000000;
  return tv;
}

class AvahiPollTest : public ::testing::Test {
 protected:
  AvahiPollTest() {
    uv_loop_init(&loop_);
    poll_ = std::make_unique<UvAvahiPoll>(&loop_);
    api_ = poll_->avahiPoll();
  }
  ~AvahiPollTest() override {
    poll_.reset();
    uv_run(&loop_, UV_RUN_DEFAULT);  // close callbacks of the handles
    EXPECT_EQ(uv_loop_close(&loop_), 0) << "a libuv handle leaked";
  }

  // Runs the loop until a callback calls uv_stop() or `ms` pass (then fails).
  void runFor(uint64_t ms, bool failOnTimeout = true) {
    uv_timer_t guard;
    uv_timer_init(&loop_, &guard);
    guard.data = &timedOut_;
    timedOut_ = false;
    uv_timer_start(
        &guard,
        [](uv_timer_t* t) {
          *static_cast<bool*>(t->data) = true;
          uv_stop(t->loop);
        },
        ms, 0);
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_close(reinterpret_cast<uv_handle_t*>(&guard), nullptr);
    uv_run(&loop_, UV_RUN_NOWAIT);
    if (failOnTimeout) {
      EXPECT_FALSE(timedOut_) << "nothing stopped the loop within " << ms << " ms";
    }
  }

  uv_loop_t loop_;
  std::unique_ptr<UvAvahiPoll> poll_;
  const AvahiPoll* api_ = nullptr;
  bool timedOut_ = false;
};

struct Fired {
  int count = 0;
  int64_t atUs = 0;
  bool stopLoop = true;
  uv_loop_t* loop = nullptr;
};

void onTimeout(AvahiTimeout*, void* userdata) {
  auto* f = static_cast<Fired*>(userdata);
  ++f->count;
  f->atUs = nowUs();
  if (f->stopLoop) uv_stop(f->loop);
}

TEST_F(AvahiPollTest, DelayIsRoundedUpAndClampedAtZero) {
  EXPECT_EQ(UvAvahiPoll::delayMsUntil(tvFromUs(nowUs() - 5000000)), 0u);
  EXPECT_EQ(UvAvahiPoll::delayMsUntil(tvFromUs(0)), 0u);
  // 10 s + 500 us ahead: 10000.5 ms rounds UP to 10001 (truncation would fire early).
  EXPECT_EQ(UvAvahiPoll::delayMsUntil(tvFromUs(nowUs() + 10000500)), 10001u);
}

TEST_F(AvahiPollTest, DeadlineInThePastFiresAtOnce) {
  Fired f{.loop = &loop_};
  // An absolute deadline 5 s ago (a relative reading would wait ~forever or 5 s).
  struct timeval tv = tvFromUs(nowUs() - 5000000);
  int64_t start = nowUs();
  AvahiTimeout* t = api_->timeout_new(api_, &tv, &onTimeout, &f);
  ASSERT_NE(t, nullptr);
  runFor(2000);
  EXPECT_EQ(f.count, 1);
  EXPECT_LT(f.atUs - start, 100000) << "a past deadline must fire at once";
  api_->timeout_free(t);
  EXPECT_EQ(poll_->timeoutCount(), 0u);
}

TEST_F(AvahiPollTest, DeadlineInTheFutureFiresNotBefore) {
  for (int64_t aheadUs : {1500, 30700, 150000}) {
    Fired f{.loop = &loop_};
    int64_t deadline = nowUs() + aheadUs;
    struct timeval tv = tvFromUs(deadline);
    AvahiTimeout* t = api_->timeout_new(api_, &tv, &onTimeout, &f);
    runFor(3000);
    EXPECT_EQ(f.count, 1);
    EXPECT_GE(f.atUs, deadline) << "fired " << (deadline - f.atUs) << " us early (" << aheadUs << ")";
    EXPECT_LT(f.atUs, deadline + 100000) << "fired late";
    api_->timeout_free(t);
  }
}

// The loop's cached clock lags while a callback runs: a deadline set late in a long iteration
// must still not fire early.
TEST_F(AvahiPollTest, DeadlineSetLateInALongIterationIsNotEarly) {
  struct Ctx {
    const AvahiPoll* api;
    Fired fired;
    int64_t deadline = 0;
    AvahiTimeout* t = nullptr;
  } ctx{api_, Fired{.loop = &loop_}};
  uv_timer_t kick;
  uv_timer_init(&loop_, &kick);
  kick.data = &ctx;
  uv_timer_start(
      &kick,
      [](uv_timer_t* h) {
        auto* c = static_cast<Ctx*>(h->data);
        std::this_thread::sleep_for(std::chrono::milliseconds(80));  // busy iteration
        c->deadline = nowUs() + 50000;
        struct timeval tv = tvFromUs(c->deadline);
        c->t = c->api->timeout_new(c->api, &tv, &onTimeout, &c->fired);
      },
      0, 0);
  runFor(3000);
  uv_close(reinterpret_cast<uv_handle_t*>(&kick), nullptr);
  uv_run(&loop_, UV_RUN_NOWAIT);
  ASSERT_EQ(ctx.fired.count, 1);
  EXPECT_GE(ctx.fired.atUs, ctx.deadline) << "fired " << (ctx.deadline - ctx.fired.atUs)
                                          << " us early";
  api_->timeout_free(ctx.t);
}

TEST_F(AvahiPollTest, NullDeadlineDisablesAndUpdateRearms) {
  Fired f{.loop = &loop_};
  AvahiTimeout* t = api_->timeout_new(api_, nullptr, &onTimeout, &f);
  ASSERT_NE(t, nullptr);
  runFor(100, /*failOnTimeout=*/false);
  EXPECT_EQ(f.count, 0) << "a NULL deadline is disabled";

  struct timeval soon = tvFromUs(nowUs() + 20000);
  api_->timeout_update(t, &soon);
  api_->timeout_update(t, nullptr);  // disabled again before it fires
  runFor(100, /*failOnTimeout=*/false);
  EXPECT_EQ(f.count, 0);

  soon = tvFromUs(nowUs() + 20000);
  api_->timeout_update(t, &soon);
  runFor(2000);
  EXPECT_EQ(f.count, 1);
  // After firing it stays disabled (one-shot), until updated.
  f.stopLoop = false;
  runFor(100, /*failOnTimeout=*/false);
  EXPECT_EQ(f.count, 1);
  api_->timeout_free(t);
}

TEST_F(AvahiPollTest, TimeoutMayFreeItselfInItsCallback) {
  struct Ctx {
    const AvahiPoll* api;
    uv_loop_t* loop;
    int count = 0;
  } ctx{api_, &loop_};
  struct timeval now = tvFromUs(nowUs());
  api_->timeout_new(
      api_, &now,
      [](AvahiTimeout* t, void* userdata) {
        auto* c = static_cast<Ctx*>(userdata);
        ++c->count;
        c->api->timeout_free(t);
        uv_stop(c->loop);
      },
      &ctx);
  runFor(2000);
  EXPECT_EQ(ctx.count, 1);
  EXPECT_EQ(poll_->timeoutCount(), 0u);
}

// --- watches -------------------------------------------------------------------------------

struct WatchLog {
  WatchLog(const AvahiPoll* a, uv_loop_t* l, int f) : api(a), loop(l), fd(f) {}
  const AvahiPoll* api = nullptr;
  uv_loop_t* loop = nullptr;
  int fd = -1;
  std::vector<int> events;      // as passed to the callback
  std::vector<int> getEvents;   // watch_get_events() inside the callback
  bool drain = false;           // read what is readable
  bool quietAfter = false;      // watch_update(0) after the first call (OUT is always ready)
  AvahiWatch* freeThisToo = nullptr;  // freed from inside the callback
  bool stop = true;
};

void onWatch(AvahiWatch* w, int fd, AvahiWatchEvent event, void* userdata) {
  auto* log = static_cast<WatchLog*>(userdata);
  log->events.push_back(event);
  log->getEvents.push_back(log->api->watch_get_events(w));
  if (log->drain && (event & AVAHI_WATCH_IN)) {
    char buf[64];
    ssize_t n = read(fd, buf, sizeof(buf));
    (void)n;
  }
  if (log->quietAfter) log->api->watch_update(w, AvahiWatchEvent(0));
  if (log->freeThisToo != nullptr) {
    log->api->watch_free(log->freeThisToo);
    log->freeThisToo = nullptr;
  }
  if (log->stop) uv_stop(log->loop);
}

class AvahiWatchTest : public AvahiPollTest {
 protected:
  AvahiWatchTest() { EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds_), 0); }
  ~AvahiWatchTest() override {
    close(fds_[0]);
    close(fds_[1]);
  }
  int fds_[2] = {-1, -1};
};

// libdbus's pattern: a read watch and a write watch on the same socket. Plain uv_poll_t per
// watch fails here (UV_EEXIST for the second one).
TEST_F(AvahiWatchTest, TwoWatchesOnOneFdBothGetTheirEvents) {
  WatchLog reader{api_, &loop_, fds_[0]};
  reader.drain = true;
  WatchLog writer{api_, &loop_, fds_[0]};
  writer.quietAfter = true;
  AvahiWatch* r = api_->watch_new(api_, fds_[0], AVAHI_WATCH_IN, &onWatch, &reader);
  AvahiWatch* w = api_->watch_new(api_, fds_[0], AVAHI_WATCH_OUT, &onWatch, &writer);
  ASSERT_NE(r, nullptr);
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(poll_->polledFdCount(), 1u) << "one uv_poll_t per fd";
  EXPECT_EQ(poll_->watchCount(), 2u);

  // The socket is writable at once: only the writer hears of it, and only OUT.
  runFor(2000);
  ASSERT_EQ(writer.events.size(), 1u);
  EXPECT_EQ(writer.events[0], AVAHI_WATCH_OUT);
  EXPECT_EQ(writer.getEvents[0], AVAHI_WATCH_OUT);
  EXPECT_TRUE(reader.events.empty());

  // Data arrives: the reader gets IN only (the writer asked for nothing now).
  ASSERT_EQ(write(fds_[1], "x", 1), 1);
  runFor(2000);
  ASSERT_EQ(reader.events.size(), 1u);
  EXPECT_EQ(reader.events[0], AVAHI_WATCH_IN);
  EXPECT_EQ(reader.getEvents[0], AVAHI_WATCH_IN);
  EXPECT_EQ(writer.events.size(), 1u);

  // Re-arm the writer: both fire in one dispatch when both are ready.
  writer.quietAfter = true;
  api_->watch_update(w, AVAHI_WATCH_OUT);
  ASSERT_EQ(write(fds_[1], "y", 1), 1);
  reader.stop = false;
  runFor(2000);
  EXPECT_EQ(reader.events.size(), 2u);
  EXPECT_EQ(writer.events.size(), 2u);

  // Freeing one keeps the other working on the same fd.
  api_->watch_free(w);
  EXPECT_EQ(poll_->polledFdCount(), 1u);
  reader.stop = true;
  ASSERT_EQ(write(fds_[1], "z", 1), 1);
  runFor(2000);
  EXPECT_EQ(reader.events.size(), 3u);
  EXPECT_EQ(reader.events.back(), AVAHI_WATCH_IN);
  EXPECT_EQ(writer.events.size(), 2u);

  api_->watch_free(r);
  EXPECT_EQ(poll_->polledFdCount(), 0u) << "the fd is no longer polled once its last watch is freed";
  EXPECT_EQ(poll_->watchCount(), 0u);
}

TEST_F(AvahiWatchTest, FreeingTheOtherWatchInsideADispatchSkipsIt) {
  // Both watches want IN; the first one to run frees the other, which must not be called.
  WatchLog a{api_, &loop_, fds_[0]};
  WatchLog b{api_, &loop_, fds_[0]};
  a.drain = b.drain = true;
  AvahiWatch* wa = api_->watch_new(api_, fds_[0], AVAHI_WATCH_IN, &onWatch, &a);
  AvahiWatch* wb = api_->watch_new(api_, fds_[0], AVAHI_WATCH_IN, &onWatch, &b);
  a.freeThisToo = wb;
  b.freeThisToo = wa;
  ASSERT_EQ(write(fds_[1], "x", 1), 1);
  runFor(2000);
  EXPECT_EQ(a.events.size() + b.events.size(), 1u) << "the freed watch was still called";
  EXPECT_EQ(poll_->watchCount(), 1u);
  AvahiWatch* survivor = a.events.empty() ? wb : wa;
  WatchLog& survivorLog = a.events.empty() ? b : a;
  survivorLog.freeThisToo = nullptr;
  ASSERT_EQ(write(fds_[1], "y", 1), 1);
  runFor(2000);
  EXPECT_EQ(survivorLog.events.size(), 2u);
  api_->watch_free(survivor);
  EXPECT_EQ(poll_->polledFdCount(), 0u);
}

TEST_F(AvahiWatchTest, HangupReachesAWatchThatAskedOnlyForIn) {
  WatchLog reader{api_, &loop_, fds_[0]};
  AvahiWatch* r = api_->watch_new(api_, fds_[0], AVAHI_WATCH_IN, &onWatch, &reader);
  close(fds_[1]);
  fds_[1] = -1;
  runFor(2000);
  ASSERT_FALSE(reader.events.empty());
  EXPECT_TRUE(reader.events[0] & (AVAHI_WATCH_IN | AVAHI_WATCH_HUP));
  EXPECT_FALSE(reader.events[0] & AVAHI_WATCH_OUT) << "OUT was not asked for";
  api_->watch_free(r);
}

TEST_F(AvahiWatchTest, LeftoverWatchesAndTimeoutsAreFreedWithThePoll) {
  WatchLog log{api_, &loop_, fds_[0]};
  api_->watch_new(api_, fds_[0], AVAHI_WATCH_IN, &onWatch, &log);
  struct timeval later = tvFromUs(nowUs() + 60000000);
  Fired f{.loop = &loop_};
  api_->timeout_new(api_, &later, &onTimeout, &f);
  EXPECT_EQ(poll_->watchCount(), 1u);
  EXPECT_EQ(poll_->timeoutCount(), 1u);
  // The fixture destroys the poll and checks that the loop closes without leaked handles.
}

}  // namespace
}  // namespace pl
