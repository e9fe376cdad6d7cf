// WebServer: libwebsockets 4.1 on a foreign libuv loop (see web_server.h).
//
// libwebsockets' own rules that shape this file (4.1.6, Debian 12):
// - Per-session data is zero-filled C memory: it holds plain pointers, freed in the close
//   callbacks.
// - Request headers are readable only inside LWS_CALLBACK_HTTP and the protocol filter.
// - One lws_write per WRITEABLE callback; payloads need LWS_PRE bytes of headroom.
// - A WebSocket upgrade without a subprotocol binds to protocols[0] (HTTP): refused there.
// - With a foreign loop, lws_context_destroy() must be called twice: the first call closes
//   every connection and uv_close()s lws's handles; the second, once those handles have closed,
//   frees the context. A small heap Reaper (an idle handle) makes the second call and frees
//   itself, so the server can go at once.
// - lws_create_context() returns a half-destroyed context when it cannot listen, whose final
//   teardown closes the failed socket's descriptor number a second time: by then the daemon
//   may have reused that number (its control socket did, when another daemon took the port
//   between a check and lws's bind). So lws never listens here (CONTEXT_PORT_NO_LISTEN_SERVER):
//   the server binds and listens on a socket of its own, failing cleanly, and hands each
//   accepted connection to lws (lws_adopt_socket_vhost), as lws's socket adoption intends.

#include "transport/web_server.h"

#include <libwebsockets.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <map>

#include "core/util/log.h"
#include "core/util/uv_handle.h"

namespace pl {
namespace {

struct Client {
  lws* wsi = nullptr;
  uint64_t id = 0;
  std::string peer;  // for the log
  // LWS_PRE bytes of headroom + payload (shared by the clients it goes to: libwebsockets writes
  // the frame header into the headroom, one client after the other on this thread), binary.
  std::deque<std::pair<WebServer::Frame, bool>> queue;
  std::string rx;
  // Messages the client may still send: kMaxMessageBurst, refilled at kMaxMessagesPerSecond.
  // A message is charged once, at its first part (rx empty: libwebsockets hands a message over
  // in parts of at most the receive buffer); an empty part is charged too (no flood of them is
  // free).
  double allowance = kMaxMessageBurst;
  uint64_t refilledMs = 0;  // the loop's clock (uv_now)
  bool mayReceive(uint64_t nowMs) {
    allowance = std::min(kMaxMessageBurst,
                         allowance + double(nowMs - refilledMs) * kMaxMessagesPerSecond / 1000);
    refilledMs = nowMs;
    if (allowance < 1) return false;
    allowance -= 1;
    return true;
  }
};

// Closes a WebSocket connection with a status and its reason (the callback returns this).
int closeWith(lws* wsi, lws_close_status status, const char* why) {
  lws_close_reason(wsi, status, reinterpret_cast<unsigned char*>(const_cast<char*>(why)),
                   std::strlen(why));
  return -1;
}

// Per-connection data of both protocols (lws zero-fills it).
struct Pss {
  std::string* response;  // HTTP: the body being written
  size_t offset;
  std::string* body;      // HTTP POST: the body being read
  WebRequest* request;    // HTTP POST / WebSocket upgrade: the request, until answered
  Client* client;         // WebSocket
};

// Owns what libwebsockets keeps pointers to (protocols, the context) and outlives the server
// until the context is freed.
struct Holder {
  lws_context* context = nullptr;  // lws sets it to null when it frees the context
  std::string protocolName;
  lws_protocols protocols[3] = {};
  WebServer::Impl* server = nullptr;  // null once the server is gone
  uv_idle_t idle{};
};

void countClosing(uv_handle_t* handle, void* count) {
  *static_cast<int*>(count) += uv_is_closing(handle);
}

// The server's own listening socket: a uv_poll_t on it accepts each connection and hands it
// to lws. Out of descriptors (or memory), accepting pauses for kAcceptPauseMs rather than
// spinning on a socket that stays readable; the log says so at most once per kLogEveryMs, with
// the number of pauses since its last line. Destroyed before the context: from then on no
// connection is accepted (UvHandle: no callback after close), and the socket is closed.
struct Listener {
  static constexpr uint64_t kAcceptPauseMs = 100;
  static constexpr uint64_t kLogEveryMs = 10000;
  int fd = -1;
  bool logged = false;      // a pause was logged
  uint64_t loggedAtMs = 0;  // uv_now() of that line
  uint64_t unlogged = 0;    // pauses since it
  lws_vhost* vhost = nullptr;
  UvHandle<uv_poll_t> poll;
  UvHandle<uv_timer_t> pause;

  Listener(int fd, lws_vhost* vhost) : fd(fd), vhost(vhost) {}
  ~Listener() {
    poll.close();  // out of the loop's polling at once, so the socket can go now
    pause.close();
    ::close(fd);
  }
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // Starts accepting on `loop`: a libuv error code, or 0.
  int start(uv_loop_t* loop) {
    if (const int rc = poll.init(loop, uv_poll_init_socket, fd); rc != 0) return rc;
    if (const int rc = pause.init(loop, uv_timer_init); rc != 0) return rc;
    poll->data = pause->data = this;
    return uv_poll_start(poll.get(), UV_READABLE, &Listener::onReadable);
  }

  void notePause(int error) {
    const uint64_t now = uv_now(poll->loop);
    ++unlogged;
    if (logged && now - loggedAtMs < kLogEveryMs) return;
    const std::string more =
        unlogged > 1 ? " (" + std::to_string(unlogged - 1) + " more pauses before this one)" : "";
    PL_LOG_WARN("web: accepting a connection failed: %s; pausing %llu ms%s", std::strerror(error),
                (unsigned long long)kAcceptPauseMs, more.c_str());
    logged = true;
    loggedAtMs = now;
    unlogged = 0;
  }

  static void onReadable(uv_poll_t* handle, int status, int /*events*/) {
    auto* self = static_cast<Listener*>(handle->data);
    if (status < 0) {
      PL_LOG_WARN("web: accepting: %s", uv_strerror(status));
      return;
    }
    for (;;) {
      const int client = ::accept4(self->fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (client < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;  // none left
        self->notePause(errno);
        uv_poll_stop(self->poll.get());
        uv_timer_start(
            self->pause.get(),
            [](uv_timer_t* timer) {
              auto* l = static_cast<Listener*>(timer->data);
              uv_poll_start(l->poll.get(), UV_READABLE, &Listener::onReadable);
            },
            kAcceptPauseMs, 0);
        return;
      }
      // As lws's own listener sets it: small responses go out at once.
      const int one = 1;
      ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      // lws closes the descriptor itself when it cannot adopt it.
      if (lws_adopt_socket_vhost(self->vhost, client) == nullptr)
        PL_LOG_WARN("web: could not take a connection (out of memory or clients)");
    }
  }
};

// The second lws_context_destroy(), once no handle is closing any more; then frees the holder.
void reapLater(Holder* holder, uv_loop_t* loop) {
  uv_idle_init(loop, &holder->idle);
  holder->idle.data = holder;
  uv_idle_start(&holder->idle, [](uv_idle_t* idle) {
    int closing = 0;
    uv_walk(idle->loop, countClosing, &closing);
    if (closing > 0) return;
    auto* h = static_cast<Holder*>(idle->data);
    lws_context_destroy(h->context);
    uv_idle_stop(idle);
    uv_close(reinterpret_cast<uv_handle_t*>(idle),
             [](uv_handle_t* handle) { delete static_cast<Holder*>(handle->data); });
  });
}

std::string header(lws* wsi, lws_token_indexes token) {
  const int n = lws_hdr_total_length(wsi, token);
  if (n <= 0) return "";
  std::string out(size_t(n) + 1, '\0');
  const int copied = lws_hdr_copy(wsi, out.data(), n + 1, token);
  if (copied < 0) return "";
  out.resize(size_t(copied));
  return out;
}

// Method, path, query arguments, cookie and peer of the request on `wsi`.
WebRequest requestOf(lws* wsi, const char* path) {
  WebRequest r;
  const bool post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
  r.method = post ? "POST" : "GET";
  r.path = path != nullptr ? path : header(wsi, WSI_TOKEN_GET_URI);
  char fragment[1024];
  for (int i = 0;; ++i) {
    const int n = lws_hdr_copy_fragment(wsi, fragment, sizeof fragment, WSI_TOKEN_HTTP_URI_ARGS, i);
    if (n < 0) break;
    if (!r.query.empty()) r.query += '&';
    r.query.append(fragment, size_t(n));
  }
  r.cookie = header(wsi, WSI_TOKEN_HTTP_COOKIE);
  r.host = header(wsi, WSI_TOKEN_HOST);
  r.origin = header(wsi, WSI_TOKEN_ORIGIN);
  r.contentType = header(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE);
  char peer[128] = "";
  lws_get_peer_simple(wsi, peer, sizeof peer);
  r.peer = peer;
  r.loopback = r.peer.rfind("127.", 0) == 0 || r.peer == "::1" ||
               r.peer.rfind("::ffff:127.", 0) == 0;
  return r;
}

}  // namespace

namespace {

// The value of `name` in "name=value" parts of `text` separated by `separator` (spaces before
// a part skipped), or "".
std::string partValue(const std::string& text, char separator, const std::string& name) {
  size_t begin = 0;
  while (begin <= text.size()) {
    size_t end = text.find(separator, begin);
    if (end == std::string::npos) end = text.size();
    const size_t start = std::min(text.find_first_not_of(' ', begin), end);
    const std::string part = text.substr(start, end - start);
    if (part.size() > name.size() && part.compare(0, name.size(), name) == 0 &&
        part[name.size()] == '=')
      return part.substr(name.size() + 1);
    begin = end + 1;
  }
  return "";
}

}  // namespace

std::string WebRequest::arg(const std::string& name) const { return partValue(query, '&', name); }

std::string WebRequest::cookieValue(const std::string& name) const {
  return partValue(cookie, ';', name);
}

struct WebServer::Impl {
  uv_loop_t* loop = nullptr;
  Handlers handlers;
  Holder* holder = nullptr;
  std::unique_ptr<Listener> listener;
  std::map<uint64_t, Client*> clients;
  uint64_t nextClient = 1;

  static Impl* of(lws* wsi) {
    auto* holder = static_cast<Holder*>(lws_context_user(lws_get_context(wsi)));
    return holder != nullptr ? holder->server : nullptr;
  }

  // Headers, then the body on WRITEABLE.
  static int respond(lws* wsi, Pss* pss, const WebResponse& response) {
    uint8_t buffer[LWS_PRE + 2048];
    uint8_t *start = buffer + LWS_PRE, *p = start, *end = buffer + sizeof buffer - 1;
    delete pss->response;
    pss->response = new std::string(response.body);
    pss->offset = 0;
    if (lws_add_http_common_headers(wsi, unsigned(response.status),
                                    response.contentType.c_str(), response.body.size(), &p,
                                    end) != 0)
      return -1;
    auto add = [&](const std::string& name, const std::string& value) {
      const std::string key = name + ":";
      return lws_add_http_header_by_name(wsi, reinterpret_cast<const uint8_t*>(key.c_str()),
                                         reinterpret_cast<const uint8_t*>(value.data()),
                                         int(value.size()), &p, end);
    };
    if (add("cache-control", "no-store") != 0) return -1;
    for (const auto& [name, value] : response.headers)
      if (add(name, value) != 0) return -1;
    if (lws_finalize_write_http_header(wsi, start, &p, end) != 0) return -1;
    lws_callback_on_writable(wsi);
    return 0;
  }

  static void freeHttp(Pss* pss) {
    if (pss == nullptr) return;
    delete pss->response;
    delete pss->body;
    delete pss->request;
    pss->response = nullptr;
    pss->body = nullptr;
    pss->request = nullptr;
  }

  static int http(lws* wsi, lws_callback_reasons reason, void* user, void* in, size_t len) {
    auto* pss = static_cast<Pss*>(user);
    Impl* self = of(wsi);
    switch (reason) {
      case LWS_CALLBACK_HTTP: {
        if (self == nullptr) return -1;
        freeHttp(pss);
        WebRequest request = requestOf(wsi, static_cast<const char*>(in));
        if (request.method == "POST") {
          const std::string length = header(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH);
          int status = 0;
          if (length.empty()) status = HTTP_STATUS_LENGTH_REQUIRED;
          else if (std::strtoull(length.c_str(), nullptr, 10) > kMaxBodyBytes)
            status = HTTP_STATUS_REQ_ENTITY_TOO_LARGE;
          if (status != 0) {
            PL_LOG_WARN("web: %s %s from %s refused: %s", request.method.c_str(),
                        request.path.c_str(), request.peer.c_str(),
                        length.empty() ? "no Content-Length"
                                       : "a body of more than 64 KiB");
            lws_return_http_status(wsi, unsigned(status), nullptr);
            return -1;  // the body is not read: close
          }
          pss->body = new std::string();
          pss->request = new WebRequest(std::move(request));
          return 0;  // the body comes in HTTP_BODY
        }
        return respond(wsi, pss, self->handlers.http(request));
      }
      case LWS_CALLBACK_HTTP_BODY:
        if (pss->body == nullptr || pss->body->size() + len > kMaxBodyBytes) return -1;
        pss->body->append(static_cast<const char*>(in), len);
        return 0;
      case LWS_CALLBACK_HTTP_BODY_COMPLETION: {
        if (self == nullptr || pss->request == nullptr || pss->body == nullptr) return -1;
        pss->request->body = std::move(*pss->body);
        const WebResponse response = self->handlers.http(*pss->request);
        return respond(wsi, pss, response);
      }
      case LWS_CALLBACK_HTTP_WRITEABLE: {
        if (pss == nullptr || pss->response == nullptr) break;
        uint8_t buffer[LWS_PRE + 16384];
        const size_t n = std::min(pss->response->size() - pss->offset, sizeof buffer - LWS_PRE);
        std::memcpy(buffer + LWS_PRE, pss->response->data() + pss->offset, n);
        pss->offset += n;
        const bool last = pss->offset == pss->response->size();
        if (lws_write(wsi, buffer + LWS_PRE, n, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) !=
            int(n))
          return -1;
        if (!last) {
          lws_callback_on_writable(wsi);
          return 0;
        }
        freeHttp(pss);
        return lws_http_transaction_completed(wsi) ? -1 : 0;
      }
      case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return 1;  // an upgrade without our subprotocol
      case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
      case LWS_CALLBACK_CLOSED_HTTP:
        freeHttp(pss);
        break;
      default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
  }

  static int socket(lws* wsi, lws_callback_reasons reason, void* user, void* in, size_t len) {
    auto* pss = static_cast<Pss*>(user);
    Impl* self = of(wsi);
    switch (reason) {
      case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
        if (self == nullptr || self->clients.size() >= kMaxClients) return 1;
        WebRequest request = requestOf(wsi, nullptr);
        if (self->handlers.acceptSocket && !self->handlers.acceptSocket(request)) return 1;
        delete pss->request;
        pss->request = new WebRequest(std::move(request));
        return 0;
      }
      case LWS_CALLBACK_ESTABLISHED: {
        if (self == nullptr) return -1;
        auto* client = new Client;
        client->wsi = wsi;
        client->id = self->nextClient++;
        client->peer = pss->request != nullptr ? pss->request->peer : "";
        client->refilledMs = uv_now(self->loop);
        pss->client = client;
        self->clients[client->id] = client;
        WebRequest request = pss->request != nullptr ? *pss->request : WebRequest{};
        delete pss->request;
        pss->request = nullptr;
        if (self->handlers.socketOpened) self->handlers.socketOpened(client->id, request);
        break;
      }
      case LWS_CALLBACK_RECEIVE: {
        Client* client = pss != nullptr ? pss->client : nullptr;
        if (client == nullptr || self == nullptr) return -1;
        if ((client->rx.empty() || len == 0) && !client->mayReceive(uv_now(self->loop))) {
          PL_LOG_WARN("web: WebSocket client %s closed: more than %.0f messages a second",
                      client->peer.c_str(), kMaxMessagesPerSecond);
          return closeWith(wsi, LWS_CLOSE_STATUS_POLICY_VIOLATION, "too many messages");
        }
        if (client->rx.size() + len > kMaxMessageBytes) {
          PL_LOG_WARN("web: WebSocket client %s closed: a message of more than %zu bytes",
                      client->peer.c_str(), kMaxMessageBytes);
          return closeWith(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, "message too large");
        }
        client->rx.append(static_cast<const char*>(in), len);
        if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi) != 0) break;
        std::string message = std::move(client->rx);
        client->rx.clear();
        if (self->handlers.socketMessage) self->handlers.socketMessage(client->id, message);
        break;
      }
      case LWS_CALLBACK_SERVER_WRITEABLE: {
        Client* client = pss != nullptr ? pss->client : nullptr;
        if (client == nullptr || client->queue.empty()) break;
        auto& [bytes, binary] = client->queue.front();
        const size_t n = bytes->size() - LWS_PRE;
        // (const only to the owner: the headroom is libwebsockets' to write the header into)
        uint8_t* payload = const_cast<uint8_t*>(bytes->data()) + LWS_PRE;
        if (lws_write(wsi, payload, n, binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT) < int(n))
          return -1;
        client->queue.pop_front();
        if (!client->queue.empty()) lws_callback_on_writable(wsi);
        break;
      }
      case LWS_CALLBACK_CLOSED: {
        if (pss == nullptr) break;
        delete pss->request;
        pss->request = nullptr;
        Client* client = pss->client;
        pss->client = nullptr;
        if (client == nullptr) break;
        if (self != nullptr) {
          self->clients.erase(client->id);
          if (self->handlers.socketClosed) self->handlers.socketClosed(client->id);
        }
        delete client;
        break;
      }
      default:
        break;
    }
    return 0;
  }
};

WebServer::WebServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<WebServer>> WebServer::start(uv_loop_t* loop, const std::string& host,
                                                    uint16_t port, const std::string& protocol,
                                                    Handlers handlers) {
  // Errors and warnings only, through our log (libwebsockets' setting is process-wide).
  lws_set_log_level(LLL_ERR | LLL_WARN, [](int level, const char* line) {
    std::string text = line;
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
    if (level == LLL_ERR) PL_LOG_WARN("web: %s", text.c_str());
    else PL_LOG_DEBUG("web: %s", text.c_str());
  });
  auto impl = std::make_unique<Impl>();
  impl->loop = loop;
  impl->handlers = std::move(handlers);
  auto* holder = new Holder;
  holder->protocolName = protocol;
  holder->protocols[0] = {"http", &Impl::http, sizeof(Pss), 0, 0, nullptr, 0};
  holder->protocols[1] = {holder->protocolName.c_str(), &Impl::socket, sizeof(Pss), 4096, 0,
                          nullptr, 65536};
  holder->server = impl.get();
  impl->holder = holder;

  // The listening socket, ours (see the top of this file): bound and listening before lws
  // is asked for anything.
  const std::string where = host + ":" + std::to_string(port);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) {
    delete holder;
    return Error{"web: cannot listen on " + where + " (not an IPv4 address)"};
  }
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    const int error = errno;
    delete holder;
    return Error{"web: cannot listen on " + where + " (socket: " + std::strerror(error) + ")"};
  }
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  socklen_t length = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 64) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &length) != 0) {
    const int error = errno;
    ::close(fd);
    delete holder;
    return Error{"web: cannot listen on " + where + " (" + std::strerror(error) + ")"};
  }
  lws_context_creation_info info;
  std::memset(&info, 0, sizeof info);
  void* loops[1] = {loop};
  info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_DISABLE_IPV6;
  info.foreign_loops = loops;
  info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
  info.protocols = holder->protocols;
  info.user = holder;
  info.pcontext = &holder->context;
  info.timeout_secs = 10;
  holder->context = lws_create_context(&info);
  if (holder->context == nullptr) {
    ::close(fd);
    delete holder;
    return Error{"web: cannot serve on " + where + " (no libwebsockets context)"};
  }
  lws_vhost* vhost = lws_get_vhost_by_name(holder->context, "default");
  if (vhost == nullptr) {
    ::close(fd);
    holder->server = nullptr;
    reapLater(holder, loop);
    return Error{"web: cannot serve on " + where + " (no libwebsockets vhost)"};
  }
  auto listener = std::make_unique<Listener>(fd, vhost);  // owns the socket from here
  if (const int rc = listener->start(loop); rc != 0) {
    listener.reset();
    lws_context_destroy(holder->context);
    holder->server = nullptr;
    reapLater(holder, loop);
    return Error{"web: cannot serve on " + where + " (" + uv_strerror(rc) + ")"};
  }
  impl->listener = std::move(listener);
  std::unique_ptr<WebServer> server(new WebServer(std::move(impl)));
  server->port_ = ntohs(a.sin_port);
  return server;
}

WebServer::~WebServer() {
  impl_->listener.reset();  // no new connection from now on
  Holder* holder = impl_->holder;
  lws_context_destroy(holder->context);  // closes every connection: socketClosed runs here
  holder->server = nullptr;  // (every socket's CLOSED ran inside the destroy: no client is left)
  reapLater(holder, impl_->loop);
}

WebServer::Frame WebServer::frame(std::span<const uint8_t> bytes) {
  auto framed = std::make_shared<std::vector<uint8_t>>(LWS_PRE + bytes.size());
  std::memcpy(framed->data() + LWS_PRE, bytes.data(), bytes.size());
  return framed;
}

bool WebServer::send(uint64_t client, std::span<const uint8_t> bytes, bool binary) {
  auto it = impl_->clients.find(client);
  if (it == impl_->clients.end() || it->second->queue.size() >= kMaxQueued) return false;
  return send(client, frame(bytes), binary);
}

bool WebServer::send(uint64_t client, const Frame& framed, bool binary) {
  auto it = impl_->clients.find(client);
  if (it == impl_->clients.end()) return false;
  Client* c = it->second;
  if (c->queue.size() >= kMaxQueued) return false;
  c->queue.emplace_back(framed, binary);
  lws_callback_on_writable(c->wsi);
  return true;
}

size_t WebServer::clientCount() const { return impl_->clients.size(); }

}  // namespace pl
