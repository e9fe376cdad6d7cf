#include "transport/control_socket.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

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

void writeStatic(uv_pipe_t* pipe, const char* text) {
  auto* req = new uv_write_t{};
  uv_buf_t buf = uv_buf_init(const_cast<char*>(text), unsigned(std::strlen(text)));
  if (uv_write(req, reinterpret_cast<uv_stream_t*>(pipe), &buf, 1,
               [](uv_write_t* r, int) { delete r; }) != 0) {
    delete req;
  }
}

}  // namespace

struct ControlSocket::Impl {
  struct Client {
    Impl* impl = nullptr;
    UvHandle<uv_pipe_t> pipe;
    std::string line;
    std::string token;  // set once it said "owner"
    char readBuffer[kMaxControlLineBytes];
  };

  uv_loop_t* loop = nullptr;
  std::string path;
  Callbacks callbacks;
  UvHandle<uv_pipe_t> listener;
  std::list<std::unique_ptr<Client>> clients;

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

  // Closes the client; ends its owner job if it had one.
  void drop(Client& client) {
    std::string token = std::move(client.token);
    client.pipe.close();
    clients.remove_if([&](const std::unique_ptr<Client>& c) { return c.get() == &client; });
    if (!token.empty() && callbacks.ownerEnded) callbacks.ownerEnded(token);
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
        cred.uid != ::getuid()) {
      PL_LOG_WARN("control socket: refused a client of uid %u (only uid %u may control this node)",
                  unsigned(cred.uid), unsigned(::getuid()));
      return;  // the handle closes with `client`
    }
    Client* raw = client.get();
    clients.push_back(std::move(client));
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(raw->pipe.get()),
        [](uv_handle_t* h, size_t, uv_buf_t* buf) {
          auto* c = static_cast<Client*>(h->data);
          *buf = uv_buf_init(c->readBuffer, sizeof(c->readBuffer));
        },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t*) {
          auto* c = static_cast<Client*>(s->data);
          c->impl->onRead(*c, n);
        });
  }

  void onRead(Client& client, ssize_t n) {
    if (n < 0) {  // EOF or error: the owner job (if any) ends
      drop(client);
      return;
    }
    if (!client.token.empty()) return;  // nothing more is expected; ignore
    client.line.append(client.readBuffer, size_t(n));
    size_t newline = client.line.find('\n');
    if (newline == std::string::npos) {
      if (client.line.size() >= kMaxControlLineBytes) {
        writeStatic(client.pipe.get(), "error line too long\n");
        drop(client);
      }
      return;
    }
    std::string line = client.line.substr(0, newline);
    client.line.clear();
    const std::string prefix = "owner ";
    std::string token = line.rfind(prefix, 0) == 0 ? line.substr(prefix.size()) : "";
    if (!validToken(token)) {
      PL_LOG_WARN("control socket: bad request (expected \"owner <token>\")");
      writeStatic(client.pipe.get(), "error expected \"owner <token>\"\n");
      drop(client);
      return;
    }
    client.token = token;
    if (callbacks.ownerStarted) callbacks.ownerStarted(token);
    writeStatic(client.pipe.get(), "ok\n");
  }
};

Result<std::unique_ptr<ControlSocket>> ControlSocket::listen(uv_loop_t* loop,
                                                             const std::string& path,
                                                             Callbacks callbacks) {
  const std::string where = "control socket " + path;
  size_t slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) {
    std::string dir = path.substr(0, slash);
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return Error{where + ": cannot create " + dir + ": " + std::strerror(errno)};
    }
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
  if (int rc = impl->listener.init(loop, uv_pipe_init, 0); rc != 0) {
    return Error{where + ": " + uv_strerror(rc)};
  }
  impl->listener->data = impl.get();
  mode_t old = ::umask(0177);
  int rc = uv_pipe_bind(impl->listener.get(), path.c_str());
  ::umask(old);
  if (rc != 0) return Error{where + ": cannot bind: " + uv_strerror(rc)};
  ::chmod(path.c_str(), 0600);
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

}  // namespace pl
