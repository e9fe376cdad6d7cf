#include "transport/tcp.h"

#include <arpa/inet.h>
#include <kj/debug.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

namespace pl {

namespace {

std::string quoted(std::string_view text) { return "tcp address '" + std::string(text) + "'"; }

// Closes a socket fd unless released.
class SocketFd {
 public:
  explicit SocketFd(int fd) : fd_(fd) {}
  ~SocketFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  SocketFd(const SocketFd&) = delete;
  SocketFd& operator=(const SocketFd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

kj::Exception failed(const std::string& message) {
  return kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__, kj::str(message.c_str()));
}

constexpr uint kNewFdFlags = kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP |
                             kj::LowLevelAsyncIoProvider::ALREADY_NONBLOCK |
                             kj::LowLevelAsyncIoProvider::ALREADY_CLOEXEC;

}  // namespace

Result<TcpAddress> parseTcpAddress(std::string_view hostPort) {
  size_t colon = hostPort.rfind(':');
  if (colon == std::string_view::npos) return Error{quoted(hostPort) + ": missing ':PORT'"};
  std::string_view host = hostPort.substr(0, colon);
  std::string_view portText = hostPort.substr(colon + 1);

  unsigned port = 0;
  auto [end, ec] = std::from_chars(portText.data(), portText.data() + portText.size(), port);
  if (portText.empty() || ec != std::errc() || end != portText.data() + portText.size() ||
      port > 65535) {
    return Error{quoted(hostPort) + ": port '" + std::string(portText) +
                 "' is not a number in 0..65535"};
  }

  TcpAddress result;
  memset(&result.storage, 0, sizeof(result.storage));
  result.text = std::string(hostPort);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    std::string literal(host.substr(1, host.size() - 2));
    auto* in6 = reinterpret_cast<struct sockaddr_in6*>(&result.storage);
    if (inet_pton(AF_INET6, literal.c_str(), &in6->sin6_addr) != 1) {
      return Error{quoted(hostPort) + ": '" + literal + "' is not an IPv6 address"};
    }
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(uint16_t(port));
    result.length = sizeof(*in6);
    return result;
  }
  std::string literal = host == "localhost" ? std::string("127.0.0.1") : std::string(host);
  auto* in4 = reinterpret_cast<struct sockaddr_in*>(&result.storage);
  if (inet_pton(AF_INET, literal.c_str(), &in4->sin_addr) != 1) {
    return Error{quoted(hostPort) + ": host '" + std::string(host) +
                 "' is not an IPv4 address, [IPv6] address or localhost"};
  }
  in4->sin_family = AF_INET;
  in4->sin_port = htons(uint16_t(port));
  result.length = sizeof(*in4);
  return result;
}

Result<kj::Own<kj::ConnectionReceiver>> listenTcp(kj::LowLevelAsyncIoProvider& io,
                                                  std::string_view hostPort) {
  Result<TcpAddress> address = parseTcpAddress(hostPort);
  if (!address) return address.error();
  auto fail = [&](const char* what) {
    return Error{"listen on " + quoted(hostPort) + ": " + what + ": " + strerror(errno)};
  };
  SocketFd fd(::socket(address->storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return fail("socket");
  int one = 1;
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0) {
    return fail("setsockopt(SO_REUSEADDR)");
  }
  if (::bind(fd.get(), address->sockaddr(), address->length) < 0) return fail("bind");
  if (::listen(fd.get(), 128) < 0) return fail("listen");
  return io.wrapListenSocketFd(fd.release(), kNewFdFlags);
}

kj::Promise<kj::Own<kj::AsyncIoStream>> connectTcp(kj::LowLevelAsyncIoProvider& io,
                                                   std::string_view hostPort) {
  Result<TcpAddress> address = parseTcpAddress(hostPort);
  if (!address) return failed(address.error().message);
  SocketFd fd(::socket(address->storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) {
    std::string message = "connect to " + quoted(hostPort) + ": socket: " + strerror(errno);
    return failed(message);
  }
  int one = 1;
  ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  std::string text = quoted(hostPort);
  return io.wrapConnectingSocketFd(fd.release(), address->sockaddr(), address->length, kNewFdFlags)
      .catch_([text](kj::Exception&& e) -> kj::Promise<kj::Own<kj::AsyncIoStream>> {
        return kj::Exception(e.getType(), e.getFile(), e.getLine(),
                             kj::str("connect to ", text.c_str(), ": ", e.getDescription()));
      });
}

}  // namespace pl
