#pragma once
// UvAvahiPoll: Avahi's main-loop abstraction (AvahiPoll, avahi-common/watch.h) on a libuv loop,
// so that avahi-client runs on the same loop as KJ / Cap'n Proto (transport/uv_kj_loop.h).
//
//   pl::UvAvahiPoll poll(loop.uv());
//   AvahiClient* client = avahi_client_new(poll.avahiPoll(), AVAHI_CLIENT_NO_FAIL, ...);
//   ...
//   avahi_client_free(client);   // before `poll` is destroyed
//
// Mapping, and the two traps it avoids:
// - Watches run on uv_poll_t, with ONE uv_poll_t per file descriptor shared by every watch on
//   that fd; it polls the OR of their events and hands each watch only the events it asked for
//   (plus ERR/HUP). libdbus keeps separate read and write watches on one socket, and libuv
//   refuses a second active uv_poll_t on one fd (UV_EEXIST).
// - Timeouts run on uv_timer_t. Avahi passes ABSOLUTE gettimeofday() deadlines: the delay is
//   -avahi_age(tv) microseconds, clamped at 0 and rounded UP to whole milliseconds, measured
//   after refreshing the loop's cached clock (uv_update_time), so a timeout never fires before
//   its deadline. A NULL deadline disables the timeout; an expired timeout is disabled until
//   updated again (as avahi-common/simple-watch.c does).
//
// Every AvahiPoll entry point may be called from inside a watch or timeout callback, including
// freeing the watch or timeout whose callback is running, or another watch on the same fd.
//
// Threads: the loop thread only (libuv). Lifetime: the loop must outlive this object and run
// once more after it is destroyed (UvHandle's rule). Watches and timeouts still alive at
// destruction are freed (their callbacks never run again).

#include <avahi-common/watch.h>
#include <uv.h>

#include <cstddef>
#include <map>
#include <memory>
#include <vector>

namespace pl {

class UvAvahiPoll {
 public:
  explicit UvAvahiPoll(uv_loop_t* loop);
  ~UvAvahiPoll();
  UvAvahiPoll(const UvAvahiPoll&) = delete;
  UvAvahiPoll& operator=(const UvAvahiPoll&) = delete;

  // The vtable to hand to avahi_client_new(); valid as long as this object.
  const AvahiPoll* avahiPoll() const { return &api_; }
  uv_loop_t* loop() const { return loop_; }

  // For tests: live watches, fds with a uv_poll_t, live timeouts.
  size_t watchCount() const;
  size_t polledFdCount() const { return fds_.size(); }
  size_t timeoutCount() const { return timeouts_; }

  // The delay in milliseconds until the absolute gettimeofday() deadline `tv` (0 when it has
  // passed; rounded up). Exposed for tests.
  static uint64_t delayMsUntil(const struct timeval& tv);

  struct FdPoll;  // implementation details (avahi_poll.cpp)

 private:
  friend struct AvahiPollAccess;
  void refresh(FdPoll* fd);          // restart or stop fd's uv_poll_t after a change
  void dispatch(FdPoll* fd, int status, int uvEvents);
  void collectGarbage();

  uv_loop_t* loop_;
  AvahiPoll api_{};
  std::map<int, std::unique_ptr<FdPoll>> fds_;
  std::vector<std::unique_ptr<FdPoll>> deadFds_;  // freed while dispatching; deleted after
  std::vector<AvahiWatch*> deadWatches_;          // likewise
  std::vector<AvahiTimeout*> liveTimeouts_;       // for the destructor
  int dispatchDepth_ = 0;
  size_t timeouts_ = 0;
};

}  // namespace pl
