#pragma once
// Test helpers for NodeService tests that talk raw Cap'n Proto to a node on the test's own loop:
// the key, and a node on 127.0.0.1:<ephemeral> with `deviceCount` one-thread CPU devices and
// no TLS (TLS is tested in tests/transport/secure_channel_test.cpp).

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "core/render/cpu_device.h"
#include "core/util/check.h"
#include "transport/node_service.h"
#include "transport/tcp.h"
#include "transport/uv_kj_loop.h"

namespace pl::testing {

inline ClusterKey nodeTestKey(uint8_t seed) {
  ClusterKey key;
  for (int i = 0; i < 32; ++i) key.bytes.push_back(uint8_t(seed * 31 + i));
  return key;
}

class TestNode {
 public:
  TestNode(UvKjLoop& loop, size_t deviceCount, NodeOptions options = {},
           ClusterKey key = nodeTestKey(1)) {
    std::vector<std::unique_ptr<Device>> devices;
    for (size_t i = 0; i < deviceCount; ++i) devices.push_back(std::make_unique<CpuDevice>(1));
    if (options.name.empty()) options.name = "test-node";
    options.tls = false;
    node_ = std::make_unique<NodeService>(loop, std::move(key), std::move(devices), options);
    auto receiver = listenTcp(loop.lowLevelIo(), "127.0.0.1:0");
    PL_CHECK(receiver.ok());
    receiver_ = std::move(*receiver);
    port_ = receiver_->getPort();
    listening_ = node_->listen(*receiver_).eagerlyEvaluate(
        [](kj::Exception&& e) { ADD_FAILURE() << "listen: " << kj::str(e).cStr(); });
  }
  ~TestNode() {
    listening_ = nullptr;
    node_.reset();
    receiver_ = nullptr;
  }
  NodeService& operator*() { return *node_; }
  NodeService* operator->() { return node_.get(); }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  std::unique_ptr<NodeService> node_;
  kj::Own<kj::ConnectionReceiver> receiver_;
  kj::Promise<void> listening_ = nullptr;
  uint port_ = 0;
};

}  // namespace pl::testing
