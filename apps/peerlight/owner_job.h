#pragma once
// This machine's node daemon, as `peerlight render` and `peerlight session` find it: its control
// socket, the parameters of a job handed to it, and the owner's job announced on it (owner
// preemption, issue 4 item 4): while a command renders on this machine's devices, the daemon
// revokes its remote leases and lends its devices to no other Primary, until the command's
// process exits.

#include <CLI/CLI.hpp>

#include <string>

#include "apps/peerlight/render_setup.h"
#include "transport/control_convert.h"

namespace pl {
class UvKjLoop;
}

namespace pl::app {

// This machine's node daemon's control socket: --control-socket, else the first default
// location where a daemon answers (a socket file nobody answers on, a daemon that died, is no
// daemon); "" when there is none, or when the daemon there cannot be trusted with this user's
// job (transport/control_client.h checkDaemonTrusted: another user's daemon, or a folder that
// someone else made, e.g. a fake daemon at /tmp/peerlight-<uid>): the caller then renders in
// its own process. Searched once per process; says why once.
std::string findDaemonSocket(const RenderArgs& args);

// The node daemon's control socket a render or session hands its job to, or "" to render in
// this process: --no-daemon, or a choice of this process's devices (--device, --threads), or
// no daemon socket found (findDaemonSocket()).
std::string daemonSocket(const RenderArgs& args);
// The parameters of a job or session handed to the daemon: the frame and the render flags.
RenderJobParams daemonJobParams(const RenderArgs& args, uint32_t width, uint32_t height,
                                uint32_t spp);

// Tells the daemon (findDaemonSocket()) that the owner's job starts, unless --no-local or
// --no-owner-preempt, and keeps the owner job for the rest of the process. No daemon: nothing
// happens (with an explicit --control-socket nobody answers on, a warning).
// `loop`: the caller's, when it has one (a thread has at most one), at top level; else one
// for the call.
void announceOwnerJobIfDaemon(const RenderArgs& args, UvKjLoop* loop = nullptr);

// The owner token announced ("" if none): the one a job handed to the daemon carries.
const std::string& ownerToken();

// The flags that choose the daemon and the owner's job: --control-socket, --no-owner-preempt.
void addOwnerJobFlags(CLI::App* cmd, RenderArgs& args);

}  // namespace pl::app
