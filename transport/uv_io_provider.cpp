#include "transport/uv_io_provider.h"

#include <fcntl.h>
#include <kj/debug.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <optional>

#include "core/util/check.h"
#include "transport/uv_event_port.h"

namespace pl {

namespace {

// A failed syscall as a kj::Exception. Errors that mean "the peer or the network went away"
// are DISCONNECTED (normal life in a cluster); running out of resources is OVERLOADED.
kj::Exception syscallException(const char* what, int error) {
  kj::Exception::Type type = kj::Exception::Type::FAILED;
  switch (error) {
    case EPIPE:
    case ECONNRESET:
    case ECONNABORTED:
    case ECONNREFUSED:
    case ENOTCONN:
    case ETIMEDOUT:
    case EHOSTUNREACH:
    case EHOSTDOWN:
    case ENETUNREACH:
    case ENETDOWN:
    case ENETRESET:
      type = kj::Exception::Type::DISCONNECTED;
      break;
    case EMFILE:
    case ENFILE:
    case ENOBUFS:
    case ENOMEM:
      type = kj::Exception::Type::OVERLOADED;
      break;
    default:
      break;
  }
  return kj::Exception(type, __FILE__, __LINE__, kj::str(what, ": ", strerror(error)));
}

// Applies LowLevelAsyncIoProvider flags: make the fd non-blocking, and close-on-exec when we
// own it.
void applyFlags(int fd, uint flags) {
  if (!(flags & kj::LowLevelAsyncIoProvider::ALREADY_NONBLOCK)) {
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK)) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  }
  if ((flags & kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP) &&
      !(flags & kj::LowLevelAsyncIoProvider::ALREADY_CLOEXEC)) {
    int fl = fcntl(fd, F_GETFD);
    if (fl >= 0 && !(fl & FD_CLOEXEC)) fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
  }
}

class FdWatcher;

// The promise side of one FdWatcher wait: registering on construction, deregistering on
// destruction (so a cancelled read stops polling for it).
class PollWaiter {
 public:
  enum Kind { kRead = 0, kWrite = 1, kHangup = 2 };
  PollWaiter(kj::PromiseFulfiller<void>& fulfiller, FdWatcher& watcher, Kind kind);
  ~PollWaiter();

  kj::PromiseFulfiller<void>& fulfiller;

 private:
  FdWatcher& watcher_;
  Kind kind_;
};

// One uv_poll_t on one fd (libuv allows no second one), shared by reads, writes and hang-up
// detection. At most one waiter of each kind at a time (KJ streams allow one read and one write
// in flight). Does not own the fd; must be destroyed before the fd is closed.
class FdWatcher final : public UvDeferredUpdate {
 public:
  FdWatcher(UvEventPort& port, int fd) : port_(port), fd_(fd) {
    int rc = poll_.init(port.loop(), uv_poll_init, fd);
    if (rc != 0) {
      kj::throwFatalException(KJ_EXCEPTION(FAILED,
                                           "uv_poll_init failed (is this fd already "
                                           "wrapped?)",
                                           fd, uv_strerror(rc)));
    }
    poll_->data = this;
  }
  ~FdWatcher() {
    port_.cancelUpdate(this);
    PL_CHECK(waiters_[0] == nullptr && waiters_[1] == nullptr && waiters_[2] == nullptr);
  }

  int fd() const { return fd_; }
  UvEventPort& port() const { return port_; }

  // Resolve when the fd is readable / writable (or has an error or hung up: retry the syscall
  // to learn which).
  kj::Promise<void> readable() {
    return kj::newAdaptedPromise<void, PollWaiter>(*this, PollWaiter::kRead);
  }
  kj::Promise<void> writable() {
    return kj::newAdaptedPromise<void, PollWaiter>(*this, PollWaiter::kWrite);
  }
  kj::Promise<void> hangup() {
    return kj::newAdaptedPromise<void, PollWaiter>(*this, PollWaiter::kHangup);
  }

  void add(PollWaiter* waiter, PollWaiter::Kind kind) {
    KJ_REQUIRE(waiters_[kind] == nullptr, "one read and one write at a time per stream");
    waiters_[kind] = waiter;
    // Start polling now (uv_poll_start only queues an epoll change; no syscall here).
    applyDeferredUpdate();
  }
  void remove(PollWaiter* waiter, PollWaiter::Kind kind) {
    if (waiters_[kind] == waiter) {
      waiters_[kind] = nullptr;
      // Stopping costs an epoll_ctl; wait until KJ has run, it often asks again.
      port_.deferUpdate(this);
    }
  }

  // Starts, changes or stops polling to match the waiters.
  void applyDeferredUpdate() override {
    int events = 0;
    if (waiters_[PollWaiter::kRead] != nullptr) events |= UV_READABLE | UV_DISCONNECT;
    if (waiters_[PollWaiter::kWrite] != nullptr) events |= UV_WRITABLE;
    if (waiters_[PollWaiter::kHangup] != nullptr && !peerHalfClosed_) events |= UV_DISCONNECT;
    if (events == polledEvents_) return;
    if (events == 0) {
      uv_poll_stop(poll_.get());
    } else {
      int rc = uv_poll_start(poll_.get(), events, &FdWatcher::onPoll);
      PL_CHECK_MSG(rc == 0, "uv_poll_start(fd %d): %s", fd_, uv_strerror(rc));
    }
    polledEvents_ = events;
  }

 private:
  static void onPoll(uv_poll_t* handle, int status, int events) {
    auto* self = static_cast<FdWatcher*>(handle->data);
    UvEventPort::CallbackScope scope(self->port_);  // KJ reacts when this callback ends
    self->dispatch(status, events);
  }

  void dispatch(int status, int events) {
    bool error = status < 0;
    if (error) polledEvents_ = 0;  // libuv stops the handle when it reports an error
    if (events & UV_DISCONNECT) peerHalfClosed_ = true;
    if (waiters_[PollWaiter::kHangup] != nullptr &&
        (error || (events & (UV_DISCONNECT | UV_READABLE | UV_WRITABLE)))) {
      // libuv folds EPOLLHUP/EPOLLERR into the events we asked for; ask the kernel directly.
      struct pollfd pfd = {fd_, POLLOUT, 0};
      if (error || (::poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLHUP | POLLERR | POLLNVAL)))) {
        fire(PollWaiter::kHangup);
      }
    }
    if (error || (events & (UV_READABLE | UV_DISCONNECT))) fire(PollWaiter::kRead);
    if (error || (events & UV_WRITABLE)) fire(PollWaiter::kWrite);
    port_.deferUpdate(this);
  }

  void fire(PollWaiter::Kind kind) {
    if (PollWaiter* waiter = waiters_[kind]) {
      waiters_[kind] = nullptr;
      waiter->fulfiller.fulfill();
    }
  }

  UvEventPort& port_;
  int fd_;
  UvHandle<uv_poll_t> poll_;
  PollWaiter* waiters_[3] = {nullptr, nullptr, nullptr};
  int polledEvents_ = 0;
  bool peerHalfClosed_ = false;  // UV_DISCONNECT is level-triggered: ask for it only once
};

PollWaiter::PollWaiter(kj::PromiseFulfiller<void>& fulfiller, FdWatcher& watcher, Kind kind)
    : fulfiller(fulfiller), watcher_(watcher), kind_(kind) {
  watcher_.add(this, kind_);
}

PollWaiter::~PollWaiter() { watcher_.remove(this, kind_); }

// Owns (optionally) an fd and its watcher; the watcher is destroyed first, as libuv requires.
class FdHolder {
 public:
  FdHolder(UvEventPort& port, int fd, uint flags)
      : fd_(fd), owned_(flags & kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP) {
    applyFlags(fd, flags);
    watcher_.emplace(port, fd);
  }
  ~FdHolder() {
    watcher_.reset();  // uv_close() stops polling; closing the fd afterwards is safe
    if (owned_) ::close(fd_);
  }
  FdHolder(const FdHolder&) = delete;
  FdHolder& operator=(const FdHolder&) = delete;

  int fd() const { return fd_; }
  FdWatcher& watcher() { return *watcher_; }

 private:
  int fd_;
  bool owned_;
  std::optional<FdWatcher> watcher_;
};

class UvStream final : public kj::AsyncIoStream {
 public:
  UvStream(UvEventPort& port, int fd, uint flags) : holder_(port, fd, flags) {
    struct stat st;
    isSocket_ = fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
  }

  FdWatcher& watcher() { return holder_.watcher(); }

  kj::Promise<size_t> tryRead(void* buffer, size_t minBytes, size_t maxBytes) override {
    return readLoop(static_cast<kj::byte*>(buffer), minBytes, maxBytes, 0);
  }

  kj::Promise<void> write(const void* buffer, size_t size) override {
    kj::ArrayPtr<const kj::byte> piece(static_cast<const kj::byte*>(buffer), size);
    return writeLoop(piece, nullptr);
  }

  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    if (pieces.size() == 0) return kj::READY_NOW;
    return writeLoop(pieces[0], pieces.slice(1, pieces.size()));
  }

  kj::Promise<void> whenWriteDisconnected() override {
    if (disconnected_ == nullptr) {
      disconnected_ = watcher().hangup().fork();
    }
    return KJ_ASSERT_NONNULL(disconnected_).addBranch();
  }

  void shutdownWrite() override {
    if (::shutdown(fd(), SHUT_WR) < 0 && errno != ENOTCONN) {
      kj::throwFatalException(syscallException("shutdown(SHUT_WR)", errno));
    }
  }

  void abortRead() override {
    if (isSocket_) ::shutdown(fd(), SHUT_RD);
  }

  void getsockopt(int level, int option, void* value, uint* length) override {
    socklen_t len = *length;
    if (::getsockopt(fd(), level, option, value, &len) < 0) {
      kj::throwFatalException(syscallException("getsockopt", errno));
    }
    *length = len;
  }
  void setsockopt(int level, int option, const void* value, uint length) override {
    if (::setsockopt(fd(), level, option, value, length) < 0) {
      kj::throwFatalException(syscallException("setsockopt", errno));
    }
  }
  void getsockname(struct sockaddr* addr, uint* length) override {
    socklen_t len = *length;
    if (::getsockname(fd(), addr, &len) < 0) {
      kj::throwFatalException(syscallException("getsockname", errno));
    }
    *length = len;
  }
  void getpeername(struct sockaddr* addr, uint* length) override {
    socklen_t len = *length;
    if (::getpeername(fd(), addr, &len) < 0) {
      kj::throwFatalException(syscallException("getpeername", errno));
    }
    *length = len;
  }
  kj::Maybe<int> getFd() const override { return holder_.fd(); }

 private:
  int fd() const { return holder_.fd(); }

  kj::Promise<size_t> readLoop(kj::byte* buffer, size_t minBytes, size_t maxBytes,
                               size_t alreadyRead) {
    for (;;) {
      ssize_t n = ::read(fd(), buffer, maxBytes);
      if (n < 0) {
        int error = errno;
        if (error == EINTR) continue;
        if (error == EAGAIN || error == EWOULDBLOCK) {
          return watcher().readable().then([this, buffer, minBytes, maxBytes, alreadyRead]() {
            return readLoop(buffer, minBytes, maxBytes, alreadyRead);
          });
        }
        return syscallException("read", error);
      }
      if (n == 0) return alreadyRead;  // EOF
      alreadyRead += size_t(n);
      if (size_t(n) >= minBytes) return alreadyRead;
      buffer += n;
      minBytes -= size_t(n);
      maxBytes -= size_t(n);
    }
  }

  // Writes `first` then `rest`; the caller keeps the bytes alive until the promise resolves.
  kj::Promise<void> writeLoop(kj::ArrayPtr<const kj::byte> first,
                              kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> rest) {
    for (;;) {
      while (first.size() == 0 && rest.size() > 0) {
        first = rest[0];
        rest = rest.slice(1, rest.size());
      }
      if (first.size() == 0) return kj::READY_NOW;

      struct iovec iov[IOV_MAX];
      size_t count = 0;
      iov[count++] = {const_cast<kj::byte*>(first.begin()), first.size()};
      for (size_t i = 0; i < rest.size() && count < IOV_MAX; ++i) {
        if (rest[i].size() == 0) continue;
        iov[count++] = {const_cast<kj::byte*>(rest[i].begin()), rest[i].size()};
      }
      ssize_t n;
      if (isSocket_) {
        struct msghdr msg;
        memset(&msg, 0, sizeof(msg));
        msg.msg_iov = iov;
        msg.msg_iovlen = count;
        n = ::sendmsg(fd(), &msg, MSG_NOSIGNAL);  // no SIGPIPE from sockets, whatever the mask
      } else {
        n = ::writev(fd(), iov, int(count));  // pipes: SIGPIPE is ignored by UvKjLoop
      }
      if (n < 0) {
        int error = errno;
        if (error == EINTR) continue;
        if (error == EAGAIN || error == EWOULDBLOCK) {
          return watcher().writable().then(
              [this, first, rest]() { return writeLoop(first, rest); });
        }
        return syscallException(isSocket_ ? "sendmsg" : "writev", error);
      }
      // Consume n bytes.
      size_t left = size_t(n);
      while (left > 0) {
        size_t take = std::min(left, first.size());
        first = first.slice(take, first.size());
        left -= take;
        if (first.size() == 0 && rest.size() > 0) {
          first = rest[0];
          rest = rest.slice(1, rest.size());
        }
      }
    }
  }

  FdHolder holder_;
  bool isSocket_ = false;
  kj::Maybe<kj::ForkedPromise<void>> disconnected_;
};

class UvListener final : public kj::ConnectionReceiver {
 public:
  UvListener(UvEventPort& port, int fd, kj::LowLevelAsyncIoProvider::NetworkFilter& filter,
             uint flags)
      : port_(port), holder_(port, fd, flags), filter_(filter) {}

  kj::Promise<kj::Own<kj::AsyncIoStream>> accept() override {
    for (;;) {
      struct sockaddr_storage addr;
      socklen_t addrLen = sizeof(addr);
      int fd = ::accept4(holder_.fd(), reinterpret_cast<struct sockaddr*>(&addr), &addrLen,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        int error = errno;
        switch (error) {
          case EINTR:
          case ECONNABORTED:  // the client gave up before we accepted: try the next one
          case EPROTO:
            continue;
          case EAGAIN:
#if EAGAIN != EWOULDBLOCK
          case EWOULDBLOCK:
#endif
            return holder_.watcher().readable().then([this]() { return accept(); });
          default:
            return syscallException("accept4", error);
        }
      }
      if (!filter_.shouldAllow(reinterpret_cast<struct sockaddr*>(&addr), addrLen)) {
        ::close(fd);
        continue;
      }
      if (addr.ss_family == AF_INET || addr.ss_family == AF_INET6) {
        int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      }
      using Flags = kj::LowLevelAsyncIoProvider;
      return kj::Own<kj::AsyncIoStream>(kj::heap<UvStream>(
          port_, fd, Flags::TAKE_OWNERSHIP | Flags::ALREADY_NONBLOCK | Flags::ALREADY_CLOEXEC));
    }
  }

  uint getPort() override {
    struct sockaddr_storage addr;
    socklen_t len = sizeof(addr);
    if (::getsockname(holder_.fd(), reinterpret_cast<struct sockaddr*>(&addr), &len) < 0) {
      kj::throwFatalException(syscallException("getsockname", errno));
    }
    if (addr.ss_family == AF_INET) {
      return ntohs(reinterpret_cast<struct sockaddr_in*>(&addr)->sin_port);
    }
    if (addr.ss_family == AF_INET6) {
      return ntohs(reinterpret_cast<struct sockaddr_in6*>(&addr)->sin6_port);
    }
    return 0;
  }

  void getsockopt(int level, int option, void* value, uint* length) override {
    socklen_t len = *length;
    if (::getsockopt(holder_.fd(), level, option, value, &len) < 0) {
      kj::throwFatalException(syscallException("getsockopt", errno));
    }
    *length = len;
  }
  void setsockopt(int level, int option, const void* value, uint length) override {
    if (::setsockopt(holder_.fd(), level, option, value, length) < 0) {
      kj::throwFatalException(syscallException("setsockopt", errno));
    }
  }
  void getsockname(struct sockaddr* addr, uint* length) override {
    socklen_t len = *length;
    if (::getsockname(holder_.fd(), addr, &len) < 0) {
      kj::throwFatalException(syscallException("getsockname", errno));
    }
    *length = len;
  }

 private:
  UvEventPort& port_;
  FdHolder holder_;
  kj::LowLevelAsyncIoProvider::NetworkFilter& filter_;
};

class UvLowLevelIoProvider final : public kj::LowLevelAsyncIoProvider {
 public:
  explicit UvLowLevelIoProvider(UvEventPort& port) : port_(port) {}

  kj::Own<kj::AsyncInputStream> wrapInputFd(int fd, uint flags) override {
    return kj::heap<UvStream>(port_, fd, flags);
  }
  kj::Own<kj::AsyncOutputStream> wrapOutputFd(int fd, uint flags) override {
    return kj::heap<UvStream>(port_, fd, flags);
  }
  kj::Own<kj::AsyncIoStream> wrapSocketFd(int fd, uint flags) override {
    return kj::heap<UvStream>(port_, fd, flags);
  }

  // 0.9.2 contract: this call starts the connect itself.
  kj::Promise<kj::Own<kj::AsyncIoStream>> wrapConnectingSocketFd(int fd,
                                                                 const struct sockaddr* addr,
                                                                 uint addrlen,
                                                                 uint flags) override {
    auto stream = kj::heap<UvStream>(port_, fd, flags);
    for (;;) {
      if (::connect(fd, addr, addrlen) == 0) {
        return kj::Own<kj::AsyncIoStream>(kj::mv(stream));
      }
      int error = errno;
      if (error == EINTR) continue;
      if (error != EINPROGRESS) return syscallException("connect", error);
      break;
    }
    auto& watcher = stream->watcher();
    return watcher.writable().then([stream = kj::mv(stream)]() mutable {
      int error = 0;
      socklen_t len = sizeof(error);
      int fd = KJ_ASSERT_NONNULL(stream->getFd());
      if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0) error = errno;
      if (error != 0) kj::throwFatalException(syscallException("connect", error));
      return kj::Own<kj::AsyncIoStream>(kj::mv(stream));
    });
  }

  kj::Own<kj::ConnectionReceiver> wrapListenSocketFd(int fd, NetworkFilter& filter,
                                                     uint flags) override {
    return kj::heap<UvListener>(port_, fd, filter, flags);
  }

  kj::Timer& getTimer() override { return port_.timer(); }

 private:
  UvEventPort& port_;
};

}  // namespace

kj::Own<kj::LowLevelAsyncIoProvider> newUvLowLevelIoProvider(UvEventPort& port) {
  return kj::heap<UvLowLevelIoProvider>(port);
}

}  // namespace pl
