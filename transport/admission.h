#pragma once
// Admission: a Render Node's network connections, from accept until their peer authenticates
// at the Gate and for as long as they last (transport/node_service.h, Connections). Each
// accepted stream gets TLS 1.3 keyed by the cluster key (unless turned off), then its own
// Cap'n Proto RPC system whose bootstrap is a Gate made by the node. Unauthenticated
// ("pending") connections are bounded: closed after handshakeTimeoutMs, at most
// maxPendingConnections of them (a new one beyond is closed at once, logged at most once a
// second with a count), and their messages may hold at most handshakeMessageBytes until the
// Gate calls ConnectionHandshake::authenticated().
//
// Threads: loop thread only. Lifetime: destroying the Admission closes every connection (their
// capabilities are released first); the loop must outlive it.

#include <kj/async-io.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "transport/auth.h"
#include "transport/protocol.capnp.h"
#include "transport/uv_kj_loop.h"

namespace pl {

class SecureChannel;
struct AdmittedConnection;  // admission.cpp
struct PendingTls;          // admission.cpp

struct AdmissionLimits {
  uint32_t handshakeTimeoutMs = 10000;  // 0: never
  uint32_t maxPendingConnections = 32;  // 0: no cap
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
  bool authenticated_ = false;
  AdmittedConnection* connection_ = nullptr;  // null once the connection is gone
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

  void taskFailed(kj::Exception&& exception) override;
  void refuseConnection(const std::string& peer);
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
  uint64_t refusedSinceLog_ = 0;
  bool refusalLogged_ = false;
  kj::TimePoint lastRefusalLog_ = kj::origin<kj::TimePoint>();
  kj::Own<kj::TaskSet> connectionTasks_;  // last: destroyed (connections closed) first
};

}  // namespace pl
