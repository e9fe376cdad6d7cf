// Streams, listeners and TCP helpers on the libuv-driven KJ I/O provider.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "tests/transport/loop_test_util.h"
#include "transport/tcp.h"
#include "transport/uv_kj_loop.h"

namespace pl {
namespace {

using testing::exceptionFrom;
using testing::waitFor;

TEST(TcpAddress, ParsesNumericHostsAndRejectsBadInputWithAMessage) {
  auto v4 = parseTcpAddress("127.0.0.1:7000");
  ASSERT_TRUE(v4.ok()) << v4.error().message;
  EXPECT_EQ(v4->storage.ss_family, AF_INET);
  auto v6 = parseTcpAddress("[::1]:0");
  ASSERT_TRUE(v6.ok()) << v6.error().message;
  EXPECT_EQ(v6->storage.ss_family, AF_INET6);
  EXPECT_TRUE(parseTcpAddress("localhost:1").ok());

  for (const char* bad : {"127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:x1",
                          "example.org:80", "[::1:80", "[zz]:80", ":80"}) {
    auto result = parseTcpAddress(bad);
    ASSERT_FALSE(result.ok()) << bad;
    EXPECT_NE(result.error().message.find(bad), std::string::npos) << result.error().message;
  }
}

TEST(UvIo, ListenOnPortZeroConnectAndExchangeBytes) {
  UvKjLoop loop;
  auto receiver = listenTcp(loop.lowLevelIo(), "127.0.0.1:0");
  ASSERT_TRUE(receiver.ok()) << receiver.error().message;
  uint port = (*receiver)->getPort();
  ASSERT_GT(port, 0u);

  auto accepted = (*receiver)->accept();
  auto client = waitFor(loop, connectTcp(loop.lowLevelIo(), "127.0.0.1:" + std::to_string(port)));
  auto server = waitFor(loop, kj::mv(accepted));

  waitFor(loop, client->write("hello", 5));
  char buffer[16] = {};
  size_t n = waitFor(loop, server->read(buffer, 5, sizeof(buffer)));
  EXPECT_EQ(std::string(buffer, n), "hello");

  // Many pieces in one write, bigger than the socket buffers, read back intact.
  std::vector<kj::byte> big(8 << 20);
  for (size_t i = 0; i < big.size(); ++i) big[i] = kj::byte(i * 7 + (i >> 12));
  std::vector<kj::ArrayPtr<const kj::byte>> pieces;
  for (size_t offset = 0; offset < big.size(); offset += 3000) {
    pieces.push_back(
        kj::arrayPtr(big.data() + offset, std::min<size_t>(3000, big.size() - offset)));
  }
  std::vector<kj::byte> received(big.size());
  auto writing = client->write(kj::arrayPtr(pieces.data(), pieces.size()));
  size_t got = waitFor(loop, server->read(received.data(), received.size(), received.size()));
  waitFor(loop, kj::mv(writing));
  EXPECT_EQ(got, big.size());
  EXPECT_TRUE(received == big);

  // Half-close: the reader sees EOF.
  client->shutdownWrite();
  EXPECT_EQ(waitFor(loop, server->tryRead(buffer, 1, sizeof(buffer))), 0u);
}

TEST(UvIo, Ipv6Loopback) {
  UvKjLoop loop;
  auto receiver = listenTcp(loop.lowLevelIo(), "[::1]:0");
  if (!receiver.ok()) GTEST_SKIP() << "no IPv6 loopback here: " << receiver.error().message;
  uint port = (*receiver)->getPort();
  auto accepted = (*receiver)->accept();
  auto client = waitFor(loop, connectTcp(loop.lowLevelIo(), "[::1]:" + std::to_string(port)));
  auto server = waitFor(loop, kj::mv(accepted));
  waitFor(loop, server->write("v6", 2));
  char buffer[2];
  EXPECT_EQ(waitFor(loop, client->read(buffer, 2, 2)), 2u);
  EXPECT_EQ(std::string(buffer, 2), "v6");
}

TEST(UvIo, ConnectionRefusedIsDisconnected) {
  UvKjLoop loop;
  uint port;
  {
    auto receiver = listenTcp(loop.lowLevelIo(), "127.0.0.1:0");
    ASSERT_TRUE(receiver.ok()) << receiver.error().message;
    port = (*receiver)->getPort();
  }  // closed: nobody listens there now
  std::string address = "127.0.0.1:" + std::to_string(port);
  KJ_IF_MAYBE (e, exceptionFrom([&]() { waitFor(loop, connectTcp(loop.lowLevelIo(), address)); })) {
    EXPECT_EQ(e->getType(), kj::Exception::Type::DISCONNECTED) << kj::str(*e).cStr();
    EXPECT_NE(std::string(e->getDescription().cStr()).find(address), std::string::npos);
  } else {
    ADD_FAILURE() << "connect to a closed port succeeded";
  }
  KJ_IF_MAYBE (e, exceptionFrom([&]() { waitFor(loop, connectTcp(loop.lowLevelIo(), "nope")); })) {
    EXPECT_EQ(e->getType(), kj::Exception::Type::FAILED);
  } else {
    ADD_FAILURE() << "connect to 'nope' succeeded";
  }
}

TEST(UvIo, PeerDyingMidWriteRejectsWithDisconnectedAndDoesNotKillTheProcess) {
  UvKjLoop loop;
  auto receiver = listenTcp(loop.lowLevelIo(), "127.0.0.1:0");
  ASSERT_TRUE(receiver.ok()) << receiver.error().message;
  auto accepted = (*receiver)->accept();
  auto client = waitFor(
      loop, connectTcp(loop.lowLevelIo(), "127.0.0.1:" + std::to_string((*receiver)->getPort())));
  auto server = waitFor(loop, kj::mv(accepted));

  // 64 MiB cannot fit into the socket buffers: the write is still in flight when the server
  // reads a little and then goes away with unread data (which makes the kernel send RST).
  std::vector<kj::byte> big(64 << 20, kj::byte(0x5a));
  auto writing = client->write(big.data(), big.size()).eagerlyEvaluate(nullptr);
  auto hangup = client->whenWriteDisconnected().eagerlyEvaluate(nullptr);
  char buffer[4096];
  waitFor(loop, server->read(buffer, sizeof(buffer), sizeof(buffer)));
  server = nullptr;

  KJ_IF_MAYBE (e, exceptionFrom([&]() { waitFor(loop, kj::mv(writing)); })) {
    EXPECT_EQ(e->getType(), kj::Exception::Type::DISCONNECTED) << kj::str(*e).cStr();
  } else {
    ADD_FAILURE() << "64 MiB write to a dead peer succeeded";
  }
  // The hang-up is visible without another write.
  EXPECT_TRUE(exceptionFrom([&]() { waitFor(loop, kj::mv(hangup), 2000); }) == nullptr);
}

TEST(UvIo, PipeWithoutReaderRejectsWithDisconnected) {
  UvKjLoop loop;  // ignores SIGPIPE: without that, this test dies with status 141
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
  ::close(fds[0]);
  auto out =
      loop.lowLevelIo().wrapOutputFd(fds[1], kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP |
                                                 kj::LowLevelAsyncIoProvider::ALREADY_CLOEXEC |
                                                 kj::LowLevelAsyncIoProvider::ALREADY_NONBLOCK);
  KJ_IF_MAYBE (e, exceptionFrom([&]() { waitFor(loop, out->write("x", 1)); })) {
    EXPECT_EQ(e->getType(), kj::Exception::Type::DISCONNECTED) << kj::str(*e).cStr();
  } else {
    ADD_FAILURE() << "write to a pipe without reader succeeded";
  }
}

TEST(UvIo, KjNetworkAndPipesWorkOnTheBridge) {
  // kj::newAsyncIoProvider() over the bridge: kj::Network (what capnp's EzRpc-style code uses)
  // and in-process pipes.
  UvKjLoop loop;
  auto address = waitFor(loop, loop.io().getNetwork().parseAddress("127.0.0.1", 0));
  auto listener = address->listen();
  auto accepted = listener->accept();
  auto connectTo =
      waitFor(loop, loop.io().getNetwork().parseAddress("127.0.0.1", listener->getPort()));
  auto client = waitFor(loop, connectTo->connect());
  auto server = waitFor(loop, kj::mv(accepted));
  waitFor(loop, client->write("net", 3));
  char buffer[3];
  EXPECT_EQ(waitFor(loop, server->read(buffer, 3, 3)), 3u);

  auto pipe = loop.io().newTwoWayPipe();
  waitFor(loop, pipe.ends[0]->write("pipe", 4));
  char pipeBuffer[4];
  EXPECT_EQ(waitFor(loop, pipe.ends[1]->read(pipeBuffer, 4, 4)), 4u);
  EXPECT_EQ(std::string(pipeBuffer, 4), "pipe");
}

}  // namespace
}  // namespace pl
