#pragma once
// Derived arrays (chunk_codec.h isDerivedArray()): computing them where render data is decoded,
// and checking them against the manifest that names their chunks. Today one, mipTexels: each
// texture's levels below 0, from its level 0 (core/scene/texture_mips.h).

#include "core/scene/render_data.h"
#include "core/util/status.h"
#include "transport/chunk_codec.h"

namespace pl {

// Computes the derived arrays of `data` (every other array in place, and data.validate()d) and
// checks each of their chunks against the manifest's hash: fails naming the first that
// differs. On up to one thread per core.
Status deriveArrays(const ChunkManifest& manifest, RenderData& data);
// The check alone, for derived arrays computed already (transport/prepared_load.h computes
// each texture's levels as soon as its level 0 is in).
Status checkDerivedArrays(const ChunkManifest& manifest, const RenderData& data);

}  // namespace pl
