// A `peerlight node` process against hostile or broken clients: raw garbage and oversized
// Cap'n Proto frames on a plain TCP socket (refused by its TLS layer), then an authenticated
// Cap'n Proto client (over TLS, transport/secure_channel.h) sending a
// chunk with a wrong hash, an oversized chunk, a manifest naming chunks it never sent, work
// units outside the image, an unknown scene and a device outside its lease. The node must answer
// with errors or drop that connection, and keep serving: a normal render through it afterwards
// is bitwise identical to a local one.

#include <arpa/inet.h>
#include <capnp/rpc-twoparty.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cstring>
#include <random>

#include "core/render/image_io.h"
#include "core/scene/compile.h"
#include "tests/transport/chunk_test_util.h"
#include "tests/integration/process.h"
#include "tests/transport/loop_test_util.h"
#include "transport/auth.h"
#include "transport/chunk_codec.h"
#include "transport/protocol_convert.h"
#include "transport/secure_channel.h"
#include "transport/tcp.h"
#include "transport/uv_kj_loop.h"

namespace pl {
namespace {

using testing::exceptionFrom;
using testing::Process;
using testing::TempDir;
using testing::waitFor;
using namespace std::chrono_literals;

const std::string kBinary = PEERLIGHT_BINARY;
const std::string kScene = std::string(PEERLIGHT_SOURCE_DIR) + "/scenes/cornell_box.gltf";

// Connects a plain socket to 127.0.0.1:port (blocking, 5 s send/receive timeouts).
int rawConnect(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(uint16_t(port));
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// True when the peer closes (or resets) the connection within `timeout`, discarding anything it
// sends first.
bool closedByPeer(int fd, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return true;
  }
  return false;
}

void sendAll(int fd, const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::send(fd, p, size, MSG_NOSIGNAL);
    if (n <= 0) return;  // the node may close while we write: that is an answer too
    p += n;
    size -= size_t(n);
  }
}

// A TLS connection keyed by `key` (as `peerlight render` makes).
kj::Own<kj::AsyncIoStream> connectSecure(UvKjLoop& loop, const std::string& address,
                                         const ClusterKey& key) {
  std::unique_ptr<SecureChannel> tls = SecureChannel::create(key).value();
  kj::Own<kj::AsyncIoStream> plain = waitFor(loop, connectTcp(loop.lowLevelIo(), address));
  return waitFor(loop, tls->wrapClient(kj::mv(plain)));
}

// An authenticated session on one connection (members destroyed capabilities first).
struct Session {
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyClient> rpc;
  proto::Gate::Client gate = nullptr;
  proto::Node::Client node = nullptr;
  proto::Lease::Client lease = nullptr;
  proto::RenderSession::Client session = nullptr;
};

std::unique_ptr<Session> openSession(UvKjLoop& loop, const std::string& address,
                                     const ClusterKey& key) {
  auto s = std::make_unique<Session>();
  s->stream = connectSecure(loop, address, key);
  s->rpc = kj::heap<capnp::TwoPartyClient>(*s->stream);
  s->gate = s->rpc->bootstrap().castAs<proto::Gate>();
  Nonce nonce = randomNonce();
  auto hello = s->gate.helloRequest();
  hello.setProtocolVersion(kProtocolVersion);
  hello.setNonce(kj::arrayPtr(nonce.data(), nonce.size()));
  hello.setPrimaryName("malformed-test");
  auto reply = waitFor(loop, hello.send());
  capnp::Data::Reader nodeNonce = reply.getNonce();
  Proof proof = primaryProof(key, std::span<const uint8_t>(nodeNonce.begin(), nodeNonce.size()),
                             nonce);
  auto auth = s->gate.authenticateRequest();
  auth.setProof(kj::arrayPtr(proof.data(), proof.size()));
  s->node = waitFor(loop, auth.send()).getNode();
  auto lease = s->node.leaseRequest();
  lease.initRequest().setPrimaryName("malformed-test");
  auto granted = waitFor(loop, lease.send());
  s->lease = granted.getLease();
  s->session = granted.getSession();
  return s;
}

// The description of the exception `fn` throws ("" if none).
template <typename Fn>
std::string errorOf(Fn&& fn) {
  KJ_IF_MAYBE (e, exceptionFrom(std::forward<Fn>(fn))) {
    std::printf("[ info ] node answered: %s\n", e->getDescription().cStr());
    return e->getDescription().cStr();
  }
  return "";
}

void putChunk(UvKjLoop& loop, Session& s, const Hash128& hash, kj::ArrayPtr<const kj::byte> data) {
  auto request = s.session.putRequest();
  auto chunk = request.initChunk();
  toProto(hash, chunk.initHash());
  chunk.setData(data);
  waitFor(loop, request.send());
}

// Puts a bad chunk named `hash` and returns the error the stream reports for it. A failed
// `-> stream` call shows on the stream's next send() once its reply is in, so this puts it
// again (at most 20 times, a missing() round trip in between) until a send() fails. Also
// checks (as a test expectation) that the chunk was never stored.
std::string badPutError(UvKjLoop& loop, Session& s, const Hash128& hash,
                        kj::ArrayPtr<const kj::byte> data) {
  return errorOf([&] {
    for (int attempt = 0; attempt < 20; ++attempt) {
      putChunk(loop, s, hash, data);
      auto missing = s.session.missingRequest();
      toProto(std::vector<Hash128>{hash}, missing.initHashes(1));
      auto lacking = fromProto(waitFor(loop, missing.send()).getMissing());
      EXPECT_TRUE(lacking.ok() && lacking->size() == 1) << "the node stored a bad chunk";
    }
  });
}

class MalformedClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    keyPath_ = dir_.file("cluster.key");
    testing::writeKey(keyPath_, 42);
    Result<ClusterKey> key = loadClusterKey(keyPath_, false);
    ASSERT_TRUE(key.ok()) << key.error().message;
    key_ = *key;
    node_ = Process({kBinary, "node", "--listen", "127.0.0.1:0", "--key-file", keyPath_,
                     "--threads", "1", "--name", "target", "--no-mdns",
                     "--no-control-socket"},
                    dir_.file("node.out"), dir_.file("node.err"), {"HOME=" + dir_.path()});
    std::optional<std::string> line = node_.waitForOutput("listening on ", 20s);
    ASSERT_TRUE(line) << node_.err();
    address_ = line->substr(std::strlen("listening on "));
    port_ = std::stoi(address_.substr(address_.rfind(':') + 1));
  }

  // A normal render through the node still works and matches a local render.
  void expectNodeStillRenders() {
    ASSERT_TRUE(node_.running()) << node_.err();
    auto run = [&](const std::string& tag, std::vector<std::string> extra) {
      std::vector<std::string> argv = {kBinary, "render", kScene, "-o", dir_.file(tag + ".exr"),
                                       "--size", "64x64", "--spp", "8", "--key-file", keyPath_};
      argv.insert(argv.end(), extra.begin(), extra.end());
      Process p(argv, dir_.file(tag + ".out"), dir_.file(tag + ".err"),
                {"HOME=" + dir_.path()});
      EXPECT_EQ(p.wait(60s), 0) << p.err();
    };
    run("remote", {"--no-local", "--peer", address_});
    run("local", {"--local-only", "--threads", "1"});
    Result<ImageRgb> a = readExr(dir_.file("remote.exr")), b = readExr(dir_.file("local.exr"));
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_TRUE(a->rgb == b->rgb) << "render through the node differs from the local render";
  }

  TempDir dir_;
  std::string keyPath_;
  ClusterKey key_;
  Process node_;
  std::string address_;
  int port_ = 0;
};

TEST_F(MalformedClientTest, RawGarbageAndOversizedFramesAreDropped) {
  {
    int fd = rawConnect(port_);
    ASSERT_GE(fd, 0);
    std::mt19937 rng(3);
    std::vector<uint8_t> garbage(64 * 1024);
    for (auto& b : garbage) b = uint8_t(rng());
    sendAll(fd, garbage.data(), garbage.size());
    EXPECT_TRUE(closedByPeer(fd, 5s)) << "the node kept a connection that sent garbage";
    ::close(fd);
  }
  {
    // A frame header announcing one segment of 2^28 words (2 GiB): beyond any limit.
    int fd = rawConnect(port_);
    ASSERT_GE(fd, 0);
    const uint32_t header[2] = {0, 1u << 28};
    sendAll(fd, header, sizeof(header));
    EXPECT_TRUE(closedByPeer(fd, 5s)) << "the node waited for a 2 GiB message";
    ::close(fd);
  }
  {
    // 100000 segments announced. To the node's TLS layer these bytes (9f 86 ...) start an
    // SSLv2-style record of 8070 bytes, which it waits for until its handshake timeout (10 s).
    int fd = rawConnect(port_);
    ASSERT_GE(fd, 0);
    const uint32_t header[2] = {99999, 1};
    sendAll(fd, header, sizeof(header));
    EXPECT_TRUE(closedByPeer(fd, 15s)) << "the node accepted a frame of 100000 segments";
    ::close(fd);
  }
  {
    // Half a frame, then silence and close: the node must just forget it.
    int fd = rawConnect(port_);
    ASSERT_GE(fd, 0);
    const uint32_t header[2] = {0, 16};
    sendAll(fd, header, sizeof(header));
    ::close(fd);
  }
  expectNodeStillRenders();
}

TEST_F(MalformedClientTest, BadRequestsGetErrorsAndTheNodeKeepsServing) {
  UvKjLoop loop;
  Result<RenderData> compiled = loadAndCompile(kScene, CompileOptions{});
  ASSERT_TRUE(compiled.ok()) << compiled.error().message;
  ChunkStore store;
  ChunkManifest manifest = encodeRenderData(*compiled, store);
  std::vector<Hash128> hashes = manifest.chunkHashes();
  ASSERT_FALSE(hashes.empty());

  {  // Authentication without hello, and with a wrong proof.
    kj::Own<kj::AsyncIoStream> stream = connectSecure(loop, address_, key_);
    capnp::TwoPartyClient rpc(*stream);
    auto gate = rpc.bootstrap().castAs<proto::Gate>();
    auto auth = gate.authenticateRequest();
    auth.setProof(kj::heapArray<kj::byte>(32).asPtr());
    EXPECT_NE(errorOf([&] { waitFor(loop, auth.send()); }).find("authentication failed"),
              std::string::npos);
  }
  {  // A chunk whose bytes do not hash to its name.
    auto s = openSession(loop, address_, key_);
    const std::optional<std::span<const uint8_t>> encoded = store.find(hashes[0]);
    Hash128 wrong = hashes[0];
    wrong.lo ^= 1;
    std::string error =
        badPutError(loop, *s, wrong, kj::arrayPtr(encoded->data(), encoded->size()));
    EXPECT_NE(error.find("hash"), std::string::npos) << error;
  }
  {  // An oversized chunk (8 MiB of bytes: over the encoded limit).
    auto s = openSession(loop, address_, key_);
    std::vector<uint8_t> big(8u << 20, 0x5a);
    std::string error = badPutError(loop, *s, hashes[0], kj::arrayPtr(big.data(), big.size()));
    EXPECT_FALSE(error.empty()) << "an 8 MiB chunk was accepted";
  }
  {  // A truncated chunk.
    auto s = openSession(loop, address_, key_);
    const std::optional<std::span<const uint8_t>> encoded = store.find(hashes[0]);
    std::string error = badPutError(loop, *s, hashes[0],
                                    kj::arrayPtr(encoded->data(), encoded->size() / 2));
    EXPECT_FALSE(error.empty()) << "a truncated chunk was accepted";
  }
  {  // A manifest naming chunks the node never got (a fresh random scene nobody sent).
    auto s = openSession(loop, address_, key_);
    ChunkManifest unknown = manifest;
    for (auto& array : unknown.arrays) {
      for (auto& chunk : array.chunks) chunk.hash.hi ^= 0x1234567;
    }
    auto load = s->session.loadRequest();
    toProto(unknown, load.initManifest());
    std::string error = errorOf([&] { waitFor(loop, load.send()); });
    EXPECT_NE(error.find("missing"), std::string::npos) << error;
  }
  {  // Units outside the image, an unknown scene, a device outside the lease: errors; the
     // session keeps working for a good unit afterwards.
    auto s = openSession(loop, address_, key_);
    auto missing = s->session.missingRequest();
    toProto(hashes, missing.initHashes(uint32_t(hashes.size())));
    auto need = fromProto(waitFor(loop, missing.send()).getMissing());
    ASSERT_TRUE(need.ok());
    for (const Hash128& h : *need) {
      const std::optional<std::span<const uint8_t>> encoded = store.find(h);
      putChunk(loop, *s, h, kj::arrayPtr(encoded->data(), encoded->size()));
    }
    auto load = s->session.loadRequest();
    toProto(manifest, load.initManifest());
    Hash128 scene = fromProto(waitFor(loop, load.send(), 20000).getScene());

    auto renderError = [&](Hash128 sceneId, uint32_t device, WorkUnit unit) {
      auto request = s->session.renderRequest();
      toProto(sceneId, request.initScene());
      request.setDevice(device);
      toProto(unit, request.initUnit());
      return errorOf([&] { waitFor(loop, request.send(), 20000); });
    };
    WorkUnit good{Rect{0, 0, 8, 8}, 0, 1, 4};
    WorkUnit outside{Rect{100000, 0, 8, 8}, 0, 1, 4};
    WorkUnit empty{Rect{0, 0, 0, 0}, 0, 1, 4};
    WorkUnit badSamples{Rect{0, 0, 8, 8}, 3, 2, 4};
    WorkUnit hugeTile{Rect{0, 0, 30000, 30000}, 0, 1, 4};
    EXPECT_FALSE(renderError(scene, 0, outside).empty());
    EXPECT_FALSE(renderError(scene, 0, empty).empty());
    EXPECT_FALSE(renderError(scene, 0, badSamples).empty());
    EXPECT_FALSE(renderError(scene, 0, hugeTile).empty());
    Hash128 otherScene = scene;
    otherScene.lo ^= 42;
    EXPECT_NE(renderError(otherScene, 0, good).find("unknown scene"), std::string::npos);
    EXPECT_NE(renderError(scene, 99, good).find("device 99"), std::string::npos);
    EXPECT_EQ(renderError(scene, 0, good), "") << "a good unit failed after the bad ones";
  }
  expectNodeStillRenders();
}

}  // namespace
}  // namespace pl
