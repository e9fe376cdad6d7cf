#pragma once
// The node daemon's local control socket (issue 4 item 4): a Unix stream socket through which
// `peerlight render` on the same machine tells the daemon that the machine's owner starts a job.
//
// Line protocol (ASCII, one line each way, at most kMaxControlLineBytes):
//   client: "owner <token>\n"   token: [0-9a-zA-Z] 1..64 chars; the Primary puts the same token
//                               in its LeaseRequest.ownerToken, so its own leases are not revoked
//   daemon: "ok\n" once the remote leases are revoked, or "error <why>\n" (then it closes)
// The owner job lasts as long as the client keeps the connection open; closing it (the job
// ended, or the process died: the kernel closes the socket) ends the owner job.
//
// Access: the socket file is created mode 0600 in a directory of mode 0700, and the daemon
// accepts only peers of its own uid (SO_PEERCRED).
//
// Threads: ControlSocket lives on the loop thread of the uv loop it is given.

#include <uv.h>

#include <functional>
#include <memory>
#include <string>

#include "core/util/status.h"

namespace pl {

constexpr size_t kMaxControlLineBytes = 256;

// $XDG_RUNTIME_DIR/peerlight/node.sock; /run/peerlight/node.sock for root; otherwise
// /tmp/peerlight-<uid>/node.sock.
std::string defaultControlSocketPath();

class ControlSocket {
 public:
  // Called on the loop thread: an owner job with `token` started / ended (its connection
  // closed). Every start is followed by exactly one end (at the latest when this object goes).
  struct Callbacks {
    std::function<void(const std::string& token)> ownerStarted;
    std::function<void(const std::string& token)> ownerEnded;
  };

  // Binds `path` (creating its directory, mode 0700). Fails when another process answers on
  // it (a daemon is running); a stale socket file is replaced.
  static Result<std::unique_ptr<ControlSocket>> listen(uv_loop_t* loop, const std::string& path,
                                                       Callbacks callbacks);
  // Closes the listener and every client (ending their owner jobs) and unlinks the file.
  ~ControlSocket();
  ControlSocket(const ControlSocket&) = delete;
  ControlSocket& operator=(const ControlSocket&) = delete;

  const std::string& path() const;
  size_t ownerJobs() const;  // clients that said "owner" and are still connected

  struct Impl;

 private:
  explicit ControlSocket(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Client side: connects to `path`, says "owner <token>" and waits (at most timeoutMs) for
// "ok". Returns the connected socket's fd, which the caller keeps open for as long as its job
// runs (closing it, or exiting, ends the owner job). Fails with a message naming the path when
// nothing listens there, or the daemon refused.
Result<int> announceOwnerJob(const std::string& path, const std::string& token,
                             int timeoutMs = 2000);

}  // namespace pl
