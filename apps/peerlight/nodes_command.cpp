// `peerlight nodes [--json] [--wait SECONDS] [--key-file F] [--peer HOST:PORT ...]`: lists the
// Render Nodes this machine can see. Browses mDNS (`_peerlight._tcp`, discovery/) for --wait
// seconds (skipped when no avahi-daemon is reachable), merges what it found with the --peer
// entries, then probes each one as a Primary would start (transport/node_probe.h: connect,
// hello, the node's proof, authenticate, Node.info; no lease) and prints name, address,
// protocol version, state, devices, whether the cluster key matches (the TXT fingerprint and
// the proof), and for each unusable node why (wrong key, incompatible version, unreachable).
//
// --no-mdns: --peer entries only. --json prints one JSON array (one object per node; see printJson for the fields).
// Exit status 0 whatever was found; 2 for bad arguments; 1 when the key file is unreadable.

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "apps/peerlight/cli_util.h"
#include "apps/peerlight/commands.h"
#include "core/util/log.h"
#include "discovery/discovery.h"
#include "discovery/node_advert.h"
#include "transport/node_probe.h"
#include "discovery/peer_directory.h"
#include "transport/auth.h"
#include "transport/protocol_convert.h"
#include "transport/tcp.h"
#include "transport/uv_kj_loop.h"

namespace pl::app {
namespace {

struct NodesArgs {
  bool json = false;
  double waitSeconds = 2;
  std::string keyFile;
  std::vector<std::string> peers;
  uint32_t timeoutMs = 3000;
  bool noMdns = false;
};

struct Row {
  PeerEntry entry;
  NodeProbe probe;
  std::optional<NodeAdvert> advert;  // from TXT
  std::vector<DeviceSummary> txtDevices;
  double discoveredMs = -1;  // since browsing started
  std::string name, state, status, reason;
  uint32_t version = 0;
  bool keyMatch = false;
  std::optional<bool> fingerprintMatch;  // absent: no TXT fingerprint
  bool usable = false;
};

std::string hostName() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "localhost";
  return buf;
}

uint32_t gib(uint64_t bytes) {
  uint64_t g = uint64_t(std::llround(double(bytes) / double(uint64_t(1) << 30)));
  return uint32_t(g == 0 && bytes > 0 ? 1 : g);
}

void decide(Row& r, const std::string& ourFingerprint) {
  const NodeProbe& p = r.probe;
  r.name = !p.name.empty() ? p.name
           : r.advert        ? r.advert->name
           : r.entry.record  ? r.entry.record->instanceName
                             : "";
  r.version = p.protocolVersion != 0 ? p.protocolVersion : r.advert ? r.advert->protocolVersion : 0;
  r.state = !p.state.empty() ? p.state : r.advert ? r.advert->state : "";
  if (r.advert && !r.advert->keyFingerprint.empty()) {
    r.fingerprintMatch = r.advert->keyFingerprint == ourFingerprint;
  }
  r.keyMatch = p.proofOk && r.fingerprintMatch.value_or(true);
  r.status = p.status;
  r.reason = p.reason;
  // An advert that says another version or key explains an unreachable node too.
  if (r.status == "unreachable" && r.advert && r.advert->protocolVersion != kProtocolVersion) {
    r.status = "incompatible";
    r.reason = "speaks protocol " + std::to_string(r.advert->protocolVersion) + ", we speak " +
               std::to_string(kProtocolVersion) + " (and " + p.reason + ")";
  } else if (r.status == "ok" && r.fingerprintMatch == false) {
    r.status = "wrong_key";
    r.reason = "wrong key: its advertised key fingerprint " + r.advert->keyFingerprint +
               " differs from ours " + ourFingerprint;
  }
  r.usable = r.status == "ok";
}

nlohmann::json devicesJson(const Row& r) {
  nlohmann::json out = nlohmann::json::array();
  if (!r.probe.devices.empty()) {
    for (const DeviceInfo& d : r.probe.devices) {
      nlohmann::json j{{"kind", d.kind}, {"name", d.name}, {"memoryBytes", d.memoryBytes},
                       {"memoryGiB", gib(d.memoryBytes)}};
      if (d.kind == "cpu") j["threads"] = d.threads;
      if (d.kind == "cuda") j["compute"] = std::to_string(d.computeMajor) + "." +
                                           std::to_string(d.computeMinor);
      out.push_back(j);
    }
    return out;
  }
  for (const DeviceSummary& d : r.txtDevices) {
    nlohmann::json j{{"kind", d.kind}, {"name", d.model}, {"memoryGiB", d.memoryGiB}};
    if (d.threads != 0) j["threads"] = d.threads;
    if (!d.compute.empty()) j["compute"] = d.compute;
    out.push_back(j);
  }
  return out;
}

std::string devicesText(const Row& r) {
  std::string out;
  for (const auto& d : devicesJson(r)) {
    out += (out.empty() ? "" : ", ") + d["kind"].get<std::string>() + " " +
           d["name"].get<std::string>() + " " + std::to_string(d["memoryGiB"].get<uint32_t>()) + "G";
    if (d.contains("threads")) out += " " + std::to_string(d["threads"].get<uint32_t>()) + "t";
    if (d.contains("compute")) out += " sm" + d["compute"].get<std::string>();
  }
  return out.empty() ? "-" : out;
}

void printJson(const std::vector<Row>& rows) {
  nlohmann::json out = nlohmann::json::array();
  for (const Row& r : rows) {
    nlohmann::json j;
    j["name"] = r.name;
    j["address"] = r.entry.address;
    j["source"] = r.entry.isStatic && r.entry.discovered ? "mdns+static"
                  : r.entry.isStatic                     ? "static"
                                                         : "mdns";
    j["instance"] = r.entry.record ? r.entry.record->instanceName : "";
    j["nodeId"] = !r.probe.nodeId.empty() ? r.probe.nodeId : r.advert ? r.advert->nodeId : "";
    j["version"] = r.version;
    j["ourVersion"] = kProtocolVersion;
    j["state"] = r.state;
    j["devices"] = devicesJson(r);
    j["keyFingerprint"] = r.advert ? r.advert->keyFingerprint : "";
    j["fingerprintMatch"] =
        r.fingerprintMatch ? nlohmann::json(*r.fingerprintMatch) : nlohmann::json(nullptr);
    j["proofOk"] = r.probe.proofOk;
    j["keyMatch"] = r.keyMatch;
    j["usable"] = r.usable;
    j["status"] = r.status;
    j["reason"] = r.reason;
    j["discoveredMs"] = r.discoveredMs >= 0 ? nlohmann::json(r.discoveredMs) : nlohmann::json(nullptr);
    j["probeMs"] = r.probe.milliseconds;
    out.push_back(j);
  }
  // Node names come from the network: invalid UTF-8 is replaced, not thrown.
  const std::string text = out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
  std::printf("%s\n", text.c_str());
}

void printTable(const std::vector<Row>& rows, bool mdns) {
  if (rows.empty()) {
    std::printf("no nodes found%s\n", mdns ? "" : " (no mDNS; give --peer HOST:PORT)");
    return;
  }
  std::printf("%-24s %-22s %-4s %-8s %-5s %s\n", "NAME", "ADDRESS", "VER", "STATE", "KEY",
              "DEVICES");
  for (const Row& r : rows) {
    // Names and states come from the network: printed without control characters.
    std::printf("%-24s %-22s %-4s %-8s %-5s %s\n",
                r.name.empty() ? "?" : printable(r.name).c_str(),
                printable(r.entry.address).c_str(),
                r.version ? std::to_string(r.version).c_str() : "?",
                r.state.empty() ? "?" : printable(r.state).c_str(), r.keyMatch ? "ok" : "NO",
                printable(devicesText(r)).c_str());
    if (!r.usable) std::printf("  ! not usable: %s\n", printable(r.reason).c_str());
  }
}

void runNodes(const NodesArgs& args) {
  for (const std::string& peer : args.peers) {
    if (auto parsed = parseTcpAddress(peer); !parsed.ok()) failUsage(parsed.error().message);
  }
  ClusterKey key;
  std::string fingerprint;
  auto keyPath = clusterKeyPath(args.keyFile);
  if (!keyPath.ok()) fail(keyPath.error().message, 1);
  if (auto loaded = loadClusterKey(*keyPath, /*createIfMissing=*/false); loaded.ok()) {
    key = std::move(*loaded);
    fingerprint = keyFingerprint(key);
  } else {
    PL_LOG_WARN("%s: no node can be used without the cluster key", loaded.error().message.c_str());
  }

  UvKjLoop loop;
  PeerDirectory directory;
  for (const std::string& peer : args.peers) directory.addStatic(peer);
  std::map<std::string, double> firstSeenMs;  // by address
  const auto start = std::chrono::steady_clock::now();
  std::unique_ptr<Discovery> discovery =
      args.noMdns ? makeNullDiscovery() : makeDiscovery(loop.uv());
  const bool mdns = discovery->available();
  (void)discovery->browse([&](PeerEvent event, const DiscoveredPeer& peer) {
    PL_LOG_DEBUG("mDNS: %s %s at %s", peerEventName(event), peer.instanceName.c_str(),
                 peer.address().c_str());
    directory.apply(event, peer);
    if (event != PeerEvent::kRemoved) {
      firstSeenMs.emplace(PeerDirectory::normalize(peer.address()),
                          std::chrono::duration<double, std::milli>(
                              std::chrono::steady_clock::now() - start)
                              .count());
    }
  });
  if (mdns && args.waitSeconds > 0) {
    loop.timer()
        .afterDelay(uint64_t(args.waitSeconds * 1000) * kj::MILLISECONDS)
        .wait(loop.waitScope());
  }
  std::vector<PeerEntry> entries = directory.entries();

  const std::string primaryName = "peerlight nodes@" + hostName();
  kj::Vector<kj::Promise<NodeProbe>> probes;
  for (const PeerEntry& e : entries) {
    probes.add(probeNode(loop, key, e.address, primaryName,
                         std::chrono::milliseconds(args.timeoutMs)));
  }
  kj::Array<NodeProbe> results = kj::joinPromises(probes.releaseAsArray()).wait(loop.waitScope());
  discovery.reset();

  std::vector<Row> rows;
  for (size_t i = 0; i < entries.size(); ++i) {
    Row r;
    r.entry = entries[i];
    r.probe = kj::mv(results[i]);
    if (r.entry.record) {
      auto advert = parseAdvert(r.entry.record->txt, &r.txtDevices);
      if (advert.ok()) r.advert = *advert;
    }
    if (auto it = firstSeenMs.find(r.entry.address); it != firstSeenMs.end()) {
      r.discoveredMs = it->second;
    }
    decide(r, fingerprint);
    rows.push_back(std::move(r));
  }
  if (args.json) {
    printJson(rows);
  } else {
    printTable(rows, mdns);
  }
  std::fflush(stdout);
}

}  // namespace

void addNodesCommand(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "nodes", "List the Render Nodes found by mDNS and --peer, and whether they can be used");
  auto args = std::make_shared<NodesArgs>();
  cmd->add_flag("--json", args->json, "Print one JSON array");
  cmd->add_option("--wait", args->waitSeconds, "Seconds to browse mDNS before probing")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 600.0));
  cmd->add_option("--key-file", args->keyFile,
                  "Cluster key file (default: $PEERLIGHT_KEY_FILE, else "
                  "~/.config/peerlight/cluster.key; never created here)");
  cmd->add_option("--peer", args->peers, "A node's address HOST:PORT (repeatable), besides mDNS");
  cmd->add_option("--timeout-ms", args->timeoutMs, "Per-node connect and answer timeout")
      ->capture_default_str()
      ->check(CLI::Range(1u, 600000u));
  cmd->add_flag("--no-mdns", args->noMdns, "Only the --peer entries; do not browse mDNS");
  cmd->callback([args] { runNodes(*args); });
}

}  // namespace pl::app
