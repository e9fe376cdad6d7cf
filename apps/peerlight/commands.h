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
void addSessionCommand(CLI::App& app);  // session_command.cpp: JSON lines on stdin/stdout
void addBenchCommand(CLI::App& app);
void addDevicesCommand(CLI::App& app);
void addNodeCommand(CLI::App& app);
void addNodesCommand(CLI::App& app);  // nodes_command.cpp (discovery)
void addOpenCommand(CLI::App& app);   // open_command.cpp: the live view's URL
void addKeyCommand(CLI::App& app);    // key_command.cpp: the cluster key file
void addWorkerCommand(CLI::App& app);  // worker_command.cpp (started by `peerlight node`)

// The devices `peerlight node` serves, by protocol index: the CPU (with `threads` render
// threads, 0: all), then each CUDA GPU in a CUDA build (node_devices.h, which its workers
// share). `inProcess`: opened, to render in this process (a GPU that does not open is left
// out); else placeholders that only describe them (the daemon opens nothing; its workers do).
std::vector<std::unique_ptr<Device>> nodeDevices(uint32_t threads, bool inProcess);

}  // namespace pl::app
