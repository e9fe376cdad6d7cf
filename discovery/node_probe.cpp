// probeNode: see node_probe.h.

#include "discovery/node_probe.h"

#include <capnp/rpc-twoparty.h>

#include "transport/protocol_convert.h"
#include "transport/secure_channel.h"
#include "transport/tcp.h"

namespace pl {
namespace {

struct ProbeState {
  std::unique_ptr<SecureChannel> secure;
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyClient> rpc;
  proto::Gate::Client gate{nullptr};
  proto::Node::Client node{nullptr};
  Nonce nonce{};
  NodeProbe result;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();

  void finish(std::string status, std::string reason) {
    result.status = std::move(status);
    result.reason = std::move(reason);
    result.milliseconds =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  }
};

const char* stateName(proto::NodeState state) {
  switch (state) {
    case proto::NodeState::IDLE: return "idle";
    case proto::NodeState::LEASED: return "leased";
    case proto::NodeState::PRIMARY: return "primary";
  }
  return "unknown";
}

}  // namespace

kj::Promise<NodeProbe> probeNode(UvKjLoop& loop, const ClusterKey& key, std::string address,
                                 std::string primaryName, std::chrono::milliseconds timeout) {
  auto owned = kj::heap<ProbeState>();
  ProbeState* s = owned.get();
  s->result.address = address;
  const bool haveKey = !key.bytes.empty();
  // TLS keyed by our key (transport/secure_channel.h); without a key, by a random one, so that
  // the node still tells "wrong key" apart from "unreachable".
  ClusterKey tlsKey;
  if (haveKey) {
    tlsKey = key;
  } else {
    tlsKey.bytes.resize(kNewClusterKeyBytes);
    randomBytes(tlsKey.bytes.data(), tlsKey.bytes.size());
  }
  Result<std::unique_ptr<SecureChannel>> secure = SecureChannel::create(tlsKey);
  if (!secure.ok()) {
    s->finish("error", secure.error().message);
    return kj::Promise<NodeProbe>(kj::mv(s->result));
  }
  s->secure = std::move(*secure);

  kj::Promise<void> work =
      connectTcp(loop.lowLevelIo(), address)
          .then([s, haveKey](kj::Own<kj::AsyncIoStream> plain) {
            return s->secure->wrapClient(kj::mv(plain))
                .catch_([s, haveKey](kj::Exception&& e)
                            -> kj::Promise<kj::Own<kj::AsyncIoStream>> {
                  // Finished here; the handler at the end keeps this outcome.
                  if (isTlsKeyMismatch(e)) {
                    s->finish("wrong_key",
                              haveKey ? "wrong key: the node does not hold our cluster key (TLS)"
                                      : "wrong key: we have no cluster key");
                  }
                  return kj::mv(e);
                });
          })
          .then([s, primaryName](kj::Own<kj::AsyncIoStream> stream) {
            s->stream = kj::mv(stream);
            s->rpc = kj::heap<capnp::TwoPartyClient>(*s->stream);
            s->gate = s->rpc->bootstrap().castAs<proto::Gate>();
            s->nonce = randomNonce();
            auto request = s->gate.helloRequest();
            request.setProtocolVersion(kProtocolVersion);
            request.setNonce(kj::arrayPtr(s->nonce.data(), s->nonce.size()));
            request.setPrimaryName(primaryName);
            return request.send();
          })
          .then([s, &key, haveKey](capnp::Response<proto::Gate::HelloResults>&& hello)
                    -> kj::Promise<void> {
            s->result.protocolVersion = hello.getProtocolVersion();
            s->result.nodeId = hello.getNodeId();
            s->result.name = hello.getName();
            if (hello.getProtocolVersion() != kProtocolVersion) {
              s->finish("incompatible",
                        "speaks protocol " + std::to_string(hello.getProtocolVersion()) +
                            ", we speak " + std::to_string(kProtocolVersion));
              return kj::READY_NOW;
            }
            capnp::Data::Reader nodeNonce = hello.getNonce();
            capnp::Data::Reader proof = hello.getProof();
            std::span<const uint8_t> theirNonce(nodeNonce.begin(), nodeNonce.size());
            s->result.proofOk =
                haveKey && nodeNonce.size() == kNonceBytes &&
                proofMatches(nodeProof(key, s->nonce, theirNonce),
                             std::span<const uint8_t>(proof.begin(), proof.size()));
            if (!s->result.proofOk) {
              s->finish("wrong_key", haveKey ? "wrong key: the node does not hold our cluster key"
                                             : "wrong key: we have no cluster key");
              return kj::READY_NOW;
            }
            Proof ours = primaryProof(key, theirNonce, s->nonce);
            auto request = s->gate.authenticateRequest();
            request.setProof(kj::arrayPtr(ours.data(), ours.size()));
            return request.send().then(
                [s](capnp::Response<proto::Gate::AuthenticateResults>&& auth) {
                  s->node = auth.getNode();
                  return s->node.infoRequest().send().then(
                      [s](capnp::Response<proto::Node::InfoResults>&& response) {
                        auto info = response.getInfo();
                        s->result.name = info.getName();
                        s->result.nodeId = info.getNodeId();
                        s->result.state = stateName(info.getState());
                        auto devices = info.getDevices();
                        for (uint32_t i = 0; i < devices.size() && i < kMaxDevicesPerNode; ++i) {
                          s->result.devices.push_back(fromProto(devices[i]));
                        }
                        s->finish("ok", "");
                      });
                },
                [s](kj::Exception&& e) {
                  if (e.getType() == kj::Exception::Type::DISCONNECTED) throw kj::mv(e);
                  s->finish("wrong_key", std::string("wrong key: the node refused our proof (") +
                                             e.getDescription().cStr() + ")");
                });
          });

  uint64_t ms = uint64_t(timeout.count());
  return loop.timer()
      .timeoutAfter(ms * kj::MILLISECONDS, kj::mv(work))
      .then(
          [s]() { return kj::mv(s->result); },
          [s, ms](kj::Exception&& e) {
            if (!s->result.status.empty()) return kj::mv(s->result);  // wrong key at TLS
            std::string what = e.getDescription().cStr();
            if (e.getType() == kj::Exception::Type::OVERLOADED ||
                what.find("timed out") != std::string::npos) {
              s->finish("unreachable", "unreachable: no answer within " + std::to_string(ms) + " ms");
            } else if (e.getType() == kj::Exception::Type::DISCONNECTED) {
              s->finish("unreachable", "unreachable: " + what);
            } else {
              s->finish("error", what);
            }
            return kj::mv(s->result);
          })
      .attach(kj::mv(owned));
}

}  // namespace pl
