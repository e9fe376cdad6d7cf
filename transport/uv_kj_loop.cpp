#include "transport/uv_kj_loop.h"

#include <signal.h>

#include <deque>
#include <mutex>

#include "core/util/check.h"
#include "core/util/log.h"
#include "transport/uv_event_port.h"
#include "transport/uv_io_provider.h"

namespace pl {

struct UvKjLoop::Impl {
  explicit Impl(uv_loop_t* loop) : port(loop), kjLoop(port), waitScope(kjLoop) {
    port.attach(kjLoop, waitScope);
    lowLevel = newUvLowLevelIoProvider(port);
    provider = kj::newAsyncIoProvider(*lowLevel);
    PL_CHECK(postAsync.init(loop, uv_async_init, &Impl::onPost) == 0);
    postAsync->data = this;
    uv_unref(postAsync.base());  // posts from other threads do not keep run() alive
  }

  ~Impl() {
    postAsync.close();
    provider = nullptr;
    lowLevel = nullptr;
    port.detach();
    // Members then go in reverse order: waitScope, kjLoop (needs the port), port.
  }

  static void onPost(uv_async_t* handle) {
    auto* self = static_cast<Impl*>(handle->data);
    UvEventPort::CallbackScope scope(self->port);  // KJ work the functions start runs after
    std::deque<std::function<void()>> batch;
    {
      std::lock_guard<std::mutex> lock(self->mutex);
      batch.swap(self->queue);
    }
    for (auto& fn : batch) {
      try {
        fn();
      } catch (const std::exception& e) {
        PL_LOG_ERROR("function posted to the uv loop threw: %s", e.what());
        std::abort();
      } catch (const kj::Exception& e) {
        PL_LOG_ERROR("function posted to the uv loop threw: %s", kj::str(e).cStr());
        std::abort();
      }
    }
  }

  UvEventPort port;
  kj::EventLoop kjLoop;
  kj::WaitScope waitScope;
  kj::Own<kj::LowLevelAsyncIoProvider> lowLevel;
  kj::Own<kj::AsyncIoProvider> provider;
  UvHandle<uv_async_t> postAsync;
  std::mutex mutex;
  std::deque<std::function<void()>> queue;  // guarded by mutex
  bool running = false;
};

namespace {

void ignoreSigpipe() {
  // Trap 3 in PLATFORM_NOTES.md: libuv leaves SIGPIPE at its default (terminate).
  struct sigaction action = {};
  action.sa_handler = SIG_IGN;
  sigemptyset(&action.sa_mask);
  sigaction(SIGPIPE, &action, nullptr);
}

}  // namespace

UvKjLoop::UvKjLoop() : ownedLoop_(std::make_unique<uv_loop_t>()) {
  int rc = uv_loop_init(ownedLoop_.get());
  PL_CHECK_MSG(rc == 0, "uv_loop_init: %s", uv_strerror(rc));
  loop_ = ownedLoop_.get();
  init();
}

UvKjLoop::UvKjLoop(uv_loop_t* borrowed) : loop_(borrowed) {
  PL_CHECK(loop_ != nullptr);
  init();
}

void UvKjLoop::init() {
  ignoreSigpipe();
  // The loop's clock may be stale if it was created a while ago; KJ timers read it.
  uv_update_time(loop_);
  impl_ = std::make_unique<Impl>(loop_);
}

UvKjLoop::~UvKjLoop() {
  impl_.reset();
  if (ownedLoop_ != nullptr) {
    // Run the close callbacks (handle memory is freed there), then close the loop.
    uv_run(loop_, UV_RUN_NOWAIT);
    int rc = uv_loop_close(loop_);
    if (rc != 0) {
      PL_LOG_ERROR("UvKjLoop destroyed while libuv handles are still open (listed below)");
      uv_print_all_handles(loop_, stderr);
      PL_CHECK_MSG(rc == 0, "uv_loop_close: %s", uv_strerror(rc));
    }
  }
}

uv_loop_t* UvKjLoop::uv() const { return loop_; }
kj::WaitScope& UvKjLoop::waitScope() { return impl_->waitScope; }
kj::AsyncIoProvider& UvKjLoop::io() { return *impl_->provider; }
kj::LowLevelAsyncIoProvider& UvKjLoop::lowLevelIo() { return *impl_->lowLevel; }
kj::Timer& UvKjLoop::timer() { return impl_->port.timer(); }
const kj::Executor& UvKjLoop::executor() { return impl_->kjLoop.getExecutor(); }
UvEventPort& UvKjLoop::port() { return impl_->port; }

void UvKjLoop::run() {
  PL_CHECK_MSG(!impl_->running, "UvKjLoop::run() is not re-entrant");
  impl_->running = true;
  impl_->port.beforeRun();
  uv_run(loop_, UV_RUN_DEFAULT);
  impl_->running = false;
}

void UvKjLoop::stop() { uv_stop(loop_); }

void UvKjLoop::post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->queue.push_back(std::move(fn));
  }
  uv_async_send(impl_->postAsync.get());
}

}  // namespace pl
