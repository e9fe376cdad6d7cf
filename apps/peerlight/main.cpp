// peerlight: peer-to-peer cluster path tracer. Subcommands are in *_command.cpp.

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "apps/peerlight/commands.h"
#include "apps/peerlight/huge_pages.h"
#include "apps/peerlight/version.h"
#include "core/render/render_kernel.h"
#include "core/util/log.h"

int main(int argc, char** argv) {
  pl::app::preferHugePages(argv);  // may execute the program again, with huge pages
  std::signal(SIGPIPE, SIG_IGN);
  // PEERLIGHT_LOG=debug|info|warning|error: how much goes to stderr (default info).
  if (const char* level = std::getenv("PEERLIGHT_LOG")) {
    const std::string l = level;
    if (l == "debug") pl::setLogLevel(pl::LogLevel::Debug);
    else if (l == "warning" || l == "warn") pl::setLogLevel(pl::LogLevel::Warn);
    else if (l == "error") pl::setLogLevel(pl::LogLevel::Error);
  }
  CLI::App app{"peerlight: peer-to-peer cluster path tracer"};
  app.require_subcommand(1);
  app.set_version_flag("--version", PEERLIGHT_VERSION_STRING);
  // The render kernel: nodes render for each other only when theirs are equal.
  app.add_subcommand("version", "Print the version and the render kernel")->callback([] {
    std::printf("peerlight %s (render kernel %s)\n", PEERLIGHT_VERSION_STRING,
                pl::renderKernelId());
  });
  pl::app::addRenderCommand(app);
  pl::app::addSessionCommand(app);
  pl::app::addBenchCommand(app);
  pl::app::addDevicesCommand(app);
  pl::app::addNodeCommand(app);
  pl::app::addNodesCommand(app);
  pl::app::addOpenCommand(app);
  pl::app::addKeyCommand(app);
  pl::app::addWorkerCommand(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Subcommands end with CLI::RuntimeError(status) after printing their own message; any
    // other parse error (bad arguments) exits with status 2, like other Unix tools.
    const int status = app.exit(e);
    if (dynamic_cast<const CLI::RuntimeError*>(&e) != nullptr || status == 0) return status;
    return 2;
  }
  return 0;
}
