#include "core/cluster/scheduler.h"

#include <algorithm>
#include <limits>

#include "core/scene/render_data.h"

namespace pl {

namespace {

uint64_t workOf(const WorkUnit& unit) { return unit.tile.pixelCount() * unit.sampleCount(); }

}  // namespace

SchedulerOptions interactiveSchedulerOptions() {
  SchedulerOptions options;
  options.firstPassSamples = 1;
  options.initialUnitWork = 64 * 64;  // one default tile at one sample
  return options;
}

Status Scheduler::validateFrame(const FrameSpec& frame) {
  if (frame.width == 0 || frame.height == 0 || frame.width > kMaxImageDimension ||
      frame.height > kMaxImageDimension)
    return Error{"frame: image size " + std::to_string(frame.width) + "x" +
                 std::to_string(frame.height) + " outside 1.." +
                 std::to_string(kMaxImageDimension)};
  if (frame.spp == 0) return Error{"frame: 0 samples per pixel"};
  if (frame.tileSize == 0) return Error{"frame: tile size 0"};
  if (frame.channels == 0 || frame.channels > 64)
    return Error{"frame: " + std::to_string(frame.channels) + " sums per pixel outside 1..64"};
  const Rect& r = frame.region;
  if ((r.width == 0) != (r.height == 0) ||
      (r.width != 0 && (uint64_t(r.x) + r.width > frame.width ||
                        uint64_t(r.y) + r.height > frame.height)))
    return Error{"frame: region " + std::to_string(r.width) + "x" + std::to_string(r.height) +
                 " at " + std::to_string(r.x) + "," + std::to_string(r.y) + " outside the " +
                 std::to_string(frame.width) + "x" + std::to_string(frame.height) + " image"};
  return Status();
}

Scheduler::Scheduler(const FrameSpec& frame, const SchedulerOptions& options)
    : frame_(frame), options_(options) {
  Status valid = validateFrame(frame);
  PL_CHECK_MSG(valid.ok(), "%s", valid.ok() ? "" : valid.error().message.c_str());
  options_.firstPassSamples = std::max<uint32_t>(1, options_.firstPassSamples);
  options_.defaultMaxInFlight = std::max<uint32_t>(1, options_.defaultMaxInFlight);
  options_.maxCopies = std::max<uint32_t>(1, options_.maxCopies);
  options_.initialUnitWork = std::max<uint64_t>(1, options_.initialUnitWork);
  // A unit's result is at most maxUnitPixels pixels of colour: fewer pixels with more sums each.
  options_.maxUnitPixels = std::max<uint64_t>(1, options_.maxUnitPixels * 3 / frame.channels);
  options_.growthFactor = std::max(1.0, options_.growthFactor);
  options_.rateSmoothing = std::clamp(options_.rateSmoothing, 0.01, 1.0);

  region_ = renderedRect(frame.region, frame.width, frame.height);
  totalWork_ = region_.pixelCount() * frame.spp;
  tilesX_ = (region_.width + frame.tileSize - 1) / frame.tileSize;
  tilesY_ = (region_.height + frame.tileSize - 1) / frame.tileSize;
  for (uint32_t end = 0; end < frame.spp; ++passCount_) end = passRange(passCount_).second;
  passAccepted_.assign(passCount_, 0);
  for (uint32_t pass = 0; pass < passCount_; ++pass) {
    const auto [p0, p1] = passRange(pass);
    passNeeded_.push_back(region_.pixelCount() * (p1 - p0));
  }
  tileLastPass_.assign(size_t(tilesX_) * tilesY_, passCount_ - 1);
  // Pass k's tiles are decided at the end of pass k - 1, from the first pass k >= 1 (two halves
  // of as many samples each) that ends at adaptiveMinSamples or later: every tile takes the
  // passes up to the one after it.
  uint32_t firstJudged = 1;
  while (firstJudged < passCount_ && passRange(firstJudged).second < frame.adaptiveMinSamples)
    ++firstJudged;
  decidedPasses_ = frame.adaptive ? std::min<uint32_t>(firstJudged + 1, passCount_) : passCount_;
  tileSample_ = 0;
}

template <typename Fn>
uint64_t Scheduler::forActiveTiles(const WorkUnit& unit, uint32_t pass, Fn&& fn) const {
  const Rect& r = unit.tile;
  const uint32_t size = frame_.tileSize;
  const uint32_t x0 = (r.x - region_.x) / size, x1 = (r.x + r.width - 1 - region_.x) / size;
  const uint32_t y0 = (r.y - region_.y) / size, y1 = (r.y + r.height - 1 - region_.y) / size;
  uint64_t pixels = 0;
  for (uint32_t ty = y0; ty <= y1; ++ty) {
    for (uint32_t tx = x0; tx <= x1; ++tx) {
      const uint32_t index = ty * tilesX_ + tx;
      if (!tileActive(index, pass)) continue;
      const Rect t = tileRect(tx, ty);
      const uint64_t w = std::min(r.x + r.width, t.x + t.width) - std::max(r.x, t.x);
      const uint64_t h = std::min(r.y + r.height, t.y + t.height) - std::max(r.y, t.y);
      fn(index, w * h);
      pixels += w * h;
    }
  }
  return pixels * unit.sampleCount();
}

uint64_t Scheduler::activeWork(const WorkUnit& unit) const {
  if (!frame_.adaptive) return workOf(unit);
  return forActiveTiles(unit, passOf(unit), [](uint32_t, uint64_t) {});
}

std::optional<uint32_t> Scheduler::pendingDecision() const {
  if (!frame_.adaptive || decidedPasses_ >= passCount_ || completedPasses_ < decidedPasses_)
    return std::nullopt;
  return decidedPasses_ - 1;
}

void Scheduler::decide(uint32_t pass, const std::vector<uint32_t>& doneTiles) {
  PL_CHECK(pendingDecision() == pass);
  for (uint32_t index : doneTiles) {
    if (index >= tileCount() || !tileActive(index, pass + 1)) continue;
    const uint64_t pixels = tile(index).pixelCount();
    for (uint32_t later = pass + 1; later < passCount_; ++later) {
      const auto [p0, p1] = passRange(later);
      passNeeded_[later] -= pixels * (p1 - p0);
      totalWork_ -= pixels * (p1 - p0);
      auto it = tileAccepted_.find(later);
      if (it == tileAccepted_.end()) continue;
      passAccepted_[later] -= it->second[index];
      acceptedWork_ -= it->second[index];
      it->second[index] = 0;
    }
    tileLastPass_[index] = pass;
    ++stats_.retiredTiles;
  }
  // No tile left in pass + 1: nor in any later pass, which are then decided (and empty).
  decidedPasses_ = passNeeded_[pass + 1] == 0 ? passCount_ : pass + 2;
  // Requeued work that lies wholly in retired tiles is not needed any more.
  for (auto it = requeued_.begin(); it != requeued_.end();) {
    if (activeWork(pieces_.at(*it).unit) != 0) {
      ++it;
      continue;
    }
    pieces_.erase(*it);
    it = requeued_.erase(it);
  }
  skipRetiredTiles();
  advanceCompletedPasses();
}

void Scheduler::advanceCompletedPasses() {
  while (completedPasses_ < decidedPasses_ &&
         passAccepted_[completedPasses_] == passNeeded_[completedPasses_]) {
    tileAccepted_.erase(completedPasses_);
    ++completedPasses_;
  }
}

uint32_t Scheduler::passOf(const WorkUnit& unit) const {
  // Pass k >= 1 begins at f * 2^(k-1): at most ~32 passes, a short scan.
  uint32_t pass = 0;
  while (pass + 1 < passCount_ && passRange(pass + 1).first <= unit.sampleBegin) ++pass;
  return pass;
}

bool passEndsAt(uint32_t spp, uint32_t firstPassSamples, uint32_t samples) {
  if (samples == 0 || samples > spp) return false;
  if (samples == spp) return true;
  for (uint64_t end = std::max<uint32_t>(firstPassSamples, 1); end < spp; end *= 2)
    if (end == samples) return true;
  return false;
}

std::pair<uint32_t, uint32_t> Scheduler::passRange(uint32_t pass) const {
  const uint64_t f = options_.firstPassSamples;
  if (pass == 0) return {0, uint32_t(std::min<uint64_t>(f, frame_.spp))};
  // Pass k >= 1 covers [f * 2^(k-1), f * 2^k): each pass doubles the samples so far.
  const uint64_t begin = pass > 40 ? frame_.spp : std::min<uint64_t>(f << (pass - 1), frame_.spp);
  const uint64_t end = pass > 40 ? frame_.spp : std::min<uint64_t>(f << pass, frame_.spp);
  return {uint32_t(begin), uint32_t(end)};
}

Rect Scheduler::tileRect(uint32_t tileX, uint32_t tileY) const {
  const uint32_t x = tileX * frame_.tileSize, y = tileY * frame_.tileSize;
  return Rect{region_.x + x, region_.y + y, std::min(frame_.tileSize, region_.width - x),
              std::min(frame_.tileSize, region_.height - y)};
}

void Scheduler::addDevice(DeviceId id, SchedulerTime now, uint32_t maxInFlight,
                          uint64_t initialUnitWork) {
  DeviceState& d = device(id, now);
  if (maxInFlight > 0) d.maxInFlight = maxInFlight;
  d.initialWork = initialUnitWork;
}

void Scheduler::setMaxInFlight(DeviceId id, uint32_t maxInFlight) {
  auto it = devices_.find(id);
  if (it != devices_.end()) it->second.maxInFlight = std::max<uint32_t>(1, maxInFlight);
}

Scheduler::DeviceState& Scheduler::device(DeviceId id, SchedulerTime now) {
  auto [it, inserted] = devices_.try_emplace(id);
  if (inserted) it->second.maxInFlight = options_.defaultMaxInFlight;
  return it->second;
}

uint64_t Scheduler::budgetFor(const DeviceState& d) const {
  const uint64_t initial = d.initialWork != 0 ? d.initialWork : options_.initialUnitWork;
  if (d.rate <= 0) return initial;
  const double wanted = d.rate * options_.targetUnitMs / 1000.0;
  const double cap = std::max(double(initial), double(d.largestCompleted) * options_.growthFactor);
  return uint64_t(std::clamp(wanted, 1.0, cap));
}

uint64_t Scheduler::uncutPassWork() const {
  if (pass_ >= passCount_) return 0;
  const auto [p0, p1] = passRange(pass_);
  const Rect first = tileRect(tile_ % tilesX_, tile_ / tilesX_);
  // The rest of this tile row, then the whole rows below it (retired tiles count too).
  const uint64_t rowRest = uint64_t(region_.x + region_.width - first.x) * first.height;
  const uint64_t below =
      uint64_t(region_.width) * (region_.y + region_.height - (first.y + first.height));
  return (rowRest + below) * (p1 - p0) - first.pixelCount() * (tileSample_ - p0);
}

// The work left (not handed out, and in flight on every device) split by rate, less what this
// device holds already: its units then end about when the others' do. The devices that share
// it: this one and those that hold work (a registered device that never asks, such as one
// whose connection has silently died, takes no share).
uint64_t Scheduler::passShare(const DeviceState& d) const {
  double known = 0;
  size_t measured = 0, sharing = 0;
  uint64_t inFlight = 0, mineInFlight = 0;
  for (const auto& [id, other] : devices_) {
    if (&other != &d && other.inFlight.empty()) continue;
    ++sharing;
    if (other.rate > 0) {
      known += other.rate;
      ++measured;
    }
    for (const Copy& copy : other.inFlight) inFlight += workOf(copy.unit);
  }
  if (sharing == 1) return std::numeric_limits<uint64_t>::max();  // alone: nothing to balance
  for (const Copy& copy : d.inFlight) mineInFlight += workOf(copy.unit);
  // A device not measured yet counts as the mean of those measured (as one, when none is).
  const double mean = measured == 0 ? 1.0 : known / double(measured);
  const double total = known + mean * double(sharing - measured);
  const double mine = d.rate > 0 ? d.rate : mean;
  // Half of it (factoring): units shrink geometrically towards the pass's end.
  const double share =
      (double(uncutPassWork() + inFlight) * mine / total - double(mineInFlight)) / 2;
  // Never less than a whole tile of the pass: it is not worth cutting a tile's samples apart.
  const auto [p0, p1] = passRange(pass_);
  const uint64_t tileWork =
      tileRect(tile_ % tilesX_, tile_ / tilesX_).pixelCount() * uint64_t(p1 - p0);
  return std::max(tileWork, uint64_t(std::max(share, 0.0)));
}

uint64_t Scheduler::newPiece(const WorkUnit& unit) {
  const uint64_t id = nextPieceId_++;
  pieces_.emplace(id, Piece{unit});
  return id;
}

void Scheduler::advanceTile() { moveToTile(tile_ + 1); }

void Scheduler::moveToTile(uint32_t tile) {
  tile_ = tile;
  if (tile_ >= tileCount()) {
    tile_ = 0;
    ++pass_;
  }
  tileSample_ = pass_ < passCount_ ? passRange(pass_).first : frame_.spp;
  skipRetiredTiles();
}

void Scheduler::skipRetiredTiles() {
  if (!frame_.adaptive) return;
  while (pass_ < passCount_ && !tileActive(tile_, pass_)) {
    if (++tile_ >= tileCount()) {
      tile_ = 0;
      ++pass_;
    }
    tileSample_ = pass_ < passCount_ ? passRange(pass_).first : frame_.spp;
  }
}

std::optional<uint64_t> Scheduler::cutNewWork(uint64_t budget) {
  if (pass_ >= passCount_ || !mayCutPass(pass_)) return std::nullopt;
  const auto [p0, p1] = passRange(pass_);
  const uint32_t tx = tile_ % tilesX_, ty = tile_ / tilesX_;
  const Rect first = tileRect(tx, ty);
  const uint64_t firstPixels = first.pixelCount();
  WorkUnit unit{first, tileSample_, p1, frame_.spp};

  if (tileSample_ > p0 || firstPixels * (p1 - p0) > budget) {
    // One tile and part (or the rest) of the pass's samples.
    const uint32_t n = uint32_t(std::clamp<uint64_t>(budget / firstPixels, 1, p1 - tileSample_));
    unit.sampleEnd = tileSample_ + n;
    tileSample_ += n;
    if (tileSample_ == p1) advanceTile();
    return newPiece(unit);
  }

  // Whole tiles of this pass: a run along the tile row while the budget allows...
  // (Adaptive frames: a run may pass over retired tiles, rendered in vain, while they are at
  // most as many pixels as its active ones, so that scattered clean tiles do not cut the work
  // into tile-sized units; it never ends on one.)
  const uint64_t samples = p1 - p0;
  uint64_t work = firstPixels * samples;
  uint32_t count = 1, useful = 1;  // tiles in the run; up to its last active one
  uint64_t activePixels = firstPixels, idlePixels = 0, idleTail = 0;
  while (tx + count < tilesX_) {
    const uint64_t pixels = tileRect(tx + count, ty).pixelCount();
    if (work + pixels * samples > budget ||
        unit.tile.pixelCount() + pixels > options_.maxUnitPixels)
      break;
    const bool active = tileActive(tile_ + count, pass_);
    if (!active && idlePixels + idleTail + pixels > activePixels) break;
    unit.tile.width += tileRect(tx + count, ty).width;
    work += pixels * samples;
    ++count;
    if (active) {
      activePixels += pixels;
      idlePixels += idleTail;
      idleTail = 0;
      useful = count;
    } else {
      idleTail += pixels;
    }
  }
  if (useful < count) {  // not ending on retired tiles
    const Rect last = tileRect(tx + useful - 1, ty);
    unit.tile.width = last.x + last.width - unit.tile.x;
    count = useful;
  }
  uint32_t tiles = count;
  // ...and, when that run is a whole tile row, more whole rows below it (each with at most as
  // many retired pixels as active ones).
  const auto rowMostlyActive = [&](uint32_t row) {
    uint64_t active = 0, idle = 0;
    for (uint32_t x = 0; x < tilesX_; ++x)
      (tileActive(row * tilesX_ + x, pass_) ? active : idle) += tileRect(x, row).pixelCount();
    return active > 0 && idle <= active;
  };
  if (tx == 0 && count == tilesX_) {
    for (uint32_t row = ty + 1; row < tilesY_; ++row) {
      const uint64_t pixels = uint64_t(region_.width) * tileRect(0, row).height;
      if (work + pixels * samples > budget ||
          unit.tile.pixelCount() + pixels > options_.maxUnitPixels || !rowMostlyActive(row))
        break;
      unit.tile.height += tileRect(0, row).height;
      work += pixels * samples;
      tiles += tilesX_;
    }
  }
  moveToTile(tile_ + tiles);
  return newPiece(unit);
}

std::optional<uint64_t> Scheduler::takeRequeued(uint64_t budget) {
  // (Pieces wholly in retired tiles are not requeued: decide() and release() drop them, and a
  // piece split below keeps only parts with work that counts.)
  if (requeued_.empty()) return std::nullopt;
  const uint64_t pixelBudget = std::min(budget, options_.maxUnitPixels);
  // Split the front piece until its first part fits the budget: rows (or columns) while one
  // sample of it is too much, then samples.
  for (;;) {
    const WorkUnit u = pieces_.at(requeued_.front()).unit;
    const uint64_t pixels = u.tile.pixelCount();
    if (workOf(u) <= budget && pixels <= options_.maxUnitPixels) break;
    WorkUnit a = u, b = u;
    if (pixels > pixelBudget) {
      if (u.tile.height > 1) {
        const uint32_t rows =
            uint32_t(std::clamp<uint64_t>(pixelBudget / u.tile.width, 1, u.tile.height - 1));
        a.tile.height = rows;
        b.tile.y += rows;
        b.tile.height -= rows;
      } else if (u.tile.width > 1) {
        const uint32_t cols = uint32_t(std::clamp<uint64_t>(pixelBudget, 1, u.tile.width - 1));
        a.tile.width = cols;
        b.tile.x += cols;
        b.tile.width -= cols;
      } else {
        break;  // one pixel
      }
    } else {
      if (u.sampleCount() == 1) break;
      const uint32_t n = uint32_t(std::clamp<uint64_t>(budget / pixels, 1, u.sampleCount() - 1));
      a.sampleEnd = u.sampleBegin + n;
      b.sampleBegin = u.sampleBegin + n;
    }
    pieces_.erase(requeued_.front());
    requeued_.pop_front();
    if (activeWork(b) != 0) requeued_.push_front(newPiece(b));
    if (activeWork(a) != 0) requeued_.push_front(newPiece(a));
    if (requeued_.empty()) return std::nullopt;
  }
  const uint64_t id = requeued_.front();
  requeued_.pop_front();
  return id;
}

std::optional<uint64_t> Scheduler::pickDuplicate(const DeviceState& d) const {
  std::optional<uint64_t> best;
  SchedulerTime bestTime{};
  for (const auto& [id, piece] : pieces_) {
    if (piece.accepted || piece.copies == 0 || piece.copies >= options_.maxCopies ||
        activeWork(piece.unit) == 0)
      continue;
    const bool held = std::any_of(d.inFlight.begin(), d.inFlight.end(),
                                  [&, id = id](const Copy& c) { return c.piece == id; });
    if (held) continue;
    if (!best || piece.firstIssued < bestTime) {
      best = id;
      bestTime = piece.firstIssued;
    }
  }
  return best;
}

std::optional<WorkUnit> Scheduler::nextUnit(DeviceId id, SchedulerTime now) {
  DeviceState& d = device(id, now);
  if (d.inFlight.size() >= d.maxInFlight || finished(now)) return std::nullopt;
  const uint64_t budget = budgetFor(d);
  std::optional<uint64_t> pieceId;
  bool duplicate = false;
  if (!requeued_.empty()) pieceId = takeRequeued(budget);
  if (!pieceId && requeued_.empty() && pass_ < passCount_)
    pieceId = cutNewWork(std::min(budget, passShare(d)));
  // Nothing new to cut (the frame is handed out, or an adaptive frame waits for a pass to be
  // decided): an idle device speeds up the oldest unit in flight.
  if (!pieceId && requeued_.empty() && d.inFlight.empty()) {
    pieceId = pickDuplicate(d);
    duplicate = true;
  }
  if (!pieceId) return std::nullopt;

  Piece& piece = pieces_.at(*pieceId);
  PL_CHECK(!piece.accepted);
  if (piece.copies++ == 0) piece.firstIssued = now;
  d.inFlight.push_back(Copy{*pieceId, piece.unit, now});
  ++stats_.issuedUnits;
  if (duplicate) ++stats_.duplicateUnits;
  return piece.unit;
}

void Scheduler::release(uint64_t pieceId) {
  auto it = pieces_.find(pieceId);
  PL_CHECK(it != pieces_.end() && it->second.copies > 0);
  if (--it->second.copies > 0) return;
  // Accepted, or (adaptive) wholly in tiles that retired since it was cut: not needed again.
  if (it->second.accepted || activeWork(it->second.unit) == 0) {
    pieces_.erase(it);
  } else {
    requeued_.push_back(pieceId);
    ++stats_.requeuedUnits;
  }
}

bool Scheduler::complete(DeviceId id, const WorkUnit& unit, SchedulerTime now) {
  auto dit = devices_.find(id);
  if (dit == devices_.end()) {
    ++stats_.rejectedResults;
    return false;
  }
  DeviceState& d = dit->second;
  auto cit = std::find_if(d.inFlight.begin(), d.inFlight.end(),
                          [&](const Copy& c) { return c.unit == unit; });
  if (cit == d.inFlight.end()) {
    ++stats_.rejectedResults;
    return false;
  }
  const Copy copy = *cit;
  d.inFlight.erase(cit);

  // Rate: the device works through its units in order, so this one started when it was
  // issued or when the previous one finished, whichever came later.
  const SchedulerTime start =
      d.hasCompleted ? std::max(copy.issued, d.lastCompletion) : copy.issued;
  const double seconds = std::max(1e-3, std::chrono::duration<double>(now - start).count());
  const uint64_t work = workOf(unit);
  const double measured = double(work) / seconds;
  d.rate = d.rate <= 0 ? measured : d.rate + options_.rateSmoothing * (measured - d.rate);
  d.largestCompleted = std::max(d.largestCompleted, work);
  d.lastCompletion = now;
  d.hasCompleted = true;

  auto pit = pieces_.find(copy.piece);
  PL_CHECK(pit != pieces_.end() && pit->second.copies > 0);
  Piece& piece = pit->second;
  --piece.copies;
  const uint32_t pass = passOf(unit);
  uint64_t counted = work;
  if (!piece.accepted && frame_.adaptive) {
    // Only the pixels of tiles that (as far as is decided) take part in the pass count; what
    // each tile received is kept until the pass completes, in case the tile retires.
    counted = forActiveTiles(unit, pass, [&](uint32_t index, uint64_t pixels) {
      std::vector<uint64_t>& perTile = tileAccepted_[pass];
      if (perTile.empty()) perTile.assign(tileCount(), 0);
      perTile[index] += pixels * unit.sampleCount();
    });
    // A unit wholly in tiles that retired after it was cut: nothing of it counts or is merged.
    if (counted == 0) piece.accepted = true;
  }
  const bool accept = !piece.accepted;
  if (accept) {
    piece.accepted = true;
    ++stats_.acceptedUnits;
    acceptedWork_ += counted;
    passAccepted_[pass] += counted;
    PL_CHECK(acceptedWork_ <= totalWork_ && passAccepted_[pass] <= passNeeded_[pass]);
    advanceCompletedPasses();
  } else {
    ++stats_.rejectedResults;
  }
  if (piece.copies == 0) pieces_.erase(pit);
  return accept;
}

bool Scheduler::unitFailed(DeviceId id, const WorkUnit& unit, SchedulerTime now) {
  auto dit = devices_.find(id);
  if (dit == devices_.end()) return false;
  auto& inFlight = dit->second.inFlight;
  auto cit =
      std::find_if(inFlight.begin(), inFlight.end(), [&](const Copy& c) { return c.unit == unit; });
  if (cit == inFlight.end()) return false;
  const uint64_t pieceId = cit->piece;
  inFlight.erase(cit);
  release(pieceId);
  return true;
}

void Scheduler::deviceLost(DeviceId id, SchedulerTime now) {
  auto dit = devices_.find(id);
  if (dit == devices_.end()) return;
  const std::vector<Copy> copies = std::move(dit->second.inFlight);
  devices_.erase(dit);
  for (const Copy& copy : copies) release(copy.piece);
}

std::vector<WorkUnit> Scheduler::redundantUnits(DeviceId id) const {
  std::vector<WorkUnit> out;
  auto dit = devices_.find(id);
  if (dit == devices_.end()) return out;
  for (const Copy& copy : dit->second.inFlight)
    if (pieces_.at(copy.piece).accepted) out.push_back(copy.unit);
  return out;
}

uint32_t Scheduler::inFlight(DeviceId id) const {
  auto it = devices_.find(id);
  return it == devices_.end() ? 0 : uint32_t(it->second.inFlight.size());
}

double Scheduler::rate(DeviceId id) const {
  auto it = devices_.find(id);
  return it == devices_.end() ? 0 : it->second.rate;
}

uint64_t Scheduler::unitBudget(DeviceId id) const {
  auto it = devices_.find(id);
  return it == devices_.end() ? 0 : budgetFor(it->second);
}

}  // namespace pl
