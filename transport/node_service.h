#pragma once
// NodeService: the Render Node side of the cluster protocol (transport/protocol.capnp). It
// serves this machine's devices to Primaries that hold the cluster key:
//
//   Gate (bootstrap, one per connection) --hello/authenticate--> Node --lease--> Lease +
//   RenderSession --missing/put/load/render/ping--> devices
//
//   pl::UvKjLoop loop;
//   pl::NodeService node(loop, key, std::move(devices), options);
//   auto receiver = pl::listenTcp(loop.lowLevelIo(), "127.0.0.1:0").value();
//   auto listening = node.listen(*receiver);   // accepts until dropped
//   loop.run();
//
// Leases: a device belongs to at most one lease. A lease ends when its Lease capability is
// dropped, when its connection is lost, when its TTL runs out without renew(), or on
// endAllLeases(); its devices are free at once and its session fails every later call with
// "lease expired" / "lease ended".
//
// Lease policy (issue 4 items 4-5), decided by core/cluster/lease_table.h (pure logic, on the
// loop's timer clock; one timer for the earliest expiry) and carried out here, with every
// ending named by one LeaseEnd and logged as "lease N of P ended: <leaseEndText>" (or
// "... expired"): the TTL a Primary asks for is clamped to
// [minTtlMs, maxTtlMs] (`peerlight node --ttl-ms` sets the upper bound), so a Primary that dies
// or hangs frees the devices within it. Owner jobs (ownerJobStarted(), fed by the daemon's
// control socket, transport/control_socket.h) revoke other Primaries' leases and refuse new
// ones. Fair share: a lease request with LeaseRequest.preempt, finding every device it asks
// for leased, looks for the lease whose Primary holds the most devices (as last reported in its
// lease request or renew) and can give t = min(its devices here, (its holding - the
// requester's) / 2) >= 1 of them without the two swapping back; it revokes that lease and
// grants the requester t of its devices. The rest stay free, for the revoked Primary to lease
// again when it reconnects (so a 4-device node shared by two Primaries ends 2 + 2).
//
// Threads: everything here runs on the loop thread, which only does bookkeeping and network
// I/O, so ping() answers at once. Each device has its own thread (a JobQueue: load, render,
// in order), and a pool of codec threads (NodeOptions::codecThreads, by default
// min(4, hardware threads), shared by all sessions) verifies put() chunks and decodes render
// data for load(): jobs start in the order they were submitted but run at the same time, and
// finish in any order. The pool threads only read the bytes handed to them (copies of the
// chunk, or cached chunks that are immutable once stored); their results come back to the loop
// through KJ cross-thread fulfillers, and only the loop thread touches the cache, pins, leases
// and sessions.
//
// put() (declared `-> stream`): the node verifies each chunk (size limits, zstd frame, hash) on
// a codec thread and stores it (on the loop thread) only when it is good. The server side treats
// put() as an ordinary call, so several puts are verified at once, on several codec threads,
// while other calls (ping) are answered, and a bad chunk fails only its own put: the session
// keeps serving. Puts may finish out of order; missing() and load() wait until every put that
// session received before them has finished (verified and stored, or refused), whichever thread
// verified it, so they see all of them. (Cap'n Proto 0.9.2's client-side flow control does not
// report a refused put on later puts; missing() and load() do: missing() then still lists the
// refused chunk.) A daemon in worker mode does not decode a put of a chunk of the last prepared
// manifest: it hands it on unchecked (Chunk.unchecked), as an ordinary call whose answer
// says whether the worker took it (the worker checks its hash as it decodes it into place, or
// decodes it to check it), and stores it only then; a refusal fails the put with the worker's
// reason. So a join decodes each chunk once, and the cache still holds checked chunks only.
//
// Memory: chunks are kept (encoded) in a node-wide cache keyed by hash, bounded by
// NodeOptions::chunkCacheBytes (least recently used chunks go first), so a later lease that
// renders the same scene, or an edited one, sends only the chunks the node lacks. A session
// pins the chunks it put, and those that missing() reported present (the Primary will not send
// them), until a load() whose manifest names them is over (done, failed or cancelled) or the
// lease ends: pinned chunks are never evicted, so a scene near the cache size, or two uploads
// at once, cannot lose chunks before their load, and the cache may exceed its bound while
// pins last (pinnedChunkBytes()). One session pins at most about maxSceneBytes (encoded bytes;
// beyond that its chunks are cached unpinned, as without pins, and one warning is logged).
// A pinned chunk that no load names stays pinned until the lease ends. Decoded render data
// stays with the devices that loaded it (across leases) and with the sessions that loaded it
// (their last maxScenesPerSession scenes). Nothing is written to disk. A chunk that such decoded
// data holds counts as present for missing() (the data is held for the session until no load
// of it is in flight) and a load copies it from there rather than decoding it, so a node with
// chunkCacheBytes 0 (a worker process: the daemon keeps the chunks) drops the chunks after
// their load and is still sent only what changed. NodeOptions::memoryBudget bounds what the
// leases' loads hold (below).
//
// Camera moves: a load whose manifest equals a decoded scene's in every array but `camera` (the
// node still holds that data: a device or a session has it) decodes nothing but its camera chunk
// (validated as RenderData::validate() would, validateCamera()); the new scene shares the
// decoded RenderData (shared_ptr<const>) and carries its own camera. Its id is still the hash
// of its manifest. A device that holds that data takes the new camera alone
// (Device::setCamera(): no BVH build, no upload), and a device that cannot (a CUDA device)
// loads a copy of the data holding that camera; the image is bitwise the one a full load of
// the data with that camera gives. Bounds and validation of the manifest are as for any load.
// stats() counts full decodes, camera-only decodes, device loads and camera switches.
//
// Warm workers (worker mode): a worker process keeps its devices' loaded data and BVHs for its
// lease, and may stay for later leases. When a lease ends released or with its connection lost
// (including a Primary that exits after its render) and quiet (every load and render call of
// its session answered, none in flight or dropped unanswered: its Primary was done with it),
// its worker, if it has loaded a scene, stays as a warm worker: idle, its devices free for any
// lease, still supervised (heartbeats; a warm worker that hangs, crashes or exits is dropped
// and never reused). A new lease whose devices are exactly a warm worker's reuses that worker
// (no process start, no device opening; a load of a scene the worker holds, or of one that
// differs only in the camera, decodes nothing more and builds no BVH); a warm worker holding
// any other device of a new lease is stopped first. Warm workers are bounded by
// NodeOptions::maxWarmWorkers and warmWorkerBytes (the decoded bytes of the distinct scenes
// each holds, as their manifests declare): the least recently used are stopped beyond them,
// and a worker whose scenes alone exceed warmWorkerBytes is not kept. Workers of leases that
// expired (a frozen or vanished Primary), were revoked (owner, fair share), whose worker
// failed, that ended mid-work (a call in flight or dropped unanswered: a killed Primary or a
// cancelled job), or that ended at shutdown / endAllLeases() are stopped, as before. The policy
// is WarmWorkerPool's (transport/node_lease.h, pure logic). A lease's session answers render()
// only for the scenes it loaded itself, even on a worker that holds others.
//
// Connections (listen(), serve(); transport/admission.h) speak TLS 1.3 keyed by the cluster key (NodeOptions::tls,
// transport/secure_channel.h): the Gate's RPC system starts only once the TLS handshake is done,
// and a TLS handshake that fails is one log line naming the peer ("TLS handshake from <addr>
// failed: ..."). A connection counts as pending from accept until its peer authenticates at
// the Gate (the TLS handshake included). A pending connection is closed after
// NodeOptions::tlsTimeoutMs without a finished TLS handshake or handshakeTimeoutMs without
// authentication; one address holds at most maxPendingPerSource pending connections and all at
// most maxPendingConnections (at the cap a newcomer from an address holding fewer evicts the
// oldest of the address holding the most); log lines about them come at most once a second per
// kind, counting those since the last; and a pending connection's messages are limited to handshakeMessageBytes (64 KiB) instead of maxMessageBytes,
// so that unauthenticated peers cannot make the node buffer 64 MiB each. The limit rises once
// authenticate() succeeds; Cap'n Proto 0.9.2 fixes ReaderOptions per TwoPartyVatNetwork, so the
// connection's MessageStream (Cap'n Proto's own framing) substitutes the current limit on each
// read, and a read already started keeps the limit it started with (in practice, calls pipelined
// behind authenticate are read after it ran, at the full limit). In-process Gates (newGate()) have
// no handshake limits.
//
// Every size that arrives from the network is bounded before memory is allocated: the RPC
// traversal limit per message, hash list lengths, manifest chunk counts, chunk sizes (encoded
// and declared), work unit pixel counts.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <kj/async-io.h>

#include "core/render/device.h"
#include "core/render/render_kernel.h"
#include "transport/auth.h"
#include "transport/protocol.capnp.h"
#include "transport/uv_kj_loop.h"

namespace pl {

class MemoryBudget;
struct MemoryHolder;

struct NodeOptions {
  std::string name;    // human-readable; empty = this machine's host name
  std::string nodeId;  // hex; empty = a fresh random id (16 bytes)
  // The protocol version this node claims in hello (tests make it claim another one).
  uint32_t protocolVersion = proto::PROTOCOL_VERSION;
  // The render kernel this node claims in Node.info (tests make it claim another one).
  std::string renderKernel = renderKernelId();
  // Lease time to live: used when the Primary asks for 0; requests are clamped to
  // [minTtlMs, maxTtlMs].
  uint32_t defaultTtlMs = 10000;
  uint32_t minTtlMs = 1000;
  uint32_t maxTtlMs = 60000;
  // Encoded chunks kept across loads and leases (least recently used evicted beyond it;
  // chunks pinned by sessions until their load may take the cache beyond it).
  uint64_t chunkCacheBytes = uint64_t(4) << 30;
  // Whether put() decodes each chunk to check its content hash before taking it (a Primary's
  // chunks; a bad one fails its own put). A worker's chunks come from its daemon, which checked
  // them: it takes them as they are (after the same bounds on sizes), and the load's decode
  // checks every chunk's hash anyway (Sponza: one decode of 139 MB saved per join, ~1.2 s of
  // one core on this machine kind). Except a put its daemon marks unchecked: the worker checks
  // it (decoding it into place, or to check it) even when it holds the chunk.
  bool verifyPuts = true;
  // Cap'n Proto's per-message traversal limit (bytes) on authenticated connections: a 4 MiB
  // chunk encodes to at most a little over 4 MiB, so 64 MiB leaves ample headroom for a large
  // manifest. It also bounds what the node allocates to read one message.
  uint64_t maxMessageBytes = uint64_t(64) << 20;
  // Connections that have not authenticated yet (serve(), listen(); transport/admission.h):
  // each is closed when its TLS handshake is not done within tlsTimeoutMs or it has not
  // authenticated within handshakeTimeoutMs (0: never); one address (IPv6: one /64) holds at
  // most maxPendingPerSource of them and all together at most maxPendingConnections (0: no
  // limit), a new one beyond being closed at once or, at the cap, evicting the oldest of the
  // address holding the most (core/cluster/pending_admissions.h); each kind of log line about
  // them comes at most once a second, with a count; and a message on such a connection may
  // hold at most handshakeMessageBytes (the limit rises to maxMessageBytes once authenticated).
  uint32_t handshakeTimeoutMs = 10000;
  uint32_t tlsTimeoutMs = 3000;
  uint32_t maxPendingConnections = 32;
  uint32_t maxPendingPerSource = 4;
  uint64_t handshakeMessageBytes = uint64_t(64) << 10;
  // TLS on serve() / listen() connections (secure_channel.h), keyed by the cluster key. Only
  // tests that talk raw Cap'n Proto to the node turn it off; `peerlight node` always has it.
  bool tls = true;
  // The largest scene (decoded RenderData bytes, from the manifest) this node agrees to load;
  // 0 = half of this machine's physical memory. Checked before anything is allocated, so a
  // manifest that names one small chunk thousands of times cannot exhaust memory. It also
  // bounds the chunk bytes one session pins (see Memory above).
  uint64_t maxSceneBytes = 0;
  // Threads that verify put() chunks and decode render data for load(), shared by all sessions;
  // 0 = min(4, the machine's hardware threads) (at most 64).
  uint32_t codecThreads = 0;
  // Scenes a session keeps loaded (for render()); older ones are forgotten.
  uint32_t maxScenesPerSession = 4;
  // Worker processes (DESIGN.md section 1): when not empty, this node is a daemon that renders
  // nothing itself. Each lease starts a worker process with this argv (argv[0]: a path), with
  // "--devices I,J" (the lease's device indices) appended, through WorkerProcess
  // (transport/worker_process.h); the worker must open the same devices in the same order and
  // serve them with serveWorker(). The daemon keeps the chunk cache and answers missing() and
  // put() itself; load() first hands the worker the chunks it lacks, then is forwarded, as is
  // render(). The chunks go to the worker as a `-> stream` of puts (Cap'n Proto flow control:
  // about one socket send buffer in flight, or one chunk when larger) whose messages reference
  // the cached bytes instead of copying them; those bytes are held until the worker answers
  // the load, or until the worker is gone. A worker that fails (no heartbeat for
  // workerHeartbeatTimeoutMs, a crash, a closed socket) ends its lease, and the session fails
  // every later call; a lease that ends stops its worker, unless it stays warm for a later
  // lease ("Warm workers" above). Empty: the devices render in this process.
  std::vector<std::string> workerArgv;
  std::string workerExecutable;  // the file to execute for workerArgv (empty: its argv[0])
  uint32_t workerHeartbeatTimeoutMs = 2000;
  uint32_t workerKillGraceMs = 1000;
  // Warm workers (see "Warm workers" above; worker mode only): at most maxWarmWorkers idle
  // workers (0: none, every lease end stops its worker), holding together at most
  // warmWorkerBytes of decoded render data (0 = a quarter of this machine's physical memory).
  uint32_t maxWarmWorkers = 4;
  uint64_t warmWorkerBytes = 0;
  // The daemon's one memory budget (core/cluster/memory_budget.h; not owned, outlives the node;
  // null: none). A lease reserves the decoded bytes of the distinct scenes it loaded (as their
  // manifests declare, the camera aside) before a load that adds one; a load that does not fit,
  // even after stopping warm workers, ends the lease (LeaseEnd::MemoryBudget: busy, the Primary
  // asks again later) and fails; a scene it could never hold, however little else is reserved,
  // ends it as LeaseEnd::SceneTooLarge, as one beyond maxSceneBytes does (the Primary does not
  // ask this node again for it). A warm worker's scenes are an evictable reservation.
  MemoryBudget* memoryBudget = nullptr;
};

// What the node has done, for tests and figures (NodeService::stats()).
struct NodeStats {
  // Loads on this process's devices (a daemon in worker mode renders nothing itself: these are
  // its workers' own): full decodes, loads that decoded only their camera (camera moves, and
  // scenes decoded before), Device::load() calls (BVH builds, uploads), Device::setCamera().
  uint64_t scenesDecoded = 0;
  // Of those, decodes that placed each chunk as its put came (RenderSession.prepare).
  uint64_t scenesPrepared = 0;
  uint64_t camerasDecoded = 0;
  uint64_t deviceLoads = 0;
  uint64_t cameraSwitches = 0;
  // Units whose render() call was cancelled while they rendered: they stopped early (on this
  // process's devices: a daemon in worker mode counts none, its workers do).
  uint64_t unitsStopped = 0;
  // Worker mode: processes started, leases served by a warm worker, warm workers now and the
  // decoded bytes they hold (estimated from their manifests).
  uint64_t workersStarted = 0;
  // Worker mode: puts handed on to a worker as they came (after a prepare), not after the load.
  uint64_t putsForwarded = 0;
  // Of those, puts of the prepared manifest that went on unchecked and that the worker took:
  // the daemon did not decode them, the worker's decode into place checked them.
  uint64_t forwardsCheckedByWorker = 0;
  uint64_t warmReuses = 0;
  size_t warmWorkers = 0;
  uint64_t warmWorkerBytes = 0;
  uint64_t leasesGranted = 0;  // since the node started
};

class NodeService {
 public:
  // devices: owned; their index is the device index of the protocol. The loop must outlive
  // this object and be the one this object is used on.
  NodeService(UvKjLoop& loop, ClusterKey key, std::vector<std::unique_ptr<Device>> devices,
              NodeOptions options = {});
  // Ends all leases and closes all connections, then stops and joins the worker threads (a
  // render in progress is waited for). In-process clients from newGate() must be dropped first.
  ~NodeService();
  NodeService(const NodeService&) = delete;
  NodeService& operator=(const NodeService&) = delete;

  // Accepts connections from `receiver` (which must outlive the promise) until the promise is
  // dropped; each connection gets its own RPC system whose bootstrap is a new Gate. Rejects
  // only when accept() fails.
  kj::Promise<void> listen(kj::ConnectionReceiver& receiver);
  // Serves one connected stream (as listen() does for each accepted one). `peer` names it in
  // log lines; empty = the stream's peer address.
  void serve(kj::Own<kj::AsyncIoStream> stream, std::string peer = "");
  // A Gate without a network (tests, an embedded node).
  proto::Gate::Client newGate(std::string peer = "local");
  // A Node without authentication: only for a channel that is private to trusted processes
  // (a worker serves its daemon through it, transport/worker_process.h).
  proto::Node::Client newTrustedNode(std::string peer);

  // Ends every lease now (their sessions fail later calls with "lease ended: <why>").
  void endAllLeases(const std::string& why);

  // Owner preemption (issue 4 item 4): the machine's owner starts a job (`token`: the one its
  // Primary sends in LeaseRequest.ownerToken; honoured only on a Node from newTrustedNode(),
  // i.e. the daemon's own jobs in process, never from a remote Primary). Every lease of another Primary is revoked at
  // once (its worker stopped, its session failing later calls with "lease ended: revoked: the
  // owner is rendering"; one log line each), new leases of other Primaries are refused with
  // "busy: the owner is rendering", and Node.info reports state PRIMARY, until every owner
  // job that started has ended. Returns the number of leases revoked.
  size_t ownerJobStarted(const std::string& token);
  void ownerJobEnded(const std::string& token);
  bool ownerActive() const;
  // Stops the warm workers among `evicted` (NodeOptions::memoryBudget evicted them to make
  // room for somebody else's reservation; they are out of the budget already).
  void memoryEvicted(const std::vector<MemoryHolder>& evicted);
  // Closes every connection (their capabilities are released, which also ends their leases).
  void disconnectAll();

  const std::string& nodeId() const;
  const std::string& name() const;
  const std::vector<DeviceInfo>& deviceInfos() const;
  size_t activeLeaseCount() const;
  size_t freeDeviceCount() const;
  size_t connectionCount() const;
  // Connections (counted in connectionCount()) that have not authenticated yet.
  size_t pendingConnectionCount() const;
  size_t cachedChunkCount() const;
  uint64_t cachedChunkBytes() const;
  // Encoded bytes of cached chunks pinned by sessions until their load (counted in
  // cachedChunkBytes(); they may take it beyond chunkCacheBytes).
  uint64_t pinnedChunkBytes() const;
  // Worker processes started and not yet exited (0 without workerArgv), warm ones included.
  size_t workerCount() const;
  // Their process ids, oldest first.
  std::vector<int> workerPids() const;
  NodeStats stats() const;
  // The active leases (for the live view): who holds which devices since when, and the pixel
  // samples rendered for them (worker mode).
  struct LeaseView {
    uint64_t id = 0;
    std::string primary;  // "name (address)"
    std::vector<uint32_t> devices;
    double seconds = 0;   // since granted
    uint64_t samples = 0;
  };
  std::vector<LeaseView> leases() const;
  // The last lease and worker events, oldest first (at most 64): seconds since this node
  // started, and the log line's text.
  std::vector<std::pair<double, std::string>> recentEvents() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace pl
