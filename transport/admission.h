#pragma once
// Admission: a Render Node's network connections, from accept until their peer authenticates
// at the Gate and for as long as they last (transport/node_service.h, Connections). Each
// accepted stream gets TLS 1.3 keyed by the cluster key (unless turned off), then its own
// Cap'n Proto RPC system whose bootstrap is a Gate made by the node. Unauthenticated
// ("pending") connections are bounded, so that idle connections, which need no key, cannot lock
// Primaries out:
// - which are kept is core/cluster/pending_admissions.h's decision: at most
//   maxPendingPerSource per source address (IPv6: per /64), at most maxPendingConnections in
//   all, and at that cap a new connection from a source holding fewer evicts the oldest of
//   the source holding the most; a refused connection is closed at once;
// - the TLS handshake must be done within tlsTimeoutMs, the Gate's authentication within
//   handshakeTimeoutMs of the accept;
// - their messages may hold at most handshakeMessageBytes until the Gate calls
//   ConnectionHandshake::authenticated();
// - every kind of line about them (refused, evicted, TLS failed, not authenticated in time) is
//   logged at most once a second, with a count of those since the last.
//
// Threads: loop thread only. Lifetime: destroying the Admission closes every connection (their
// capabilities are released first); the loop must outlive it.

#include <kj/async-io.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "core/cluster/pending_admissions.h"
#include "transport/auth.h"
#include "transport/protocol.capnp.h"
#include "transport/uv_kj_loop.h"

namespace pl {

class SecureChannel;
struct AdmittedConnection;  // admission.cpp
struct PendingTls;          // admission.cpp

struct AdmissionLimits {
  uint32_t handshakeTimeoutMs = 10000;  // 0: never
  uint32_t tlsTimeoutMs = 3000;         // 0: only handshakeTimeoutMs
  uint32_t maxPendingConnections = 32;  // 0: no cap
  uint32_t maxPendingPerSource = 4;     // 0: no per-source limit
  uint64_t handshakeMessageBytes = uint64_t(64) << 10;
  uint64_t maxMessageBytes = uint64_t(64) << 20;  // once authenticated
};

// Shared by one network connection and its Gate.
class ConnectionHandshake {
 public:
  // The Gate authenticated the peer: the connection stops counting as pending, and its
  // messages may hold maxMessageBytes from the next read on. Idempotent; nothing once the
  // connection is gone.
  void authenticated();
  bool isAuthenticated() const { return authenticated_; }

 private:
  friend struct AdmittedConnection;
  friend class Admission;
  bool authenticated_ = false;
  AdmittedConnection* connection_ = nullptr;  // null once the connection is gone
  uint64_t id_ = 0;  // the connection's id in Admission's PendingAdmissions
};

class Admission final : private kj::TaskSet::ErrorHandler {
 public:
  // Makes the bootstrap Gate of a connection: `peer` names it in log lines, `connectionLost`
  // is set once the connection is known to be gone, `handshake` is the Gate's to report
  // authentication on.
  using GateFactory = std::function<proto::Gate::Client(
      const std::string& peer, std::shared_ptr<bool> connectionLost,
      std::shared_ptr<ConnectionHandshake> handshake)>;

  // tls: wrap every connection in TLS keyed by `key` (when the TLS context cannot be built, one
  // error is logged and every connection is refused).
  Admission(UvKjLoop& loop, AdmissionLimits limits, bool tls, const ClusterKey& key,
            GateFactory makeGate);
  ~Admission();
  Admission(const Admission&) = delete;
  Admission& operator=(const Admission&) = delete;

  // Accepts from `receiver` (which must outlive the promise) until the promise is dropped. A
  // failed accept (EMFILE, ENFILE) is logged and retried 100 ms later.
  kj::Promise<void> listen(kj::ConnectionReceiver& receiver);
  // Serves one connected stream. `peer` names it in log lines; empty: its peer address.
  void serve(kj::Own<kj::AsyncIoStream> stream, std::string peer);
  // Closes every connection.
  void disconnectAll();

  size_t connectionCount() const { return connections_; }
  size_t pendingCount() const { return pending_; }

 private:
  friend struct AdmittedConnection;
  friend struct PendingTls;

  // At most one line a second of each kind; the line counts those since the last, and those
  // held back are summed up in one line once the second is over.
  struct LogBudget {
    const char* summary;  // "N <summary> in the last second"
    uint64_t since = 0;   // events since the last line, this one included
    bool logged = false;
    bool summaryDue = false;
    kj::TimePoint last = kj::origin<kj::TimePoint>();
  };
  // Counts an event of `budget`'s kind; true when it may be logged now (then `count` holds how
  // many it stands for).
  bool mayLog(LogBudget& budget, uint64_t& count);

  void taskFailed(kj::Exception&& exception) override;
  void refuseConnection(const std::string& peer, const AdmissionDecision& decision);
  void evict(uint64_t id, const std::string& source);
  void logTlsFailure(const std::string& peer, const kj::Exception& e);
  // The connection stops counting as pending (authenticated, or gone).
  void releasePending(uint64_t id);
  // The RPC system of one connection (after TLS, if any); resolves when the connection is gone.
  kj::Promise<void> runConnection(kj::Own<kj::AsyncIoStream> stream, const std::string& peer,
                                  std::shared_ptr<ConnectionHandshake> handshake);

  UvKjLoop& loop_;
  const AdmissionLimits limits_;
  const bool tls_;
  GateFactory makeGate_;
  std::unique_ptr<SecureChannel> secure_;  // null without TLS, or when it could not be built
  size_t connections_ = 0;  // TLS handshakes and connections
  size_t pending_ = 0;      // of those, not authenticated yet
  PendingAdmissions policy_;
  uint64_t nextId_ = 1;
  // Per pending connection, fulfilled to close it (evicted); an entry goes when its
  // connection's task ends.
  std::map<uint64_t, kj::Own<kj::PromiseFulfiller<void>>> evictors_;
  LogBudget refusedLog_{"connections closed at once (too many had not authenticated)"};
  LogBudget evictedLog_{"connections that had not authenticated closed to make room"};
  LogBudget tlsLog_{"failed or unfinished TLS handshakes"};
  LogBudget timeoutLog_{"connections closed for not authenticating in time"};
  kj::Own<kj::TaskSet> logTasks_;  // the summary lines due
  kj::Own<kj::TaskSet> connectionTasks_;  // last: destroyed (connections closed) first
};

}  // namespace pl
