#pragma once
// Each subcommand of the `peerlight` program lives in its own file and registers itself on
// the CLI11 app. main.cpp only wires them together.

#include <CLI/CLI.hpp>

#include <cstdint>
#include <memory>
#include <vector>

namespace pl {
class Device;
}

namespace pl::app {

void addRenderCommand(CLI::App& app);
void addBenchCommand(CLI::App& app);
void addDevicesCommand(CLI::App& app);
void addNodeCommand(CLI::App& app);
void addNodesCommand(CLI::App& app);  // nodes_command.cpp (discovery)
void addWorkerCommand(CLI::App& app);  // worker_command.cpp (started by `peerlight node`)

// This machine's render devices, in the order that is their protocol index: the CPU (with
// `threads` render threads, 0: all), then each usable CUDA GPU in a CUDA build
// (node_devices.cpp; the daemon and its workers must agree on it).
std::vector<std::unique_ptr<Device>> openNodeDevices(uint32_t threads);

}  // namespace pl::app
