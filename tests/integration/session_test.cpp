// `peerlight session` as a program drives it: JSON lines on a pipe, events read from its stdout.
// A real `peerlight node` process on 127.0.0.1 (ephemeral port) renders with it. After camera
// moves and edits, `save` is bitwise the image `peerlight render` gives of the final state; a
// camera move sends the node at most 4 KiB; bad lines get error events and the session goes on;
// a session whose client goes away ends and the node's lease is free within about a second.

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>

#include "tests/integration/process.h"
#include "tests/integration/same_image.h"

namespace pl {
namespace {

using testing::Process;
using testing::TempDir;
using testing::waitUntil;
using testing::writeKey;
using namespace std::chrono_literals;
using Json = nlohmann::json;

const std::string kBinary = PEERLIGHT_BINARY;
const std::string kScene = std::string(PEERLIGHT_SOURCE_DIR) + "/scenes/cornell_box.gltf";

// Each test runs twice: the session in its own process (--no-daemon), and held by a node
// daemon of this machine (a `peerlight node` with a control socket, the session's Primary; the
// session process keeps the scene and sends compiled chunks).
enum class Where { process, daemon };

class SessionTest : public ::testing::TestWithParam<Where> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    key_ = dir_.file("cluster.key");
    writeKey(key_, 99);
    if (GetParam() == Where::daemon) startDaemon();
  }

  bool viaDaemon() const { return GetParam() == Where::daemon; }

  // This machine's daemon: one render thread, its control socket in the test's folder.
  void startDaemon() {
    socket_ = dir_.file("control/node.sock");
    daemon_ = std::make_unique<Process>(
        std::vector<std::string>{kBinary, "node", "--listen", "127.0.0.1:0", "--key-file", key_,
                                 "--threads", "1", "--name", "d", "--no-mdns", "--http", "off",
                                 "--control-socket", socket_},
        dir_.file("daemon.out"), dir_.file("daemon.err"), env());
    ASSERT_TRUE(daemon_->waitForOutput("listening on ", 20s)) << daemon_->err();
  }

  // --threads N for a session in its own process (a daemon's session renders on the daemon's).
  std::vector<std::string> threads(const std::string& n) const {
    if (viaDaemon()) return {};
    return {"--threads", n};
  }

  // A compiled cache of the test's own (empty at its start).
  std::vector<std::string> env() const {
    return {"HOME=" + dir_.path(), "XDG_CACHE_HOME=" + dir_.file("cache")};
  }

  std::string startNode() {
    node_ = std::make_unique<Process>(
        std::vector<std::string>{kBinary, "node", "--listen", "127.0.0.1:0", "--key-file", key_,
                                 "--threads", "1", "--name", "n1", "--no-mdns",
                                 "--no-control-socket"},
        dir_.file("node.out"), dir_.file("node.err"), env());
    std::optional<std::string> line = node_->waitForOutput("listening on ", 20s);
    if (!line) {
      ADD_FAILURE() << "the node did not start: " << node_->err();
      return "";
    }
    return line->substr(std::strlen("listening on "));
  }

  // `tag` names its output files (a test's second session needs others: they are appended to).
  void startSession(std::vector<std::string> extra, const std::string& spp = "16",
                    const std::string& tag = "session") {
    std::vector<std::string> argv = {kBinary, "session", kScene,   "--size", "96x96",
                                     "--spp", spp,       "--key-file", key_};
    argv.insert(argv.end(), extra.begin(), extra.end());
    if (viaDaemon()) argv.insert(argv.end(), {"--control-socket", socket_});
    else argv.push_back("--no-daemon");
    session_ = std::make_unique<Process>(argv, dir_.file(tag + ".out"), dir_.file(tag + ".err"),
                                         env(), /*pipeStdin=*/true);
    ASSERT_TRUE(session_->ok());
  }

  void send(const Json& request) { ASSERT_TRUE(session_->writeStdin(request.dump() + "\n")); }
  void sendRaw(const std::string& line) { ASSERT_TRUE(session_->writeStdin(line + "\n")); }

  // The events printed so far.
  std::vector<Json> events() const {
    std::vector<Json> out;
    std::string text = session_->out();
    size_t begin = 0;
    for (size_t end; (end = text.find('\n', begin)) != std::string::npos; begin = end + 1) {
      Json j = Json::parse(text.substr(begin, end - begin), nullptr, false);
      EXPECT_FALSE(j.is_discarded()) << "not JSON: " << text.substr(begin, end - begin);
      if (!j.is_discarded()) out.push_back(std::move(j));
    }
    return out;
  }

  // Waits for the first event after the first `skip` events for which `match` holds.
  std::optional<Json> waitEvent(const std::function<bool(const Json&)>& match,
                                std::chrono::milliseconds timeout = 60s) {
    std::optional<Json> found;
    waitUntil(
        [&] {
          for (const Json& e : events())
            if (match(e)) {
              found = e;
              return true;
            }
          return !session_->running();
        },
        timeout);
    return found;
  }
  // The answer to the request with this id: for an update its `generation` event; for a save
  // `saved` or `error` (a save may start a generation first).
  std::optional<Json> waitEventWithId(const std::string& id, bool save = false) {
    return waitEvent([&](const Json& e) {
      return e.value("id", "") == id && (!save || e["event"] != "generation");
    });
  }

  // `peerlight render` of the same scene with `extra` flags, local only.
  std::string render(const std::string& tag, std::vector<std::string> extra) {
    std::vector<std::string> argv = {kBinary, "render", kScene, "-o", dir_.file(tag + ".exr"),
                                     "--size", "96x96", "--local-only", "--no-daemon",
                                     "--key-file", key_};
    argv.insert(argv.end(), extra.begin(), extra.end());
    Process p(argv, dir_.file(tag + ".out"), dir_.file(tag + ".err"), env());
    EXPECT_EQ(p.wait(60s), 0) << p.err();
    return dir_.file(tag + ".exr");
  }

  // The `ready` event, checked for where the session renders.
  std::optional<Json> waitReady() {
    std::optional<Json> ready = waitEvent([](const Json& e) { return e["event"] == "ready"; });
    if (!ready) return ready;
    const std::string where = (*ready).value("renders_in", "");
    EXPECT_EQ(where.find("node daemon") != std::string::npos, viaDaemon()) << ready->dump();
    return ready;
  }

  TempDir dir_;
  std::string key_;
  std::string socket_;               // the daemon's control socket (daemon runs only)
  std::unique_ptr<Process> daemon_;  // this machine's node daemon (daemon runs only)
  std::unique_ptr<Process> node_;
  std::unique_ptr<Process> session_;
};

INSTANTIATE_TEST_SUITE_P(InProcessAndThroughTheDaemon, SessionTest,
                         ::testing::Values(Where::process, Where::daemon),
                         [](const ::testing::TestParamInfo<Where>& info) {
                           return info.param == Where::daemon ? "daemon" : "process";
                         });

TEST_P(SessionTest, UpdatesThenSaveIsBitwiseTheRenderOfTheFinalState) {
  const std::string node = startNode();
  ASSERT_FALSE(node.empty());
  startSession({"--peer", node, "--no-local"});  // the node renders every sample
  ASSERT_TRUE(waitReady());
  ASSERT_TRUE(waitEvent([&](const Json& e) { return e["event"] == "node"; }))
      << session_->err();

  send({{"op", "stats"}, {"id", "s1"}});
  std::optional<Json> before = waitEventWithId("s1");
  ASSERT_TRUE(before);
  ASSERT_EQ((*before)["nodes"].size(), 1u);
  const uint64_t sentBefore = (*before)["nodes"][0]["render_data_bytes_sent"];

  // Bad lines are answered with errors; the session goes on.
  sendRaw("this is not json");
  send({{"op", "warp"}, {"id", "e1"}});
  send({{"op", "camera"}, {"eye", {0, 1}}, {"target", {0, 1, 0}}, {"id", "e2"}});
  send({{"op", "material"}, {"name", "no such material"}, {"roughness", 0.5}, {"id", "e3"}});
  send({{"op", "save"}, {"path", dir_.file("x.bmp")}, {"id", "e4"}});
  send({{"op", "peer"}, {"address", std::string(300, 'a') + ":1"}, {"id", "e5"}});
  for (const char* id : {"e1", "e2", "e3", "e4", "e5"}) {
    std::optional<Json> e = waitEventWithId(id);
    ASSERT_TRUE(e) << id;
    EXPECT_EQ((*e)["event"], "error") << e->dump();
  }
  EXPECT_EQ((*waitEventWithId("e2"))["field"], "eye");
  EXPECT_NE((*waitEventWithId("e3"))["message"].get<std::string>().find("no such material"),
            std::string::npos);

  // Two camera moves and an environment edit, then a save at the session's spp.
  send({{"op", "camera"}, {"eye", {0.3, 1.0, 3.6}}, {"target", {0, 1, 0}}, {"yfov", 38}});
  send({{"op", "camera"}, {"eye", {-0.2, 1.1, 3.4}}, {"target", {0, 0.9, 0}}, {"yfov", 42},
        {"id", "c2"}});
  ASSERT_TRUE(waitEventWithId("c2"));
  send({{"op", "stats"}, {"id", "s2"}});
  std::optional<Json> afterCamera = waitEventWithId("s2");
  ASSERT_TRUE(afterCamera);
  const uint64_t sentAfter = (*afterCamera)["nodes"][0]["render_data_bytes_sent"];
  EXPECT_LE(sentAfter - sentBefore, 2u * 4096u) << "two camera moves";

  send({{"op", "env"}, {"color", {0.2, 0.3, 0.4}}});
  send({{"op", "save"}, {"path", dir_.file("session.exr")}, {"id", "save1"}});
  std::optional<Json> saved = waitEventWithId("save1", true);
  ASSERT_TRUE(saved) << session_->err();
  ASSERT_EQ((*saved)["event"], "saved") << saved->dump();
  EXPECT_EQ((*saved)["spp"], 16);

  const std::string want = render("final", {"--spp", "16", "--look-at", "-0.2,1.1,3.4,0,0.9,0",
                                            "--yfov", "42", "--env", "0.2,0.3,0.4"});
  testing::expectSameExr(dir_.file("session.exr"), want, "session save vs render");

  if (viaDaemon()) {
    EXPECT_NE(daemon_->err().find("this node is its Primary"), std::string::npos)
        << daemon_->err();
  }
  // The node rendered part of it.
  send({{"op", "stats"}, {"id", "s3"}});
  std::optional<Json> last = waitEventWithId("s3");
  ASSERT_TRUE(last);
  EXPECT_GT((*last)["nodes"][0]["samples"].get<uint64_t>(), 0u);

  send({{"op", "quit"}});
  EXPECT_EQ(session_->wait(10s), 0) << session_->err();
}

// `batch`: several edits as one generation (what the Blender add-on sends for an animation
// frame); all or nothing: a batch with a bad edit names it and changes nothing.
TEST_P(SessionTest, ABatchIsOneGenerationAndAllOrNothing) {
  startSession({"--local-only"}, "4");
  ASSERT_TRUE(waitReady()) << session_->err();
  send({{"op", "batch"},
        {"id", "bad"},
        {"ops", Json::array({Json{{"op", "env"}, {"color", {0.5, 0.5, 0.5}}},
                             Json{{"op", "camera"}, {"eye", {0, 1}}, {"target", {0, 1, 0}}}})}});
  std::optional<Json> bad = waitEventWithId("bad");
  ASSERT_TRUE(bad);
  EXPECT_EQ((*bad)["event"], "error") << bad->dump();
  EXPECT_EQ((*bad)["field"], "ops[1].eye") << bad->dump();
  // An edit that does not apply, before one that does not parse: the first is named.
  send({{"op", "batch"},
        {"id", "bad2"},
        {"ops", Json::array({Json{{"op", "material"}, {"name", "nope"}, {"roughness", 0.5}},
                             Json{{"op", "camera"}, {"eye", {0, 1}}, {"target", {0, 1, 0}}}})}});
  std::optional<Json> bad2 = waitEventWithId("bad2");
  ASSERT_TRUE(bad2);
  EXPECT_EQ((*bad2)["event"], "error") << bad2->dump();
  EXPECT_EQ((*bad2)["field"], "ops[0]") << bad2->dump();
  send({{"op", "batch"}, {"id", "save-op"}, {"ops", Json::array({Json{{"op", "save"}}})}});
  ASSERT_TRUE(waitEventWithId("save-op"));
  EXPECT_EQ((*waitEventWithId("save-op"))["event"], "error");

  send({{"op", "batch"},
        {"id", "b"},
        {"ops", Json::array({Json{{"op", "env"}, {"color", {0.2, 0.3, 0.4}}},
                             Json{{"op", "camera"},
                                  {"eye", {-0.2, 1.1, 3.4}},
                                  {"target", {0, 0.9, 0}},
                                  {"yfov", 42}}})}});
  std::optional<Json> generation = waitEventWithId("b");
  ASSERT_TRUE(generation);
  EXPECT_EQ((*generation)["event"], "generation") << generation->dump();
  EXPECT_EQ((*generation)["generation"], 2) << "the bad batches started none; this one, one";
  send({{"op", "save"}, {"path", dir_.file("batch.exr")}, {"id", "s"}});
  std::optional<Json> saved = waitEventWithId("s", true);
  ASSERT_TRUE(saved);
  ASSERT_EQ((*saved)["event"], "saved") << saved->dump();
  // The env of the bad batch was not applied: the image is that of the good batch's state.
  testing::expectSameExr(dir_.file("batch.exr"),
                         render("batch", {"--spp", "4", "--look-at", "-0.2,1.1,3.4,0,0.9,0",
                                          "--yfov", "42", "--env", "0.2,0.3,0.4"}),
                         "batch then save vs render");
  send({{"op", "quit"}});
  EXPECT_EQ(session_->wait(10s), 0) << session_->err();
}

TEST_P(SessionTest, SaveAtOtherSamplesRestartsTheStateAtThatCount) {
  startSession({"--local-only"});
  ASSERT_TRUE(waitEvent([](const Json& e) { return e["event"] == "pass" && e["spp"] == 16; }))
      << session_->err();
  // 16 spp are in: 8 can only come from a new generation of the same state.
  send({{"op", "save"}, {"path", dir_.file("eight.exr")}, {"spp", 8}, {"id", "s8"}});
  std::optional<Json> saved = waitEventWithId("s8", true);
  ASSERT_TRUE(saved);
  ASSERT_EQ((*saved)["event"], "saved") << saved->dump();
  testing::expectSameExr(dir_.file("eight.exr"), render("eight", {"--spp", "8"}),
                         "save at 8 spp vs render --spp 8");
  send({{"op", "save"}, {"path", dir_.file("twelve.exr")}, {"spp", 12}, {"id", "s12"}});
  saved = waitEventWithId("s12", true);
  ASSERT_TRUE(saved);
  ASSERT_EQ((*saved)["event"], "saved") << saved->dump();
  testing::expectSameExr(dir_.file("twelve.exr"), render("twelve", {"--spp", "12"}),
                         "save at 12 spp vs render --spp 12");
}

// --pass-image: each pass's image is written (whole: renamed into place) and named by its
// `pass` event; the last one is the image `save` writes at the target. A folder that does not
// exist is refused at the start, naming the flag.
TEST_P(SessionTest, PassImageHoldsEachPassAndTheLastIsTheSavedImage) {
  const std::string passImage = dir_.file("pass.exr");
  startSession({"--local-only", "--pass-image", passImage}, "4");
  std::optional<Json> last =
      waitEvent([](const Json& e) { return e["event"] == "pass" && e["spp"] == 4; });
  ASSERT_TRUE(last) << session_->err();
  EXPECT_EQ((*last).value("image", ""), passImage) << last->dump();
  int passes = 0;
  for (const Json& e : events())
    if (e["event"] == "pass") passes += e.value("image", "") == passImage ? 1 : 100;
  EXPECT_EQ(passes, 3);  // 1, 2 and 4 spp, each naming the image
  send({{"op", "save"}, {"path", dir_.file("saved.exr")}, {"id", "s"}});
  std::optional<Json> saved = waitEventWithId("s", true);
  ASSERT_TRUE(saved);
  ASSERT_EQ((*saved)["event"], "saved") << saved->dump();
  testing::expectSameExr(passImage, dir_.file("saved.exr"), "last pass image vs save");
  EXPECT_FALSE(std::filesystem::exists(passImage + ".partial.exr"));
  send({{"op", "quit"}});
  EXPECT_EQ(session_->wait(20s), 0) << session_->err();

  startSession({"--local-only", "--pass-image", dir_.file("no/such/folder/pass.exr")}, "4",
               "bad");
  EXPECT_EQ(session_->wait(20s), 2);
  EXPECT_NE(session_->err().find("--pass-image"), std::string::npos) << session_->err();
  EXPECT_NE(session_->err().find("does not exist"), std::string::npos) << session_->err();
}

// A session stores the scene it compiled in the compiled cache when it ends; the next session
// and render of the scene start from the cache (its encoded form), and every image is the one
// a render that compiles the scene gives.
TEST_P(SessionTest, TheCompiledCacheServesTheNextSessionAndRenderWithTheSameImage) {
  const std::string want = render("compiled", {"--spp", "4", "--no-cache"});
  for (int run = 0; run < 2; ++run) {
    startSession({"--local-only"}, "4", "session" + std::to_string(run));
    ASSERT_TRUE(waitEvent([](const Json& e) { return e["event"] == "pass" && e["spp"] == 4; }))
        << session_->err();
    const std::string path = dir_.file("run" + std::to_string(run) + ".exr");
    send({{"op", "save"}, {"path", path}, {"id", "save"}});
    std::optional<Json> saved = waitEventWithId("save", true);
    ASSERT_TRUE(saved);
    ASSERT_EQ((*saved)["event"], "saved") << saved->dump();
    send({{"op", "quit"}});
    ASSERT_EQ(session_->wait(20s), 0) << session_->err();
    EXPECT_EQ(session_->err().find("from the cache") != std::string::npos, run == 1)
        << "run " << run << ": " << session_->err();
    testing::expectSameExr(path, want, "session run " + std::to_string(run) + " vs render");
  }
  // `render` finds what the session stored.
  const std::string cached = render("cached", {"--spp", "4"});
  testing::expectSameExr(cached, want, "render from the cache vs render that compiles");
  std::ifstream err(dir_.file("cached.err"));
  const std::string text((std::istreambuf_iterator<char>(err)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("from the cache"), std::string::npos) << text;
}

TEST_P(SessionTest, ClientGoingAwayEndsTheSessionAndFreesTheLease) {
  const std::string node = startNode();
  ASSERT_FALSE(node.empty());
  startSession({"--peer", node, "--no-local"}, "100000");
  ASSERT_TRUE(waitEvent([&](const Json& e) { return e["event"] == "node"; })) << session_->err();
  ASSERT_TRUE(waitUntil([&] { return node_->err().find("granted") != std::string::npos; }, 10s));
  const auto closed = std::chrono::steady_clock::now();
  session_->closeStdin();
  EXPECT_EQ(session_->wait(5s), 0) << session_->err();
  EXPECT_TRUE(waitUntil([&] { return node_->err().find("ended") != std::string::npos; }, 5s))
      << node_->err();
  EXPECT_LT(testing::secondsSince(closed), 1.5);
  if (viaDaemon()) {  // the daemon held it: its session ended when the client's connection did
    EXPECT_TRUE(waitUntil([&] {
      return daemon_->err().find("the client went away") != std::string::npos;
    }, 5s)) << daemon_->err();
  }
}

}  // namespace
}  // namespace pl

namespace pl {
namespace {

// --noise-threshold in a session (passes of 1, 2, 4, ... samples) retires the tiles that
// `render` (passes of 4, 8, ...) retires: both judge at 8, 16, ... samples, so a save is bitwise
// the render's image; pass events say how much of the frame is clean.
TEST_P(SessionTest, RenderUntilCleanSavesTheImageOfRender) {
  std::vector<std::string> flags = threads("2");
  flags.insert(flags.end(), {"--local-only", "--noise-threshold", "0.15"});
  startSession(flags, "256");
  ASSERT_TRUE(waitReady()) << session_->err();
  send({{"op", "save"}, {"path", dir_.file("clean.exr")}, {"id", "s"}});
  std::optional<Json> saved = waitEventWithId("s", true);
  ASSERT_TRUE(saved) << session_->err();
  ASSERT_EQ((*saved)["event"], "saved") << saved->dump();
  testing::expectSameExr(dir_.file("clean.exr"),
                         render("clean", {"--spp", "256", "--noise-threshold", "0.15"}),
                         "session save vs render, until clean");
  double clean = -1;
  for (const Json& e : events())
    if (e["event"] == "pass" && e.contains("clean")) clean = std::max(clean, e["clean"].get<double>());
  EXPECT_GT(clean, 0.0) << "no pass said part of the frame was clean";
  EXPECT_LE(clean, 1.0);
}

// --time-limit: each generation ends at its last complete pass after the limit (a `stopped`
// event); a save without spp writes that image, bitwise `peerlight render --spp` of that count;
// a save asking for more than the generation reached is an error naming spp; a camera move
// starts a generation with its own limit.
TEST_P(SessionTest, ATimeLimitEndsEachGenerationAtACompletePass) {
  std::vector<std::string> flags = threads("1");
  flags.insert(flags.end(), {"--local-only", "--time-limit", "0.5"});
  startSession(flags, "1048576");
  ASSERT_TRUE(waitReady()) << session_->err();
  std::optional<Json> stopped = waitEvent([](const Json& e) { return e["event"] == "stopped"; });
  ASSERT_TRUE(stopped) << session_->err();
  const uint32_t reached = (*stopped)["spp"].get<uint32_t>();
  EXPECT_GE(reached, 1u);
  EXPECT_LT(reached, 1048576u);
  EXPECT_EQ((*stopped)["generation"], 1);
  send({{"op", "save"}, {"path", dir_.file("limited.exr")}, {"id", "s1"}});
  std::optional<Json> saved = waitEventWithId("s1", true);
  ASSERT_TRUE(saved);
  ASSERT_EQ((*saved)["event"], "saved") << saved->dump();
  EXPECT_EQ((*saved)["spp"], reached);
  testing::expectSameExr(dir_.file("limited.exr"),
                         render("limited", {"--spp", std::to_string(reached)}),
                         "time-limited session save vs render");
  // A later generation (a camera move) gets its own limit and stops too.
  send({{"op", "camera"}, {"eye", {0.3, 1.0, 3.6}}, {"target", {0, 1, 0}}, {"id", "c"}});
  ASSERT_TRUE(waitEvent([](const Json& e) {
    return e["event"] == "stopped" && e["generation"] == 2;
  })) << session_->err();
  send({{"op", "save"}, {"path", dir_.file("never.exr")}, {"spp", 1048576}, {"id", "s2"}});
  std::optional<Json> refused = waitEventWithId("s2", true);
  ASSERT_TRUE(refused);
  EXPECT_EQ((*refused)["event"], "error") << refused->dump();
  EXPECT_EQ((*refused)["field"], "spp") << refused->dump();
  for (const Json& e : events())  // refused at once: the stopped film is not thrown away
    EXPECT_FALSE(e["event"] == "generation" && e.value("id", "") == "s2") << e.dump();
  send({{"op", "quit"}});
  EXPECT_EQ(session_->wait(10s), 0) << session_->err();
}

}  // namespace
}  // namespace pl
