// WebServer (transport/web_server.h) on a UvKjLoop: HTTP requests and WebSocket messages from a
// plain blocking client on another thread (127.0.0.1, ephemeral port), the bounds, and a
// server destroyed with a client still connected.

#include "transport/web_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <kj/common.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "transport/uv_kj_loop.h"

namespace pl {
namespace {

// A blocking TCP client with a 10 s receive timeout.
class Client {
 public:
  explicit Client(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~Client() { ::close(fd_); }
  bool ok() const { return ok_; }
  void write(const std::string& s) { (void)!::send(fd_, s.data(), s.size(), MSG_NOSIGNAL); }
  // Reads until `until` appears (or the peer closes / times out): everything read.
  std::string readUntil(const std::string& until) {
    while (buffer_.find(until) == std::string::npos) {
      char b[4096];
      const ssize_t n = ::recv(fd_, b, sizeof b, 0);
      if (n <= 0) break;
      buffer_.append(b, size_t(n));
    }
    std::string out = std::move(buffer_);
    buffer_.clear();
    return out;
  }
  // Reads exactly n bytes (fewer if the peer closes).
  std::string readBytes(size_t n) {
    while (buffer_.size() < n) {
      char b[4096];
      const ssize_t got = ::recv(fd_, b, sizeof b, 0);
      if (got <= 0) break;
      buffer_.append(b, size_t(got));
    }
    std::string out = buffer_.substr(0, std::min(n, buffer_.size()));
    buffer_.erase(0, out.size());
    return out;
  }
  // One masked client frame (opcode 1: text).
  void sendFrame(const std::string& payload, uint8_t opcode = 1) { write(frame(payload, opcode)); }
  static std::string frame(const std::string& payload, uint8_t opcode = 1) {
    std::string f;
    f += char(0x80 | opcode);
    const uint8_t mask[4] = {1, 2, 3, 4};
    if (payload.size() < 126) {
      f += char(0x80 | payload.size());
    } else {
      f += char(0x80 | 126);
      f += char(payload.size() >> 8);
      f += char(payload.size() & 0xff);
    }
    f.append(reinterpret_cast<const char*>(mask), 4);
    for (size_t i = 0; i < payload.size(); ++i) f += char(payload[i] ^ mask[i % 4]);
    return f;
  }
  // One server frame: {opcode, payload}; opcode -1 when the connection ended.
  std::pair<int, std::string> readFrame() {
    const std::string head = readBytes(2);
    if (head.size() < 2) return {-1, ""};
    size_t len = uint8_t(head[1]) & 0x7f;
    if (len == 126) {
      const std::string l = readBytes(2);
      len = (size_t(uint8_t(l[0])) << 8) | uint8_t(l[1]);
    } else if (len == 127) {
      const std::string l = readBytes(8);
      len = 0;
      for (char c : l) len = (len << 8) | uint8_t(c);
    }
    return {uint8_t(head[0]) & 0x0f, readBytes(len)};
  }

 private:
  int fd_ = -1;
  bool ok_ = false;
  std::string buffer_;
};

std::string upgrade(const std::string& protocol, const std::string& path = "/ws") {
  std::string r = "GET " + path +
                  " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                  "Cookie: a=1; token=abc\r\n";
  if (!protocol.empty()) r += "Sec-WebSocket-Protocol: " + protocol + "\r\n";
  return r + "\r\n";
}

// Whether the client's WebSocket upgrade (subprotocol peerlight) was accepted.
bool upgraded(Client& c) {
  c.write(upgrade("peerlight"));
  return c.readUntil("\r\n\r\n").find("101") != std::string::npos;
}

struct Fixture {
  UvKjLoop loop;
  std::unique_ptr<WebServer> server;
  std::vector<std::string> messages;
  std::vector<uint64_t> closed;
  std::string upgradeCookie;

  Fixture() {
    WebServer::Handlers h;
    h.http = [](const WebRequest& r) {
      WebResponse response;
      if (r.path == "/") {
        response.contentType = "text/html";
        response.body = "<p>page</p>";
      } else if (r.path == "/echo") {
        response.body = r.method + " " + r.arg("x") + " " + r.cookieValue("token") + " " +
                        std::to_string(r.body.size()) + (r.loopback ? " loopback" : "");
      } else if (r.path == "/big") {
        response.body = std::string(100000, 'b');
      } else {
        response.status = 404;
        response.body = "{}";
      }
      return response;
    };
    h.acceptSocket = [this](const WebRequest& r) {
      upgradeCookie = r.cookieValue("token");
      return r.path == "/ws";
    };
    h.socketMessage = [this](uint64_t client, const std::string& m) {
      messages.push_back(m);
      server->send(client, "echo " + m);
    };
    h.socketClosed = [this](uint64_t client) { closed.push_back(client); };
    Result<std::unique_ptr<WebServer>> s =
        WebServer::start(loop.uv(), "127.0.0.1", 0, "peerlight", h);
    EXPECT_TRUE(s.ok()) << s.error().message;
    if (s.ok()) server = std::move(s).value();
  }

  // Runs the loop while `client` runs on a thread of its own.
  void run(const std::function<void()>& client) {
    std::atomic<bool> done{false};
    std::thread t([&] {
      client();
      done = true;
      loop.post([this] { loop.stop(); });
    });
    loop.run();
    t.join();
    ASSERT_TRUE(done);
  }

  // Destroys the server and lets libwebsockets free its last handles.
  void stop() {
    server.reset();
    for (int i = 0; i < 100; ++i) {
      uv_run(loop.uv(), UV_RUN_NOWAIT);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
};

TEST(WebServerTest, ServesRequestsWithTheirArgumentsCookiesAndBodies) {
  Fixture f;
  ASSERT_TRUE(f.server);
  const uint16_t port = f.server->port();
  EXPECT_GT(port, 0);
  f.run([&] {
    Client c(port);
    ASSERT_TRUE(c.ok());
    c.write("GET /echo?x=seven HTTP/1.1\r\nHost: h\r\nCookie: a=1; token=t0k\r\n\r\n");
    std::string r = c.readUntil("loopback");
    EXPECT_NE(r.find("200"), std::string::npos) << r;
    EXPECT_NE(r.find("GET seven t0k 0 loopback"), std::string::npos) << r;
    // Keep-alive: a second request on the same connection, a large body in pieces.
    c.write("GET /big HTTP/1.1\r\nHost: h\r\n\r\n");
    r = c.readUntil(std::string(1000, 'b'));
    EXPECT_NE(r.find("content-length: 100000"), std::string::npos) << r.substr(0, 300);
    r += c.readBytes(100000 - (r.size() - r.find("\r\n\r\n") - 4));
    EXPECT_EQ(r.size() - r.find("\r\n\r\n") - 4, 100000u);

    Client post(port);
    post.write("POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello");
    r = post.readUntil("loopback");
    EXPECT_NE(r.find("POST  ") , std::string::npos) << r;
    EXPECT_NE(r.find(" 5 loopback"), std::string::npos) << r;

    Client big(port);
    big.write("POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 100000000\r\n\r\n");
    r = big.readUntil("\r\n\r\n");
    EXPECT_NE(r.find("413"), std::string::npos) << r;
    Client chunked(port);
    chunked.write("POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
    r = chunked.readUntil("\r\n\r\n");
    EXPECT_NE(r.find("411"), std::string::npos) << r;

    Client missing(port);
    missing.write("GET /nothing HTTP/1.1\r\nHost: h\r\n\r\n");
    r = missing.readUntil("{}");
    EXPECT_NE(r.find("404"), std::string::npos) << r;
  });
  f.stop();
}

TEST(WebServerTest, WebSocketsNeedTheProtocolAndAreBoundedAndClosedWithTheServer) {
  Fixture f;
  ASSERT_TRUE(f.server);
  const uint16_t port = f.server->port();
  f.run([&] {
    // Without the subprotocol, or on a path the owner refuses: no upgrade.
    Client none(port);
    none.write(upgrade(""));
    EXPECT_EQ(none.readUntil("\r\n\r\n").find("101"), std::string::npos);
    Client refused(port);
    refused.write(upgrade("peerlight", "/other"));
    EXPECT_EQ(refused.readUntil("\r\n\r\n").find("101"), std::string::npos);

    Client c(port);
    c.write(upgrade("peerlight"));
    const std::string head = c.readUntil("\r\n\r\n");
    ASSERT_NE(head.find("101"), std::string::npos) << head;
    c.sendFrame("hello");
    auto [opcode, payload] = c.readFrame();
    EXPECT_EQ(opcode, 1);
    EXPECT_EQ(payload, "echo hello");
    // A message beyond the bound closes the connection (1009), with nothing echoed.
    c.sendFrame(std::string(kMaxMessageBytes + 10, 'x'));
    auto [closeOp, reason] = c.readFrame();
    EXPECT_EQ(closeOp, 8) << reason;
    ASSERT_GE(reason.size(), 2u);
    EXPECT_EQ((uint8_t(reason[0]) << 8) | uint8_t(reason[1]), 1009);
  });
  EXPECT_EQ(f.messages, std::vector<std::string>{"hello"});
  EXPECT_EQ(f.upgradeCookie, "abc");
  EXPECT_EQ(f.closed.size(), 1u);

  // A client still connected when the server goes: closed, and told so.
  std::unique_ptr<Client> last;
  f.run([&] {
    last = std::make_unique<Client>(port);
    EXPECT_TRUE(upgraded(*last));
  });
  for (int i = 0; i < 50 && f.server->clientCount() == 0; ++i) uv_run(f.loop.uv(), UV_RUN_NOWAIT);
  EXPECT_EQ(f.server->clientCount(), 1u);
  f.stop();
  EXPECT_EQ(f.closed.size(), 2u);
  const int lastOp = last->readFrame().first;
  EXPECT_TRUE(lastOp == 8 || lastOp == -1) << lastOp;  // a close frame, or the end
}

// Bad input closes that client alone: a WebSocket client flooding messages (closed with 1008
// after a burst, most of the flood never handled) and a request that is not HTTP. Another
// client is served throughout.
TEST(WebServerTest, AFloodOrGarbageClosesThatClientAlone) {
  Fixture f;
  ASSERT_TRUE(f.server);
  const uint16_t port = f.server->port();
  constexpr int kFlood = 2000;
  f.run([&] {
    Client calm(port);
    ASSERT_TRUE(upgraded(calm));

    Client flood(port);
    ASSERT_TRUE(upgraded(flood));
    std::string frames;
    for (int i = 0; i < kFlood; ++i) frames += Client::frame("f");
    flood.write(frames);  // at once
    int opcode = 0;
    std::string reason;
    for (int i = 0; i <= kFlood && opcode != 8 && opcode != -1; ++i)
      std::tie(opcode, reason) = flood.readFrame();  // echoes, then the close
    EXPECT_EQ(opcode, 8) << "the flood is closed";
    ASSERT_GE(reason.size(), 2u);
    EXPECT_EQ((uint8_t(reason[0]) << 8) | uint8_t(reason[1]), 1008);

    Client garbage(port);
    garbage.write("\x16\x03\x01 not http at all\r\n\r\n");
    const std::string answer = garbage.readUntil("never");  // until it is closed
    EXPECT_EQ(answer.find("200 OK"), std::string::npos) << answer;

    calm.sendFrame("still here");
    auto [op, payload] = calm.readFrame();
    EXPECT_EQ(op, 1);
    EXPECT_EQ(payload, "echo still here");
    Client page(port);
    page.write("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    EXPECT_NE(page.readUntil("</p>").find("<p>page</p>"), std::string::npos);
  });
  EXPECT_LE(f.messages.size(), size_t(kMaxMessageBurst) + 10) << "most of the flood unhandled";
  EXPECT_EQ(f.messages.back(), "still here");
  f.stop();
}

// The bound counts messages, not the parts libwebsockets hands them over in: large messages
// sent quickly, within the burst, are all taken.
TEST(WebServerTest, LargeMessagesWithinTheBurstAreAllTaken) {
  Fixture f;
  ASSERT_TRUE(f.server);
  const uint16_t port = f.server->port();
  constexpr int kMessages = 60;
  f.run([&] {
    Client c(port);
    ASSERT_TRUE(upgraded(c));
    std::string frames;
    for (int i = 0; i < kMessages; ++i) frames += Client::frame(std::string(12 << 10, 'a' + i % 26));
    c.write(frames);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    c.sendFrame("after");
    // The echoes (those a slow reader was not skipped), up to the last one; never a close.
    for (;;) {
      auto [opcode, payload] = c.readFrame();
      ASSERT_EQ(opcode, 1) << "closed: " << payload;
      if (payload == "echo after") break;
    }
  });
  EXPECT_EQ(f.messages.size(), size_t(kMessages) + 1);
  f.stop();
}

// One frame, framed once, to several clients: each gets it whole (libwebsockets writes each
// client's header into the shared headroom, one after the other).
TEST(WebServerTest, OneSharedFrameReachesEveryClientIntact) {
  Fixture f;
  ASSERT_TRUE(f.server);
  const uint16_t port = f.server->port();
  std::string payload(70000, '\0');
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = char(i * 7 + 3);
  std::vector<std::unique_ptr<Client>> clients;
  f.run([&] {
    for (int i = 0; i < 3; ++i) {
      clients.push_back(std::make_unique<Client>(port));
      EXPECT_TRUE(upgraded(*clients.back()));
    }
  });
  for (int i = 0; i < 50 && f.server->clientCount() < 3; ++i) uv_run(f.loop.uv(), UV_RUN_NOWAIT);
  ASSERT_EQ(f.server->clientCount(), 3u);
  const WebServer::Frame frame = WebServer::frame(std::span<const uint8_t>(
      reinterpret_cast<const uint8_t*>(payload.data()), payload.size()));
  for (uint64_t id = 1; id <= 8; ++id) f.server->send(id, frame, /*binary=*/true);
  f.run([&] {
    for (auto& c : clients) {
      auto [opcode, got] = c->readFrame();
      EXPECT_EQ(opcode, 2);
      EXPECT_TRUE(got == payload) << got.size() << " bytes";
    }
  });
  f.stop();
}

TEST(WebServerTest, AnAddressInUseIsAnErrorThatNamesIt) {
  Fixture f;
  ASSERT_TRUE(f.server);
  Result<std::unique_ptr<WebServer>> second =
      WebServer::start(f.loop.uv(), "127.0.0.1", f.server->port(), "peerlight", {});
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.error().message.find("127.0.0.1:" + std::to_string(f.server->port())),
            std::string::npos)
      << second.error().message;
  // Descriptors opened afterwards (a daemon's control socket) survive the loop's next turns.
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  for (int i = 0; i < 50; ++i) uv_run(f.loop.uv(), UV_RUN_NOWAIT);
  EXPECT_NE(::fcntl(fds[0], F_GETFD), -1);
  EXPECT_NE(::fcntl(fds[1], F_GETFD), -1);
  ::close(fds[0]);
  ::close(fds[1]);
  f.stop();
}

// Out of descriptors, the server pauses accepting rather than spinning on its readable socket,
// and takes the waiting connection once descriptors are free again.
TEST(WebServerTest, OutOfDescriptorsPausesAcceptingWithoutSpinning) {
  Fixture f;
  ASSERT_TRUE(f.server);
  Client c(f.server->port());  // connected from the backlog: nothing accepted yet
  ASSERT_TRUE(c.ok());
  // Every descriptor taken, under a limit lowered to a few more than are open.
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  rlimit low = saved;
  const int next = ::open("/dev/null", O_RDONLY | O_CLOEXEC);  // the lowest free number
  ASSERT_GE(next, 0);
  ::close(next);
  low.rlim_cur = rlim_t(next) + 16;
  std::vector<int> held;
  bool capturing = false;
  // Given back also when an assertion below fails (the other tests need descriptors, and
  // stderr).
  auto restore = kj::defer([&] {
    for (int fd : held) ::close(fd);
    held.clear();
    ::setrlimit(RLIMIT_NOFILE, &saved);
    if (capturing) ::testing::internal::GetCapturedStderr();
  });
  ::testing::internal::CaptureStderr();  // (its file needs a descriptor: taken first)
  capturing = true;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  for (int fd; (fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) held.push_back(fd);
  EXPECT_EQ(errno, EMFILE);
  // 300 ms of the loop: an accept that kept failing at once would take all of it.
  rusage before{}, after{};
  ::getrusage(RUSAGE_THREAD, &before);
  uv_timer_t stop;
  uv_timer_init(f.loop.uv(), &stop);
  stop.data = &f.loop;
  uv_timer_start(
      &stop, [](uv_timer_t* t) { static_cast<UvKjLoop*>(t->data)->stop(); }, 300, 0);
  f.loop.run();
  ::getrusage(RUSAGE_THREAD, &after);
  uv_close(reinterpret_cast<uv_handle_t*>(&stop), nullptr);
  const auto cpuMs = [](const rusage& r) {
    return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1000.0 +
           (r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1000.0;
  };
  for (int fd : held) ::close(fd);
  held.clear();
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);
  const std::string log = ::testing::internal::GetCapturedStderr();  // (reading it opens it)
  capturing = false;
  EXPECT_LT(cpuMs(after) - cpuMs(before), 60.0) << "the accept loop spun";
  // About three pauses in 300 ms, one line for them all.
  size_t lines = 0;
  for (size_t at = log.find("accepting a connection failed"); at != std::string::npos;
       at = log.find("accepting a connection failed", at + 1)) {
    ++lines;
  }
  EXPECT_EQ(lines, 1u) << log;
  std::string reply;
  f.run([&] {
    c.write("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    reply = c.readUntil("</p>");
  });
  EXPECT_NE(reply.find("200"), std::string::npos) << reply;
  EXPECT_NE(reply.find("<p>page</p>"), std::string::npos) << reply;
  f.stop();
}

}  // namespace
}  // namespace pl
