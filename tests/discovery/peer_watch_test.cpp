// PeerWatch (discovery/peer_watch.h) on a fake backend that announces what the test
// posts from a uv_async_t on the loop (as a real backend reports what its socket says), and the
// real backend with no reachable system bus (no mDNS traffic at all). The loop is driven by the
// test; no sleeps, no daemon, no network.

#include "discovery/peer_watch.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <deque>
#include <future>
#include <mutex>
#include <thread>

#include "core/util/check.h"
#include "core/util/uv_handle.h"

namespace pl {
namespace {

constexpr uint32_t kOurVersion = 7;
const std::string kOurKey = "00112233aabbccdd";

// What the test and the fake backend share; outlives the backend (the watch owns that).
struct FakeLan {
  std::mutex mutex;
  std::deque<std::pair<PeerEvent, DiscoveredPeer>> queue;  // guarded by mutex
  uv_async_t* wake = nullptr;                              // guarded; null once destroyed
  int browseCalls = 0;
  bool destroyed = false;

  // Any thread: the backend reports `peer` on its loop, later.
  void post(PeerEvent event, DiscoveredPeer peer) {
    std::lock_guard<std::mutex> lock(mutex);
    queue.emplace_back(event, std::move(peer));
    if (wake != nullptr) uv_async_send(wake);
  }
  size_t pending() {
    std::lock_guard<std::mutex> lock(mutex);
    return queue.size();
  }
};

class FakeDiscovery : public Discovery {
 public:
  FakeDiscovery(uv_loop_t* loop, std::shared_ptr<FakeLan> lan) : lan_(std::move(lan)) {
    PL_CHECK(wake_.init(loop, uv_async_init, &FakeDiscovery::onWake) == 0);
    wake_->data = this;
    std::lock_guard<std::mutex> lock(lan_->mutex);
    lan_->wake = wake_.get();
  }
  ~FakeDiscovery() override {
    std::lock_guard<std::mutex> lock(lan_->mutex);
    lan_->wake = nullptr;
    lan_->destroyed = true;
    wake_.close();
  }
  Status publish(const ServiceRecord&) override { return Status(); }
  Status updateTxt(const TxtRecords&) override { return Status(); }
  Status browse(BrowseCallback callback) override {
    lan_->browseCalls += 1;
    callback_ = std::move(callback);
    return Status();
  }
  bool available() const override { return true; }

 private:
  static void onWake(uv_async_t* a) {
    auto* self = static_cast<FakeDiscovery*>(a->data);
    for (;;) {
      std::pair<PeerEvent, DiscoveredPeer> next;
      {
        std::lock_guard<std::mutex> lock(self->lan_->mutex);
        if (self->lan_->queue.empty()) return;
        next = std::move(self->lan_->queue.front());
        self->lan_->queue.pop_front();
      }
      if (self->callback_) self->callback_(next.first, next.second);
    }
  }

  std::shared_ptr<FakeLan> lan_;
  UvHandle<uv_async_t> wake_;
  BrowseCallback callback_;
};

DiscoveredPeer node(const std::string& name, uint16_t port, const std::string& state = "idle",
                    const std::string& key = kOurKey, uint32_t version = kOurVersion,
                    const std::string& dev = "cpu:X:8G:4t") {
  DiscoveredPeer p;
  p.instanceName = name + " [" + name + "]";
  p.host = "10.0.0.1";
  p.port = port;
  p.txt = advertTxt(NodeAdvert{version, name, name, key, state, {}});
  p.txt.emplace_back("dev", dev);
  return p;
}

PeerWatchOptions ours(bool acceptLeased = false) {
  PeerWatchOptions o;
  o.protocolVersion = kOurVersion;
  o.keyFingerprint = kOurKey;
  o.ignoreNodeId = "self";
  o.acceptLeased = acceptLeased;
  return o;
}

size_t openHandles(uv_loop_t* loop) {
  size_t n = 0;
  uv_walk(
      loop,
      [](uv_handle_t* h, void* count) {
        if (!uv_is_closing(h)) *static_cast<size_t*>(count) += 1;
      },
      &n);
  return n;
}

class PeerWatchTest : public ::testing::Test {
 public:  // the loop callbacks below reach in
  PeerWatchTest() { PL_CHECK(uv_loop_init(&loop_) == 0); }
  ~PeerWatchTest() override {
    watch_.reset();
    runToCompletion();
    EXPECT_EQ(uv_loop_close(&loop_), 0) << "a libuv handle was left open";
  }

  void watch(PeerWatchOptions options = ours()) {
    auto backend = std::make_unique<FakeDiscovery>(&loop_, lan_);
    watch_ = std::make_unique<PeerWatch>(
        std::move(options), std::move(backend),
        PeerWatchEvents{.onUsable =
                            [this](const PeerVerdict& v) {
                              usable_.push_back(v);
                              threads_.push_back(std::this_thread::get_id());
                              inLoop_.push_back(driving_);
                            },
                        .onChange = [this] { changes_ += 1; }});
  }

  // Turns the loop (without blocking) until nothing keeps it alive, a few turns at most: a
  // handle left open fails instead of hanging. Whether it ended.
  bool runToCompletion() {
    for (int i = 0; i < 10 && uv_loop_alive(&loop_); ++i) uv_run(&loop_, UV_RUN_NOWAIT);
    return !uv_loop_alive(&loop_);
  }

  // Turns the loop until the fake delivered everything posted (a few turns at most).
  void deliver() {
    driving_ = true;
    for (int i = 0; i < 10 && lan_->pending() > 0; ++i) uv_run(&loop_, UV_RUN_NOWAIT);
    driving_ = false;
    ASSERT_EQ(lan_->pending(), 0u) << "the loop did not deliver the fake's events";
  }

  // The instance names reported usable since the last call.
  std::vector<std::string> takeUsable() {
    std::vector<std::string> names;
    for (const PeerVerdict& v : usable_) names.push_back(v.instanceName + "@" + v.address);
    usable_.clear();
    return names;
  }

  uv_loop_t loop_{};
  std::shared_ptr<FakeLan> lan_ = std::make_shared<FakeLan>();
  std::unique_ptr<PeerWatch> watch_;
  std::vector<PeerVerdict> usable_;
  std::vector<std::thread::id> threads_;
  std::vector<bool> inLoop_;
  int changes_ = 0;
  bool driving_ = false;
};

using Names = std::vector<std::string>;

TEST_F(PeerWatchTest, ReportsOnlyUsableNodesOnceFromTheLoop) {
  watch();
  EXPECT_EQ(lan_->browseCalls, 1);
  EXPECT_TRUE(watch_->available());
  lan_->post(PeerEvent::kFound, node("good", 4000));
  lan_->post(PeerEvent::kFound, node("wrongkey", 4001, "idle", "ffffffffffffffff"));
  lan_->post(PeerEvent::kFound, node("oldproto", 4002, "idle", kOurKey, kOurVersion - 1));
  lan_->post(PeerEvent::kFound, node("busy", 4003, "primary"));
  lan_->post(PeerEvent::kFound, node("leased", 4004, "leased"));
  lan_->post(PeerEvent::kFound, node("self", 4005));  // this machine's own node
  DiscoveredPeer junk = node("junk", 4006);
  junk.txt = {{"hello", "world"}};
  lan_->post(PeerEvent::kFound, junk);
  DiscoveredPeer otherBuild = node("otherbuild", 4007);
  for (auto& [k, v] : otherBuild.txt)
    if (k == "kernel") v = "0000000000000000";
  lan_->post(PeerEvent::kFound, otherBuild);
  EXPECT_TRUE(usable_.empty()) << "reported before the loop ran";

  deliver();
  EXPECT_EQ(takeUsable(), (Names{"good [good]@10.0.0.1:4000"}));
  ASSERT_EQ(threads_.size(), 1u);
  EXPECT_EQ(threads_[0], std::this_thread::get_id());
  EXPECT_TRUE(inLoop_[0]);
  EXPECT_EQ(changes_, 7) << "one per node listed (not for our own)";
  std::vector<PeerVerdict> all = watch_->snapshot();
  ASSERT_EQ(all.size(), 7u);
  for (const PeerVerdict& v : all) {
    EXPECT_EQ(v.usable, v.instanceName == "good [good]") << v.why;
    if (v.instanceName == "otherbuild [otherbuild]") {
      EXPECT_EQ(v.why, "renders with another build of peerlight (render kernel 0000000000000000, "
                       "ours " + std::string(renderKernelId()) + ")");
    }
  }
  EXPECT_EQ(watch_->usableAddresses(), (Names{"10.0.0.1:4000"}));

  // The same advert again: no change. A change that keeps it usable (its devices): not reported
  // as usable again, but a change of the listing (which shows each node's devices).
  lan_->post(PeerEvent::kUpdated, node("good", 4000));
  deliver();
  EXPECT_EQ(takeUsable(), Names{});
  EXPECT_EQ(changes_, 7);
  lan_->post(PeerEvent::kUpdated, node("good", 4000, "idle", kOurKey, kOurVersion, "cpu:Y:9G:2t"));
  deliver();
  EXPECT_EQ(takeUsable(), Names{});
  EXPECT_EQ(changes_, 8);
  for (const PeerVerdict& v : watch_->snapshot()) {
    if (v.instanceName != "good [good]") continue;
    ASSERT_EQ(v.devices.size(), 1u);
    EXPECT_EQ(v.devices[0].model, "Y");
    EXPECT_EQ(v.devices[0].threads, 2u);
  }
}

TEST_F(PeerWatchTest, ReportsANodeAgainWhenItTurnsUsable) {
  watch();
  lan_->post(PeerEvent::kFound, node("a", 4000, "primary"));
  lan_->post(PeerEvent::kFound, node("b", 4001, "idle", "ffffffffffffffff"));
  deliver();
  EXPECT_EQ(takeUsable(), Names{});

  // primary -> idle (its owner's render ended), and a key that became ours.
  lan_->post(PeerEvent::kUpdated, node("a", 4000, "idle"));
  deliver();
  EXPECT_EQ(takeUsable(), (Names{"a [a]@10.0.0.1:4000"}));
  lan_->post(PeerEvent::kUpdated, node("b", 4001));
  deliver();
  EXPECT_EQ(takeUsable(), (Names{"b [b]@10.0.0.1:4001"}));

  // idle -> primary -> idle: once more.
  lan_->post(PeerEvent::kUpdated, node("a", 4000, "primary"));
  deliver();
  EXPECT_EQ(takeUsable(), Names{});
  EXPECT_EQ(watch_->usableAddresses(), (Names{"10.0.0.1:4001"}));
  lan_->post(PeerEvent::kUpdated, node("a", 4000, "idle"));
  deliver();
  EXPECT_EQ(takeUsable(), (Names{"a [a]@10.0.0.1:4000"}));

  // Restarted on another port: a new address to use. Gone and back: usable again.
  lan_->post(PeerEvent::kUpdated, node("a", 4100, "idle"));
  deliver();
  EXPECT_EQ(takeUsable(), (Names{"a [a]@10.0.0.1:4100"}));
  int before = changes_;
  lan_->post(PeerEvent::kRemoved, node("a", 4100, "idle"));
  deliver();
  EXPECT_EQ(takeUsable(), Names{});
  EXPECT_EQ(changes_, before + 1) << "a node that goes is a change";
  EXPECT_EQ(watch_->usableAddresses(), (Names{"10.0.0.1:4001"}));
  lan_->post(PeerEvent::kFound, node("a", 4100, "idle"));
  deliver();
  EXPECT_EQ(takeUsable(), (Names{"a [a]@10.0.0.1:4100"}));
}

TEST_F(PeerWatchTest, LeasedNodesAreUsableOnlyWithAcceptLeased) {
  watch(ours(/*acceptLeased=*/true));
  lan_->post(PeerEvent::kFound, node("l", 4000, "leased"));
  lan_->post(PeerEvent::kFound, node("p", 4001, "primary"));
  deliver();
  EXPECT_EQ(takeUsable(), (Names{"l [l]@10.0.0.1:4000"}));
  // leased -> idle stays usable: not reported again.
  lan_->post(PeerEvent::kUpdated, node("l", 4000, "idle"));
  deliver();
  EXPECT_EQ(takeUsable(), Names{});
}

TEST_F(PeerWatchTest, EventsSeeTheViewAlreadyChanged) {
  std::vector<std::string> seen;
  watch_ = std::make_unique<PeerWatch>(ours(), std::make_unique<FakeDiscovery>(&loop_, lan_),
                                       PeerWatchEvents{.onUsable = [&](const PeerVerdict& v) {
                                         std::vector<std::string> now = watch_->usableAddresses();
                                         EXPECT_NE(std::find(now.begin(), now.end(), v.address),
                                                   now.end());
                                         seen.push_back(v.address);
                                       }});
  lan_->post(PeerEvent::kFound, node("a", 4000));
  deliver();
  EXPECT_EQ(seen, (Names{"10.0.0.1:4000"}));
}

TEST_F(PeerWatchTest, DestroyedWhileTheLoopRunsItLeavesNothingBehind) {
  watch();
  lan_->post(PeerEvent::kFound, node("a", 4000));
  deliver();
  EXPECT_EQ(openHandles(&loop_), 1u) << "the fake backend's async";

  // Destroy the watch from a timer callback, the loop running; post an event it will not see.
  struct Ctx {
    PeerWatchTest* test;
  } ctx{this};
  uv_timer_t timer;
  uv_timer_init(&loop_, &timer);
  timer.data = &ctx;
  uv_timer_start(
      &timer,
      [](uv_timer_t* t) {
        PeerWatchTest* test = static_cast<Ctx*>(t->data)->test;
        test->lan_->post(PeerEvent::kFound, node("late", 4001));
        test->watch_.reset();
        uv_close(reinterpret_cast<uv_handle_t*>(t), nullptr);
      },
      0, 0);
  EXPECT_TRUE(runToCompletion()) << "a handle keeps the loop alive";
  EXPECT_TRUE(lan_->destroyed);
  EXPECT_EQ(openHandles(&loop_), 0u);
  EXPECT_EQ(takeUsable(), (Names{"a [a]@10.0.0.1:4000"})) << "nothing after destruction";
  EXPECT_EQ(uv_loop_close(&loop_), 0);
  PL_CHECK(uv_loop_init(&loop_) == 0);  // for the fixture's destructor
}

TEST_F(PeerWatchTest, DestroyingTheWatchFromItsOwnEventIsABug) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        watch_ = std::make_unique<PeerWatch>(
            ours(), std::make_unique<FakeDiscovery>(&loop_, lan_),
            PeerWatchEvents{.onUsable = [&](const PeerVerdict&) { watch_.reset(); }});
        lan_->post(PeerEvent::kFound, node("a", 4000));
        deliver();
      },
      "destroyed from inside its own event");
}

// The platform's backend, on the caller's loop, with no system bus to reach: nothing found, and
// every handle it opened is closed when the watch goes while the loop runs.
TEST_F(PeerWatchTest, RealBackendOnTheCallersLoopClosesItsHandles) {
  ::setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/peerlight-test-bus", 1);
  int events = 0;
  watch_ =
      std::make_unique<PeerWatch>(ours(), &loop_,
                                  PeerWatchEvents{.onUsable = [&](const PeerVerdict&) { ++events; },
                                                  .onChange = [&] { ++events; }});
  EXPECT_FALSE(watch_->available());
  EXPECT_GE(openHandles(&loop_), 1u) << "the backend's handles (its reconnect timer at least)";
  for (int i = 0; i < 3; ++i) uv_run(&loop_, UV_RUN_NOWAIT);
  EXPECT_TRUE(watch_->snapshot().empty());

  uv_timer_t timer;
  uv_timer_init(&loop_, &timer);
  timer.data = this;
  uv_timer_start(
      &timer,
      [](uv_timer_t* t) {
        static_cast<PeerWatchTest*>(t->data)->watch_.reset();
        uv_close(reinterpret_cast<uv_handle_t*>(t), nullptr);
      },
      0, 0);
  EXPECT_TRUE(runToCompletion()) << "a handle keeps the loop alive";
  EXPECT_EQ(openHandles(&loop_), 0u);
  EXPECT_EQ(uv_loop_close(&loop_), 0) << "the backend left a handle";
  PL_CHECK(uv_loop_init(&loop_) == 0);
  EXPECT_EQ(events, 0);
}

// Events arrive on the thread that runs the loop, not on the one that posts.
TEST(PeerWatchThreadsTest, EventsRunOnTheLoopThread) {
  uv_loop_t loop;
  PL_CHECK(uv_loop_init(&loop) == 0);
  auto lan = std::make_shared<FakeLan>();
  std::promise<std::thread::id> reported;
  auto watch = std::make_unique<PeerWatch>(ours(), std::make_unique<FakeDiscovery>(&loop, lan),
                                           PeerWatchEvents{.onUsable = [&](const PeerVerdict&) {
                                             reported.set_value(std::this_thread::get_id());
                                           }});
  // The watch is destroyed on the loop thread too, through an async of the test's.
  struct Quit {
    uv_async_t async;
    std::unique_ptr<PeerWatch>* watch;
  } quit{{}, &watch};
  uv_async_init(&loop, &quit.async, [](uv_async_t* a) {
    static_cast<Quit*>(a->data)->watch->reset();
    uv_close(reinterpret_cast<uv_handle_t*>(a), nullptr);
  });
  quit.async.data = &quit;

  std::thread loopThread([&loop] { uv_run(&loop, UV_RUN_DEFAULT); });
  lan->post(PeerEvent::kFound, node("a", 4000));
  std::future<std::thread::id> id = reported.get_future();
  ASSERT_EQ(id.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(id.get(), loopThread.get_id());
  uv_async_send(&quit.async);
  loopThread.join();  // the loop ends: nothing of the watch keeps it alive
  EXPECT_FALSE(watch);
  EXPECT_TRUE(lan->destroyed);
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

}  // namespace
}  // namespace pl
