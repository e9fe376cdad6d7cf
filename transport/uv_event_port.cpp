#include "transport/uv_event_port.h"

#include <kj/debug.h>

#include <algorithm>
#include <cstdlib>

#include "core/util/check.h"
#include "core/util/log.h"

namespace pl {

namespace {

// Fulfils a KJ promise from a one-shot uv_timer_t owned by the promise (cancelling = closing).
class TimerWaiter {
 public:
  TimerWaiter(kj::PromiseFulfiller<void>& fulfiller, UvEventPort& port, uint64_t delayMs)
      : fulfiller_(fulfiller), port_(port) {
    int rc = handle_.init(port.loop(), uv_timer_init);
    if (rc == 0) {
      handle_->data = this;
      rc = uv_timer_start(handle_.get(), &TimerWaiter::onFire, delayMs, 0);
    }
    if (rc != 0) {
      fulfiller.reject(KJ_EXCEPTION(FAILED, "uv_timer_start failed", uv_strerror(rc)));
    }
  }

 private:
  static void onFire(uv_timer_t* handle) {
    auto* self = static_cast<TimerWaiter*>(handle->data);
    // The scope turns KJ when it ends; by then `self` may be gone (the promise completed).
    UvEventPort::CallbackScope scope(self->port_);
    self->fulfiller_.fulfill();
  }

  kj::PromiseFulfiller<void>& fulfiller_;
  UvEventPort& port_;
  UvHandle<uv_timer_t> handle_;
};

}  // namespace

kj::TimePoint UvKjTimer::now() const {
  return kj::origin<kj::TimePoint>() + int64_t(uv_now(port_.loop())) * kj::MILLISECONDS;
}

kj::Promise<void> UvKjTimer::atTime(kj::TimePoint time) {
  kj::Duration delay = time - now();
  int64_t delayMs = 0;
  if (delay > 0 * kj::NANOSECONDS) {
    // Round up so the timer never fires before `time`.
    delayMs = (delay + kj::MILLISECONDS - 1 * kj::NANOSECONDS) / kj::MILLISECONDS;
  }
  return kj::newAdaptedPromise<void, TimerWaiter>(port_, uint64_t(delayMs));
}

kj::Promise<void> UvKjTimer::afterDelay(kj::Duration delay) { return atTime(now() + delay); }

UvEventPort::UvEventPort(uv_loop_t* loop) : loop_(loop), timer_(*this) {
  PL_CHECK(loop_ != nullptr);
  PL_CHECK(runTimer_.init(loop_, uv_timer_init) == 0);
  runTimer_->data = this;
  PL_CHECK(wakeAsync_.init(loop_, uv_async_init, &UvEventPort::onWake) == 0);
  wakeAsync_->data = this;
  // Other threads' wake-ups must not keep uv_run alive on their own (trap 2 in
  // PLATFORM_NOTES.md: only this handle is unref'd; the run timer stays ref'd).
  uv_unref(wakeAsync_.base());
}

UvEventPort::~UvEventPort() noexcept(false) {
  PL_CHECK_MSG(deferred_.empty(), "UvEventPort destroyed while fd watchers still exist");
}

void UvEventPort::attach(kj::EventLoop& kjLoop, kj::WaitScope& waitScope) {
  kjLoop_ = &kjLoop;
  waitScope_ = &waitScope;
}

void UvEventPort::detach() {
  kjLoop_ = nullptr;
  waitScope_ = nullptr;
  if (runTimerArmed_) {
    uv_timer_stop(runTimer_.get());
    runTimerArmed_ = false;
  }
}

void UvEventPort::deferUpdate(UvDeferredUpdate* target) {
  if (std::find(deferred_.begin(), deferred_.end(), target) == deferred_.end()) {
    deferred_.push_back(target);
  }
}

void UvEventPort::cancelUpdate(UvDeferredUpdate* target) {
  deferred_.erase(std::remove(deferred_.begin(), deferred_.end(), target), deferred_.end());
}

void UvEventPort::applyDeferredUpdates() {
  // applyDeferredUpdate() never adds to the list (it only starts or stops polling).
  std::vector<UvDeferredUpdate*> batch;
  batch.swap(deferred_);
  for (UvDeferredUpdate* target : batch) target->applyDeferredUpdate();
}

void UvEventPort::beforeRun() {
  applyDeferredUpdates();
  if (runnable_ && !runTimerArmed_) armRunTimer();
}

void UvEventPort::turnKj() {
  if (waitScope_ == nullptr || inKjWait_ || turning_) return;
  turning_ = true;
  KJ_IF_MAYBE (exception, kj::runCatchingExceptions([&]() {
                 // poll() turns the queue and, after a wake(), runs kj::Executor work. It leaves
                 // the loop's "runnable" state stale, so run() must follow (trap 1), which reports
                 // "empty" to the port.
                 waitScope_->poll();
                 kjLoop_->run();
               })) {
    // KJ delivers exceptions to promises; one escaping the loop is a bug in the bridge's user.
    PL_LOG_ERROR("uncaught exception on the KJ loop: %s", kj::str(*exception).cStr());
    std::abort();
  }
  turning_ = false;
  applyDeferredUpdates();
}

void UvEventPort::armRunTimer() {
  PL_CHECK(uv_timer_start(runTimer_.get(), &UvEventPort::onRunTimer, 0, 0) == 0);
  runTimerArmed_ = true;
}

void UvEventPort::onRunTimer(uv_timer_t* handle) {
  auto* self = static_cast<UvEventPort*>(handle->data);
  self->runTimerArmed_ = false;
  CallbackScope scope(*self);  // turns KJ when it ends
}

void UvEventPort::onWake(uv_async_t* handle) {
  auto* self = static_cast<UvEventPort*>(handle->data);
  CallbackScope scope(*self);  // waitScope.poll() sees woken_ and runs Executor work
}

bool UvEventPort::wait() {
  // Trap 5: a promise.wait() inside a uv callback would re-enter uv_run.
  PL_CHECK_MSG(callbackDepth_ == 0 && !turning_,
               "promise.wait() called inside a libuv callback; chain with .then() instead");
  applyDeferredUpdates();
  inKjWait_ = true;
  // Sleep until something happens, even if nothing ref'd is alive: a cross-thread wake counts.
  uv_ref(wakeAsync_.base());
  uv_run(loop_, UV_RUN_ONCE);
  uv_unref(wakeAsync_.base());
  inKjWait_ = false;
  // The run timer may have fired while KJ was turning itself; KJ may still be runnable after
  // the wait() returns to the caller, so make sure a turn is pending.
  if (runnable_ && !runTimerArmed_) armRunTimer();
  return woken_.exchange(false);
}

bool UvEventPort::poll() {
  if (callbackDepth_ == 0 && !turning_ && !inKjWait_) {
    // A top-level waitScope.poll(): collect ready I/O without blocking.
    applyDeferredUpdates();
    inKjWait_ = true;
    uv_run(loop_, UV_RUN_NOWAIT);
    inKjWait_ = false;
  }
  return woken_.exchange(false);
}

void UvEventPort::setRunnable(bool runnable) {
  runnable_ = runnable;
  if (runnable && !runTimerArmed_) {
    armRunTimer();
  } else if (!runnable && runTimerArmed_) {
    uv_timer_stop(runTimer_.get());
    runTimerArmed_ = false;
  }
}

void UvEventPort::wake() const {
  woken_.store(true);
  uv_async_send(wakeAsync_.get());
}

}  // namespace pl
