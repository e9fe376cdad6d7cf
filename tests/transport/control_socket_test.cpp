// The node daemon's control socket (transport/control_socket.h) and its client
// (transport/control_client.h) on one UvKjLoop in this process, with fake job code: owner jobs
// end when their capability is dropped, their connection closes or the socket goes (every start
// has exactly one end); a render job's data arrives whole across several chunks and its film
// comes back whole across several slices, with progress and typed statistics; refusals before
// start() leave the client free to render by itself, failures after it do not; a client that
// goes away is reported once. The conversions (control_convert.h) round-trip every member.

#include <capnp/message.h>
#include <gtest/gtest.h>

#include <limits>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "tests/transport/loop_test_util.h"
#include "transport/control_client.h"
#include "transport/control_socket.h"
#include "transport/uv_kj_loop.h"

namespace pl {
namespace {

using testing::waitFor;

class ControlSocketTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/pl-control-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
    path_ = dir_ + "/run/node.sock";
    listen();
  }
  void TearDown() override {
    socket_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  void listen() {
    ControlSocket::Callbacks callbacks;
    callbacks.ownerStarted = [this](const std::string& token) { events_.push_back("start " + token); };
    callbacks.ownerEnded = [this](const std::string& token) { events_.push_back("end " + token); };
    callbacks.admitRender = [this](const RenderJobParams& params, uint64_t) {
      return admit_(params);
    };
    callbacks.renderRequested = [this](std::shared_ptr<ControlRenderJob> job) {
      jobs_.push_back(job);
      onJob_(std::move(job));
    };
    ControlSocketOptions options = options_;
    options.maxPayloadBytes = 64 << 20;
    auto listened = ControlSocket::listen(loop_, path_, std::move(callbacks), options);
    ASSERT_TRUE(listened.ok()) << listened.error().message;
    socket_ = std::move(*listened);
  }

  // Runs the loop until `done()` (at most 5 s).
  template <typename Fn>
  bool turnUntil(Fn&& done) {
    for (int i = 0; i < 500 && !done(); ++i)
      waitFor(loop_, loop_.timer().afterDelay(10 * kj::MILLISECONDS));
    return done();
  }

  capnp::Response<ctl::NodeControl::OwnerJobResults> ownerJob(ControlConnection& c,
                                                              const std::string& token) {
    auto request = c.control().ownerJobRequest();
    request.setToken(token);
    return waitFor(loop_, request.send());
  }

  // `n` connections to the socket (fewer when one fails to open, with a failure added).
  std::vector<std::unique_ptr<ControlConnection>> openConnections(size_t n) {
    std::vector<std::unique_ptr<ControlConnection>> out;
    for (size_t i = 0; i < n; ++i) {
      auto opened = ControlConnection::open(loop_, path_);
      if (!opened.ok()) {
        ADD_FAILURE() << opened.error().message;
        break;
      }
      out.push_back(std::move(*opened));
    }
    return out;
  }

  // The answer to a render request on `c` (no data is sent).
  capnp::Response<ctl::NodeControl::RenderResults> renderRequest(ControlConnection& c,
                                                                 const std::string& token) {
    auto request = c.control().renderRequest();
    auto r = request.initRequest();
    r.setToken(token);
    RenderJobParams params;
    params.width = params.height = 16;
    params.spp = 1;
    toControl(params, r.initParams());
    r.setDataBytes(1000);
    return waitFor(loop_, request.send());
  }

  UvKjLoop loop_;
  ControlSocketOptions options_;
  std::string dir_, path_;
  std::vector<std::string> events_;
  std::vector<std::shared_ptr<ControlRenderJob>> jobs_;
  std::function<ControlOutcome(const RenderJobParams&)> admit_ = [](const RenderJobParams&) {
    return ControlOutcome{};
  };
  std::function<void(std::shared_ptr<ControlRenderJob>)> onJob_ =
      [](std::shared_ptr<ControlRenderJob>) {};
  std::unique_ptr<ControlSocket> socket_;
};

TEST_F(ControlSocketTest, SocketFileIsPrivate) {
  struct stat st {};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat((dir_ + "/run").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_TRUE(controlSocketAnswers(path_));
  // A second socket on the same path is refused while this one answers.
  ControlSocket::Callbacks none;
  EXPECT_FALSE(ControlSocket::listen(loop_, path_, none).ok());
}

TEST_F(ControlSocketTest, OwnerJobEndsWithItsCapabilityItsConnectionOrTheSocket) {
  auto opened = ControlConnection::open(loop_, path_);
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  ControlConnection& c = **opened;
  {
    auto held = ownerJob(c, "a1");
    ASSERT_EQ(held.getOutcome(), ctl::Outcome::OK);
    EXPECT_EQ(events_, std::vector<std::string>({"start a1"}));
    EXPECT_EQ(socket_->ownerJobs(), 1u);
    EXPECT_EQ(ownerJob(c, "a2").getOutcome(), ctl::Outcome::BUSY);  // one per connection
  }
  // Dropped: the release reaches the daemon before the answer to the next call.
  EXPECT_EQ(ownerJob(c, "b@d").getOutcome(), ctl::Outcome::BAD_PARAMS);
  EXPECT_EQ(events_, std::vector<std::string>({"start a1", "end a1"}));
  EXPECT_EQ(socket_->ownerJobs(), 0u);

  // Held until the connection closes.
  auto again = ownerJob(c, "a3");
  ASSERT_EQ(again.getOutcome(), ctl::Outcome::OK);
  opened = Error{"closed"};
  EXPECT_TRUE(turnUntil([&] { return events_.back() == "end a3"; }));

  // The silent connection of `peerlight render` (announceOwnerJob): held until its fd closes.
  Result<int> fd = announceOwnerJob(loop_, path_, "a4");
  ASSERT_TRUE(fd.ok()) << fd.error().message;
  EXPECT_TRUE(turnUntil([&] { return events_.back() == "start a4"; }));
  waitFor(loop_, loop_.timer().afterDelay(100 * kj::MILLISECONDS));
  EXPECT_EQ(events_.back(), "start a4");
  EXPECT_EQ(socket_->ownerJobs(), 1u);
  ::close(*fd);
  EXPECT_TRUE(turnUntil([&] { return events_.back() == "end a4"; }));

  // The socket goes while a job is held: that job ends too.
  auto last = ControlConnection::open(loop_, path_);
  ASSERT_TRUE(last.ok());
  auto held = ownerJob(**last, "a5");
  ASSERT_EQ(held.getOutcome(), ctl::Outcome::OK);
  socket_.reset();
  EXPECT_EQ(events_.back(), "end a5");
  size_t starts = 0, ends = 0;
  for (const std::string& e : events_) (e.rfind("start", 0) == 0 ? starts : ends) += 1;
  EXPECT_EQ(starts, ends);
}

// One user (here the daemon's own uid, with limitOwnUid; a system daemon limits every uid of
// its group but its own) holds at most two owner jobs and one render job; a connection that
// asks for nothing is closed.
TEST_F(ControlSocketTest, OneUserHoldsAtMostItsJobsAndSilentConnectionsAreClosed) {
  socket_.reset();
  options_.limitOwnUid = true;
  options_.idleBeforeRequestMs = 300;
  listen();
  std::vector<std::unique_ptr<ControlConnection>> c = openConnections(4);
  ASSERT_EQ(c.size(), 4u);
  auto first = ownerJob(*c[0], "o1");
  auto second = ownerJob(*c[1], "o2");
  auto third = ownerJob(*c[2], "o3");
  EXPECT_EQ(first.getOutcome(), ctl::Outcome::OK);
  EXPECT_EQ(second.getOutcome(), ctl::Outcome::OK);
  EXPECT_EQ(third.getOutcome(), ctl::Outcome::BUSY);
  EXPECT_NE(std::string(third.getMessage().cStr()).find("uid"), std::string::npos);
  EXPECT_EQ(socket_->ownerJobs(), 2u);

  auto job = renderRequest(*c[0], "r1");
  EXPECT_EQ(job.getOutcome(), ctl::Outcome::OK) << job.getMessage().cStr();
  auto another = renderRequest(*c[1], "r2");
  EXPECT_EQ(another.getOutcome(), ctl::Outcome::BUSY);
  EXPECT_NE(std::string(another.getMessage().cStr()).find("uid"), std::string::npos);

  // c[3] has asked for nothing, c[2] was refused: both closed after 300 ms; the others (they
  // were granted a job) stay.
  EXPECT_EQ(socket_->clients(), 4u);
  EXPECT_TRUE(turnUntil([&] { return socket_->clients() == 2; }));
  waitFor(loop_, loop_.timer().afterDelay(400 * kj::MILLISECONDS));
  EXPECT_EQ(socket_->clients(), 2u);
  EXPECT_EQ(socket_->ownerJobs(), 2u);
}

// One user may keep at most connectionsPerUid connections open: one more is closed at once.
TEST_F(ControlSocketTest, OneUserHoldsAtMostItsConnections) {
  socket_.reset();
  options_.limitOwnUid = true;
  options_.connectionsPerUid = 3;
  listen();
  std::vector<std::unique_ptr<ControlConnection>> c = openConnections(4);
  ASSERT_EQ(c.size(), 4u);
  EXPECT_TRUE(turnUntil([&] { return socket_->clients() == 3; }));
  waitFor(loop_, loop_.timer().afterDelay(100 * kj::MILLISECONDS));
  EXPECT_EQ(socket_->clients(), 3u);
  // The fourth finds its connection closed; the first three are served.
  EXPECT_EQ(ownerJob(*c[0], "u1").getOutcome(), ctl::Outcome::OK);
  kj::Maybe<kj::Exception> refused = kj::runCatchingExceptions([&] { ownerJob(*c[3], "u4"); });
  EXPECT_TRUE(refused != nullptr) << "the fourth connection was served";
}

TEST_F(ControlSocketTest, RenderJobDataAndFilmTravelWholeInChunks) {
  // Data of a bit more than 2 chunks; a film of 5.9 slices of sums then sample counts (a noise
  // threshold), so that a slice holds both.
  std::vector<uint8_t> data(2 * kControlChunkBytes + 12345);
  for (size_t i = 0; i < data.size(); ++i) data[i] = uint8_t(i * 7 + (i >> 13));
  RenderJobParams params;
  params.width = 1000;
  params.height = 1024;
  params.spp = 3;
  params.peers = {"10.0.0.2:7421", "10.0.0.3:7421"};
  params.noMdns = true;
  params.primaryName = "host/42";
  params.timeLimitMs = 1500;
  params.noiseThreshold = 0.02;
  std::vector<int64_t> film(size_t(params.width) * params.height * 3);
  std::vector<uint32_t> samples(size_t(params.width) * params.height);
  for (size_t i = 0; i < samples.size(); ++i) samples[i] = uint32_t(i % 3);
  for (size_t i = 0; i < film.size(); ++i) film[i] = int64_t(i) * 1000003 - (int64_t(1) << 40);
  ClusterRenderStats stats;
  stats.samples = 3145728;
  NodeRenderStats node;
  node.address = "10.0.0.2:7421";
  node.state = "done";
  node.workUnits = 17;
  stats.nodes.push_back(node);

  kj::Promise<void> later = nullptr;
  RenderJobParams seen;
  std::vector<uint8_t> received;
  onJob_ = [&](std::shared_ptr<ControlRenderJob> job) {
    seen = job->params();
    received = job->payload();
    job->accept();
    later = loop_.timer().afterDelay(20 * kj::MILLISECONDS).then([&, job] {
      job->progress(5, 10, stats);
      job->done(stats, film, samples, 2);  // as when a time limit ends it at a pass
    }).eagerlyEvaluate(nullptr);
  };
  std::vector<std::pair<uint64_t, uint64_t>> progress;
  bool refused = true;
  Result<ControlRenderResult> result = runRenderJob(
      loop_, path_, "tok1", params, data, film.size(),
      [&](uint64_t done, uint64_t total, const ClusterRenderStats& s) {
        progress.emplace_back(done, total);
        EXPECT_EQ(s.nodes.size(), 1u);
      },
      &refused);
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_FALSE(refused);
  EXPECT_EQ(received, data);
  EXPECT_EQ(seen.width, 1000u);
  EXPECT_EQ(seen.noiseThreshold, 0.02);  // exactly: a float would change which tiles retire
  EXPECT_EQ(seen.peers, params.peers);
  EXPECT_EQ(seen.primaryName, "host/42");
  EXPECT_TRUE(seen.noMdns);
  EXPECT_EQ(seen.timeLimitMs, 1500u);
  EXPECT_EQ(result->spp, 2u);
  EXPECT_TRUE(result->sums == film) << "the film differs";
  EXPECT_TRUE(result->pixelSamples == samples) << "the sample counts differ";
  EXPECT_EQ(result->stats.samples, stats.samples);
  ASSERT_EQ(result->stats.nodes.size(), 1u);
  EXPECT_EQ(result->stats.nodes[0].workUnits, 17u);
  EXPECT_EQ(result->stats.nodes[0].state, "done");
  EXPECT_EQ(progress, (std::vector<std::pair<uint64_t, uint64_t>>{{5, 10}}));
}

TEST_F(ControlSocketTest, RefusedBeforeStartFailedAfter) {
  std::vector<uint8_t> data(100, 1);
  RenderJobParams params;
  params.width = params.height = 4;
  params.spp = 1;
  bool refused = false;

  admit_ = [](const RenderJobParams&) {
    return ControlOutcome{ctl::Outcome::BUSY, "busy: 4 render jobs run on this node"};
  };
  Result<ControlRenderResult> r = runRenderJob(loop_, path_, "tok", params, data, 48, nullptr,
                                               &refused);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(refused);
  EXPECT_NE(r.error().message.find("refused (busy): busy: 4 render jobs"), std::string::npos)
      << r.error().message;
  EXPECT_TRUE(jobs_.empty()) << "a refused request reached the job code";

  admit_ = [](const RenderJobParams&) { return ControlOutcome{}; };
  onJob_ = [](std::shared_ptr<ControlRenderJob> job) {
    job->fail(ctl::Outcome::BAD_DATA, "render data: not RenderData");
  };
  r = runRenderJob(loop_, path_, "tok", params, data, 48, nullptr, &refused);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(refused);
  EXPECT_NE(r.error().message.find("refused (badData)"), std::string::npos) << r.error().message;

  kj::Promise<void> later = nullptr;
  onJob_ = [&](std::shared_ptr<ControlRenderJob> job) {
    job->accept();
    later = loop_.timer().afterDelay(10 * kj::MILLISECONDS).then([job] {
      job->fail(ctl::Outcome::FAILED, "no device left");
      job->done({}, {}, {}, 1);  // ignored: the job ended
    }).eagerlyEvaluate(nullptr);
  };
  r = runRenderJob(loop_, path_, "tok", params, data, 48, nullptr, &refused);
  ASSERT_FALSE(r.ok());
  EXPECT_FALSE(refused);
  EXPECT_EQ(r.error().message, "no device left");
  // Every connection the client made is gone on the daemon's side too.
  EXPECT_TRUE(turnUntil([&] { return socket_->clients() == 0; }));
}

TEST_F(ControlSocketTest, ClientGoneIsReportedOnce) {
  int gone = 0;
  std::shared_ptr<ControlRenderJob> kept;
  onJob_ = [&](std::shared_ptr<ControlRenderJob> job) {
    job->accept();
    job->onDisconnect([&] { gone += 1; });
    kept = job;
  };
  {
    auto opened = ControlConnection::open(loop_, path_);
    ASSERT_TRUE(opened.ok());
    auto request = (*opened)->control().renderRequest();
    auto r = request.initRequest();
    r.setToken("gone1");
    RenderJobParams params;
    params.width = params.height = params.spp = 1;
    toControl(params, r.initParams());
    r.setDataBytes(3);
    auto reply = waitFor(loop_, request.send());
    ASSERT_EQ(reply.getOutcome(), ctl::Outcome::OK) << reply.getMessage().cStr();
    auto job = reply.getJob();
    auto write = job.writeRequest();
    write.setChunk(kj::StringPtr("abc").asBytes());
    waitFor(loop_, write.send());
    ASSERT_EQ(waitFor(loop_, job.startRequest().send()).getOutcome(), ctl::Outcome::OK);
    ASSERT_TRUE(kept != nullptr);
    EXPECT_TRUE(kept->connected());
  }  // the connection closes
  EXPECT_TRUE(turnUntil([&] { return gone > 0; }));
  EXPECT_FALSE(kept->connected());
  kept->progress(1, 2, {});  // dropped, harmlessly
  kept->done({}, {}, {}, 1);
  waitFor(loop_, loop_.timer().afterDelay(50 * kj::MILLISECONDS));
  EXPECT_EQ(gone, 1);
}

TEST(ControlConvertTest, ParamsAndStatsRoundTrip) {
  RenderJobParams p;
  p.width = 640;
  p.height = 480;
  p.spp = 64;
  p.peers = {"a:1", "b:2"};
  p.localOnly = true;
  p.noOwnerPreempt = true;
  p.primaryName = "h/1";
  capnp::MallocMessageBuilder m1;
  toControl(p, m1.initRoot<ctl::RenderParams>());
  Result<RenderJobParams> back = fromControl(m1.getRoot<ctl::RenderParams>().asReader());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->width, 640u);
  EXPECT_EQ(back->height, 480u);
  EXPECT_EQ(back->spp, 64u);
  EXPECT_EQ(back->peers, p.peers);
  EXPECT_TRUE(back->localOnly);
  EXPECT_FALSE(back->noLocal);
  EXPECT_TRUE(back->noOwnerPreempt);
  EXPECT_FALSE(back->noMdns);
  EXPECT_EQ(back->primaryName, "h/1");

  p.peers.assign(kMaxRenderJobPeers + 1, "a:1");
  toControl(p, m1.initRoot<ctl::RenderParams>());
  EXPECT_FALSE(fromControl(m1.getRoot<ctl::RenderParams>().asReader()).ok());
  p.peers = {std::string(kMaxRenderJobNameBytes + 1, 'a')};
  toControl(p, m1.initRoot<ctl::RenderParams>());
  EXPECT_FALSE(fromControl(m1.getRoot<ctl::RenderParams>().asReader()).ok());
  p.peers.clear();
  for (double bad : {-0.01, std::numeric_limits<double>::quiet_NaN(),
                     std::numeric_limits<double>::infinity()}) {
    p.noiseThreshold = bad;
    toControl(p, m1.initRoot<ctl::RenderParams>());
    Result<RenderJobParams> refused = fromControl(m1.getRoot<ctl::RenderParams>().asReader());
    ASSERT_FALSE(refused.ok()) << bad;
    EXPECT_NE(refused.error().message.find("noise threshold"), std::string::npos);
  }

  ClusterRenderStats s;
  s.seconds = 1.5;
  s.samples = 2;
  s.raysTraced = 3;
  s.scheduler = {4, 5, 6, 7, 8};
  LocalDeviceRenderStats d;
  d.info = {"cuda", "GPU", 9, 10, 8, 6, 1};
  d.workUnits = 11;
  d.samples = 12;
  d.raysTraced = 13;
  d.duplicateResults = 14;
  d.error = "e";
  s.local.push_back(d);
  NodeRenderStats n;
  n.address = "x:1";
  n.name = "x";
  n.nodeId = "id";
  n.devices = 15;
  n.workUnits = 16;
  n.samples = 17;
  n.raysTraced = 18;
  n.duplicateResults = 19;
  n.renderDataBytesRaw = 20;
  n.renderDataBytesSent = 21;
  n.chunksSent = 22;
  n.chunksTotal = 23;
  n.manifestBytes = 24;
  n.resultBytes = 25;
  n.resultBytesRaw = 26;
  n.secondsToFirstResult = 27.5;
  n.secondsToDataLoaded = 28.5;
  n.uploadSeconds = 29.5;
  n.connections = 30;
  n.losses = 31;
  n.state = "lost";
  n.error = "gone";
  s.nodes.push_back(n);
  s.renderDataChunks = 32;
  s.renderDataRawBytes = 33;
  s.renderDataEncodedBytes = 34;
  s.encodeSeconds = 35.5;
  capnp::MallocMessageBuilder m2;
  toControl(s, m2.initRoot<ctl::RenderStats>());
  ClusterRenderStats t = fromControl(m2.getRoot<ctl::RenderStats>().asReader());
  EXPECT_EQ(t.seconds, 1.5);
  EXPECT_EQ(t.samples, 2u);
  EXPECT_EQ(t.raysTraced, 3u);
  EXPECT_EQ(t.scheduler.issuedUnits, 4u);
  EXPECT_EQ(t.scheduler.requeuedUnits, 8u);
  ASSERT_EQ(t.local.size(), 1u);
  EXPECT_EQ(t.local[0].info.kind, "cuda");
  EXPECT_EQ(t.local[0].info.name, "GPU");
  EXPECT_EQ(t.local[0].info.memoryBytes, 9u);
  EXPECT_EQ(t.local[0].info.threads, 10u);
  EXPECT_EQ(t.local[0].info.computeMajor, 8);
  EXPECT_EQ(t.local[0].info.computeMinor, 6);
  EXPECT_EQ(t.local[0].info.ordinal, 1);
  EXPECT_EQ(t.local[0].workUnits, 11u);
  EXPECT_EQ(t.local[0].duplicateResults, 14u);
  EXPECT_EQ(t.local[0].error, "e");
  ASSERT_EQ(t.nodes.size(), 1u);
  const NodeRenderStats& u = t.nodes[0];
  EXPECT_EQ(u.address, "x:1");
  EXPECT_EQ(u.name, "x");
  EXPECT_EQ(u.nodeId, "id");
  EXPECT_EQ(u.devices, 15u);
  EXPECT_EQ(u.workUnits, 16u);
  EXPECT_EQ(u.samples, 17u);
  EXPECT_EQ(u.raysTraced, 18u);
  EXPECT_EQ(u.duplicateResults, 19u);
  EXPECT_EQ(u.renderDataBytesRaw, 20u);
  EXPECT_EQ(u.renderDataBytesSent, 21u);
  EXPECT_EQ(u.chunksSent, 22u);
  EXPECT_EQ(u.chunksTotal, 23u);
  EXPECT_EQ(u.manifestBytes, 24u);
  EXPECT_EQ(u.resultBytes, 25u);
  EXPECT_EQ(u.resultBytesRaw, 26u);
  EXPECT_EQ(u.secondsToFirstResult, 27.5);
  EXPECT_EQ(u.secondsToDataLoaded, 28.5);
  EXPECT_EQ(u.uploadSeconds, 29.5);
  EXPECT_EQ(u.connections, 30u);
  EXPECT_EQ(u.losses, 31u);
  EXPECT_EQ(u.state, "lost");
  EXPECT_EQ(u.error, "gone");
  EXPECT_EQ(t.renderDataChunks, 32u);
  EXPECT_EQ(t.renderDataRawBytes, 33u);
  EXPECT_EQ(t.renderDataEncodedBytes, 34u);
  EXPECT_EQ(t.encodeSeconds, 35.5);

  EXPECT_TRUE(validControlToken("0aZ"));
  EXPECT_TRUE(validControlToken(std::string(64, 'a')));
  EXPECT_FALSE(validControlToken(""));
  EXPECT_FALSE(validControlToken(std::string(65, 'a')));
  EXPECT_FALSE(validControlToken("a b"));
  EXPECT_FALSE(validControlToken("a\n"));
  EXPECT_STREQ(outcomeName(ctl::Outcome::SHUTTING_DOWN), "shuttingDown");
}

}  // namespace
}  // namespace pl
