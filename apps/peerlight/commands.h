#pragma once
// Each subcommand of the `peerlight` program lives in its own file and registers itself on
// the CLI11 app. main.cpp only wires them together.

#include <CLI/CLI.hpp>

namespace pl::app {

void addRenderCommand(CLI::App& app);
void addBenchCommand(CLI::App& app);
void addDevicesCommand(CLI::App& app);
void addNodeCommand(CLI::App& app);
void addNodesCommand(CLI::App& app);  // nodes_command.cpp (discovery)

}  // namespace pl::app
