#include "transport/admission.h"

#include <arpa/inet.h>
#include <capnp/rpc-twoparty.h>
#include <capnp/serialize-async.h>
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

// Beyond maxPendingConnections: the connection from `peer` is closed at once. Logged at most
// once a second (with how many were refused since the last line).
void Admission::refuseConnection(const std::string& peer) {
  ++refusedSinceLog_;
  const kj::TimePoint now = loop_.timer().now();
  if (refusalLogged_ && now - lastRefusalLog_ < 1 * kj::SECONDS) return;
  PL_LOG_WARN("closed %llu connection(s) at once (the latest from %s): %zu connections have "
              "not authenticated yet, the limit",
              (unsigned long long)refusedSinceLog_, peer.c_str(), pending_);
  refusedSinceLog_ = 0;
  refusalLogged_ = true;
  lastRefusalLog_ = now;
}

void Admission::serve(kj::Own<kj::AsyncIoStream> stream, std::string peer) {
  if (peer.empty()) peer = peerAddress(*stream);
  if (limits_.maxPendingConnections != 0 && pending_ >= limits_.maxPendingConnections) {
    refuseConnection(peer);
    return;  // dropping the stream closes it
  }
  // Pending from here until the Gate authenticates the peer: the TLS handshake and the Gate's
  // share one deadline (below).
  auto handshake = std::make_shared<ConnectionHandshake>();
  kj::Promise<void> connection = nullptr;
  if (!tls_) {
    connection = runConnection(kj::mv(stream), peer, handshake);
  } else if (secure_ == nullptr) {
    PL_LOG_WARN("closing the connection from %s: this node has no TLS context", peer.c_str());
    return;
  } else {
    auto pending = kj::heap<PendingTls>(*this);
    connection = secure_->wrapServer(kj::mv(stream))
                     .then(
                         [this, peer, handshake, pending = kj::mv(pending)](
                             kj::Own<kj::AsyncIoStream> secured) mutable {
                           pending = nullptr;  // the connection counts it from now on
                           return runConnection(kj::mv(secured), peer, handshake);
                         },
                         [peer](kj::Exception&& e) {
                           if (isTlsKeyMismatch(e)) {
                             PL_LOG_WARN("TLS handshake from %s failed: authentication failed, "
                                         "%s (a client without this cluster key?)",
                                         peer.c_str(), tlsFailureReason(e).c_str());
                           } else {
                             PL_LOG_WARN("TLS handshake from %s failed: %s (not a peerlight "
                                         "client, or one of another version?)",
                                         peer.c_str(), tlsFailureReason(e).c_str());
                           }
                         });
  }
  // A peer that has not authenticated within the handshake timeout is dropped (the same way).
  kj::Promise<void> timeout = kj::NEVER_DONE;
  if (limits_.handshakeTimeoutMs != 0) {
    timeout = loop_.timer()
                  .afterDelay(limits_.handshakeTimeoutMs * kj::MILLISECONDS)
                  .then([handshake, peer, ms = limits_.handshakeTimeoutMs]() -> kj::Promise<void> {
                    if (handshake->isAuthenticated()) return kj::NEVER_DONE;
                    PL_LOG_WARN("closing the connection from %s: not authenticated within %u ms",
                                peer.c_str(), ms);
                    return kj::READY_NOW;
                  });
  }
  connectionTasks_->add(connection.exclusiveJoin(kj::mv(timeout)));
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
