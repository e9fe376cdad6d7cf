// UvAvahiPoll: see avahi_poll.h. Written from the AvahiPoll contract in avahi-common/watch.h,
// with avahi-common/simple-watch.c and avahi-glib/glib-watch.c as references for the semantics
// (events reported per watch, timeouts disabled after they fire).

#include "discovery/avahi_poll.h"

#include <avahi-common/timeval.h>

#include <algorithm>

#include "core/util/check.h"
#include "core/util/uv_handle.h"

// The opaque structs of avahi-common/watch.h, defined by each AvahiPoll implementation.
struct AvahiWatch {
  pl::UvAvahiPoll* owner = nullptr;
  pl::UvAvahiPoll::FdPoll* fd = nullptr;
  AvahiWatchEvent events{};    // what the watch wants
  AvahiWatchEvent returned{};  // what its callback is being told (watch_get_events)
  AvahiWatchCallback callback = nullptr;
  void* userdata = nullptr;
  bool dead = false;
};

struct AvahiTimeout {
  pl::UvAvahiPoll* owner = nullptr;
  pl::UvHandle<uv_timer_t> timer;
  AvahiTimeoutCallback callback = nullptr;
  void* userdata = nullptr;
};

namespace pl {

// One uv_poll_t for all watches on one fd.
struct UvAvahiPoll::FdPoll {
  UvAvahiPoll* owner = nullptr;
  int fd = -1;
  UvHandle<uv_poll_t> handle;
  int polling = 0;  // uv events the handle is started with (0: stopped)
  std::vector<AvahiWatch*> watches;
};

struct AvahiPollAccess {
  static UvAvahiPoll* self(const AvahiPoll* api) { return static_cast<UvAvahiPoll*>(api->userdata); }

  static AvahiWatch* watchNew(const AvahiPoll* api, int fd, AvahiWatchEvent events,
                              AvahiWatchCallback callback, void* userdata) {
    UvAvahiPoll* self = AvahiPollAccess::self(api);
    auto it = self->fds_.find(fd);
    if (it == self->fds_.end()) {
      auto fresh = std::make_unique<UvAvahiPoll::FdPoll>();
      fresh->owner = self;
      fresh->fd = fd;
      if (fresh->handle.init(self->loop_, uv_poll_init, fd) != 0) return nullptr;
      fresh->handle->data = fresh.get();
      it = self->fds_.emplace(fd, std::move(fresh)).first;
    }
    auto* w = new AvahiWatch;
    w->owner = self;
    w->fd = it->second.get();
    w->events = events;
    w->callback = callback;
    w->userdata = userdata;
    it->second->watches.push_back(w);
    self->refresh(it->second.get());
    return w;
  }

  static void watchUpdate(AvahiWatch* w, AvahiWatchEvent events) {
    if (w->dead) return;
    w->events = events;
    w->owner->refresh(w->fd);
  }

  static AvahiWatchEvent watchGetEvents(AvahiWatch* w) { return w->returned; }

  static void watchFree(AvahiWatch* w) {
    if (w->dead) return;
    UvAvahiPoll* self = w->owner;
    UvAvahiPoll::FdPoll* fd = w->fd;
    w->dead = true;
    auto& list = fd->watches;
    list.erase(std::find(list.begin(), list.end(), w));
    if (list.empty()) {
      // Stop polling the fd now: Avahi may close it right after this call.
      auto it = self->fds_.find(fd->fd);
      PL_CHECK(it != self->fds_.end() && it->second.get() == fd);
      it->second->handle.close();
      self->deadFds_.push_back(std::move(it->second));
      self->fds_.erase(it);
    } else {
      self->refresh(fd);
    }
    self->deadWatches_.push_back(w);
    self->collectGarbage();
  }

  static AvahiTimeout* timeoutNew(const AvahiPoll* api, const struct timeval* tv,
                                  AvahiTimeoutCallback callback, void* userdata) {
    UvAvahiPoll* self = AvahiPollAccess::self(api);
    auto* t = new AvahiTimeout;
    if (t->timer.init(self->loop_, uv_timer_init) != 0) {
      delete t;
      return nullptr;
    }
    t->owner = self;
    t->callback = callback;
    t->userdata = userdata;
    t->timer->data = t;
    self->liveTimeouts_.push_back(t);
    ++self->timeouts_;
    timeoutUpdate(t, tv);
    return t;
  }

  static void timeoutUpdate(AvahiTimeout* t, const struct timeval* tv) {
    if (tv == nullptr) {
      uv_timer_stop(t->timer.get());
      return;
    }
    // uv timers count from the loop's cached "now", which lags the real clock by however long
    // this iteration has run so far; refresh it so the deadline is never early.
    uv_update_time(t->owner->loop_);
    // And that cached "now" is the real time truncated to whole milliseconds, so a timer of d ms
    // may fire up to 1 ms before the real now + d: one millisecond more.
    const uint64_t delay = UvAvahiPoll::delayMsUntil(*tv);
    uv_timer_start(t->timer.get(), &AvahiPollAccess::onTimer, delay == 0 ? 0 : delay + 1, 0);
  }

  static void timeoutFree(AvahiTimeout* t) {
    UvAvahiPoll* self = t->owner;
    auto& list = self->liveTimeouts_;
    list.erase(std::find(list.begin(), list.end(), t));
    --self->timeouts_;
    delete t;  // closes the timer; safe inside its own callback (onTimer no longer touches t)
  }

  static void onTimer(uv_timer_t* handle) {
    auto* t = static_cast<AvahiTimeout*>(handle->data);
    // One-shot timer: libuv has already stopped it, i.e. the timeout is disabled until updated.
    t->callback(t, t->userdata);  // may free t
  }

  static void onPoll(uv_poll_t* handle, int status, int events) {
    auto* fd = static_cast<UvAvahiPoll::FdPoll*>(handle->data);
    fd->owner->dispatch(fd, status, events);
  }
};

UvAvahiPoll::UvAvahiPoll(uv_loop_t* loop) : loop_(loop) {
  api_.userdata = this;
  api_.watch_new = &AvahiPollAccess::watchNew;
  api_.watch_update = &AvahiPollAccess::watchUpdate;
  api_.watch_get_events = &AvahiPollAccess::watchGetEvents;
  api_.watch_free = &AvahiPollAccess::watchFree;
  api_.timeout_new = &AvahiPollAccess::timeoutNew;
  api_.timeout_update = &AvahiPollAccess::timeoutUpdate;
  api_.timeout_free = &AvahiPollAccess::timeoutFree;
}

UvAvahiPoll::~UvAvahiPoll() {
  PL_CHECK(dispatchDepth_ == 0);
  for (auto& [fd, poll] : fds_) {
    for (AvahiWatch* w : poll->watches) delete w;
  }
  fds_.clear();
  for (AvahiTimeout* t : liveTimeouts_) delete t;
  liveTimeouts_.clear();
  collectGarbage();
}

size_t UvAvahiPoll::watchCount() const {
  size_t n = 0;
  for (const auto& [fd, poll] : fds_) n += poll->watches.size();
  return n;
}

uint64_t UvAvahiPoll::delayMsUntil(const struct timeval& tv) {
  AvahiUsec ahead = -avahi_age(&tv);  // microseconds until the deadline (negative: passed)
  if (ahead <= 0) return 0;
  return (uint64_t(ahead) + 999) / 1000;
}

void UvAvahiPoll::refresh(FdPoll* fd) {
  int want = 0;
  for (const AvahiWatch* w : fd->watches) {
    if (w->events & AVAHI_WATCH_IN) want |= UV_READABLE;
    if (w->events & AVAHI_WATCH_OUT) want |= UV_WRITABLE;
  }
  if (want == fd->polling) return;
  if (want == 0) {
    uv_poll_stop(fd->handle.get());
  } else {
    // ERR and HUP need no flag: libuv reports them as readable and writable.
    int rc = uv_poll_start(fd->handle.get(), want, &AvahiPollAccess::onPoll);
    PL_CHECK(rc == 0);
  }
  fd->polling = want;
}

void UvAvahiPoll::dispatch(FdPoll* fd, int status, int uvEvents) {
  int happened = 0;
  if (status < 0) {
    happened = AVAHI_WATCH_ERR;
  } else {
    if (uvEvents & UV_READABLE) happened |= AVAHI_WATCH_IN;
    if (uvEvents & UV_WRITABLE) happened |= AVAHI_WATCH_OUT;
    if (uvEvents & UV_DISCONNECT) happened |= AVAHI_WATCH_HUP;
  }
  // Callbacks may add or free watches (this fd's included): iterate over a snapshot and keep
  // freed watches (and fds) alive until the outermost dispatch returns.
  ++dispatchDepth_;
  std::vector<AvahiWatch*> snapshot = fd->watches;
  for (AvahiWatch* w : snapshot) {
    if (w->dead) continue;
    int mine = happened & (w->events | AVAHI_WATCH_ERR | AVAHI_WATCH_HUP);
    if (mine == 0) continue;
    w->returned = AvahiWatchEvent(mine);
    w->callback(w, w->fd->fd, AvahiWatchEvent(mine), w->userdata);
    w->returned = AvahiWatchEvent(0);
  }
  --dispatchDepth_;
  collectGarbage();
}

void UvAvahiPoll::collectGarbage() {
  if (dispatchDepth_ > 0) return;
  for (AvahiWatch* w : deadWatches_) delete w;
  deadWatches_.clear();
  deadFds_.clear();
}

}  // namespace pl
