#include "transport/prepared_load.h"

#include <kj/vector.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <string>
#include <unordered_set>

#include "core/scene/texture_mips.h"
#include "transport/derived_arrays.h"

namespace pl {
namespace {

// An exception whose description is `message` alone (the node's load answer quotes it).
[[noreturn]] void fail(const std::string& message) {
  kj::throwFatalException(
      kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__, kj::heapString(message)));
}

}  // namespace

// What the pool jobs share (and may be the last to hold): the manifest, the data being filled,
// where each chunk goes. Nothing of the loop's, so it may be destroyed on a pool thread.
// `where` is set before any job; each array's `places` by that array's sizing job, and read
// only by jobs that run after it; `data` is moved out by finish()'s last job.
struct PreparedLoad::Work {
  ChunkManifest manifest;
  RenderData data;
  std::array<std::vector<ChunkPlace>, kRenderDataArrayCount> places;
  // Each chunk's references: (array, index in that array's chunks).
  std::unordered_map<Hash128, std::vector<std::pair<uint32_t, uint32_t>>, Hash128Hasher> where;
  // The chunks named only by derived arrays (the textures' mip levels): never wanted, no put
  // brings them; each texture's levels are computed once its level 0 is in (deriveTexture()),
  // and finish() checks them against these hashes.
  std::unordered_set<Hash128, Hash128Hasher> derivedOnly;
  // The first texel of each chunk of the texels array, in order.
  std::vector<uint64_t> texelChunkStart;

  // Where a placement writes the chunk: every place but those in derived arrays, which are
  // computed (a chunk of texels may have the bytes of one of the mip levels, which a pool job
  // may be writing).
  std::vector<const ChunkPlace*> placesOf(const Hash128& hash) const {
    std::vector<const ChunkPlace*> out;
    for (auto [array, index] : where.at(hash))
      if (!isDerivedArray(RenderDataArray(array))) out.push_back(&places[array][index]);
    return out;
  }
};

// The loop thread's part.
struct PreparedLoad::State {
  State(JobQueue& pool, std::shared_ptr<Work> work) : pool(pool), work(std::move(work)) {}
  JobQueue& pool;
  std::shared_ptr<Work> work;
  std::vector<kj::ForkedPromise<void>> sized;  // by array
  std::unordered_set<Hash128, Hash128Hasher> wanted;   // neither placed nor in flight
  std::unordered_set<Hash128, Hash128Hasher> placing;  // in flight
  std::unordered_map<Hash128, std::string, Hash128Hasher> failed;  // the last error of each
  uint32_t inFlight = 0;
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> idleWaiters;
  // onGeometry(): the geometry arrays' chunks not placed yet, the use waiting for them, and
  // the use once started. (No promise here holds this State: no cycle.)
  std::unordered_set<Hash128, Hash128Hasher> geometryLeft;
  kj::Maybe<GeometryUse> geometryUse;
  kj::Maybe<kj::ForkedPromise<void>> geometryDone;
  // The mip levels (the Work's derivedOnly): the textures array's chunks not placed yet; once
  // it is placed and checked (mipsPlanned), the texels chunks each texture still lacks and the
  // textures each texels chunk holds level-0 texels of; the textures whose levels are computed.
  std::unordered_set<Hash128, Hash128Hasher> texturesLeft;
  std::vector<bool> texelChunkPlaced;
  bool mipsPlanned = false;
  std::vector<uint32_t> texelChunksLeft;
  std::vector<std::vector<uint32_t>> texturesOfChunk;
  size_t texturesDerived = 0;
  // The planning and the computations (they hold the Work, never this State).
  PreparedLoad::IgnoreErrors ignoreErrors;
  kj::TaskSet derivations{ignoreErrors};

  // One job (a placement, a texture's levels) less in flight.
  void ended() {
    if (--inFlight == 0) {
      for (auto& waiter : idleWaiters) waiter->fulfill();
      idleWaiters.clear();
    }
  }
  kj::Promise<void> idle() {
    if (inFlight == 0) return kj::READY_NOW;
    auto paf = kj::newPromiseAndFulfiller<void>();
    idleWaiters.push_back(kj::mv(paf.fulfiller));
    return kj::mv(paf.promise);
  }
  // When every array that holds `hash` is sized (every array, for none).
  kj::Promise<void> sizedFor(kj::Maybe<const Hash128&> hash) {
    kj::Vector<kj::Promise<void>> arrays;
    KJ_IF_MAYBE (h, hash) {
      for (auto [array, index] : work->where.at(*h)) arrays.add(sized[array].addBranch());
    } else {
      for (auto& s : sized) arrays.add(s.addBranch());
    }
    return kj::joinPromises(arrays.releaseAsArray());
  }
};

PreparedLoad::PreparedLoad(ChunkManifest manifest, JobQueue& pool) {
  auto work = std::make_shared<Work>();
  work->manifest = std::move(manifest);
  for (uint32_t a = 0; a < kRenderDataArrayCount; ++a) {
    const std::vector<ChunkRef>& chunks = work->manifest.arrays[a].chunks;
    for (uint32_t i = 0; i < chunks.size(); ++i) work->where[chunks[i].hash].push_back({a, i});
  }
  for (const auto& [hash, refs] : work->where) {
    bool derived = true;
    for (auto [array, index] : refs) derived &= isDerivedArray(RenderDataArray(array));
    if (derived) work->derivedOnly.insert(hash);
  }
  uint64_t texel = 0;
  for (const ChunkRef& ref : work->manifest.arrays[uint32_t(RenderDataArray::texels)].chunks) {
    work->texelChunkStart.push_back(texel);
    texel += ref.rawBytes / sizeof(kernel::Rgba8);
  }
  state_ = std::make_shared<State>(pool, work);
  for (const auto& [hash, refs] : work->where)
    if (work->derivedOnly.count(hash) == 0) state_->wanted.insert(hash);
  state_->texelChunkPlaced.assign(work->texelChunkStart.size(), false);
  for (const ChunkRef& ref : work->manifest.arrays[uint32_t(RenderDataArray::textures)].chunks)
    state_->texturesLeft.insert(ref.hash);
  for (RenderDataArray which : kGeometryArrays) {
    for (const ChunkRef& ref : work->manifest.arrays[static_cast<uint32_t>(which)].chunks)
      state_->geometryLeft.insert(ref.hash);
  }
  // One sizing job per array, the geometry's first: a large array's pages (a scene's texels)
  // do not hold up the chunks of the others.
  std::array<kj::Maybe<kj::ForkedPromise<void>>, kRenderDataArrayCount> sized;
  auto size = [&](RenderDataArray which) {
    const uint32_t a = static_cast<uint32_t>(which);
    if (sized[a] != nullptr) return;
    sized[a] = runOnQueue<bool>(pool, [work, which, a]() {
                 work->places[a] = sizeForManifest(work->manifest, work->data, which);
                 return true;
               })
                   .ignoreResult()
                   .fork();
  };
  for (RenderDataArray which : kGeometryArrays) size(which);
  for (uint32_t a = 0; a < kRenderDataArrayCount; ++a) size(RenderDataArray(a));
  for (auto& s : sized) state_->sized.push_back(kj::mv(KJ_ASSERT_NONNULL(s)));
  if (state_->texturesLeft.empty()) planMips(state_);
}

PreparedLoad::~PreparedLoad() = default;

const ChunkManifest& PreparedLoad::manifest() const { return state_->work->manifest; }

bool PreparedLoad::wants(const Hash128& hash) const { return state_->wanted.count(hash) != 0; }

size_t PreparedLoad::texturesWithLevels() const { return state_->texturesDerived; }

bool PreparedLoad::holds(const Hash128& hash) const {
  const State& s = *state_;
  return s.work->where.count(hash) != 0 && s.work->derivedOnly.count(hash) == 0 &&
         s.wanted.count(hash) == 0 && s.placing.count(hash) == 0;
}

kj::Promise<void> PreparedLoad::place(const Hash128& hash,
                                      std::shared_ptr<const std::vector<uint8_t>> encoded) {
  return run(hash, [hash, encoded = std::move(encoded)](const Work& work) -> Status {
               const std::vector<const ChunkPlace*> places = work.placesOf(hash);
               const ChunkPlace& first = *places.front();
               for (const ChunkPlace* place : places) {
                 if (place->ref->rawBytes != first.ref->rawBytes)
                   return Error{"manifest: chunk " + hash.hex() + " is listed with " +
                                std::to_string(first.ref->rawBytes) + " and " +
                                std::to_string(place->ref->rawBytes) + " raw bytes"};
               }
               Status s = decodeChunkInto(hash, encoded->data(), encoded->size(),
                                          first.ref->rawBytes, first.dst);
               if (!s.ok()) return s;
               for (size_t i = 1; i < places.size(); ++i)
                 std::memcpy(places[i]->dst, first.dst, first.ref->rawBytes);
               return Status();
             });
}

kj::Promise<void> PreparedLoad::placeRaw(const Hash128& hash, std::span<const uint8_t> raw,
                                         std::shared_ptr<const void> keep) {
  return run(hash, [hash, raw, keep = std::move(keep)](const Work& work) -> Status {
    for (const ChunkPlace* place : work.placesOf(hash)) {
      if (raw.size() != place->ref->rawBytes)
        return Error{"chunk " + hash.hex() + ": " + std::to_string(raw.size()) +
                     " raw bytes held, the manifest says " +
                     std::to_string(place->ref->rawBytes)};
      std::memcpy(place->dst, raw.data(), raw.size());
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

void PreparedLoad::takeFrom(std::shared_ptr<PreparedLoad> earlier) {
  std::shared_ptr<State> from = earlier->state_;
  held_.add(from->idle().then([this, from, earlier = std::move(earlier)]() {
    RawChunks raw;
    for (const auto& [hash, refs] : from->work->where) {
      if (!state_->wanted.count(hash) || !earlier->holds(hash)) continue;
      const ChunkPlace* first = from->work->placesOf(hash).front();
      raw.emplace(hash, std::span<const uint8_t>(first->dst, first->ref->rawBytes));
    }
    placeHeld(raw, from->work, [](const Hash128&) { return nullptr; });
  }));
}

// Runs a placement of `hash` (wanted) on the pool once its arrays are sized. While it runs the
// chunk is neither wanted nor placed; it ends placed, or wanted again (its error kept). The job
// is this object's (held_): the caller gets a branch of it.
kj::Promise<void> PreparedLoad::run(const Hash128& hash, kj::Function<Status(const Work&)> job) {
  std::shared_ptr<State> state = state_;
  KJ_REQUIRE(state->wanted.erase(hash) == 1, "chunk not wanted", hash.hex());
  state->placing.insert(hash);
  ++state->inFlight;
  auto end = [state, hash](bool placed) {
    KJ_DEFER(state->ended());  // after mipsPlaced() counted what it starts, even if it throws
    state->placing.erase(hash);
    if (!placed) state->wanted.insert(hash);
    if (placed && state->geometryLeft.erase(hash) != 0 && state->geometryLeft.empty())
      geometryPlaced(*state);
    if (placed) mipsPlaced(state, hash);
  };
  kj::ForkedPromise<void> placed =
      state->sizedFor(hash)
          .then([&pool = state->pool, work = state->work, job = kj::mv(job)]() mutable {
            return runOnQueue<Status>(pool, [work, job = kj::mv(job)]() mutable {
              return job(*work);
            });
          })
          .then(
              [state, hash, end](Status placed) {
                if (!placed.ok()) {
                  state->failed[hash] = placed.error().message;
                  end(false);
                  fail(placed.error().message);
                }
                state->failed.erase(hash);
                end(true);
              },
              [end](kj::Exception&& e) {  // the pool went away
                end(false);
                kj::throwFatalException(kj::mv(e));
              })
          .fork();
  held_.add(placed.addBranch());
  return placed.addBranch();
}

// The textures array is placed (or has no chunk): once the arrays it indexes are sized, checks
// it (on the pool: validateTextures(), so that the computations stay within their arrays and
// each writes its own texels), then lists which texels chunks each texture's level 0 lies in,
// and computes the levels of those whose chunks are all in. A failed check computes nothing
// here: finish()'s validate() names it.
void PreparedLoad::planMips(const std::shared_ptr<State>& state) {
  std::shared_ptr<Work> work = state->work;
  kj::Vector<kj::Promise<void>> arrays;
  for (RenderDataArray which :
       {RenderDataArray::textures, RenderDataArray::texels, RenderDataArray::mipTexels})
    arrays.add(state->sized[static_cast<uint32_t>(which)].addBranch());
  ++state->inFlight;
  State* s = state.get();  // the task is the State's own: it never outlives it
  s->derivations.add(
      kj::joinPromises(arrays.releaseAsArray())
          .then([&pool = s->pool, work]() {
            return runOnQueue<bool>(pool, [work]() {
              return validateTextures(work->data.textures, work->data.texels.size(),
                                      work->data.mipTexels.size())
                  .ok();
            });
          })
          .then([s, work](bool valid) {
            if (valid && levelsInOrder(work->data.textures)) planTextures(*s);
          })
          .catch_([](kj::Exception&&) {})  // unplanned: finish() computes every level
          .then([s]() { s->ended(); }));
}

// Whether the textures' level-0 ranges come one after the other, as compile() makes them: each
// texels chunk then holds the level 0 of at most (its texels + 1) textures, and the plan is
// bounded by the chunks and the textures. (A sender that shares or reorders them is not
// planned for: finish() computes the levels of all at once.)
bool PreparedLoad::levelsInOrder(const std::vector<kernel::Texture>& textures) {
  uint64_t end = 0;
  for (const kernel::Texture& t : textures) {
    if (t.texelOffset < end) return false;
    end = uint64_t(t.texelOffset) + uint64_t(t.width) * t.height;
  }
  return true;
}

// Lists the texels chunks each texture's level 0 lies in and the textures each chunk holds
// texels of, then computes the levels of the textures whose chunks are all in (a texture
// without levels below 0 is done at once).
void PreparedLoad::planTextures(State& s) {
  const std::vector<uint64_t>& starts = s.work->texelChunkStart;
  const std::vector<kernel::Texture>& textures = s.work->data.textures;
  s.texelChunksLeft.assign(textures.size(), 0);
  s.texturesOfChunk.assign(starts.size(), {});
  for (uint32_t i = 0; i < textures.size(); ++i) {
    const kernel::Texture& t = textures[i];
    if (t.mipLevels <= 1) continue;
    const uint64_t first = t.texelOffset, last = first + uint64_t(t.width) * t.height;
    // The chunks from the one holding `first` to the one holding `last - 1`.
    size_t c = size_t(std::upper_bound(starts.begin(), starts.end(), first) - starts.begin()) - 1;
    for (; c < starts.size() && starts[c] < last; ++c) {
      s.texturesOfChunk[c].push_back(i);
      s.texelChunksLeft[i] += s.texelChunkPlaced[c] ? 0 : 1;
    }
  }
  s.mipsPlanned = true;
  for (uint32_t i = 0; i < textures.size(); ++i) {
    if (textures[i].mipLevels <= 1) ++s.texturesDerived;
    else if (s.texelChunksLeft[i] == 0) deriveTexture(s, i);
  }
}

// A chunk is placed: when it completes the textures array, the levels are planned; when it
// completes a texture's level 0, that texture's levels are computed.
void PreparedLoad::mipsPlaced(const std::shared_ptr<State>& state, const Hash128& hash) {
  for (auto [array, index] : state->work->where.at(hash)) {
    if (array == uint32_t(RenderDataArray::textures) && state->texturesLeft.erase(hash) != 0 &&
        state->texturesLeft.empty())
      planMips(state);
    if (array != uint32_t(RenderDataArray::texels) || state->texelChunkPlaced[index]) continue;
    state->texelChunkPlaced[index] = true;
    if (!state->mipsPlanned) continue;
    for (uint32_t texture : state->texturesOfChunk[index])
      if (--state->texelChunksLeft[texture] == 0) deriveTexture(*state, texture);
  }
}

// Computes texture i's levels below 0 on the pool (its level 0 is in place, the textures were
// checked by planMips()).
void PreparedLoad::deriveTexture(State& state, uint32_t i) {
  ++state.inFlight;
  State* s = &state;
  s->derivations.add(runOnQueue<bool>(s->pool,
                                      [work = s->work, i]() {
                                        writeMipTexels(work->data.textures[i],
                                                       work->data.texels.data(),
                                                       work->data.mipTexels.data());
                                        return true;
                                      })
                         .then([s](bool) { ++s->texturesDerived; })
                         .catch_([](kj::Exception&&) {})  // finish() computes it then
                         .then([s]() { s->ended(); }));
}

void PreparedLoad::onGeometry(GeometryUse use) {
  KJ_REQUIRE(state_->geometryUse == nullptr && state_->geometryDone == nullptr, "one use only");
  state_->geometryUse = kj::mv(use);
  if (state_->geometryLeft.empty()) geometryPlaced(*state_);
}

// Every geometry chunk is placed: checks the geometry (pool), then hands it to the use.
void PreparedLoad::geometryPlaced(State& state) {
  KJ_IF_MAYBE (use, state.geometryUse) {
    std::shared_ptr<Work> work = state.work;
    kj::Vector<kj::Promise<void>> arrays;
    for (RenderDataArray which : kGeometryArrays)
      arrays.add(state.sized[static_cast<uint32_t>(which)].addBranch());
    state.geometryDone =
        kj::joinPromises(arrays.releaseAsArray())
            .then([&pool = state.pool, work]() {
              return runOnQueue<Status>(pool, [work]() { return work->data.validateGeometry(); });
            })
            .then([work, use = kj::mv(*use)](Status valid) mutable -> kj::Promise<void> {
              if (!valid.ok()) return kj::READY_NOW;  // finish()'s validate() names it
              return use(work->data, work);
            })
            .catch_([](kj::Exception&&) {})
            .fork();
    state.geometryUse = nullptr;
  }
}

kj::Promise<std::shared_ptr<const RenderData>> PreparedLoad::finish(EncodedLookup find) {
  std::shared_ptr<State> state = state_;
  return state->sizedFor(nullptr)
      .then([this]() { return held_.onEmpty(); })
      .then([state]() { return state->idle(); })
      .then([this, state, find = kj::mv(find)]() {
        // What the puts did not bring (a chunk the node held before, or one whose put failed).
        kj::Vector<kj::Promise<void>> rest;
        const std::vector<Hash128> wanted(state->wanted.begin(), state->wanted.end());
        for (const Hash128& hash : wanted) {
          std::shared_ptr<const std::vector<uint8_t>> bytes = find(hash);
          if (bytes == nullptr) {
            auto failed = state->failed.find(hash);
            fail(failed != state->failed.end()
                     ? failed->second
                     : "chunk " + hash.hex() + " is missing (put it first)");
          }
          rest.add(place(hash, std::move(bytes)));
        }
        return kj::joinPromises(rest.releaseAsArray());
      })
      .then([state]() {
        // The geometry's use reads the arrays until it is done.
        KJ_IF_MAYBE (done, state->geometryDone) return done->addBranch();
        return kj::Promise<void>(kj::READY_NOW);
      })
      // The mip levels that the last placements completed.
      .then([state]() { return state->idle(); })
      .then([state]() {
        const size_t derived = state->texturesDerived;
        return runOnQueue<Result<std::shared_ptr<const RenderData>>>(
            state->pool,
            [work = state->work, derived]() -> Result<std::shared_ptr<const RenderData>> {
              if (Status s = work->data.validate(); !s.ok())
                return Error{"render data from chunks: " + s.error().message};
              // Every texture's levels were computed as its level 0 came in (else all are now).
              Status s = derived == work->data.textures.size()
                             ? checkDerivedArrays(work->manifest, work->data)
                             : deriveArrays(work->manifest, work->data);
              if (!s.ok()) return s.error();
              return std::make_shared<const RenderData>(std::move(work->data));
            });
      })
      .then([](Result<std::shared_ptr<const RenderData>> data) {
        if (!data.ok()) fail(data.error().message);
        return kj::mv(*data);
      });
}

}  // namespace pl
