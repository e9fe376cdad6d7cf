// probeNode: see node_probe.h.

#include "transport/node_probe.h"

#include <capnp/rpc-twoparty.h>

#include "core/render/render_kernel.h"
#include "transport/node_handshake.h"
#include "transport/protocol_convert.h"
#include "transport/secure_channel.h"

namespace pl {
namespace {

struct ProbeState {
  ClusterKey key;  // ours, or a random one when we have none
  std::unique_ptr<SecureChannel> secure;
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyClient> rpc;
  proto::Node::Client node{nullptr};
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
  if (haveKey) {
    s->key = key;
  } else {
    s->key.bytes.resize(kNewClusterKeyBytes);
    randomBytes(s->key.bytes.data(), s->key.bytes.size());
  }
  Result<std::unique_ptr<SecureChannel>> secure = SecureChannel::create(s->key);
  if (!secure.ok()) {
    s->finish("error", secure.error().message);
    return kj::Promise<NodeProbe>(kj::mv(s->result));
  }
  s->secure = std::move(*secure);

  kj::Promise<void> work =
      handshakeWithNode(loop.lowLevelIo(), s->secure.get(), s->key, address, primaryName)
          .then([s, haveKey](NodeHandshake&& h) -> kj::Promise<void> {
            s->result.protocolVersion = h.protocolVersion;
            s->result.nodeId = h.nodeId;
            s->result.name = h.name;
            s->stream = kj::mv(h.stream);
            s->rpc = kj::mv(h.rpc);
            switch (h.refusal) {
              case HandshakeRefusal::WrongKey:
                s->finish("wrong_key",
                          haveKey ? "wrong key: " + h.reason : "wrong key: we have no cluster key");
                return kj::READY_NOW;
              case HandshakeRefusal::Incompatible:
                s->finish("incompatible", h.reason);
                return kj::READY_NOW;
              case HandshakeRefusal::None:
                break;
            }
            s->result.proofOk = true;
            s->node = kj::mv(h.node);
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
                  const std::string why = renderKernelMismatch(info.getRenderKernel());
                  if (!why.empty()) return s->finish("incompatible", why);
                  s->finish("ok", "");
                });
          });

  uint64_t ms = uint64_t(timeout.count());
  return loop.timer()
      .timeoutAfter(ms * kj::MILLISECONDS, kj::mv(work))
      .then(
          [s]() { return kj::mv(s->result); },
          [s, ms](kj::Exception&& e) {
            if (!s->result.status.empty()) return kj::mv(s->result);  // decided already
            std::string what = e.getDescription().cStr();
            if (e.getType() == kj::Exception::Type::OVERLOADED ||
                what.find("timed out") != std::string::npos) {
              s->finish("unreachable",
                        "unreachable: no answer within " + std::to_string(ms) + " ms");
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
