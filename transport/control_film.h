#pragma once
// A film on the control socket (transport/control.capnp FilmInfo and FilmData): the daemon
// serves a copy of a session's film while the client holds the capability, and the client
// reads it back in slices of at most kControlChunkBytes into a Film of its own, exactly (the
// sums are the film's integers).
//
// Threads: the loop thread of the RPC system the capabilities belong to.

#include <kj/async.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "core/render/film.h"
#include "core/util/status.h"
#include "transport/control.capnp.h"

namespace pl {

// The bytes [offset, offset + bytes) (fewer at the end) of a film's stream: its sums, then its
// per-pixel sample counts (empty: none), written where `init(n)` says (a reply's Data of n
// bytes). Fails the call (KJ_REQUIRE) for more than kControlChunkBytes or beyond the end.
void readFilmSlice(const std::vector<int64_t>& sums, const std::vector<uint32_t>& counts,
                   uint64_t offset, uint32_t bytes,
                   const std::function<kj::ArrayPtr<kj::byte>(size_t n)>& init);

// The inverse, on the client: a slice read at `offset` of that stream, copied into `sums` and
// `counts` (sized for the whole film; the caller checks that the slice lies within it).
void storeFilmSlice(std::vector<int64_t>& sums, std::vector<uint32_t>& counts, uint64_t offset,
                    kj::ArrayPtr<const kj::byte> slice);

// The daemon's side: `film`'s description and a capability that serves its bytes (its sums,
// then its per-pixel sample counts when it has them).
void toControl(const Film& film, uint64_t generation, ctl::FilmInfo::Builder out);
ctl::FilmData::Client serveFilm(std::shared_ptr<const Film> film);

// The client's side: reads the whole film. Fails (naming what) when the description is not
// consistent (sizes that do not match width x height x channels, a film of more than 4 GiB of
// sums, more samples in a pixel than the film's spp) or a read fails.
kj::Promise<Result<Film>> readFilm(ctl::FilmInfo::Reader info, ctl::FilmData::Client data);

}  // namespace pl
