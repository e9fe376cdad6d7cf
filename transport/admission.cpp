#include "transport/admission.h"

#include <arpa/inet.h>
#include <capnp/rpc-twoparty.h>
#include <capnp/serialize-async.h>
#include <kj/debug.h>
#include <netinet/in.h>

#include <algorithm>

#include "core/util/log.h"
#include "transport/secure_channel.h"

namespace pl {

namespace {

std::string peerAddress(kj::AsyncIoStream& stream) {
  struct sockaddr_storage addr {};
  uint length = sizeof(addr);
  try {
    stream.getpeername(reinterpret_cast<struct sockaddr*>(&addr), &length);
  } catch (...) {
    return "unknown peer";
  }
  char text[INET6_ADDRSTRLEN] = "?";
  if (addr.ss_family == AF_INET) {
    auto* in = reinterpret_cast<struct sockaddr_in*>(&addr);
    inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
    return std::string(text) + ":" + std::to_string(ntohs(in->sin_port));
  }
  if (addr.ss_family == AF_INET6) {
    auto* in6 = reinterpret_cast<struct sockaddr_in6*>(&addr);
    inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
    return "[" + std::string(text) + "]:" + std::to_string(ntohs(in6->sin6_port));
  }
  return "unix peer";
}

// Cap'n Proto's own message framing on a connection's stream, with a traversal limit (which
// also bounds what one message may make us allocate) that can change after construction:
// TwoPartyVatNetwork takes fixed ReaderOptions, but passes them to this stream on every read,
// so each read uses the limit current when it starts. (Cap'n Proto 0.9.2 has no other way to
// change the limit of a live connection.)
class LimitedMessageStream final : public capnp::MessageStream {
 public:
  LimitedMessageStream(kj::AsyncIoStream& stream, uint64_t limitBytes)
      : inner_(stream), limitWords_(limitBytes / sizeof(capnp::word)) {}
  void setLimitBytes(uint64_t bytes) { limitWords_ = bytes / sizeof(capnp::word); }

  kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> tryReadMessage(
      kj::ArrayPtr<kj::AutoCloseFd> fdSpace, capnp::ReaderOptions options,
      kj::ArrayPtr<capnp::word> scratchSpace) override {
    options.traversalLimitInWords = limitWords_;
    return inner_.tryReadMessage(fdSpace, options, scratchSpace);
  }
  kj::Promise<void> writeMessage(
      kj::ArrayPtr<const int> fds,
      kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments) override {
    return inner_.writeMessage(fds, segments);
  }
  kj::Promise<void> writeMessages(
      kj::ArrayPtr<kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>>> messages) override {
    return inner_.writeMessages(messages);
  }
  kj::Maybe<int> getSendBufferSize() override { return inner_.getSendBufferSize(); }
  kj::Promise<void> end() override { return inner_.end(); }

 private:
  capnp::AsyncIoMessageStream inner_;
  uint64_t limitWords_;
};

// The address part of peerAddress()'s "a.b.c.d:port" / "[v6]:port".
std::string hostOf(const std::string& peer) {
  if (!peer.empty() && peer[0] == '[') {
    const size_t close = peer.find(']');
    return close == std::string::npos ? peer : peer.substr(1, close - 1);
  }
  const size_t colon = peer.rfind(':');
  return colon == std::string::npos ? peer : peer.substr(0, colon);
}

std::string counted(uint64_t count) {
  return count > 1 ? " (" + std::to_string(count - 1) + " more like it in the last second)" : "";
}

}  // namespace

// An accepted connection during its TLS handshake: counted as a connection and as pending.
struct PendingTls {
  explicit PendingTls(Admission& admission) : admission(admission) {
    ++admission.connections_;
    ++admission.pending_;
  }
  ~PendingTls() {
    --admission.connections_;
    --admission.pending_;
  }
  Admission& admission;
};

// One accepted connection (after its TLS handshake). Until its peer authenticates it counts as
// pending, and its messages are limited to handshakeMessageBytes.
struct AdmittedConnection {
  AdmittedConnection(Admission& admission, kj::Own<kj::AsyncIoStream> streamIn, std::string peer,
                     std::shared_ptr<bool> lost, std::shared_ptr<ConnectionHandshake> handshakeIn)
      : admission(admission), stream(kj::mv(streamIn)),
        messages(*stream, std::min(admission.limits_.handshakeMessageBytes,
                                   admission.limits_.maxMessageBytes)),
        network(messages, capnp::rpc::twoparty::Side::SERVER),
        handshake(std::move(handshakeIn)),
        rpc(capnp::makeRpcServer(network, admission.makeGate_(peer, std::move(lost), handshake))) {
    handshake->connection_ = this;
    ++admission.connections_;
    ++admission.pending_;
  }
  ~AdmittedConnection() {
    handshake->connection_ = nullptr;
    --admission.connections_;
    if (!handshake->authenticated_) --admission.pending_;
  }
  void authenticated() {
    if (handshake->authenticated_) return;
    handshake->authenticated_ = true;
    --admission.pending_;
    admission.releasePending(handshake->id_);
    messages.setLimitBytes(admission.limits_.maxMessageBytes);
  }

  Admission& admission;
  kj::Own<kj::AsyncIoStream> stream;
  LimitedMessageStream messages;
  capnp::TwoPartyVatNetwork network;
  std::shared_ptr<ConnectionHandshake> handshake;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
};

void ConnectionHandshake::authenticated() {
  if (connection_ != nullptr) {
    connection_->authenticated();
  } else {
    authenticated_ = true;  // the connection is gone; only the flag is left to set
  }
}

Admission::Admission(UvKjLoop& loop, AdmissionLimits limits, bool tls, const ClusterKey& key,
                     GateFactory makeGate)
    : loop_(loop), limits_(limits), tls_(tls), makeGate_(std::move(makeGate)),
      policy_(PendingAdmissionLimits{limits.maxPendingPerSource, limits.maxPendingConnections}),
      logTasks_(kj::heap<kj::TaskSet>(static_cast<kj::TaskSet::ErrorHandler&>(*this))),
      connectionTasks_(kj::heap<kj::TaskSet>(static_cast<kj::TaskSet::ErrorHandler&>(*this))) {
  if (tls_) {
    Result<std::unique_ptr<SecureChannel>> made = SecureChannel::create(key);
    if (made.ok()) {
      secure_ = std::move(*made);
    } else {
      PL_LOG_ERROR("no TLS, so no connection will be accepted: %s", made.error().message.c_str());
    }
  }
}

Admission::~Admission() { connectionTasks_ = nullptr; }

void Admission::taskFailed(kj::Exception&& exception) {
  PL_LOG_WARN("connection task failed: %s", exception.getDescription().cStr());
}

void Admission::disconnectAll() {
  connectionTasks_ = kj::heap<kj::TaskSet>(static_cast<kj::TaskSet::ErrorHandler&>(*this));
}

kj::Promise<void> Admission::listen(kj::ConnectionReceiver& receiver) {
  return receiver.accept().then(
      [this, &receiver](kj::Own<kj::AsyncIoStream> stream) {
        serve(kj::mv(stream), "");
        return listen(receiver);
      },
      [this, &receiver](kj::Exception&& e) -> kj::Promise<void> {
        PL_LOG_WARN("accepting a connection failed (%s); retrying in 100 ms",
                    e.getDescription().cStr());
        return loop_.timer().afterDelay(100 * kj::MILLISECONDS).then([this, &receiver]() {
          return listen(receiver);
        });
      });
}

bool Admission::mayLog(LogBudget& budget, uint64_t& count) {
  ++budget.since;
  const kj::TimePoint now = loop_.timer().now();
  if (!budget.logged || now - budget.last >= 1 * kj::SECONDS) {
    count = budget.since;
    budget.since = 0;
    budget.logged = true;
    budget.last = now;
    return true;
  }
  if (!budget.summaryDue) {  // held back: summed up when the second is over
    budget.summaryDue = true;
    logTasks_->add(loop_.timer().atTime(budget.last + 1 * kj::SECONDS).then([this, &budget] {
      budget.summaryDue = false;
      if (budget.since == 0) return;
      PL_LOG_WARN("%llu more %s in the last second", (unsigned long long)budget.since,
                  budget.summary);
      budget.since = 0;
      budget.last = loop_.timer().now();
    }));
  }
  return false;
}

// A connection PendingAdmissions does not keep: closed at once.
void Admission::refuseConnection(const std::string& peer, const AdmissionDecision& decision) {
  uint64_t count = 0;
  if (!mayLog(refusedLog_, count)) return;
  if (decision.refusal == AdmissionDecision::Refusal::kSourceFull) {
    PL_LOG_WARN("closed the connection from %s at once: %u connections from its address have "
                "not authenticated yet, the most one address may hold%s",
                peer.c_str(), limits_.maxPendingPerSource, counted(count).c_str());
  } else {
    PL_LOG_WARN("closed the connection from %s at once: %zu connections have not authenticated "
                "yet, the limit, and none of another address could make room%s",
                peer.c_str(), pending_, counted(count).c_str());
  }
}

// Room for a connection from a source holding fewer: the oldest pending connection of the
// source holding the most is closed.
void Admission::evict(uint64_t id, const std::string& source) {
  auto it = evictors_.find(id);
  if (it != evictors_.end()) it->second->fulfill();
  uint64_t count = 0;
  if (mayLog(evictedLog_, count))
    PL_LOG_WARN("closed a connection from %s that had not authenticated: %zu connections are "
                "waiting, the limit, and that address held the most%s",
                source.c_str(), pending_, counted(count).c_str());
}

void Admission::logTlsFailure(const std::string& peer, const kj::Exception& e) {
  uint64_t count = 0;
  if (!mayLog(tlsLog_, count)) return;
  if (isTlsKeyMismatch(e)) {
    PL_LOG_WARN("TLS handshake from %s failed: authentication failed, %s (a client without "
                "this cluster key?)%s",
                peer.c_str(), tlsFailureReason(e).c_str(), counted(count).c_str());
  } else {
    PL_LOG_WARN("TLS handshake from %s failed: %s (not a peerlight client, or one of another "
                "version?)%s",
                peer.c_str(), tlsFailureReason(e).c_str(), counted(count).c_str());
  }
}

void Admission::releasePending(uint64_t id) { policy_.remove(id); }

void Admission::serve(kj::Own<kj::AsyncIoStream> stream, std::string peer) {
  if (peer.empty()) peer = peerAddress(*stream);
  const uint64_t id = nextId_++;
  AdmissionDecision decision = policy_.admit(id, admissionSource(hostOf(peer)));
  if (decision.evict) evict(*decision.evict, decision.evictedSource);
  if (!decision.admitted) {
    refuseConnection(peer, decision);
    return;  // dropping the stream closes it
  }
  // Pending from here until the Gate authenticates the peer: the TLS handshake and the Gate's
  // share one deadline (below); the TLS handshake alone has a shorter one.
  auto handshake = std::make_shared<ConnectionHandshake>();
  handshake->id_ = id;
  kj::Promise<void> connection = nullptr;
  if (!tls_) {
    connection = runConnection(kj::mv(stream), peer, handshake);
  } else if (secure_ == nullptr) {
    uint64_t count = 0;
    if (mayLog(tlsLog_, count))
      PL_LOG_WARN("closing the connection from %s: this node has no TLS context%s", peer.c_str(),
                  counted(count).c_str());
    policy_.remove(id);
    return;
  } else {
    auto pending = kj::heap<PendingTls>(*this);
    kj::Promise<kj::Own<kj::AsyncIoStream>> secured = secure_->wrapServer(kj::mv(stream));
    if (limits_.tlsTimeoutMs != 0) {
      secured = secured.exclusiveJoin(
          loop_.timer()
              .afterDelay(limits_.tlsTimeoutMs * kj::MILLISECONDS)
              .then([ms = limits_.tlsTimeoutMs]() -> kj::Own<kj::AsyncIoStream> {
                KJ_FAIL_REQUIRE("the TLS handshake did not finish within", ms, "ms");
              }));
    }
    connection = secured.then(
        [this, peer, handshake, pending = kj::mv(pending)](
            kj::Own<kj::AsyncIoStream> secured) mutable {
          pending = nullptr;  // the connection counts it from now on
          return runConnection(kj::mv(secured), peer, handshake);
        },
        [this, peer](kj::Exception&& e) { logTlsFailure(peer, e); });
  }
  // A peer that has not authenticated within the handshake timeout is dropped (the same way).
  kj::Promise<void> timeout = kj::NEVER_DONE;
  if (limits_.handshakeTimeoutMs != 0) {
    timeout = loop_.timer()
                  .afterDelay(limits_.handshakeTimeoutMs * kj::MILLISECONDS)
                  .then([this, handshake, peer,
                         ms = limits_.handshakeTimeoutMs]() -> kj::Promise<void> {
                    if (handshake->isAuthenticated()) return kj::NEVER_DONE;
                    uint64_t count = 0;
                    if (mayLog(timeoutLog_, count))
                      PL_LOG_WARN("closing the connection from %s: not authenticated within %u "
                                  "ms%s",
                                  peer.c_str(), ms, counted(count).c_str());
                    return kj::READY_NOW;
                  });
  }
  // Evicted (to make room for a connection from an address holding fewer): closed as well.
  auto evicted = kj::newPromiseAndFulfiller<void>();
  evictors_[id] = kj::mv(evicted.fulfiller);
  // (Unless it authenticated between the eviction and now: the close is only queued.)
  kj::Promise<void> evictedUnlessAuthenticated =
      evicted.promise.then([handshake]() -> kj::Promise<void> {
        if (handshake->isAuthenticated()) return kj::NEVER_DONE;
        return kj::READY_NOW;
      });
  connectionTasks_->add(connection.exclusiveJoin(kj::mv(timeout))
                            .exclusiveJoin(kj::mv(evictedUnlessAuthenticated))
                            .attach(kj::defer([this, id] {
                              policy_.remove(id);
                              evictors_.erase(id);
                            })));
}

kj::Promise<void> Admission::runConnection(kj::Own<kj::AsyncIoStream> stream,
                                           const std::string& peer,
                                           std::shared_ptr<ConnectionHandshake> handshake) {
  auto lost = std::make_shared<bool>(false);
  auto connection =
      kj::heap<AdmittedConnection>(*this, kj::mv(stream), peer, lost, std::move(handshake));
  PL_LOG_DEBUG("connection from %s", peer.c_str());
  // When the connection is gone, flag it (for the log lines of its leases), then drop its RPC
  // system, which releases its capabilities and so ends its leases.
  auto disconnected = connection->network.onDisconnect().then(
      [lost, peer]() {
        *lost = true;
        PL_LOG_DEBUG("connection from %s closed", peer.c_str());
      },
      [lost](kj::Exception&&) { *lost = true; });
  return disconnected.attach(kj::mv(connection));
}

}  // namespace pl
