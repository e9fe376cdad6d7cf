#pragma once
// A private LAN for mDNS tests (issue 4): "hosts" that are Linux network namespaces, each with
// its own system bus (a dbus-daemon on a socket in the sandbox's temp dir) and its own
// avahi-daemon on it (in a private mount namespace with a tmpfs over /run, for avahi's fixed pid
// file path). Nothing is advertised in the root namespace.
//
// Two shapes:
// - start(1): one namespace with only `lo`; its processes listen on 127.0.0.1.
// - start(n, /*bridge=*/true): a namespace holding a Linux bridge `br0` (no multicast snooping)
//   and n host namespaces joined to it by veth pairs (`eth0` in host i is 10.88.0.(i+1)/24,
//   with a multicast route); each avahi-daemon is restricted to eth0.
// Host indexes are 0-based; files in the temp dir are numbered from 1 (bus1, avahi1.err,
// run1/, ...), as are the namespaces (<tag><pid>-h1, ...) and avahi host names.
//
// Every process run in host i sees DBUS_SYSTEM_BUS_ADDRESS of its own bus and XDG_RUNTIME_DIR
// = <dir>/run<i+1> (where a node's default control socket lives, as /run would be per machine).
//
// Ownership and cleanup: the sandbox owns the namespaces, the temp dir and every process started
// with spawn() (and the dbus/avahi daemons). Its destructor, also after a failed assertion,
// SIGKILLs and reaps its processes, SIGKILLs whatever is left in each namespace (`ip netns
// pids`), deletes the namespaces (a host's veth goes with it), then removes the temp dir.
// Processes a test owns itself should be declared after the sandbox, so they die first.
// Needs root and ip, unshare, dbus-daemon and avahi-daemon: unavailableReason() says what is
// missing, for GTEST_SKIP. Not thread-safe; one test thread.

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "tests/integration/process.h"

namespace pl::testing {

// The absolute path of an installed program (looked for in /usr/sbin, /usr/bin, /sbin, /bin, as
// root's PATH may lack the sbin directories), or "".
inline std::string findTool(const std::string& name) {
  for (const char* dir : {"/usr/sbin/", "/usr/bin/", "/sbin/", "/bin/"}) {
    std::string path = dir + name;
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return "";
}

class NetnsSandbox {
 public:
  // "" when this machine can hold a sandbox; else why not (for GTEST_SKIP).
  static std::string unavailableReason() {
    if (geteuid() != 0) return "needs root (network namespaces)";
    for (const char* tool : {"ip", "unshare", "dbus-daemon", "avahi-daemon", "env"}) {
      if (findTool(tool).empty()) return std::string(tool) + " is not installed";
    }
    return "";
  }

  // Makes the temp dir (mode 0755: daemons read their configs there) and nothing else yet.
  // `tag` (a few characters) starts every namespace's name.
  explicit NetnsSandbox(std::string tag) : tag_(std::move(tag) + std::to_string(getpid())) {
    if (dir_.ok()) ::chmod(dir_.path().c_str(), 0755);
  }
  ~NetnsSandbox() {
    processes_.clear();  // SIGKILL and reap, in their destructors
    std::vector<std::string> all = hosts_;
    if (!lan_.empty()) all.push_back(lan_);
    for (const std::string& ns : all) {
      // Anything left in the namespace (children of what we started) goes too.
      std::istringstream pids(capture({"ip", "netns", "pids", ns}));
      for (pid_t pid; pids >> pid;) ::kill(pid, SIGKILL);
      tool({"ip", "netns", "del", ns});
    }
  }
  NetnsSandbox(const NetnsSandbox&) = delete;
  NetnsSandbox& operator=(const NetnsSandbox&) = delete;

  const std::string& dir() const { return dir_.path(); }
  std::string file(const std::string& name) const { return dir_.file(name); }
  int hosts() const { return int(hosts_.size()); }
  // The address processes of host i listen on: 127.0.0.1 without a bridge, else its eth0's.
  std::string hostAddress(int host) const {
    return lan_.empty() ? "127.0.0.1" : "10.88.0." + std::to_string(host + 1);
  }
  // avahi-daemon's log of host i (for failure messages).
  std::string avahiLog(int host) const { return readFile(file("avahi" + n(host) + ".err")); }

  // Creates the namespaces (and the bridge LAN), then starts each host's dbus-daemon and
  // avahi-daemon, all hosts at once, and waits (at most 5 s, then 10 s) until every bus socket
  // exists and every avahi-daemon logged "Server startup complete". Returns "" on success, else
  // what failed with the relevant log. Call once.
  std::string start(int hosts = 1, bool bridge = false) {
    if (!dir_.ok()) return "cannot create a temp dir";
    if (bridge) {
      lan_ = tag_ + "-lan";
      if (!tool({"ip", "netns", "add", lan_})) {
        lan_.clear();
        return "cannot create a network namespace:\n" + readFile(file("setup.log"));
      }
      if (!ip(lan_, {"link", "add", "br0", "type", "bridge", "mcast_snooping", "0"}) ||
          !ip(lan_, {"link", "set", "br0", "up"}))
        return "cannot create the bridge:\n" + readFile(file("setup.log"));
    }
    for (int i = 0; i < hosts; ++i) {
      const std::string ns = tag_ + "-h" + n(i);
      if (!tool({"ip", "netns", "add", ns}))
        return "cannot create network namespace " + ns + ":\n" + readFile(file("setup.log"));
      hosts_.push_back(ns);
      if (!ip(ns, {"link", "set", "lo", "up"})) return "cannot set lo up in " + ns;
      if (bridge && !joinLan(i))
        return "cannot join " + ns + " to br0:\n" + readFile(file("setup.log"));
    }
    for (int i = 0; i < hosts; ++i) {
      writeConfigs(i, bridge);
      spawn(i,
            {findTool("dbus-daemon"), "--config-file=" + file("bus" + n(i) + ".conf"), "--nofork",
             "--nopidfile"},
            "dbus" + n(i));
    }
    for (int i = 0; i < hosts; ++i) {
      const std::string socket = file("bus" + n(i));
      if (!waitUntil([&] { return std::filesystem::exists(socket); }, std::chrono::seconds(5)))
        return "dbus-daemon of host " + n(i) + " did not start:\n" +
               readFile(file("dbus" + n(i) + ".err"));
    }
    for (int i = 0; i < hosts; ++i) {
      spawn(i,
            {findTool("unshare"), "-m", "--propagation", "private", "/bin/sh", "-c",
             "mount -t tmpfs tmpfs /run && mkdir /run/avahi-daemon && exec " +
                 findTool("avahi-daemon") + " -f " + file("avahi" + n(i) + ".conf") +
                 " --no-drop-root --no-chroot --no-rlimits --no-proc-title"},
            "avahi" + n(i));
    }
    for (int i = 0; i < hosts; ++i) {
      if (!waitUntil(
              [&] { return avahiLog(i).find("Server startup complete") != std::string::npos; },
              std::chrono::seconds(10)))
        return "avahi-daemon of host " + n(i) + " did not start:\n" + avahiLog(i);
    }
    return "";
  }

  // argv as run in host i: `ip netns exec` and `env` both exec, so the pid is argv's own.
  std::vector<std::string> inHost(int host, const std::vector<std::string>& argv) const {
    std::vector<std::string> out = {findTool("ip"),
                                    "netns",
                                    "exec",
                                    hosts_.at(size_t(host)),
                                    findTool("env"),
                                    "DBUS_SYSTEM_BUS_ADDRESS=unix:path=" + file("bus" + n(host)),
                                    "XDG_RUNTIME_DIR=" + file("run" + n(host))};
    out.insert(out.end(), argv.begin(), argv.end());
    return out;
  }
  // argv as run in the root namespace with no system bus and a runtime dir of its own: no mDNS,
  // and no control socket of a node daemon of this machine is found (none is preempted).
  std::vector<std::string> outside(const std::vector<std::string>& argv) const {
    std::filesystem::create_directories(file("run-outside"));
    std::vector<std::string> out = {findTool("env"),
                                    "DBUS_SYSTEM_BUS_ADDRESS=unix:path=" + file("no-bus"),
                                    "XDG_RUNTIME_DIR=" + file("run-outside")};
    out.insert(out.end(), argv.begin(), argv.end());
    return out;
  }

  // Starts argv in host i (host -1: outside()), stdout and stderr to <log>.out and <log>.err in
  // dir(). The sandbox owns the process; the reference stays valid until the sandbox goes.
  // pipeStdin: its stdin is a pipe (Process::writeStdin), else /dev/null.
  Process& spawn(int host, const std::vector<std::string>& argv, const std::string& log,
                 bool pipeStdin = false) {
    processes_.push_back(std::make_unique<Process>(host < 0 ? outside(argv) : inHost(host, argv),
                                                   file(log + ".out"), file(log + ".err"),
                                                   std::vector<std::string>{}, pipeStdin));
    return *processes_.back();
  }

 private:
  static std::string n(int host) { return std::to_string(host + 1); }

  // Runs a setup tool (argv[0] a name from findTool) with a 10 s bound; its output is appended
  // to setup.log. True on exit status 0.
  bool tool(std::vector<std::string> argv) const {
    argv[0] = findTool(argv[0]);
    return Process(argv, file("setup.log"), file("setup.log")).wait(std::chrono::seconds(10)) == 0;
  }
  std::string capture(std::vector<std::string> argv) const {
    argv[0] = findTool(argv[0]);
    const std::string out = file("capture.out");
    std::filesystem::remove(out);
    Process(argv, out, file("setup.log")).wait(std::chrono::seconds(10));
    return readFile(out);
  }
  // `ip -n NS ARGS...`
  bool ip(const std::string& ns, std::vector<std::string> args) const {
    args.insert(args.begin(), {"ip", "-n", ns});
    return tool(std::move(args));
  }
  bool joinLan(int i) const {
    const std::string& ns = hosts_[size_t(i)];
    const std::string port = "vb" + n(i);
    return ip(lan_, {"link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns}) &&
           ip(lan_, {"link", "set", port, "master", "br0"}) &&
           ip(lan_, {"link", "set", port, "up"}) &&
           ip(ns, {"addr", "add", hostAddress(i) + "/24", "dev", "eth0"}) &&
           ip(ns, {"link", "set", "eth0", "up"}) &&
           ip(ns, {"route", "add", "224.0.0.0/4", "dev", "eth0"});
  }
  void writeConfigs(int i, bool bridge) const {
    std::filesystem::create_directories(file("run" + n(i)));
    std::ofstream(file("bus" + n(i) + ".conf")) << R"(<!DOCTYPE busconfig PUBLIC
 "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=)" << file("bus" + n(i)) << R"(</listen>
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
    std::ofstream(file("avahi" + n(i) + ".conf"))
        << "[server]\nhost-name=" << tag_ << "-host" << n(i) << "\n"
        << (bridge ? "allow-interfaces=eth0\n" : "")
        << "use-ipv4=yes\nuse-ipv6=no\n"
           "ratelimit-interval-usec=1000000\nratelimit-burst=1000\n"
           "[wide-area]\nenable-wide-area=no\n"
           "[publish]\npublish-hinfo=no\npublish-workstation=no\n";
  }

  TempDir dir_;  // first member: removed last
  std::string tag_;
  std::string lan_;                 // the bridge's namespace ("" without one)
  std::vector<std::string> hosts_;  // host namespaces, created so far
  std::vector<std::unique_ptr<Process>> processes_;
};

}  // namespace pl::testing
