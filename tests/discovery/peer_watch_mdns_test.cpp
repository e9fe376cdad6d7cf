// PeerWatch (discovery/peer_watch.h) against a real avahi-daemon: the daemon runs in
// a network namespace with only `lo` and a private system bus (tests/integration/netns_sandbox.h);
// this process talks to it over that bus only (a unix socket in the sandbox's temp dir), so it
// sends no multicast itself and nothing is advertised in the root namespace. Root only (skips
// otherwise); label `discovery`.
//
// Four services published through the same daemon (our idle node, one with another key, one
// whose owner is rendering, this machine's own): onUsable names only the idle one, on the loop;
// primary -> idle and idle -> primary -> idle each report once more; and the watch, destroyed
// while the loop runs, leaves no handle behind.

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <functional>

#include "discovery/peer_watch.h"
#include "tests/integration/netns_sandbox.h"
#include "core/util/uv_handle.h"

namespace pl {
namespace {

using testing::NetnsSandbox;
using Clock = std::chrono::steady_clock;

constexpr uint32_t kOurVersion = 7;
const std::string kOurKey = "00112233aabbccdd";

ServiceRecord service(const std::string& id, uint16_t port, const std::string& state,
                      const std::string& key = kOurKey) {
  return {advertInstanceName(id, id), port,
          advertTxt(NodeAdvert{kOurVersion, id, id, key, state, {}})};
}

TxtRecords txtWithState(const std::string& id, const std::string& state) {
  return advertTxt(NodeAdvert{kOurVersion, id, id, kOurKey, state, {}});
}

class PeerWatchMdnsTest : public ::testing::Test {
 public:
  // Turns the loop until `done` (checked every turn; a 20 ms tick keeps turns coming) or
  // `timeout` passes. Whether `done` came true.
  bool runUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
    UvHandle<uv_timer_t> tick;
    PL_CHECK(tick.init(&loop_, uv_timer_init) == 0);
    uv_timer_start(
        tick.get(), [](uv_timer_t*) {}, 20, 20);
    const Clock::time_point deadline = Clock::now() + timeout;
    while (!done() && Clock::now() < deadline) uv_run(&loop_, UV_RUN_ONCE);
    return done();
  }

  std::vector<std::string> usableNames() const {
    std::vector<std::string> names;
    for (const PeerVerdict& v : usable_) names.push_back(v.instanceName);
    return names;
  }

  const PeerVerdict* find(const std::string& instance) const {
    for (const PeerVerdict& v : view_) {
      if (v.instanceName == instance) return &v;
    }
    return nullptr;
  }

  uv_loop_t loop_{};
  std::vector<PeerVerdict> usable_;  // every onUsable, in order
  std::vector<PeerVerdict> view_;    // snapshot() at the last onChange
  int changes_ = 0;
};

using Names = std::vector<std::string>;

TEST_F(PeerWatchMdnsTest, ReportsUsableNodesOnTheCallersLoop) {
  if (std::string why = NetnsSandbox::unavailableReason(); !why.empty()) GTEST_SKIP() << why;
  NetnsSandbox box("pl-watch");
  ASSERT_EQ(box.start(), "");
  ::setenv("DBUS_SYSTEM_BUS_ADDRESS", ("unix:path=" + box.file("bus1")).c_str(), 1);
  PL_CHECK(uv_loop_init(&loop_) == 0);

  std::unique_ptr<Discovery> good = makeDiscovery(&loop_);
  std::unique_ptr<Discovery> wrongKey = makeDiscovery(&loop_);
  std::unique_ptr<Discovery> busy = makeDiscovery(&loop_);
  std::unique_ptr<Discovery> self = makeDiscovery(&loop_);
  ASSERT_TRUE(good->publish(service("good", 5001, "idle")).ok());
  ASSERT_TRUE(wrongKey->publish(service("wrongkey", 5002, "idle", "ffffffffffffffff")).ok());
  ASSERT_TRUE(busy->publish(service("busy", 5003, "primary")).ok());
  ASSERT_TRUE(self->publish(service("self", 5004, "idle")).ok());

  PeerWatchOptions options;
  options.protocolVersion = kOurVersion;
  options.keyFingerprint = kOurKey;
  options.ignoreNodeId = "self";
  std::unique_ptr<PeerWatch> watch;
  watch = std::make_unique<PeerWatch>(
      options, &loop_,
      PeerWatchEvents{.onUsable = [&](const PeerVerdict& v) { usable_.push_back(v); },
                      .onChange =
                          [&] {
                            ++changes_;
                            view_ = watch->snapshot();
                          }});
  ASSERT_TRUE(watch->available()) << box.avahiLog(0);

  const std::string goodName = advertInstanceName("good", "good");
  const std::string busyName = advertInstanceName("busy", "busy");
  ASSERT_TRUE(runUntil([&] { return view_.size() == 3; }, std::chrono::seconds(10)))
      << view_.size() << " nodes listed\n"
      << box.avahiLog(0);
  EXPECT_EQ(usableNames(), Names{goodName});
  EXPECT_EQ(usable_[0].address, "127.0.0.1:5001");
  EXPECT_EQ(find(advertInstanceName("self", "self")), nullptr) << "our own node is never listed";
  ASSERT_NE(find(busyName), nullptr);
  EXPECT_EQ(find(busyName)->state, "primary");
  EXPECT_EQ(watch->usableAddresses(), Names{"127.0.0.1:5001"});

  // The owner's render on `busy` ends: it is reported once.
  ASSERT_TRUE(busy->updateTxt(txtWithState("busy", "idle")).ok());
  ASSERT_TRUE(runUntil([&] { return usable_.size() == 2; }, std::chrono::seconds(10)));
  EXPECT_EQ(usableNames(), (Names{goodName, busyName}));

  // `good` becomes a Primary, then idle again: reported once more, only when idle.
  ASSERT_TRUE(good->updateTxt(txtWithState("good", "primary")).ok());
  ASSERT_TRUE(
      runUntil([&] { return find(goodName) != nullptr && find(goodName)->state == "primary"; },
               std::chrono::seconds(10)));
  EXPECT_EQ(usable_.size(), 2u);
  ASSERT_TRUE(good->updateTxt(txtWithState("good", "idle")).ok());
  ASSERT_TRUE(runUntil([&] { return usable_.size() == 3; }, std::chrono::seconds(10)));
  EXPECT_EQ(usableNames(), (Names{goodName, busyName, goodName}));

  // Destroyed from a callback of the running loop, with the publishers: the loop then ends by
  // itself, every handle closed.
  struct Owned {
    std::unique_ptr<PeerWatch>* watch;
    std::vector<std::unique_ptr<Discovery>*> publishers;
  } owned{&watch, {&good, &wrongKey, &busy, &self}};
  uv_timer_t timer;
  uv_timer_init(&loop_, &timer);
  timer.data = &owned;
  uv_timer_start(
      &timer,
      [](uv_timer_t* t) {
        auto* o = static_cast<Owned*>(t->data);
        o->watch->reset();
        for (auto* p : o->publishers) p->reset();
        uv_close(reinterpret_cast<uv_handle_t*>(t), nullptr);
      },
      0, 0);
  const int changesBefore = changes_;
  uv_run(&loop_, UV_RUN_DEFAULT);
  EXPECT_EQ(changes_, changesBefore) << "an event after destruction";
  EXPECT_EQ(uv_loop_close(&loop_), 0) << "a libuv handle was left open";
}

}  // namespace
}  // namespace pl
