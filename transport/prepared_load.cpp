#include "transport/prepared_load.h"

#include <kj/vector.h>

#include <cstring>
#include <string>
#include <unordered_set>

namespace pl {
namespace {

// An exception whose description is `message` alone (the node's load answer quotes it).
[[noreturn]] void fail(const std::string& message) {
  kj::throwFatalException(
      kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__, kj::heapString(message)));
}

}  // namespace

// What the pool jobs share (and may be the last to hold): the manifest, the data being filled,
// and each chunk's places (set by the sizing job, read by the jobs after it; `data` is moved
// out by finish's last job). Nothing of the loop's, so it may be destroyed on a pool thread.
struct PreparedLoad::Work {
  ChunkManifest manifest;
  RenderData data;
  std::unordered_map<Hash128, std::vector<ChunkPlace>, Hash128Hasher> places;
};

// The loop thread's part.
struct PreparedLoad::State {
  State(JobQueue& pool, std::shared_ptr<Work> work)
      : pool(pool), work(std::move(work)), sized(nullptr) {}
  JobQueue& pool;
  std::shared_ptr<Work> work;
  kj::ForkedPromise<void> sized;
  std::unordered_set<Hash128, Hash128Hasher> chunks;   // the manifest's
  std::unordered_set<Hash128, Hash128Hasher> wanted;   // neither placed nor in flight
  std::unordered_set<Hash128, Hash128Hasher> placing;  // in flight
  std::unordered_map<Hash128, std::string, Hash128Hasher> failed;  // the last error of each
  uint32_t inFlight = 0;
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> idleWaiters;

  kj::Promise<void> idle() {
    if (inFlight == 0) return kj::READY_NOW;
    auto paf = kj::newPromiseAndFulfiller<void>();
    idleWaiters.push_back(kj::mv(paf.fulfiller));
    return kj::mv(paf.promise);
  }
};

PreparedLoad::PreparedLoad(ChunkManifest manifest, JobQueue& pool) {
  auto work = std::make_shared<Work>();
  work->manifest = std::move(manifest);
  state_ = std::make_shared<State>(pool, work);
  for (const ArrayManifest& array : work->manifest.arrays) {
    for (const ChunkRef& ref : array.chunks) state_->chunks.insert(ref.hash);
  }
  state_->wanted = state_->chunks;
  state_->sized = runOnQueue<bool>(pool, [work]() {
                    for (const ChunkPlace& place : sizeForManifest(work->manifest, work->data))
                      work->places[place.ref->hash].push_back(place);
                    return true;
                  })
                      .ignoreResult()
                      .fork();
}

PreparedLoad::~PreparedLoad() = default;

const ChunkManifest& PreparedLoad::manifest() const { return state_->work->manifest; }

bool PreparedLoad::wants(const Hash128& hash) const { return state_->wanted.count(hash) != 0; }

bool PreparedLoad::holds(const Hash128& hash) const {
  const State& s = *state_;
  return s.chunks.count(hash) != 0 && s.wanted.count(hash) == 0 && s.placing.count(hash) == 0;
}

kj::Promise<void> PreparedLoad::place(const Hash128& hash,
                                      std::shared_ptr<const std::vector<uint8_t>> encoded) {
  return placeEncoded(state_, hash, std::move(encoded));
}

kj::Promise<void> PreparedLoad::placeEncoded(std::shared_ptr<State> state, const Hash128& hash,
                                             std::shared_ptr<const std::vector<uint8_t>> encoded) {
  return run(kj::mv(state), hash,
             [hash, encoded = std::move(encoded)](const Work& work) -> Status {
               const std::vector<ChunkPlace>& places = work.places.at(hash);
               const ChunkPlace& first = places.front();
               for (const ChunkPlace& place : places) {
                 if (place.ref->rawBytes != first.ref->rawBytes)
                   return Error{"manifest: chunk " + hash.hex() + " is listed with " +
                                std::to_string(first.ref->rawBytes) + " and " +
                                std::to_string(place.ref->rawBytes) + " raw bytes"};
               }
               Status s = decodeChunkInto(hash, encoded->data(), encoded->size(),
                                          first.ref->rawBytes, first.dst);
               if (!s.ok()) return s;
               for (size_t i = 1; i < places.size(); ++i)
                 std::memcpy(places[i].dst, first.dst, first.ref->rawBytes);
               return Status();
             });
}

kj::Promise<void> PreparedLoad::placeRaw(const Hash128& hash, std::span<const uint8_t> raw,
                                         std::shared_ptr<const void> keep) {
  return run(state_, hash, [hash, raw, keep = std::move(keep)](const Work& work) -> Status {
    for (const ChunkPlace& place : work.places.at(hash)) {
      if (raw.size() != place.ref->rawBytes)
        return Error{"chunk " + hash.hex() + ": " + std::to_string(raw.size()) +
                     " raw bytes held, the manifest says " +
                     std::to_string(place.ref->rawBytes)};
      std::memcpy(place.dst, raw.data(), raw.size());
    }
    return Status();
  });
}

void PreparedLoad::placeHeld(const RawChunks& raw, std::shared_ptr<const void> keep,
                             const EncodedLookup& find) {
  const std::vector<Hash128> wanted(state_->wanted.begin(), state_->wanted.end());
  for (const Hash128& hash : wanted) {
    if (auto it = raw.find(hash); it != raw.end()) {
      held_.add(placeRaw(hash, it->second, keep));
    } else if (std::shared_ptr<const std::vector<uint8_t>> bytes = find(hash)) {
      held_.add(place(hash, std::move(bytes)));
    }
  }
}

// Runs a placement of `hash` (wanted) on the pool once the arrays are sized. While it runs the
// chunk is neither wanted nor placed; it ends placed, or wanted again (its error kept).
kj::Promise<void> PreparedLoad::run(std::shared_ptr<State> state, const Hash128& hash,
                                    kj::Function<Status(const Work&)> job) {
  KJ_REQUIRE(state->wanted.erase(hash) == 1, "chunk not wanted", hash.hex());
  state->placing.insert(hash);
  ++state->inFlight;
  auto ended = kj::defer([state, hash]() {
    if (state->placing.erase(hash) != 0) state->wanted.insert(hash);  // not placed
    if (--state->inFlight == 0) {
      for (auto& waiter : state->idleWaiters) waiter->fulfill();
      state->idleWaiters.clear();
    }
  });
  return state->sized.addBranch()
      .then([&pool = state->pool, work = state->work, job = kj::mv(job)]() mutable {
        return runOnQueue<Status>(pool, [work, job = kj::mv(job)]() mutable {
          return job(*work);
        });
      })
      .then([state, hash](Status placed) {
        if (!placed.ok()) {
          state->failed[hash] = placed.error().message;
          fail(placed.error().message);
        }
        state->placing.erase(hash);  // placed: the deferred end leaves it out of `wanted`
        state->failed.erase(hash);
      })
      .attach(kj::mv(ended));
}

kj::Promise<std::shared_ptr<const RenderData>> PreparedLoad::finish(EncodedLookup find) {
  std::shared_ptr<State> state = state_;
  return state->sized.addBranch()
      .then([state]() { return state->idle(); })
      .then([state, find = kj::mv(find)]() {
        // What the puts did not bring (a chunk the node held before, or one whose put failed).
        kj::Vector<kj::Promise<void>> rest;
        const std::vector<Hash128> wanted(state->wanted.begin(), state->wanted.end());
        for (const Hash128& hash : wanted) {
          std::shared_ptr<const std::vector<uint8_t>> bytes = find(hash);
          if (bytes == nullptr) {
            auto failed = state->failed.find(hash);
            const std::string why = failed != state->failed.end()
                                        ? failed->second
                                        : "chunk " + hash.hex() + " is missing (put it first)";
            fail(why);
          }
          rest.add(placeEncoded(state, hash, std::move(bytes)));
        }
        return kj::joinPromises(rest.releaseAsArray());
      })
      .then([state]() {
        return runOnQueue<Result<std::shared_ptr<const RenderData>>>(
            state->pool, [work = state->work]() -> Result<std::shared_ptr<const RenderData>> {
              if (Status s = work->data.validate(); !s.ok())
                return Error{"render data from chunks: " + s.error().message};
              return std::make_shared<const RenderData>(std::move(work->data));
            });
      })
      .then([](Result<std::shared_ptr<const RenderData>> data) {
        if (!data.ok()) fail(data.error().message);
        return kj::mv(*data);
      });
}

}  // namespace pl
