// `peerlight render` with no --peer finds its Render Nodes by mDNS (apps/peerlight/
// render_command.cpp). In a fresh network namespace with only `lo`, a private system bus and an
// avahi-daemon (as in tests/discovery/nodes_command_test.cpp), three good nodes plus one with
// another cluster key and one speaking another protocol version; `peerlight render --no-local
// --json` must use exactly the three good ones (each with work_units > 0), name the two others
// on stderr with the reason, and write an image bitwise identical to a --local-only render.
// Needs root, ip, unshare, dbus-daemon and avahi-daemon; skips with the reason otherwise.
// Everything it starts (processes, the namespace, the temp dir) is removed also on failure.

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
#include <sstream>
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

// A network namespace with `lo` up; at destruction every process left in it is killed and the
// namespace deleted.
class Netns {
 public:
  explicit Netns(std::string name) : name_(std::move(name)) {
    const std::string ip = findTool("ip");
    if (std::system((shellQuoted({ip, "netns", "add", name_}) + ">/dev/null 2>&1").c_str()) != 0)
      return;
    created_ = true;
    ok_ = std::system((shellQuoted({ip, "netns", "exec", name_, ip, "link", "set", "lo", "up"}) +
                       ">/dev/null 2>&1")
                          .c_str()) == 0;
  }
  ~Netns() {
    if (!created_) return;
    const std::string ip = findTool("ip");
    if (FILE* p = popen((shellQuoted({ip, "netns", "pids", name_}) + "2>/dev/null").c_str(), "r")) {
      for (int pid; std::fscanf(p, "%d", &pid) == 1;) kill(pid, SIGKILL);
      pclose(p);
    }
    std::system((shellQuoted({ip, "netns", "del", name_}) + ">/dev/null 2>&1").c_str());
  }
  Netns(const Netns&) = delete;
  Netns& operator=(const Netns&) = delete;
  bool ok() const { return ok_; }
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

TEST(DiscoveryRenderTest, RenderWithoutPeersUsesEveryGoodNodeFoundByMdns) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces)";
  for (const char* tool : {"ip", "unshare", "dbus-daemon", "avahi-daemon"}) {
    if (findTool(tool).empty()) GTEST_SKIP() << tool << " is not installed";
  }
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  chmod(dir.path().c_str(), 0755);
  Netns ns("pl-drender-" + std::to_string(getpid()));
  ASSERT_TRUE(ns.ok()) << "cannot create a network namespace";
  // Declared after ns: destroyed (killed) first.
  std::vector<std::unique_ptr<Process>> daemons;

  {
    std::ofstream conf(dir.file("bus.conf"));
    conf << R"(<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=)" << dir.file("bus") << R"(</listen>
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
    std::ofstream avahi(dir.file("avahi.conf"));
    avahi << "[server]\nhost-name=pl-drender-test\nuse-ipv4=yes\nuse-ipv6=no\n"
             "ratelimit-interval-usec=1000000\nratelimit-burst=1000\n"
             "[wide-area]\nenable-wide-area=no\n"
             "[publish]\npublish-hinfo=no\npublish-workstation=no\n";
  }
  // Every child uses the private bus (this test program runs this one test only).
  setenv("DBUS_SYSTEM_BUS_ADDRESS", ("unix:path=" + dir.file("bus")).c_str(), 1);
  daemons.push_back(std::make_unique<Process>(
      ns.wrap({findTool("dbus-daemon"), "--config-file=" + dir.file("bus.conf"), "--nofork",
               "--nopidfile"}),
      dir.file("dbus.out"), dir.file("dbus.err")));
  auto deadline = Clock::now() + std::chrono::seconds(5);
  while (!std::filesystem::exists(dir.file("bus")) && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_TRUE(std::filesystem::exists(dir.file("bus"))) << readFile(dir.file("dbus.err"));
  daemons.push_back(std::make_unique<Process>(
      ns.wrap({findTool("unshare"), "-m", "--propagation", "private", "/bin/sh", "-c",
               "mount -t tmpfs tmpfs /run && mkdir /run/avahi-daemon && exec " +
                   findTool("avahi-daemon") + " -f " + dir.file("avahi.conf") +
                   " --no-drop-root --no-chroot --no-rlimits --no-proc-title"}),
      dir.file("avahi.out"), dir.file("avahi.err")));
  ASSERT_TRUE(waitForText(dir.file("avahi.err"), "Server startup complete",
                          std::chrono::seconds(10)))
      << readFile(dir.file("avahi.err"));

  writeKey(dir.file("key"), 'k');
  writeKey(dir.file("other.key"), 'o');
  struct NodeSpec {
    std::string name, key, version;
  };
  const std::vector<NodeSpec> specs = {{"good0", "key", "1"},
                                       {"good1", "key", "1"},
                                       {"good2", "key", "1"},
                                       {"otherkey", "other.key", "1"},
                                       {"newer", "key", "7"}};
  std::vector<std::unique_ptr<Process>> nodes;
  std::vector<std::string> addresses;
  for (const NodeSpec& s : specs) {
    nodes.push_back(std::make_unique<Process>(
        ns.wrap({kPeerlight, "node", "--listen", "127.0.0.1:0", "--threads", "1", "--name", s.name,
                 "--key-file", dir.file(s.key), "--protocol-version", s.version,
                 "--no-control-socket"}),
        dir.file(s.name + ".out"), dir.file(s.name + ".err")));
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    std::optional<std::string> line = nodes[i]->waitForOutput("listening on ", kTimeout);
    ASSERT_TRUE(line.has_value()) << specs[i].name << ": " << nodes[i]->err();
    addresses.push_back(line->substr(std::strlen("listening on ")));
  }

  // No --peer: the nodes come from mDNS.
  const std::vector<std::string> common = {"--size", "256x192", "--spp", "16", "--key-file",
                                           dir.file("key")};
  std::vector<std::string> argv = {kPeerlight, "render", kScene, "-o", dir.file("mdns.exr"),
                                   "--no-local", "--json"};
  argv.insert(argv.end(), common.begin(), common.end());
  const auto renderStart = Clock::now();
  Process render(ns.wrap(argv), dir.file("render.out"), dir.file("render.err"));
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
  EXPECT_NE(err.find("speaks protocol 7, we speak 1"), std::string::npos) << err;
  EXPECT_NE(err.find("mDNS: 3 usable node(s)"), std::string::npos) << err;
  std::printf("render through 3 mDNS-discovered nodes: %.2f s (command wall time, ~1 s of it "
              "browsing)\n", renderSeconds);

  // The reference: this process's devices only (outside the namespace: no mDNS either way).
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
}

}  // namespace
}  // namespace pl
