// `peerlight render` handing its job to this machine's node daemon (issue 4 item 4): real
// `peerlight node` daemons on 127.0.0.1 (ephemeral ports, --no-mdns, control sockets in a
// temporary folder) and `peerlight render --control-socket`. The daemon becomes the Primary:
// it renders on its own node (a worker process) and on the render's --peer nodes, reports state
// primary meanwhile, streams progress, and the command writes an image bitwise identical to a
// local render. A render process that goes away cancels its job. The control socket itself
// (Cap'n Proto, transport/control.capnp) is spoken from this process too: bad requests get a
// typed Outcome, bad data is refused at start(), garbage and malformed frames close only that
// connection with the reason in Cap'n Proto's Abort (and one log line), the upload bound is
// reserved and given back, and dropping an OwnerJob or RenderJob capability ends that job while
// the connection stays open. Every process is killed and reaped by its guard; every wait has a
// hard timeout.

#include <capnp/rpc.capnp.h>
#include <capnp/serialize.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>

#include "core/render/image_io.h"
#include "core/scene/compile.h"
#include "core/scene/render_data.h"
#include "core/util/system.h"
#include "tests/integration/daemon_fixture.h"
#include "tests/transport/loop_test_util.h"
#include "transport/chunk_codec.h"
#include "transport/control_client.h"
#include "transport/control_film.h"
#include "transport/uv_kj_loop.h"

namespace pl {
namespace {

using testing::Process;
using testing::alive;
using testing::kBinary;
using testing::secondsSince;
using testing::waitFor;
using testing::waitUntil;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class RenderJobTest : public testing::DaemonTest {
 protected:
  RenderJobTest() : DaemonTest(17) {}
  // A daemon with one render thread, with (`control`) or without a control socket.
  std::string startDaemon(const std::string& name, bool control,
                          std::vector<std::string> extraArgs = {}) {
    NodeSpec spec;
    spec.controlSocket = control;
    spec.extraArgs = std::move(extraArgs);
    std::string address = startNode(name, spec);
    // The daemon prints its address before it opens the control socket.
    if (control && !address.empty()) {
      EXPECT_TRUE(waitUntil([&] { return controlSocketAnswers(socketOf(name)); }, 5s));
    }
    return address;
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
  if (render->running()) {
    EXPECT_EQ(threadsOf(node("a").pid()), idleThreads);
  }
  std::string during = render->running() ? stateOf(a) : "";
  bool stillRunning = render->running();
  nlohmann::json run = finish(*render, "job");
  ASSERT_TRUE(run.is_object()) << render->out();
  EXPECT_EQ(run["node_daemon"], socketOf("a"));
  if (stillRunning) {
    EXPECT_EQ(during, "primary");
  }
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
      if (line.find("authenticated") != std::string::npos) {
        EXPECT_NE(line.find("peerlight nodes"), std::string::npos) << line;
      }
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

// --- The control socket spoken from this process (transport/control.capnp) ------------------

// A plain Unix socket to `path` (5 s send timeout); -1 when it cannot connect.
int rawConnect(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  struct timeval tv {5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// What the peer sends until it closes the connection; nullopt when it is still open after
// `timeout`.
std::optional<std::string> readUntilClosed(int fd, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::string in;
  char buffer[4096];
  while (Clock::now() < deadline) {
    struct pollfd p {fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) return in;
    in.append(buffer, size_t(n));
  }
  return std::nullopt;
}

// The reason in the Cap'n Proto Abort message that `bytes` holds ("" when there is none).
std::string abortReason(const std::string& bytes) {
  kj::Array<capnp::word> words = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), bytes.data(), words.size() * sizeof(capnp::word));
  std::string reason;
  kj::runCatchingExceptions([&] {
    capnp::FlatArrayMessageReader reader(words);
    auto message = reader.getRoot<capnp::rpc::Message>();
    if (message.isAbort()) reason = message.getAbort().getReason().cStr();
  });
  return reason;
}

// The loop's clock (uv_now, and the KJ timer on it) stands still while the test blocks without
// running the loop (waitUntil, `peerlight nodes`); one turn brings it up to date, so that the
// next waitFor() deadline counts from now rather than from before the pause.
void resume(UvKjLoop& loop) { loop.waitScope().poll(); }

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) n += 1;
  return n;
}

// NodeControl.render with these fields, answered within 5 s.
capnp::Response<ctl::NodeControl::RenderResults> requestJob(UvKjLoop& loop, ControlConnection& c,
                                                            const std::string& token,
                                                            const RenderJobParams& params,
                                                            uint64_t dataBytes,
                                                            ctl::ProgressListener::Client listener =
                                                                nullptr) {
  auto request = c.control().renderRequest();
  auto r = request.initRequest();
  r.setToken(token);
  toControl(params, r.initParams());
  r.setDataBytes(dataBytes);
  request.setListener(kj::mv(listener));
  return waitFor(loop, request.send());
}

capnp::Response<ctl::NodeControl::OwnerJobResults> requestOwnerJob(UvKjLoop& loop,
                                                                   ControlConnection& c,
                                                                   const std::string& token) {
  auto request = c.control().ownerJobRequest();
  request.setToken(token);
  return waitFor(loop, request.send());
}

// A session's listener that counts the passes of each generation (films are not asked for).
struct SessionEvents {
  std::map<uint64_t, uint32_t> lastSpp;  // per generation, the last pass's samples
};
class SessionListener final : public ctl::SessionListener::Server {
 public:
  explicit SessionListener(std::shared_ptr<SessionEvents> e) : e_(std::move(e)) {}

 protected:
  kj::Promise<void> pass(PassContext context) override {
    e_->lastSpp[context.getParams().getGeneration()] = context.getParams().getSpp();
    return kj::READY_NOW;
  }

 private:
  std::shared_ptr<SessionEvents> e_;
};

capnp::Response<ctl::NodeControl::SessionResults> requestSession(
    UvKjLoop& loop, ControlConnection& c, const std::string& token,
    const RenderJobParams& params, uint64_t dataBytes, std::shared_ptr<SessionEvents> events) {
  auto request = c.control().sessionRequest();
  auto r = request.initRequest();
  r.setToken(token);
  toControl(params, r.initParams());
  r.setDataBytes(dataBytes);
  request.setListener(kj::heap<SessionListener>(std::move(events)));
  return waitFor(loop, request.send());
}

capnp::Data::Reader nameOf(const Hash128& h) {
  return capnp::Data::Reader(reinterpret_cast<const uint8_t*>(&h), sizeof h);
}

void write(UvKjLoop& loop, ctl::RenderJob::Client& job, const std::string& bytes) {
  auto request = job.writeRequest();
  request.setChunk(kj::arrayPtr(reinterpret_cast<const kj::byte*>(bytes.data()), bytes.size()));
  waitFor(loop, request.send());
}

// The Cornell box compiled at size x size with every pass, in its encoded form (what
// `peerlight render` hands the daemon).
std::vector<uint8_t> encodedCornellWithPasses(uint32_t size) {
  CompileOptions options;
  options.width = options.height = size;
  options.passes = kernel::kAllPasses;
  Result<RenderData> data = loadAndCompile(testing::kCornellScene, options);
  EXPECT_TRUE(data.ok()) << data.error().message;
  if (!data.ok()) return {};
  ChunkStore chunks;
  return serializeEncodedScene(encodeRenderData(*data, chunks), chunks);
}

// Writes all of `bytes` to the job, in slices of kControlChunkBytes.
void writeAll(UvKjLoop& loop, ctl::RenderJob::Client& job, const std::vector<uint8_t>& bytes) {
  for (size_t at = 0; at < bytes.size(); at += kControlChunkBytes) {
    const size_t n = std::min<size_t>(kControlChunkBytes, bytes.size() - at);
    write(loop, job, std::string(reinterpret_cast<const char*>(bytes.data()) + at, n));
  }
}

RenderJobParams frame(uint32_t width, uint32_t height, uint32_t spp) {
  RenderJobParams p;
  p.width = width;
  p.height = height;
  p.spp = spp;
  p.noMdns = true;
  p.primaryName = "render-job-test";
  return p;
}

// Requests that the daemon refuses get an Outcome (not prose to match) and a message naming the
// field; calls out of order and methods it does not know fail only that call; bad data is
// refused at start() and never starts a job; the daemon keeps serving throughout.
TEST_F(RenderJobTest, BadRequestsGetATypedOutcomeAndTheDaemonKeepsServing) {
  std::string a = startDaemon("a", true);
  ASSERT_FALSE(a.empty());
  {
    UvKjLoop loop;
    auto opened = ControlConnection::open(loop, socketOf("a"));
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    ControlConnection& c = **opened;
    const RenderJobParams good = frame(16, 16, 1);
    auto with = [&](auto change) {
      RenderJobParams p = good;
      change(p);
      return p;
    };
    struct Case {
      std::string name, token;
      RenderJobParams params;
      uint64_t bytes;
      ctl::Outcome outcome;
      std::string expect;  // in the message
    };
    const std::vector<Case> cases = {
        {"bad token", "t!k", good, 8, ctl::Outcome::BAD_PARAMS, "bad token"},
        {"empty token", "", good, 8, ctl::Outcome::BAD_PARAMS, "bad token"},
        {"token too long", std::string(65, 'a'), good, 8, ctl::Outcome::BAD_PARAMS, "bad token"},
        {"width 0", "tok1", with([](RenderJobParams& p) { p.width = 0; }), 8,
         ctl::Outcome::BAD_PARAMS, "render job"},
        {"spp 0", "tok2", with([](RenderJobParams& p) { p.spp = 0; }), 8,
         ctl::Outcome::BAD_PARAMS, "render job"},
        {"huge film", "tok3",
         with([](RenderJobParams& p) { p.width = p.height = 30000; }), 8,
         ctl::Outcome::TOO_LARGE, "film needs"},
        {"local only and no local", "tok4",
         with([](RenderJobParams& p) { p.localOnly = p.noLocal = true; }), 8,
         ctl::Outcome::BAD_PARAMS, "localOnly and noLocal"},
        {"too many peers", "tok5",
         with([](RenderJobParams& p) { p.peers.assign(1025, "127.0.0.1:1"); }), 8,
         ctl::Outcome::BAD_PARAMS, "peers"},
        {"no data", "tok6", good, 0, ctl::Outcome::BAD_PARAMS, "no render data"},
        {"too much data", "tok7", good, ~uint64_t(0), ctl::Outcome::TOO_LARGE,
         "this node takes 1 to"},
    };
    for (const Case& t : cases) {
      auto reply = requestJob(loop, c, t.token, t.params, t.bytes);
      EXPECT_EQ(reply.getOutcome(), t.outcome) << t.name << ": " << reply.getMessage().cStr();
      EXPECT_NE(std::string(reply.getMessage().cStr()).find(t.expect), std::string::npos)
          << t.name << ": " << reply.getMessage().cStr();
    }

    // Owner jobs: a bad token; one per connection.
    EXPECT_EQ(requestOwnerJob(loop, c, "t!k").getOutcome(), ctl::Outcome::BAD_PARAMS);
    auto owner = requestOwnerJob(loop, c, "0a1b2c3d");
    EXPECT_EQ(owner.getOutcome(), ctl::Outcome::OK) << owner.getMessage().cStr();
    EXPECT_EQ(requestOwnerJob(loop, c, "0a1b2c3e").getOutcome(), ctl::Outcome::BUSY);

    // A method this daemon does not know (a newer client's): that call fails, the connection
    // serves on.
    auto unknown = c.control().typelessRequest(capnp::typeId<ctl::NodeControl>(), 99, nullptr);
    EXPECT_NE(testing::exceptionFrom([&] { waitFor(loop, unknown.send()); }), nullptr);
    EXPECT_EQ(requestOwnerJob(loop, c, "t!k").getOutcome(), ctl::Outcome::BAD_PARAMS);

    // One render job per connection; data that is no RenderData is refused at start().
    auto first = requestJob(loop, c, "tok8", good, 8);
    ASSERT_EQ(first.getOutcome(), ctl::Outcome::OK) << first.getMessage().cStr();
    auto second = requestJob(loop, c, "tok9", good, 8);
    EXPECT_EQ(second.getOutcome(), ctl::Outcome::BUSY);
    EXPECT_NE(std::string(second.getMessage().cStr()).find("one per connection"),
              std::string::npos);
    ctl::RenderJob::Client junk = first.getJob();
    // Calls out of order fail that call only.
    EXPECT_NE(testing::exceptionFrom([&] { waitFor(loop, junk.resultRequest().send()); }),
              nullptr);
    EXPECT_NE(testing::exceptionFrom([&] { waitFor(loop, junk.readFilmRequest().send()); }),
              nullptr);
    write(loop, junk, "12345678");
    auto refused = waitFor(loop, junk.startRequest().send());
    EXPECT_EQ(refused.getOutcome(), ctl::Outcome::BAD_DATA);
    EXPECT_NE(std::string(refused.getMessage().cStr()).find("render data"), std::string::npos)
        << refused.getMessage().cStr();
    EXPECT_NE(testing::exceptionFrom([&] { waitFor(loop, junk.resultRequest().send()); }),
              nullptr);

    // Data beyond what was declared, or short of it: refused at start().
    for (const auto& [declared, sent, expect] :
         std::vector<std::tuple<uint64_t, std::string, std::string>>{
             {4, "12345678", "more than the 4 bytes declared"},
             {16, "12345678", "8 of the 16 bytes declared arrived"}}) {
      auto other = ControlConnection::open(loop, socketOf("a"));
      ASSERT_TRUE(other.ok());
      auto reply = requestJob(loop, **other, "tokx", good, declared);
      ASSERT_EQ(reply.getOutcome(), ctl::Outcome::OK);
      ctl::RenderJob::Client job = reply.getJob();
      write(loop, job, sent);
      auto answer = waitFor(loop, job.startRequest().send());
      EXPECT_EQ(answer.getOutcome(), ctl::Outcome::BAD_DATA);
      EXPECT_NE(std::string(answer.getMessage().cStr()).find(expect), std::string::npos)
          << answer.getMessage().cStr();
      EXPECT_NE(testing::exceptionFrom([&] { waitFor(loop, job.startRequest().send()); }),
                nullptr)
          << "start() twice";
    }

    // A frame whose film fits as colour (3.2 GiB) but not with passes (10.7 GiB): admitted,
    // then refused at start(), once the data says that it asks for passes.
    {
      const std::vector<uint8_t> bytes = encodedCornellWithPasses(12000);
      ASSERT_FALSE(bytes.empty());
      auto other = ControlConnection::open(loop, socketOf("a"));
      ASSERT_TRUE(other.ok());
      auto reply = requestJob(loop, **other, "tokp", frame(12000, 12000, 1), bytes.size());
      ASSERT_EQ(reply.getOutcome(), ctl::Outcome::OK) << reply.getMessage().cStr();
      ctl::RenderJob::Client job = reply.getJob();
      writeAll(loop, job, bytes);
      auto answer = waitFor(loop, job.startRequest().send());
      EXPECT_EQ(answer.getOutcome(), ctl::Outcome::TOO_LARGE) << answer.getMessage().cStr();
      EXPECT_NE(std::string(answer.getMessage().cStr()).find("10 values a pixel"),
                std::string::npos)
          << answer.getMessage().cStr();
    }
  }
  const std::string log = node("a").err();
  EXPECT_EQ(log.find("this node is its Primary"), std::string::npos) << log;
  EXPECT_GE(count(log, "refused ("), 15u) << log;  // each refusal said once, with its outcome
  EXPECT_TRUE(node("a").running()) << log;
  auto render = startJob("32x32", 4, "after", {"--control-socket", socketOf("a")});
  nlohmann::json run = finish(*render, "after");
  EXPECT_EQ(run["node_daemon"], socketOf("a")) << render->err();
  expectIdenticalToLocal("after", "32x32", 4);
}

// A time-limited render handed to the daemon (--time-limit): the daemon's session stops at the
// last complete pass after the limit (the Scheduler's deadline), hands over the film with its
// samples per pixel, and the image is bitwise a local render of exactly that many.
TEST_F(RenderJobTest, ATimeLimitedJobStopsAtACompletePassBitwiseThatSpp) {
  std::string a = startDaemon("a", true);
  ASSERT_FALSE(a.empty());
  auto render = startJob("64x64", 1u << 20, "limited",
                         {"--control-socket", socketOf("a"), "--time-limit", "1"});
  nlohmann::json run = finish(*render, "limited");
  ASSERT_TRUE(run.is_object()) << render->out();
  EXPECT_EQ(run["node_daemon"], socketOf("a")) << render->err();
  const uint32_t reached = run["spp"].get<uint32_t>();
  EXPECT_GE(reached, 1u);
  EXPECT_LT(reached, 1u << 20);
  EXPECT_EQ(reached & (reached - 1), 0u) << "a pass ends at a power of two: " << reached;
  expectIdenticalToLocal("limited", "64x64", reached);
}

// Render until clean (--noise-threshold) handed to the daemon: each pixel's sample count comes
// back with the film (after the sums in readFilm's bytes), and the image is bitwise the one a
// render in one process gives, though most tiles stopped early.
TEST_F(RenderJobTest, RenderUntilCleanThroughTheDaemonIsTheImageOfOneProcess) {
  std::string a = startDaemon("a", true);
  ASSERT_FALSE(a.empty());
  auto render = startJob("96x96", 256, "clean",
                         {"--control-socket", socketOf("a"), "--noise-threshold", "0.15"});
  nlohmann::json run = finish(*render, "clean");
  ASSERT_TRUE(run.is_object()) << render->out();
  EXPECT_EQ(run["node_daemon"], socketOf("a")) << render->err();
  EXPECT_GT(run["tiles_retired"].get<uint64_t>(), 0u) << run.dump();
  EXPECT_LT(run["mean_spp"].get<double>(), 256.0) << run.dump();
  EXPECT_GE(run["mean_spp"].get<double>(), 8.0) << run.dump();
  expectIdenticalToLocal("clean", "96x96", 256, {"--noise-threshold", "0.15"});
}

// A render border (--region X,Y,W,H) handed to the daemon: its pixels are bitwise those of a
// whole render, and every other pixel is black. With --crop (in one process) the file holds the
// region alone, the same floats again.
TEST_F(RenderJobTest, ARegionRendersItsPixelsBitwiseAndNothingElse) {
  std::string a = startDaemon("a", true);
  ASSERT_FALSE(a.empty());
  auto render = startJob("64x48", 8, "region",
                         {"--control-socket", socketOf("a"), "--region", "11,7,30,20"});
  nlohmann::json run = finish(*render, "region");
  ASSERT_TRUE(run.is_object()) << render->out();
  EXPECT_EQ(run["node_daemon"], socketOf("a")) << render->err();
  Process cropped(renderArgv("64x48", 8, {}, dir_.file("cropped.exr"),
                             {"--local-only", "--no-daemon", "--region", "11,7,30,20", "--crop"}),
                  dir_.file("cropped.out"), dir_.file("cropped.err"), env());
  ASSERT_EQ(cropped.wait(std::chrono::seconds(120)), 0) << cropped.err();
  Process whole(renderArgv("64x48", 8, {}, dir_.file("whole.exr"), {"--local-only", "--no-daemon"}),
                dir_.file("whole.out"), dir_.file("whole.err"), env());
  ASSERT_EQ(whole.wait(std::chrono::seconds(120)), 0) << whole.err();

  Result<ImageRgb> got = readExr(dir_.file("region.exr"));
  Result<ImageRgb> crop = readExr(dir_.file("cropped.exr"));
  Result<ImageRgb> all = readExr(dir_.file("whole.exr"));
  ASSERT_TRUE(got.ok() && crop.ok() && all.ok());
  ASSERT_EQ(got->width, 64u);
  ASSERT_EQ(got->height, 48u);
  ASSERT_EQ(crop->width, 30u);
  ASSERT_EQ(crop->height, 20u);
  size_t wrongInside = 0, wrongCrop = 0, litOutside = 0;
  for (uint32_t y = 0; y < 48; ++y) {
    for (uint32_t x = 0; x < 64; ++x) {
      const bool inside = x >= 11 && x < 41 && y >= 7 && y < 27;
      for (int c = 0; c < 3; ++c) {
        const float v = got->rgb[(size_t(y) * 64 + x) * 3 + c];
        const float w = all->rgb[(size_t(y) * 64 + x) * 3 + c];
        if (!inside) {
          litOutside += v != 0.0f;
          continue;
        }
        wrongInside += std::memcmp(&v, &w, sizeof v) != 0;
        const float k = crop->rgb[(size_t(y - 7) * 30 + (x - 11)) * 3 + c];
        wrongCrop += std::memcmp(&k, &w, sizeof k) != 0;
      }
    }
  }
  EXPECT_EQ(wrongInside, 0u) << "region pixels that differ from the whole render's";
  EXPECT_EQ(wrongCrop, 0u) << "cropped pixels that differ from the whole render's";
  EXPECT_EQ(litOutside, 0u) << "pixels outside the region that were rendered";
  // A region outside the image is a usage error.
  Process outside(renderArgv("64x48", 8, {}, dir_.file("outside.exr"),
                             {"--local-only", "--no-daemon", "--region", "40,0,30,10"}),
                  dir_.file("outside.out"), dir_.file("outside.err"), env());
  EXPECT_EQ(outside.wait(std::chrono::seconds(60)), 2);
  EXPECT_NE(outside.err().find("outside the 64x48 image"), std::string::npos) << outside.err();
}

// The daemon's one memory budget (--memory-budget): a job whose payload and films do not fit is
// answered busy, before its data travels (as colour) or at start() (with its passes, once the
// data says so); the daemon keeps serving, and a job that fits renders the local image.
TEST_F(RenderJobTest, JobsBeyondTheMemoryBudgetAreBusyAndTheDaemonServesOn) {
  // 64 MiB, of which the chunk cache holds a quarter: 48 MiB for jobs.
  std::string a = startDaemon("a", true, {"--memory-budget", "64"});
  ASSERT_FALSE(a.empty());
  {
    UvKjLoop loop;
    auto opened = ControlConnection::open(loop, socketOf("a"));
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    // 1024x1024: films of 2 x 24 MiB as colour, with 1 MiB of data: beyond 48 MiB.
    auto big = requestJob(loop, **opened, "bud1", frame(1024, 1024, 1), 1 << 20);
    EXPECT_EQ(big.getOutcome(), ctl::Outcome::BUSY) << big.getMessage().cStr();
    EXPECT_NE(std::string(big.getMessage().cStr()).find("memory budget of 64 MiB"),
              std::string::npos)
        << big.getMessage().cStr();

    // 640x640: 2 x 9.4 MiB as colour, admitted; with passes 2 x 31 MiB: busy at start().
    const std::vector<uint8_t> bytes = encodedCornellWithPasses(640);
    ASSERT_FALSE(bytes.empty());
    auto other = ControlConnection::open(loop, socketOf("a"));
    ASSERT_TRUE(other.ok());
    auto reply = requestJob(loop, **other, "bud2", frame(640, 640, 1), bytes.size());
    ASSERT_EQ(reply.getOutcome(), ctl::Outcome::OK) << reply.getMessage().cStr();
    ctl::RenderJob::Client job = reply.getJob();
    writeAll(loop, job, bytes);
    auto answer = waitFor(loop, job.startRequest().send());
    EXPECT_EQ(answer.getOutcome(), ctl::Outcome::BUSY) << answer.getMessage().cStr();
    EXPECT_NE(std::string(answer.getMessage().cStr()).find("memory budget"), std::string::npos)
        << answer.getMessage().cStr();
  }
  const std::string log = node("a").err();
  EXPECT_GE(count(log, "memory budget"), 2u) << log;
  EXPECT_TRUE(node("a").running()) << log;
  auto render = startJob("32x32", 4, "fits", {"--control-socket", socketOf("a")});
  nlohmann::json run = finish(*render, "fits");
  EXPECT_EQ(run["node_daemon"], socketOf("a")) << render->err();
  expectIdenticalToLocal("fits", "32x32", 4);
  // Two jobs one after the other that each need more than half of what is left (films of
  // 2 x 18.5 MiB): the first gave its reservation back, or the second would be refused (and
  // rendered in process instead).
  for (const char* tag : {"big1", "big2"}) {
    auto big = startJob("900x900", 1, tag, {"--control-socket", socketOf("a")});
    nlohmann::json bigRun = finish(*big, tag);
    EXPECT_EQ(bigRun["node_daemon"], socketOf("a")) << big->err();
  }
}

// Bytes that are no Cap'n Proto message, a frame beyond the size limit (refused from its header,
// before anything is allocated) and a malformed message: each closes only its own connection,
// with the reason in the Abort message the client receives and once in the daemon's log.
TEST_F(RenderJobTest, GarbageClosesOnlyThatConnectionAndSaysWhy) {
  std::string a = startDaemon("a", true);
  ASSERT_FALSE(a.empty());
  auto words = [](std::vector<uint32_t> values) {
    return std::string(reinterpret_cast<const char*>(values.data()), values.size() * 4);
  };
  struct Case {
    std::string name, bytes, reason;
  };
  const std::vector<Case> cases = {
      // 8 bytes: Cap'n Proto reads a frame's first word before it can judge it, and a client
      // whose bytes the daemon leaves unread may see the connection reset before the Abort.
      {"text", "garbage\n", "segments"},
      // One segment of 2^27 words (1 GiB), of which nothing follows.
      {"oversized frame", words({0, 1u << 27}), "too large"},
      // One segment of one word: a root struct pointer far outside it.
      {"out-of-bounds root", words({0, 1, 1000u << 2, 1}), "out-of-bounds"},
  };
  // Meanwhile, a client with an owner job on another connection keeps it.
  UvKjLoop loop;
  auto held = ControlConnection::open(loop, socketOf("a"));
  ASSERT_TRUE(held.ok());
  auto owner = requestOwnerJob(loop, **held, "4e1d");
  ASSERT_EQ(owner.getOutcome(), ctl::Outcome::OK);
  for (const Case& t : cases) {
    int fd = rawConnect(socketOf("a"));
    ASSERT_GE(fd, 0);
    ::send(fd, t.bytes.data(), t.bytes.size(), MSG_NOSIGNAL);
    std::optional<std::string> reply = readUntilClosed(fd, 5s);
    ::close(fd);
    ASSERT_TRUE(reply.has_value()) << t.name << ": the daemon kept the connection open";
    EXPECT_NE(abortReason(*reply).find(t.reason), std::string::npos)
        << t.name << ": abort reason \"" << abortReason(*reply) << "\"";
  }
  // A client that connects and leaves at once is normal life: no log line.
  ::close(rawConnect(socketOf("a")));
  std::string log;
  EXPECT_TRUE(waitUntil(
      [&] {
        log = node("a").err();
        return count(log, "control socket: closing the connection of") >= cases.size();
      },
      5s))
      << log;
  std::this_thread::sleep_for(200ms);
  log = node("a").err();
  EXPECT_EQ(count(log, "control socket: closing the connection of"), cases.size()) << log;
  EXPECT_NE(log.find("too large"), std::string::npos) << log;
  // The owner job on the other connection is still held, and the daemon still serves.
  EXPECT_EQ(stateOf(a), "primary");
  resume(loop);
  EXPECT_EQ(requestOwnerJob(loop, **held, "t!k").getOutcome(), ctl::Outcome::BAD_PARAMS);
  EXPECT_TRUE(node("a").running()) << log;
}

// The upload bound (half the daemon's memory, all clients together) is reserved from what a
// request declares, before any data travels, and given back when the job is dropped or its
// connection closes mid-upload.
TEST_F(RenderJobTest, UploadsAreBoundedAndGivenBack) {
  const uint64_t memory = physicalMemoryBytes();
  const uint64_t bound = memory == 0 ? uint64_t(1) << 30 : memory / 2;  // as node_command.cpp
  // A memory budget that takes two such uploads: this is the upload bound's test.
  std::string a = startDaemon("a", true, {"--memory-budget", std::to_string(bound >> 19)});
  ASSERT_FALSE(a.empty());
  const RenderJobParams good = frame(16, 16, 1);
  UvKjLoop loop;
  auto c1 = ControlConnection::open(loop, socketOf("a"));
  auto c2 = ControlConnection::open(loop, socketOf("a"));
  ASSERT_TRUE(c1.ok() && c2.ok());
  {
    auto whole = requestJob(loop, **c1, "upA", good, bound);
    ASSERT_EQ(whole.getOutcome(), ctl::Outcome::OK) << whole.getMessage().cStr();
    auto more = requestJob(loop, **c2, "upB", good, 8);
    EXPECT_EQ(more.getOutcome(), ctl::Outcome::BUSY);
    EXPECT_NE(std::string(more.getMessage().cStr()).find("uploading"), std::string::npos)
        << more.getMessage().cStr();
  }  // the job (and its reservation) dropped
  // A round trip on c1: the daemon has read the release before it answers.
  EXPECT_EQ(requestOwnerJob(loop, **c1, "t!k").getOutcome(), ctl::Outcome::BAD_PARAMS);
  auto now = requestJob(loop, **c2, "upC", good, 8);
  EXPECT_EQ(now.getOutcome(), ctl::Outcome::OK) << now.getMessage().cStr();

  // A client that closes its connection mid-upload.
  {
    auto c3 = ControlConnection::open(loop, socketOf("a"));
    ASSERT_TRUE(c3.ok());
    auto whole = requestJob(loop, **c3, "upD", good, bound - 8);
    ASSERT_EQ(whole.getOutcome(), ctl::Outcome::OK) << whole.getMessage().cStr();
    ctl::RenderJob::Client job = whole.getJob();
    write(loop, job, std::string(1 << 20, 'x'));
    auto blocked = ControlConnection::open(loop, socketOf("a"));
    ASSERT_TRUE(blocked.ok());
    EXPECT_EQ(requestJob(loop, **blocked, "upE", good, 16).getOutcome(), ctl::Outcome::BUSY);
  }
  bool given = false;
  for (auto deadline = Clock::now() + 5s; !given && Clock::now() < deadline;) {
    auto c4 = ControlConnection::open(loop, socketOf("a"));
    ASSERT_TRUE(c4.ok());
    given = requestJob(loop, **c4, "upF", good, 16).getOutcome() == ctl::Outcome::OK;
  }
  EXPECT_TRUE(given) << "the closed connection's reservation was not given back\n"
                     << node("a").err();
  EXPECT_TRUE(node("a").running());
}

// Dropping the OwnerJob capability ends the owner job and dropping the RenderJob capability
// cancels a running job (its lease and worker go), while the connection stays open and serves
// on. Progress arrives at the client's listener meanwhile, with the job's typed statistics.
TEST_F(RenderJobTest, DroppingTheCapabilitiesEndsTheJobs) {
  std::string a = startDaemon("a", true);
  ASSERT_FALSE(a.empty());
  UvKjLoop loop;
  auto opened = ControlConnection::open(loop, socketOf("a"));
  ASSERT_TRUE(opened.ok());
  ControlConnection& c = **opened;
  {
    auto owner = requestOwnerJob(loop, c, "0a1b2c3d");
    ASSERT_EQ(owner.getOutcome(), ctl::Outcome::OK);
    EXPECT_EQ(stateOf(a), "primary");
    resume(loop);
  }
  EXPECT_EQ(requestOwnerJob(loop, c, "t!k").getOutcome(), ctl::Outcome::BAD_PARAMS);
  EXPECT_GE(waitForState(a, "idle", Clock::now(), 2s), 0) << node("a").err();
  resume(loop);

  CompileOptions options;
  options.width = options.height = 256;
  Result<RenderData> data = loadAndCompile(testing::kCornellScene, options);
  ASSERT_TRUE(data.ok()) << data.error().message;
  // What `peerlight render` sends: the scene's encoded form.
  ChunkStore chunks;
  std::vector<uint8_t> bytes = serializeEncodedScene(encodeRenderData(*data, chunks), chunks);

  // A listener that counts the progress calls and keeps the last total.
  struct Progress {
    size_t calls = 0;
    uint64_t total = 0;
    uint32_t nodes = 0;
  };
  auto progress = std::make_shared<Progress>();
  class Listener final : public ctl::ProgressListener::Server {
   public:
    explicit Listener(std::shared_ptr<Progress> p) : p_(std::move(p)) {}

   protected:
    kj::Promise<void> progress(ProgressContext context) override {
      p_->calls += 1;
      p_->total = context.getParams().getSamplesTotal();
      p_->nodes = context.getParams().getStats().getNodes().size();
      return kj::READY_NOW;
    }

   private:
    std::shared_ptr<Progress> p_;
  };
  {
    auto reply = requestJob(loop, c, "d40bca11", frame(256, 256, 4096), bytes.size(),
                            kj::heap<Listener>(progress));
    ASSERT_EQ(reply.getOutcome(), ctl::Outcome::OK) << reply.getMessage().cStr();
    ctl::RenderJob::Client job = reply.getJob();
    writeAll(loop, job, bytes);
    auto started = waitFor(loop, job.startRequest().send());
    ASSERT_EQ(started.getOutcome(), ctl::Outcome::OK) << started.getMessage().cStr();
    // Wait (running the loop, so that progress calls are answered) for the worker and a
    // progress call.
    pid_t worker = -1;
    for (auto deadline = Clock::now() + 30s; Clock::now() < deadline;) {
      waitFor(loop, loop.timer().afterDelay(50 * kj::MILLISECONDS));
      auto pids = workerPids("a");
      if (!pids.empty()) worker = pids[0];
      if (worker > 0 && progress->calls > 0) break;
    }
    ASSERT_GT(worker, 0) << node("a").err();
    ASSERT_GT(progress->calls, 0u) << node("a").err();
    EXPECT_EQ(progress->total, uint64_t(256) * 256 * 4096);
    EXPECT_EQ(progress->nodes, 1u);  // this machine's node
    EXPECT_EQ(node("a").err().find("ended: render cancelled"), std::string::npos);
  }  // the job dropped, the connection open
  const Clock::time_point dropped = Clock::now();
  resume(loop);
  EXPECT_EQ(requestOwnerJob(loop, c, "t!k").getOutcome(), ctl::Outcome::BAD_PARAMS);
  EXPECT_TRUE(waitUntil(
      [&] {
        return node("a").err().find("ended: render cancelled: the client went away") !=
               std::string::npos;
      },
      5s))
      << node("a").err();
  std::printf("[ info ] RenderJob dropped: job cancelled after %.3f s\n", secondsSince(dropped));
  EXPECT_GE(waitForState(a, "idle", Clock::now(), 5s), 0) << node("a").err();
  // The connection still serves: a new owner job on it.
  resume(loop);
  EXPECT_EQ(requestOwnerJob(loop, c, "0a1b2c3f").getOutcome(), ctl::Outcome::OK);
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
// socket only when it is in the daemon's --control-group (the systemd unit's setting: group
// peerlight); the daemon checks the client's groups even where the file's mode lets it in.
TEST_F(RenderJobTest, OtherUsersOnlyInTheControlGroup) {
  if (::getuid() != 0) GTEST_SKIP() << "needs root (to act as another user)";
  // A folder every user can traverse (the test's own temporary folder is 0700).
  char pattern[] = "/tmp/peerlight-group-XXXXXX";
  ASSERT_NE(::mkdtemp(pattern), nullptr);
  const std::string folder = pattern;
  ::chmod(folder.c_str(), 0755);
  // The group: nogroup (65534), which the daemon (root) may give the socket to.
  constexpr gid_t kGroup = 65534;
  struct group* g = ::getgrgid(kGroup);
  if (g == nullptr) GTEST_SKIP() << "no group 65534 on this machine";
  const std::string groupName = g->gr_name;
  // 2: cannot even connect; 1: connected, but no owner job; 0: an owner job. `supplementary`:
  // the child's only supplementary group (0: none).
  auto asOtherUser = [](const std::string& path, gid_t gid, gid_t supplementary = 0) -> int {
    pid_t child = ::fork();
    if (child == 0) {
      const gid_t groups[1] = {supplementary};
      if (::setgroups(supplementary != 0 ? 1 : 0, groups) != 0 || ::setgid(gid) != 0 ||
          ::setuid(65534) != 0)
        ::_exit(3);
      if (!controlSocketAnswers(path)) ::_exit(2);
      UvKjLoop loop;
      Result<int> fd = announceOwnerJob(loop, path, "0a1b2c", 5000);
      ::_exit(fd.ok() ? 0 : 1);
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  for (bool shared : {false, true}) {
    const std::string name = shared ? "shared" : "private";
    const std::string path = folder + "/" + name + "/node.sock";
    std::vector<std::string> argv = {kBinary, "node", "--listen", "127.0.0.1:0", "--key-file",
                                     key_, "--threads", "1", "--no-mdns", "--control-socket",
                                     path};
    if (shared) argv.insert(argv.end(), {"--control-group", groupName});
    auto daemon = std::make_unique<Process>(argv, dir_.file(name + ".out"),
                                            dir_.file(name + ".err"), env());
    ASSERT_TRUE(daemon->waitForOutput("listening on ", 20s)) << daemon->err();
    ASSERT_TRUE(waitUntil([&] { return ::access(path.c_str(), F_OK) == 0; }, 5s));
    struct stat st {};
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, shared ? 0660u : 0600u);
    if (shared) {
      EXPECT_EQ(st.st_gid, kGroup);
      EXPECT_EQ(asOtherUser(path, kGroup), 0) << daemon->err();  // a member: primary group
      // A member by a supplementary group (the daemon reads SO_PEERGROUPS).
      EXPECT_EQ(asOtherUser(path, kGroup - 2, kGroup), 0) << daemon->err();
      // Not a member: the file's mode keeps it out; opened up, the daemon's own check does.
      EXPECT_EQ(asOtherUser(path, kGroup - 1), 2) << daemon->err();
      ::chmod(path.c_str(), 0666);
      EXPECT_EQ(asOtherUser(path, kGroup - 1), 1) << daemon->err();
      EXPECT_TRUE(waitUntil([&] { return daemon->err().find("not in group " + groupName) !=
                                         std::string::npos; },
                            5s))
          << daemon->err();
      // A member holds at most two sessions (a viewport and an F12, say): a third is busy.
      ::chmod(path.c_str(), 0660);
      pid_t child = ::fork();
      if (child == 0) {
        if (::setgroups(0, nullptr) != 0 || ::setgid(kGroup) != 0 || ::setuid(65534) != 0)
          ::_exit(3);
        UvKjLoop loop;
        std::vector<std::unique_ptr<ControlConnection>> connections;
        std::vector<ctl::SessionJob::Client> held;
        std::vector<ctl::Outcome> outcomes;
        for (int i = 0; i < 3; ++i) {
          auto c = ControlConnection::open(loop, path);
          if (!c.ok()) ::_exit(4);
          auto reply = requestSession(loop, **c, "0a1b2c" + std::to_string(i), frame(16, 16, 1),
                                      1000, std::make_shared<SessionEvents>());
          outcomes.push_back(reply.getOutcome());
          if (reply.getOutcome() == ctl::Outcome::OK) held.push_back(reply.getJob());
          connections.push_back(std::move(c).value());
        }
        ::_exit(outcomes == std::vector<ctl::Outcome>{ctl::Outcome::OK, ctl::Outcome::OK,
                                                       ctl::Outcome::BUSY}
                    ? 0
                    : 5);
      }
      int status = 0;
      ::waitpid(child, &status, 0);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
          << "sessions of one member: " << status << "\n" << daemon->err();
    } else {
      // Private: the 0700 folder already keeps the other user out (2: connect fails).
      EXPECT_EQ(asOtherUser(path, kGroup), 2) << daemon->err();
      // And the daemon's own check (SO_PEERCRED), with the folder and socket opened up.
      ::chmod((folder + "/" + name).c_str(), 0755);
      ::chmod(path.c_str(), 0666);
      EXPECT_EQ(asOtherUser(path, kGroup), 1) << daemon->err();
      EXPECT_TRUE(waitUntil([&] { return daemon->err().find("refused a client of uid 65534") !=
                                         std::string::npos; },
                            5s))
          << daemon->err();
    }
    daemon->kill();
  }
  // A group that does not exist: the node refuses to start, naming it.
  Process bad({kBinary, "node", "--listen", "127.0.0.1:0", "--key-file", key_, "--no-mdns",
               "--control-socket", folder + "/bad/node.sock", "--control-group",
               "no-such-group-here"},
              dir_.file("bad.out"), dir_.file("bad.err"), env());
  EXPECT_EQ(bad.wait(20s), 2);
  EXPECT_NE(bad.err().find("no-such-group-here: no such group"), std::string::npos) << bad.err();
  std::filesystem::remove_all(folder);
}

// A session held by the daemon (NodeControl.session, what `peerlight session` opens when a
// daemon runs): requests it refuses get a typed Outcome; calls with bad arguments (a chunk name
// of the wrong size, a manifest that does not parse or names chunks never put, a camera of the
// wrong size, more chunk bytes than its bound) fail or are refused alone and the session goes
// on; filmAt says typed why a film cannot come (replaced, passed) and hands over the film that
// can, at exactly the samples asked for.
TEST_F(RenderJobTest, SessionCallsAreCheckedAndTheSessionGoesOn) {
  std::string a = startDaemon("a", true, {"--memory-budget", "8192"});
  ASSERT_FALSE(a.empty());
  UvKjLoop loop;
  auto opened = ControlConnection::open(loop, socketOf("a"));
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  ControlConnection& c = **opened;
  auto events = std::make_shared<SessionEvents>();
  RenderJobParams good = frame(32, 32, 4);
  good.localOnly = true;
  struct Case {
    std::string name, token;
    RenderJobParams params;
    uint64_t bytes;
    ctl::Outcome outcome;
  };
  RenderJobParams zero = good, both = good;
  zero.width = 0;
  both.noLocal = true;
  for (const Case& t : std::vector<Case>{
           {"bad token", "t!k", good, 8, ctl::Outcome::BAD_PARAMS},
           {"width 0", "tok1", zero, 8, ctl::Outcome::BAD_PARAMS},
           {"local only and no local", "tok2", both, 8, ctl::Outcome::BAD_PARAMS},
           {"no data", "tok3", good, 0, ctl::Outcome::BAD_PARAMS},
           {"too much data", "tok4", good, ~uint64_t(0), ctl::Outcome::TOO_LARGE}}) {
    auto reply = requestSession(loop, c, t.token, t.params, t.bytes, events);
    EXPECT_EQ(reply.getOutcome(), t.outcome) << t.name << ": " << reply.getMessage().cStr();
  }

  CompileOptions options;
  options.width = options.height = 32;
  Result<RenderData> data = loadAndCompile(testing::kCornellScene, options);
  ASSERT_TRUE(data.ok()) << data.error().message;
  ChunkStore chunks;
  const ChunkManifest manifest = encodeRenderData(*data, chunks);
  const std::vector<uint8_t> manifestBytes = serializeManifest(manifest);
  const uint64_t declared = manifest.encodedBytes();

  auto reply = requestSession(loop, c, "0a1b2c3d", good, declared, events);
  ASSERT_EQ(reply.getOutcome(), ctl::Outcome::OK) << reply.getMessage().cStr();
  ctl::SessionJob::Client job = reply.getJob();
  EXPECT_EQ(requestSession(loop, c, "0a1b2c3e", good, declared, events).getOutcome(),
            ctl::Outcome::BUSY)
      << "one session per connection";

  auto failed = [&](auto request) {
    return testing::exceptionFrom([&] { waitFor(loop, request.send()); }) != nullptr;
  };
  {  // A chunk name of 3 bytes.
    auto missing = job.missingRequest();
    missing.initHashes(1).set(0, capnp::Data::Reader(reinterpret_cast<const uint8_t*>("abc"), 3));
    EXPECT_TRUE(failed(kj::mv(missing)));
  }
  {  // A camera before any generation.
    auto camera = job.cameraRequest();
    camera.setCamera(capnp::Data::Reader(reinterpret_cast<const uint8_t*>(&data->camera[0]),
                                         sizeof(kernel::Camera)));
    camera.setSpp(4);
    EXPECT_TRUE(failed(kj::mv(camera)));
  }
  auto update = [&](capnp::Data::Reader bytes, uint32_t spp) {
    auto request = job.updateRequest();
    request.setManifest(bytes);
    request.setSpp(spp);
    return waitFor(loop, request.send());
  };
  {
    const uint8_t garbage[] = {1, 2, 3, 4, 5};
    auto r = update(capnp::Data::Reader(garbage, sizeof garbage), 4);
    EXPECT_EQ(r.getOutcome(), ctl::Outcome::BAD_DATA) << r.getMessage().cStr();
    r = update(capnp::Data::Reader(manifestBytes.data(), manifestBytes.size()), 4);
    EXPECT_EQ(r.getOutcome(), ctl::Outcome::BAD_DATA) << r.getMessage().cStr();
    EXPECT_NE(std::string(r.getMessage().cStr()).find("does not hold"), std::string::npos)
        << r.getMessage().cStr();
  }
  // The chunks the session lacks: all of them.
  std::vector<Hash128> hashes = manifest.chunkHashes();
  {
    auto missing = job.missingRequest();
    auto list = missing.initHashes(unsigned(hashes.size()));
    for (size_t i = 0; i < hashes.size(); ++i) list.set(unsigned(i), nameOf(hashes[i]));
    EXPECT_EQ(waitFor(loop, missing.send()).getMissing().size(), hashes.size());
  }
  for (const Hash128& h : hashes) {
    auto put = job.putRequest();
    put.setHash(nameOf(h));
    const std::span<const uint8_t> bytes = *chunks.find(h);
    put.setChunk(capnp::Data::Reader(bytes.data(), bytes.size()));
    waitFor(loop, put.send());
  }
  auto first = update(capnp::Data::Reader(manifestBytes.data(), manifestBytes.size()), 4);
  ASSERT_EQ(first.getOutcome(), ctl::Outcome::OK) << first.getMessage().cStr();
  EXPECT_EQ(first.getGeneration(), 1u);
  {
    auto camera = job.cameraRequest();
    camera.setCamera(capnp::Data::Reader(reinterpret_cast<const uint8_t*>("short"), 5));
    camera.setSpp(4);
    auto r = waitFor(loop, camera.send());
    EXPECT_EQ(r.getOutcome(), ctl::Outcome::BAD_PARAMS) << r.getMessage().cStr();
  }
  // A generation whose film is beyond what one session gets (4 GiB of sums), or beyond the
  // memory this machine can reserve for it (its films are held several times: 3.5 GiB each).
  for (auto [size, outcome] : {std::pair{16000u, ctl::Outcome::TOO_LARGE},
                               std::pair{12000u, ctl::Outcome::BUSY}}) {
    kernel::Camera huge = data->camera[0];
    huge.width = huge.height = size;
    auto request = job.cameraRequest();
    request.setCamera(capnp::Data::Reader(reinterpret_cast<const uint8_t*>(&huge), sizeof huge));
    request.setSpp(4);
    auto r = waitFor(loop, request.send());
    EXPECT_EQ(r.getOutcome(), outcome) << size << ": " << r.getMessage().cStr();
  }
  kernel::Camera moved = data->camera[0];
  moved.position.x += 0.1f;
  auto camera = job.cameraRequest();
  camera.setCamera(
      capnp::Data::Reader(reinterpret_cast<const uint8_t*>(&moved), sizeof moved));
  camera.setSpp(4);
  auto second = waitFor(loop, camera.send());
  ASSERT_EQ(second.getOutcome(), ctl::Outcome::OK) << second.getMessage().cStr();
  EXPECT_EQ(second.getGeneration(), 2u);

  auto filmAt = [&](uint64_t generation, uint32_t spp) {
    auto request = job.filmAtRequest();
    request.setGeneration(generation);
    request.setSpp(spp);
    return waitFor(loop, request.send(), 30000);
  };
  EXPECT_EQ(filmAt(1, 4).getOutcome(), ctl::Outcome::CANCELLED) << "replaced by generation 2";
  EXPECT_EQ(filmAt(2, 3).getOutcome(), ctl::Outcome::PASSED) << "passes end at 1, 2 and 4";
  auto four = filmAt(2, 4);
  ASSERT_EQ(four.getOutcome(), ctl::Outcome::OK) << four.getMessage().cStr();
  EXPECT_EQ(four.getFilm().getSpp(), 4u);
  Result<Film> film = waitFor(loop, readFilm(four.getFilm(), four.getData()), 30000);
  ASSERT_TRUE(film.ok()) << film.error().message;
  EXPECT_EQ(film->width(), 32u);
  int64_t sum = 0;
  for (int64_t v : film->sums()) sum += v;
  EXPECT_GT(sum, 0) << "an image, not an empty film";
  EXPECT_TRUE(waitUntil([&] {
    loop.waitScope().poll();
    return events->lastSpp[2] == 4;
  }, 10s)) << "the listener heard generation 2's passes";
  auto stats = waitFor(loop, job.statsRequest().send());
  EXPECT_GT(stats.getStats().getSamples(), 0u);
  EXPECT_NE(node("a").err().find("this node is its Primary"), std::string::npos)
      << node("a").err();

  // Puts beyond the session's bound (twice the declared bytes and 16 MiB) fail. A failed
  // stream call is reported on the calls after it (Cap'n Proto breaks that client's capability:
  // the client knows why); the daemon serves its other clients on.
  std::vector<uint8_t> big(size_t(4) << 20, 7);
  for (uint64_t i = 1; i <= 6; ++i) {
    big[0] = uint8_t(i);
    auto put = job.putRequest();
    put.setHash(nameOf(Hash128{i, i}));
    put.setChunk(capnp::Data::Reader(big.data(), big.size()));
    if (testing::exceptionFrom([&] { waitFor(loop, put.send()); }) != nullptr) break;
  }
  kj::Maybe<kj::Exception> after =
      testing::exceptionFrom([&] { waitFor(loop, job.statsRequest().send()); });
  KJ_IF_MAYBE(e, after) {
    EXPECT_NE(std::string(e->getDescription().cStr()).find("beyond the session's bound"),
              std::string::npos)
        << e->getDescription().cStr();
  } else {
    ADD_FAILURE() << "a chunk beyond the session's bound was taken";
  }
  auto other = ControlConnection::open(loop, socketOf("a"));
  ASSERT_TRUE(other.ok()) << other.error().message;
  auto again = requestSession(loop, **other, "0a1b2c3f", good, declared, events);
  EXPECT_EQ(again.getOutcome(), ctl::Outcome::OK) << again.getMessage().cStr();
}

}  // namespace
}  // namespace pl
