#pragma once
// kj::LowLevelAsyncIoProvider on libuv: file descriptors are watched with uv_poll_t on the
// port's loop; reads and writes are plain non-blocking syscalls. kj::newAsyncIoProvider() over
// it gives the kj::Network (TCP, Unix sockets), pipes and timers that Cap'n Proto RPC uses.
//
// Behaviour worth knowing:
// - Socket writes use MSG_NOSIGNAL; a peer that went away makes write() reject with a
//   DISCONNECTED kj::Exception (so does a read that sees ECONNRESET). Errors name the syscall.
// - Accepted and connected TCP sockets get TCP_NODELAY (small RPC calls go out at once).
// - libuv allows one uv_poll_t per fd, so each fd is wrapped at most once at a time.
// - whenWriteDisconnected() resolves on a hang-up or socket error seen while polling; after the
//   peer only half-closed, it may not resolve until the next read or write notices.
// - Datagram and Unix-socket fd passing (wrapUnixSocketFd, wrapDatagramSocketFd) are not
//   implemented (they throw UNIMPLEMENTED).
//
// Threads: loop thread only. The provider and every object it makes must be destroyed before
// the port.

#include <kj/async-io.h>

namespace pl {

class UvEventPort;

kj::Own<kj::LowLevelAsyncIoProvider> newUvLowLevelIoProvider(UvEventPort& port);

}  // namespace pl
