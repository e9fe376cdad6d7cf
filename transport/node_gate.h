#pragma once
// The Render Node's Gate (transport/protocol.capnp): the bootstrap capability of every
// connection. hello exchanges protocol versions, names and nonces (the node proves it holds the
// cluster key); authenticate checks the Primary's proof, once per connection, and only then
// hands out the Node capability. A version mismatch answers hello (so the Primary can name both
// versions) and refuses authenticate. Loop thread only.

#include <kj/memory.h>

#include <functional>
#include <memory>
#include <string>

#include "transport/admission.h"
#include "transport/auth.h"
#include "transport/protocol.capnp.h"

namespace pl {

// What the Gate says about its node. Referenced, not copied: it must outlive the Gate.
struct GateIdentity {
  uint32_t protocolVersion = 0;
  std::string nodeId;
  std::string name;
  ClusterKey key;
};

// Makes the Node capability for an authenticated Primary; `who` is "<name> (<peer>)".
using NodeFactory = std::function<proto::Node::Client(const std::string& who)>;

// A Gate for the connection from `peer`. handshake: the network connection's, told when the
// peer authenticated (null for an in-process Gate).
kj::Own<proto::Gate::Server> newNodeGate(const GateIdentity& identity, std::string peer,
                                         std::shared_ptr<ConnectionHandshake> handshake,
                                         NodeFactory makeNode);

}  // namespace pl
