#pragma once
// handshakeWithNode: the client side of a Render Node's Gate (transport/protocol.capnp), the
// one handshake that the Primary (render_session.cpp) and `peerlight nodes` (node_probe.h)
// both use. TCP connect; TLS keyed by the cluster key (secure_channel.h), unless `secure` is
// null (tests of the plain protocol); Gate.hello, where protocol versions are compared and the
// node's proof is checked with our key; Gate.authenticate with our proof.
//
// Typed outcomes. The promise resolves with a NodeHandshake whose `refusal` says whether the
// node may be used:
//   None          authenticated: `node` is the node's Node capability;
//   WrongKey      the TLS handshake showed that the node holds another key, or its proof does
//                 not match our key, or it refused our proof; final;
//   Incompatible  the node speaks another protocol version (`reason` names both); final.
// A connection that fails (unreachable, closed, broken: worth another try) rejects the promise
// with its KJ exception. There is no timeout here: callers bound the whole with their own.
//
// When the node's proof is wrong we still authenticate, with random bytes (never a valid proof:
// a node without the key must not get one to replay elsewhere), so that the node logs the
// refused attempt too.
//
// Threads: the loop thread of `io`. `secure` and `key` must outlive the promise.

#include <cstdint>
#include <string>

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include "transport/auth.h"
#include "transport/protocol.capnp.h"

namespace pl {

class SecureChannel;

enum class HandshakeRefusal : uint8_t { None, WrongKey, Incompatible };

struct NodeHandshake {
  HandshakeRefusal refusal = HandshakeRefusal::None;
  std::string reason;            // why the node was refused; empty when it was not
  uint32_t protocolVersion = 0;  // the node's, from hello (0: no hello answered)
  std::string nodeId;            // from hello
  std::string name;              // from hello
  // Declared in construction order, so destroyed capabilities first, then the RPC system, then
  // the stream.
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyClient> rpc;
  proto::Node::Client node = nullptr;  // set when refusal is None
};

kj::Promise<NodeHandshake> handshakeWithNode(kj::LowLevelAsyncIoProvider& io,
                                             SecureChannel* secure, const ClusterKey& key,
                                             const std::string& address,
                                             const std::string& primaryName);

}  // namespace pl
