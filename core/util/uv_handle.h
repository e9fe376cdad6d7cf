#pragma once
// UvHandle<T>: the one RAII owner for libuv handles in peerlight.
//
// libuv's rule: a handle's memory must stay valid until its close callback has run, which
// happens on a later iteration of the loop. UvHandle therefore heap-allocates the handle, and
// its destructor (or close()) calls uv_close() with a callback that frees the memory. The owner
// can be destroyed at any time on the loop thread, including from inside the handle's own
// callback; no callback of the handle runs after close() returns.
//
// Threads: loop thread only (like every libuv call except uv_async_send).
// Lifetime: the loop must run at least once more after the last close (UvKjLoop's destructor
// does that for loops it owns), or the memory leaks.

#include <uv.h>

#include <type_traits>
#include <utility>

namespace pl {

template <typename T>
class UvHandle {
 public:
  UvHandle() = default;
  ~UvHandle() { close(); }

  UvHandle(UvHandle&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  UvHandle& operator=(UvHandle&& other) noexcept {
    if (this != &other) {
      close();
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }
  UvHandle(const UvHandle&) = delete;
  UvHandle& operator=(const UvHandle&) = delete;

  // Allocates the handle and initialises it with `initFn(loop, handle, args...)`, for example
  // `h.init(loop, uv_timer_init)` or `h.init(loop, uv_poll_init, fd)`. Returns libuv's status
  // (0 on success); on failure the handle stays empty and nothing needs closing. `data` is set to
  // nullptr. (Not for uv_spawn, whose handle must be closed even when it fails.)
  template <typename Init, typename... Args>
  int init(uv_loop_t* loop, Init initFn, Args&&... args) {
    close();
    T* fresh = new T{};
    int rc = initFn(loop, fresh, std::forward<Args>(args)...);
    if (rc != 0) {
      delete fresh;
      return rc;
    }
    fresh->data = nullptr;
    handle_ = fresh;
    return 0;
  }

  // Stops the handle and schedules its memory to be freed; idempotent.
  void close() {
    if (handle_ == nullptr) return;
    uv_handle_t* h = reinterpret_cast<uv_handle_t*>(std::exchange(handle_, nullptr));
    if (!uv_is_closing(h)) {
      uv_close(h, [](uv_handle_t* closed) { delete reinterpret_cast<T*>(closed); });
    }
  }

  T* get() const { return handle_; }
  T* operator->() const { return handle_; }
  uv_handle_t* base() const { return reinterpret_cast<uv_handle_t*>(handle_); }
  explicit operator bool() const { return handle_ != nullptr; }

 private:
  T* handle_ = nullptr;
};

}  // namespace pl
