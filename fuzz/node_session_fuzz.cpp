// The Render Node's session handlers (transport/session_server.cpp, behind a NodeService) fed
// Cap'n Proto messages from bytes: the first byte picks the call (missing, put, load, render,
// renew), the rest is read as a message (segment table and segments, as on the wire, with the
// node's own traversal limit) whose root is that call's parameters, copied into the request.
// One node with one CPU device and a lease on it serve every input, so that state carries over
// (chunks put by one input can be loaded by the next): a malformed call must fail alone, and the
// session must keep serving.
//
// Render calls are bounded here to 64 x 64 pixels x 4 samples (the node bounds the pixels, not
// the samples, of a unit its Primary asked for: a huge but valid unit is slow, not a bug).
#include <capnp/serialize.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "core/render/cpu_device.h"
#include "fuzz/fuzz_target.h"
#include "fuzz/seed_scene.h"
#include "transport/chunk_codec.h"
#include "transport/node_service.h"
#include "transport/protocol_convert.h"
#include "transport/uv_kj_loop.h"

namespace {

using pl::proto::RenderSession;

enum Call : uint8_t { kMissing = 0, kPut, kLoad, kRender, kRenew, kCalls };

struct Harness {
  Harness() {
    std::vector<std::unique_ptr<pl::Device>> devices;
    devices.push_back(std::make_unique<pl::CpuDevice>(1));
    pl::NodeOptions options;
    options.name = "fuzz";
    options.tls = false;
    options.codecThreads = 1;
    options.chunkCacheBytes = 8 << 20;
    options.maxSceneBytes = 64 << 20;
    node = std::make_unique<pl::NodeService>(loop, pl::ClusterKey{std::vector<uint8_t>(32, 7)},
                                             std::move(devices), options);
    nodeCap = node->newTrustedNode("fuzz");
  }

  // A lease on device 0 (again, when the last one ended).
  void ensureLease() {
    if (hasLease) return;
    auto request = nodeCap.leaseRequest();
    request.initRequest().setPrimaryName("fuzz");
    auto reply = request.send().wait(loop.waitScope());
    lease = reply.getLease();
    session = reply.getSession();
    hasLease = true;
  }

  pl::UvKjLoop loop;
  std::unique_ptr<pl::NodeService> node;
  pl::proto::Node::Client nodeCap = nullptr;
  pl::proto::Lease::Client lease = nullptr;
  RenderSession::Client session = nullptr;
  bool hasLease = false;
};

Harness& harness() {
  static Harness* h = new Harness();  // never destroyed: the process exits with it
  return *h;
}

void call(Harness& h, uint8_t which, capnp::FlatArrayMessageReader& message) {
  kj::WaitScope& wait = h.loop.waitScope();
  switch (which) {
    case kMissing: {
      auto params = message.getRoot<RenderSession::MissingParams>();
      auto request = h.session.missingRequest();
      request.setHashes(params.getHashes());
      request.send().wait(wait);
      break;
    }
    case kPut: {
      auto params = message.getRoot<RenderSession::PutParams>();
      // As an ordinary call, so that its own answer (or error) comes back here.
      auto request =
          h.session.typelessRequest(capnp::typeId<RenderSession>(), 1, nullptr);
      request.initAs<RenderSession::PutParams>().setChunk(params.getChunk());
      request.send().wait(wait);
      break;
    }
    case kLoad: {
      auto params = message.getRoot<RenderSession::LoadParams>();
      auto request = h.session.loadRequest();
      request.setManifest(params.getManifest());
      request.send().wait(wait);
      break;
    }
    case kRender: {
      auto params = message.getRoot<RenderSession::RenderParams>();
      const pl::WorkUnit unit = pl::fromProto(params.getUnit());
      if (uint64_t(unit.tile.pixelCount()) * unit.sampleCount() > 64 * 64 * 4) break;
      auto request = h.session.renderRequest();
      request.setScene(params.getScene());
      request.setDevice(params.getDevice());
      request.setUnit(params.getUnit());
      request.send().wait(wait);
      break;
    }
    default: {
      auto request = h.lease.renewRequest();
      request.setHeldDevices(which);
      request.send().wait(wait);
      break;
    }
  }
}

// A message of `which`'s parameters, as fuzz input: the call byte, then the flat message.
std::vector<uint8_t> input(uint8_t which, capnp::MessageBuilder& message) {
  kj::Array<capnp::word> words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  std::vector<uint8_t> out(1 + bytes.size());
  out[0] = which;
  std::memcpy(out.data() + 1, bytes.begin(), bytes.size());
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  Harness& h = harness();
  const uint8_t which = data[0] % kCalls;
  kj::Array<capnp::word> words = kj::heapArray<capnp::word>((size - 1) / sizeof(capnp::word));
  std::memcpy(words.begin(), data + 1, words.size() * sizeof(capnp::word));
  capnp::ReaderOptions options;
  options.traversalLimitInWords = (uint64_t(64) << 20) / sizeof(capnp::word);
  options.nestingLimit = 64;
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] {
                 h.ensureLease();
                 capnp::FlatArrayMessageReader message(words, options);
                 call(h, which, message);
               })) {
    static const bool verbose = std::getenv("PEERLIGHT_FUZZ_VERBOSE") != nullptr;
    if (verbose) std::fprintf(stderr, "call %u failed: %s\n", which, e->getDescription().cStr());
  }
  // The lease may have ended (a renew after expiry): the next input takes another.
  if (kj::runCatchingExceptions([&] { h.lease.renewRequest().send().wait(h.loop.waitScope()); }) !=
      nullptr)
    h.hasLease = false;
  return 0;
}

std::vector<std::vector<uint8_t>> pl::fuzz::seeds() {
  pl::ChunkStore store;
  pl::ChunkEncodeOptions encode;
  encode.maxChunkBytes = 16 << 10;
  const pl::ChunkManifest manifest = pl::encodeRenderData(seedRenderData(), store, encode);
  const std::vector<pl::Hash128> hashes = manifest.chunkHashes();
  std::vector<std::vector<uint8_t>> out;
  {
    capnp::MallocMessageBuilder m;
    pl::toProto(hashes, m.initRoot<RenderSession::MissingParams>().initHashes(
                            uint32_t(hashes.size())));
    out.push_back(input(kMissing, m));
  }
  for (const pl::Hash128& hash : hashes) {
    capnp::MallocMessageBuilder m;
    auto chunk = m.initRoot<RenderSession::PutParams>().initChunk();
    pl::toProto(hash, chunk.initHash());
    const std::span<const uint8_t> bytes = *store.find(hash);
    chunk.setData(kj::arrayPtr(bytes.data(), bytes.size()));
    out.push_back(input(kPut, m));
  }
  {
    capnp::MallocMessageBuilder m;
    pl::toProto(manifest, m.initRoot<RenderSession::LoadParams>().initManifest());
    out.push_back(input(kLoad, m));
  }
  {
    capnp::MallocMessageBuilder m;
    auto params = m.initRoot<RenderSession::RenderParams>();
    pl::toProto(pl::sceneIdOf(manifest), params.initScene());
    params.setDevice(0);
    pl::WorkUnit unit;
    unit.tile = pl::Rect{0, 0, 16, 16};
    unit.sampleBegin = 0;
    unit.sampleEnd = 2;
    unit.totalSamples = 2;
    pl::toProto(unit, params.initUnit());
    out.push_back(input(kRender, m));
  }
  {
    capnp::MallocMessageBuilder m;
    m.initRoot<RenderSession::PingParams>();
    out.push_back(input(kRenew, m));
  }
  return out;
}
