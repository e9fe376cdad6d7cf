// handshakeWithNode (transport/node_handshake.h), the one client handshake of the Primary and
// of `peerlight nodes`, against an in-process node on a thread: each typed outcome, and a
// Node capability that works after a good one.

#include "transport/node_handshake.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "tests/transport/loop_test_util.h"
#include "tests/transport/node_thread.h"
#include "transport/node_service.h"
#include "transport/protocol_convert.h"
#include "transport/secure_channel.h"
#include "transport/tcp.h"
#include "transport/uv_kj_loop.h"

namespace pl {
namespace {

using testing::NodeThread;
using testing::waitFor;

ClusterKey keyOf(uint8_t seed) {
  ClusterKey key;
  for (int i = 0; i < 32; ++i) key.bytes.push_back(uint8_t(seed * 29 + i));
  return key;
}

NodeOptions nodeOptions(bool tls, uint32_t protocolVersion = kProtocolVersion) {
  NodeOptions options;
  options.name = "handshake-node";
  options.tls = tls;
  options.protocolVersion = protocolVersion;
  return options;
}

std::unique_ptr<SecureChannel> channel(const ClusterKey& key) {
  Result<std::unique_ptr<SecureChannel>> made = SecureChannel::create(key);
  PL_CHECK(made.ok());
  return std::move(*made);
}

TEST(NodeHandshake, SameKeyGivesAWorkingNodeCapability) {
  NodeThread node(keyOf(1), nodeOptions(true));
  UvKjLoop loop;
  const ClusterKey key = keyOf(1);
  auto secure = channel(key);
  NodeHandshake h = waitFor(
      loop, handshakeWithNode(loop.lowLevelIo(), secure.get(), key, node.address(), "test"));
  ASSERT_EQ(h.refusal, HandshakeRefusal::None) << h.reason;
  EXPECT_TRUE(h.reason.empty());
  EXPECT_EQ(h.protocolVersion, kProtocolVersion);
  EXPECT_EQ(h.name, "handshake-node");
  EXPECT_FALSE(h.nodeId.empty());
  auto info = waitFor(loop, h.node.infoRequest().send());
  EXPECT_EQ(std::string(info.getInfo().getName().cStr()), "handshake-node");
  EXPECT_EQ(info.getInfo().getDevices().size(), 1u);
}

TEST(NodeHandshake, AnotherKeyIsRefusedAtTls) {
  NodeThread node(keyOf(2), nodeOptions(true));
  UvKjLoop loop;
  const ClusterKey key = keyOf(3);
  auto secure = channel(key);
  NodeHandshake h = waitFor(
      loop, handshakeWithNode(loop.lowLevelIo(), secure.get(), key, node.address(), "test"));
  EXPECT_EQ(h.refusal, HandshakeRefusal::WrongKey);
  EXPECT_EQ(h.reason, "TLS: the node does not hold this cluster key");
  EXPECT_EQ(h.protocolVersion, 0u) << "no hello after a refused TLS handshake";
}

// Without TLS (the plain protocol), the Gate's proofs tell the keys apart.
TEST(NodeHandshake, AnotherKeyIsRefusedByTheProofs) {
  NodeThread node(keyOf(4), nodeOptions(false));
  UvKjLoop loop;
  NodeHandshake h =
      waitFor(loop, handshakeWithNode(loop.lowLevelIo(), nullptr, keyOf(5), node.address(), "t"));
  EXPECT_EQ(h.refusal, HandshakeRefusal::WrongKey);
  EXPECT_EQ(h.reason, "the node does not hold this cluster key");
  EXPECT_EQ(h.protocolVersion, kProtocolVersion);
  EXPECT_EQ(h.name, "handshake-node");
}

TEST(NodeHandshake, AnotherProtocolVersionIsIncompatible) {
  NodeThread node(keyOf(6), nodeOptions(true, kProtocolVersion + 7));
  UvKjLoop loop;
  const ClusterKey key = keyOf(6);
  auto secure = channel(key);
  NodeHandshake h = waitFor(
      loop, handshakeWithNode(loop.lowLevelIo(), secure.get(), key, node.address(), "test"));
  EXPECT_EQ(h.refusal, HandshakeRefusal::Incompatible);
  EXPECT_EQ(h.protocolVersion, kProtocolVersion + 7);
  EXPECT_EQ(h.reason, "speaks protocol " + std::to_string(kProtocolVersion + 7) + ", we speak " +
                          std::to_string(kProtocolVersion));
}

// Nobody listening: a connection failure, worth another try, rejects (it is not a refusal).
TEST(NodeHandshake, UnreachableNodeRejects) {
  UvKjLoop loop;
  std::string address;
  {
    auto receiver = listenTcp(loop.lowLevelIo(), "127.0.0.1:0");
    ASSERT_TRUE(receiver.ok());
    address = "127.0.0.1:" + std::to_string((*receiver)->getPort());
  }  // closed: connections to it are refused
  const ClusterKey key = keyOf(7);
  auto secure = channel(key);
  kj::Maybe<kj::Exception> e = testing::exceptionFrom([&] {
    waitFor(loop, handshakeWithNode(loop.lowLevelIo(), secure.get(), key, address, "test"));
  });
  KJ_IF_MAYBE(exception, e) {
    EXPECT_EQ(exception->getType(), kj::Exception::Type::DISCONNECTED)
        << exception->getDescription().cStr();
  } else {
    ADD_FAILURE() << "a handshake with a closed port resolved";
  }
}

}  // namespace
}  // namespace pl
