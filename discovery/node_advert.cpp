// TXT encoding of a node's advert: see node_advert.h.

#include "discovery/node_advert.h"

#include <charconv>
#include <cmath>

namespace pl {
namespace {

std::string cleanModel(const std::string& model) {
  std::string out;
  for (char c : model) {
    if (c == ':' || c == ';' || static_cast<unsigned char>(c) < 0x20) c = ' ';
    if (c == ' ' && (out.empty() || out.back() == ' ')) continue;  // collapse runs
    out += c;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

std::string encodeDevice(const DeviceInfo& d, size_t modelBytes) {
  std::string model = cleanModel(d.name);
  if (model.size() > modelBytes) model.resize(modelBytes);
  while (!model.empty() && model.back() == ' ') model.pop_back();
  uint64_t gib = uint64_t(std::llround(double(d.memoryBytes) / double(uint64_t(1) << 30)));
  if (gib == 0 && d.memoryBytes > 0) gib = 1;
  std::string out = cleanModel(d.kind) + ":" + model + ":" + std::to_string(gib) + "G:";
  if (d.kind == "cpu") {
    out += std::to_string(d.threads) + "t";
  } else if (d.computeMajor > 0) {
    out += std::to_string(d.computeMajor) + "." + std::to_string(d.computeMinor);
  }
  return out;
}

bool parseUint(const std::string& s, uint32_t* out) {
  if (s.empty()) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && end == s.data() + s.size();
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t at = s.find(sep, start);
    parts.push_back(s.substr(start, at == std::string::npos ? std::string::npos : at - start));
    if (at == std::string::npos) return parts;
    start = at + 1;
  }
}

}  // namespace

std::string encodeDeviceList(const std::vector<DeviceInfo>& devices, size_t maxBytes) {
  // Try full model names, then shorter ones; then drop devices from the end into "+N".
  for (size_t modelBytes : {size_t(64), size_t(24), size_t(12)}) {
    std::string out;
    for (const DeviceInfo& d : devices) out += (out.empty() ? "" : ";") + encodeDevice(d, modelBytes);
    if (out.size() <= maxBytes) return out;
  }
  // Room is kept for a final ";+N" (N <= devices.size()).
  const size_t reserve = 2 + std::to_string(devices.size()).size();
  std::string out;
  for (size_t i = 0; i < devices.size(); ++i) {
    std::string next = (out.empty() ? "" : ";") + encodeDevice(devices[i], 12);
    if (out.size() + next.size() + reserve > maxBytes) {
      return out + (out.empty() ? "+" : ";+") + std::to_string(devices.size() - i);
    }
    out += next;
  }
  return out;
}

std::vector<DeviceSummary> decodeDeviceList(const std::string& text, uint32_t* moreDevices) {
  std::vector<DeviceSummary> out;
  if (moreDevices != nullptr) *moreDevices = 0;
  if (text.empty()) return out;
  for (const std::string& entry : split(text, ';')) {
    if (!entry.empty() && entry[0] == '+') {
      uint32_t n = 0;
      if (moreDevices != nullptr && parseUint(entry.substr(1), &n)) *moreDevices = n;
      continue;
    }
    std::vector<std::string> f = split(entry, ':');
    if (f.size() != 4 || f[0].empty()) continue;
    DeviceSummary d;
    d.kind = f[0];
    d.model = f[1];
    if (f[2].size() >= 2 && f[2].back() == 'G') parseUint(f[2].substr(0, f[2].size() - 1), &d.memoryGiB);
    if (f[3].size() >= 2 && f[3].back() == 't') {
      parseUint(f[3].substr(0, f[3].size() - 1), &d.threads);
    } else {
      d.compute = f[3];
    }
    out.push_back(std::move(d));
  }
  return out;
}

TxtRecords advertTxt(const NodeAdvert& advert) {
  auto bounded = [](const std::string& key, std::string value) {
    size_t room = kMaxTxtStringBytes - key.size() - 1;
    if (value.size() > room) value.resize(room);
    return std::make_pair(key, std::move(value));
  };
  TxtRecords txt;
  txt.push_back(bounded("v", std::to_string(advert.protocolVersion)));
  txt.push_back(bounded("id", advert.nodeId));
  txt.push_back(bounded("name", advert.name));
  txt.push_back(bounded("key", advert.keyFingerprint));
  txt.push_back(bounded("state", advert.state));
  txt.push_back({"dev", encodeDeviceList(advert.devices, kMaxTxtStringBytes - 4)});
  txt.push_back(bounded("kernel", advert.renderKernel));
  return txt;
}

Result<NodeAdvert> parseAdvert(const TxtRecords& txt, std::vector<DeviceSummary>* devices) {
  NodeAdvert advert;
  advert.renderKernel.clear();
  bool haveVersion = false, haveId = false;
  for (const auto& [key, value] : txt) {
    if (key == "v") {
      if (!parseUint(value, &advert.protocolVersion)) {
        return Error{"TXT record v='" + value + "' is not a protocol version"};
      }
      haveVersion = true;
    } else if (key == "id") {
      advert.nodeId = value;
      haveId = !value.empty();
    } else if (key == "name") {
      advert.name = value;
    } else if (key == "key") {
      advert.keyFingerprint = value;
    } else if (key == "state") {
      advert.state = value;
    } else if (key == "kernel") {
      advert.renderKernel = value;
    } else if (key == "dev" && devices != nullptr) {
      *devices = decodeDeviceList(value);
    }
  }
  if (!haveVersion) return Error{"TXT records lack v=<protocol version>"};
  if (!haveId) return Error{"TXT records lack id=<node id>"};
  return advert;
}

std::string advertInstanceName(const std::string& name, const std::string& nodeId) {
  std::string suffix = " [" + nodeId.substr(0, 8) + "]";
  std::string base = cleanModel(name);
  if (base.empty()) base = "peerlight";
  if (base.size() + suffix.size() > 63) base.resize(63 - suffix.size());
  return base + suffix;
}

}  // namespace pl
