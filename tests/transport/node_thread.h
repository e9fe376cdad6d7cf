#pragma once
// Test helpers for renderCluster() tests: a Render Node (NodeService with one one-thread CPU
// device) serving 127.0.0.1:<ephemeral> on a thread of its own, with its own UvKjLoop, until
// destroyed; and the Cornell box compiled at a given size.

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "core/render/cpu_device.h"
#include "core/scene/compile.h"
#include "transport/node_service.h"
#include "transport/tcp.h"
#include "transport/uv_kj_loop.h"

namespace pl::testing {

class NodeThread {
 public:
  // listen: "127.0.0.1:0" picks a free port; a given one serves again an address a node served
  // before (a node restarted, say upgraded).
  NodeThread(ClusterKey key, NodeOptions options, std::string listen = "127.0.0.1:0")
      : key_(std::move(key)), options_(options), listen_(std::move(listen)) {
    thread_ = std::thread([this] { run(); });
    std::unique_lock<std::mutex> lock(mutex_);
    ready_.wait(lock, [this] { return started_; });
  }
  ~NodeThread() {
    loop_->post([this] { loop_->stop(); });
    thread_.join();
  }
  const std::string& address() const { return address_; }
  // Leases held now (sampled every 20 ms on the node's thread).
  size_t activeLeases() const { return leases_.load(); }
  // Leases granted since the node started (sampled likewise).
  uint64_t leasesGranted() const { return granted_.load(); }
  // Full decodes, and of those the ones decoded as the puts came (prepare), likewise.
  uint64_t scenesDecoded() const { return decoded_.load(); }
  uint64_t scenesPrepared() const { return prepared_.load(); }

 private:
  void run() {
    UvKjLoop loop;
    auto receiver = listenTcp(loop.lowLevelIo(), listen_);
    std::vector<std::unique_ptr<Device>> devices;
    devices.push_back(std::make_unique<CpuDevice>(1));
    {
      NodeService node(loop, key_, std::move(devices), options_);
      kj::Promise<void> listening = node.listen(**receiver);
      // A timer keeps the loop running and samples the lease count.
      auto poll = [&](auto& self) -> kj::Promise<void> {
        leases_ = node.activeLeaseCount();
        const NodeStats stats = node.stats();
        granted_ = stats.leasesGranted;
        decoded_ = stats.scenesDecoded;
        prepared_ = stats.scenesPrepared;
        return loop.timer().afterDelay(20 * kj::MILLISECONDS).then([&, self]() mutable {
          return self(self);
        });
      };
      kj::Promise<void> polling = poll(poll).eagerlyEvaluate(nullptr);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        loop_ = &loop;
        address_ = "127.0.0.1:" + std::to_string((*receiver)->getPort());
        started_ = true;
      }
      ready_.notify_all();
      loop.run();
      node.endAllLeases("test over");
      node.disconnectAll();
    }
    *receiver = nullptr;
  }

  ClusterKey key_;
  NodeOptions options_;
  std::string listen_;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable ready_;
  bool started_ = false;
  UvKjLoop* loop_ = nullptr;
  std::string address_;
  std::atomic<size_t> leases_{0};
  std::atomic<uint64_t> granted_{0};
  std::atomic<uint64_t> decoded_{0};
  std::atomic<uint64_t> prepared_{0};
};

inline RenderData compiledCornellBox(uint32_t size, uint32_t passes = 0) {
  CompileOptions options;
  options.width = options.height = size;
  options.passes = passes;
  Result<RenderData> data =
      loadAndCompile(std::string(PEERLIGHT_SOURCE_DIR) + "/scenes/cornell_box.gltf", options);
  EXPECT_TRUE(data.ok()) << data.error().message;
  return std::move(data).value();
}

}  // namespace pl::testing
