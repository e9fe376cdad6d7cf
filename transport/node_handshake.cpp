// handshakeWithNode: see node_handshake.h.

#include "transport/node_handshake.h"

#include <memory>
#include <span>
#include <utility>

#include <kj/debug.h>

#include "transport/protocol_convert.h"
#include "transport/secure_channel.h"
#include "transport/tcp.h"

namespace pl {
namespace {

// What the handshake holds while it runs. The Gate capability is destroyed before the result's
// RPC system (declared after it).
struct Handshake {
  NodeHandshake result;
  proto::Gate::Client gate = nullptr;
  Nonce primaryNonce{};

  void refuse(HandshakeRefusal why, std::string reason) {
    result.refusal = why;
    result.reason = std::move(reason);
  }
};

// Gate.authenticate with our proof (random bytes when the node's proof was wrong: see the
// header); the Node capability when both proofs held.
kj::Promise<void> authenticate(std::shared_ptr<Handshake> h, const ClusterKey& key,
                               capnp::Data::Reader nodeNonce, capnp::Data::Reader nodeProofBytes) {
  const std::span<const uint8_t> theirNonce(nodeNonce.begin(), nodeNonce.size());
  const bool nodeOk =
      nodeNonce.size() == kNonceBytes &&
      proofMatches(nodeProof(key, h->primaryNonce, theirNonce),
                   std::span<const uint8_t>(nodeProofBytes.begin(), nodeProofBytes.size()));
  Proof ours = primaryProof(key, theirNonce, h->primaryNonce);
  if (!nodeOk) randomBytes(ours.data(), ours.size());
  auto request = h->gate.authenticateRequest();
  request.setProof(kj::arrayPtr(ours.data(), ours.size()));
  return request.send().then(
      [h, nodeOk](capnp::Response<proto::Gate::AuthenticateResults>&& r) -> kj::Promise<void> {
        if (!nodeOk)
          h->refuse(HandshakeRefusal::WrongKey, "the node does not hold this cluster key");
        else
          h->result.node = r.getNode();
        return kj::READY_NOW;
      },
      [h, nodeOk](kj::Exception&& e) -> kj::Promise<void> {
        // The node's proof was wrong: that is the outcome, whatever became of our answer.
        if (!nodeOk) {
          h->refuse(HandshakeRefusal::WrongKey, "the node does not hold this cluster key");
          return kj::READY_NOW;
        }
        if (e.getType() != kj::Exception::Type::FAILED) return kj::mv(e);  // a broken connection
        h->refuse(HandshakeRefusal::WrongKey,
                  std::string("the node refused our proof: ") + e.getDescription().cStr());
        return kj::READY_NOW;
      });
}

// Gate.hello on a connected stream: the node's protocol version compared, then authenticate().
kj::Promise<void> hello(std::shared_ptr<Handshake> h, const ClusterKey& key,
                        const std::string& primaryName, kj::Own<kj::AsyncIoStream> stream) {
  NodeHandshake& r = h->result;
  r.stream = kj::mv(stream);
  r.rpc = kj::heap<capnp::TwoPartyClient>(*r.stream);
  h->gate = r.rpc->bootstrap().castAs<proto::Gate>();
  h->primaryNonce = randomNonce();
  auto request = h->gate.helloRequest();
  request.setProtocolVersion(kProtocolVersion);
  request.setNonce(kj::arrayPtr(h->primaryNonce.data(), h->primaryNonce.size()));
  request.setPrimaryName(primaryName);
  return request.send().then(
      [h, &key](capnp::Response<proto::Gate::HelloResults>&& hello) -> kj::Promise<void> {
        NodeHandshake& r = h->result;
        r.protocolVersion = hello.getProtocolVersion();
        r.nodeId = hello.getNodeId();
        r.name = hello.getName();
        if (r.protocolVersion != kProtocolVersion) {
          h->refuse(HandshakeRefusal::Incompatible,
                    "speaks protocol " + std::to_string(r.protocolVersion) + ", we speak " +
                        std::to_string(kProtocolVersion));
          return kj::READY_NOW;
        }
        return authenticate(h, key, hello.getNonce(), hello.getProof());
      });
}

}  // namespace

kj::Promise<NodeHandshake> handshakeWithNode(kj::LowLevelAsyncIoProvider& io,
                                             SecureChannel* secure, const ClusterKey& key,
                                             const std::string& address,
                                             const std::string& primaryName) {
  auto h = std::make_shared<Handshake>();
  kj::Promise<kj::Own<kj::AsyncIoStream>> connected = connectTcp(io, address);
  if (secure != nullptr) {
    // TLS first: a node without our key fails here, and that is final (the refusal is noted,
    // and its exception ends the handshake below).
    connected = connected.then([secure, h](kj::Own<kj::AsyncIoStream> plain) {
      return secure->wrapClient(kj::mv(plain))
          .catch_([h](kj::Exception&& e) -> kj::Promise<kj::Own<kj::AsyncIoStream>> {
            if (isTlsKeyMismatch(e))
              h->refuse(HandshakeRefusal::WrongKey, "TLS: the node does not hold this cluster key");
            return kj::mv(e);
          });
    });
  }
  auto refusedAtTls = [h](kj::Exception&& e) -> kj::Promise<void> {
    if (h->result.refusal != HandshakeRefusal::None) return kj::READY_NOW;
    return kj::mv(e);
  };
  return connected
      .then(
          [h, &key, primaryName](kj::Own<kj::AsyncIoStream> stream) {
            return hello(h, key, primaryName, kj::mv(stream));
          },
          kj::mv(refusedAtTls))
      .then([h]() {
        h->gate = nullptr;  // before the RPC system it came from leaves with the result
        return kj::mv(h->result);
      });
}

}  // namespace pl
