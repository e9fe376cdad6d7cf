// A stand-in for `peerlight worker` in node tests that need more devices than this machine has
// (tests/transport/node_warm_test.cpp): `node_test_worker --devices I,J` serves `--device-count`
// one-thread CPU devices (default 4) at every index, over fd 3, through serveWorker(), exactly
// as the real worker serves the devices of its lease; it exits when the socket closes.

#include <sys/prctl.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/render/cpu_device.h"
#include "core/util/log.h"
#include "transport/auth.h"
#include "transport/node_service.h"
#include "transport/uv_kj_loop.h"
#include "transport/worker_process.h"

int main(int argc, char** argv) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  pl::setLogLevel(pl::LogLevel::Warn);
  size_t deviceCount = 4;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--device-count") == 0) {
      deviceCount = std::strtoul(argv[i + 1], nullptr, 10);
    }
  }
  std::vector<std::unique_ptr<pl::Device>> devices;
  for (size_t i = 0; i < deviceCount; ++i) devices.push_back(std::make_unique<pl::CpuDevice>(1));
  pl::NodeOptions options;
  options.name = "test-worker";
  options.maxTtlMs = 0xffffffffu;
  options.defaultTtlMs = options.maxTtlMs;
  {
    pl::UvKjLoop loop;
    pl::NodeService node(loop, pl::ClusterKey{std::vector<uint8_t>(32, 0)}, std::move(devices),
                         options);
    pl::serveWorker(loop, node, 3);
    std::fflush(stderr);
    std::_Exit(0);  // as the real worker: nothing to save, no render worth waiting for
  }
}
