# The peerlight cluster protocol: what a Primary and a Render Node say to each other.
#
# Evolution rule: fields and methods are only ever ADDED, with the next free number; nothing
# is renumbered, retyped or removed. A change that older peers cannot understand bumps
# kProtocolVersion, and peers of different versions refuse each other with a message naming
# both versions (see Gate.hello).
#
# Errors: a request the node cannot serve (bad chunk, unknown scene, work unit outside the
# image, sizes beyond limits) fails with a Cap'n Proto exception whose description names what
# and where; the connection and the node stay up. A lost connection or an expired lease is
# not an error but an event the Primary's scheduler handles (requeue).

@0xef42c8a4c5d7e35a;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("pl::proto");

const protocolVersion :UInt32 = 6;
# Peers are compatible when their protocol versions are equal.
# 2: every connection is TLS 1.3 keyed by the cluster key (transport/secure_channel.h); the
#    messages below travel inside it, unchanged.
# 3: the render data's Material, Texture, Camera and SceneGlobals grew (glTF material
#    extensions, UV transforms, passes, the sheen table), and a tile result's header names its
#    channels per pixel (3, or 10 with passes).
# 4: the render data's Texture carries its mip levels (Texture::mipLevels), stored after level
#    0 in the texels.
# 5: the render data lists its meshes (RenderData::meshes: triangle and vertex ranges, and
#    which are dynamic), from which CPU devices build their BVHs.
# 6: the textures' levels below 0 are an array of their own (RenderData::mipTexels), which the
#    manifest lists but no chunk carries: a node computes it from level 0 and checks it
#    against the manifest's hashes.

struct Hash128 {
  # XXH3-128 of some bytes (a chunk's raw bytes, a manifest).
  lo @0 :UInt64;
  hi @1 :UInt64;
}

# ---------------------------------------------------------------------------------------------
# Bootstrap and authentication

interface Gate {
  # The bootstrap capability, one per connection. The Primary proves that it holds the
  # cluster key, and learns that the node holds it too, by challenge-response:
  #   1. hello: each side sends a fresh random 32-byte nonce. The node answers with
  #      nodeProof = HMAC-SHA256(key, "peerlight node" || primaryNonce || nodeNonce).
  #      The Primary checks nodeProof (a node without the key cannot answer it).
  #   2. authenticate: primaryProof = HMAC-SHA256(key, "peerlight primary" || nodeNonce ||
  #      primaryNonce). Only a correct proof returns the Node capability; a wrong one fails
  #      with "authentication failed" (and the node logs one line). One attempt per
  #      connection.
  # The key never travels. Nonces are fresh per connection, so a recorded exchange cannot be
  # replayed.

  hello @0 (protocolVersion :UInt32, nonce :Data, primaryName :Text)
        -> (protocolVersion :UInt32, nonce :Data, proof :Data, nodeId :Text, name :Text);
  # protocolVersion: the caller's version; the reply carries the node's. When they differ the
  # node answers with its version and an empty proof and logs "primary <name> speaks protocol
  # <a>, this node speaks <b>"; the Primary reports both versions and goes no further.
  # nonce: exactly 32 bytes. nodeId: stable random id of the node (hex); name: its
  # human-readable name (host name unless --name).

  authenticate @1 (proof :Data) -> (node :Node);
  # proof: 32 bytes, the primaryProof above.
}

# ---------------------------------------------------------------------------------------------
# The node and its devices

enum DeviceKind {
  cpu @0;
  cuda @1;
}

struct DeviceInfo {
  kind @0 :DeviceKind;
  name @1 :Text;            # CPU model or GPU name
  memoryBytes @2 :UInt64;   # host memory (cpu) or GPU memory (cuda)
  threads @3 :UInt32;       # render threads (cpu)
  computeMajor @4 :UInt32;  # compute capability (cuda)
  computeMinor @5 :UInt32;
}

enum NodeState {
  idle @0;     # no lease held
  leased @1;   # a remote Primary holds a lease
  primary @2;  # this machine renders its own job
}

struct NodeInfo {
  protocolVersion @0 :UInt32;
  nodeId @1 :Text;
  name @2 :Text;
  devices @3 :List(DeviceInfo);  # index in this list = device index in leases and render()
  state @4 :NodeState;
  renderKernel @5 :Text;
  # The identity of the code that computes the node's pixels (core/render/render_kernel.h: 16
  # hex digits). A Primary uses only nodes whose renderKernel equals its own: a node on another
  # build would put other bits into the image. Empty from nodes older than this field.
}

struct LeaseRequest {
  primaryName @0 :Text;      # for the node's log
  ttlMs @1 :UInt32;          # wanted time to live; the node may shorten it (0 = node default)
  devices @2 :List(UInt32);  # device indices wanted (NodeInfo.devices); empty = all
  ownerToken @3 :Text;
  # Set by a Primary that announced itself as this machine's owner job on the node's local
  # control socket (transport/control_socket.h) with the same token: while that owner job
  # runs, the node refuses and revokes every other lease, but not this Primary's. Honoured only
  # on the node's own in-process Node (the daemon's jobs); a token from a remote Primary is
  # ignored.
  heldDevices @4 :UInt32;
  # Fair share: the devices the requesting Primary holds on other nodes now (valid when
  # reportsHeld). A node whose devices asked for are all leased (and preempt is set) revokes
  # the lease of a Primary
  # that holds (by its last report) at least 2 x the lease's devices more than the requester,
  # and grants the freed devices to the requester.
  reportsHeld @5 :Bool;
  preempt @6 :Bool;
  # Fair share: the node may revoke another Primary's lease (the rule above) to grant this one.
  # A Primary sets it on one lease request at a time, so that nodes that each see a stale
  # count of the holder do not all revoke at once.
}

interface Node {
  info @0 () -> (info :NodeInfo);

  lease @1 (request :LeaseRequest)
        -> (lease :Lease, session :RenderSession, ttlMs :UInt32, devices :List(UInt32));
  # Grants the requested devices that are free (fails with "busy" when none is). ttlMs: the
  # lease's time to live; the Primary calls lease.renew() well before it runs out (every
  # third of it). Dropping the Lease capability, losing the connection or letting the TTL
  # expire ends the lease: the devices are freed and the session stops serving.
  # devices: the indices granted.
}

enum LeaseEnd {
  # Why a lease ended (core/cluster/lease_table.h names the same reasons).
  released @0;          # the Primary dropped the Lease capability
  connectionLost @1;    # its connection is gone
  expired @2;           # its TTL ran out without a renew
  revokedOwner @3;      # the machine's owner started a job
  revokedFairShare @4;  # a Primary holding fewer devices took some of them: ask again at once
  nodeShutdown @5;      # the node is stopping
  workerFailed @6;      # the worker process rendering the lease hung, crashed or exited
  memoryBudget @7;      # a load did not fit in the node's memory budget: busy, ask again later
  sceneTooLarge @8;     # a load of a scene this node will never hold (beyond its scene limit, or
                        # more than its budget could hold): the Primary does not ask it again in
                        # this session
}

interface Lease {
  renew @0 (heldDevices :UInt32) -> (ttlMs :UInt32);
  # heldDevices: the devices the Primary holds in the whole cluster, this lease's included
  # (fair share; see LeaseRequest.heldDevices; 0 from Primaries that do not report it).
  # Extends the lease by ttlMs from now. Fails once the lease has expired.

  ended @1 () -> (reason :LeaseEnd, detail :Text);
  # Answers when the lease ends (at once when it has): why, as a type that Primaries act on
  # (never the text of an error), and the node's words for the log. The node answers it before
  # it fails the session's other calls. Nodes of protocol 2 without it answer UNIMPLEMENTED.
}

# ---------------------------------------------------------------------------------------------
# Render data and work

struct ChunkRef {
  hash @0 :Hash128;         # XXH3-128 of the chunk's raw bytes: its name
  rawBytes @1 :UInt32;      # 1 .. 4 MiB, a whole number of array elements
  encodedBytes @2 :UInt32;  # size of the encoded chunk
}

struct ArrayManifest {
  elementSize @0 :UInt32;   # bytes per element; must match the node's build
  elementCount @1 :UInt64;
  chunks @2 :List(ChunkRef);  # in order: their raw bytes concatenated are the array
}

struct Manifest {
  arrays @0 :List(ArrayManifest);
  # One entry per RenderData array, in the order of core/kernel/render_data_arrays.h.
}

struct Chunk {
  hash @0 :Hash128;
  data @1 :Data;
  # The encoded chunk (transport/chunk_codec.h): a 4-byte header (format, byte-shuffle stride)
  # and one zstd frame declaring its content size. The node checks the size against limits
  # before decompressing and the hash of the decompressed bytes against `hash`.
  unchecked @2 :Bool;
  # Daemon to worker only: the daemon has not checked the hash (it hands a prepared chunk on as
  # it comes, and caches it once the worker has answered the put). The worker checks these
  # bytes, decoding them into place or decoding them to check them, even when it holds the
  # chunk, and answers only then. Primaries leave it false; a node checks every Primary's chunk
  # whatever it says.
}

struct WorkUnit {
  x @0 :UInt32;              # tile: top-left pixel and size
  y @1 :UInt32;
  width @2 :UInt32;
  height @3 :UInt32;
  sampleBegin @4 :UInt32;    # samples [sampleBegin, sampleEnd) of every pixel of the tile
  sampleEnd @5 :UInt32;
  totalSamples @6 :UInt32;   # samples per pixel of the whole image
}

struct TileResult {
  unit @0 :WorkUnit;
  sums @1 :Data;
  # Per-pixel fixed-point R, G, B sums over the unit's samples, encoded by
  # transport/tile_codec.h (byte-shuffled int64 with zstd); exact.
  raysTraced @2 :UInt64;
  renderMs @3 :Float64;      # time the device spent on it
}

interface RenderSession {
  # Belongs to one lease. Holds render data in memory only, keyed by chunk hash, so that a
  # later scene sharing chunks with an earlier one sends only the difference.

  missing @0 (hashes :List(Hash128), sceneBytes :UInt64) -> (missing :List(Hash128));
  # Which of these chunks the node lacks (at most 1,000,000 hashes per call). sceneBytes: the
  # decoded size of the scene they belong to (0: not said). A scene this node can never load
  # (its scene limit, its memory budget) ends the lease here, typed sceneTooLarge, before any
  # chunk is sent; load checks again whatever was said.

  put @1 (chunk :Chunk) -> stream;
  # Stores one chunk. A wrong hash, a malformed, truncated or oversized frame fails this call
  # (the stream then reports the error); chunks already received stay.

  load @2 (manifest :Manifest) -> (scene :Hash128);
  # Assembles RenderData from stored chunks, validates it and loads it on the lease's
  # devices. scene: the id to name in render() (the hash of the manifest). Fails naming the
  # first missing chunk or the first inconsistency.

  render @3 (scene :Hash128, device :UInt32, unit :WorkUnit) -> (result :TileResult);
  # Renders one unit of a loaded scene on one of the lease's devices. Fails for an unknown
  # scene, a device not in the lease, or a unit outside the image.

  ping @4 () -> ();
  # Answers at once, even while devices render: the Primary's liveness check (silence for
  # 2 s means the node is lost).

  prepare @5 (manifest :Manifest) -> ();
  # The manifest of the load that will follow the puts about to come (sent before them): the
  # node may size the scene's arrays now and decode each chunk into place as it arrives, so
  # that the decode overlaps the upload. Checked and admitted as load checks it (a scene too
  # large ends the lease the same way). Optional for both sides: load must still name the
  # manifest, and a Primary ignores this call's failure (nodes before it answer
  # UNIMPLEMENTED). A later prepare replaces an earlier one.
}

# ---------------------------------------------------------------------------------------------
# Inside one machine: the node daemon and its per-lease worker processes (DESIGN.md section 1).
# Not a network protocol: spoken only over the socket pair that joins `peerlight node` to a
# `peerlight worker` it started, never over TCP.

interface Supervisor {
  # Given by the daemon to its worker.
  heartbeat @0 () -> ();
  # The worker calls it every 250 ms from its event loop. When none arrives for 2 s the daemon
  # sends SIGTERM, then SIGKILL after 1 s, and ends the worker's lease.
}

interface Worker {
  # The worker's bootstrap capability on the socket pair.
  start @0 (supervisor :Supervisor) -> (node :Node);
  # Starts the heartbeat and returns the worker's Node (no authentication: the socket pair is
  # private to the two processes). The daemon leases the worker's devices through it and hands
  # the session on to the Primary. The worker exits when the socket pair closes.
}
