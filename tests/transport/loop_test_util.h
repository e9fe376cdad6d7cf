#pragma once
// Helpers for tests that run a UvKjLoop: hard time bounds without sleeps.

#include <gtest/gtest.h>
#include <kj/async.h>
#include <kj/debug.h>

#include <cstdint>

#include "core/util/uv_handle.h"
#include "transport/uv_kj_loop.h"

namespace pl::testing {

// Fails the test and stops the loop if it is still running after `ms`. With keepAlive the timer
// is ref'd (it keeps run() going until the test calls stop()); otherwise it only bounds it.
class Watchdog {
 public:
  Watchdog(UvKjLoop& loop, uint64_t ms, bool keepAlive) : loop_(loop), ms_(ms) {
    EXPECT_EQ(timer_.init(loop.uv(), uv_timer_init), 0);
    timer_->data = this;
    uv_timer_start(timer_.get(), &Watchdog::onFire, ms, 0);
    if (!keepAlive) uv_unref(timer_.base());
  }
  bool fired() const { return fired_; }

 private:
  static void onFire(uv_timer_t* handle) {
    auto* self = static_cast<Watchdog*>(handle->data);
    self->fired_ = true;
    ADD_FAILURE() << "watchdog: the loop was still running after " << self->ms_ << " ms";
    self->loop_.stop();
  }

  UvKjLoop& loop_;
  uint64_t ms_;
  bool fired_ = false;
  UvHandle<uv_timer_t> timer_;
};

// promise.wait() from top-level test code, rejecting with FAILED "test timed out" after `ms`.
template <typename T>
T waitFor(UvKjLoop& loop, kj::Promise<T> promise, int64_t ms = 5000) {
  return promise
      .exclusiveJoin(loop.timer().afterDelay(ms * kj::MILLISECONDS).then([ms]() -> kj::Promise<T> {
        return KJ_EXCEPTION(FAILED, "test timed out", ms);
      }))
      .wait(loop.waitScope());
}

// Runs `fn` and returns the kj::Exception it threw (or nullptr).
template <typename Fn>
kj::Maybe<kj::Exception> exceptionFrom(Fn&& fn) {
  return kj::runCatchingExceptions(std::forward<Fn>(fn));
}

}  // namespace pl::testing
