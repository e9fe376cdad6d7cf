// Three "hosts" on one LAN, found by mDNS across a bridge (issue 4, the bridge variant of
// tests/integration/discovery_render_test.cpp), built by tests/integration/netns_sandbox.h: a
// namespace holding a Linux bridge `br0`, and three host namespaces joined to it by veth pairs
// (`eth0` in each host, 10.88.0.1-3/24). Each host has its own system bus, its own avahi-daemon
// (allow-interfaces=eth0, use-ipv6=no, a distinct host name), its own XDG_RUNTIME_DIR and one
// `peerlight node --listen 10.88.0.N:0`. From host 1, `peerlight nodes --json --wait 3` must list
// all three nodes (found by mDNS, key matching), and `peerlight render --no-local --json` with
// no --peer must use all three and write an image bitwise identical to a --local-only render;
// so must the same render handed to host 1's daemon. Last, a page session on host 1's live view
// takes up a node that appears while it renders (a discovery event on the daemon's loop).
// Needs root, ip, unshare, dbus-daemon and avahi-daemon; skips with the reason otherwise.
// Everything it starts (processes, the four namespaces, the temp dir) is removed also on
// failure, by the sandbox.

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "core/render/image_io.h"
#include "tests/integration/netns_sandbox.h"
#include "tests/integration/process.h"
#include "tests/integration/same_image.h"

namespace pl {
namespace {

using testing::NetnsSandbox;
using testing::Process;
using Clock = std::chrono::steady_clock;

const std::string kPeerlight = PEERLIGHT_BINARY;
const std::string kScene = std::string(PEERLIGHT_SOURCE_DIR) + "/scenes/cornell_box.gltf";
constexpr auto kTimeout = std::chrono::seconds(60);
constexpr int kHosts = 3;

void writeKey(const std::string& path, char fill) {
  // Not printable: a generated key (typed ones are refused).
  std::ofstream(path, std::ios::binary) << std::string(32, char(fill | 0x80));
  chmod(path.c_str(), 0600);
}

TEST(BridgeTest, ThreeHostsOnABridgeFindEachOtherAndRenderIdentically) {
  if (std::string why = NetnsSandbox::unavailableReason(); !why.empty()) GTEST_SKIP() << why;
  const auto testStart = Clock::now();
  NetnsSandbox box("plbr");
  ASSERT_EQ(box.start(kHosts, /*bridge=*/true), "");

  // One node per host, listening on its LAN address.
  writeKey(box.file("key"), 'k');
  std::vector<Process*> nodes;
  std::vector<std::string> addresses;
  const auto nodesStart = Clock::now();
  for (int i = 0; i < kHosts; ++i) {
    const std::string n = std::to_string(i + 1);
    // Host 1's live view on every address (the others keep the default, loopback only).
    std::vector<std::string> argv = {kPeerlight, "node",   "--listen",   box.hostAddress(i) + ":0",
                                     "--threads", "1",     "--name",     "host" + n,
                                     "--key-file", box.file("key")};
    if (i == 0) argv.insert(argv.end(), {"--http", "0.0.0.0:7480"});
    nodes.push_back(&box.spawn(i, argv, "node" + n));
  }
  for (int i = 0; i < kHosts; ++i) {
    std::optional<std::string> line = nodes[i]->waitForOutput("listening on ", kTimeout);
    ASSERT_TRUE(line.has_value()) << "host" << i + 1 << ": " << nodes[i]->err();
    addresses.push_back(line->substr(std::strlen("listening on ")));
    ASSERT_EQ(addresses.back().rfind("10.88.0." + std::to_string(i + 1) + ":", 0), 0u)
        << addresses.back();
  }

  // The reference, while host 1 browses (this process's devices only, outside every namespace:
  // no mDNS, and no control socket of a node daemon of this machine).
  const std::vector<std::string> common = {"--size", "256x192",    "--spp",
                                           "16",     "--key-file", box.file("key")};
  std::vector<std::string> argv = {kPeerlight,     "render",    kScene, "-o", box.file("local.exr"),
                                   "--local-only", "--threads", "2"};
  argv.insert(argv.end(), common.begin(), common.end());
  Process& local = box.spawn(-1, argv, "local");

  // From host 1: all three listed, found by mDNS across the bridge.
  const auto listStart = Clock::now();
  Process& list = box.spawn(
      0, {kPeerlight, "nodes", "--json", "--wait", "3", "--key-file", box.file("key")}, "nodes");
  ASSERT_EQ(list.wait(std::chrono::seconds(20)), 0) << list.err();
  nlohmann::json listed = nlohmann::json::parse(list.out(), nullptr, false);
  ASSERT_TRUE(listed.is_array()) << list.out() << "\n" << list.err();
  EXPECT_EQ(listed.size(), size_t(kHosts)) << listed.dump(2) << "\n" << list.err();
  const double offsetMs = std::chrono::duration<double, std::milli>(listStart - nodesStart).count();
  for (int i = 0; i < kHosts; ++i) {
    const nlohmann::json* j = nullptr;
    for (const auto& e : listed)
      if (e["address"] == addresses[i]) j = &e;
    ASSERT_NE(j, nullptr) << addresses[i] << " not listed from host 1:\n"
                          << listed.dump(2) << "\n"
                          << list.err() << "\navahi of host " << i + 1 << ":\n"
                          << box.avahiLog(i);
    EXPECT_EQ((*j)["source"], "mdns") << j->dump();
    EXPECT_EQ((*j)["name"], "host" + std::to_string(i + 1));
    EXPECT_EQ((*j)["status"], "ok") << j->dump();
    EXPECT_EQ((*j)["keyMatch"], true) << j->dump();
    EXPECT_EQ((*j)["state"], "idle") << j->dump();
    ASSERT_GE((*j)["devices"].size(), 1u) << j->dump();
    if ((*j)["discoveredMs"].is_number())
      std::printf("host%d seen from host 1 after %.0f ms (%.0f ms after the node started)\n", i + 1,
                  (*j)["discoveredMs"].get<double>(),
                  offsetMs + (*j)["discoveredMs"].get<double>());
  }

  // Host 1's live view (its node daemon's page, default 127.0.0.1:7480 in its namespace), as
  // headless Chromium shows it: this node in the header, the two others found by mDNS listed
  // with their devices (skipped without Debian's chromium).
  if (std::system("command -v chromium >/dev/null 2>&1") == 0) {
    Process& page = box.spawn(0,
                              {"chromium", "--headless", "--no-sandbox", "--disable-gpu",
                               "--user-data-dir=" + box.file("chromium"),
                               "--virtual-time-budget=5000", "--dump-dom",
                               "http://127.0.0.1:7480/"},
                              "page");
    ASSERT_EQ(page.wait(std::chrono::seconds(60)), 0) << page.err();
    const std::string dom = page.out();
    EXPECT_NE(dom.find("host1 \u00b7 1 device(s)"), std::string::npos) << dom;
    for (const char* other : {"host2", "host3"}) {
      const size_t at = dom.find(std::string("<span class=\"name\">") + other + "</span>");
      ASSERT_NE(at, std::string::npos) << other << " not on host 1's page:\n" << dom;
      const size_t device = dom.find("<div class=\"dev\">cpu: ", at);
      EXPECT_NE(device, std::string::npos) << other << " listed without its devices:\n" << dom;
    }
  } else {
    std::printf("live view: not checked (no chromium)\n");
  }
  // From host 2 (a non-loopback address): refused without the token, served with the one that
  // `peerlight open` prints.
  {
    Process& opened = box.spawn(-1,
                                {kPeerlight, "open", "--print", "--http",
                                 box.hostAddress(0) + ":7480", "--key-file", box.file("key")},
                                "open");
    ASSERT_EQ(opened.wait(std::chrono::seconds(10)), 0) << opened.err();
    std::string url = opened.out();
    while (!url.empty() && (url.back() == '\n' || url.back() == '\r')) url.pop_back();
    ASSERT_NE(url.find("?token="), std::string::npos) << url;
    const std::string state = "http://" + box.hostAddress(0) + ":7480/api/state";
    const std::string fetch =
        "import sys, urllib.request, urllib.error\n"
        "for url in sys.argv[1:]:\n"
        "  try: print(urllib.request.urlopen(url, timeout=10).status)\n"
        "  except urllib.error.HTTPError as e: print(e.code)\n";
    Process& remote = box.spawn(
        1, {"python3", "-c", fetch, state, state + "?token=" + url.substr(url.find("?token=") + 7)},
        "remote");
    ASSERT_EQ(remote.wait(std::chrono::seconds(30)), 0) << remote.err();
    EXPECT_EQ(remote.out(), "403\n200\n") << "from " << box.hostAddress(1) << ": " << remote.err();
  }

  // From host 1, no --peer and no local devices, this process as the Primary (--no-daemon):
  // the three nodes come from mDNS.
  argv = {kPeerlight, "render", kScene, "-o", box.file("mdns.exr"), "--no-local", "--no-daemon",
          "--json"};
  argv.insert(argv.end(), common.begin(), common.end());
  const auto renderStart = Clock::now();
  Process& render = box.spawn(0, argv, "render");
  ASSERT_EQ(render.wait(kTimeout), 0) << render.err();
  const double renderSeconds = std::chrono::duration<double>(Clock::now() - renderStart).count();
  nlohmann::json stats = nlohmann::json::parse(render.out(), nullptr, false);
  ASSERT_TRUE(stats.is_object()) << render.out() << "\n" << render.err();
  ASSERT_EQ(stats["nodes"].size(), size_t(kHosts)) << stats["nodes"].dump(2) << "\n"
                                                   << render.err();
  EXPECT_EQ(stats["devices"].size(), 0u) << "--no-local rendered locally";
  for (int i = 0; i < kHosts; ++i) {
    const nlohmann::json* entry = nullptr;
    for (const auto& n : stats["nodes"])
      if (n["address"] == addresses[i]) entry = &n;
    ASSERT_NE(entry, nullptr) << "host" << i + 1 << " at " << addresses[i] << " not used:\n"
                              << stats["nodes"].dump(2) << "\n"
                              << render.err();
    EXPECT_EQ((*entry)["name"], "host" + std::to_string(i + 1));
    EXPECT_EQ((*entry)["state"], "done") << entry->dump();
    EXPECT_EQ((*entry)["losses"], 0) << entry->dump();
    EXPECT_GT((*entry)["work_units"].get<uint64_t>(), 0u) << entry->dump();
    std::printf("host%d: %llu work units\n", i + 1,
                (unsigned long long)(*entry)["work_units"].get<uint64_t>());
  }
  EXPECT_NE(render.err().find("mDNS: 3 usable node(s)"), std::string::npos) << render.err();
  std::printf("render from host 1 through 3 nodes across the bridge: %.2f s\n", renderSeconds);

  ASSERT_EQ(local.wait(kTimeout), 0) << local.err();
  testing::expectSameExr(box.file("mdns.exr"), box.file("local.exr"), "differ from --local-only");

  // The same with no flags beyond the frame: host 1's node daemon takes the job and becomes
  // the Primary; it renders on its own node and on the two it found by mDNS.
  argv = {kPeerlight, "render", kScene, "-o", box.file("daemon.exr"), "--json"};
  argv.insert(argv.end(), common.begin(), common.end());
  Process& job = box.spawn(0, argv, "job");
  ASSERT_EQ(job.wait(kTimeout), 0) << job.err();
  nlohmann::json jobStats = nlohmann::json::parse(job.out(), nullptr, false);
  ASSERT_TRUE(jobStats.is_object()) << job.out() << "\n" << job.err();
  EXPECT_TRUE(jobStats["node_daemon"].is_string()) << "not handed to host 1's daemon";
  ASSERT_EQ(jobStats["nodes"].size(), size_t(kHosts)) << jobStats["nodes"].dump(2);
  for (int i = 0; i < kHosts; ++i) {
    // Host 1's own node is leased in process: listed as "this machine".
    const std::string address = i == 0 ? std::string("this machine") : addresses[i];
    const nlohmann::json* entry = nullptr;
    for (const auto& n : jobStats["nodes"])
      if (n["address"] == address) entry = &n;
    ASSERT_NE(entry, nullptr) << "host" << i + 1 << " not used by the daemon's job:\n"
                              << jobStats["nodes"].dump(2);
    EXPECT_EQ((*entry)["state"], "done") << entry->dump();
  }
  testing::expectSameExr(box.file("daemon.exr"), box.file("local.exr"),
                         "the daemon's render differs from --local-only");

  // A page session on host 1's live view uses a node that appears while it renders: a second
  // node on host 3, found by mDNS, comes to it as an event on the daemon's loop.
  const std::string api = "http://127.0.0.1:7480/api/";
  const std::string post =
      "import sys, urllib.request\n"
      "r = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(),\n"
      "                           headers={'Content-Type': 'application/json'})\n"
      "print(urllib.request.urlopen(r, timeout=10).read().decode())\n";
  Process& opened = box.spawn(
      0,
      {"python3", "-c", post, api + "sessions",
       nlohmann::json{{"scene", kScene}, {"width", 64}, {"height", 48}, {"spp", 1000000}}.dump()},
      "page-session");
  ASSERT_EQ(opened.wait(std::chrono::seconds(20)), 0) << opened.err();
  // The session's entry in /api/state, once `pred` holds for it (or the last one seen).
  const std::string get =
      "import sys, urllib.request\n"
      "print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())\n";
  std::string lastPoll;
  int polls = 0;
  auto sessionWhen = [&](auto pred) {
    nlohmann::json last;
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (Clock::now() < deadline) {
      // (Each with its own log: a log name is a file.)
      Process& poll =
          box.spawn(0, {"python3", "-c", get, api + "state"}, "state" + std::to_string(++polls));
      const std::optional<int> code = poll.wait(std::chrono::seconds(15));
      lastPoll = poll.out() + poll.err();
      if (code != 0) continue;
      nlohmann::json state = nlohmann::json::parse(poll.out(), nullptr, false);
      if (state.is_object()) {
        for (const auto& r : state["renders"])
          if (r["kind"] == "session") last = r;
      }
      if (last.is_object() && pred(last)) return last;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return last;
  };
  auto usesNode = [](const nlohmann::json& session, const std::string& address) {
    if (!session.is_object() || !session.contains("nodes")) return false;
    for (const auto& n : session["nodes"])
      if (n["address"] == address && n["state"] == "rendering") return true;
    return false;
  };
  nlohmann::json session =
      sessionWhen([&](const nlohmann::json& r) { return usesNode(r, addresses[1]); });
  ASSERT_TRUE(usesNode(session, addresses[1])) << opened.out() << "\n" << session.dump(2);
  Process& late = box.spawn(2,
                            {kPeerlight, "node", "--listen", box.hostAddress(2) + ":0", "--threads",
                             "1", "--name", "host3-late", "--http", "off", "--no-control-socket",
                             "--key-file", box.file("key")},
                            "node3-late");
  std::optional<std::string> lateLine = late.waitForOutput("listening on ", kTimeout);
  ASSERT_TRUE(lateLine.has_value()) << late.err();
  const std::string lateAddress = lateLine->substr(std::strlen("listening on "));
  session = sessionWhen([&](const nlohmann::json& r) { return usesNode(r, lateAddress); });
  EXPECT_TRUE(usesNode(session, lateAddress))
      << "the page session did not take up " << lateAddress << ":\n"
      << session.dump(2) << "\nlast /api/state:\n"
      << lastPoll << "\nhost 1's node:\n"
      << nodes[0]->err() << "\navahi of host 3:\n"
      << box.avahiLog(2);

  std::printf("whole test: %.1f s\n",
              std::chrono::duration<double>(Clock::now() - testStart).count());
}

}  // namespace
}  // namespace pl
