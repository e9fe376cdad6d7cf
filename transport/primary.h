#pragma once
// The Primary's options and statistics, and renderCluster(): one frame across this process's
// own devices and the Render Nodes named by address (docs/DESIGN.md sections 1, 3 and 5).
//
//   ClusterRenderOptions options;          // peers, key, local devices, limits
//   options.peers = {"127.0.0.1:40123"};
//   Film film(width, height, spp);
//   Result<ClusterRenderStats> stats = renderCluster(data, film, options);
//
// renderCluster() is a thin blocking wrapper: it runs a RenderSession (transport/
// render_session.h, where the protocol, the scheduling and the failure handling are described)
// on a UvKjLoop of its own (or the caller's: then nodes that discovery finds on that loop can
// join, through `attach`) until the session's film holds every sample, then copies the film.
// Local renders (no peers) take the same path. Long-lived callers (the `session` command, the
// node daemon) use RenderSession on their own loop instead.
//
// Threads: renderCluster() blocks the calling thread, which runs the loop (it must not have a
// KJ event loop of its own, unless it is the loop given). The progress callback runs on the
// calling thread.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/cluster/scheduler.h"
#include "core/render/device.h"
#include "core/render/film.h"
#include "core/scene/render_data.h"
#include "core/util/status.h"
#include "transport/auth.h"
#include "transport/chunk_codec.h"
#include "transport/protocol.capnp.h"

namespace pl {

// A scene to render: its compiled data, or its encoded form (transport/chunk_codec.h, e.g. from
// the compiled cache), or both. A session sends the encoded form to nodes as it is, and decodes
// it (on the device threads) only when local devices need the data.
struct SceneSource {
  std::shared_ptr<const RenderData> data;
  std::shared_ptr<const EncodedScene> encoded;
  // The data's camera, else the encoded camera chunk's (decoded and validated).
  Result<kernel::Camera> camera() const;
  // The size of the data (all arrays) and its triangle count, from either form.
  uint64_t dataBytes() const;
  uint64_t triangleCount() const;
};

struct ClusterRenderOptions {
  // Render Nodes, "HOST:PORT" each (transport/tcp.h). Empty: local devices only.
  std::vector<std::string> peers;
  // Devices of this process (not owned). The session loads each generation's data on them
  // (renderCluster(): a non-owning pointer to its `data`, which devices may keep after the call
  // and must not use once it is gone). Empty: only the peers render (--no-local); then at least
  // one peer must be given.
  std::vector<Device*> localDevices;
  // This process's own node (the node daemon's NodeService::newTrustedNode()): its devices are
  // leased through the capability in process (no connection, TLS or authentication) and render
  // in its worker processes. It shows in the statistics as the node "this machine". Null: none.
  std::function<proto::Node::Client()> inProcessNode;
  // The cluster key (transport/auth.h loads it). Needed only when peers are given.
  ClusterKey key;
  // TLS 1.3 keyed by `key` on every connection to a node (transport/secure_channel.h); must
  // match the nodes' NodeOptions::tls. Only tests turn it off.
  bool tls = true;
  std::string primaryName;  // shown in the nodes' logs
  // The token this render announced on this machine's node control socket as the owner job
  // (transport/control_socket.h), sent in every LeaseRequest; empty: none.
  std::string ownerToken;

  uint32_t tileSize = 64;           // pixels (FrameSpec::tileSize); the film gives the rest
  SchedulerOptions scheduler;
  // Pixel samples of a GPU's first unit (local or on a node; the scheduler's default,
  // 64x64x4, leaves a GPU nearly idle and its slow start costs round trips). 0: the default.
  uint64_t gpuInitialUnitWork = uint64_t(1) << 20;
  uint32_t leaseTtlMs = 6000;       // asked for; the node may shorten it
  std::chrono::milliseconds pingInterval{500};
  std::chrono::milliseconds silenceTimeout{2000};     // no reply for this long: node lost
  std::chrono::milliseconds reconnectInterval{1000};  // retry of unreachable or lost peers
  std::chrono::milliseconds handshakeTimeout{5000};   // connect .. lease granted
  // Stop with an error when nothing was accepted for this long and no device is usable
  // (every peer unreachable and no local device). 0: wait forever for peers to appear.
  std::chrono::milliseconds noDeviceTimeout{30000};
  // Nodes may still come from the caller (RenderSession::addPeer, as discovery events bring
  // them; their stats are appended to ClusterRenderStats::nodes): a session may start with no
  // device and no peer yet, and with every peer refused and no local device left it waits for
  // them (within noDeviceTimeout) rather than fail at once. Needs `key`.
  bool peersMayAppear = false;
  // Stop after this long (0: no limit) at the last pass every pixel has completed (passes of
  // 1, 2, 4, ... spp): renderCluster() then gives the film at that spp, bitwise the film of a
  // render to that spp. With no pass complete yet, it waits for the first one. A RenderSession
  // counts it from each generation's start (FrameSpec::deadline: the Scheduler decides).
  std::chrono::milliseconds timeLimit{0};
  // Render until clean (--noise-threshold, core/cluster/pass_commit.h): at each pass end from
  // 8 spp on, each 16x16 tile whose noise estimate is below this stops taking samples; the film
  // holds each pixel's own count (Film::pixelSamples()). 0: every pixel takes spp samples.
  double noiseThreshold = 0;
  // A render border (FrameSpec::region): only these pixels are rendered, every generation;
  // the film's others stay empty. Empty: the whole image.
  Rect region{};
  // Polled on the loop thread about every 50 ms: when it returns true the render stops and
  // renderCluster() fails with "render cancelled" (leases dropped, device threads joined).
  std::function<bool()> cancelled;
  // When the render started, for the seconds* figures (e.g. the command's start, so that they
  // include loading the scene). Default: the call of renderCluster().
  SchedulerTime start{};
};

// One Render Node as the Primary saw it.
struct NodeRenderStats {
  std::string address;  // as given
  std::string name;     // the node's name (empty until it answered hello)
  std::string nodeId;
  uint32_t devices = 0;         // devices leased (last lease)
  uint64_t workUnits = 0;       // results accepted into the film
  uint64_t samples = 0;         // pixel samples in them
  uint64_t raysTraced = 0;
  uint64_t duplicateResults = 0;      // results that arrived after another copy's
  uint64_t renderDataBytesRaw = 0;    // raw bytes of the chunks sent to it
  uint64_t renderDataBytesSent = 0;   // encoded (compressed) bytes of those chunks
  uint64_t chunksSent = 0;
  uint64_t chunksTotal = 0;           // distinct chunks of the scene
  uint64_t manifestBytes = 0;         // Cap'n Proto size of the load() manifest
  uint64_t resultBytes = 0;           // encoded tile result bytes received (accepted or not)
  uint64_t resultBytesRaw = 0;        // the same results' raw sums (8 bytes per value)
  double secondsToFirstResult = -1;   // from the start of the render; -1: none arrived
  double secondsToDataLoaded = -1;    // from the start of the render to load() done
  // Streaming the missing chunks (first put sent to the last put's flow-control release),
  // summed over connections: renderDataBytesSent / uploadSeconds is the upload goodput.
  double uploadSeconds = 0;
  uint32_t connections = 0;           // successful handshakes (>1: it came back)
  uint32_t losses = 0;                // times it was declared lost
  // "done" (rendered to the end), "lost" (connection broke or silent at the end),
  // "unreachable", "auth_failed", "incompatible", "busy", "too_large" (it will never hold the
  // scene: LeaseEnd::SceneTooLarge), "error".
  std::string state;
  std::string error;  // last error, e.g. "127.0.0.1:4000: authentication failed"
};

struct LocalDeviceRenderStats {
  DeviceInfo info;
  uint64_t workUnits = 0;
  uint64_t samples = 0;
  uint64_t raysTraced = 0;
  uint64_t duplicateResults = 0;
  std::string error;
};

struct ClusterRenderStats {
  double seconds = 0;  // wall time from the call of renderCluster() to the last accepted result
  uint64_t samples = 0;
  uint64_t raysTraced = 0;
  SchedulerStats scheduler;
  std::vector<LocalDeviceRenderStats> local;  // in the order of options.localDevices
  std::vector<NodeRenderStats> nodes;         // options.peers, then those added later
  uint64_t renderDataChunks = 0;              // distinct chunks of the encoded scene
  uint64_t renderDataRawBytes = 0;            // the scene's raw bytes (manifest total)
  uint64_t renderDataEncodedBytes = 0;        // and encoded
  double encodeSeconds = 0;                   // cutting, hashing and compressing it
};

// Progress: called on the loop thread after each accepted result and when nodes change state,
// with the stats so far (seconds is the elapsed time).
using ClusterProgressCallback = std::function<void(const ClusterRenderStats& stats,
                                                   uint64_t samplesDone,
                                                   uint64_t samplesTotal)>;

// Renders the whole film (its size and spp; data's camera must have the film's size). Fails
// when the options are invalid (no device, and no peer while none may appear), when
// cancelled, when no device is left and none appears within noDeviceTimeout, or when a result
// cannot be merged. A node's failures are not errors of the render; they show in its
// NodeRenderStats.
Result<ClusterRenderStats> renderCluster(const SceneSource& scene, Film& film,
                                         const ClusterRenderOptions& options,
                                         const ClusterProgressCallback& progress = nullptr);
// The same on the caller's loop. `attach`, when given, is called with the session once it has
// started and with null once it is over: a caller hands it the nodes that discovery finds on
// this loop (RenderSession::addPeer, with options.peersMayAppear).
class RenderSession;
class UvKjLoop;
Result<ClusterRenderStats> renderCluster(UvKjLoop& loop, const SceneSource& scene, Film& film,
                                         const ClusterRenderOptions& options,
                                         const ClusterProgressCallback& progress,
                                         const std::function<void(RenderSession*)>& attach);
// The same for data the caller keeps alive for the call.
Result<ClusterRenderStats> renderCluster(const RenderData& data, Film& film,
                                         const ClusterRenderOptions& options,
                                         const ClusterProgressCallback& progress = nullptr);

}  // namespace pl
