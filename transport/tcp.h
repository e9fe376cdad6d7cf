#pragma once
// TCP endpoints as "HOST:PORT" strings, on a KJ low-level I/O provider (UvKjLoop::lowLevelIo()
// in peerlight; any kj::LowLevelAsyncIoProvider works). The RPC layer builds its
// TwoPartyServer / TwoPartyVatNetwork on what these return.
//
// HOST is a numeric IPv4 address ("127.0.0.1", "0.0.0.0"), a numeric IPv6 address in brackets
// ("[::1]", "[::]"), or "localhost" (127.0.0.1). Host names are not resolved here: peers are
// found by discovery, which yields addresses. PORT is 0..65535; listening on port 0 picks a free
// port, which getPort() on the receiver reports.
//
// Threads: the loop thread of the provider.

#include <kj/async-io.h>
#include <sys/socket.h>

#include <string>
#include <string_view>

#include "core/util/status.h"

namespace pl {

struct TcpAddress {
  struct sockaddr_storage storage;
  socklen_t length = 0;
  std::string text;  // as given, for messages

  const struct sockaddr* sockaddr() const {
    return reinterpret_cast<const struct sockaddr*>(&storage);
  }
};

// Errors name the input and what is wrong, e.g. "tcp address '1.2.3.4': missing ':PORT'".
Result<TcpAddress> parseTcpAddress(std::string_view hostPort);

// Binds (SO_REUSEADDR) and listens (backlog 128). Errors name the address and the syscall.
Result<kj::Own<kj::ConnectionReceiver>> listenTcp(kj::LowLevelAsyncIoProvider& io,
                                                  std::string_view hostPort);

// Connects (TCP_NODELAY). Bad input rejects with FAILED; a refused or unreachable peer rejects
// with DISCONNECTED; both messages name the address.
kj::Promise<kj::Own<kj::AsyncIoStream>> connectTcp(kj::LowLevelAsyncIoProvider& io,
                                                   std::string_view hostPort);

}  // namespace pl
