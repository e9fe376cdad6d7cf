#pragma once
// The node daemon's local control socket (issue 4 item 4): a Unix stream socket through which
// `peerlight render` on the same machine either tells the daemon that the owner's job starts
// (the render stays in its own process) or hands the whole job to the daemon, which becomes
// the Primary, streams progress back and returns the finished film.
//
// Protocol: one request per connection. Text lines are ASCII and end with '\n'.
//   Owner job:
//     client: "owner <token>\n"    token: [0-9a-zA-Z] 1..64 chars; the Primary puts the same
//                                  token in its LeaseRequest.ownerToken, so its own leases are
//                                  not revoked
//     daemon: "ok\n" once the remote leases are revoked, or "error <why>\n" (then it closes).
//     The owner job lasts as long as the client keeps the connection open; closing it (the job
//     ended, or the process died: the kernel closes the socket) ends it.
//   Render job:
//     client: "render <token> <bytes> <params>\n" and then <bytes> bytes of payload (a
//             serialized RenderData, core/scene/render_data.h). <params> is the rest of the
//             line (a JSON object; the daemon's job code reads it). The line is at most
//             kMaxControlRequestBytes, the payload at most ControlSocket::Options::
//             maxPayloadBytes.
//     daemon: "accepted\n" when the job starts, then any number of "progress <text>\n", then
//             either "done <bytes> <text>\n" followed by <bytes> bytes (the film), or
//             "error <why>\n"; then it closes. "error" may also come instead of "accepted".
//     The job runs as long as the client keeps the connection open: closing it cancels it.
//     Data after the payload is refused (one job per connection).
//
// Limits: at most 64 clients at once (more are closed at once); the payloads being uploaded
// together at most Options::maxPayloadBytes (a request beyond it: "error busy: ..."); buffers
// grow as bytes arrive, never by what a request declares. A client that does not read its
// replies gets no more progress lines while earlier ones wait to be written.
//
// Access: the socket file is created in a directory of mode 0700 and with mode 0600, and the
// daemon accepts only peers of its own uid (SO_PEERCRED) — unless Options::anyLocalUser (a
// system daemon serving every user of the machine: the folder is 0755 and the socket 0666).
// An existing folder must be owned by this uid and not writable by others.
//
// Threads: ControlSocket lives on the loop thread of the uv loop it is given.

#include <uv.h>

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/util/status.h"

namespace pl {

constexpr size_t kMaxControlLineBytes = 256;            // owner requests and short replies
constexpr size_t kMaxControlRequestBytes = 64 * 1024;   // a render request line
constexpr size_t kMaxControlReplyLineBytes = 16 << 20;  // a daemon's progress / done line

// $XDG_RUNTIME_DIR/peerlight/node.sock; /run/peerlight/node.sock for root; otherwise
// /tmp/peerlight-<uid>/node.sock.
std::string defaultControlSocketPath();
// Whether a process accepts connections on `path` now (a stale socket file of a daemon that
// died does not).
bool controlSocketAnswers(const std::string& path);
// Where a client looks for a daemon, in order: defaultControlSocketPath(), then the system
// daemon's /run/peerlight/node.sock (packaging/peerlight-node.service).
std::vector<std::string> controlSocketCandidates();

// A render job handed to the daemon (daemon side). Loop thread only. The object stays valid
// after the client went away; sends are then ignored.
class ControlRenderJob {
 public:
  virtual ~ControlRenderJob() = default;
  virtual const std::string& token() const = 0;
  virtual const std::string& params() const = 0;  // the request's <params> text
  // The payload; move it out (on the loop thread) before other threads use it.
  virtual std::vector<uint8_t>& payload() = 0;
  virtual uint32_t clientUid() const = 0;
  virtual bool connected() const = 0;
  virtual void accept() = 0;                            // "accepted"
  virtual void progress(const std::string& text) = 0;  // "progress <text>" (one line: no '\n')
  // "done"/"error", then the connection closes (after the bytes are written).
  virtual void done(const std::string& text, std::vector<uint8_t> bytes) = 0;
  virtual void fail(const std::string& why) = 0;
  // Called once when the client disconnects before done()/fail() (the job is cancelled).
  virtual void onDisconnect(std::function<void()> callback) = 0;
};

struct ControlSocketOptions {
  uint64_t maxPayloadBytes = uint64_t(1) << 30;  // a render job's payload
  bool anyLocalUser = false;                     // accept every uid (see Access above)
};

class ControlSocket {
 public:
  // Called on the loop thread: an owner job with `token` started / ended (its connection
  // closed). Every start is followed by exactly one end (at the latest when this object goes).
  // renderRequested: a render job's request and payload arrived (no callback: refused).
  struct Callbacks {
    std::function<void(const std::string& token)> ownerStarted;
    std::function<void(const std::string& token)> ownerEnded;
    std::function<void(std::shared_ptr<ControlRenderJob> job)> renderRequested;
  };
  using Options = ControlSocketOptions;

  // Binds `path` (creating its directory). Fails when another process answers on it (a daemon
  // is running); a stale socket file is replaced.
  static Result<std::unique_ptr<ControlSocket>> listen(uv_loop_t* loop, const std::string& path,
                                                       Callbacks callbacks,
                                                       Options options = Options());
  // Closes the listener and every client (ending their owner jobs; render jobs see their
  // disconnect) and unlinks the file.
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

// Client side of a render job: connects to `path` and sends the request and payload. Fails
// with `refused` set when the daemon could not be reached or refused the job before accepting
// it (the caller may then render by itself); after "accepted", calls onProgress(text) for each
// progress line and returns the done line's text and bytes, or fails with the daemon's error
// (or "the daemon closed the connection"). Blocks the calling thread. `maxFilmBytes` bounds
// the done payload.
struct ControlRenderReply {
  std::string text;
  std::vector<uint8_t> bytes;
};
Result<ControlRenderReply> submitRenderJob(const std::string& path, const std::string& token,
                                           const std::string& params,
                                           std::span<const uint8_t> payload,
                                           uint64_t maxFilmBytes,
                                           const std::function<void(const std::string&)>& onProgress,
                                           bool* refused);

}  // namespace pl
