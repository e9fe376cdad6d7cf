#include "apps/peerlight/commands.h"

namespace pl::app {

void addDevicesCommand(CLI::App& app) {
  // TODO: implemented by the owner of this command.
  (void)app;
}

}  // namespace pl::app
