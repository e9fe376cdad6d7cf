// `peerlight nodes` against real `peerlight node` processes:
// - StaticPeers (anywhere): nodes on 127.0.0.1 with no mDNS at all (the system bus address
//   points nowhere); good, wrong-key, incompatible and unreachable peers each get the right
//   status and reason, and "no mDNS" is said once.
// - InNetworkNamespace (root, with avahi-daemon and dbus-daemon installed; label "discovery"):
//   a network namespace with only `lo`, a private system bus and avahi-daemon in it, three
//   nodes; `peerlight nodes --json --wait 2` lists all three, found by mDNS within 2 s, with
//   their devices and the key matching. Nothing multicasts in the root namespace.
// Every process, namespace and temp dir a test creates is removed by its Sandbox, also when
// the test fails (SIGKILL, then `ip netns del`, then rm -rf).

#include <fcntl.h>
#include <sys/stat.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace pl {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

const std::string kPeerlight = std::string(PEERLIGHT_BINARY_DIR) + "/bin/peerlight";

std::string readFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string findTool(const char* name) {
  for (const char* dir : {"/usr/sbin/", "/usr/bin/", "/sbin/", "/bin/"}) {
    std::string path = std::string(dir) + name;
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return "";
}

// Owns what a test starts; the destructor removes all of it, whatever happened.
class Sandbox {
 public:
  Sandbox() {
    char tmpl[] = "/tmp/pl-disc-XXXXXX";
    dir_ = mkdtemp(tmpl);
    chmod(dir_.c_str(), 0755);
  }
  ~Sandbox() {
    for (pid_t pid : pids_) kill(pid, SIGKILL);
    for (pid_t pid : pids_) waitpid(pid, nullptr, 0);
    if (!netns_.empty()) {
      // Anything left in the namespace (children of what we started) goes too.
      std::string pids = capture({ip(), "netns", "pids", netns_});
      std::istringstream in(pids);
      for (pid_t pid; in >> pid;) kill(pid, SIGKILL);
      run({ip(), "netns", "del", netns_});
    }
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;

  const std::string& dir() const { return dir_; }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  static std::string ip() { return findTool("ip"); }

  void setEnv(const std::string& key, const std::string& value) { env_.push_back(key + "=" + value); }

  // Starts argv (inside the namespace when there is one and inNetns), stdout and stderr to
  // files in dir(). Returns the pid (0 on failure).
  pid_t spawn(std::vector<std::string> argv, const std::string& logName, bool inNetns = true) {
    if (inNetns && !netns_.empty()) argv.insert(argv.begin(), {ip(), "netns", "exec", netns_});
    // getenv returns the first match: ours go first.
    std::vector<std::string> ordered(env_.rbegin(), env_.rend());
    for (char** e = environ; *e != nullptr; ++e) ordered.push_back(*e);
    std::vector<char*> args, envp;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    for (auto& e : ordered) envp.push_back(e.data());
    envp.push_back(nullptr);
    std::string out = path(logName + ".out"), err = path(logName + ".err");
    pid_t pid = fork();
    if (pid == 0) {
      setpgid(0, 0);
      int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      int e = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(o, 1);
      dup2(e, 2);
      int devnull = open("/dev/null", O_RDONLY);
      dup2(devnull, 0);
      execve(args[0], args.data(), envp.data());
      _exit(127);
    }
    if (pid > 0) pids_.push_back(pid);
    return pid;
  }

  // Waits for pid to exit (SIGKILL after timeout); returns its exit status or -1.
  int wait(pid_t pid, std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    int status = 0;
    while (Clock::now() < deadline) {
      pid_t r = waitpid(pid, &status, WNOHANG);
      if (r == pid) {
        forget(pid);
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    forget(pid);
    return -1;
  }

  // Waits until file `name` in dir() contains `text`; returns the file's contents ("" on time out).
  std::string waitForText(const std::string& name, const std::string& text,
                          std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      std::string s = readFile(path(name));
      if (s.find(text) != std::string::npos) return s;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return "";
  }

  bool createNetns(const std::string& name) {
    if (run({ip(), "netns", "add", name}) != 0) return false;
    netns_ = name;
    return run({ip(), "netns", "exec", name, ip(), "link", "set", "lo", "up"}) == 0;
  }

  static int run(const std::vector<std::string>& argv) {
    std::string cmd;
    for (const auto& a : argv) cmd += "'" + a + "' ";
    return std::system((cmd + ">/dev/null 2>&1").c_str());
  }
  static std::string capture(const std::vector<std::string>& argv) {
    std::string cmd;
    for (const auto& a : argv) cmd += "'" + a + "' ";
    FILE* p = popen((cmd + "2>/dev/null").c_str(), "r");
    if (p == nullptr) return "";
    std::string out;
    char buf[256];
    while (size_t n = fread(buf, 1, sizeof(buf), p)) out.append(buf, n);
    pclose(p);
    return out;
  }

 private:
  void forget(pid_t pid) { pids_.erase(std::remove(pids_.begin(), pids_.end(), pid), pids_.end()); }

  std::string dir_;
  std::string netns_;
  std::vector<pid_t> pids_;
  std::vector<std::string> env_;
};

void writeKey(const std::string& path, char fill) {
  std::ofstream out(path, std::ios::binary);
  out << std::string(32, fill);
  out.close();
  chmod(path.c_str(), 0600);
}

// "listening on 127.0.0.1:PORT" -> "127.0.0.1:PORT"
std::string listenAddress(const std::string& out) {
  const std::string prefix = "listening on ";
  size_t at = out.find(prefix);
  if (at == std::string::npos) return "";
  size_t end = out.find('\n', at);
  return out.substr(at + prefix.size(), end - at - prefix.size());
}

const nlohmann::json* byAddress(const nlohmann::json& list, const std::string& address) {
  for (const auto& j : list) {
    if (j["address"] == address) return &j;
  }
  return nullptr;
}

TEST(NodesCommandTest, StaticPeersWithoutMdns) {
  Sandbox box;
  // No system bus at this address: no mDNS at all, not even a responder elsewhere.
  box.setEnv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=" + box.path("no-bus"));
  writeKey(box.path("key"), 'a');
  writeKey(box.path("other.key"), 'b');
  struct NodeSpec {
    const char* log;
    const char* key;
    const char* version;
  } specs[] = {{"good", "key", "1"}, {"otherkey", "other.key", "1"}, {"newer", "key", "7"}};
  std::vector<std::string> addresses;
  for (const auto& s : specs) {
    ASSERT_GT(box.spawn({kPeerlight, "node", "--listen", "127.0.0.1:0", "--threads", "1",
                         "--name", s.log, "--key-file", box.path(s.key), "--protocol-version",
                         s.version, "--no-mdns", "--no-control-socket"},
                        s.log),
              0);
  }
  for (const auto& s : specs) {
    std::string out = box.waitForText(std::string(s.log) + ".out", "listening on", std::chrono::seconds(10));
    ASSERT_FALSE(out.empty()) << s.log << ": " << readFile(box.path(std::string(s.log) + ".err"));
    addresses.push_back(listenAddress(out));
  }
  const std::string unreachable = "127.0.0.1:1";
  pid_t nodes = box.spawn({kPeerlight, "nodes", "--json", "--key-file", box.path("key"), "--peer",
                           addresses[0], "--peer", addresses[1], "--peer", addresses[2],
                           "--peer", unreachable},
                          "nodes");
  auto start = Clock::now();
  ASSERT_EQ(box.wait(nodes, std::chrono::seconds(20)), 0) << readFile(box.path("nodes.err"));
  // No mDNS: no --wait delay.
  EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(1500));
  std::string err = readFile(box.path("nodes.err"));
  size_t first = err.find("no mDNS (avahi-daemon not reachable): using static peers only");
  EXPECT_NE(first, std::string::npos) << err;
  EXPECT_EQ(err.find("no mDNS", first + 1), std::string::npos) << "said more than once:\n" << err;

  nlohmann::json list = nlohmann::json::parse(readFile(box.path("nodes.out")));
  ASSERT_EQ(list.size(), 4u) << list.dump(2);
  const nlohmann::json* good = byAddress(list, addresses[0]);
  ASSERT_NE(good, nullptr);
  EXPECT_EQ((*good)["status"], "ok");
  EXPECT_EQ((*good)["usable"], true);
  EXPECT_EQ((*good)["keyMatch"], true);
  EXPECT_EQ((*good)["name"], "good");
  EXPECT_EQ((*good)["source"], "static");
  EXPECT_EQ((*good)["state"], "idle");
  ASSERT_GE((*good)["devices"].size(), 1u);
  EXPECT_EQ((*good)["devices"][0]["kind"], "cpu");
  EXPECT_EQ((*good)["devices"][0]["threads"], 1);

  const nlohmann::json* wrong = byAddress(list, addresses[1]);
  ASSERT_NE(wrong, nullptr);
  EXPECT_EQ((*wrong)["status"], "wrong_key");
  EXPECT_EQ((*wrong)["keyMatch"], false);
  EXPECT_EQ((*wrong)["usable"], false);
  EXPECT_NE((*wrong)["reason"].get<std::string>().find("wrong key"), std::string::npos);

  const nlohmann::json* newer = byAddress(list, addresses[2]);
  ASSERT_NE(newer, nullptr);
  EXPECT_EQ((*newer)["status"], "incompatible");
  EXPECT_EQ((*newer)["version"], 7);
  EXPECT_EQ((*newer)["reason"], "speaks protocol 7, we speak 1");

  const nlohmann::json* gone = byAddress(list, unreachable);
  ASSERT_NE(gone, nullptr);
  EXPECT_EQ((*gone)["status"], "unreachable");
  EXPECT_NE((*gone)["reason"].get<std::string>().find("unreachable"), std::string::npos);
}

TEST(NodesCommandDiscoveryTest, InNetworkNamespace) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces)";
  for (const char* tool : {"ip", "dbus-daemon", "avahi-daemon", "unshare"}) {
    if (findTool(tool).empty()) GTEST_SKIP() << tool << " is not installed";
  }
  Sandbox box;
  std::string ns = "pl-disc-" + std::to_string(getpid());
  ASSERT_TRUE(box.createNetns(ns)) << "ip netns add " << ns << " failed";

  // A private system bus (a socket in our temp dir) and an avahi-daemon using it, both in the
  // namespace; avahi's fixed pid file path gets a private tmpfs /run.
  {
    std::ofstream conf(box.path("bus.conf"));
    conf << R"(<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=)" << box.path("bus") << R"(</listen>
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
    std::ofstream avahi(box.path("avahi.conf"));
    avahi << "[server]\nhost-name=pl-disc-test\nuse-ipv4=yes\nuse-ipv6=no\n"
             "ratelimit-interval-usec=1000000\nratelimit-burst=1000\n"
             "[wide-area]\nenable-wide-area=no\n"
             "[publish]\npublish-hinfo=no\npublish-workstation=no\n";
  }
  box.setEnv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=" + box.path("bus"));
  ASSERT_GT(box.spawn({findTool("dbus-daemon"), "--config-file=" + box.path("bus.conf"),
                       "--nofork", "--nopidfile"},
                      "dbus"),
            0);
  auto deadline = Clock::now() + std::chrono::seconds(5);
  while (!fs::exists(box.path("bus")) && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(fs::exists(box.path("bus"))) << readFile(box.path("dbus.err"));
  ASSERT_GT(box.spawn({findTool("unshare"), "-m", "--propagation", "private", "/bin/sh", "-c",
                       "mount -t tmpfs tmpfs /run && mkdir /run/avahi-daemon && exec " +
                           findTool("avahi-daemon") + " -f " + box.path("avahi.conf") +
                           " --no-drop-root --no-chroot --no-rlimits --no-proc-title"},
                      "avahi"),
            0);
  ASSERT_FALSE(box.waitForText("avahi.err", "Server startup complete", std::chrono::seconds(10))
                   .empty())
      << readFile(box.path("avahi.err"));

  // Three nodes, one key.
  writeKey(box.path("key"), 'k');
  const auto nodesStarted = Clock::now();
  for (int i = 0; i < 3; ++i) {
    std::string name = "node" + std::to_string(i);
    ASSERT_GT(box.spawn({kPeerlight, "node", "--listen", "127.0.0.1:0", "--threads", "1",
                         "--name", name, "--key-file", box.path("key"),
                         "--no-control-socket"},
                        name),
              0);
  }
  std::vector<std::string> addresses;
  for (int i = 0; i < 3; ++i) {
    std::string name = "node" + std::to_string(i);
    std::string out = box.waitForText(name + ".out", "listening on", std::chrono::seconds(10));
    ASSERT_FALSE(out.empty()) << readFile(box.path(name + ".err"));
    addresses.push_back(listenAddress(out));
  }
  const auto listStarted = Clock::now();
  pid_t nodes = box.spawn({kPeerlight, "nodes", "--json", "--wait", "2", "--key-file",
                           box.path("key")},
                          "nodes");
  ASSERT_EQ(box.wait(nodes, std::chrono::seconds(15)), 0) << readFile(box.path("nodes.err"));
  nlohmann::json list = nlohmann::json::parse(readFile(box.path("nodes.out")), nullptr, false);
  ASSERT_FALSE(list.is_discarded()) << readFile(box.path("nodes.out"));
  EXPECT_EQ(list.size(), 3u) << list.dump(2) << "\n" << readFile(box.path("nodes.err"));
  const double offsetMs =
      std::chrono::duration<double, std::milli>(listStarted - nodesStarted).count();
  for (int i = 0; i < 3; ++i) {
    const nlohmann::json* j = byAddress(list, addresses[i]);
    ASSERT_NE(j, nullptr) << addresses[i] << " not listed:\n"
                          << list.dump(2) << "\nnode log:\n"
                          << readFile(box.path("node" + std::to_string(i) + ".err"));
    EXPECT_EQ((*j)["source"], "mdns");
    EXPECT_EQ((*j)["name"], "node" + std::to_string(i));
    EXPECT_EQ((*j)["status"], "ok") << (*j)["reason"];
    EXPECT_EQ((*j)["keyMatch"], true);
    EXPECT_EQ((*j)["fingerprintMatch"], true);
    EXPECT_EQ((*j)["version"], 1);
    EXPECT_EQ((*j)["state"], "idle");
    ASSERT_GE((*j)["devices"].size(), 1u);
    EXPECT_EQ((*j)["devices"][0]["kind"], "cpu");
    ASSERT_TRUE((*j)["discoveredMs"].is_number());
    double seenMs = (*j)["discoveredMs"].get<double>();
    EXPECT_LT(seenMs, 2000.0) << "not found by mDNS within 2 s";
    std::printf("discovery latency node%d: %.0f ms from node start (%.0f ms after browsing began)\n",
                i, offsetMs + seenMs, seenMs);
  }
}

}  // namespace
}  // namespace pl
