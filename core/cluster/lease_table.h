#pragma once
// LeaseTable: a Render Node's lease policy, as pure logic. It owns which device belongs to which
// lease and decides grants, renewals, expiry, owner preemption and fair share; the transport
// (transport/node_service.cpp) carries the decisions out (workers, sessions, timers, log lines)
// and never decides itself. No sockets, no threads, no clock of its own: `now` is passed in.
// Not thread-safe; the node calls it from its loop thread.
//
//   LeaseTable table(4, {.defaultTtlMs = 10000, .minTtlMs = 1000, .maxTtlMs = 60000});
//   LeaseGrant g = table.grant({.devices = {}, .heldDevices = 0, .preempt = true}, now);
//   for (const LeaseEnding& e : g.revoked) ...;   // carry out first: their devices moved
//   if (g.granted()) ...;                          // else describeRefusal(g)
//   LeaseExpiry x = table.expire(now);             // arm one timer at x.next
//
// Contract:
// - A device belongs to at most one active lease. A lease that ended holds nothing, is
//   forgotten at once (later calls with its id see an unknown lease), and is reported exactly
//   once: in the LeaseEnding of the call that ended it.
// - TTL: a request for 0 gets defaultTtlMs; any other request is clamped to
//   [minTtlMs, maxTtlMs]. A lease granted or renewed at `now` expires at now + ttl exactly:
//   expire(t) ends it for any t >= that time, renew() at or after it refuses (Expired) and ends
//   it. Lease ids count up from 1 and are never reused.
// - Owner jobs (the machine's owner renders: ownerJobStarted(token)): every active lease whose
//   ownerToken is not the token of a running owner job is revoked (RevokedOwner), and new leases
//   are refused (OwnerRendering) unless they carry such a token, until every owner job that
//   started has ended (a token may run several jobs at once; each ownerJobEnded() ends one).
// - Fair share: a request with `preempt` and `heldDevices` (the devices its Primary holds in
//   the cluster, this node's not counted yet), finding every device it asks for leased, looks
//   among the leases holding those devices for one whose Primary reported its holding, is not
//   the owner's, and can give t = min(its devices here, (its holding - the requester's) / 2)
//   >= 1 devices; of those, the one whose Primary holds the most (the first such in the order
//   of the devices asked for, on a tie). It revokes that lease whole (RevokedFairShare; a
//   lease's devices render in one worker process) and grants the requester t of the freed
//   devices asked for; the rest stay free for the revoked Primary to lease again. The
//   requester ends with at most as many as the holder kept, so the two never swap back; a
//   4-device node shared by two Primaries ends 2 + 2. Leases that do not report their holding
//   (heldDevices unset) are never revoked for fair share.

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/cluster/scheduler.h"  // SchedulerTime

namespace pl {

// A lease's identity on one node: 1, 2, ... in grant order.
enum class LeaseId : uint64_t {};

// Why a lease ended: one name per ending, everywhere (the node's log lines and the errors its
// session gives later calls are leaseEndText()).
enum class LeaseEnd {
  Released,          // the Primary dropped the Lease capability (or its connection closed)
  ConnectionLost,    // its connection is known to be gone
  Expired,           // its TTL ran out without a renew
  RevokedOwner,      // the machine's owner started a job
  RevokedFairShare,  // a Primary holding fewer devices took some of them
  NodeShutdown,      // the node ended every lease (it is stopping, or was told to)
  WorkerFailed,      // its worker process hung, crashed, exited or could not start
  MemoryBudget,      // a load did not fit in the node's memory budget (core/cluster/memory_budget.h)
  SceneTooLarge,     // a load of a scene this node will never hold (core/cluster/load_admission.h)
};

// The human text of an ending, as the node logs it ("lease 3 of P ended: <text>"):
//   Released          "released (dropped by the primary, or its connection closed)"
//   ConnectionLost    "connection lost"
//   Expired           "expired"
//   RevokedOwner      "revoked: the owner is rendering"
//   RevokedFairShare  "revoked: fair share" + (detail empty ? "" : " (<detail>)")
//   NodeShutdown      detail, or "node shutting down" when empty
//   WorkerFailed      detail, or "worker failed" when empty
//   MemoryBudget      detail, or "busy: over the node's memory budget" when empty
//   SceneTooLarge     detail, or "the scene is too large for this node" when empty
std::string leaseEndText(LeaseEnd end, const std::string& detail = "");

// One lease that ended, and why. `devices` were free from the moment it ended.
struct LeaseEnding {
  LeaseId lease{};
  LeaseEnd reason = LeaseEnd::Released;
  std::string detail;  // fair share: the figures; NodeShutdown / WorkerFailed: the cause
  std::vector<uint32_t> devices;

  std::string text() const { return leaseEndText(reason, detail); }
  // "expired" or "ended: <text>": how the node words it in "lease N of P <summary>" and, with
  // "lease " in front, in the errors of the lease's later calls.
  std::string summary() const;
};

struct LeaseTableOptions {
  // Used when a request asks for 0; requests are clamped to [minTtlMs, maxTtlMs]. The table
  // makes minTtlMs >= 1, maxTtlMs >= minTtlMs and the default within them.
  uint32_t defaultTtlMs = 10000;
  uint32_t minTtlMs = 1000;
  uint32_t maxTtlMs = 60000;
};

// What a Primary asks for (LeaseRequest in transport/protocol.capnp, already bounded in size).
struct LeaseGrantRequest {
  // Device indices asked for (duplicates count once, the order is kept); empty: all of them.
  std::vector<uint32_t> devices;
  uint32_t ttlMs = 0;  // 0: the default
  // LeaseRequest.ownerToken: the owner job this Primary renders for; empty: a remote Primary.
  std::string ownerToken;
  // Fair share: devices the Primary holds in the cluster (this node's not counted); unset: it
  // does not report them (then it neither takes nor loses devices through fair share). Values
  // beyond kMaxReportedDevices count as that.
  std::optional<uint32_t> heldDevices;
  bool preempt = false;  // may revoke another lease for fair share
  // Names the requester in the fair-share detail of the lease it revokes (log text only).
  std::string requester;
};

enum class LeaseRefusal {
  None,              // granted
  NoSuchDevice,      // a device index asked for does not exist (LeaseGrant::badDevice)
  OwnerRendering,    // an owner job runs and the request is not for one
  AllDevicesLeased,  // every device asked for is leased, and fair share takes none
};

// grant()'s decision.
struct LeaseGrant {
  LeaseRefusal refusal = LeaseRefusal::None;
  LeaseId lease{};
  std::vector<uint32_t> devices;  // granted, in the order asked for
  uint32_t ttlMs = 0;
  SchedulerTime expiresAt{};
  // Leases ended to make room (fair share), each to be carried out before the grant itself.
  // Only a granted request revokes.
  std::vector<LeaseEnding> revoked;
  uint32_t badDevice = 0;    // NoSuchDevice: the index
  uint32_t deviceCount = 0;  // NoSuchDevice: the devices this node has

  bool granted() const { return refusal == LeaseRefusal::None; }
};

// The error a refused request gets, as the node has always worded it:
//   NoSuchDevice      "lease: no device 5 (this node has 2)"
//   OwnerRendering    "busy: the owner is rendering"
//   AllDevicesLeased  "busy: the devices asked for are leased to another primary"
std::string describeRefusal(const LeaseGrant& grant);

// renew()'s decision.
struct LeaseRenewal {
  enum class Outcome {
    Renewed,
    Expired,       // its TTL had run out: the table ended it now (carry out `ending`)
    UnknownLease,  // never granted, or ended before
  };
  Outcome outcome = Outcome::UnknownLease;
  uint32_t ttlMs = 0;  // Renewed: the lease's TTL (as granted)
  SchedulerTime expiresAt{};
  std::optional<LeaseEnding> ending;  // Expired
};

// expire()'s decision.
struct LeaseExpiry {
  std::vector<LeaseEnding> ended;     // in order of expiry (then of lease id)
  std::optional<SchedulerTime> next;  // the earliest expiry still ahead; none: no lease left
};

// An active lease, as the table keeps it.
struct LeaseRecord {
  LeaseId id{};
  std::vector<uint32_t> devices;
  uint32_t ttlMs = 0;
  SchedulerTime expiresAt{};
  std::string ownerToken;
  // Fair share: devices its Primary holds in the cluster, this lease's included (the grant's
  // report plus the devices granted, then each renew's report, never fewer than this lease's);
  // unset: the Primary does not report them.
  std::optional<uint64_t> heldDevices;
};

class LeaseTable {
 public:
  // The bound on a reported holding (LeaseGrantRequest::heldDevices, renew()).
  static constexpr uint32_t kMaxReportedDevices = 1u << 20;

  // deviceCount: devices 0 .. deviceCount-1, all free.
  explicit LeaseTable(uint32_t deviceCount, LeaseTableOptions options = {});

  // Decides a lease request at `now` (see the contract above). When granted, the lease is
  // active from now on, and the leases in `revoked` have ended.
  LeaseGrant grant(const LeaseGrantRequest& request, SchedulerTime now);

  // The Primary renews lease `id` at `now`, reporting the devices it holds in the cluster (used
  // only when the lease reported at its grant; counted as at least the lease's own). Renewed:
  // the lease now expires at now + its TTL.
  LeaseRenewal renew(LeaseId id, uint32_t heldDevices, SchedulerTime now);

  // Ends every lease whose expiry is at or before `now`; `next` tells when to call again.
  LeaseExpiry expire(SchedulerTime now);
  // The earliest expiry of an active lease; none when there is none.
  std::optional<SchedulerTime> nextExpiry() const;

  // The transport ends lease `id` for a cause it observed: Released, ConnectionLost,
  // WorkerFailed, NodeShutdown (the table decides Expired, RevokedOwner and RevokedFairShare
  // itself, but any reason is accepted). Nothing when the lease is not active.
  std::optional<LeaseEnding> release(LeaseId id, LeaseEnd reason, std::string detail = "");
  // Ends every active lease (in id order), e.g. NodeShutdown.
  std::vector<LeaseEnding> releaseAll(LeaseEnd reason, const std::string& detail = "");

  // An owner job with `token` started: returns the leases it revokes (RevokedOwner), in id
  // order. The owner's own leases (ownerToken == a running job's token) are kept.
  std::vector<LeaseEnding> ownerJobStarted(const std::string& token);
  // One owner job with `token` ended. True when it was the last one running (the devices are
  // offered again); false also when no job with that token runs.
  bool ownerJobEnded(const std::string& token);
  bool ownerActive() const { return !ownerJobs_.empty(); }

  uint32_t deviceCount() const { return uint32_t(holders_.size()); }
  size_t freeDeviceCount() const;
  size_t activeLeaseCount() const { return leases_.size(); }
  // The lease holding `device` (< deviceCount()); none when it is free.
  std::optional<LeaseId> holderOf(uint32_t device) const;
  // An active lease; null when `id` is not active. Valid until the next non-const call.
  const LeaseRecord* find(LeaseId id) const;
  const LeaseTableOptions& options() const { return options_; }

 private:
  LeaseEnding end(LeaseId id, LeaseEnd reason, std::string detail);

  LeaseTableOptions options_;
  std::vector<std::optional<LeaseId>> holders_;  // by device index
  std::map<LeaseId, LeaseRecord> leases_;        // active leases, by id
  std::set<std::pair<SchedulerTime, LeaseId>> expiries_;
  std::multiset<std::string> ownerJobs_;  // tokens of the owner jobs running
  uint64_t nextLeaseId_ = 1;
};

}  // namespace pl
