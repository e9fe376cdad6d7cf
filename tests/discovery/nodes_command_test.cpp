// `peerlight nodes` against real `peerlight node` processes:
// - StaticPeers (anywhere): nodes on 127.0.0.1 with no mDNS at all (the system bus address
//   points nowhere); good, wrong-key, incompatible and unreachable peers each get the right
//   status and reason, and "no mDNS" is said once.
// - InNetworkNamespace (root, with avahi-daemon and dbus-daemon installed; label "discovery"):
//   a network namespace with only `lo`, a private system bus and avahi-daemon in it
//   (tests/integration/netns_sandbox.h), three nodes; `peerlight nodes --json --wait 2` lists
//   all three, found by mDNS within 2 s, with their devices and the key matching. Then a 4 s
//   owner job on node1's control socket (issue 4; Cap'n Proto, transport/control.capnp): within 2 s the listing shows node1 `primary`
//   and the others `idle`, both as Node.info says (with the cluster key) and as the mDNS TXT
//   record says (with another key, whose probe ends at the node's proof); within 2 s of the
//   job's connection closing, all `idle` again. Nothing multicasts in the root namespace.
// Every process, namespace and temp dir a test creates is removed by its sandbox, also when the
// test fails.

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "core/render/render_kernel.h"
#include "transport/protocol_convert.h"

#include "tests/integration/netns_sandbox.h"
#include "tests/integration/process.h"
#include "transport/control_client.h"
#include "transport/uv_kj_loop.h"

namespace pl {
namespace {

using testing::NetnsSandbox;
using testing::Process;
using testing::readFile;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

const std::string kPeerlight = std::string(PEERLIGHT_BINARY_DIR) + "/bin/peerlight";

void writeFilledKey(const std::string& path, char fill) {
  // Not printable: a generated key (typed ones are refused).
  std::ofstream(path, std::ios::binary) << std::string(32, char(fill | 0x80));
  chmod(path.c_str(), 0600);
}

// "listening on 127.0.0.1:PORT" -> "127.0.0.1:PORT"
std::string listenAddress(const std::string& line) {
  return line.substr(std::strlen("listening on "));
}

const nlohmann::json* byAddress(const nlohmann::json& list, const std::string& address) {
  if (!list.is_array()) return nullptr;
  for (const auto& j : list) {
    if (j["address"] == address) return &j;
  }
  return nullptr;
}

// "node still running", or how the node ended (for failure messages).
std::string processState(Process& p) {
  if (p.running()) return "node still running";
  std::optional<int> code = p.code();
  return "node ended with status " + (code ? std::to_string(*code) : std::string("?")) +
         (code && *code > 128 ? " (signal " + std::to_string(*code - 128) + ")" : "");
}

double msSince(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// An owner job on a node daemon's control socket (transport/control_client.h): NodeControl.ownerJob
// over Cap'n Proto, then the connection is kept open, silent. The job lasts as long as that
// connection stays open: until end() or destruction.
class OwnerJob {
 public:
  ~OwnerJob() { end(); }
  // "" once the daemon answered ok (within `timeout`); else why not.
  std::string start(const std::string& path, const std::string& token,
                    std::chrono::milliseconds timeout) {
    UvKjLoop loop;
    Result<int> fd = announceOwnerJob(loop, path, token, int(timeout.count()));
    if (!fd.ok()) return fd.error().message;
    fd_ = *fd;
    return "";
  }
  void end() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

TEST(NodesCommandTest, StaticPeersWithoutMdns) {
  // No namespace: the sandbox only gives the temp dir and outside(), whose system bus address
  // points nowhere: no mDNS at all, not even a responder elsewhere.
  NetnsSandbox box("pl-static");
  ASSERT_FALSE(box.dir().empty());
  writeFilledKey(box.file("key"), 'a');
  writeFilledKey(box.file("other.key"), 'b');
  struct NodeSpec {
    const char* log;
    const char* key;
    std::string version;
    std::string kernel;  // empty: this build's
  } specs[] = {{"good", "key", std::to_string(kProtocolVersion), ""},
               {"otherkey", "other.key", std::to_string(kProtocolVersion), ""},
               {"newer", "key", std::to_string(kProtocolVersion + 4), ""},
               {"otherbuild", "key", std::to_string(kProtocolVersion), "0123456789abcdef"}};
  std::vector<Process*> nodes;
  for (const auto& s : specs) {
    std::vector<std::string> argv = {kPeerlight, "node", "--listen", "127.0.0.1:0", "--threads",
                                     "1", "--name", s.log, "--key-file", box.file(s.key),
                                     "--protocol-version", s.version, "--no-mdns",
                                     "--no-control-socket"};
    if (!s.kernel.empty()) argv.insert(argv.end(), {"--render-kernel", s.kernel});
    nodes.push_back(&box.spawn(-1, argv, s.log));
  }
  std::vector<std::string> addresses;
  for (size_t i = 0; i < nodes.size(); ++i) {
    std::optional<std::string> line = nodes[i]->waitForOutput("listening on ", 10s);
    ASSERT_TRUE(line.has_value()) << specs[i].log << ": " << nodes[i]->err();
    addresses.push_back(listenAddress(*line));
  }
  const std::string unreachable = "127.0.0.1:1";
  auto start = Clock::now();
  Process& listing = box.spawn(
      -1,
      {kPeerlight, "nodes", "--json", "--key-file", box.file("key"), "--peer", addresses[0],
       "--peer", addresses[1], "--peer", addresses[2], "--peer", addresses[3], "--peer",
       unreachable},
      "nodes");
  ASSERT_EQ(listing.wait(20s), 0) << listing.err();
  // No mDNS: no --wait delay.
  EXPECT_LT(Clock::now() - start, 1500ms);
  std::string err = listing.err();
  size_t first = err.find("no mDNS (avahi-daemon not reachable): using static peers only");
  EXPECT_NE(first, std::string::npos) << err;
  EXPECT_EQ(err.find("no mDNS", first + 1), std::string::npos) << "said more than once:\n" << err;

  nlohmann::json list = nlohmann::json::parse(listing.out());
  ASSERT_EQ(list.size(), 5u) << list.dump(2);
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
  EXPECT_EQ((*newer)["version"], kProtocolVersion + 4);
  EXPECT_EQ((*newer)["reason"], "speaks protocol " + std::to_string(kProtocolVersion + 4) +
                                    ", we speak " + std::to_string(kProtocolVersion));

  // Same protocol, another build: its pixels would differ, so it is not usable either.
  const nlohmann::json* otherBuild = byAddress(list, addresses[3]);
  ASSERT_NE(otherBuild, nullptr);
  EXPECT_EQ((*otherBuild)["status"], "incompatible");
  EXPECT_EQ((*otherBuild)["usable"], false);
  EXPECT_EQ((*otherBuild)["keyMatch"], true);
  EXPECT_EQ((*otherBuild)["reason"],
            "renders with another build of peerlight (render kernel 0123456789abcdef, ours " +
                std::string(renderKernelId()) + ")");

  const nlohmann::json* gone = byAddress(list, unreachable);
  ASSERT_NE(gone, nullptr);
  EXPECT_EQ((*gone)["status"], "unreachable");
  EXPECT_NE((*gone)["reason"].get<std::string>().find("unreachable"), std::string::npos);
}

// What `peerlight nodes` shows of each node's state, two ways at once: `withKey` with the
// cluster key (the state is the node's Node.info answer), `withoutKey` with another key (the
// probe ends at the node's proof, so the state is the one its mDNS TXT record carries).
struct StateListing {
  nlohmann::json withKey, withoutKey;
  std::string log;  // both runs' stderr
};

StateListing listStates(NetnsSandbox& box, int round) {
  const std::string tag = std::to_string(round);
  // A short browse: the nodes have been advertised for seconds, avahi knows them already.
  Process& withKey =
      box.spawn(0, {kPeerlight, "nodes", "--json", "--wait", "0.3", "--key-file", box.file("key")},
                "state-key" + tag);
  Process& withoutKey = box.spawn(
      0, {kPeerlight, "nodes", "--json", "--wait", "0.3", "--key-file", box.file("other.key")},
      "state-other" + tag);
  StateListing out;
  std::optional<int> a = withKey.wait(15s), b = withoutKey.wait(15s);
  out.log = "exit " + std::to_string(a.value_or(-1)) + ", " + std::to_string(b.value_or(-1)) +
            "\n" + withKey.err() + withoutKey.err();
  out.withKey = nlohmann::json::parse(withKey.out(), nullptr, false);
  out.withoutKey = nlohmann::json::parse(withoutKey.out(), nullptr, false);
  return out;
}

bool showsStates(const StateListing& s, const std::vector<std::string>& addresses,
                 const std::vector<std::string>& states) {
  for (size_t i = 0; i < addresses.size(); ++i) {
    const nlohmann::json* a = byAddress(s.withKey, addresses[i]);
    const nlohmann::json* b = byAddress(s.withoutKey, addresses[i]);
    if (a == nullptr || b == nullptr || (*a)["state"] != states[i] || (*b)["state"] != states[i])
      return false;
  }
  return true;
}

// Lists (listStates) again and again until both ways show `states` (by address), starting no
// new listing once 2 s have passed since `since`. Asserts the last listing shows them, and
// that the TXT state's listing ran without the key's proof.
void expectStatesWithin2s(NetnsSandbox& box, int& round, Clock::time_point since,
                          const std::vector<std::string>& addresses,
                          const std::vector<std::string>& states, const char* what,
                          Process& ownedNode) {
  StateListing seen;
  double startedMs = 0;
  do {
    startedMs = msSince(since);
    seen = listStates(box, round++);
  } while (!showsStates(seen, addresses, states) && msSince(since) < 2000);
  ASSERT_TRUE(showsStates(seen, addresses, states))
      << what << ": not shown by a listing started within 2 s\nwith the key:\n"
      << seen.withKey.dump(2) << "\nwith another key (TXT):\n"
      << seen.withoutKey.dump(2) << "\n"
      << seen.log << "\nlog of the owned node:\n"
      << ownedNode.err();
  for (const std::string& address : addresses) {
    const nlohmann::json& txt = *byAddress(seen.withoutKey, address);
    EXPECT_EQ(txt["source"], "mdns") << txt.dump();
    EXPECT_EQ(txt["status"], "wrong_key") << txt.dump();
    EXPECT_EQ(txt["proofOk"], false) << txt.dump();
  }
  std::printf("%s: shown by mDNS (TXT) and Node.info in a listing started %.0f ms after\n", what,
              startedMs);
}

TEST(NodesCommandDiscoveryTest, InNetworkNamespace) {
  if (std::string why = NetnsSandbox::unavailableReason(); !why.empty()) GTEST_SKIP() << why;
  NetnsSandbox box("pl-disc");
  ASSERT_EQ(box.start(), "");

  // Three nodes, one key. node1 takes owner jobs on a control socket; the others have none.
  constexpr int kOwned = 1;
  const std::string control = box.file("node1.sock");
  writeFilledKey(box.file("key"), 'k');
  writeFilledKey(box.file("other.key"), 'o');
  const auto nodesStarted = Clock::now();
  std::vector<Process*> nodes;
  for (int i = 0; i < 3; ++i) {
    std::string name = "node" + std::to_string(i);
    std::vector<std::string> argv = {
        kPeerlight, "node",   "--listen", "127.0.0.1:0", "--threads",
        "1",        "--name", name,       "--key-file",  box.file("key")};
    if (i == kOwned) {
      argv.insert(argv.end(), {"--control-socket", control});
    } else {
      argv.push_back("--no-control-socket");
    }
    nodes.push_back(&box.spawn(0, argv, name));
  }
  std::vector<std::string> addresses;
  for (int i = 0; i < 3; ++i) {
    std::optional<std::string> line = nodes[i]->waitForOutput("listening on ", 10s);
    ASSERT_TRUE(line.has_value()) << nodes[i]->err();
    addresses.push_back(listenAddress(*line));
  }
  const auto listStarted = Clock::now();
  Process& listing = box.spawn(
      0, {kPeerlight, "nodes", "--json", "--wait", "2", "--key-file", box.file("key")}, "nodes");
  ASSERT_EQ(listing.wait(15s), 0) << listing.err();
  nlohmann::json list = nlohmann::json::parse(listing.out(), nullptr, false);
  ASSERT_FALSE(list.is_discarded()) << listing.out();
  EXPECT_EQ(list.size(), 3u) << list.dump(2) << "\n" << listing.err();
  const double offsetMs =
      std::chrono::duration<double, std::milli>(listStarted - nodesStarted).count();
  for (int i = 0; i < 3; ++i) {
    const nlohmann::json* j = byAddress(list, addresses[i]);
    ASSERT_NE(j, nullptr) << addresses[i] << " not listed:\n"
                          << list.dump(2) << "\nnode log:\n"
                          << nodes[i]->err();
    EXPECT_EQ((*j)["source"], "mdns");
    EXPECT_EQ((*j)["name"], "node" + std::to_string(i));
    EXPECT_EQ((*j)["status"], "ok") << (*j)["reason"];
    EXPECT_EQ((*j)["keyMatch"], true);
    EXPECT_EQ((*j)["fingerprintMatch"], true);
    EXPECT_EQ((*j)["version"], kProtocolVersion);
    EXPECT_EQ((*j)["state"], "idle");
    ASSERT_GE((*j)["devices"].size(), 1u);
    EXPECT_EQ((*j)["devices"][0]["kind"], "cpu");
    ASSERT_TRUE((*j)["discoveredMs"].is_number());
    double seenMs = (*j)["discoveredMs"].get<double>();
    EXPECT_LT(seenMs, 2000.0) << "not found by mDNS within 2 s";
    std::printf(
        "discovery latency node%d: %.0f ms from node start (%.0f ms after browsing began)\n", i,
        offsetMs + seenMs, seenMs);
  }

  // An owner job on node1 (as `peerlight render` on its machine would start): the other
  // machines see it `primary` while the job's connection is open, `idle` again once it closes.
  ASSERT_TRUE(testing::waitUntil([&] { return std::filesystem::exists(control); }, 5s))
      << nodes[kOwned]->err();
  OwnerJob job;
  // A refused connection to a socket file that exists means no process listens on it any more
  // (a daemon that exits cleanly removes the file): say whether node1 is still there.
  ASSERT_EQ(job.start(control, "nodestest1", 5s), "") << processState(*nodes[kOwned]) << "\n"
                                                      << nodes[kOwned]->err();
  const auto jobStarted = Clock::now();
  int round = 0;
  expectStatesWithin2s(box, round, jobStarted, addresses, {"idle", "primary", "idle"},
                       "owner job started on node1", *nodes[kOwned]);
  ASSERT_FALSE(::testing::Test::HasFatalFailure());
  // The job lasts 4 s, as a render would: avahi announces a changed TXT record three times over
  // about 3 s, and a change that follows the previous one sooner reached the other browsers'
  // caches only 2-3 s later here (they keep a record received within the last second next to
  // its replacement, RFC 6762 10.2); ending the job after 2.6 s or less missed the 2 s bound.
  std::this_thread::sleep_until(jobStarted + 4s);
  job.end();
  expectStatesWithin2s(box, round, Clock::now(), addresses, {"idle", "idle", "idle"},
                       "owner job ended on node1", *nodes[kOwned]);
}

}  // namespace
}  // namespace pl
