// The Render Node's handlers (transport/node_gate.cpp, node_service.cpp, session_server.cpp)
// fed Cap'n Proto messages from bytes: the first byte picks the call (RenderSession: missing,
// put, load, render; Lease: renew; Gate: hello, then authenticate, on a connection's fresh gate;
// Node: lease, which holds the lease only for the call), the rest is read as a message (segment
// table and segments, as on the wire, with the node's own traversal limit) whose root is that
// call's parameters, copied into the request.
// One node with one CPU device and a small memory budget serves every input, through a Primary's
// own path (Gate.hello/authenticate, Node.lease: a lease the budget counts). Each lease starts
// with the project's Cornell box put and loaded, so that a render of it can succeed whatever
// input comes first; state carries over between inputs (what one puts, the next may load): a
// malformed call must fail alone, and the session must keep serving.
//
// Render calls of valid units larger than 64 x 64 pixels x 4 samples are skipped here (the node
// bounds the pixels, not the samples, of a unit its Primary asked for: a huge valid unit is slow,
// not a bug); everything else, reversed or out-of-image units included, goes to the node.
#include <capnp/serialize.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "core/render/cpu_device.h"
#include "fuzz/fuzz_target.h"
#include "fuzz/seed_scene.h"
#include "transport/chunk_codec.h"
#include "core/cluster/memory_budget.h"
#include "transport/auth.h"
#include "transport/node_service.h"
#include "transport/protocol_convert.h"
#include "transport/uv_kj_loop.h"

namespace {

using pl::proto::RenderSession;

enum Call : uint8_t { kMissing = 0, kPut, kLoad, kRender, kRenew, kHello, kAuthenticate, kLease,
                     kCalls };

struct Harness {
  Harness() : budget(16 << 20) {
    std::vector<std::unique_ptr<pl::Device>> devices;
    devices.push_back(std::make_unique<pl::CpuDevice>(1));
    pl::NodeOptions options;
    options.name = "fuzz";
    options.tls = false;
    options.codecThreads = 1;
    options.chunkCacheBytes = 4 << 20;
    options.maxSceneBytes = 64 << 20;
    options.memoryBudget = &budget;
    node = std::make_unique<pl::NodeService>(loop, key, std::move(devices), options);
    // Authenticated as a Primary is (auth.h): the node's proof is not checked here.
    pl::proto::Gate::Client gate = node->newGate("fuzz");
    const pl::Nonce mine = pl::randomNonce();
    auto hello = gate.helloRequest();
    hello.setProtocolVersion(pl::kProtocolVersion);
    hello.setNonce(kj::arrayPtr(mine.data(), mine.size()));
    hello.setPrimaryName("fuzz");
    auto reply = hello.send().wait(loop.waitScope());
    auto theirs = reply.getNonce();
    const pl::Proof proof = pl::primaryProof(
        key, std::span<const uint8_t>(theirs.begin(), theirs.size()), mine);
    auto auth = gate.authenticateRequest();
    auth.setProof(kj::arrayPtr(proof.data(), proof.size()));
    nodeCap = auth.send().wait(loop.waitScope()).getNode();
    seedChunks = pl::encodeRenderData(pl::fuzz::seedRenderData(), seedStore, seedEncoding());
  }

  static pl::ChunkEncodeOptions seedEncoding() {
    pl::ChunkEncodeOptions encode;
    encode.maxChunkBytes = 16 << 10;
    return encode;
  }

  // A lease on device 0 (again, when the last one ended), holding the seed scene.
  void ensureLease() {
    if (hasLease) return;
    auto request = nodeCap.leaseRequest();
    request.initRequest().setPrimaryName("fuzz");
    auto reply = request.send().wait(loop.waitScope());
    lease = reply.getLease();
    session = reply.getSession();
    hasLease = true;
    for (const pl::Hash128& hash : seedChunks.chunkHashes()) {
      auto put = session.typelessRequest(capnp::typeId<RenderSession>(), 1, nullptr);
      auto chunk = put.initAs<RenderSession::PutParams>().initChunk();
      pl::toProto(hash, chunk.initHash());
      const std::span<const uint8_t> bytes = *seedStore.find(hash);
      chunk.setData(kj::arrayPtr(bytes.data(), bytes.size()));
      put.send().wait(loop.waitScope());
    }
    auto load = session.loadRequest();
    pl::toProto(seedChunks, load.initManifest());
    load.send().wait(loop.waitScope());
  }

  pl::UvKjLoop loop;
  const pl::ClusterKey key{std::vector<uint8_t>(32, 7)};
  pl::MemoryBudget budget;
  pl::ChunkStore seedStore;
  pl::ChunkManifest seedChunks;
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
      const bool slow = unit.sampleEnd > unit.sampleBegin &&
                        uint64_t(unit.tile.pixelCount()) * (unit.sampleEnd - unit.sampleBegin) >
                            64 * 64 * 4 &&
                        unit.validate(1 << 14, 1 << 14).ok();
      if (slow) break;
      auto request = h.session.renderRequest();
      request.setScene(params.getScene());
      request.setDevice(params.getDevice());
      request.setUnit(params.getUnit());
      request.send().wait(wait);
      break;
    }
    case kRenew: {
      auto params = message.getRoot<pl::proto::Lease::RenewParams>();
      auto request = h.lease.renewRequest();
      request.setHeldDevices(params.getHeldDevices());
      request.send().wait(wait);
      break;
    }
    case kHello:
    case kAuthenticate: {
      // A new connection's gate: hello from the bytes, or a valid hello then authenticate's
      // proof from the bytes (one attempt per gate).
      pl::proto::Gate::Client gate = h.node->newGate("fuzz");
      auto hello = gate.helloRequest();
      if (which == kHello) {
        auto params = message.getRoot<pl::proto::Gate::HelloParams>();
        hello.setProtocolVersion(params.getProtocolVersion());
        hello.setNonce(params.getNonce());
        hello.setPrimaryName(params.getPrimaryName());
        hello.send().wait(wait);
        break;
      }
      const pl::Nonce mine = pl::randomNonce();
      hello.setProtocolVersion(pl::kProtocolVersion);
      hello.setNonce(kj::arrayPtr(mine.data(), mine.size()));
      hello.setPrimaryName("fuzz");
      hello.send().wait(wait);
      auto auth = gate.authenticateRequest();
      auth.setProof(message.getRoot<pl::proto::Gate::AuthenticateParams>().getProof());
      auth.send().wait(wait);
      break;
    }
    default: {
      // Whatever it grants is released when the reply goes (and revokes nothing of the
      // harness's own lease for long: ensureLease() takes another).
      auto request = h.nodeCap.leaseRequest();
      request.setRequest(message.getRoot<pl::proto::Node::LeaseParams>().getRequest());
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
  const pl::ChunkManifest manifest =
      pl::encodeRenderData(seedRenderData(), store, Harness::seedEncoding());
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
    m.initRoot<pl::proto::Lease::RenewParams>().setHeldDevices(3);
    out.push_back(input(kRenew, m));
  }
  {
    capnp::MallocMessageBuilder m;
    auto hello = m.initRoot<pl::proto::Gate::HelloParams>();
    hello.setProtocolVersion(pl::kProtocolVersion);
    const pl::Nonce nonce = pl::randomNonce();
    hello.setNonce(kj::arrayPtr(nonce.data(), nonce.size()));
    hello.setPrimaryName("fuzz");
    out.push_back(input(kHello, m));
  }
  {
    capnp::MallocMessageBuilder m;
    const pl::Nonce proof{};  // 32 bytes, wrong: refused
    m.initRoot<pl::proto::Gate::AuthenticateParams>().setProof(
        kj::arrayPtr(proof.data(), proof.size()));
    out.push_back(input(kAuthenticate, m));
  }
  {
    capnp::MallocMessageBuilder m;
    auto request = m.initRoot<pl::proto::Node::LeaseParams>().initRequest();
    request.setPrimaryName("fuzz 2");
    request.setTtlMs(500);
    request.initDevices(1).set(0, 0);
    request.setReportsHeld(true);
    request.setHeldDevices(7);
    request.setPreempt(true);
    out.push_back(input(kLease, m));
  }
  return out;
}
