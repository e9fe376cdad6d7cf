#pragma once
// What a peerlight node advertises over mDNS, and its TXT encoding (discovery/discovery.h):
//
//   v=<protocol version>  id=<node id>  name=<node name>  key=<cluster key fingerprint>
//   state=idle|leased|primary  dev=<compact device list>  kernel=<render kernel>
//
// kernel: the build's render kernel (core/render/render_kernel.h), so that a Primary passes over
// a node of another build without connecting (Node.info has the last word); absent from older
// nodes.
//
// The device list is `kind:model:memory:extra` per device, `;`-separated, e.g.
//   cpu:AMD EPYC 7B13:24G:2t;cuda:NVIDIA H100 80GB HBM3:80G:9.0
// memory in whole GiB (rounded to nearest, at least 1 when nonzero) with suffix G, extra = CPU
// threads with suffix t, or the CUDA compute capability. `:` and `;` in models become spaces.
// Each TXT string is bounded to 255 bytes: models are shortened, and devices that do not fit
// are counted in a final `+N` entry. Never the key itself.
//
// Threads: pure functions.

#include <cstdint>
#include <string>
#include <vector>

#include "core/render/device.h"
#include "core/render/render_kernel.h"
#include "core/util/status.h"
#include "discovery/discovery.h"

namespace pl {

struct NodeAdvert {
  uint32_t protocolVersion = 0;
  std::string nodeId;
  std::string name;
  std::string keyFingerprint;
  std::string state = "idle";  // idle | leased | primary
  std::vector<DeviceInfo> devices;
  std::string renderKernel = renderKernelId();  // parsed: "" when the advert names none
};

// One device as read back from a `dev=` list.
struct DeviceSummary {
  std::string kind;   // cpu, cuda, ... (as advertised)
  std::string model;
  uint32_t memoryGiB = 0;
  uint32_t threads = 0;    // cpu
  std::string compute;     // cuda, e.g. "9.0"
  bool operator==(const DeviceSummary&) const = default;
};

// "cpu:AMD EPYC:24G:2t;..." at most maxBytes long (see above).
std::string encodeDeviceList(const std::vector<DeviceInfo>& devices, size_t maxBytes);
// Reads a `dev=` value; unparsable entries are skipped, "+N" sets *moreDevices.
std::vector<DeviceSummary> decodeDeviceList(const std::string& text, uint32_t* moreDevices = nullptr);

TxtRecords advertTxt(const NodeAdvert& advert);
// Reads the advert back. Fails when v or id is missing or v is not a number (not a peerlight
// node we understand); other fields are optional.
Result<NodeAdvert> parseAdvert(const TxtRecords& txt, std::vector<DeviceSummary>* devices = nullptr);

// The service instance name of a node: "<name> [<first 8 of id>]", bounded to 63 bytes.
std::string advertInstanceName(const std::string& name, const std::string& nodeId);

}  // namespace pl
