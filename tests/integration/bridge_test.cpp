// Three "hosts" on one LAN, found by mDNS across a bridge (issue 4, the bridge variant of
// tests/integration/discovery_render_test.cpp): a namespace holding a Linux bridge `br0`, and
// three host namespaces joined to it by veth pairs (`eth0` in each host, 10.88.0.1-3/24). Each
// host has its own system bus (a private dbus-daemon; DBUS_SYSTEM_BUS_ADDRESS is given to every
// process of that host only), its own avahi-daemon (private mount namespace with a tmpfs over
// /run, distinct host-name=, allow-interfaces=eth0, use-ipv6=no) and one `peerlight node
// --listen 10.88.0.N:0`. From host 1, `peerlight nodes --json --wait 3` must list all three
// nodes (found by mDNS, key matching), and `peerlight render --no-local --json` with no --peer
// must use all three and write an image bitwise identical to a --local-only render.
// Needs root, ip, unshare, dbus-daemon and avahi-daemon; skips with the reason otherwise.
// Everything it starts (processes, the four namespaces, the temp dir) is removed also on failure:
// processes by their guards (SIGKILL), then any process left in a namespace, then the namespaces
// (deleting a host namespace deletes its veth pair), then the directory.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "core/render/image_io.h"
#include "tests/integration/process.h"

namespace pl {
namespace {

using testing::Process;
using testing::readFile;
using testing::TempDir;
using Clock = std::chrono::steady_clock;

const std::string kPeerlight = PEERLIGHT_BINARY;
const std::string kScene = std::string(PEERLIGHT_SOURCE_DIR) + "/scenes/cornell_box.gltf";
constexpr auto kTimeout = std::chrono::seconds(60);
constexpr int kHosts = 3;

std::string findTool(const char* name) {
  for (const char* dir : {"/usr/sbin/", "/usr/bin/", "/sbin/", "/bin/"}) {
    std::string path = std::string(dir) + name;
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return "";
}

std::string shellQuoted(const std::vector<std::string>& argv) {
  std::string cmd;
  for (const std::string& a : argv) cmd += "'" + a + "' ";
  return cmd;
}

// Runs `ip ARGS...`; true on exit status 0. Output is discarded.
bool ipCommand(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {findTool("ip")};
  argv.insert(argv.end(), args.begin(), args.end());
  return std::system((shellQuoted(argv) + ">/dev/null 2>&1").c_str()) == 0;
}

// A network namespace with `lo` up. At destruction every process left in it is killed (SIGKILL)
// and the namespace deleted, with its interfaces.
class Netns {
 public:
  explicit Netns(std::string name) : name_(std::move(name)) {
    if (!ipCommand({"netns", "add", name_})) return;
    created_ = true;
    ok_ = ipCommand({"-n", name_, "link", "set", "lo", "up"});
  }
  ~Netns() {
    if (!created_) return;
    if (FILE* p = popen((shellQuoted({findTool("ip"), "netns", "pids", name_}) + "2>/dev/null")
                            .c_str(),
                        "r")) {
      for (int pid; std::fscanf(p, "%d", &pid) == 1;) kill(pid, SIGKILL);
      pclose(p);
    }
    ipCommand({"netns", "del", name_});
  }
  Netns(const Netns&) = delete;
  Netns& operator=(const Netns&) = delete;
  bool ok() const { return ok_; }
  const std::string& name() const { return name_; }
  // `ip -n NAME ARGS...` (configures this namespace's interfaces).
  bool ip(std::vector<std::string> args) const {
    args.insert(args.begin(), {"-n", name_});
    return ipCommand(args);
  }
  // argv run inside the namespace (`ip netns exec` execs it: same pid).
  std::vector<std::string> wrap(std::vector<std::string> argv) const {
    argv.insert(argv.begin(), {findTool("ip"), "netns", "exec", name_});
    return argv;
  }

 private:
  std::string name_;
  bool created_ = false;
  bool ok_ = false;
};

void writeKey(const std::string& path, char fill) {
  std::ofstream(path, std::ios::binary) << std::string(32, fill);
  chmod(path.c_str(), 0600);
}

bool waitForText(const std::string& path, const std::string& text,
                 std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (readFile(path).find(text) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

void writeBusConfig(const std::string& path, const std::string& socket) {
  std::ofstream conf(path);
  conf << R"(<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=)" << socket << R"(</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/> <allow own="*"/>
    <allow send_type="method_call"/> <allow send_type="signal"/>
    <allow send_type="method_return"/> <allow send_type="error"/>
    <allow receive_type="method_call"/> <allow receive_type="signal"/>
    <allow receive_type="method_return"/> <allow receive_type="error"/>
  </policy>
</busconfig>
)";
}

TEST(BridgeTest, ThreeHostsOnABridgeFindEachOtherAndRenderIdentically) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces)";
  for (const char* tool : {"ip", "unshare", "dbus-daemon", "avahi-daemon"}) {
    if (findTool(tool).empty()) GTEST_SKIP() << tool << " is not installed";
  }
  const auto testStart = Clock::now();
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  chmod(dir.path().c_str(), 0755);
  // Processes started outside the namespaces (the reference render) find no system bus and no
  // node daemon's control socket (so they preempt no daemon of this machine).
  setenv("DBUS_SYSTEM_BUS_ADDRESS", ("unix:path=" + dir.file("no-bus")).c_str(), 1);
  setenv("XDG_RUNTIME_DIR", dir.file("run-outside").c_str(), 1);
  const std::string tag = "plbr" + std::to_string(getpid());
  Netns lan(tag + "-lan");
  ASSERT_TRUE(lan.ok()) << "cannot create a network namespace";
  std::vector<std::unique_ptr<Netns>> hosts;
  for (int i = 1; i <= kHosts; ++i) {
    hosts.push_back(std::make_unique<Netns>(tag + "-h" + std::to_string(i)));
    ASSERT_TRUE(hosts.back()->ok()) << "cannot create " << hosts.back()->name();
  }
  // Declared after the namespaces: destroyed (killed) first.
  std::vector<std::unique_ptr<Process>> daemons;
  std::vector<std::unique_ptr<Process>> nodes;

  // The LAN: br0 (no multicast snooping: every port sees every mDNS packet) with one veth pair
  // per host, `eth0` on the host side, and a multicast route on each host.
  ASSERT_TRUE(lan.ip({"link", "add", "br0", "type", "bridge", "mcast_snooping", "0"}));
  ASSERT_TRUE(lan.ip({"link", "set", "br0", "up"}));
  for (int i = 1; i <= kHosts; ++i) {
    const Netns& h = *hosts[i - 1];
    const std::string port = "vb" + std::to_string(i);
    ASSERT_TRUE(lan.ip({"link", "add", port, "type", "veth", "peer", "name", "eth0", "netns",
                        h.name()}));
    ASSERT_TRUE(lan.ip({"link", "set", port, "master", "br0"}));
    ASSERT_TRUE(lan.ip({"link", "set", port, "up"}));
    ASSERT_TRUE(h.ip({"addr", "add", "10.88.0." + std::to_string(i) + "/24", "dev", "eth0"}));
    ASSERT_TRUE(h.ip({"link", "set", "eth0", "up"}));
    ASSERT_TRUE(h.ip({"route", "add", "224.0.0.0/4", "dev", "eth0"}));
  }

  // A host's processes see its own bus and its own runtime dir (where a node's control socket
  // lives, as /run would be per machine). `env` replaces any inherited value.
  auto onHost = [&](int i, std::vector<std::string> argv) {
    const std::string n = std::to_string(i);
    argv.insert(argv.begin(), {"/usr/bin/env", "DBUS_SYSTEM_BUS_ADDRESS=unix:path=" +
                                                   dir.file("bus" + n),
                               "XDG_RUNTIME_DIR=" + dir.file("run" + n)});
    return hosts[i - 1]->wrap(std::move(argv));
  };
  // Per host: a system bus, then avahi-daemon on it.
  for (int i = 1; i <= kHosts; ++i) {
    const Netns& h = *hosts[i - 1];
    const std::string n = std::to_string(i);
    const std::string socket = dir.file("bus" + n);
    writeBusConfig(dir.file("bus" + n + ".conf"), socket);
    {
      std::ofstream avahi(dir.file("avahi" + n + ".conf"));
      avahi << "[server]\nhost-name=" << tag << "-host" << n
            << "\nallow-interfaces=eth0\nuse-ipv4=yes\nuse-ipv6=no\n"
               "ratelimit-interval-usec=1000000\nratelimit-burst=1000\n"
               "[wide-area]\nenable-wide-area=no\n"
               "[publish]\npublish-hinfo=no\npublish-workstation=no\n";
    }
    std::filesystem::create_directories(dir.file("run" + n));
    daemons.push_back(std::make_unique<Process>(
        h.wrap({findTool("dbus-daemon"), "--config-file=" + dir.file("bus" + n + ".conf"),
                "--nofork", "--nopidfile"}),
        dir.file("dbus" + n + ".out"), dir.file("dbus" + n + ".err")));
  }
  for (int i = 1; i <= kHosts; ++i) {
    const std::string n = std::to_string(i);
    auto deadline = Clock::now() + std::chrono::seconds(5);
    while (!std::filesystem::exists(dir.file("bus" + n)) && Clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ASSERT_TRUE(std::filesystem::exists(dir.file("bus" + n))) << readFile(dir.file("dbus" + n +
                                                                                   ".err"));
  }
  for (int i = 1; i <= kHosts; ++i) {
    const std::string n = std::to_string(i);
    daemons.push_back(std::make_unique<Process>(
        onHost(i,
            {findTool("unshare"), "-m", "--propagation", "private", "/bin/sh", "-c",
             "mount -t tmpfs tmpfs /run && mkdir /run/avahi-daemon && exec " +
                 findTool("avahi-daemon") + " -f " + dir.file("avahi" + n + ".conf") +
                 " --no-drop-root --no-chroot --no-rlimits --no-proc-title"}),
        dir.file("avahi" + n + ".out"), dir.file("avahi" + n + ".err")));
  }
  for (int i = 1; i <= kHosts; ++i) {
    const std::string n = std::to_string(i);
    ASSERT_TRUE(waitForText(dir.file("avahi" + n + ".err"), "Server startup complete",
                            std::chrono::seconds(10)))
        << "host " << n << ":\n" << readFile(dir.file("avahi" + n + ".err"));
  }

  // One node per host, listening on its LAN address.
  writeKey(dir.file("key"), 'k');
  std::vector<std::string> addresses;
  const auto nodesStart = Clock::now();
  for (int i = 1; i <= kHosts; ++i) {
    const std::string n = std::to_string(i);
    nodes.push_back(std::make_unique<Process>(
        onHost(i, {kPeerlight, "node", "--listen", "10.88.0." + n + ":0", "--threads",
                            "1", "--name", "host" + n, "--key-file", dir.file("key")}),
        dir.file("node" + n + ".out"), dir.file("node" + n + ".err")));
  }
  for (int i = 0; i < kHosts; ++i) {
    std::optional<std::string> line = nodes[i]->waitForOutput("listening on ", kTimeout);
    ASSERT_TRUE(line.has_value()) << "host" << i + 1 << ": " << nodes[i]->err();
    addresses.push_back(line->substr(std::strlen("listening on ")));
    ASSERT_EQ(addresses.back().rfind("10.88.0." + std::to_string(i + 1) + ":", 0), 0u)
        << addresses.back();
  }

  // From host 1: all three listed, found by mDNS across the bridge.
  const auto listStart = Clock::now();
  Process list(onHost(1, {kPeerlight, "nodes", "--json", "--wait", "3", "--key-file",
                          dir.file("key")}),
               dir.file("nodes.out"), dir.file("nodes.err"));
  ASSERT_EQ(list.wait(std::chrono::seconds(20)), 0) << list.err();
  nlohmann::json listed = nlohmann::json::parse(list.out(), nullptr, false);
  ASSERT_TRUE(listed.is_array()) << list.out() << "\n" << list.err();
  EXPECT_EQ(listed.size(), size_t(kHosts)) << listed.dump(2) << "\n" << list.err();
  const double offsetMs =
      std::chrono::duration<double, std::milli>(listStart - nodesStart).count();
  for (int i = 0; i < kHosts; ++i) {
    const nlohmann::json* j = nullptr;
    for (const auto& e : listed)
      if (e["address"] == addresses[i]) j = &e;
    ASSERT_NE(j, nullptr) << addresses[i] << " not listed from host 1:\n"
                          << listed.dump(2) << "\n" << list.err() << "\navahi of host "
                          << i + 1 << ":\n" << readFile(dir.file("avahi" + std::to_string(i + 1)
                                                                 + ".err"));
    EXPECT_EQ((*j)["source"], "mdns") << j->dump();
    EXPECT_EQ((*j)["name"], "host" + std::to_string(i + 1));
    EXPECT_EQ((*j)["status"], "ok") << j->dump();
    EXPECT_EQ((*j)["keyMatch"], true) << j->dump();
    EXPECT_EQ((*j)["state"], "idle") << j->dump();
    ASSERT_GE((*j)["devices"].size(), 1u) << j->dump();
    if ((*j)["discoveredMs"].is_number())
      std::printf("host%d seen from host 1 after %.0f ms (%.0f ms after the node started)\n",
                  i + 1, (*j)["discoveredMs"].get<double>(),
                  offsetMs + (*j)["discoveredMs"].get<double>());
  }

  // From host 1, no --peer and no local devices: the three nodes come from mDNS.
  const std::vector<std::string> common = {"--size", "256x192", "--spp", "16", "--key-file",
                                           dir.file("key")};
  std::vector<std::string> argv = {kPeerlight, "render", kScene, "-o", dir.file("mdns.exr"),
                                   "--no-local", "--json"};
  argv.insert(argv.end(), common.begin(), common.end());
  const auto renderStart = Clock::now();
  Process render(onHost(1, argv), dir.file("render.out"), dir.file("render.err"));
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
                              << stats["nodes"].dump(2) << "\n" << render.err();
    EXPECT_EQ((*entry)["name"], "host" + std::to_string(i + 1));
    EXPECT_EQ((*entry)["state"], "done") << entry->dump();
    EXPECT_EQ((*entry)["losses"], 0) << entry->dump();
    EXPECT_GT((*entry)["work_units"].get<uint64_t>(), 0u) << entry->dump();
    std::printf("host%d: %llu work units\n", i + 1,
                (unsigned long long)(*entry)["work_units"].get<uint64_t>());
  }
  EXPECT_NE(render.err().find("mDNS: 3 usable node(s)"), std::string::npos) << render.err();
  std::printf("render from host 1 through 3 nodes across the bridge: %.2f s\n", renderSeconds);

  // The reference: this process's devices only, outside every namespace (no mDNS either way).
  argv = {kPeerlight, "render", kScene, "-o", dir.file("local.exr"), "--local-only", "--threads",
          "2"};
  argv.insert(argv.end(), common.begin(), common.end());
  Process local(argv, dir.file("local.out"), dir.file("local.err"));
  ASSERT_EQ(local.wait(kTimeout), 0) << local.err();

  Result<ImageRgb> got = readExr(dir.file("mdns.exr"));
  Result<ImageRgb> want = readExr(dir.file("local.exr"));
  ASSERT_TRUE(got.ok()) << got.error().message;
  ASSERT_TRUE(want.ok()) << want.error().message;
  ASSERT_EQ(got->width, want->width);
  ASSERT_EQ(got->height, want->height);
  ASSERT_EQ(got->rgb.size(), want->rgb.size());
  size_t differing = 0;
  for (size_t i = 0; i < got->rgb.size(); ++i)
    differing += std::memcmp(&got->rgb[i], &want->rgb[i], sizeof(float)) != 0;
  EXPECT_EQ(differing, 0u) << "of " << got->rgb.size() << " floats differ from --local-only";
  std::printf("whole test: %.1f s\n",
              std::chrono::duration<double>(Clock::now() - testStart).count());
}

}  // namespace
}  // namespace pl
