// TLS on Primary <-> node connections (transport/secure_channel.h):
//  - the identity derived from a key is deterministic and differs between keys;
//  - the same key connects and the Gate / Node RPC works inside TLS;
//  - different keys fail on both sides: the client's wrap rejects as a key mismatch, the node
//    logs one line naming the peer, a Primary reports "auth_failed" and does not retry;
//  - a plaintext Cap'n Proto client against a TLS node is refused, and the node keeps serving;
//  - the handshake timeout and the cap on pending connections cover the TLS handshake;
//  - a relay between a Primary and a node sees only ciphertext: none of the scene's chunk bytes
//    and none of the names in hello (while the same relay sees them without TLS).
// Real TCP on 127.0.0.1 (ephemeral ports); nodes on the test's loop or on a thread of their own.

#include <arpa/inet.h>
#include <capnp/rpc-twoparty.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

#include "core/render/cpu_device.h"
#include "core/scene/compile.h"
#include "tests/transport/chunk_test_util.h"
#include "tests/transport/loop_test_util.h"
#include "tests/transport/node_thread.h"
#include "transport/auth.h"
#include "transport/chunk_codec.h"
#include "transport/node_service.h"
#include "transport/primary.h"
#include "transport/protocol_convert.h"
#include "transport/secure_channel.h"
#include "transport/tcp.h"
#include "transport/uv_kj_loop.h"

namespace pl {
namespace {

using Clock = std::chrono::steady_clock;
using testing::waitFor;
using namespace std::chrono_literals;

ClusterKey testKey(uint8_t seed) {
  ClusterKey key;
  for (int i = 0; i < 32; ++i) key.bytes.push_back(uint8_t(seed * 31 + i));
  return key;
}

size_t countOf(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

bool contains(const std::vector<uint8_t>& haystack, const uint8_t* needle, size_t size) {
  return std::search(haystack.begin(), haystack.end(), needle, needle + size) != haystack.end();
}
bool contains(const std::vector<uint8_t>& haystack, const std::string& needle) {
  return contains(haystack, reinterpret_cast<const uint8_t*>(needle.data()), needle.size());
}

// A node on the test's loop with one one-thread CPU device.
class LoopNode {
 public:
  LoopNode(UvKjLoop& loop, const ClusterKey& key, NodeOptions options = {}) {
    std::vector<std::unique_ptr<Device>> devices;
    devices.push_back(std::make_unique<CpuDevice>(1));
    options.name = "tls-node";
    node_ = std::make_unique<NodeService>(loop, key, std::move(devices), options);
    auto receiver = listenTcp(loop.lowLevelIo(), "127.0.0.1:0");
    PL_CHECK(receiver.ok());
    receiver_ = std::move(*receiver);
    address_ = "127.0.0.1:" + std::to_string(receiver_->getPort());
    listening_ = node_->listen(*receiver_).eagerlyEvaluate(
        [](kj::Exception&& e) { ADD_FAILURE() << "listen: " << kj::str(e).cStr(); });
  }
  ~LoopNode() {
    listening_ = nullptr;
    node_.reset();
    receiver_ = nullptr;
  }
  NodeService* operator->() { return node_.get(); }
  const std::string& address() const { return address_; }

 private:
  std::unique_ptr<NodeService> node_;
  kj::Own<kj::ConnectionReceiver> receiver_;
  kj::Promise<void> listening_ = nullptr;
  std::string address_;
};

// Runs the loop until `done()` or `ms` pass; returns done().
template <typename Fn>
bool runUntil(UvKjLoop& loop, Fn&& done, int64_t ms = 5000) {
  const Clock::time_point end = Clock::now() + std::chrono::milliseconds(ms);
  while (!done() && Clock::now() < end) {
    loop.timer().afterDelay(5 * kj::MILLISECONDS).wait(loop.waitScope());
  }
  return done();
}

// Resolves true when the peer closes `stream` (end of file or an error), false after `ms`.
bool closedWithin(UvKjLoop& loop, kj::AsyncIoStream& stream, int64_t ms) {
  auto buffer = kj::heapArray<kj::byte>(4096);
  auto readToEnd = [&](auto& self) -> kj::Promise<bool> {
    return stream.tryRead(buffer.begin(), 1, buffer.size())
        .then(
            [&, self](size_t n) mutable -> kj::Promise<bool> {
              if (n == 0) return true;
              return self(self);
            },
            [](kj::Exception&&) -> kj::Promise<bool> { return true; });
  };
  return readToEnd(readToEnd)
      .exclusiveJoin(loop.timer().afterDelay(ms * kj::MILLISECONDS).then([] { return false; }))
      .wait(loop.waitScope());
}

// Cap'n Proto over `stream`: hello + authenticate with `key`, then Node.info's name.
std::string nodeNameOver(UvKjLoop& loop, kj::AsyncIoStream& stream, const ClusterKey& key) {
  capnp::TwoPartyClient rpc(stream);
  auto gate = rpc.bootstrap().castAs<proto::Gate>();
  Nonce nonce = randomNonce();
  auto hello = gate.helloRequest();
  hello.setProtocolVersion(kProtocolVersion);
  hello.setNonce(kj::arrayPtr(nonce.data(), nonce.size()));
  hello.setPrimaryName("tls-test-primary");
  auto reply = waitFor(loop, hello.send());
  EXPECT_EQ(reply.getProtocolVersion(), kProtocolVersion);
  auto nodeNonce = reply.getNonce();
  std::span<const uint8_t> theirs(nodeNonce.begin(), nodeNonce.size());
  auto proof = reply.getProof();
  EXPECT_TRUE(proofMatches(nodeProof(key, nonce, theirs),
                           std::span<const uint8_t>(proof.begin(), proof.size())));
  Proof mine = primaryProof(key, theirs, nonce);
  auto auth = gate.authenticateRequest();
  auth.setProof(kj::arrayPtr(mine.data(), mine.size()));
  proto::Node::Client node = waitFor(loop, auth.send()).getNode();
  auto info = waitFor(loop, node.infoRequest().send());
  return info.getInfo().getName().cStr();
}

TEST(SecureChannel, DerivedIdentityIsDeterministicAndDiffersBetweenKeys) {
  Result<TlsIdentity> a1 = deriveTlsIdentity(testKey(1));
  Result<TlsIdentity> a2 = deriveTlsIdentity(testKey(1));
  Result<TlsIdentity> b = deriveTlsIdentity(testKey(2));
  ASSERT_TRUE(a1.ok() && a2.ok() && b.ok()) << (a1.ok() ? "" : a1.error().message);
  ASSERT_FALSE(a1->certificateDer.empty());
  EXPECT_EQ(a1->certificateDer, a2->certificateDer) << "same key, different certificate";
  EXPECT_EQ(a1->privateKeyDer, a2->privateKeyDer);
  EXPECT_NE(a1->certificateDer, b->certificateDer) << "different keys, same certificate";
  EXPECT_NE(a1->privateKeyDer, b->privateKeyDer);
  EXPECT_TRUE(contains(a1->certificateDer, std::string(kTlsPeerName)));
  // The key itself is nowhere in the certificate (not even 8 bytes of it).
  ClusterKey key = testKey(1);
  for (size_t i = 0; i + 8 <= key.bytes.size(); ++i) {
    EXPECT_FALSE(contains(a1->certificateDer, key.bytes.data() + i, 8)) << "key bytes at " << i;
  }
  // A SecureChannel presents exactly that certificate.
  Result<std::unique_ptr<SecureChannel>> channel = SecureChannel::create(testKey(1));
  ASSERT_TRUE(channel.ok()) << channel.error().message;
  EXPECT_EQ((*channel)->certificateDer(), a1->certificateDer);
  // No key, no identity.
  EXPECT_FALSE(deriveTlsIdentity(ClusterKey{}).ok());
  EXPECT_FALSE(SecureChannel::create(ClusterKey{}).ok());
}

TEST(SecureChannel, SameKeyConnectsAndRpcWorks) {
  UvKjLoop loop;
  LoopNode node(loop, testKey(1));
  std::unique_ptr<SecureChannel> tls = SecureChannel::create(testKey(1)).value();
  kj::Own<kj::AsyncIoStream> plain = waitFor(loop, connectTcp(loop.lowLevelIo(), node.address()));
  kj::Own<kj::AsyncIoStream> secure = waitFor(loop, tls->wrapClient(kj::mv(plain)));
  EXPECT_EQ(nodeNameOver(loop, *secure, testKey(1)), "tls-node");
  EXPECT_EQ(node->connectionCount(), 1u);
  EXPECT_EQ(node->pendingConnectionCount(), 0u) << "authenticated, yet still pending";
}

TEST(SecureChannel, DifferentKeysFailOnBothSides) {
  UvKjLoop loop;
  LoopNode node(loop, testKey(1));
  std::unique_ptr<SecureChannel> other = SecureChannel::create(testKey(2)).value();
  ::testing::internal::CaptureStderr();
  kj::Own<kj::AsyncIoStream> plain = waitFor(loop, connectTcp(loop.lowLevelIo(), node.address()));
  kj::Maybe<kj::Exception> failure =
      testing::exceptionFrom([&] { waitFor(loop, other->wrapClient(kj::mv(plain))); });
  // The node notices too (its side of the handshake fails) and forgets the connection.
  runUntil(loop, [&] { return node->connectionCount() == 0; });
  std::string log = ::testing::internal::GetCapturedStderr();
  KJ_IF_MAYBE (e, failure) {
    EXPECT_TRUE(isTlsKeyMismatch(*e)) << e->getDescription().cStr();
    EXPECT_NE(std::string(e->getDescription().cStr()).find("does not hold this cluster key"),
              std::string::npos)
        << e->getDescription().cStr();
  } else {
    ADD_FAILURE() << "a client with another key completed the TLS handshake";
  }
  EXPECT_EQ(countOf(log, "TLS handshake from 127.0.0.1:"), 1u) << log;
  EXPECT_NE(log.find("(a client without this cluster key?)"), std::string::npos) << log;
  EXPECT_EQ(node->connectionCount(), 0u);
  EXPECT_EQ(node->pendingConnectionCount(), 0u);
}

// A node on a thread of its own, with or without TLS.
testing::NodeThread nodeThread(ClusterKey key, bool tls) {
  NodeOptions options;
  options.name = "relayed-node";
  options.tls = tls;
  return testing::NodeThread(std::move(key), options);
}

TEST(SecureChannel, PrimaryReportsAWrongKeyNodeAsAuthFailedAndDoesNotRetry) {
  auto node = nodeThread(testKey(2), /*tls=*/true);
  auto data = std::make_shared<const RenderData>(testing::compiledCornellBox(16));
  Film film(16, 16, 1);
  ClusterRenderOptions options;
  options.peers = {node.address()};
  options.key = testKey(1);
  options.primaryName = "wrong-key-primary";
  options.reconnectInterval = 50ms;
  options.noDeviceTimeout = 1500ms;
  ClusterRenderStats last;
  ::testing::internal::CaptureStderr();
  Result<ClusterRenderStats> stats = renderCluster(
      *data, film, options,
      [&](const ClusterRenderStats& s, uint64_t, uint64_t) { last = s; });
  std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_FALSE(stats.ok()) << "rendered through a node with another key";
  ASSERT_EQ(last.nodes.size(), 1u);
  const NodeRenderStats& n = last.nodes[0];
  EXPECT_EQ(n.state, "auth_failed") << n.error;
  EXPECT_EQ(n.error, node.address() +
                         ": authentication failed (TLS: the node does not hold this cluster key)");
  EXPECT_EQ(n.connections, 0u);
  EXPECT_EQ(n.renderDataBytesSent, 0u);
  // Refused once, never retried (a retry every 50 ms would have logged many lines).
  EXPECT_EQ(countOf(log, "TLS handshake from 127.0.0.1:"), 1u) << log;
  EXPECT_EQ(countOf(log, "(a client without this cluster key?)"), 1u) << log;
}

TEST(SecureChannel, PlaintextClientIsRefusedAndTheNodeKeepsServing) {
  UvKjLoop loop;
  LoopNode node(loop, testKey(1));
  ::testing::internal::CaptureStderr();
  {
    kj::Own<kj::AsyncIoStream> plain =
        waitFor(loop, connectTcp(loop.lowLevelIo(), node.address()));
    capnp::TwoPartyClient rpc(*plain);
    auto gate = rpc.bootstrap().castAs<proto::Gate>();
    Nonce nonce = randomNonce();
    auto hello = gate.helloRequest();
    hello.setProtocolVersion(kProtocolVersion);
    hello.setNonce(kj::arrayPtr(nonce.data(), nonce.size()));
    hello.setPrimaryName("plaintext-primary");
    kj::Maybe<kj::Exception> failure =
        testing::exceptionFrom([&] { waitFor(loop, hello.send()); });
    KJ_IF_MAYBE (e, failure) {
      EXPECT_EQ(e->getType(), kj::Exception::Type::DISCONNECTED) << e->getDescription().cStr();
    } else {
      ADD_FAILURE() << "a plaintext hello was answered";
    }
  }
  runUntil(loop, [&] { return node->connectionCount() == 0; });
  std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("TLS handshake from 127.0.0.1:"), std::string::npos) << log;
  EXPECT_EQ(log.find("plaintext-primary"), std::string::npos) << "the Gate saw the hello:\n"
                                                              << log;
  EXPECT_EQ(node->connectionCount(), 0u);

  // Still serving.
  std::unique_ptr<SecureChannel> tls = SecureChannel::create(testKey(1)).value();
  kj::Own<kj::AsyncIoStream> plain = waitFor(loop, connectTcp(loop.lowLevelIo(), node.address()));
  kj::Own<kj::AsyncIoStream> secure = waitFor(loop, tls->wrapClient(kj::mv(plain)));
  EXPECT_EQ(nodeNameOver(loop, *secure, testKey(1)), "tls-node");
}

TEST(SecureChannel, HandshakeTimeoutAndPendingCapCoverTheTlsHandshake) {
  UvKjLoop loop;
  NodeOptions options;
  options.handshakeTimeoutMs = 400;
  options.maxPendingConnections = 2;
  LoopNode node(loop, testKey(1), options);
  // Two connections that never start TLS: pending, then closed after the timeout.
  kj::Own<kj::AsyncIoStream> silent1 =
      waitFor(loop, connectTcp(loop.lowLevelIo(), node.address()));
  kj::Own<kj::AsyncIoStream> silent2 =
      waitFor(loop, connectTcp(loop.lowLevelIo(), node.address()));
  ASSERT_TRUE(runUntil(loop, [&] { return node->pendingConnectionCount() == 2; }))
      << node->pendingConnectionCount();
  EXPECT_EQ(node->connectionCount(), 2u);
  // A third is beyond the cap: closed at once (well before the timeout).
  kj::Own<kj::AsyncIoStream> third = waitFor(loop, connectTcp(loop.lowLevelIo(), node.address()));
  EXPECT_TRUE(closedWithin(loop, *third, 300)) << "a connection beyond the cap was kept";
  const Clock::time_point start = Clock::now();
  EXPECT_TRUE(closedWithin(loop, *silent1, 3000)) << "not closed after the handshake timeout";
  EXPECT_TRUE(closedWithin(loop, *silent2, 3000));
  EXPECT_LT(Clock::now() - start, 2s);
  EXPECT_TRUE(runUntil(loop, [&] { return node->connectionCount() == 0; }));
  EXPECT_EQ(node->pendingConnectionCount(), 0u);
}

// A blocking TCP connection from `source` (an address of 127.0.0.0/8) to `target`; -1 on failure.
int connectFrom(const char* source, const std::string& target) {
  Result<TcpAddress> to = parseTcpAddress(target);
  if (!to.ok()) return -1;
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in from{};
  from.sin_family = AF_INET;
  ::inet_pton(AF_INET, source, &from.sin_addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof(from)) != 0 ||
      ::connect(fd, to->sockaddr(), to->length) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Issue 13 item 2: idle connections need no key, so one host must not lock Primaries out. With
// 64 idle connections from 127.0.0.1 and 64 from 127.0.0.2 (neither starts TLS), a keyed probe
// from 127.0.0.3 is admitted and authenticates (within 3 s), and the node's log holds at most
// about two lines a second about all of it.
TEST(SecureChannel, IdleFloodsFromTwoAddressesDoNotLockOutAKeyedProbeFromAThird) {
  UvKjLoop loop;
  NodeOptions options;  // the defaults: 4 per address, TLS within 3 s
  options.tlsTimeoutMs = 2000;  // so that the test also sees the TLS deadline's lines
  // A cap the two floods reach (the default is 32): the probe must evict to get in.
  options.maxPendingConnections = 8;
  LoopNode node(loop, testKey(1), options);
  ::testing::internal::CaptureStderr();
  const Clock::time_point start = Clock::now();
  std::vector<int> idle;
  for (const char* source : {"127.0.0.1", "127.0.0.2"}) {
    for (int i = 0; i < 64; ++i) {
      int fd = connectFrom(source, node.address());
      ASSERT_GE(fd, 0) << source << " " << i << ": " << std::strerror(errno);
      idle.push_back(fd);
    }
  }
  // The node has accepted them all: 4 per address pending, the rest closed at once.
  ASSERT_TRUE(runUntil(loop, [&] { return node->pendingConnectionCount() == 8; }))
      << node->pendingConnectionCount();
  const Clock::time_point probeStart = Clock::now();
  int probeFd = connectFrom("127.0.0.3", node.address());
  ASSERT_GE(probeFd, 0);
  kj::Own<kj::AsyncIoStream> plain = loop.lowLevelIo().wrapSocketFd(
      probeFd, kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP);
  Result<std::unique_ptr<SecureChannel>> tls = SecureChannel::create(testKey(1));
  ASSERT_TRUE(tls.ok());
  kj::Own<kj::AsyncIoStream> secure = waitFor(loop, (*tls)->wrapClient(kj::mv(plain)));
  EXPECT_EQ(nodeNameOver(loop, *secure, testKey(1)), "tls-node");
  const double probeSeconds =
      std::chrono::duration<double>(Clock::now() - probeStart).count();
  EXPECT_LT(probeSeconds, 3.0);
  // To make room, the oldest pending connection of 127.0.0.1 (both addresses held 4; its
  // oldest is older) was closed: its socket reads end of file. 127.0.0.2's first is open.
  auto closedNow = [](int fd) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 1000) <= 0) return false;
    char byte;
    return ::recv(fd, &byte, 1, MSG_DONTWAIT) == 0;
  };
  EXPECT_TRUE(closedNow(idle[0])) << "the oldest connection of the address holding the most";
  pollfd other{idle[64], POLLIN, 0};
  EXPECT_EQ(::poll(&other, 1, 0), 0) << "127.0.0.2's first connection was closed too";
  // The idle ones' TLS deadline passes (2 s here): closed, a line or two more; and the lines
  // held back are summed up once their second is over.
  runUntil(loop, [&] { return node->pendingConnectionCount() == 0; }, 4000);
  EXPECT_EQ(node->pendingConnectionCount(), 0u);
  runUntil(loop, [&] { return Clock::now() - start > 3500ms; }, 4000);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::string log = ::testing::internal::GetCapturedStderr();
  size_t lines = std::count(log.begin(), log.end(), '\n');
  EXPECT_LE(double(lines), 2.0 * seconds + 2.0) << seconds << " s:\n" << log;
  EXPECT_NE(log.find("from its address have not authenticated yet"), std::string::npos) << log;
  EXPECT_NE(log.find("closed a connection from 127.0.0.1 that had not authenticated"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("more connections closed at once"), std::string::npos) << log;
  std::printf("probe from 127.0.0.3 authenticated in %.3f s; %zu log lines in %.2f s\n",
              probeSeconds, lines, seconds);
  for (int fd : idle) ::close(fd);
}

// Forwards every byte between clients and `target` (its own thread, blocking sockets) and
// records them: what an attacker who made the Primary connect to it would see.
class Relay {
 public:
  explicit Relay(const std::string& target) {
    Result<TcpAddress> to = parseTcpAddress(target);
    PL_CHECK(to.ok());
    target_ = *to;
    listenFd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(addr);
    PL_CHECK(::bind(listenFd_, reinterpret_cast<sockaddr*>(&addr), length) == 0);
    PL_CHECK(::listen(listenFd_, 8) == 0);
    PL_CHECK(::getsockname(listenFd_, reinterpret_cast<sockaddr*>(&addr), &length) == 0);
    address_ = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
    thread_ = std::thread([this] { run(); });
  }
  ~Relay() {
    stop_ = true;
    thread_.join();
    for (Pair& p : pairs_) {
      ::close(p.fd[0]);
      ::close(p.fd[1]);
    }
    ::close(listenFd_);
  }
  const std::string& address() const { return address_; }
  std::vector<uint8_t> toNode() {
    std::lock_guard<std::mutex> lock(mutex_);
    return recorded_[0];
  }
  std::vector<uint8_t> toPrimary() {
    std::lock_guard<std::mutex> lock(mutex_);
    return recorded_[1];
  }

 private:
  struct Pair {
    int fd[2];  // client, node
    bool open[2] = {true, true};
  };

  void run() {
    std::vector<uint8_t> buffer(1 << 16);
    while (!stop_) {
      std::vector<pollfd> fds{{listenFd_, POLLIN, 0}};
      for (Pair& p : pairs_) {
        for (int side = 0; side < 2; ++side) fds.push_back({p.fd[side], short(p.open[side] ? POLLIN : 0), 0});
      }
      if (::poll(fds.data(), fds.size(), 20) <= 0) continue;
      const size_t polled = pairs_.size();  // accept() may add a pair that fds does not hold
      if (fds[0].revents & POLLIN) accept();
      for (size_t i = 0; i < polled; ++i) {
        for (int side = 0; side < 2; ++side) {
          Pair& p = pairs_[i];
          if (!p.open[side] || !(fds[1 + 2 * i + side].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
          ssize_t n = ::recv(p.fd[side], buffer.data(), buffer.size(), 0);
          if (n <= 0) {
            p.open[side] = false;
            ::shutdown(p.fd[1 - side], SHUT_WR);
            continue;
          }
          {
            std::lock_guard<std::mutex> lock(mutex_);
            recorded_[side].insert(recorded_[side].end(), buffer.data(), buffer.data() + n);
          }
          for (ssize_t sent = 0; sent < n;) {
            ssize_t m = ::send(p.fd[1 - side], buffer.data() + sent, size_t(n - sent), MSG_NOSIGNAL);
            if (m <= 0) break;
            sent += m;
          }
        }
      }
    }
  }

  void accept() {
    int client = ::accept(listenFd_, nullptr, nullptr);
    if (client < 0) return;
    int node = ::socket(AF_INET, SOCK_STREAM, 0);
    if (::connect(node, target_.sockaddr(), target_.length) != 0) {
      ::close(client);
      ::close(node);
      return;
    }
    int one = 1;
    ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ::setsockopt(node, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    pairs_.push_back(Pair{{client, node}});
  }

  TcpAddress target_;
  int listenFd_ = -1;
  std::string address_;
  std::vector<Pair> pairs_;  // relay thread only (and the destructor after join)
  std::mutex mutex_;
  std::vector<uint8_t> recorded_[2];  // client -> node, node -> client
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

struct RelayedRender {
  std::vector<uint8_t> toNode, toPrimary;
  std::vector<int64_t> sums;
  uint64_t chunksSent = 0;
};

RelayedRender renderThroughRelay(const std::shared_ptr<const RenderData>& data, bool tls) {
  auto node = nodeThread(testKey(1), tls);
  Relay relay(node.address());
  Film film(32, 32, 4);
  ClusterRenderOptions options;
  options.peers = {relay.address()};
  options.key = testKey(1);
  options.tls = tls;
  options.primaryName = "relayed-primary";
  options.noDeviceTimeout = 20s;
  Result<ClusterRenderStats> stats = renderCluster(*data, film, options);
  RelayedRender out;
  EXPECT_TRUE(stats.ok()) << stats.error().message;
  if (stats.ok() && stats->nodes.size() == 1) out.chunksSent = stats->nodes[0].chunksSent;
  out.sums = film.sums();
  out.toNode = relay.toNode();
  out.toPrimary = relay.toPrimary();
  return out;
}

TEST(SecureChannel, RelayBetweenPrimaryAndNodeSeesOnlyCiphertext) {
  auto data = std::make_shared<const RenderData>(testing::compiledCornellBox(32));
  // The chunks the Primary uploads (the same encoding renderCluster() does): 32 bytes from the
  // middle of each, to look for in what the relay saw.
  ChunkStore store;
  ChunkManifest manifest = encodeRenderData(*data, store);
  std::vector<std::vector<uint8_t>> probes;
  for (const Hash128& hash : manifest.chunkHashes()) {
    const std::optional<std::span<const uint8_t>> bytes = store.find(hash);
    ASSERT_TRUE(bytes.has_value());
    if (bytes->size() < 64) continue;
    auto mid = bytes->begin() + std::ptrdiff_t(bytes->size() / 2);
    probes.emplace_back(mid, mid + 32);
  }
  ASSERT_FALSE(probes.empty());
  auto seen = [&](const std::vector<uint8_t>& stream) {
    size_t n = 0;
    for (const auto& probe : probes) n += contains(stream, probe.data(), probe.size()) ? 1 : 0;
    return n;
  };

  // Without TLS the relay reads everything: the detector works.
  RelayedRender plain = renderThroughRelay(data, /*tls=*/false);
  ASSERT_GT(plain.chunksSent, 0u);
  EXPECT_EQ(seen(plain.toNode), probes.size());
  EXPECT_TRUE(contains(plain.toNode, std::string("relayed-primary")));
  EXPECT_TRUE(contains(plain.toPrimary, std::string("relayed-node")));

  // With TLS the render goes through the relay all the same (bitwise the same image), and the
  // relay sees none of it.
  RelayedRender secure = renderThroughRelay(data, /*tls=*/true);
  EXPECT_EQ(secure.sums, plain.sums);
  ASSERT_GT(secure.chunksSent, 0u);
  EXPECT_GT(secure.toNode.size(), 1000u) << "the relay carried nothing";
  EXPECT_EQ(seen(secure.toNode), 0u) << "chunk bytes in the clear";
  EXPECT_FALSE(contains(secure.toNode, std::string("relayed-primary")));
  EXPECT_FALSE(contains(secure.toPrimary, std::string("relayed-node")));
}

}  // namespace
}  // namespace pl
