#include "transport/node_gate.h"

#include <kj/debug.h>

#include <algorithm>

#include "core/util/log.h"

namespace pl {
namespace {

[[noreturn]] void failCall(const std::string& message) {
  kj::throwFatalException(KJ_EXCEPTION(FAILED, message));
}

class GateImpl final : public proto::Gate::Server {
 public:
  GateImpl(const GateIdentity& identity, std::string peer,
           std::shared_ptr<ConnectionHandshake> handshake, NodeFactory makeNode)
      : identity_(identity), peer_(std::move(peer)), handshake_(std::move(handshake)),
        makeNode_(std::move(makeNode)) {}

  kj::Promise<void> hello(HelloContext context) override {
    auto params = context.getParams();
    if (state_ != State::kNew) failCall("hello: already said hello on this connection");
    auto name = params.getPrimaryName();
    primaryName_ = std::string(name.cStr(), std::min<size_t>(name.size(), 128));
    auto results = context.getResults();
    results.setProtocolVersion(identity_.protocolVersion);
    results.setNodeId(identity_.nodeId);
    results.setName(identity_.name);
    const uint32_t theirs = params.getProtocolVersion();
    if (theirs != identity_.protocolVersion) {
      state_ = State::kIncompatible;
      PL_LOG_WARN("primary %s (%s) speaks protocol %u, this node speaks %u", primaryName_.c_str(),
                  peer_.c_str(), theirs, identity_.protocolVersion);
      return kj::READY_NOW;
    }
    capnp::Data::Reader nonce = params.getNonce();
    if (nonce.size() != kNonceBytes) {
      state_ = State::kDone;
      failCall("hello: the nonce must be " + std::to_string(kNonceBytes) + " bytes, not " +
               std::to_string(nonce.size()));
    }
    std::copy(nonce.begin(), nonce.end(), primaryNonce_.begin());
    nodeNonce_ = randomNonce();
    Proof proof = nodeProof(identity_.key, primaryNonce_, nodeNonce_);
    results.setNonce(kj::arrayPtr(nodeNonce_.data(), nodeNonce_.size()));
    results.setProof(kj::arrayPtr(proof.data(), proof.size()));
    state_ = State::kChallenged;
    return kj::READY_NOW;
  }

  kj::Promise<void> authenticate(AuthenticateContext context) override {
    const State state = state_;
    state_ = State::kDone;  // one attempt per connection
    if (state == State::kIncompatible) {
      failCall("protocol version mismatch: this node speaks protocol " +
               std::to_string(identity_.protocolVersion));
    }
    capnp::Data::Reader proof = context.getParams().getProof();
    bool good = false;
    if (state == State::kChallenged) {
      Proof expected = primaryProof(identity_.key, nodeNonce_, primaryNonce_);
      good = proofMatches(expected, std::span<const uint8_t>(proof.begin(), proof.size()));
    }
    const std::string who = (primaryName_.empty() ? std::string("primary") : primaryName_) +
                            " (" + peer_ + ")";
    if (!good) {
      PL_LOG_WARN("refused %s: authentication failed (%s)", who.c_str(),
                  state == State::kChallenged ? "wrong cluster key"
                                              : "no fresh hello before authenticate");
      failCall("authentication failed");
    }
    PL_LOG_INFO("%s authenticated", who.c_str());
    if (handshake_ != nullptr) handshake_->authenticated();
    context.getResults().setNode(makeNode_(who));
    return kj::READY_NOW;
  }

 private:
  enum class State { kNew, kChallenged, kIncompatible, kDone };
  const GateIdentity& identity_;
  std::string peer_;
  std::shared_ptr<ConnectionHandshake> handshake_;
  NodeFactory makeNode_;
  State state_ = State::kNew;
  std::string primaryName_;
  Nonce primaryNonce_{};
  Nonce nodeNonce_{};
};


}  // namespace

kj::Own<proto::Gate::Server> newNodeGate(const GateIdentity& identity, std::string peer,
                                         std::shared_ptr<ConnectionHandshake> handshake,
                                         NodeFactory makeNode) {
  return kj::heap<GateImpl>(identity, std::move(peer), std::move(handshake), std::move(makeNode));
}

}  // namespace pl
