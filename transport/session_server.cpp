#include "transport/session_server.h"

#include <capnp/message.h>
#include <kj/debug.h>
#include <zstd.h>

#include <atomic>
#include <chrono>

#include "core/util/log.h"
#include "transport/chunk_codec.h"
#include "transport/protocol_convert.h"
#include "transport/tile_codec.h"
#include "transport/worker_process.h"

namespace pl {
namespace {

// The largest encoded chunk a node accepts: the 4-byte header plus zstd's bound for 4 MiB.
const size_t kMaxEncodedChunkBytes = 4 + ZSTD_COMPRESSBOUND(kMaxChunkBytes);

struct RenderOutput {
  WorkUnit unit;
  std::vector<uint8_t> encodedSums;
  uint64_t raysTraced = 0;
  double renderMs = 0;
};

// Counts a load or render call of `lease` as in flight until it is answered, fails or is dropped,
// and records how it ended (LeaseState::quiet(): whether a worker may stay warm).
kj::Promise<void> tracked(LeaseState& lease, kj::Promise<void> call) {
  ++lease.callsInFlight;
  auto answered = std::make_shared<bool>(false);
  return call
      .then([lease = kj::addRef(lease), answered]() mutable {
        *answered = true;
        --lease->callsInFlight;
        lease->lastCallUnanswered = false;
      })
      .attach(kj::defer([lease = kj::addRef(lease), answered]() mutable {
        if (*answered) return;
        --lease->callsInFlight;
        lease->lastCallUnanswered = true;
      }));
}

// What a finished decode of `kept` does: logs it, registers the data as the node's decoded
// data of its geometry (later loads share it), and gives `scene` with it.
auto decodedAs(NodeResources& node, LoadedScene scene, std::pair<uint64_t, uint64_t> key,
               std::chrono::steady_clock::time_point start, LeaseId leaseId, ChunkManifest kept) {
  auto index = std::make_shared<const RawChunkIndex>(kept);
  return [&node, scene, key, start, leaseId, index, kept = std::move(kept)](
             std::shared_ptr<const RenderData> data) mutable {
    PL_LOG_DEBUG("lease %llu: scene %s: render data decoded (%.1f MiB) in %.0f ms",
                 (unsigned long long)leaseId, scene.id.hex().c_str(),
                 double(data->byteSize()) / (1 << 20),
                 std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                           start)
                     .count());
    scene.data = std::move(data);
    scene.camera = scene.data->camera[0];
    scene.width = scene.camera.width;
    scene.height = scene.camera.height;
    node.forgetExpiredDecoded();
    node.decoded[key] = NodeResources::Decoded{scene.data, std::move(kept), index};
    return scene;
  };
}

class SessionServer final : public proto::RenderSession::Server {
 public:
  explicit SessionServer(kj::Own<LeaseState> lease) : lease_(kj::mv(lease)) {}

  // put() is declared `-> stream`, and for such methods Cap'n Proto's server side holds back
  // every other call on the capability until the put finishes, and breaks the capability for
  // good when one put fails. Neither suits a node: ping() must answer while chunks are being
  // verified, and one bad chunk must fail only its own put (the Primary's flow control still
  // sees the error on its next put). So the server treats put() as an ordinary call; the client
  // still streams it with flow control.
  DispatchCallResult dispatchCall(
      uint64_t interfaceId, uint16_t methodId,
      capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer> context) override {
    DispatchCallResult result =
        proto::RenderSession::Server::dispatchCall(interfaceId, methodId, context);
    result.isStreaming = false;
    return result;
  }

  kj::Promise<void> missing(MissingContext context) override {
    lease_->checkServing();
    auto hashes = fromProto(context.getParams().getHashes());
    if (!hashes.ok()) failCall(hashes.error().message);
    // A scene this node can never load: the lease ends typed before any chunk is sent.
    if (const uint64_t sceneBytes = context.getParams().getSceneBytes(); sceneBytes != 0)
      if (Status s = lease_->node.admitUpload(*lease_, sceneBytes); !s.ok())
        failCall(s.error().message);
    auto lease = kj::addRef(*lease_);
    return lease_->putsDone().then(
        [context, hashes = std::move(*hashes), lease = kj::mv(lease)]() mutable {
          lease->checkServing();
          // What is here is pinned for this session: the Primary will not send it again. A chunk
          // that decoded data here holds counts as here too (its load copies it from there), and
          // that data is held for the session's loads.
          std::vector<Hash128> lacking;
          for (const Hash128& h : hashes) {
            if (lease->pin(h) || lease->node.chunks.contains(h)) continue;
            if (lease->holdsPrepared(h)) continue;
            if (std::shared_ptr<const RenderData> data = lease->node.decodedHolding(h)) {
              auto& held = lease->heldForLoads;
              if (std::find(held.begin(), held.end(), data) == held.end()) held.push_back(data);
              continue;
            }
            lacking.push_back(h);
          }
          toProto(lacking, context.getResults().initMissing(uint32_t(lacking.size())));
        });
  }

  kj::Promise<void> put(PutContext context) override {
    lease_->checkServing();
    auto chunk = context.getParams().getChunk();
    const Hash128 hash = fromProto(chunk.getHash());
    capnp::Data::Reader data = chunk.getData();
    const std::string name = "chunk " + hash.hex();
    if (data.size() > kMaxEncodedChunkBytes) {
      failCall(name + ": " + std::to_string(data.size()) + " encoded bytes, more than the limit of " +
               std::to_string(kMaxEncodedChunkBytes));
    }
    if (data.size() < 4 + 6) {  // header + the smallest zstd frame header
      failCall(name + ": truncated (" + std::to_string(data.size()) + " bytes)");
    }
    NodeResources& node = lease_->node;
    // A worker checks the bytes of an unchecked put even when it holds the chunk (its daemon
    // caches them once this put is answered).
    const bool unchecked = !node.options.verifyPuts && chunk.getUnchecked();
    if (node.chunks.contains(hash) && !unchecked) {
      lease_->pin(hash);
      return kj::READY_NOW;
    }
    unsigned long long declared = ZSTD_getFrameContentSize(data.begin() + 4, data.size() - 4);
    if (declared == ZSTD_CONTENTSIZE_ERROR || declared == ZSTD_CONTENTSIZE_UNKNOWN) {
      failCall(name + ": not a zstd frame that declares its content size");
    }
    if (declared == 0 || declared > kMaxChunkBytes) {
      failCall(name + ": declares " + std::to_string(declared) + " raw bytes, outside 1.." +
               std::to_string(kMaxChunkBytes));
    }
    auto bytes = std::make_shared<const std::vector<uint8_t>>(data.begin(), data.end());
    if (lease_->prepared != nullptr && lease_->prepared->wants(hash)) {
      // Decoded into the prepared load's arrays (which verifies it) while the upload goes on.
      // The worker keeps no encoded copy (the decoded data holds the chunk from now on); a
      // node's own lease caches it as any verified put.
      ++lease_->putsInFlight;
      auto lease = kj::addRef(*lease_);
      return lease_->prepared->place(hash, bytes)
          .then(
              [lease = kj::addRef(*lease), hash, bytes]() mutable {
                if (lease->node.options.verifyPuts) lease->store(hash, bytes);
              },
              [lease = kj::addRef(*lease)](kj::Exception&& e) mutable {
                refused(*lease, e.getDescription().cStr());
              })
          .attach(kj::defer([lease = kj::mv(lease)]() mutable { lease->putFinished(); }));
    }
    if (!node.options.verifyPuts && !unchecked) {  // a worker's: its daemon checked them
      lease_->store(hash, bytes);                   // (NodeOptions)
      return kj::READY_NOW;
    }
    if (auto it = lease_->forwardToWorker.find(hash); it != lease_->forwardToWorker.end()) {
      if (declared != it->second) {  // the worker's prepared load would refuse it
        refused(*lease_, name + ": declares " + std::to_string(declared) +
                             " raw bytes, the prepared manifest says " +
                             std::to_string(it->second));
      }
      // Prepared in the worker: it decodes the chunk into place now, which checks its hash,
      // while the upload goes on. So the daemon does not decode it too: it hands the bytes on
      // unchecked, and caches them once the worker has taken them (checked them).
      return checkedByWorker(kj::addRef(*lease_), hash, bytes);
    }
    ++lease_->putsInFlight;
    auto lease = kj::addRef(*lease_);
    return runOnQueue<Status>(*node.codecPool,
                         [hash, bytes, declared]() -> Status {
                           auto decoded = decodeChunk(hash, bytes->data(), bytes->size(),
                                                      uint32_t(declared));
                           if (!decoded.ok()) return decoded.error();
                           return Status();
                         })
        .then([lease = kj::addRef(*lease), hash, bytes, declared](Status verified) mutable {
          if (!verified.ok()) refused(*lease, verified.error().message);
          lease->store(hash, bytes);
          // Prepared in the worker since (a prepare came meanwhile): it decodes the chunk now,
          // while the upload goes on (the size checked again).
          auto it = lease->forwardToWorker.find(hash);
          if (it != lease->forwardToWorker.end() && it->second == declared)
            forward(*lease, hash, *bytes);
        })
        .attach(kj::defer([lease = kj::mv(lease)]() mutable { lease->putFinished(); }));
  }

  // The scene's arrays are sized now, and the puts that follow decode into them (in worker
  // mode: the worker's, to which the puts go on as they come, unchecked: checkedByWorker()).
  kj::Promise<void> prepare(PrepareContext context) override {
    lease_->checkServing();
    auto manifest = fromProto(context.getParams().getManifest());
    if (!manifest.ok()) failCall(manifest.error().message);
    if (Status s = lease_->node.admitLoad(*lease_, *manifest); !s.ok()) failCall(s.error().message);
    // Each chunk's raw size (a hash is one content, so one size): what a put must declare.
    std::unordered_map<Hash128, uint32_t, Hash128Hasher> sizes;
    for (const ArrayManifest& array : manifest->arrays) {
      for (const ChunkRef& ref : array.chunks) {
        auto [it, added] = sizes.emplace(ref.hash, ref.rawBytes);
        if (!added && it->second != ref.rawBytes)
          failCall("manifest: chunk " + ref.hash.hex() + " is listed with " +
                   std::to_string(it->second) + " and " + std::to_string(ref.rawBytes) +
                   " raw bytes");
      }
    }
    if (lease_->worker != nullptr) {
      lease_->forwardToWorker = std::move(sizes);
      auto request = lease_->workerSession.prepareRequest();
      request.setManifest(context.getParams().getManifest());
      return request.send().ignoreResult();
    }
    prepareHere(*lease_, std::move(*manifest));
    return kj::READY_NOW;
  }

  kj::Promise<void> load(LoadContext context) override {
    lease_->checkServing();
    auto manifest = fromProto(context.getParams().getManifest());
    if (!manifest.ok()) failCall(manifest.error().message);
    // The scene limit and the node's memory budget (a refusal has ended the lease, typed:
    // LeaseEnd::MemoryBudget or SceneTooLarge).
    if (Status s = lease_->node.admitLoad(*lease_, *manifest); !s.ok()) failCall(s.error().message);
    // When the load is over (done, failed or cancelled), the session's pins on its chunks go,
    // and, when no other load is in flight, the decoded data missing() held for them.
    ++lease_->loadsInFlight;
    auto unpin = kj::defer(
        [lease = kj::addRef(*lease_), hashes = manifest->chunkHashes()]() mutable {
          lease->pins.release(hashes);
          if (--lease->loadsInFlight == 0) lease->heldForLoads.clear();
        });
    auto lease = kj::addRef(*lease_);
    if (lease_->worker != nullptr) {
      return tracked(*lease_, loadInWorker(context, kj::mv(lease), std::move(*manifest))
                                  .attach(kj::mv(unpin)));
    }
    return tracked(
        *lease_,
        lease_->putsDone()
            .then([lease = kj::addRef(*lease), manifest = std::move(*manifest)]() mutable {
              return decodeScene(*lease, std::move(manifest));
            })
            .then([lease = kj::addRef(*lease)](LoadedScene scene) mutable {
              return loadOnDevices(*lease, scene).then([scene]() { return scene; });
            })
            .then([context, lease = kj::mv(lease)](LoadedScene scene) mutable {
              lease->checkServing();
              toProto(scene.id, context.getResults().initScene());
              lease->remember(std::move(scene));
            })
            .attach(kj::mv(unpin)));
  }

  // A render the Primary no longer wants (a camera move, a new generation) is cancelled: a
  // queued unit is skipped, a running one stops at its next pixel (RenderStop), and a
  // worker's call is cancelled with the node's.
  kj::Promise<void> render(RenderContext context) override {
    context.allowCancellation();
    lease_->checkServing();
    auto params = context.getParams();
    const Hash128 sceneId = fromProto(params.getScene());
    const LoadedScene* scene = lease_->findScene(sceneId);
    // (In worker mode too: the worker's session may hold scenes of the leases it served before.)
    if (scene == nullptr) failCall("unknown scene " + sceneId.hex() + " (load it first)");
    if (lease_->worker != nullptr) {
      if (!lease_->holdsDevice(params.getDevice())) {
        failCall("device " + std::to_string(params.getDevice()) +
                 " is not in this lease (devices " + joinIndices(lease_->devices) + ")");
      }
      auto request = lease_->workerSession.renderRequest();
      request.setScene(params.getScene());
      request.setDevice(params.getDevice());
      request.setUnit(params.getUnit());
      return tracked(*lease_, request.send().then(
          [context, lease = kj::addRef(*lease_), samples = fromProto(params.getUnit())](
              capnp::Response<proto::RenderSession::RenderResults>&& response) mutable {
            lease->checkServing();
            lease->samplesRendered += uint64_t(samples.tile.pixelCount()) * samples.sampleCount();
            context.getResults().setResult(response.getResult());
          }));
    }
    const uint32_t device = params.getDevice();
    if (!lease_->holdsDevice(device)) {
      failCall("device " + std::to_string(device) + " is not in this lease (devices " +
               joinIndices(lease_->devices) + ")");
    }
    const WorkUnit unit = fromProto(params.getUnit());
    if (Status valid = unit.validate(scene->width, scene->height); !valid.ok()) {
      failCall(valid.error().message);
    }
    if (unit.tile.pixelCount() > kMaxTileResultPixels) {
      failCall("work unit " + unit.describe() + ": more than " +
               std::to_string(kMaxTileResultPixels) + " pixels");
    }
    DeviceSlot* slot = lease_->node.slots[device].get();
    auto cancelled = lease_->cancelled;
    NodeCounters* counters = &lease_->node.counters;
    // Moved on from 0 when the call's promise goes (answered or cancelled).
    auto stop = std::make_shared<std::atomic<uint64_t>>(0);
    auto render = [slot, cancelled, counters, scene = *scene, unit,
                   stop]() -> Result<RenderOutput> {
      if (cancelled->load()) return Error{"lease ended"};
      if (Status s = ensureLoaded(*slot, scene, *counters); !s.ok()) return s.error();
      auto start = std::chrono::steady_clock::now();
      const RenderStop stopped(*stop, 0);
      Result<TileResult> result = slot->device->render(unit, stopped);
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                             start)
                      .count();
      if (!result.ok()) {
        if (stopped.requested()) counters->unitsStopped.fetch_add(1, std::memory_order_relaxed);
        return result.error();
      }
      PL_LOG_DEBUG("device %s: %s rendered in %.1f ms", slot->info.name.c_str(),
                   unit.describe().c_str(), ms);
      RenderOutput out;
      out.unit = unit;
      out.raysTraced = result->raysTraced;
      out.renderMs = ms;
      out.encodedSums = encodeTileResult(*result);
      return out;
    };
    return tracked(
        *lease_,
        runOnQueue<Result<RenderOutput>>(*slot->thread, kj::mv(render))
            .then([context, lease = kj::addRef(*lease_)](Result<RenderOutput> out) mutable {
              lease->checkServing();
              if (!out.ok()) failCall(out.error().message);
              toProto(out->unit, out->encodedSums, out->raysTraced, out->renderMs,
                      context.getResults().initResult());
            })
            .attach(kj::defer([stop]() { stop->store(1); })));
  }

  kj::Promise<void> ping(PingContext context) override {
    lease_->checkServing();
    return kj::READY_NOW;
  }

 private:
  // Worker mode: hands the worker the manifest's chunks it lacks (from this node's cache), then
  // forwards the load. The chunks go as a `-> stream` of puts whose messages reference the
  // cached bytes (no copy), so the daemon holds about one flow-control window of messages
  // (the socket's send buffer, or one chunk when larger) beyond its cache, however big the scene.
  static kj::Promise<void> loadInWorker(LoadContext context, kj::Own<LeaseState> lease,
                                        ChunkManifest manifest) {
    std::vector<Hash128> hashes = manifest.chunkHashes();
    const WorkerProcess* worker = lease->worker;
    auto refs = std::make_shared<WorkerChunkRefs::Refs>();
    return lease->putsDone()
        .then([lease = kj::addRef(*lease), hashes]() mutable {
          lease->checkServing();
          auto request = lease->workerSession.missingRequest();
          toProto(hashes, request.initHashes(uint32_t(hashes.size())));
          return request.send();
        })
        .then([lease = kj::addRef(*lease), worker, refs](
                  capnp::Response<proto::RenderSession::MissingResults>&& response) mutable {
          lease->checkServing();
          auto lacking = fromProto(response.getMissing());
          if (!lacking.ok()) failCall(lacking.error().message);
          auto send = std::make_shared<const std::vector<Hash128>>(std::move(*lacking));
          for (const Hash128& hash : *send) {
            auto bytes = lease->node.chunks.find(hash);
            if (bytes == nullptr) {
              failCall("load: chunk " + hash.hex() + " is missing (put it first)");
            }
            refs->push_back(std::move(bytes));
          }
          if (!refs->empty()) lease->node.workerChunkRefs.hold(worker, refs);
          return streamToWorker(kj::mv(lease), kj::mv(send), refs, 0);
        })
        .then([context, lease = kj::mv(lease), manifest = std::move(manifest), worker,
               refs]() mutable {
          lease->checkServing();
          auto request = lease->workerSession.loadRequest();
          request.setManifest(context.getParams().getManifest());
          // Once the worker answers the load (or fails it), it has read every put sent before
          // it: the bytes they reference may go (a warm worker outlives the lease).
          NodeResources* node = &lease->node;
          auto answered = [node, worker, refs]() { node->workerChunkRefs.release(worker, refs); };
          return request.send().then(
              [context, lease = kj::mv(lease), manifest = std::move(manifest), answered](
                  capnp::Response<proto::RenderSession::LoadResults>&& response) mutable {
                answered();
                lease->checkServing();
                context.getResults().setScene(response.getScene());
                LoadedScene scene;  // the id alone: the data is the worker's
                scene.id = fromProto(response.getScene());
                lease->remember(std::move(scene));
                if (lease->onLoaded) lease->onLoaded(manifest);
              },
              [answered](kj::Exception&& e) {
                answered();
                kj::throwFatalException(kj::mv(e));
              });
        });
  }

  // Sends hashes[next..] (bytes: refs[next..]) to the lease's worker, one put at a time: each
  // send() resolves when Cap'n Proto's flow control lets the next one go. A put the worker
  // refused fails a later send (and so the load).
  static kj::Promise<void> streamToWorker(kj::Own<LeaseState> lease,
                                          std::shared_ptr<const std::vector<Hash128>> hashes,
                                          std::shared_ptr<WorkerChunkRefs::Refs> refs, size_t next) {
    if (next == hashes->size()) return kj::READY_NOW;
    lease->checkServing();
    return sendToWorker(*lease, (*hashes)[next], *(*refs)[next], true)
        .then([lease = kj::mv(lease), hashes = kj::mv(hashes), refs = kj::mv(refs),
               next]() mutable {
          return streamToWorker(kj::mv(lease), kj::mv(hashes), kj::mv(refs), next + 1);
        });
  }

  // One put to the lease's worker; resolves when flow control lets the next one go. With
  // `byReference` the message references `bytes` when Cap'n Proto may read them in whole words
  // (the caller keeps them until the worker has read them); else it copies them.
  static kj::Promise<void> sendToWorker(LeaseState& lease, const Hash128& hash,
                                        const std::vector<uint8_t>& bytes, bool byReference) {
    auto put = lease.workerSession.putRequest(capnp::MessageSize{16, 1});
    auto chunk = put.initChunk();
    toProto(hash, chunk.initHash());
    if (byReference && referenceableBytes(bytes.data(), bytes.size()))
      chunk.adoptData(capnp::Orphanage::getForMessageContaining(chunk).referenceExternalData(
          kj::arrayPtr(bytes.data(), bytes.size())));
    else
      chunk.setData(kj::arrayPtr(bytes.data(), bytes.size()));
    return put.send();
  }

  // A put the worker's prepared load wants: handed on unchecked, as an ordinary call (not the
  // `-> stream` put, whose answer only says that flow control lets the next one go), so that
  // its answer says whether the worker took it; the daemon caches the bytes only then, and a
  // refusal fails this put with the worker's reason. This put's own answer waits for it, so
  // the Primary's flow control paces the puts as it did the daemon's check.
  static kj::Promise<void> checkedByWorker(kj::Own<LeaseState> lease, Hash128 hash,
                                           std::shared_ptr<const std::vector<uint8_t>> bytes) {
    constexpr uint16_t kPutMethod = 1;  // RenderSession.put @1 (transport/protocol.capnp)
    auto call = lease->workerSession.typelessRequest(capnp::typeId<proto::RenderSession>(),
                                                     kPutMethod, capnp::MessageSize{16, 1});
    auto chunk = call.initAs<proto::RenderSession::PutParams>().initChunk();
    toProto(hash, chunk.initHash());
    chunk.setUnchecked(true);
    chunk.setData(kj::arrayPtr(bytes->data(), bytes->size()));
    lease->node.counters.putsForwarded.fetch_add(1, std::memory_order_relaxed);
    ++lease->putsInFlight;
    LeaseState& state = *lease;
    return call.send()
        .then(
            [lease = kj::addRef(state), hash, bytes](auto&&) mutable {
              lease->node.counters.forwardsCheckedByWorker.fetch_add(1, std::memory_order_relaxed);
              lease->store(hash, bytes);
            },
            [lease = kj::addRef(state)](kj::Exception&& e) mutable {
              refused(*lease, e.getDescription().cStr());
            })
        .attach(kj::defer([lease = kj::mv(lease)]() mutable { lease->putFinished(); }));
  }

  // Hands a verified put on to the worker (a copy: nothing to hold for the message);
  // missing() and load() wait until it is sent.
  static void forward(LeaseState& lease, const Hash128& hash, const std::vector<uint8_t>& bytes) {
    lease.node.counters.putsForwarded.fetch_add(1, std::memory_order_relaxed);
    ++lease.putsInFlight;
    lease.forwards.add(sendToWorker(lease, hash, bytes, false)
                           .attach(kj::defer([&lease]() { lease.putFinished(); })));
  }

  [[noreturn]] static void refused(LeaseState& lease, const std::string& why) {
    PL_LOG_WARN("lease %llu: refused a chunk from %s: %s", (unsigned long long)lease.id,
                lease.primary.c_str(), why.c_str());
    failCall(why);
  }

  // In process: a prepared load of `manifest`, unless the load will need no decode (the scene
  // is loaded, or decoded data differs from it in the camera alone). What the node holds
  // already goes into place at once.
  // A prepare that replaces one of other geometry takes over what that one holds (the Primary
  // was told those chunks are here); one of the same geometry (a camera move) is kept: the load
  // shares its data. So is a decode of that geometry in flight.
  static void prepareHere(LeaseState& lease, ChunkManifest manifest) {
    NodeResources& node = lease.node;
    if (lease.findScene(sceneIdOf(manifest)) != nullptr) return;
    const Hash128 geometry = geometryKeyOf(manifest);
    const auto key = std::make_pair(geometry.lo, geometry.hi);
    if (auto it = node.decoded.find(key); it != node.decoded.end() && !it->second.data.expired())
      return;
    if (node.decoding.count(key) != 0) return;
    std::shared_ptr<PreparedLoad> earlier = std::move(lease.prepared);
    if (earlier != nullptr && geometryKeyOf(earlier->manifest()) == geometry) {
      lease.prepared = std::move(earlier);
      return;
    }
    lease.prepared = std::make_shared<PreparedLoad>(std::move(manifest), *node.codecPool);
    if (earlier != nullptr) lease.prepared->takeFrom(std::move(earlier));
    // The devices build their BVHs as soon as the geometry is in, while the rest still comes.
    std::vector<DeviceSlot*> slots;
    for (uint32_t d : lease.devices) slots.push_back(node.slots[d].get());
    lease.prepared->onGeometry([slots, cancelled = lease.cancelled](
                                   const RenderData& data, std::shared_ptr<const void> keep) {
      kj::Vector<kj::Promise<bool>> builds;
      for (DeviceSlot* slot : slots) {
        builds.add(runOnQueue<bool>(*slot->thread, [slot, &data, keep, cancelled]() {
          if (!cancelled->load()) slot->device->prepareGeometry(data);
          return true;
        }));
      }
      return kj::joinPromises(builds.releaseAsArray()).ignoreResult();
    });
    auto keep = std::make_shared<std::vector<std::shared_ptr<const RenderData>>>();
    const RawChunks raw = node.rawChunksFor(lease.prepared->manifest(), *keep);
    lease.prepared->placeHeld(raw, keep, [&node](const Hash128& hash) {
      return node.chunks.find(hash);
    });
  }

  // Assembles the manifest's render data (codec thread). When the node holds decoded data of a
  // manifest that differs from this one only in the camera (some device or session still holds
  // it), the scene shares that data and only its camera chunk is decoded.
  static kj::Promise<LoadedScene> decodeScene(LeaseState& lease, ChunkManifest manifest) {
    lease.checkServing();
    NodeResources& node = lease.node;
    LoadedScene scene;
    scene.id = sceneIdOf(manifest);
    if (const LoadedScene* known = lease.findScene(scene.id)) {
      PL_LOG_DEBUG("lease %llu: scene %s is loaded already", (unsigned long long)lease.id,
                   scene.id.hex().c_str());
      return *known;
    }
    const Hash128 geometry = geometryKeyOf(manifest);
    auto key = std::make_pair(geometry.lo, geometry.hi);
    // The same geometry being decoded (a camera move right behind the first load): wait, then
    // share it.
    if (auto it = node.decoding.find(key); it != node.decoding.end()) {
      return it->second.addBranch().then(
          [lease = kj::addRef(lease), manifest = std::move(manifest)]() mutable {
            return decodeScene(*lease, std::move(manifest));
          });
    }
    // This lease's prepared loads being finished hold chunks that missing() reported here (the
    // worker keeps no encoded copy): once they are decoded data, this load copies from it.
    kj::Vector<kj::Promise<void>> finishing;
    for (const std::shared_ptr<PreparedLoad>& p : lease.finishing) {
      const Hash128 g = geometryKeyOf(p->manifest());
      if (auto it = node.decoding.find(std::make_pair(g.lo, g.hi)); it != node.decoding.end())
        finishing.add(it->second.addBranch());
    }
    if (finishing.size() > 0) {
      return kj::joinPromises(finishing.releaseAsArray())
          .then([lease = kj::addRef(lease), manifest = std::move(manifest)]() mutable {
            return decodeScene(*lease, std::move(manifest));
          });
    }
    // Prepared with this geometry: its data, decoded as the chunks came (then shared, when only
    // the camera differs).
    std::shared_ptr<PreparedLoad> prepared;
    if (lease.prepared != nullptr && geometryKeyOf(lease.prepared->manifest()) == geometry)
      prepared = std::move(lease.prepared);
    if (auto it = node.decoded.find(key); it != node.decoded.end()) {
      // The camera of the data itself (this very scene, loaded by another session), or the
      // manifest's own camera chunk from the cache. A camera chunk that only other decoded data
      // holds (a node without a cache) takes the full path below, which copies it from there.
      const auto cameraArray = size_t(RenderDataArray::camera);
      const bool sameCamera =
          manifest.arrays[cameraArray] == it->second.manifest.arrays[cameraArray];
      bool cameraCached = true;
      for (const ChunkRef& ref : manifest.arrays[cameraArray].chunks)
        cameraCached = cameraCached && node.chunks.contains(ref.hash);
      std::shared_ptr<const RenderData> data = it->second.data.lock();
      if (data != nullptr && (sameCamera || cameraCached)) {
        Result<kernel::Camera> camera = sameCamera ? Result<kernel::Camera>(data->camera[0])
                                                   : decodeCamera(manifest, node.chunks);
        if (!camera.ok()) failCall("load: " + camera.error().message);
        node.counters.camerasDecoded.fetch_add(1, std::memory_order_relaxed);
        PL_LOG_DEBUG("lease %llu: scene %s shares decoded render data; camera decoded alone",
                     (unsigned long long)lease.id, scene.id.hex().c_str());
        scene.data = std::move(data);
        scene.camera = *camera;
        scene.width = camera->width;
        scene.height = camera->height;
        return scene;
      }
      if (data == nullptr) node.decoded.erase(it);
    }
    // A prepared load of other geometry holds chunks missing() reported here: this load is
    // prepared too, taking them over (prepareHere), and finished at once.
    if (prepared == nullptr && lease.prepared != nullptr) {
      prepareHere(lease, manifest);
      if (lease.prepared != nullptr && geometryKeyOf(lease.prepared->manifest()) == geometry)
        prepared = std::move(lease.prepared);
    }
    node.counters.scenesDecoded.fetch_add(1, std::memory_order_relaxed);
    const auto start = std::chrono::steady_clock::now();
    // Loads of this geometry wait for this decode (and then share it).
    auto decodingDone = kj::newPromiseAndFulfiller<void>();
    node.decoding.emplace(key, decodingDone.promise.fork());
    auto decodingEnds = kj::defer([&node, key, done = kj::mv(decodingDone.fulfiller)]() mutable {
      node.decoding.erase(key);
      done->fulfill();
    });
    if (prepared != nullptr) {
      node.counters.scenesPrepared.fetch_add(1, std::memory_order_relaxed);
      lease.finishing.push_back(prepared);
      const bool sameCamera = prepared->manifest() == manifest;
      LoadedScene preparedScene;
      preparedScene.id = sceneIdOf(prepared->manifest());
      // What decoded data that came since the prepare holds (a load finished meanwhile).
      auto held = std::make_shared<std::vector<std::shared_ptr<const RenderData>>>();
      prepared->placeHeld(node.rawChunksFor(prepared->manifest(), *held), held,
                          [&node](const Hash128& h) { return node.chunks.find(h); });
      auto loaded =
          prepared->finish([&node](const Hash128& h) { return node.chunks.find(h); })
              .attach(kj::defer([lease = kj::addRef(lease), prepared]() mutable {
                auto& f = lease->finishing;
                f.erase(std::remove(f.begin(), f.end(), prepared), f.end());
              }))
              .then(decodedAs(node, preparedScene, key, start, lease.id, prepared->manifest()),
                    [](kj::Exception&& e) -> LoadedScene {
                      failCall("load: " + std::string(e.getDescription().cStr()));
                    })
              .attach(kj::mv(decodingEnds));
      if (sameCamera) return loaded;
      // Decoded with the prepared camera: this load shares it, with its own camera.
      return loaded.then([lease = kj::addRef(lease), manifest = std::move(manifest)](
                             LoadedScene) mutable { return decodeScene(*lease, std::move(manifest)); });
    }
    // Chunks that decoded data here holds are copied from it; the others come out of the cache
    // here (loop thread). The codec thread only reads both.
    ChunkManifest kept = manifest;
    auto keep = std::make_shared<std::vector<std::shared_ptr<const RenderData>>>();
    auto raw = std::make_shared<RawChunks>(node.rawChunksFor(manifest, *keep));
    std::vector<std::pair<Hash128, std::shared_ptr<const std::vector<uint8_t>>>> encoded;
    for (const Hash128& hash : manifest.chunkHashes()) {
      if (raw->count(hash) != 0) continue;
      auto bytes = node.chunks.find(hash);
      if (bytes == nullptr) failCall("load: chunk " + hash.hex() + " is missing (put it first)");
      encoded.emplace_back(hash, std::move(bytes));
    }
    return runOnQueue<Result<std::shared_ptr<const RenderData>>>(
               *node.codecPool,
               [manifest = std::move(manifest), encoded = std::move(encoded), raw, keep,
                threads = node.options.codecThreads]()
                   -> Result<std::shared_ptr<const RenderData>> {
                 ChunkStore store;
                 for (auto& [hash, bytes] : encoded) store.putView(hash, *bytes, bytes);
                 Result<RenderData> data = decodeRenderData(manifest, store, raw.get(), threads);
                 if (!data.ok()) return data.error();
                 return std::make_shared<const RenderData>(std::move(*data));
               })
        .then([decoded = decodedAs(node, scene, key, start, lease.id, kept)](
                  Result<std::shared_ptr<const RenderData>> data) mutable {
          if (!data.ok()) failCall("load: " + data.error().message);
          return decoded(std::move(*data));
        })
        .attach(kj::mv(decodingEnds));
  }


  // Loads the scene on every device of the lease, each on its own thread, in parallel.
  static kj::Promise<void> loadOnDevices(LeaseState& lease, const LoadedScene& scene) {
    lease.checkServing();
    kj::Vector<kj::Promise<Status>> loads;
    for (uint32_t d : lease.devices) {
      DeviceSlot* slot = lease.node.slots[d].get();
      loads.add(runOnQueue<Status>(*slot->thread,
                                   [slot, cancelled = lease.cancelled,
                                    counters = &lease.node.counters, scene]() -> Status {
                                     if (cancelled->load()) return Error{"lease ended"};
                                     return ensureLoaded(*slot, scene, *counters);
                                   }));
    }
    return kj::joinPromises(loads.releaseAsArray()).then([](kj::Array<Status> statuses) {
      for (const Status& s : statuses) {
        if (!s.ok()) failCall("load: " + s.error().message);
      }
    });
  }

  kj::Own<LeaseState> lease_;
};

}  // namespace

kj::Own<proto::RenderSession::Server> newSessionServer(kj::Own<LeaseState> lease) {
  return kj::heap<SessionServer>(kj::mv(lease));
}

}  // namespace pl
