#pragma once
// Scheduler: hands out the WorkUnits of one frame to devices and decides which results go
// into the film. Pure logic: no sockets, no threads, no clock of its own (`now` is passed in).
// Not thread-safe; the transport calls it from its event loop thread.
//
// The frame is cut into square tiles and progressive passes: pass 0 gives every tile samples
// [0, firstPassSamples), and each later pass doubles the samples so far ([f, 2f), [2f, 4f),
// ...; the last pass ends at spp). Every unit of pass k is handed out before any of pass k+1,
// so the image refines evenly over the whole frame.
//
// Units are sized to each device: the scheduler measures each device's rate (pixel samples
// per second) from its completed units and aims for targetUnitMs per unit, by merging
// neighbouring tiles of a pass (a row run, or whole tile rows) or by giving a tile only part
// of the pass's samples. A new device starts with a small unit, and units grow by at most
// growthFactor per completed unit (slow start), so one noisy measurement cannot hand a slow
// device half the frame. With several devices at work, a new unit is also at most half the
// device's share (by rate; equal while rates are unknown) of the pass's work left (not handed
// out, or in flight anywhere), less the work it holds, but at least a whole tile of the pass
// (guided self-scheduling with factoring): a pass's last units get small, so its devices
// finish it together rather than one device's large unit holding the pass back. Devices that
// hold no work (idle, or silently gone) take no share.
//
// Invariant: the units whose results complete() accepts tile the domain
// [0, width) x [0, height) x [0, spp) exactly once. Ranges are split freely (a lost unit may be
// re-issued in pieces); the film's fixed-point sums make any split give the same image.
//
// Adaptive sampling (FrameSpec::adaptive, --noise-threshold): from the pass that ends at
// FrameSpec::adaptiveMinSamples on, when a pass completes the caller judges the noise of each
// tile that took part in it and names the tiles that are done (decide()); those take no part
// in later passes, and a pass is complete when its remaining tiles are. The decision for pass k
// depends only on the samples [0, end of pass k), so the image does not depend on timing.
// Units of pass k+1 may be cut before pass k is decided (one pass of speculation, so devices do
// not idle at pass ends); their pixels in tiles that retire are rendered but do not count, and
// the film leaves them out (ProgressiveFilm::retire). No unit of pass k+2 is cut before pass k
// is decided. A unit may also span retired tiles (at most as many pixels as its active ones),
// so that scattered clean tiles do not cut a pass into tile-sized units.
//
// Failures are events: deviceLost() requeues the device's in-flight units ahead of new work.
// At the end of the frame, a device with nothing in flight gets a copy of the oldest unit in
// flight elsewhere (a speculative duplicate); the first result of a unit wins and later copies
// are rejected.

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/render/work_unit.h"
#include "core/util/status.h"

namespace pl {

// Opaque identity of one rendering device (a GPU or a node's CPU) chosen by the caller.
enum class DeviceId : uint64_t {};

using SchedulerClock = std::chrono::steady_clock;
using SchedulerTime = SchedulerClock::time_point;

struct FrameSpec {
  uint32_t width = 0, height = 0;  // pixels, 1 .. kMaxImageDimension
  uint32_t spp = 0;                // samples per pixel, >= 1
  uint32_t tileSize = 64;          // pixels, square tiles clipped at the image border
  // Sums per pixel of the film (3: colour; 10 with passes, kernel::filmChannels()), 1..64:
  // a unit holds at most SchedulerOptions::maxUnitPixels * 3 / channels pixels, so that its
  // result is as many bytes whatever the passes.
  uint32_t channels = 3;
  // A time limit: once `now` reaches the deadline and a pass is complete, the frame is over at
  // the last complete pass (finished(), finishedSamples()); before the first pass completes it
  // goes on. nullopt: the frame ends at spp.
  std::optional<SchedulerTime> deadline = std::nullopt;
  // The pixels to render (a render border): units cover only these, and the frame is done when
  // they hold spp samples; the film's other pixels stay empty. Empty (width 0): the whole image.
  Rect region{};
  // Adaptive sampling: tiles retire at pass ends (decide()). false: every tile takes every pass.
  bool adaptive = false;
  // Tiles are judged at the ends of passes k >= 1 that end at this many samples or more: with
  // passes that double, at 8, 16, 32, ... whatever the first pass's samples (a power of two up
  // to this), so that a session (firstPassSamples 1) and a render (4) retire the same tiles.
  uint32_t adaptiveMinSamples = 8;
};

struct SchedulerOptions {
  uint32_t firstPassSamples = 4;  // samples per pixel of pass 0
  double targetUnitMs = 300;      // aimed-for render time of one unit on its device
  // Pixel samples of a device's first unit, before anything is known about it. Units never
  // get smaller than one tile x one sample (new work) or one pixel x one sample (requeued).
  uint64_t initialUnitWork = 64 * 64 * 4;
  // A unit is at most growthFactor times the largest unit the device has completed.
  double growthFactor = 4;
  uint64_t maxUnitPixels = uint64_t(1) << 20;  // bounds a TileResult to 24 MiB of sums
  uint32_t defaultMaxInFlight = 2;             // units a device holds at once (pipelining)
  uint32_t maxCopies = 2;      // copies of one unit in flight at once (1 = no duplicates)
  double rateSmoothing = 0.5;  // weight of the newest rate measurement (EWMA)
};

// For interactive sessions, where every update starts a new frame (a new Scheduler): the first
// pass is one sample per pixel, and every device's first unit is one tile of it, so that
// devices that become ready a few milliseconds apart (a local device at once, nodes when their
// load answers) all take part in the first pass. With the batch defaults the first device ready
// takes two units of four tiles, half of a small frame's first pass, and the pass waits for it.
SchedulerOptions interactiveSchedulerOptions();

// Whether a frame of `spp` samples per pixel, cut into passes from `firstPassSamples`, has a
// pass that ends at exactly `samples` (Scheduler::passRange's ends: f, 2f, 4f, ... and spp).
bool passEndsAt(uint32_t spp, uint32_t firstPassSamples, uint32_t samples);

struct SchedulerStats {
  uint64_t issuedUnits = 0;     // copies handed out, duplicates included
  uint64_t duplicateUnits = 0;  // speculative copies handed out
  uint64_t acceptedUnits = 0;
  uint64_t rejectedResults = 0;  // complete() calls that returned false
  uint64_t requeuedUnits = 0;    // units put back after a loss or failure
  uint64_t retiredTiles = 0;     // tiles decide() took out of later passes
};

class Scheduler {
 public:
  // The frame must be valid (checked: width, height, spp, tileSize >= 1, size within
  // kMaxImageDimension); see validateFrame() for input from a user or a peer.
  Scheduler(const FrameSpec& frame, const SchedulerOptions& options = {});

  static Status validateFrame(const FrameSpec& frame);

  // Registers a device (nextUnit() also does, with the defaults). A device that joins
  // mid-frame gets work on its next request. maxInFlight 0: the default. initialUnitWork: the
  // pixel samples of its first unit (0: SchedulerOptions::initialUnitWork), e.g. larger for a
  // GPU, which a 64x64x4 unit leaves nearly idle and whose slow start would otherwise take
  // many round trips.
  void addDevice(DeviceId device, SchedulerTime now, uint32_t maxInFlight = 0,
                 uint64_t initialUnitWork = 0);
  // How many units this device should hold at once (>= 1). Lowering it takes nothing back.
  void setMaxInFlight(DeviceId device, uint32_t maxInFlight);

  // The next unit for this device, or nothing when it already holds maxInFlight units, or
  // when nothing is left for it (the frame is done, or the remaining work is in flight and
  // either the device still has units of its own or every such unit has maxCopies copies).
  // Order: requeued units first, then new work, then speculative duplicates.
  std::optional<WorkUnit> nextUnit(DeviceId device, SchedulerTime now);

  // A result for `unit` arrived from `device`. True exactly when this result is to be merged
  // into the film: the first result of a unit that the device was given and still holds.
  // False for later duplicates, for units the device does not hold (never given, already
  // completed, or requeued when the device was declared lost), and for unknown devices.
  // Every result (accepted or not) updates the device's measured rate.
  bool complete(DeviceId device, const WorkUnit& unit, SchedulerTime now);

  // The device could not render `unit` (or the caller cancelled a redundant copy): it is
  // taken back and, when no other copy is in flight and no result was accepted, requeued.
  // False when the device did not hold it.
  bool unitFailed(DeviceId device, const WorkUnit& unit, SchedulerTime now);

  // The device is gone: all its in-flight units are requeued at once (ahead of new work),
  // except those already accepted or still in flight elsewhere, and the device is forgotten
  // (a later nextUnit() with the same id starts it afresh).
  void deviceLost(DeviceId device, SchedulerTime now);

  // Every pixel sample of the frame (of the tiles that take part in each pass) has been
  // accepted exactly once.
  bool done() const { return completedPasses_ == passCount_; }
  // The frame is over: done(), or its deadline (FrameSpec::deadline) has come with a pass
  // complete. nextUnit() hands out nothing once it is.
  bool finished(SchedulerTime now) const {
    return done() || (frame_.deadline && now >= *frame_.deadline && completedPasses_ > 0);
  }
  // The samples per pixel the film holds when finished(now): spp, or the end of the last
  // complete pass when the deadline stopped it.
  uint32_t finishedSamples(SchedulerTime now) const {
    return done() || !finished(now) ? frame_.spp : completedSamples();
  }

  // Progressive passes: the pass a unit belongs to (every unit lies inside one pass), and how
  // many leading passes are complete (every pixel sample of passes [0, completedPasses()) has
  // been accepted). completedSamples() is the end of the last complete pass: every pixel then
  // holds exactly the samples [0, completedSamples()) that were accepted, plus possibly some of
  // later passes, which a progressive film keeps apart until their pass completes.
  uint32_t passOf(const WorkUnit& unit) const;
  uint32_t completedPasses() const { return completedPasses_; }
  uint32_t completedSamples() const {
    return completedPasses_ == 0 ? 0 : passRange(completedPasses_ - 1).second;
  }

  // Copies this device holds whose unit already has an accepted result (duplicates that
  // lost the race): the caller may cancel them and report unitFailed().
  std::vector<WorkUnit> redundantUnits(DeviceId device) const;

  // Adaptive sampling. Tiles are tileSize squares over region() (clipped at its edge),
  // numbered row-major from 0.
  uint32_t tileCount() const { return tilesX_ * tilesY_; }
  Rect tile(uint32_t index) const { return tileRect(index % tilesX_, index / tilesX_); }
  // Whether the tile takes part in `pass`, as far as is decided: a tile retired after pass k
  // takes no part in passes > k.
  bool tileActive(uint32_t index, uint32_t pass) const { return tileLastPass_[index] >= pass; }
  // The pass to judge now (adaptive frames only): pass k >= 1 is complete, and which tiles take
  // part in pass k+1 is not decided yet. Until decide(k, ...), pass k+1 cannot complete and no
  // unit of pass k+2 is cut.
  std::optional<uint32_t> pendingDecision() const;
  // The tiles (of those active in pass `pass`) whose noise after that pass is low enough: they
  // take no part in later passes. `pass` must be pendingDecision(); other tiles are ignored.
  void decide(uint32_t pass, const std::vector<uint32_t>& doneTiles);

  const FrameSpec& frame() const { return frame_; }
  // FrameSpec::region, or the whole image when it is empty.
  const Rect& region() const { return region_; }
  // Pixel samples of the frame: region pixels * spp, less what retired tiles leave out of later
  // passes; and how many of them have been accepted.
  uint64_t totalWork() const { return totalWork_; }
  uint64_t acceptedWork() const { return acceptedWork_; }
  uint32_t passCount() const { return passCount_; }
  // [begin, end) samples of pass `pass` (< passCount()).
  std::pair<uint32_t, uint32_t> passRange(uint32_t pass) const;
  // The pass new work is being cut from (passCount() once all new work is handed out).
  uint32_t currentPass() const { return pass_; }
  const SchedulerStats& stats() const { return stats_; }

  // Per device: units held now, measured rate (pixel samples per second; 0 = not measured
  // yet) and the size in pixel samples of the next unit it would get. 0 for unknown devices.
  uint32_t inFlight(DeviceId device) const;
  double rate(DeviceId device) const;
  uint64_t unitBudget(DeviceId device) const;

 private:
  struct Piece {  // one (rect, sample range) of the partition; the result is accepted once
    WorkUnit unit;
    bool accepted = false;
    uint32_t copies = 0;  // copies in flight
    SchedulerTime firstIssued{};
  };
  struct Copy {
    uint64_t piece;
    WorkUnit unit;
    SchedulerTime issued;
  };
  struct DeviceState {
    uint32_t maxInFlight = 1;
    std::vector<Copy> inFlight;  // in issue order
    double rate = 0;             // pixel samples per second, 0 = unknown
    uint64_t largestCompleted = 0;
    uint64_t initialWork = 0;  // 0: options_.initialUnitWork
    SchedulerTime lastCompletion{};
    bool hasCompleted = false;
  };

  DeviceState& device(DeviceId id, SchedulerTime now);
  uint64_t budgetFor(const DeviceState& d) const;
  uint64_t uncutPassWork() const;  // pixel samples of the current pass not handed out yet
  uint64_t passShare(const DeviceState& d) const;  // the cap above (max when d is alone)
  std::optional<uint64_t> takeRequeued(uint64_t budget);
  std::optional<uint64_t> cutNewWork(uint64_t budget);
  std::optional<uint64_t> pickDuplicate(const DeviceState& d) const;
  uint64_t newPiece(const WorkUnit& unit);
  void release(uint64_t piece);  // one copy gone; requeue or forget the piece
  Rect tileRect(uint32_t tileX, uint32_t tileY) const;
  void advanceTile();
  void moveToTile(uint32_t tile);  // the cursor to `tile` of the current pass (or the next pass)
  void skipRetiredTiles();
  bool mayCutPass(uint32_t pass) const { return pass <= decidedPasses_; }
  // Calls fn(tile, pixels) for each tile of pass `pass` (active as far as is decided) that the
  // unit's rectangle overlaps, with the overlap's pixel count; returns the overlap's work.
  template <typename Fn>
  uint64_t forActiveTiles(const WorkUnit& unit, uint32_t pass, Fn&& fn) const;
  uint64_t activeWork(const WorkUnit& unit) const;
  void advanceCompletedPasses();

  FrameSpec frame_;
  Rect region_;
  SchedulerOptions options_;
  uint64_t totalWork_ = 0;
  uint64_t acceptedWork_ = 0;
  uint32_t tilesX_ = 0, tilesY_ = 0;
  uint32_t passCount_ = 0;
  std::vector<uint64_t> passAccepted_;  // pixel samples accepted per pass (in active tiles)
  std::vector<uint64_t> passNeeded_;    // pixel samples of each pass's active tiles
  uint32_t completedPasses_ = 0;
  // Adaptive sampling: the last pass of each tile (passCount_ - 1 until it retires), the passes
  // whose tiles are decided ([0, decidedPasses_); passCount_ when not adaptive), and per pass
  // not yet complete the pixel samples accepted in each tile (to take out what a retiring tile
  // had received).
  std::vector<uint32_t> tileLastPass_;
  uint32_t decidedPasses_ = 0;
  std::map<uint32_t, std::vector<uint64_t>> tileAccepted_;

  // New work cursor: pass, tile (row-major) and the next sample of that tile in the pass.
  uint32_t pass_ = 0;
  uint32_t tile_ = 0;
  uint32_t tileSample_ = 0;

  uint64_t nextPieceId_ = 0;
  std::map<uint64_t, Piece> pieces_;  // pieces requeued or in flight (or accepted, in flight)
  std::deque<uint64_t> requeued_;     // pieces with no copy in flight, oldest first
  std::unordered_map<DeviceId, DeviceState> devices_;
  SchedulerStats stats_;
};

}  // namespace pl
