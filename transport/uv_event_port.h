#pragma once
// UvEventPort: a kj::EventPort driven by a libuv loop, so that KJ promises, Cap'n Proto RPC and
// libuv handles all run on one uv_loop_t in one thread. Most code uses UvKjLoop (uv_kj_loop.h),
// which owns one of these; this header is for the pieces of the bridge (the I/O provider).
//
// How KJ gets to run:
// - Every libuv callback that the bridge owns (fd readiness, KJ timers, cross-thread wake, posted
//   functions) runs inside a CallbackScope, which turns the KJ queue to empty when it ends. KJ
//   reactions therefore follow their cause directly, in the order libuv delivers causes.
// - setRunnable(true) from anywhere else (a user's own uv callback, top-level code) arms a ref'd
//   0 ms uv_timer that turns KJ on the next iteration.
// - Turning KJ is waitScope.poll() (which also picks up kj::Executor work after wake()) followed
//   by kjLoop.run() (which reports "no longer runnable" back to the port).
// - A top-level promise.wait(waitScope) (never inside a uv callback) runs the uv loop one
//   iteration at a time through wait(); the wake handle is ref'd for that, so it sleeps.
//
// Threads: everything on the loop thread, except wake() (any thread).

#include <kj/async.h>
#include <kj/timer.h>
#include <uv.h>

#include <atomic>
#include <vector>

#include "core/util/uv_handle.h"

namespace pl {

// Something whose libuv state is refreshed after KJ has run (see UvEventPort::deferUpdate).
class UvDeferredUpdate {
 public:
  virtual void applyDeferredUpdate() = 0;

 protected:
  ~UvDeferredUpdate() = default;
};

// kj::Timer on libuv: one uv_timer_t per pending promise, so KJ timers and plain uv timers share
// one clock (uv_now, milliseconds, cached per loop iteration as libuv does) and one ordering.
// Delays are rounded up to whole milliseconds.
class UvKjTimer final : public kj::Timer {
 public:
  explicit UvKjTimer(class UvEventPort& port) : port_(port) {}

  kj::TimePoint now() const override;
  kj::Promise<void> atTime(kj::TimePoint time) override;
  kj::Promise<void> afterDelay(kj::Duration delay) override;

 private:
  class UvEventPort& port_;
};

class UvEventPort final : public kj::EventPort {
 public:
  // Borrows `loop`, which must outlive this port. Creates the run timer and the wake handle.
  explicit UvEventPort(uv_loop_t* loop);
  ~UvEventPort() noexcept(false);
  UvEventPort(const UvEventPort&) = delete;
  UvEventPort& operator=(const UvEventPort&) = delete;

  // Called once, right after the kj::EventLoop on this port and its WaitScope exist.
  void attach(kj::EventLoop& kjLoop, kj::WaitScope& waitScope);
  // Called before the EventLoop and WaitScope are destroyed.
  void detach();

  uv_loop_t* loop() const { return loop_; }
  UvKjTimer& timer() { return timer_; }

  // Marks "inside one of the bridge's uv callbacks" for its lifetime; the outermost scope turns
  // KJ when it ends. Cheap; nests.
  class CallbackScope {
   public:
    explicit CallbackScope(UvEventPort& port) : port_(port) { ++port_.callbackDepth_; }
    ~CallbackScope() {
      if (--port_.callbackDepth_ == 0) port_.turnKj();
    }
    CallbackScope(const CallbackScope&) = delete;
    CallbackScope& operator=(const CallbackScope&) = delete;

   private:
    UvEventPort& port_;
  };

  // Queues `target` to have applyDeferredUpdate() called after the next KJ turn (or before the
  // next top-level wait). Used by fd watchers to stop polling only if KJ did not ask for the same
  // event again, which saves two epoll_ctl calls per message. Idempotent per target.
  void deferUpdate(UvDeferredUpdate* target);
  // Removes `target` from the queue (call from its destructor).
  void cancelUpdate(UvDeferredUpdate* target);

  // Prepares for uv_run from top-level code: applies deferred updates and arms the run timer if
  // KJ has work. UvKjLoop::run() calls it.
  void beforeRun();

  // True while a top-level promise.wait() / waitScope.poll() is turning KJ (the port must then
  // not turn KJ itself).
  bool kjTurningItself() const { return inKjWait_; }

  // kj::EventPort
  bool wait() override;
  bool poll() override;
  void setRunnable(bool runnable) override;
  void wake() const override;

 private:
  void turnKj();
  void applyDeferredUpdates();
  void armRunTimer();
  static void onRunTimer(uv_timer_t* handle);
  static void onWake(uv_async_t* handle);

  uv_loop_t* loop_;
  UvHandle<uv_timer_t> runTimer_;   // ref'd: pending KJ work keeps uv_run going (trap 2)
  UvHandle<uv_async_t> wakeAsync_;  // unref'd except during a top-level wait()
  mutable std::atomic<bool> woken_{false};
  UvKjTimer timer_;
  kj::EventLoop* kjLoop_ = nullptr;
  kj::WaitScope* waitScope_ = nullptr;
  std::vector<UvDeferredUpdate*> deferred_;
  int callbackDepth_ = 0;
  bool runnable_ = false;
  bool runTimerArmed_ = false;
  bool inKjWait_ = false;
  bool turning_ = false;
};

}  // namespace pl
