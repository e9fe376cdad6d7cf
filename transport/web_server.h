#pragma once
// WebServer: HTTP and WebSocket on a libuv loop that someone else runs (the node daemon's),
// through libwebsockets (Debian's build, its libuv event library on a foreign loop). No HTTP
// parsing of our own: this file is integration glue; what is served is the owner's (Handlers).
//
//   WebServer::Handlers h;
//   h.http = [](const WebRequest& r) { return WebResponse{200, "text/html", page}; };
//   h.socketMessage = [&](uint64_t client, const std::string& text) { ... };
//   Result<std::unique_ptr<WebServer>> server = WebServer::start(loop.uv(), "127.0.0.1", 0, h);
//   (*server)->send(client, bytes, /*binary=*/true);   // queued; dropped for a slow client
//
// Bounds: request headers 4 KiB (libwebsockets' default), request bodies kMaxBodyBytes (only
// with a Content-Length; 411 without, 413 beyond), WebSocket messages from a client
// kMaxMessageBytes (closed with 1009 beyond) and at most kMaxMessagesPerSecond of them (after a
// burst of kMaxMessageBurst; a flood is closed with 1008), kMaxClients WebSocket clients (503
// beyond), and kMaxQueued messages queued per client: send() drops what a client that does not
// keep up would have to queue, so a slow browser never holds anything back. WebSocket clients must ask
// for the subprotocol `protocol` given to start() (`new WebSocket(url, "peerlight")`).
//
// Threads: everything on the loop's thread, handlers included. Destroying the server closes
// every connection at once (socketClosed runs for each, inside the destructor); libwebsockets
// then frees its last memory on a later turn of the loop.

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/util/status.h"

namespace pl {

constexpr size_t kMaxBodyBytes = 64 << 10;
constexpr size_t kMaxMessageBytes = 16 << 10;
constexpr double kMaxMessagesPerSecond = 50;  // the page sends at most 30 camera moves a second
constexpr double kMaxMessageBurst = 100;
constexpr size_t kMaxClients = 64;
constexpr size_t kMaxQueued = 4;

struct WebRequest {
  std::string method;  // "GET", "POST"
  std::string path;    // without the query
  std::string query;   // the raw query string, without '?'
  std::string cookie;  // the Cookie header ("" when absent)
  std::string host;         // the Host header
  std::string origin;       // the Origin header ("" when absent)
  std::string contentType;  // the Content-Type header
  std::string body;    // POST only
  std::string peer;    // the client's address
  bool loopback = false;  // the client connected from 127.0.0.0/8 or ::1
  // The value of query argument `name` (URL-decoded), or "".
  std::string arg(const std::string& name) const;
  // The value of cookie `name`, or "".
  std::string cookieValue(const std::string& name) const;
};

struct WebResponse {
  int status = 200;
  std::string contentType = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // e.g. {"set-cookie", "..."}
};

class WebServer {
 public:
  struct Handlers {
    std::function<WebResponse(const WebRequest&)> http;
    // A WebSocket upgrade (path, cookie, query, peer): accept it (true) or refuse it.
    std::function<bool(const WebRequest&)> acceptSocket;
    std::function<void(uint64_t client, const WebRequest& upgrade)> socketOpened;
    std::function<void(uint64_t client, const std::string& message)> socketMessage;
    std::function<void(uint64_t client)> socketClosed;
  };

  // Listens on host:port (port 0: a free one; host an IPv4 address, e.g. 127.0.0.1 or
  // 0.0.0.0). Fails naming the address when it cannot listen.
  static Result<std::unique_ptr<WebServer>> start(uv_loop_t* loop, const std::string& host,
                                                  uint16_t port, const std::string& protocol,
                                                  Handlers handlers);
  ~WebServer();
  WebServer(const WebServer&) = delete;
  WebServer& operator=(const WebServer&) = delete;

  uint16_t port() const { return port_; }
  // Queues one message for a client; false (and nothing queued) when the client is gone or
  // kMaxQueued messages wait for it already.
  bool send(uint64_t client, std::span<const uint8_t> bytes, bool binary);
  // The same message for many clients without a copy each: frame() it once, send() it to each.
  using Frame = std::shared_ptr<const std::vector<uint8_t>>;
  static Frame frame(std::span<const uint8_t> bytes);
  bool send(uint64_t client, const Frame& frame, bool binary);
  bool send(uint64_t client, const std::string& text) {
    return send(client, std::span<const uint8_t>(
                            reinterpret_cast<const uint8_t*>(text.data()), text.size()),
                false);
  }
  size_t clientCount() const;

  struct Impl;

 private:
  explicit WebServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  uint16_t port_ = 0;
};

}  // namespace pl
