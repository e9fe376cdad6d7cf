// `peerlight node --listen HOST:PORT`: a Render Node. Serves this machine's devices (the CPU,
// and each CUDA GPU in a CUDA build) to Primaries that hold the cluster key, until SIGINT or
// SIGTERM; then it ends its leases, closes its connections and exits 0.
//
// With port 0 the system picks a free port; the node prints "listening on HOST:PORT" as the
// first line on stdout either way (tests read it), once it serves the network, its control
// socket and its live view.
//
// The node is a daemon (DESIGN.md section 1): for each lease it starts a `peerlight worker`
// process (worker_command.cpp, transport/worker_process.h) that renders on the leased devices,
// watches its heartbeat and kills it when it hangs; it logs "worker <pid> started for lease
// <n>" and one line when the worker stops, fails or is killed. --in-process renders in the
// daemon's own process instead (no workers).
//
// Owner jobs and render jobs: the daemon serves Cap'n Proto on a local control socket
// (--control-socket; default $XDG_RUNTIME_DIR/peerlight/node.sock, /run/peerlight/node.sock for
// root; mode 0600, own uid only; with --control-group also that group's members;
// transport/control_socket.h).
// `peerlight render` on this machine announces its job there, or hands the job over
// (render_job.h); while it runs, remote leases are revoked and refused and the state is
// `primary`.
// --ttl-ms is the longest lease TTL granted.

#include <grp.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "apps/peerlight/cli_util.h"
#include "apps/peerlight/commands.h"
#include "apps/peerlight/render_job.h"
#include "core/cluster/memory_budget.h"
#include "discovery/peer_watch.h"
#include "core/render/cpu_device.h"
#include "core/render/render_kernel.h"
#include "core/util/check.h"
#include "core/util/log.h"
#include "core/util/system.h"
#include "discovery/discovery.h"
#include "discovery/node_advert.h"
#include "transport/auth.h"
#include "transport/control_socket.h"
#include "transport/malloc_tuning.h"
#include "transport/node_service.h"
#include "transport/tcp.h"
#include "core/util/uv_handle.h"
#include "transport/uv_kj_loop.h"
#include "apps/peerlight/live_view.h"

#if defined(PEERLIGHT_HAVE_CUDA)
#include "gpu/cuda_devices.h"
#endif

namespace pl::app {
namespace {

struct NodeArgs {
  std::string listen;
  std::string keyFile;
  uint32_t threads = 0;
  std::string name;
  uint32_t ttlMs = 10000;
  uint32_t protocolVersion = proto::PROTOCOL_VERSION;  // hidden, for tests
  std::string renderKernel = renderKernelId();         // hidden, for tests
  bool noMdns = false;  // mDNS (discovery/): do not advertise
  bool inProcess = false;  // render in this process instead of per-lease workers
  uint32_t workerTimeoutMs = 2000;  // hidden, for tests
  uint32_t warmWorkers = 4;         // idle workers kept for the next lease (0: none)
  std::string controlSocket;  // empty: defaultControlSocketPath()
  bool noControlSocket = false;
  std::string controlGroup;  // a system daemon: this group's members may hand it jobs
  std::string http = "127.0.0.1:7480";  // the live view: HOST:PORT, or "off"
  uint64_t memoryBudgetMiB = 0;  // the daemon's one memory budget; 0: half of the RAM
};

// argv of `peerlight worker` for this node: this very executable.
std::vector<std::string> workerArgv(const NodeArgs& args) {
  char path[4096];
  size_t size = sizeof(path);
  if (uv_exepath(path, &size) != 0) fail("cannot find this program's path (for workers)", 1);
  return {std::string(path, size), "worker", "--threads", std::to_string(args.threads)};
}

// The address to print: the host as given, with the port actually bound.
std::string boundAddress(const std::string& listen, uint port) {
  size_t colon = listen.rfind(':');
  return listen.substr(0, colon) + ":" + std::to_string(port);
}

// Half of this machine's memory: the largest render job payload the daemon takes.
uint64_t halfOfMemory() {
  const uint64_t memory = physicalMemoryBytes();
  return memory == 0 ? uint64_t(1) << 30 : memory / 2;
}

void runNode(const NodeArgs& args) {
  if (auto parsed = parseTcpAddress(args.listen); !parsed.ok()) failUsage(parsed.error().message);
  std::optional<uint32_t> controlGroup;  // --control-group, resolved before anything starts
  if (!args.controlGroup.empty()) {
    struct group entry {};
    struct group* found = nullptr;
    std::vector<char> buffer(1 << 16);
    if (::getgrnam_r(args.controlGroup.c_str(), &entry, buffer.data(), buffer.size(), &found) !=
            0 ||
        found == nullptr)
      failUsage("--control-group " + args.controlGroup + ": no such group");
    controlGroup = uint32_t(found->gr_gid);
  }
  auto keyPath = clusterKeyPath(args.keyFile);
  if (!keyPath.ok()) fail(keyPath.error().message, 1);
  auto key = loadClusterKey(*keyPath, /*createIfMissing=*/true);
  if (!key.ok()) fail(key.error().message, 1);
  const std::string fingerprint = keyFingerprint(*key);
  tuneMallocForBulkTransfers();

  // The daemon's one memory budget (core/cluster/memory_budget.h): the chunk cache's capacity
  // (a quarter of it, at most 4 GiB) for good, then what each render job, lease, page session and
  // warm worker holds while it holds it. Beyond it a request is answered busy.
  MemoryBudget budget(args.memoryBudgetMiB != 0 ? args.memoryBudgetMiB << 20 : halfOfMemory());
  NodeOptions options;
  options.chunkCacheBytes = std::min<uint64_t>(options.chunkCacheBytes, budget.capacity() / 4);
  PL_CHECK(budget.reserve({MemoryHolder::Kind::ChunkCache, 0}, options.chunkCacheBytes).granted);
  options.memoryBudget = &budget;
  options.name = args.name;
  options.protocolVersion = args.protocolVersion;
  options.renderKernel = args.renderKernel;
  options.defaultTtlMs = args.ttlMs;
  // --ttl-ms is also the upper bound: a Primary may ask for less, never for more (so a killed
  // Primary's leases expire within it).
  options.minTtlMs = std::min<uint32_t>(options.minTtlMs, args.ttlMs);
  options.maxTtlMs = args.ttlMs;
  if (!args.inProcess) {
    options.workerArgv = workerArgv(args);
    // This very build, even once the file at argv[0] is replaced (an upgrade, a rebuild): the
    // workers must render with the kernel this daemon names in Node.info.
    if (::access("/proc/self/exe", X_OK) == 0) options.workerExecutable = "/proc/self/exe";
  }
  options.workerHeartbeatTimeoutMs = args.workerTimeoutMs;
  options.maxWarmWorkers = args.warmWorkers;

  UvKjLoop loop;
  auto receiver = listenTcp(loop.lowLevelIo(), args.listen);
  if (!receiver.ok()) fail(receiver.error().message, 1);
  {
    ClusterKey primaryKey = *key;  // the daemon's own render jobs (render_job.h)
    ClusterKey liveKey = *key;     // the live view's sessions and token (live_view.h)
    NodeService node(loop, std::move(*key), nodeDevices(args.threads, args.inProcess), options);
    std::string devices;
    for (const DeviceInfo& d : node.deviceInfos()) {
      devices += (devices.empty() ? "" : ", ") + d.kind + " " + d.name;
    }
    PL_LOG_INFO("node %s (%s) serving %s; cluster key %s (fingerprint %s)", node.name().c_str(),
                node.nodeId().c_str(), devices.c_str(), keyPath->c_str(), fingerprint.c_str());

    // --- mDNS (discovery/, issue 4): advertise this node as _peerlight._tcp; its TXT state
    // follows the lease count (NodeService has no lease event, so it is polled every 250 ms).
    // Without an avahi-daemon this logs one line and the node goes on (static peers).
    std::unique_ptr<Discovery> discovery =
        args.noMdns ? makeNullDiscovery() : makeDiscovery(loop.uv());
    NodeAdvert advert{args.protocolVersion, node.nodeId(), node.name(), fingerprint, "idle",
                      node.deviceInfos()};
    advert.renderKernel = args.renderKernel;
    if (Status published = discovery->publish({advertInstanceName(node.name(), node.nodeId()),
                                                uint16_t((*receiver)->getPort()),
                                                advertTxt(advert)});
        !published.ok()) {
      PL_LOG_WARN("mDNS: %s", published.error().message.c_str());
    }
    // --- render jobs (issue 4 item 4): `peerlight render` on this machine hands its job to
    // this daemon, which becomes the Primary; it renders on its own node (as the owner) and on
    // the nodes mDNS finds, live (PeerWatch), plus any --peer of the render.
    // The watch browses on this loop and reports each node that becomes usable as an event.
    // Jobs and page sessions learn of it through these (set once they exist).
    RenderJobs* jobsToTell = nullptr;
    LiveView* liveToTell = nullptr;
    std::unique_ptr<PeerWatch> watch;
    if (!args.noMdns) {
      PeerWatchEvents events;
      events.onUsable = [&jobsToTell, &liveToTell](const PeerVerdict& v) {
        if (jobsToTell != nullptr) jobsToTell->nodeFound(v.address);
        if (liveToTell != nullptr) liveToTell->nodeFound(v.address);
      };
      watch = std::make_unique<PeerWatch>(
          PeerWatchOptions{args.protocolVersion, fingerprint, node.nodeId(),
                           /*acceptLeased=*/true},
          loop.uv(), std::move(events));
    }
    RenderJobs jobs(loop, node, std::move(primaryKey), watch.get(), &budget);
    jobsToTell = &jobs;
    // --- the live view (issue 11; live_view.h): the web page and its API on this loop. An
    // address that cannot be served: warn and go on without.
    std::unique_ptr<LiveView> live;
    std::string liveLine;  // printed after "listening on", which stays the first line
    if (args.http != "off") {
      const size_t colon = args.http.rfind(':');
      const std::string host = colon == std::string::npos ? args.http : args.http.substr(0, colon);
      const uint32_t port = colon == std::string::npos
                                ? 7480
                                : uint32_t(std::strtoul(args.http.c_str() + colon + 1, nullptr, 10));
      Result<std::unique_ptr<LiveView>> started =
          port > 65535 ? Result<std::unique_ptr<LiveView>>(Error{"--http " + args.http + ": bad port"})
                       : LiveView::start(loop, node, jobs, watch.get(), &budget, std::move(liveKey), host,
                                         uint16_t(port));
      if (started.ok()) {
        live = std::move(started).value();
        liveToTell = live.get();
        liveLine = "live view on http://" + host + ":" + std::to_string(live->port()) + "/";
      } else {
        PL_LOG_WARN("%s; no live view", started.error().message.c_str());
      }
    }
    // --- the local control socket (issue 4 item 4; transport/control_socket.h): Cap'n Proto
    // on this loop. `peerlight render` on this machine hands its job to this daemon (above),
    // or only starts an owner job; either way the node revokes remote leases and reports state
    // primary until the render drops its capability or its connection closes.
    // A socket that another daemon holds: warn and go on without.
    std::unique_ptr<ControlSocket> control;
    if (!args.noControlSocket) {
      std::string path = args.controlSocket.empty() ? defaultControlSocketPath()
                                                    : args.controlSocket;
      ControlSocketOptions controlOptions;
      controlOptions.maxPayloadBytes = halfOfMemory();
      if (controlGroup) {
        controlOptions.group = *controlGroup;
        controlOptions.groupName = args.controlGroup;
      }
      ControlSocket::Callbacks callbacks;
      callbacks.ownerStarted = [&node](const std::string& token) { node.ownerJobStarted(token); };
      callbacks.ownerEnded = [&node](const std::string& token) { node.ownerJobEnded(token); };
      callbacks.admitRender = [&jobs](const RenderJobParams& params, uint64_t dataBytes) {
        return jobs.admit(params, dataBytes);
      };
      callbacks.renderRequested = [&jobs](std::shared_ptr<ControlRenderJob> job) {
        jobs.start(std::move(job));
      };
      callbacks.openSession = [&jobs](ControlSessionRequest request,
                                      ctl::SessionListener::Client listener,
                                      kj::Own<void> slot) {
        return jobs.openSession(std::move(request), kj::mv(listener), kj::mv(slot));
      };
      auto listened = ControlSocket::listen(loop, path, std::move(callbacks), controlOptions);
      if (listened.ok()) {
        control = std::move(*listened);
        PL_LOG_INFO("control socket %s", path.c_str());
      } else {
        PL_LOG_WARN("%s; owner jobs on this machine will not preempt remote leases",
                    listened.error().message.c_str());
      }
    }
    // Ready: the line scripts and tests wait for comes once the control socket is there too.
    std::printf("listening on %s\n", boundAddress(args.listen, (*receiver)->getPort()).c_str());
    if (!liveLine.empty()) std::printf("%s\n", liveLine.c_str());
    std::fflush(stdout);

    struct StateWatch {
      std::function<void()> check;
      UvHandle<uv_timer_t> timer;
    } stateWatch;
    stateWatch.check = [&] {
      std::string state = node.ownerActive()              ? "primary"
                          : node.activeLeaseCount() > 0 ? "leased"
                                                        : "idle";
      if (state == advert.state) return;
      advert.state = state;
      if (Status s = discovery->updateTxt(advertTxt(advert)); !s.ok()) {
        PL_LOG_WARN("mDNS: %s", s.error().message.c_str());
      }
    };
    PL_CHECK(stateWatch.timer.init(loop.uv(), uv_timer_init) == 0);
    stateWatch.timer->data = &stateWatch;
    uv_timer_start(
        stateWatch.timer.get(),
        [](uv_timer_t* h) { static_cast<StateWatch*>(h->data)->check(); }, 250, 250);
    uv_unref(stateWatch.timer.base());
    // --- end mDNS

    bool stopping = false;
    kj::Promise<void> flushing = nullptr;  // the control socket's last replies, at shutdown
    kj::Promise<void> listening = node.listen(**receiver).eagerlyEvaluate([](kj::Exception&& e) {
      PL_LOG_ERROR("accepting connections failed: %s", e.getDescription().cStr());
    });
    auto shutdown = [&](const char* signalName) {
      if (stopping) return;
      stopping = true;
      PL_LOG_INFO("%s: ending leases and shutting down", signalName);
      // The page's sessions end first, with their clients (libwebsockets frees its last
      // handles on a later turn).
      liveToTell = nullptr;
      live.reset();
      // Render jobs end first (their clients are told why), then the leases.
      jobs.cancelAll([&] {
        node.endAllLeases("node shutting down");
        listening = kj::READY_NOW;
        node.disconnectAll();
        if (control == nullptr) return loop.stop();
        // The cancelled jobs' clients learn why before the socket closes.
        flushing = control->flush().then([&loop] { loop.stop(); }).eagerlyEvaluate(nullptr);
      });
    };
    struct SignalWatch {
      UvHandle<uv_signal_t> handle;
      std::function<void()> onSignal;
    };
    SignalWatch watches[2];
    const int signals[2] = {SIGINT, SIGTERM};
    for (int i = 0; i < 2; ++i) {
      PL_CHECK(watches[i].handle.init(loop.uv(), uv_signal_init) == 0);
      const char* name = signals[i] == SIGINT ? "SIGINT" : "SIGTERM";
      watches[i].onSignal = [&shutdown, name] { shutdown(name); };
      watches[i].handle->data = &watches[i];
      uv_signal_start(
          watches[i].handle.get(),
          [](uv_signal_t* h, int) { static_cast<SignalWatch*>(h->data)->onSignal(); }, signals[i]);
    }
    loop.run();
    liveToTell = nullptr;
    live.reset();  // (when the loop ended otherwise)
    for (int i = 0; i < 20; ++i) uv_run(loop.uv(), UV_RUN_NOWAIT);  // libwebsockets' last handles
    for (auto& w : watches) w.handle.close();
    stateWatch.timer.close();
    flushing = nullptr;
    control.reset();  // before the node: ends its owner jobs
    jobsToTell = nullptr;
    // (jobs, declared after the node, goes before it: cancels and joins what still runs)
    discovery.reset();  // withdraws the mDNS service
  }  // NodeService: waits for a render in progress, joins its threads
  *receiver = nullptr;
  PL_LOG_INFO("node stopped");
}

}  // namespace

void addNodeCommand(CLI::App& app) {
  CLI::App* cmd =
      app.add_subcommand("node", "Serve this machine's render devices to Primaries (Render Node)");
  auto args = std::make_shared<NodeArgs>();
  cmd->add_option("--listen", args->listen,
                  "Address to listen on, HOST:PORT (port 0: pick a free one and print it)")
      ->required();
  cmd->add_option("--key-file", args->keyFile,
                  "Cluster key file (default: $PEERLIGHT_KEY_FILE, else "
                  "~/.config/peerlight/cluster.key; created if missing)");
  cmd->add_option("--threads", args->threads, "CPU render threads (0: all)")->capture_default_str();
  cmd->add_option("--name", args->name, "Name shown to Primaries (default: the host name)");
  cmd->add_option("--ttl-ms", args->ttlMs, "Lease time to live in milliseconds (the default and the most a Primary gets)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 3600000u));
  cmd->add_option("--protocol-version", args->protocolVersion,
                  "Claim another protocol version (tests)")
      ->group("");
  cmd->add_option("--render-kernel", args->renderKernel,
                  "Claim another render kernel in Node.info (tests)")
      ->group("");
  cmd->add_flag("--no-mdns", args->noMdns, "Do not advertise this node over mDNS");
  cmd->add_flag("--in-process", args->inProcess,
                "Render in this process rather than in one worker process per lease");
  cmd->add_option("--warm-workers", args->warmWorkers,
                  "Idle worker processes kept, with their loaded scene, for the next lease "
                  "(0: none; at most a quarter of the RAM in scenes)")
      ->capture_default_str()
      ->check(CLI::Range(0u, 64u));
  cmd->add_option("--memory-budget", args->memoryBudgetMiB,
                  "MiB this daemon may hold for render jobs, leases, page sessions, warm "
                  "workers and its chunk cache (a quarter of it, at most 4096); beyond it a "
                  "request is answered busy (0: half of the RAM)")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t(0), uint64_t(1) << 40));
  cmd->add_option("--worker-timeout-ms", args->workerTimeoutMs,
                  "Heartbeat silence after which a worker is killed (tests)")
      ->group("")
      ->check(CLI::Range(100u, 600000u));
  cmd->add_option("--control-socket", args->controlSocket,
                  "Local control socket for this machine's renders: owner jobs and render jobs "
                  "handed to this node (default: "
                  "$XDG_RUNTIME_DIR/peerlight/node.sock, /run/peerlight/node.sock for root)");
  cmd->add_option("--control-group", args->controlGroup,
                  "Let this group's members hand render jobs to this node (a system daemon: "
                  "the socket is then mode 0660, owned by the group, in a 0755 folder; the "
                  "daemon checks each client's groups)")
      ->type_name("NAME");
  cmd->add_option("--http", args->http,
                  "The live view (web page and API): HOST:PORT (port 0: any free one), or off; "
                  "addresses other than 127.0.0.1 need the token `peerlight open` prints")
      ->capture_default_str();
  cmd->add_flag("--no-control-socket", args->noControlSocket,
                "Do not listen on a control socket (owner jobs cannot preempt leases)");
  cmd->callback([args] { runNode(*args); });
}

}  // namespace pl::app
