#include "transport/control_socket.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <list>

#include "core/util/log.h"
#include "transport/uv_handle.h"

namespace pl {

std::string defaultControlSocketPath() {
  const char* runtime = std::getenv("XDG_RUNTIME_DIR");
  if (runtime != nullptr && runtime[0] != '\0') return std::string(runtime) + "/peerlight/node.sock";
  if (::getuid() == 0) return "/run/peerlight/node.sock";
  return "/tmp/peerlight-" + std::to_string(::getuid()) + "/node.sock";
}

std::vector<std::string> controlSocketCandidates() {
  std::vector<std::string> paths = {defaultControlSocketPath()};
  if (paths[0] != "/run/peerlight/node.sock") paths.push_back("/run/peerlight/node.sock");
  return paths;
}

namespace {

bool validToken(const std::string& token) {
  if (token.empty() || token.size() > 64) return false;
  for (char c : token) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) {
      return false;
    }
  }
  return true;
}

// Connects a blocking Unix stream socket to `path`; -1 (errno set) on failure.
int connectUnix(const std::string& path) {
  struct sockaddr_un addr {};
  if (path.size() >= sizeof(addr.sun_path)) {
    errno = ENAMETOOLONG;
    return -1;
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (::connect(fd, reinterpret_cast<struct sockaddr*>(&addr), sizeof(addr)) != 0) {
    int saved = errno;
    ::close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

}  // namespace

bool controlSocketAnswers(const std::string& path) {
  int fd = connectUnix(path);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

struct ControlSocket::Impl {
  struct Client;

  // A render job's view of its client (ControlRenderJob); outlives the client.
  struct Job final : public ControlRenderJob {
    Client* client = nullptr;  // null once the client is gone
    std::string token_;
    std::string params_;
    std::vector<uint8_t> payload_;
    uint32_t uid_ = 0;
    bool finished = false;
    std::function<void()> disconnected;

    const std::string& token() const override { return token_; }
    const std::string& params() const override { return params_; }
    std::vector<uint8_t>& payload() override { return payload_; }
    uint32_t clientUid() const override { return uid_; }
    bool connected() const override { return client != nullptr && !finished; }
    void accept() override { send("accepted\n", {}, false); }
    void progress(const std::string& text) override {
      // A client that does not read (stopped, say) gets no more progress lines than fit.
      if (client != nullptr &&
          uv_stream_get_write_queue_size(reinterpret_cast<uv_stream_t*>(client->pipe.get())) > 0)
        return;
      send("progress " + oneLine(text) + "\n", {}, false);
    }
    void done(const std::string& text, std::vector<uint8_t> bytes) override {
      std::string line = "done " + std::to_string(bytes.size()) + " " + oneLine(text) + "\n";
      send(std::move(line), std::move(bytes), true);
    }
    void fail(const std::string& why) override { send("error " + oneLine(why) + "\n", {}, true); }
    void onDisconnect(std::function<void()> callback) override {
      disconnected = std::move(callback);
    }

    static std::string oneLine(std::string text) {
      for (char& c : text) {
        if (c == '\n' || c == '\r') c = ' ';
      }
      return text;
    }
    void send(std::string line, std::vector<uint8_t> bytes, bool last);
  };

  struct Client {
    Impl* impl = nullptr;
    UvHandle<uv_pipe_t> pipe;
    uint32_t uid = 0;
    std::string line;
    std::string token;         // set once it said "owner"
    std::shared_ptr<Job> job;  // set once it said "render"
    uint64_t payloadBytes = 0;  // declared payload size of a render request
    bool payloadComplete = false;  // then renderRequested ran (once) and no more data may come
    bool closing = false;       // a final reply is being written; then the connection closes
    size_t writesInFlight = 0;
    char readBuffer[64 * 1024];
  };

  uv_loop_t* loop = nullptr;
  std::string path;
  Callbacks callbacks;
  Options options;
  UvHandle<uv_pipe_t> listener;
  std::list<std::unique_ptr<Client>> clients;
  // Declared bytes of the render payloads being uploaded now (bounded by maxPayloadBytes in all).
  uint64_t uploadingBytes = 0;
  static constexpr size_t kMaxClients = 64;

  ~Impl() {
    while (!clients.empty()) drop(*clients.front());
    listener.close();
    ::unlink(path.c_str());
  }

  size_t ownerJobs() const {
    size_t n = 0;
    for (const auto& c : clients) n += c->token.empty() ? 0 : 1;
    return n;
  }

  // Closes the client; ends its owner job if it had one, tells its render job.
  void drop(Client& client) {
    if (client.job && !client.payloadComplete) uploadingBytes -= client.payloadBytes;
    std::string token = std::move(client.token);
    std::shared_ptr<Job> job = std::move(client.job);
    client.pipe.close();
    clients.remove_if([&](const std::unique_ptr<Client>& c) { return c.get() == &client; });
    if (!token.empty() && callbacks.ownerEnded) callbacks.ownerEnded(token);
    if (job) {
      job->client = nullptr;
      if (!job->finished && job->disconnected) {
        auto callback = std::move(job->disconnected);
        callback();
      }
    }
  }

  // Writes `head` and `body` (owned until written); when `last`, closes the connection after.
  void write(Client& client, std::string head, std::vector<uint8_t> body, bool last) {
    struct Request {
      uv_write_t req{};
      std::string head;
      std::vector<uint8_t> body;
      Client* client;
      bool last;
    };
    auto* r = new Request{{}, std::move(head), std::move(body), &client, last};
    r->req.data = r;
    // uv_buf_t lengths are unsigned int: the body goes in slices of at most 1 GiB.
    std::vector<uv_buf_t> bufs = {uv_buf_init(r->head.data(), unsigned(r->head.size()))};
    for (size_t at = 0; at < r->body.size(); at += size_t(1) << 30) {
      size_t n = std::min(r->body.size() - at, size_t(1) << 30);
      bufs.push_back(uv_buf_init(reinterpret_cast<char*>(r->body.data() + at), unsigned(n)));
    }
    if (last) client.closing = true;
    client.writesInFlight += 1;
    int rc = uv_write(&r->req, reinterpret_cast<uv_stream_t*>(client.pipe.get()), bufs.data(),
                      unsigned(bufs.size()), [](uv_write_t* req, int status) {
                        auto* done = static_cast<Request*>(req->data);
                        std::unique_ptr<Request> owned(done);
                        // A handle being closed reports its writes (cancelled ones, and ones
                        // already done) before its memory goes; the client was dropped then
                        // and must not be touched.
                        if (status == UV_ECANCELED ||
                            uv_is_closing(reinterpret_cast<uv_handle_t*>(req->handle)))
                          return;
                        Client& c = *done->client;
                        c.writesInFlight -= 1;
                        if (status < 0 || (c.closing && c.writesInFlight == 0)) c.impl->drop(c);
                      });
    if (rc != 0) {
      delete r;
      client.writesInFlight -= 1;
      drop(client);
    }
  }

  void onConnection() {
    auto client = std::make_unique<Client>();
    client->impl = this;
    if (client->pipe.init(loop, uv_pipe_init, 0) != 0) return;
    client->pipe->data = client.get();
    if (uv_accept(reinterpret_cast<uv_stream_t*>(listener.get()),
                  reinterpret_cast<uv_stream_t*>(client->pipe.get())) != 0) {
      return;
    }
    uv_os_fd_t fd = -1;
    struct ucred cred {};
    socklen_t length = sizeof(cred);
    if (uv_fileno(client->pipe.base(), &fd) != 0 ||
        ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &length) != 0 ||
        (!options.anyLocalUser && cred.uid != ::getuid())) {
      PL_LOG_WARN("control socket: refused a client of uid %u (only uid %u may control this node)",
                  unsigned(cred.uid), unsigned(::getuid()));
      return;  // the handle closes with `client`
    }
    client->uid = cred.uid;
    if (clients.size() >= kMaxClients) {
      PL_LOG_WARN("control socket: %zu clients connected already; refusing another", clients.size());
      return;  // closed with `client`
    }
    Client* raw = client.get();
    clients.push_back(std::move(client));
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(raw->pipe.get()),
        [](uv_handle_t* h, size_t, uv_buf_t* buf) {
          auto* c = static_cast<Client*>(h->data);
          // A render payload is read straight into its buffer.
          if (c->job && !c->payloadComplete) {
            std::vector<uint8_t>& p = c->job->payload_;
            size_t have = p.size();
            size_t want = size_t(std::min<uint64_t>(c->payloadBytes - have, 1 << 20));
            p.resize(have + want);
            *buf = uv_buf_init(reinterpret_cast<char*>(p.data() + have), unsigned(want));
            return;
          }
          *buf = uv_buf_init(c->readBuffer, sizeof(c->readBuffer));
        },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
          auto* c = static_cast<Client*>(s->data);
          c->impl->onRead(*c, n, buf);
        });
  }

  void refuse(Client& client, const std::string& why) {
    PL_LOG_WARN("control socket: %s", why.c_str());
    write(client, "error " + why + "\n", {}, true);
  }

  void onRead(Client& client, ssize_t n, const uv_buf_t* buf) {
    Job* job = client.job.get();
    const bool intoPayload =
        job != nullptr && buf->base != client.readBuffer;  // see the alloc callback
    if (intoPayload) {
      // Give back what the alloc callback reserved and was not filled.
      size_t filled = n > 0 ? size_t(n) : 0;
      job->payload_.resize(job->payload_.size() - buf->len + filled);
    }
    if (n < 0) {  // EOF or error: the owner job (if any) ends, a render job is cancelled
      drop(client);
      return;
    }
    if (client.closing || !client.token.empty()) return;  // nothing more is expected
    if (job != nullptr) {
      if (!intoPayload) {
        if (n > 0) refuse(client, "render job " + job->token_ + ": data after the payload");
        return;
      }
      if (job->payload_.size() == client.payloadBytes) payloadArrived(client);
      return;
    }
    client.line.append(client.readBuffer, size_t(n));
    size_t newline = client.line.find('\n');
    if (newline == std::string::npos) {
      if (client.line.size() >= kMaxControlRequestBytes) refuse(client, "request line too long");
      return;
    }
    if (newline >= kMaxControlRequestBytes) return refuse(client, "request line too long");
    std::string line = client.line.substr(0, newline);
    std::string rest = client.line.substr(newline + 1);
    client.line.clear();
    if (line.rfind("owner ", 0) == 0) {
      std::string token = line.substr(6);
      if (!validToken(token)) return refuse(client, "bad owner token");
      if (!rest.empty()) return refuse(client, "data after the owner request");
      client.token = token;
      if (callbacks.ownerStarted) callbacks.ownerStarted(token);
      write(client, "ok\n", {}, false);
      return;
    }
    if (line.rfind("render ", 0) == 0) return startRender(client, line.substr(7), std::move(rest));
    refuse(client, "bad request (expected \"owner <token>\" or \"render <token> <bytes> "
                   "<params>\")");
  }

  // "render <token> <bytes> <params>": the payload follows (part of it may be in `rest`).
  void startRender(Client& client, const std::string& args, std::string rest) {
    size_t space1 = args.find(' ');
    size_t space2 = space1 == std::string::npos ? space1 : args.find(' ', space1 + 1);
    if (space2 == std::string::npos) return refuse(client, "render request: missing fields");
    std::string token = args.substr(0, space1);
    std::string size = args.substr(space1 + 1, space2 - space1 - 1);
    if (!validToken(token)) return refuse(client, "render request: bad token");
    uint64_t bytes = 0;
    if (size.empty() || size.size() > 19 ||
        size.find_first_not_of("0123456789") != std::string::npos)
      return refuse(client, "render request: bad payload size \"" + size.substr(0, 20) + "\"");
    bytes = std::stoull(size);
    if (bytes == 0 || bytes > options.maxPayloadBytes)
      return refuse(client, "render request: payload of " + std::to_string(bytes) +
                                " bytes (this node takes 1 to " +
                                std::to_string(options.maxPayloadBytes) + ")");
    if (rest.size() > bytes) return refuse(client, "render request: data after the payload");
    if (uploadingBytes + bytes > options.maxPayloadBytes)
      return refuse(client, "busy: other render jobs are uploading " +
                                std::to_string(uploadingBytes) + " bytes");
    if (!callbacks.renderRequested) return refuse(client, "this node does not take render jobs");
    auto job = std::make_shared<Job>();
    job->client = &client;
    job->token_ = token;
    job->params_ = args.substr(space2 + 1);
    job->uid_ = client.uid;
    job->payload_.assign(rest.begin(), rest.end());  // grows as the payload arrives
    client.job = job;
    client.payloadBytes = bytes;
    uploadingBytes += bytes;
    if (job->payload_.size() == bytes) payloadArrived(client);
  }

  // The whole payload is in: the job goes to its callback, once; later data is refused.
  void payloadArrived(Client& client) {
    client.payloadComplete = true;
    uploadingBytes -= client.payloadBytes;
    callbacks.renderRequested(client.job);
  }
};

void ControlSocket::Impl::Job::send(std::string line, std::vector<uint8_t> bytes, bool last) {
  if (client == nullptr || finished) return;
  if (last) finished = true;
  client->impl->write(*client, std::move(line), std::move(bytes), last);
}

Result<std::unique_ptr<ControlSocket>> ControlSocket::listen(uv_loop_t* loop,
                                                             const std::string& path,
                                                             Callbacks callbacks,
                                                             Options options) {
  const std::string where = "control socket " + path;
  size_t slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) {
    std::string dir = path.substr(0, slash);
    const mode_t dirMode = options.anyLocalUser ? 0755 : 0700;
    if (::mkdir(dir.c_str(), dirMode) != 0 && errno != EEXIST) {
      return Error{where + ": cannot create " + dir + ": " + std::strerror(errno)};
    }
    // A folder someone else made (e.g. /tmp/peerlight-<uid> created by another user to
    // intercept the socket) is refused.
    struct stat st {};
    if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
      return Error{where + ": " + dir + " is not a folder"};
    if (st.st_uid != ::getuid())
      return Error{where + ": " + dir + " belongs to uid " + std::to_string(st.st_uid) +
                   ", not to this user (uid " + std::to_string(::getuid()) + ")"};
    if ((st.st_mode & 0022) != 0)
      return Error{where + ": " + dir + " is writable by other users"};
  }
  int existing = connectUnix(path);
  if (existing >= 0) {
    ::close(existing);
    return Error{where + ": another process (a running node daemon?) listens on it"};
  }
  ::unlink(path.c_str());  // a stale socket of a daemon that died
  auto impl = std::make_unique<Impl>();
  impl->loop = loop;
  impl->path = path;
  impl->callbacks = std::move(callbacks);
  impl->options = options;
  if (int rc = impl->listener.init(loop, uv_pipe_init, 0); rc != 0) {
    return Error{where + ": " + uv_strerror(rc)};
  }
  impl->listener->data = impl.get();
  mode_t old = ::umask(options.anyLocalUser ? 0111 : 0177);
  int rc = uv_pipe_bind(impl->listener.get(), path.c_str());
  ::umask(old);
  if (rc != 0) return Error{where + ": cannot bind: " + uv_strerror(rc)};
  ::chmod(path.c_str(), options.anyLocalUser ? 0666 : 0600);
  rc = uv_listen(reinterpret_cast<uv_stream_t*>(impl->listener.get()), 8,
                 [](uv_stream_t* s, int status) {
                   if (status == 0) static_cast<Impl*>(s->data)->onConnection();
                 });
  if (rc != 0) return Error{where + ": cannot listen: " + uv_strerror(rc)};
  return std::unique_ptr<ControlSocket>(new ControlSocket(std::move(impl)));
}

ControlSocket::ControlSocket(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ControlSocket::~ControlSocket() = default;
const std::string& ControlSocket::path() const { return impl_->path; }
size_t ControlSocket::ownerJobs() const { return impl_->ownerJobs(); }

Result<int> announceOwnerJob(const std::string& path, const std::string& token, int timeoutMs) {
  const std::string where = "control socket " + path;
  if (!validToken(token)) return Error{where + ": invalid owner token"};
  int fd = connectUnix(path);
  if (fd < 0) return Error{where + ": " + std::strerror(errno)};
  std::string request = "owner " + token + "\n";
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) != ssize_t(request.size())) {
    ::close(fd);
    return Error{where + ": cannot send the request"};
  }
  std::string reply;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  while (reply.find('\n') == std::string::npos && reply.size() < kMaxControlLineBytes) {
    int left = int(std::chrono::duration_cast<std::chrono::milliseconds>(
                       deadline - std::chrono::steady_clock::now())
                       .count());
    struct pollfd p {fd, POLLIN, 0};
    if (left <= 0 || ::poll(&p, 1, left) <= 0) {
      ::close(fd);
      return Error{where + ": no answer within " + std::to_string(timeoutMs) + " ms"};
    }
    char buffer[kMaxControlLineBytes];
    ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) {
      ::close(fd);
      return Error{where + ": the daemon closed the connection"};
    }
    reply.append(buffer, size_t(n));
  }
  reply = reply.substr(0, reply.find('\n'));
  if (reply != "ok") {
    ::close(fd);
    return Error{where + ": refused: " + reply};
  }
  return fd;
}

namespace {

// Reads from a blocking socket until `out` holds a full line (returned without '\n', the bytes
// after it left in `out`), at most `maxBytes`. Errors name `where`.
Result<std::string> readLine(int fd, std::string& out, size_t maxBytes,
                             const std::string& where) {
  for (;;) {
    size_t newline = out.find('\n');
    if (newline != std::string::npos) {
      std::string line = out.substr(0, newline);
      out.erase(0, newline + 1);
      return line;
    }
    if (out.size() > maxBytes) return Error{where + ": reply line longer than " +
                                            std::to_string(maxBytes) + " bytes"};
    char buffer[64 * 1024];
    ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Error{where + ": the daemon closed the connection"};
    out.append(buffer, size_t(n));
  }
}

bool sendAll(int fd, const uint8_t* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= size_t(n);
  }
  return true;
}

}  // namespace

Result<ControlRenderReply> submitRenderJob(const std::string& path, const std::string& token,
                                           const std::string& params,
                                           std::span<const uint8_t> payload,
                                           uint64_t maxFilmBytes,
                                           const std::function<void(const std::string&)>& onProgress,
                                           bool* refused) {
  const std::string where = "node daemon at " + path;
  *refused = true;
  if (!validToken(token)) return Error{where + ": invalid job token"};
  if (params.find('\n') != std::string::npos) return Error{where + ": params span lines"};
  int fd = connectUnix(path);
  if (fd < 0) return Error{where + ": " + std::strerror(errno)};
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  std::string request = "render " + token + " " + std::to_string(payload.size()) + " " + params +
                        "\n";
  if (request.size() > kMaxControlRequestBytes)
    return Error{where + ": render request too long (" + std::to_string(request.size()) +
                 " bytes)"};
  std::string in;
  // The daemon may refuse before reading the payload (and close): its error line is the
  // better message then, so a failed send is reported after trying to read it.
  bool sent = sendAll(fd, reinterpret_cast<const uint8_t*>(request.data()), request.size()) &&
              sendAll(fd, payload.data(), payload.size());
  Result<std::string> line = readLine(fd, in, kMaxControlLineBytes * 16, where);
  if (!line.ok()) {
    if (!sent) return Error{where + ": cannot send the render job (" + std::strerror(errno) + ")"};
    return line.error();
  }
  if (line->rfind("error ", 0) == 0) return Error{where + ": refused: " + line->substr(6)};
  if (*line != "accepted") return Error{where + ": unexpected reply \"" + line->substr(0, 80) + "\""};
  *refused = false;
  for (;;) {
    line = readLine(fd, in, kMaxControlReplyLineBytes, where);
    if (!line.ok()) return line.error();
    if (line->rfind("progress ", 0) == 0) {
      if (onProgress) onProgress(line->substr(9));
      continue;
    }
    if (line->rfind("error ", 0) == 0) return Error{line->substr(6)};
    if (line->rfind("done ", 0) != 0)
      return Error{where + ": unexpected reply \"" + line->substr(0, 80) + "\""};
    std::string rest = line->substr(5);
    size_t space = rest.find(' ');
    std::string size = rest.substr(0, space);
    if (size.empty() || size.size() > 19 ||
        size.find_first_not_of("0123456789") != std::string::npos)
      return Error{where + ": bad film size in the reply"};
    uint64_t bytes = std::stoull(size);
    if (bytes > maxFilmBytes)
      return Error{where + ": film of " + std::to_string(bytes) + " bytes, expected at most " +
                   std::to_string(maxFilmBytes)};
    ControlRenderReply reply;
    reply.text = space == std::string::npos ? "" : rest.substr(space + 1);
    reply.bytes.assign(in.begin(), in.begin() + std::min<size_t>(in.size(), size_t(bytes)));
    reply.bytes.resize(size_t(bytes));
    size_t have = std::min<size_t>(in.size(), size_t(bytes));
    while (have < bytes) {
      ssize_t n = ::recv(fd, reply.bytes.data() + have, size_t(bytes) - have, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return Error{where + ": the daemon closed the connection within the film"};
      have += size_t(n);
    }
    return reply;
  }
}

}  // namespace pl
