#include "transport/control_convert.h"

#include <cmath>

namespace pl {

namespace {

std::string text(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

void toControl(const DeviceInfo& in, ctl::DeviceInfo::Builder out) {
  out.setKind(in.kind);
  out.setName(in.name);
  out.setMemoryBytes(in.memoryBytes);
  out.setThreads(in.threads);
  out.setComputeMajor(in.computeMajor);
  out.setComputeMinor(in.computeMinor);
  out.setOrdinal(in.ordinal);
}

DeviceInfo fromControl(ctl::DeviceInfo::Reader in) {
  DeviceInfo out;
  out.kind = text(in.getKind());
  out.name = text(in.getName());
  out.memoryBytes = in.getMemoryBytes();
  out.threads = in.getThreads();
  out.computeMajor = in.getComputeMajor();
  out.computeMinor = in.getComputeMinor();
  out.ordinal = in.getOrdinal();
  return out;
}

}  // namespace

bool validControlToken(const std::string& token) {
  if (token.empty() || token.size() > kMaxControlTokenBytes) return false;
  for (char c : token) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')))
      return false;
  }
  return true;
}

void toControl(const RenderJobParams& p, ctl::RenderParams::Builder out) {
  out.setWidth(p.width);
  out.setHeight(p.height);
  out.setSpp(p.spp);
  auto peers = out.initPeers(unsigned(p.peers.size()));
  for (size_t i = 0; i < p.peers.size(); ++i) peers.set(unsigned(i), p.peers[i]);
  out.setLocalOnly(p.localOnly);
  out.setNoLocal(p.noLocal);
  out.setNoOwnerPreempt(p.noOwnerPreempt);
  out.setNoMdns(p.noMdns);
  out.setPrimaryName(p.primaryName);
  out.setTimeLimitMs(p.timeLimitMs);
  out.setRegionX(p.region.x);
  out.setRegionY(p.region.y);
  out.setRegionWidth(p.region.width);
  out.setRegionHeight(p.region.height);
  out.setNoiseThreshold(p.noiseThreshold);
}

Result<RenderJobParams> fromControl(ctl::RenderParams::Reader in) {
  RenderJobParams p;
  p.width = in.getWidth();
  p.height = in.getHeight();
  p.spp = in.getSpp();
  auto peers = in.getPeers();
  if (peers.size() > kMaxRenderJobPeers)
    return Error{"render job: " + std::to_string(peers.size()) + " peers (at most " +
                 std::to_string(kMaxRenderJobPeers) + ")"};
  p.peers.reserve(peers.size());
  for (capnp::Text::Reader peer : peers) {
    if (peer.size() == 0 || peer.size() > kMaxRenderJobNameBytes)
      return Error{"render job: a peer address of " + std::to_string(peer.size()) +
                   " bytes (1 to " + std::to_string(kMaxRenderJobNameBytes) + ")"};
    p.peers.push_back(text(peer));
  }
  p.localOnly = in.getLocalOnly();
  p.noLocal = in.getNoLocal();
  p.noOwnerPreempt = in.getNoOwnerPreempt();
  p.noMdns = in.getNoMdns();
  if (in.getPrimaryName().size() > kMaxRenderJobNameBytes)
    return Error{"render job: primary name longer than " +
                 std::to_string(kMaxRenderJobNameBytes) + " bytes"};
  p.primaryName = text(in.getPrimaryName());
  if (p.primaryName.empty()) p.primaryName = "local";
  p.timeLimitMs = in.getTimeLimitMs();
  p.region = Rect{in.getRegionX(), in.getRegionY(), in.getRegionWidth(), in.getRegionHeight()};
  p.noiseThreshold = in.getNoiseThreshold();
  if (!std::isfinite(p.noiseThreshold) || p.noiseThreshold < 0)
    return Error{"render job: noise threshold " + std::to_string(p.noiseThreshold) +
                 " (0, or finite and positive)"};
  return p;
}

void toControl(const ClusterRenderStats& s, ctl::RenderStats::Builder out) {
  out.setSeconds(s.seconds);
  out.setSamples(s.samples);
  out.setRaysTraced(s.raysTraced);
  auto scheduler = out.initScheduler();
  scheduler.setIssuedUnits(s.scheduler.issuedUnits);
  scheduler.setDuplicateUnits(s.scheduler.duplicateUnits);
  scheduler.setAcceptedUnits(s.scheduler.acceptedUnits);
  scheduler.setRejectedResults(s.scheduler.rejectedResults);
  scheduler.setRequeuedUnits(s.scheduler.requeuedUnits);
  scheduler.setRetiredTiles(s.scheduler.retiredTiles);
  auto local = out.initLocal(unsigned(s.local.size()));
  for (size_t i = 0; i < s.local.size(); ++i) {
    const LocalDeviceRenderStats& d = s.local[i];
    auto o = local[unsigned(i)];
    toControl(d.info, o.initInfo());
    o.setWorkUnits(d.workUnits);
    o.setSamples(d.samples);
    o.setRaysTraced(d.raysTraced);
    o.setDuplicateResults(d.duplicateResults);
    o.setError(d.error);
  }
  auto nodes = out.initNodes(unsigned(s.nodes.size()));
  for (size_t i = 0; i < s.nodes.size(); ++i) {
    const NodeRenderStats& n = s.nodes[i];
    auto o = nodes[unsigned(i)];
    o.setAddress(n.address);
    o.setName(n.name);
    o.setNodeId(n.nodeId);
    o.setDevices(n.devices);
    o.setWorkUnits(n.workUnits);
    o.setSamples(n.samples);
    o.setRaysTraced(n.raysTraced);
    o.setDuplicateResults(n.duplicateResults);
    o.setRenderDataBytesRaw(n.renderDataBytesRaw);
    o.setRenderDataBytesSent(n.renderDataBytesSent);
    o.setChunksSent(n.chunksSent);
    o.setChunksTotal(n.chunksTotal);
    o.setManifestBytes(n.manifestBytes);
    o.setResultBytes(n.resultBytes);
    o.setResultBytesRaw(n.resultBytesRaw);
    o.setSecondsToFirstResult(n.secondsToFirstResult);
    o.setSecondsToDataLoaded(n.secondsToDataLoaded);
    o.setUploadSeconds(n.uploadSeconds);
    o.setConnections(n.connections);
    o.setLosses(n.losses);
    o.setState(n.state);
    o.setError(n.error);
  }
  out.setRenderDataChunks(s.renderDataChunks);
  out.setRenderDataRawBytes(s.renderDataRawBytes);
  out.setRenderDataEncodedBytes(s.renderDataEncodedBytes);
  out.setEncodeSeconds(s.encodeSeconds);
}

ClusterRenderStats fromControl(ctl::RenderStats::Reader in) {
  ClusterRenderStats s;
  s.seconds = in.getSeconds();
  s.samples = in.getSamples();
  s.raysTraced = in.getRaysTraced();
  auto scheduler = in.getScheduler();
  s.scheduler.issuedUnits = scheduler.getIssuedUnits();
  s.scheduler.duplicateUnits = scheduler.getDuplicateUnits();
  s.scheduler.acceptedUnits = scheduler.getAcceptedUnits();
  s.scheduler.rejectedResults = scheduler.getRejectedResults();
  s.scheduler.requeuedUnits = scheduler.getRequeuedUnits();
  s.scheduler.retiredTiles = scheduler.getRetiredTiles();
  for (auto d : in.getLocal()) {
    LocalDeviceRenderStats o;
    o.info = fromControl(d.getInfo());
    o.workUnits = d.getWorkUnits();
    o.samples = d.getSamples();
    o.raysTraced = d.getRaysTraced();
    o.duplicateResults = d.getDuplicateResults();
    o.error = text(d.getError());
    s.local.push_back(std::move(o));
  }
  for (auto n : in.getNodes()) {
    NodeRenderStats o;
    o.address = text(n.getAddress());
    o.name = text(n.getName());
    o.nodeId = text(n.getNodeId());
    o.devices = n.getDevices();
    o.workUnits = n.getWorkUnits();
    o.samples = n.getSamples();
    o.raysTraced = n.getRaysTraced();
    o.duplicateResults = n.getDuplicateResults();
    o.renderDataBytesRaw = n.getRenderDataBytesRaw();
    o.renderDataBytesSent = n.getRenderDataBytesSent();
    o.chunksSent = n.getChunksSent();
    o.chunksTotal = n.getChunksTotal();
    o.manifestBytes = n.getManifestBytes();
    o.resultBytes = n.getResultBytes();
    o.resultBytesRaw = n.getResultBytesRaw();
    o.secondsToFirstResult = n.getSecondsToFirstResult();
    o.secondsToDataLoaded = n.getSecondsToDataLoaded();
    o.uploadSeconds = n.getUploadSeconds();
    o.connections = n.getConnections();
    o.losses = n.getLosses();
    o.state = text(n.getState());
    o.error = text(n.getError());
    s.nodes.push_back(std::move(o));
  }
  s.renderDataChunks = in.getRenderDataChunks();
  s.renderDataRawBytes = in.getRenderDataRawBytes();
  s.renderDataEncodedBytes = in.getRenderDataEncodedBytes();
  s.encodeSeconds = in.getEncodeSeconds();
  return s;
}

const char* outcomeName(ctl::Outcome outcome) {
  switch (outcome) {
    case ctl::Outcome::OK: return "ok";
    case ctl::Outcome::BUSY: return "busy";
    case ctl::Outcome::SHUTTING_DOWN: return "shuttingDown";
    case ctl::Outcome::BAD_PARAMS: return "badParams";
    case ctl::Outcome::BAD_DATA: return "badData";
    case ctl::Outcome::TOO_LARGE: return "tooLarge";
    case ctl::Outcome::CANCELLED: return "cancelled";
    case ctl::Outcome::FAILED: return "failed";
    case ctl::Outcome::PASSED: return "passed";
  }
  return "unknown";
}

}  // namespace pl
