// This machine's node daemon and the owner's job (owner_job.h).

#include "apps/peerlight/owner_job.h"

#include <unistd.h>

#include "core/util/log.h"
#include "transport/auth.h"
#include "transport/control_client.h"
#include "transport/uv_kj_loop.h"

namespace pl::app {

namespace {

std::string& announcedToken() {
  static std::string token;
  return token;
}

}  // namespace

const std::string& ownerToken() { return announcedToken(); }

std::string findDaemonSocket(const RenderArgs& args) {
  static std::string found;
  static bool searched = false;
  if (searched) return found;
  searched = true;
  std::string path;
  if (!args.controlSocket.empty()) {
    path = args.controlSocket;
  } else {
    for (const std::string& candidate : controlSocketCandidates()) {
      if (::access(candidate.c_str(), F_OK) == 0 && controlSocketAnswers(candidate)) {
        path = candidate;
        break;
      }
    }
  }
  if (path.empty()) return found;
  if (Status trusted = checkDaemonAt(path); !trusted.ok()) {
    // (An explicit path nobody answers on is the caller's to report, as before.)
    if (controlSocketAnswers(path)) {
      PL_LOG_WARN("%s; rendering in this process", trusted.error().message.c_str());
      return found;
    }
  }
  found = path;
  return found;
}

std::string daemonSocket(const RenderArgs& args) {
  if (args.noDaemon || args.device != "auto" || args.threads != 0) return "";
  return findDaemonSocket(args);
}

RenderJobParams daemonJobParams(const RenderArgs& args, uint32_t width, uint32_t height,
                                uint32_t spp) {
  RenderJobParams params;
  params.width = width;
  params.height = height;
  params.spp = spp;
  params.peers = args.peers;
  params.localOnly = args.localOnly;
  params.noLocal = args.noLocal;
  params.noOwnerPreempt = args.noOwnerPreempt;
  params.noMdns = args.noMdns;
  params.primaryName = primaryName();
  params.timeLimitMs = uint32_t(timeLimitOf(args).count());
  params.region = regionOf(args);
  params.noiseThreshold = args.noiseThreshold;
  return params;
}

// The connection is made on `loop` (or on one that lives only for the call, when the render
// runs one of its own later) and then stays open, silent, for the rest of the process on
// purpose (ControlConnection::keepOpenSilently: the kernel closes it when the process ends, and
// that ends the owner job).
void announceOwnerJobIfDaemon(const RenderArgs& args, UvKjLoop* loop) {
  if (args.noLocal || args.noOwnerPreempt) return;
  const bool explicitPath = !args.controlSocket.empty();
  const std::string path = findDaemonSocket(args);
  if (path.empty()) return;
  std::string token = randomHex(16);
  Result<int> fd = Error{""};
  if (loop != nullptr) {
    fd = announceOwnerJob(*loop, path, token);
  } else {
    UvKjLoop own;
    fd = announceOwnerJob(own, path, token);
  }
  if (!fd.ok()) {
    if (explicitPath) PL_LOG_WARN("%s (rendering anyway)", fd.error().message.c_str());
    else PL_LOG_DEBUG("%s", fd.error().message.c_str());
    return;
  }
  PL_LOG_INFO("owner job announced to the node daemon at %s", path.c_str());
  announcedToken() = token;
}

void addOwnerJobFlags(CLI::App* cmd, RenderArgs& args) {
  cmd->add_option("--control-socket", args.controlSocket,
                  "This machine's node daemon's control socket: where the owner's job is "
                  "announced (and `render` hands its job over) (default: "
                  "$XDG_RUNTIME_DIR/peerlight/node.sock, /run/peerlight/node.sock for root)");
  cmd->add_flag("--no-owner-preempt", args.noOwnerPreempt,
                "Do not make this machine's node daemon revoke its remote leases");
}

}  // namespace pl::app
