#pragma once
// Render data decoded into place while its chunks are still arriving (RenderSession.prepare,
// docs/DESIGN.md "Data path"). A node told the manifest before the puts sizes the scene's
// arrays at once, and decodes each chunk, verified against its hash, straight into every place
// the manifest names it as it arrives, on the codec pool, while the rest of the upload is on
// the wire. The load of the same manifest then only waits for the last chunks and validates:
// one allocation of the scene's bytes (not one for the chunks and one for the arrays), and the
// decode no longer follows the upload.
//
// Threads: the loop thread; decoding and sizing run on the JobQueue given (their results come
// back through runOnQueue). The arrays are written by pool jobs on disjoint byte ranges; the
// geometry's are read by onGeometry()'s use once their chunks are placed, the whole data by
// finish() once every job has ended.

#include <kj/async.h>

#include <functional>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "core/scene/render_data.h"
#include "core/util/hash.h"
#include "core/util/status.h"
#include "transport/chunk_codec.h"
#include "transport/job_queue.h"

namespace pl {

class PreparedLoad {
 public:
  // Sizes the arrays of `manifest` (validated, and admitted by the node's memory budget: this
  // allocates its raw bytes) on `pool`, which must outlive this object's jobs: one job per
  // array, the geometry's first, each array's chunks placed once it is sized.
  PreparedLoad(ChunkManifest manifest, JobQueue& pool);
  ~PreparedLoad();
  PreparedLoad(const PreparedLoad&) = delete;
  PreparedLoad& operator=(const PreparedLoad&) = delete;

  const ChunkManifest& manifest() const;

  // Whether `hash` names one of the manifest's chunks that is neither placed nor being placed.
  bool wants(const Hash128& hash) const;

  // How many textures' mip levels are computed: each as soon as its level 0 is in place (a
  // texture without levels below 0 counts once the textures are planned).
  size_t texturesWithLevels() const;

  // Whether the chunk is in place (decoded and verified; never for a chunk of the mip levels
  // alone, which is computed rather than placed).
  bool holds(const Hash128& hash) const;

  // Decodes the encoded chunk into every place the manifest names it, verifying its hash (on
  // the pool). Fails with the chunk's error ("chunk <hash>: ..."); the chunk is then wanted
  // again. The bytes are held until the job ends.
  kj::Promise<void> place(const Hash128& hash, std::shared_ptr<const std::vector<uint8_t>> encoded);
  // Copies raw, verified bytes of the chunk (render data this node decoded before holds them)
  // into its places; `keep` keeps them alive until the job ends.
  kj::Promise<void> placeRaw(const Hash128& hash, std::span<const uint8_t> raw,
                             std::shared_ptr<const void> keep);

  // Places, in the background, the wanted chunks that the node holds already: raw bytes from
  // `raw` (kept alive by `keep`), else encoded ones from `find`.
  using EncodedLookup =
      std::function<std::shared_ptr<const std::vector<uint8_t>>(const Hash128& hash)>;
  void placeHeld(const RawChunks& raw, std::shared_ptr<const void> keep,
                 const EncodedLookup& find);

  // Calls use(data, keep) once the chunks of the geometry arrays (kGeometryArrays) are placed
  // and pass RenderData::validateGeometry() (checked on the pool), while other chunks may still
  // be arriving: a device builds its BVH meanwhile. `data`'s geometry arrays stay as they are,
  // and `keep` keeps it alive, until the promise use() returns resolves, which finish() waits
  // for (its failure only costs the load that head start). Once; never for bad geometry.
  using GeometryUse =
      kj::Function<kj::Promise<void>(const RenderData& data, std::shared_ptr<const void> keep)>;
  void onGeometry(GeometryUse use);

  // This load replaces `earlier` (the node said the chunks it holds are here): once `earlier`
  // is idle, the chunks it placed that this one wants are copied from its arrays (in the
  // background; finish() waits for it). `earlier` lives until then.
  void takeFrom(std::shared_ptr<PreparedLoad> earlier);

  // Waits for every placement in flight, then places what is still wanted from `find` (the
  // node's encoded chunks; null when it lacks one), then validates: the render data, or the
  // first error (a chunk that did not decode, one that is missing, or an inconsistency).
  // Called once.
  kj::Promise<std::shared_ptr<const RenderData>> finish(EncodedLookup find);

 private:
  struct Work;
  struct State;
  kj::Promise<void> run(const Hash128& hash, kj::Function<Status(const Work&)> job);
  static void geometryPlaced(State& state);
  static void planMips(const std::shared_ptr<State>& state);
  static bool levelsInOrder(const std::vector<kernel::Texture>& textures);
  static void planTextures(State& state);
  static void mipsPlaced(const std::shared_ptr<State>& state, const Hash128& hash);
  static void deriveTexture(State& state, uint32_t texture);

  // Shared with the promises handed out (a put may outlive this object: a new prepare
  // replaces it). Loop thread only; the pool jobs share its Work.
  std::shared_ptr<State> state_;
  // Every placement (a caller's promise is a branch of it, so dropping that promise does not
  // stop the job or its bookkeeping), placeHeld()'s and takeFrom()'s. Their errors are the
  // state's: the chunk is wanted again.
  class IgnoreErrors final : public kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&&) override {}
  } ignoreErrors_;
  kj::TaskSet held_{ignoreErrors_};
};

}  // namespace pl
