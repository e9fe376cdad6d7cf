// Cap'n Proto RPC over TCP on 127.0.0.1, with both ends on libuv loops (server on its own
// thread): round trips, a server-side KJ timer, and a bulk `-> stream` transfer. Prints the
// small-call round-trip time and the bulk rate; asserts only correctness.

#include <capnp/rpc-twoparty.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <future>
#include <thread>
#include <vector>

#include "test.capnp.h"
#include "tests/transport/loop_test_util.h"
#include "transport/malloc_tuning.h"
#include "transport/tcp.h"
#include "transport/uv_kj_loop.h"

namespace pl {
namespace {

using testing::waitFor;
using testing::Watchdog;

kj::byte testPattern(size_t i) { return kj::byte((i * 31 + 7) ^ (i >> 9)); }

class EchoImpl final : public test::Echo::Server {
 public:
  explicit EchoImpl(kj::Timer& timer) : timer_(timer) {}

  kj::Promise<void> echo(EchoContext context) override {
    context.getResults().setText(context.getParams().getText());
    return kj::READY_NOW;
  }
  kj::Promise<void> slow(SlowContext context) override {
    return timer_.afterDelay(context.getParams().getDelayMs() * kj::MILLISECONDS);
  }
  kj::Promise<void> put(PutContext context) override {
    capnp::Data::Reader data = context.getParams().getData();
    bool good = true;
    for (size_t i = 0; i < data.size(); i += 4093) good = good && data[i] == testPattern(i);
    if (data.size() > 0) good = good && data[data.size() - 1] == testPattern(data.size() - 1);
    bytes_ += data.size();
    ++chunks_;
    if (!good) ++badChunks_;
    return kj::READY_NOW;
  }
  kj::Promise<void> total(TotalContext context) override {
    auto results = context.getResults();
    results.setBytes(bytes_);
    results.setChunks(chunks_);
    results.setBadChunks(badChunks_);
    return kj::READY_NOW;
  }

 private:
  kj::Timer& timer_;
  uint64_t bytes_ = 0;
  uint32_t chunks_ = 0;
  uint32_t badChunks_ = 0;
};

// An Echo server on its own thread and uv loop, listening on 127.0.0.1:<ephemeral>.
class ServerThread {
 public:
  ServerThread() {
    std::promise<uint> portPromise;
    auto portFuture = portPromise.get_future();
    thread_ = std::thread([this, &portPromise]() {
      UvKjLoop loop;
      auto receiver = listenTcp(loop.lowLevelIo(), "127.0.0.1:0");
      if (!receiver.ok()) {
        ADD_FAILURE() << receiver.error().message;
        portPromise.set_value(0);
        return;
      }
      capnp::TwoPartyServer server(kj::heap<EchoImpl>(loop.timer()));
      auto listening = server.listen(**receiver).eagerlyEvaluate([](kj::Exception&& e) {
        ADD_FAILURE() << "server listen: " << kj::str(e).cStr();
      });
      loop_.store(&loop);
      portPromise.set_value((*receiver)->getPort());
      loop.run();  // until stop() (the listener keeps it alive)
      loop_.store(nullptr);
    });
    port_ = portFuture.get();
  }
  ~ServerThread() {
    if (UvKjLoop* loop = loop_.load()) loop->post([loop]() { loop->stop(); });
    thread_.join();
  }
  uint port() const { return port_; }

 private:
  std::thread thread_;
  std::atomic<UvKjLoop*> loop_{nullptr};
  uint port_ = 0;
};

struct Client {
  explicit Client(UvKjLoop& loop, uint port)
      : stream(waitFor(loop, connectTcp(loop.lowLevelIo(), "127.0.0.1:" + std::to_string(port)))),
        rpc(*stream),
        echo(rpc.bootstrap().castAs<test::Echo>()) {}
  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyClient rpc;
  test::Echo::Client echo;
};

kj::Promise<void> callRepeatedly(test::Echo::Client echo, int left) {
  if (left == 0) return kj::READY_NOW;
  auto request = echo.echoRequest();
  request.setText("ping");
  return request.send().then([echo, left](auto&& response) mutable {
    KJ_ASSERT(response.getText() == "ping");
    return callRepeatedly(kj::mv(echo), left - 1);
  });
}

TEST(RpcOnUv, EchoRoundTripBetweenTwoLoops) {
  ServerThread serverThread;
  ASSERT_GT(serverThread.port(), 0u);
  UvKjLoop loop;
  Client client(loop, serverThread.port());

  auto request = client.echo.echoRequest();
  request.setText("hello over uv");
  auto response = waitFor(loop, request.send());
  EXPECT_EQ(response.getText(), "hello over uv");

  // Small-call round trips, driven by run() as a daemon would.
  constexpr int kCalls = 5000;
  Watchdog watchdog(loop, 9000, /*keepAlive=*/false);
  bool done = false;
  auto start = std::chrono::steady_clock::now();
  auto calls = callRepeatedly(client.echo, kCalls)
                   .then([&]() { done = true; },
                         [&](kj::Exception&& e) { ADD_FAILURE() << kj::str(e).cStr(); })
                   .then([&]() { loop.stop(); })
                   .eagerlyEvaluate(nullptr);
  loop.run();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(done);
  std::printf("[ figure ] small echo call round trip: %.1f us (%d sequential calls)\n",
              seconds / kCalls * 1e6, kCalls);
}

TEST(RpcOnUv, SlowCallDoesNotBlockOtherCalls) {
  ServerThread serverThread;
  UvKjLoop loop;
  Client client(loop, serverThread.port());
  std::vector<std::string> order;
  auto slowRequest = client.echo.slowRequest();
  slowRequest.setDelayMs(50);
  // Eager: record completion order, not the order in which the join collects results.
  auto slow =
      slowRequest.send().then([&](auto&&) { order.push_back("slow"); }).eagerlyEvaluate(nullptr);
  auto echoRequest = client.echo.echoRequest();
  echoRequest.setText("fast");
  auto fast =
      echoRequest.send().then([&](auto&&) { order.push_back("fast"); }).eagerlyEvaluate(nullptr);
  auto start = std::chrono::steady_clock::now();
  waitFor(loop, kj::joinPromises(kj::arr(kj::mv(slow), kj::mv(fast))));
  auto elapsedMs =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(order, (std::vector<std::string>{"fast", "slow"}));
  EXPECT_GE(elapsedMs, 49.0);  // the server's KJ timer on its uv loop really waited
}

TEST(RpcOnUv, ServerGoingAwayRejectsCallsWithDisconnected) {
  UvKjLoop loop;
  std::unique_ptr<Client> client;
  {
    ServerThread serverThread;
    client = std::make_unique<Client>(loop, serverThread.port());
    auto request = client->echo.echoRequest();
    request.setText("before");
    EXPECT_EQ(waitFor(loop, request.send()).getText(), "before");
  }  // the server thread's loop and connection are gone
  auto request = client->echo.echoRequest();
  request.setText("after");
  KJ_IF_MAYBE (e, testing::exceptionFrom([&]() { waitFor(loop, request.send()); })) {
    EXPECT_EQ(e->getType(), kj::Exception::Type::DISCONNECTED) << kj::str(*e).cStr();
  } else {
    ADD_FAILURE() << "call to a dead server succeeded";
  }
}

// Sends `total` bytes from `buffer` in chunks of buffer.size(), without copying the bytes into
// the messages (the buffer outlives the transfer and never changes).
kj::Promise<void> sendChunks(test::Echo::Client echo, kj::ArrayPtr<const kj::byte> buffer,
                             uint64_t left, bool zeroCopy) {
  if (left == 0) return kj::READY_NOW;
  size_t size = std::min<uint64_t>(left, buffer.size());
  auto request = echo.putRequest(capnp::MessageSize{16 + (zeroCopy ? 0 : size / 8), 0});
  if (zeroCopy) {
    test::Echo::PutParams::Builder params = request;
    params.adoptData(capnp::Orphanage::getForMessageContaining(params).referenceExternalData(
        buffer.slice(0, size)));
  } else {
    request.setData(buffer.slice(0, size));
  }
  return request.send().then([echo, buffer, left, size, zeroCopy]() mutable {
    return sendChunks(kj::mv(echo), buffer, left - size, zeroCopy);
  });
}

double bulkTransferMBps(uint port, size_t chunkBytes, uint64_t totalBytes, bool zeroCopy) {
  UvKjLoop loop;
  Client client(loop, port);
  std::vector<kj::byte> buffer(chunkBytes);
  for (size_t i = 0; i < buffer.size(); ++i) buffer[i] = testPattern(i);

  auto before = waitFor(loop, client.echo.totalRequest().send());
  uint64_t bytesBefore = before.getBytes();
  uint32_t chunksBefore = before.getChunks();

  Watchdog watchdog(loop, 9000, /*keepAlive=*/false);
  bool done = false;
  auto start = std::chrono::steady_clock::now();
  auto sending =
      sendChunks(client.echo, kj::arrayPtr(buffer.data(), buffer.size()), totalBytes, zeroCopy)
          .then([&]() { return client.echo.totalRequest().send(); })
          .then(
              [&](auto&& total) {
                // total() is ordered after every put() on this connection.
                EXPECT_EQ(total.getBytes() - bytesBefore, totalBytes);
                EXPECT_EQ(total.getChunks() - chunksBefore,
                          (totalBytes + chunkBytes - 1) / chunkBytes);
                EXPECT_EQ(total.getBadChunks(), 0u);
                done = true;
              },
              [&](kj::Exception&& e) { ADD_FAILURE() << kj::str(e).cStr(); })
          .then([&]() { loop.stop(); })
          .eagerlyEvaluate(nullptr);
  loop.run();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_TRUE(done);
  return done ? double(totalBytes) / seconds / 1e6 : 0.0;
}

TEST(RpcOnUv, BulkStreamTransferRate) {
  // What apps do at start-up: keep multi-MiB message buffers in the heap (PLATFORM_NOTES.md).
  // (Sanitizers replace malloc and refuse the settings; the figures are then not meaningful.)
  bool tuned = tuneMallocForBulkTransfers();
  ServerThread serverThread;
  constexpr uint64_t kTotal = 256ull << 20;
  double zeroCopy4 = bulkTransferMBps(serverThread.port(), 4 << 20, kTotal, true);
  double zeroCopy1 = bulkTransferMBps(serverThread.port(), 1 << 20, kTotal, true);
  double copied4 = bulkTransferMBps(serverThread.port(), 4 << 20, kTotal, false);
  std::printf(
      "[ figure ] bulk put() -> stream, 256 MiB: %.0f MB/s (4 MiB chunks, zero-copy), "
      "%.0f MB/s (1 MiB, zero-copy), %.0f MB/s (4 MiB, copied)%s\n",
      zeroCopy4, zeroCopy1, copied4, tuned ? "" : " [malloc not tuned]");
}

}  // namespace
}  // namespace pl
