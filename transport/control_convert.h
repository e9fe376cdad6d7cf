#pragma once
// The control socket's wire structs (transport/control.capnp, pl::ctl) and peerlight's own
// types: a render job's parameters and the Primary's statistics. Readers bound what a peer may
// make us allocate (list lengths and text sizes are checked before anything is copied) and
// return a pl::Error naming the field; they never throw for bad input (a malformed pointer
// throws from Cap'n Proto itself, which fails the RPC call that carried it). Writers fill a
// builder the caller got from a request or a reply and never fail.
//
// Threads: free functions (a builder or reader belongs to one thread anyway).

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "core/util/status.h"
#include "transport/control.capnp.h"
#include "transport/primary.h"

namespace pl {

// Sizes on the socket, both sides: every message either way is at most kMaxControlMessageBytes
// (the readers' ReaderOptions), and bulk bytes (RenderJob.write chunks, readFilm slices) travel
// in pieces of at most kControlChunkBytes.
constexpr uint64_t kMaxControlMessageBytes = uint64_t(8) << 20;
constexpr uint32_t kControlChunkBytes = uint32_t(4) << 20;

// Bounds on a render request (the daemon checks them before it takes a job).
constexpr size_t kMaxControlTokenBytes = 64;
constexpr size_t kMaxRenderJobPeers = 1024;
constexpr size_t kMaxRenderJobNameBytes = 255;  // a peer address, the primary's name

// A token: [0-9a-zA-Z], 1 to kMaxControlTokenBytes characters.
bool validControlToken(const std::string& token);

// What `peerlight render` asks of the daemon besides the render data (control.capnp
// RenderParams, field for field). Without `peers` (and unless noMdns or localOnly) the daemon
// adds the nodes its mDNS browse finds, also during the render.
struct RenderJobParams {
  uint32_t width = 0, height = 0, spp = 0;
  std::vector<std::string> peers;  // --peer
  bool localOnly = false;          // this machine's devices only
  bool noLocal = false;            // not this machine's devices
  bool noOwnerPreempt = false;     // do not revoke remote leases on this machine's devices
  bool noMdns = false;             // only `peers` (and this machine), no mDNS nodes
  std::string primaryName;         // "host/pid" of the command
  uint32_t timeLimitMs = 0;        // --time-limit; 0: none
  Rect region{};                   // --region; empty: the whole image
  double noiseThreshold = 0;       // --noise-threshold; 0: none
};

// readFilm's byte stream is the film's sums (sumBytes of them) followed by its sample counts.
// Calls fn(countsPart, partOffset, sliceOffset, length) for each piece of the slice [offset,
// offset + length) of that stream: countsPart false for the sums, true for the counts.
template <typename Fn>
void forFilmStreamParts(uint64_t offset, size_t length, uint64_t sumBytes, Fn&& fn) {
  for (size_t i = 0; i < length;) {
    const uint64_t at = offset + i;
    const bool counts = at >= sumBytes;
    const size_t n = counts ? length - i : size_t(std::min<uint64_t>(length - i, sumBytes - at));
    fn(counts, counts ? at - sumBytes : at, i, n);
    i += n;
  }
}

void toControl(const RenderJobParams& params, ctl::RenderParams::Builder out);
// Fails (naming the field) when there are more than kMaxRenderJobPeers peers, a text is longer
// than kMaxRenderJobNameBytes, or the noise threshold is negative or not finite. The frame
// itself is the daemon's to judge (RenderJobs::admit).
Result<RenderJobParams> fromControl(ctl::RenderParams::Reader in);

// Member for member; the reader takes what the daemon sent as it is (the client trusts its own
// machine's daemon; the message size limit bounds it).
void toControl(const ClusterRenderStats& stats, ctl::RenderStats::Builder out);
ClusterRenderStats fromControl(ctl::RenderStats::Reader in);

// "ok", "busy", "shuttingDown", ... (the schema's names), for logs.
const char* outcomeName(ctl::Outcome outcome);

}  // namespace pl
