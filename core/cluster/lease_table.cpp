#include "core/cluster/lease_table.h"

#include <algorithm>

#include "core/util/check.h"

namespace pl {

std::string leaseEndText(LeaseEnd end, const std::string& detail) {
  switch (end) {
    case LeaseEnd::Released:
      return "released (dropped by the primary, or its connection closed)";
    case LeaseEnd::ConnectionLost:
      return "connection lost";
    case LeaseEnd::Expired:
      return "expired";
    case LeaseEnd::RevokedOwner:
      return "revoked: the owner is rendering";
    case LeaseEnd::RevokedFairShare:
      return detail.empty() ? "revoked: fair share" : "revoked: fair share (" + detail + ")";
    case LeaseEnd::NodeShutdown:
      return detail.empty() ? "node shutting down" : detail;
    case LeaseEnd::WorkerFailed:
      return detail.empty() ? "worker failed" : detail;
    case LeaseEnd::MemoryBudget:
      return detail.empty() ? "busy: over the node's memory budget" : detail;
    case LeaseEnd::SceneTooLarge:
      return detail.empty() ? "the scene is too large for this node" : detail;
  }
  PL_CHECK(false);
  return "";
}

std::string LeaseEnding::summary() const {
  return reason == LeaseEnd::Expired ? "expired" : "ended: " + text();
}

std::string describeRefusal(const LeaseGrant& grant) {
  switch (grant.refusal) {
    case LeaseRefusal::None:
      return "granted";
    case LeaseRefusal::NoSuchDevice:
      return "lease: no device " + std::to_string(grant.badDevice) + " (this node has " +
             std::to_string(grant.deviceCount) + ")";
    case LeaseRefusal::OwnerRendering:
      return "busy: the owner is rendering";
    case LeaseRefusal::AllDevicesLeased:
      return "busy: the devices asked for are leased to another primary";
  }
  PL_CHECK(false);
  return "";
}

LeaseTable::LeaseTable(uint32_t deviceCount, LeaseTableOptions options)
    : options_(options), holders_(deviceCount) {
  options_.minTtlMs = std::max<uint32_t>(options_.minTtlMs, 1);
  options_.maxTtlMs = std::max(options_.maxTtlMs, options_.minTtlMs);
  options_.defaultTtlMs = std::clamp(options_.defaultTtlMs, options_.minTtlMs, options_.maxTtlMs);
}

LeaseGrant LeaseTable::grant(const LeaseGrantRequest& request, SchedulerTime now) {
  LeaseGrant decision;
  const uint32_t count = deviceCount();
  std::vector<uint32_t> candidates;
  if (request.devices.empty()) {
    for (uint32_t d = 0; d < count; ++d) candidates.push_back(d);
  } else {
    for (uint32_t d : request.devices) {
      if (d >= count) {
        decision.refusal = LeaseRefusal::NoSuchDevice;
        decision.badDevice = d;
        decision.deviceCount = count;
        return decision;
      }
      if (std::find(candidates.begin(), candidates.end(), d) == candidates.end()) {
        candidates.push_back(d);
      }
    }
  }
  if (ownerActive() &&
      (request.ownerToken.empty() || ownerJobs_.count(request.ownerToken) == 0)) {
    decision.refusal = LeaseRefusal::OwnerRendering;
    return decision;
  }

  std::vector<uint32_t> granted;
  for (uint32_t d : candidates) {
    if (!holders_[d]) granted.push_back(d);
  }
  std::optional<int64_t> requesterHeld;
  if (request.heldDevices) {
    requesterHeld = int64_t(std::min(*request.heldDevices, kMaxReportedDevices));
  }
  if (granted.empty() && requesterHeld && request.preempt) {
    // Fair share (see the header): the lease whose Primary holds the most gives t of its
    // devices; t <= (holder - requester) / 2 keeps the requester at or below the holder.
    const LeaseRecord* victim = nullptr;
    int64_t transfer = 0;
    for (uint32_t d : candidates) {
      const LeaseRecord& holder = leases_.at(*holders_[d]);
      if (!holder.heldDevices || !holder.ownerToken.empty()) continue;
      const int64_t holderHeld = int64_t(*holder.heldDevices);
      const int64_t t =
          std::min<int64_t>(int64_t(holder.devices.size()), (holderHeld - *requesterHeld) / 2);
      if (t >= 1 && (victim == nullptr || holderHeld > int64_t(*victim->heldDevices))) {
        victim = &holder;
        transfer = t;
      }
    }
    if (victim != nullptr) {
      std::string detail = "its primary holds " + std::to_string(*victim->heldDevices) +
                           " devices, " + request.requester + " holds " +
                           std::to_string(*requesterHeld) + "; " + std::to_string(transfer) +
                           " change hands";
      decision.revoked.push_back(end(victim->id, LeaseEnd::RevokedFairShare, std::move(detail)));
      for (uint32_t d : candidates) {
        if (!holders_[d] && int64_t(granted.size()) < transfer) granted.push_back(d);
      }
    }
  }
  if (granted.empty()) {
    PL_CHECK(decision.revoked.empty());
    decision.refusal = LeaseRefusal::AllDevicesLeased;
    return decision;
  }

  LeaseRecord lease;
  lease.id = LeaseId{nextLeaseId_++};
  lease.devices = granted;
  lease.ttlMs = request.ttlMs == 0
                    ? options_.defaultTtlMs
                    : std::clamp(request.ttlMs, options_.minTtlMs, options_.maxTtlMs);
  lease.expiresAt = now + std::chrono::milliseconds(lease.ttlMs);
  lease.ownerToken = request.ownerToken;
  if (requesterHeld) lease.heldDevices = uint64_t(*requesterHeld) + granted.size();
  for (uint32_t d : granted) holders_[d] = lease.id;
  expiries_.emplace(lease.expiresAt, lease.id);

  decision.lease = lease.id;
  decision.devices = std::move(granted);
  decision.ttlMs = lease.ttlMs;
  decision.expiresAt = lease.expiresAt;
  leases_.emplace(lease.id, std::move(lease));
  return decision;
}

LeaseRenewal LeaseTable::renew(LeaseId id, uint32_t heldDevices, SchedulerTime now) {
  LeaseRenewal renewal;
  auto it = leases_.find(id);
  if (it == leases_.end()) return renewal;  // UnknownLease
  LeaseRecord& lease = it->second;
  if (now >= lease.expiresAt) {
    renewal.outcome = LeaseRenewal::Outcome::Expired;
    renewal.ending = end(id, LeaseEnd::Expired, "");
    return renewal;
  }
  expiries_.erase({lease.expiresAt, id});
  lease.expiresAt = now + std::chrono::milliseconds(lease.ttlMs);
  expiries_.emplace(lease.expiresAt, id);
  if (lease.heldDevices) {
    lease.heldDevices = std::max<uint64_t>(std::min(heldDevices, kMaxReportedDevices),
                                           lease.devices.size());
  }
  renewal.outcome = LeaseRenewal::Outcome::Renewed;
  renewal.ttlMs = lease.ttlMs;
  renewal.expiresAt = lease.expiresAt;
  return renewal;
}

LeaseExpiry LeaseTable::expire(SchedulerTime now) {
  LeaseExpiry expiry;
  while (!expiries_.empty() && expiries_.begin()->first <= now) {
    expiry.ended.push_back(end(expiries_.begin()->second, LeaseEnd::Expired, ""));
  }
  expiry.next = nextExpiry();
  return expiry;
}

std::optional<SchedulerTime> LeaseTable::nextExpiry() const {
  if (expiries_.empty()) return std::nullopt;
  return expiries_.begin()->first;
}

std::optional<LeaseEnding> LeaseTable::release(LeaseId id, LeaseEnd reason, std::string detail) {
  if (leases_.count(id) == 0) return std::nullopt;
  return end(id, reason, std::move(detail));
}

std::vector<LeaseEnding> LeaseTable::releaseAll(LeaseEnd reason, const std::string& detail) {
  std::vector<LeaseEnding> ended;
  while (!leases_.empty()) ended.push_back(end(leases_.begin()->first, reason, detail));
  return ended;
}

std::vector<LeaseEnding> LeaseTable::ownerJobStarted(const std::string& token) {
  ownerJobs_.insert(token);
  std::vector<LeaseId> revoke;
  for (const auto& [id, lease] : leases_) {
    if (lease.ownerToken.empty() || ownerJobs_.count(lease.ownerToken) == 0) revoke.push_back(id);
  }
  std::vector<LeaseEnding> ended;
  for (LeaseId id : revoke) ended.push_back(end(id, LeaseEnd::RevokedOwner, ""));
  return ended;
}

bool LeaseTable::ownerJobEnded(const std::string& token) {
  auto it = ownerJobs_.find(token);
  if (it == ownerJobs_.end()) return false;
  ownerJobs_.erase(it);
  return ownerJobs_.empty();
}

size_t LeaseTable::freeDeviceCount() const {
  return size_t(std::count(holders_.begin(), holders_.end(), std::nullopt));
}

std::optional<LeaseId> LeaseTable::holderOf(uint32_t device) const {
  PL_CHECK(device < holders_.size());
  return holders_[device];
}

const LeaseRecord* LeaseTable::find(LeaseId id) const {
  auto it = leases_.find(id);
  return it == leases_.end() ? nullptr : &it->second;
}

LeaseEnding LeaseTable::end(LeaseId id, LeaseEnd reason, std::string detail) {
  auto it = leases_.find(id);
  PL_CHECK(it != leases_.end());
  LeaseRecord& lease = it->second;
  for (uint32_t d : lease.devices) {
    PL_CHECK(holders_[d] == id);
    holders_[d].reset();
  }
  expiries_.erase({lease.expiresAt, id});
  LeaseEnding ending{id, reason, std::move(detail), std::move(lease.devices)};
  leases_.erase(it);
  return ending;
}

}  // namespace pl
