// `peerlight worker`: the Render Node process that `peerlight node` (the daemon) starts for
// each lease (DESIGN.md section 1; transport/worker_process.h). Not for people: hidden from
// --help. It expects a connected socket as fd 3, opens only the devices of its lease
// (`--devices I,J`, required) and numbers every device of the machine exactly as the daemon
// does (node_devices.h: placeholders at the other indices, so indices agree), serves them to the
// daemon over that socket (no authentication: the socket is private to the two processes),
// sends a heartbeat every 250 ms, and exits as soon as the socket closes. Render data is held in
// memory only. A bad --devices list: a message and exit status 2. A leased device that does not
// open is served as a failed device whose load and render errors name it. The daemon may keep
// it idle after a lease (a warm worker, with its scenes and BVHs loaded) and hand it the next
// lease on the same devices.
//
// Its stdout and stderr are the daemon's stderr; it logs warnings and errors only, unless
// --verbose or PEERLIGHT_LOG (inherited from the daemon) asks for more.
//
// For tests of the daemon's SIGKILL fallback only: with PEERLIGHT_TEST_WORKER_IGNORE_SIGTERM=1
// in its environment (inherited from the daemon) the worker ignores SIGTERM and, once its
// socket closes, stays (as a worker stuck in a driver call would) until it is killed.

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#if defined(__linux__)
#include <sys/prctl.h>
#endif
#include <unistd.h>

#include "apps/peerlight/cli_util.h"
#include "apps/peerlight/commands.h"
#include "apps/peerlight/node_devices.h"
#include "core/util/log.h"
#include "transport/auth.h"
#include "transport/malloc_tuning.h"
#include "transport/node_service.h"
#include "transport/uv_kj_loop.h"
#include "transport/worker_process.h"

namespace pl::app {
namespace {

struct WorkerArgs {
  uint32_t threads = 0;
  std::string devices;  // the lease's device indices: the only devices this process opens
  int fd = 3;
  bool verbose = false;
};

[[noreturn]] void runWorker(const WorkerArgs& args) {
#if defined(__linux__)
  // The daemon's end of the socket closing ends this process too; this covers a daemon that
  // was killed while this process is stuck in a render.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  // Started from /proc/self/exe, the process would be named "exe" in ps and top.
  prctl(PR_SET_NAME, "peerlight-wkr");  // at most 15 characters
#endif
  // Warnings and errors only, unless --verbose or PEERLIGHT_LOG (main() applied it) asks.
  if (!args.verbose && std::getenv("PEERLIGHT_LOG") == nullptr) setLogLevel(LogLevel::Warn);
  if (getppid() == 1) std::_Exit(1);
  const char* ignoreTerm = std::getenv("PEERLIGHT_TEST_WORKER_IGNORE_SIGTERM");
  const bool stuck = ignoreTerm != nullptr && std::string(ignoreTerm) == "1";
  if (stuck) std::signal(SIGTERM, SIG_IGN);
  auto devices = openLeasedNodeDevices(args.threads, args.devices);
  if (!devices.ok()) failUsage("worker: " + devices.error().message);
  tuneMallocForBulkTransfers();
  NodeOptions options;
  options.name = "worker";
  // The daemon holds the real leases and their TTLs. Its one lease here lasts the worker's life
  // (about 49 days, renewed whenever the daemon reuses this worker warm for another lease).
  options.minTtlMs = 1000;
  options.maxTtlMs = std::numeric_limits<uint32_t>::max();
  options.defaultTtlMs = options.maxTtlMs;
  // No second chunk cache: the daemon keeps the encoded chunks. Those it hands over are pinned
  // here until their load, and dropped then; a later load copies what it shares with the scenes
  // decoded here (missing() reports those present), so only changed chunks come again.
  options.chunkCacheBytes = 0;
  options.verifyPuts = false;  // the daemon checked what it hands over, except unchecked puts
  {
    UvKjLoop loop;
    NodeService node(loop, ClusterKey{std::vector<uint8_t>(32, 0)}, std::move(*devices),
                     options);
    serveWorker(loop, node, args.fd);
    if (stuck) {
      PL_LOG_WARN("worker %d: connection closed; staying until killed (test mode)",
                  int(getpid()));
      while (true) pause();
    }
    // The daemon is gone or ended the lease: nothing to save (no disk state), and a render in
    // progress on a device thread is not worth waiting for. Exit now, without destructors.
    PL_LOG_DEBUG("worker %d: connection closed, exiting", int(getpid()));
    std::fflush(stderr);
    std::_Exit(0);
  }
}

}  // namespace

void addWorkerCommand(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("worker", "Render Node process started by `peerlight node`");
  cmd->group("");  // hidden
  auto args = std::make_shared<WorkerArgs>();
  cmd->add_option("--threads", args->threads, "CPU render threads (0: all)");
  cmd->add_option("--devices", args->devices, "Device indices of the lease (I,J,...)")
      ->required();
  cmd->add_option("--fd", args->fd, "The socket joined to the daemon");
  cmd->add_flag("--verbose", args->verbose, "Log info lines too");
  cmd->callback([args] { runWorker(*args); });
}

}  // namespace pl::app
