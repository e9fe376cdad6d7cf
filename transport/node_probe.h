#pragma once
// probeNode: connects to a Render Node and finds out whether this machine could use it, the
// way a Primary starts: the same handshake (transport/node_handshake.h: TCP connect, TLS keyed
// by our key, Gate.hello, Gate.authenticate), then Node.info. Takes no lease. Used by
// `peerlight nodes`.
//
// Outcomes (NodeProbe::status, the words `peerlight nodes` prints): "ok"; "unreachable"
// (connect failed, connection lost, or no answer within the timeout); "incompatible" (the node
// speaks another protocol version: the reason names both); "wrong_key" (the TLS handshake
// showed the node holds another key, or its proof does not match our key, or it refused ours;
// without a key of our own, a random one stands in); "error" (anything else). Never rejects.
//
// Threads: the loop thread of `loop`.

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <kj/async.h>

#include "core/render/device.h"
#include "transport/auth.h"
#include "transport/uv_kj_loop.h"

namespace pl {

struct NodeProbe {
  std::string address;
  std::string status;  // ok | unreachable | incompatible | wrong_key | error
  std::string reason;  // empty when ok
  uint32_t protocolVersion = 0;  // the node's, from hello (0: no answer)
  bool proofOk = false;          // the node proved it holds our key
  std::string nodeId;
  std::string name;
  std::string state;  // idle | leased | primary (from Node.info; empty without it)
  std::vector<DeviceInfo> devices;  // from Node.info
  double milliseconds = 0;          // connect .. last answer
};

kj::Promise<NodeProbe> probeNode(UvKjLoop& loop, const ClusterKey& key, std::string address,
                                 std::string primaryName, std::chrono::milliseconds timeout);

}  // namespace pl
