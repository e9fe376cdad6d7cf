// `peerlight render` handing its job to this machine's node daemon (issue 4 item 4): real
// `peerlight node` daemons on 127.0.0.1 (ephemeral ports, --no-mdns, control sockets in a
// temporary folder) and `peerlight render --control-socket`. The daemon becomes the Primary:
// it renders on its own node (a worker process) and on the render's --peer nodes, reports state
// primary meanwhile, streams progress, and the command writes an image bitwise identical to a
// local render. A render process that goes away cancels its job; malformed requests on the
// control socket get an error line and the daemon keeps serving. Every process is killed and
// reaped by its guard; every wait has a hard timeout.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <sstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>

#include "tests/integration/daemon_fixture.h"

namespace pl {
namespace {

using testing::Process;
using testing::alive;
using testing::kBinary;
using testing::secondsSince;
using testing::waitUntil;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class RenderJobTest : public testing::DaemonTest {
 protected:
  RenderJobTest() : DaemonTest(17) {}
  // A daemon with one render thread, with (`control`) or without a control socket.
  std::string startDaemon(const std::string& name, bool control) {
    NodeSpec spec;
    spec.controlSocket = control;
    return startNode(name, spec);
  }
  // A render through a's daemon (or as `options` say), no peers of its own.
  std::unique_ptr<Process> startJob(const std::string& size, uint32_t spp, const std::string& tag,
                                    const std::vector<std::string>& options) {
    return startRender(size, spp, {}, tag, options);
  }
};

// The daemon of machine a takes the job: it leases its own node (as the owner: state primary)
// and node b (the render's --peer), both render, and the image is the local one.
TEST_F(RenderJobTest, DaemonBecomesPrimaryAndImageMatchesLocal) {
  std::string a = startDaemon("a", true), b = startDaemon("b", false);
  ASSERT_FALSE(a.empty());
  ASSERT_FALSE(b.empty());
  auto threadsOf = [](pid_t pid) {
    std::error_code ec;
    size_t n = 0;
    for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task",
                                                       ec);
         it != std::filesystem::directory_iterator(); ++it)
      n += 1;
    return n;
  };
  const size_t idleThreads = threadsOf(node("a").pid());
  auto render = startJob("128x128", 192, "job", {"--control-socket", socketOf("a"), "--peer", b});
  ASSERT_TRUE(waitUntil([&] { return node("a").err().find("this node is its Primary") !=
                                     std::string::npos; },
                        30s))
      << node("a").err() << "\nrender:\n" << render->err();
  // The job runs on the daemon's one loop: no thread of its own (the daemon renders nothing;
  // its worker process does).
  waitUntil([&] { return !workerPids("a").empty() || !render->running(); }, 10s);
  if (render->running()) EXPECT_EQ(threadsOf(node("a").pid()), idleThreads);
  std::string during = render->running() ? stateOf(a) : "";
  bool stillRunning = render->running();
  nlohmann::json run = finish(*render, "job");
  ASSERT_TRUE(run.is_object()) << render->out();
  EXPECT_EQ(run["node_daemon"], socketOf("a"));
  if (stillRunning) EXPECT_EQ(during, "primary");
  // This machine's own node, leased in process (no connection to itself).
  const nlohmann::json* self = nodeEntry(run, "this machine");
  const nlohmann::json* other = nodeEntry(run, b);
  ASSERT_NE(self, nullptr) << run.dump();
  ASSERT_NE(other, nullptr) << run.dump();
  EXPECT_GT((*self)["work_units"].get<uint64_t>(), 0u) << self->dump();
  EXPECT_GT((*other)["work_units"].get<uint64_t>(), 0u) << other->dump();
  EXPECT_TRUE(run["devices"].empty()) << "the command itself rendered: " << run.dump();
  EXPECT_NE(node("a").err().find("done"), std::string::npos) << node("a").err();
  EXPECT_FALSE(workerPids("a").empty()) << "the daemon's own devices were not used";
  // Its own devices were leased in process: the daemon never connected to itself (the only
  // authenticated connections are the state probes of `peerlight nodes`).
  {
    std::istringstream log(node("a").err());
    for (std::string line; std::getline(log, line);) {
      if (line.find("authenticated") != std::string::npos)
        EXPECT_NE(line.find("peerlight nodes"), std::string::npos) << line;
    }
  }
  // Offered again once the job ended.
  EXPECT_TRUE(waitUntil([&] { return stateOf(a) == "idle"; }, 5s));
  expectIdenticalToLocal("job", "128x128", 192);
}

// The render process dies mid-job: the daemon cancels the job, ends its lease (the worker
// stops), goes back to idle, and takes the next job.
TEST_F(RenderJobTest, RenderProcessGoneCancelsTheJob) {
  std::string a = startDaemon("a", true);
  ASSERT_FALSE(a.empty());
  auto render = startJob("256x256", 4096, "long", {"--control-socket", socketOf("a")});
  pid_t worker = -1;
  ASSERT_TRUE(waitUntil(
      [&] {
        auto pids = workerPids("a");
        if (!pids.empty()) worker = pids[0];
        return worker > 0;
      },
      30s))
      << node("a").err();
  std::this_thread::sleep_for(300ms);
  ASSERT_TRUE(render->running()) << render->err();
  render->kill();
  Clock::time_point killed = Clock::now();
  ASSERT_TRUE(waitUntil([&] { return node("a").err().find("ended: render cancelled") !=
                                     std::string::npos; },
                        5s))
      << node("a").err();
  double cancelled = secondsSince(killed);
  ASSERT_TRUE(waitUntil([&] { return !alive(worker); }, 5s)) << node("a").err();
  double workerGone = secondsSince(killed);
  std::printf("[ info ] render process killed: job cancelled after %.3f s, worker gone after "
              "%.3f s\n",
              cancelled, workerGone);
  EXPECT_LT(cancelled, 2.0);
  EXPECT_LT(workerGone, 2.5);
  EXPECT_NE(node("a").err().find("the client went away"), std::string::npos) << node("a").err();
  EXPECT_TRUE(waitUntil([&] { return stateOf(a) == "idle"; }, 5s));
  EXPECT_TRUE(node("a").running());

  auto next = startJob("48x48", 8, "next", {"--control-socket", socketOf("a")});
  nlohmann::json run = finish(*next, "next");
  EXPECT_EQ(run["node_daemon"], socketOf("a")) << next->err();
  expectIdenticalToLocal("next", "48x48", 8);
}

// A job handed to a's daemon revokes another Primary's lease on a within 1 s of the command's
// start (the command announces the owner job before it compiles the scene); that Primary
// carries on with b and its image is still the local one.
TEST_F(RenderJobTest, HandedOffJobRevokesRemoteLeases) {
  std::string a = startDaemon("a", true), b = startDaemon("b", false);
  ASSERT_FALSE(a.empty());
  ASSERT_FALSE(b.empty());
  // The other machine's Primary (here: a render that uses no daemon and no local device).
  auto remote = startRender("128x128", 256, {a, b}, "remote", {"--no-local", "--no-daemon"});
  ASSERT_TRUE(waitUntil([&] { return !workerPids("a").empty(); }, 30s)) << node("a").err();
  ASSERT_TRUE(remote->running());
  Clock::time_point start = Clock::now();
  auto owner = startJob("64x64", 32, "owner", {"--control-socket", socketOf("a")});
  const std::string revoked = "ended: revoked: the owner is rendering";
  ASSERT_TRUE(waitUntil([&] { return node("a").err().find(revoked) != std::string::npos; }, 5s))
      << node("a").err();
  double revokedAfter = secondsSince(start);
  std::printf("[ info ] handed-off job: remote lease revoked %.3f s after the command started\n",
              revokedAfter);
  EXPECT_LT(revokedAfter, 1.0);
  nlohmann::json ownerRun = finish(*owner, "owner");
  EXPECT_EQ(ownerRun["node_daemon"], socketOf("a"));
  nlohmann::json run = finish(*remote, "remote");
  const nlohmann::json* entryB = nodeEntry(run, b);
  ASSERT_NE(entryB, nullptr) << run.dump();
  EXPECT_GT((*entryB)["work_units"].get<uint64_t>(), 0u);
  expectIdenticalToLocal("remote", "128x128", 256);
  expectIdenticalToLocal("owner", "64x64", 32);
}

// SIGTERM to the daemon mid-job: the job is cancelled, the command fails naming why, and the
// daemon exits 0 with its worker gone.
TEST_F(RenderJobTest, DaemonShutdownEndsTheJobWithAReason) {
  std::string a = startDaemon("a", true);
  ASSERT_FALSE(a.empty());
  auto render = startJob("256x256", 4096, "cut", {"--control-socket", socketOf("a")});
  pid_t worker = waitForWorker("a", 0, 30s);
  ASSERT_GT(worker, 0) << node("a").err();
  ASSERT_TRUE(render->running()) << render->err();
  node("a").signal(SIGTERM);
  EXPECT_EQ(node("a").wait(10s), 0) << node("a").err();
  EXPECT_EQ(render->wait(10s), 1) << render->err();
  EXPECT_NE(render->err().find("the node daemon is shutting down"), std::string::npos)
      << render->err();
  EXPECT_TRUE(waitUntil([&] { return !alive(worker); }, 3s));
}

// One request on the control socket; returns every line of the reply (until it closes).
std::vector<std::string> controlExchange(const std::string& path, const std::string& request) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  std::vector<std::string> lines;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return lines;
  }
  struct timeval tv {10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string in;
  char buffer[4096];
  ssize_t n;
  while ((n = ::recv(fd, buffer, sizeof(buffer), 0)) > 0) in.append(buffer, size_t(n));
  ::close(fd);
  size_t start = 0;
  for (size_t nl; (nl = in.find('\n', start)) != std::string::npos; start = nl + 1)
    lines.push_back(in.substr(start, nl - start));
  return lines;
}

// Malformed render requests get one error line naming the problem; the daemon keeps serving.
TEST_F(RenderJobTest, MalformedRequestsGetAnErrorAndTheDaemonKeepsServing) {
  std::string a = startDaemon("a", true);
  ASSERT_FALSE(a.empty());
  const std::string params = R"({"width":16,"height":16,"spp":1})";
  struct Case {
    std::string request;
    std::string expect;  // in the last line
  };
  const std::vector<Case> cases = {
      {"render tok1 99999999999999999 " + params + "\n", "payload of"},
      {"render tok2 abc " + params + "\n", "bad payload size"},
      {"render t!k 4 " + params + "\nabcd", "bad token"},
      {"render tok3 4 {not json\nabcd", "not a JSON object"},
      {"render tok4 4 {\"width\":0,\"height\":16,\"spp\":1}\nabcd", "render job"},
      {"render tok5 8 " + params + "\n12345678", "render data"},
      {"render tok6 4 {\"width\":30000,\"height\":30000,\"spp\":1}\nabcd", "film needs"},
      {"hello\n", "bad request"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> lines = controlExchange(socketOf("a"), c.request);
    ASSERT_FALSE(lines.empty()) << "no reply to: " << c.request;
    EXPECT_EQ(lines.back().rfind("error ", 0), 0u) << lines.back();
    EXPECT_NE(lines.back().find(c.expect), std::string::npos)
        << "request: " << c.request << "\nreply: " << lines.back();
    EXPECT_TRUE(node("a").running()) << node("a").err();
  }
  // Data after the payload is refused, and never starts a second job on the connection
  // (the same bytes again, sent once the first job was accepted).
  {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr {};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socketOf("a").c_str(), sizeof(addr.sun_path) - 1);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    struct timeval tv {10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    std::string request = "render tok7 8 " + params + "\n12345678";
    ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
    char reply[9] = {};
    ASSERT_EQ(::recv(fd, reply, 9, MSG_WAITALL), 9);
    EXPECT_EQ(std::string(reply, 9), "accepted\n");
    ::send(fd, "12345678", 8, MSG_NOSIGNAL);
    char rest[4096];
    while (::recv(fd, rest, sizeof(rest), 0) > 0) {
    }
    ::close(fd);
  }
  std::string log = node("a").err();
  size_t jobs = 0;
  for (size_t at = log.find("render job tok7 from"); at != std::string::npos;
       at = log.find("render job tok7 from", at + 1))
    jobs += 1;
  EXPECT_EQ(jobs, 1u) << log;
  // Clients that go away while their payload is being read, or right after it: the daemon
  // carries on (a write finishing as the connection closes once used freed memory).
  const std::string big(100000, 'x');
  for (int i = 0; i < 20; ++i) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr {};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socketOf("a").c_str(), sizeof(addr.sun_path) - 1);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    std::string request = "render tokz" + std::to_string(i) + " " +
                          std::to_string(big.size() - (i % 2)) + " " + params + "\n" + big;
    ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
    ::close(fd);
  }
  auto render = startJob("32x32", 4, "after", {"--control-socket", socketOf("a")});
  nlohmann::json run = finish(*render, "after");
  EXPECT_EQ(run["node_daemon"], socketOf("a")) << render->err();
  EXPECT_TRUE(node("a").running()) << node("a").err();
}

// --no-owner-preempt holds for a job handed to the daemon too: no owner job starts.
TEST_F(RenderJobTest, NoOwnerPreemptIsKeptByTheDaemon) {
  std::string a = startDaemon("a", true);
  ASSERT_FALSE(a.empty());
  auto render = startJob("32x32", 4, "plain",
                         {"--control-socket", socketOf("a"), "--no-owner-preempt"});
  nlohmann::json run = finish(*render, "plain");
  EXPECT_EQ(run["node_daemon"], socketOf("a")) << render->err();
  EXPECT_EQ(node("a").err().find("owner job started"), std::string::npos) << node("a").err();
}

// Another local user (uid 65534, from a forked child that drops root) reaches the control
// socket only when the daemon runs with --control-any-user (the systemd unit's setting).
TEST_F(RenderJobTest, OtherUsersOnlyWithControlAnyUser) {
  if (::getuid() != 0) GTEST_SKIP() << "needs root (to act as another user)";
  // A folder every user can traverse (the test's own temporary folder is 0700).
  char pattern[] = "/tmp/peerlight-anyuser-XXXXXX";
  ASSERT_NE(::mkdtemp(pattern), nullptr);
  const std::string folder = pattern;
  ::chmod(folder.c_str(), 0755);
  auto asOtherUser = [](const std::string& path) -> int {
    pid_t child = ::fork();
    if (child == 0) {
      if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(3);
      int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
      struct sockaddr_un addr {};
      addr.sun_family = AF_UNIX;
      std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
      if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) ::_exit(2);
      struct timeval tv {5, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
      ::send(fd, "owner 0a1b2c\n", 13, MSG_NOSIGNAL);
      char reply[8] = {};
      ssize_t n = ::recv(fd, reply, 3, MSG_WAITALL);
      ::_exit(n == 3 && std::memcmp(reply, "ok\n", 3) == 0 ? 0 : 1);
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  for (bool anyUser : {false, true}) {
    const std::string name = anyUser ? "shared" : "private";
    const std::string path = folder + "/" + name + "/node.sock";
    std::vector<std::string> argv = {kBinary, "node", "--listen", "127.0.0.1:0", "--key-file",
                                     key_, "--threads", "1", "--no-mdns", "--control-socket",
                                     path};
    if (anyUser) argv.push_back("--control-any-user");
    auto daemon = std::make_unique<Process>(argv, dir_.file(name + ".out"),
                                            dir_.file(name + ".err"), env());
    ASSERT_TRUE(daemon->waitForOutput("listening on ", 20s)) << daemon->err();
    ASSERT_TRUE(waitUntil([&] { return ::access(path.c_str(), F_OK) == 0; }, 5s));
    struct stat st {};
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, anyUser ? 0666u : 0600u);
    // Private: the 0700 folder already keeps the other user out (2: connect fails).
    EXPECT_EQ(asOtherUser(path), anyUser ? 0 : 2) << daemon->err();
    if (!anyUser) {
      // And the daemon's own check (SO_PEERCRED), with the folder and socket opened up.
      ::chmod((folder + "/" + name).c_str(), 0755);
      ::chmod(path.c_str(), 0666);
      EXPECT_EQ(asOtherUser(path), 1) << daemon->err();
      EXPECT_TRUE(waitUntil([&] { return daemon->err().find("refused a client of uid 65534") !=
                                         std::string::npos; },
                            5s))
          << daemon->err();
    }
    daemon->kill();
  }
  std::filesystem::remove_all(folder);
}

}  // namespace
}  // namespace pl
