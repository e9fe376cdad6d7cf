// `peerlight open`: the URL of this machine's live view (the node daemon's web page), with the
// access token when the address is not the loopback one; opened in the desktop's browser when
// there is a desktop (xdg-open), else only printed.

#include <spawn.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "apps/peerlight/cli_util.h"
#include "apps/peerlight/commands.h"
#include "apps/peerlight/live_view.h"
#include "transport/auth.h"

extern char** environ;

namespace pl::app {
namespace {

struct OpenArgs {
  std::string http = "127.0.0.1:7480";
  std::string keyFile;
  bool print = false;
};

void runOpen(const OpenArgs& args) {
  std::string url = "http://" + args.http + "/";
  const std::string host = args.http.substr(0, args.http.rfind(':'));
  if (host != "127.0.0.1" && host != "localhost") {
    Result<std::string> path = clusterKeyPath(args.keyFile);
    if (!path.ok()) fail(path.error().message, 1);
    Result<ClusterKey> key = loadClusterKey(*path, /*createIfMissing=*/false);
    if (!key.ok()) fail(key.error().message, 1);
    url += "?token=" + liveViewToken(*key);
  }
  std::printf("%s\n", url.c_str());
  std::fflush(stdout);
  const bool desktop = std::getenv("DISPLAY") != nullptr || std::getenv("WAYLAND_DISPLAY") != nullptr;
  if (!args.print && desktop) {
    // Not through a shell: the URL is one argument, whatever it holds.
    pid_t pid = 0;
    char* argv[] = {const_cast<char*>("xdg-open"), url.data(), nullptr};
    if (posix_spawnp(&pid, "xdg-open", nullptr, nullptr, argv, environ) != 0)
      std::fprintf(stderr, "peerlight: could not run xdg-open; open the URL above\n");
  }
}

}  // namespace

void addOpenCommand(CLI::App& app) {
  auto args = std::make_shared<OpenArgs>();
  CLI::App* cmd = app.add_subcommand(
      "open", "Print the URL of this machine's live view (the node daemon's web page) and open it");
  cmd->add_option("--http", args->http, "The daemon's --http address")->capture_default_str();
  cmd->add_option("--key-file", args->keyFile,
                  "Cluster key file, for the token of an address other than 127.0.0.1 (default: "
                  "$PEERLIGHT_KEY_FILE, else ~/.config/peerlight/cluster.key)");
  cmd->add_flag("--print", args->print, "Only print the URL");
  cmd->callback([args] { runOpen(*args); });
}

}  // namespace pl::app
