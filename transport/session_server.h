#pragma once
// The Render Node's RenderSession server (transport/protocol.capnp): missing, put, load,
// render and ping on the devices of one lease (transport/node_service.h describes the
// behaviour: put verified on the codec pool, missing/load waiting for earlier puts, chunk pins,
// worker mode). Loop thread only; device and codec work runs on their JobQueues.

#include <kj/memory.h>

#include "transport/node_lease.h"
#include "transport/protocol.capnp.h"

namespace pl {

// The session of `lease`: it serves while the lease lives and fails every call after it ended
// ("lease expired" / "lease ended: <text>").
kj::Own<proto::RenderSession::Server> newSessionServer(kj::Own<LeaseState> lease);

}  // namespace pl
