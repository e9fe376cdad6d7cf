// `peerlight render` with no --peer finds its Render Nodes by mDNS (apps/peerlight/
// render_command.cpp). In a fresh network namespace with only `lo`, a private system bus and an
// avahi-daemon (tests/integration/netns_sandbox.h), three good nodes plus one with another
// cluster key and one speaking another protocol version; `peerlight render --no-local --json`
// must use exactly the three good ones (each with work_units > 0), name the two others on
// stderr with the reason, and write an image bitwise identical to a --local-only render. And
// `peerlight session` with no --peer takes up a node that starts while it runs (a discovery
// event on the session's loop).
// Needs root, ip, unshare, dbus-daemon and avahi-daemon; skips with the reason otherwise.
// Everything it starts (processes, the namespace, the temp dir) is removed also on failure.

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/render/image_io.h"
#include "tests/integration/netns_sandbox.h"
#include "tests/integration/process.h"
#include "tests/integration/same_image.h"
#include "transport/protocol_convert.h"

namespace pl {
namespace {

using testing::NetnsSandbox;
using testing::Process;
using Clock = std::chrono::steady_clock;

const std::string kPeerlight = PEERLIGHT_BINARY;
const std::string kScene = std::string(PEERLIGHT_SOURCE_DIR) + "/scenes/cornell_box.gltf";
constexpr auto kTimeout = std::chrono::seconds(60);

void writeKey(const std::string& path, char fill) {
  // Not printable: a generated key (typed ones are refused).
  std::ofstream(path, std::ios::binary) << std::string(32, char(fill | 0x80));
  chmod(path.c_str(), 0600);
}

TEST(DiscoveryRenderTest, RenderWithoutPeersUsesEveryGoodNodeFoundByMdns) {
  if (std::string why = NetnsSandbox::unavailableReason(); !why.empty()) GTEST_SKIP() << why;
  NetnsSandbox box("pl-drender");
  ASSERT_EQ(box.start(), "");

  writeKey(box.file("key"), 'k');
  writeKey(box.file("other.key"), 'o');
  struct NodeSpec {
    std::string name, key, version;
  };
  const std::string ours = std::to_string(kProtocolVersion);
  const std::string newer = std::to_string(kProtocolVersion + 4);
  const std::vector<NodeSpec> specs = {{"good0", "key", ours},
                                       {"good1", "key", ours},
                                       {"good2", "key", ours},
                                       {"otherkey", "other.key", ours},
                                       {"newer", "key", newer}};
  std::vector<Process*> nodes;
  std::vector<std::string> addresses;
  for (const NodeSpec& s : specs) {
    nodes.push_back(&box.spawn(
        0,
        {kPeerlight, "node", "--listen", "127.0.0.1:0", "--threads", "1", "--name", s.name,
         "--key-file", box.file(s.key), "--protocol-version", s.version, "--no-control-socket"},
        s.name));
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    std::optional<std::string> line = nodes[i]->waitForOutput("listening on ", kTimeout);
    ASSERT_TRUE(line.has_value()) << specs[i].name << ": " << nodes[i]->err();
    addresses.push_back(line->substr(std::strlen("listening on ")));
  }

  // No --peer: the nodes come from mDNS.
  const std::vector<std::string> common = {"--size", "256x192",    "--spp",
                                           "16",     "--key-file", box.file("key")};
  std::vector<std::string> argv = {kPeerlight,           "render",     kScene,  "-o",
                                   box.file("mdns.exr"), "--no-local", "--json"};
  argv.insert(argv.end(), common.begin(), common.end());
  const auto renderStart = Clock::now();
  Process& render = box.spawn(0, argv, "render");
  // The reference, meanwhile (the mDNS render browses for about a second first): this process's
  // devices only, outside the namespace (no mDNS either way).
  argv = {kPeerlight,     "render",    kScene, "-o", box.file("local.exr"),
          "--local-only", "--threads", "2"};
  argv.insert(argv.end(), common.begin(), common.end());
  Process& local = box.spawn(-1, argv, "local");
  ASSERT_EQ(render.wait(kTimeout), 0) << render.err();
  const double renderSeconds = std::chrono::duration<double>(Clock::now() - renderStart).count();
  nlohmann::json stats = nlohmann::json::parse(render.out(), nullptr, false);
  ASSERT_TRUE(stats.is_object()) << render.out() << "\n" << render.err();
  ASSERT_EQ(stats["nodes"].size(), 3u) << stats["nodes"].dump(2) << "\n" << render.err();
  EXPECT_EQ(stats["devices"].size(), 0u) << "--no-local rendered locally";
  for (size_t i = 0; i < 3; ++i) {
    const nlohmann::json* entry = nullptr;
    for (const auto& n : stats["nodes"])
      if (n["address"] == addresses[i]) entry = &n;
    ASSERT_NE(entry, nullptr) << specs[i].name << " at " << addresses[i] << " not used:\n"
                              << stats["nodes"].dump(2);
    EXPECT_EQ((*entry)["name"], specs[i].name);
    EXPECT_EQ((*entry)["state"], "done") << entry->dump();
    EXPECT_GT((*entry)["work_units"].get<uint64_t>(), 0u) << entry->dump();
    std::printf("%s: %llu work units\n", specs[i].name.c_str(),
                (unsigned long long)(*entry)["work_units"].get<uint64_t>());
  }
  const std::string err = render.err();
  EXPECT_NE(err.find("not using otherkey"), std::string::npos) << err;
  EXPECT_NE(err.find("wrong key"), std::string::npos) << err;
  EXPECT_NE(err.find("not using newer"), std::string::npos) << err;
  EXPECT_NE(err.find("speaks protocol " + newer + ", we speak " + ours), std::string::npos) << err;
  EXPECT_NE(err.find("mDNS: 3 usable node(s)"), std::string::npos) << err;
  std::printf(
      "render through 3 mDNS-discovered nodes: %.2f s (command wall time, ~1 s of it "
      "browsing, beside the reference render)\n",
      renderSeconds);

  ASSERT_EQ(local.wait(kTimeout), 0) << local.err();
  testing::expectSameExr(box.file("mdns.exr"), box.file("local.exr"), "differ from --local-only");
}

// Starts a node named "late" in the sandbox, with its key: its address once it listens, or ""
// (a test failure is recorded).
std::string startLateNode(NetnsSandbox& box) {
  Process& node = box.spawn(0,
                            {kPeerlight, "node", "--listen", "127.0.0.1:0", "--threads", "1",
                             "--name", "late", "--key-file", box.file("key"),
                             "--no-control-socket"},
                            "node");
  std::optional<std::string> line = node.waitForOutput("listening on ", kTimeout);
  EXPECT_TRUE(line.has_value()) << node.err();
  return line ? line->substr(std::strlen("listening on ")) : std::string();
}

// `peerlight session` in this process with no --peer browses mDNS on its own loop: a node that
// starts while the session runs is handed to it as a discovery event, and renders for it.
TEST(DiscoveryRenderTest, SessionTakesUpANodeThatAppearsWhileItRuns) {
  if (std::string why = NetnsSandbox::unavailableReason(); !why.empty()) GTEST_SKIP() << why;
  NetnsSandbox box("pl-dsession");
  ASSERT_EQ(box.start(), "");
  writeKey(box.file("key"), 'k');
  Process& session = box.spawn(
      0,
      {kPeerlight, "session", kScene, "--size", "64x48", "--spp", "100000", "--no-local",
       "--no-daemon", "--mdns-wait", "0.5", "--key-file", box.file("key")},
      "session", /*pipeStdin=*/true);
  ASSERT_TRUE(session.waitForOutput("\"event\":\"ready\"", kTimeout).has_value())
      << session.err();
  const std::string address = startLateNode(box);
  ASSERT_FALSE(address.empty());
  // The node's "joined" event, then passes rendered by it alone (no local device).
  ASSERT_TRUE(session.waitForOutput("\"state\":\"joined\"", kTimeout).has_value())
      << session.out() << "\n" << session.err() << "\n" << box.avahiLog(0);
  EXPECT_NE(session.out().find(address), std::string::npos) << session.out();
  EXPECT_TRUE(session.waitForOutput("\"event\":\"pass\"", kTimeout).has_value())
      << session.out() << "\n" << session.err();
  EXPECT_NE(session.err().find("node " + address + " appeared: using it"), std::string::npos)
      << session.err();
  session.writeStdin("{\"op\":\"quit\"}\n");
  EXPECT_EQ(session.wait(kTimeout), 0) << session.err();
}

// `peerlight render` in this process browses mDNS on its render's loop too: with no node at the
// start (--no-local: it waits for one), a node that starts during the render is handed to it as
// a discovery event, joins and renders the image.
TEST(DiscoveryRenderTest, RenderTakesUpANodeThatAppearsWhileItRuns) {
  if (std::string why = NetnsSandbox::unavailableReason(); !why.empty()) GTEST_SKIP() << why;
  NetnsSandbox box("pl-dlate");
  ASSERT_EQ(box.start(), "");
  writeKey(box.file("key"), 'k');
  Process& render = box.spawn(
      0,
      {kPeerlight, "render", kScene, "-o", box.file("late.png"), "--size", "64x48", "--spp",
       "32", "--no-local", "--no-daemon", "--mdns-wait", "0.5", "--json", "--key-file",
       box.file("key")},
      "render");
  // The browse's first look found nothing; then a node starts.
  const auto deadline = Clock::now() + kTimeout;
  while (render.err().find("0 usable node(s)") == std::string::npos && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_NE(render.err().find("0 usable node(s)"), std::string::npos) << render.err();
  const std::string address = startLateNode(box);
  ASSERT_FALSE(address.empty());
  ASSERT_EQ(render.wait(kTimeout), 0) << render.err() << "\n" << box.avahiLog(0);
  nlohmann::json stats = nlohmann::json::parse(render.out(), nullptr, false);
  ASSERT_TRUE(stats.is_object()) << render.out() << "\n" << render.err();
  ASSERT_EQ(stats["nodes"].size(), 1u) << stats["nodes"].dump(2);
  EXPECT_EQ(stats["nodes"][0]["address"], address);
  EXPECT_GT(stats["nodes"][0]["work_units"].get<uint64_t>(), 0u);
  EXPECT_NE(render.err().find("node " + address + " appeared: using it"), std::string::npos)
      << render.err();
}

}  // namespace
}  // namespace pl
