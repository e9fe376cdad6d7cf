// Pure logic of discovery: the TXT advert (node_advert.h) and the peer directory
// (peer_directory.h). No daemon, no network.

#include <gtest/gtest.h>

#include "discovery/node_advert.h"
#include "discovery/peer_directory.h"

namespace pl {
namespace {

DeviceInfo cpu(const std::string& model, uint64_t gib, uint32_t threads) {
  DeviceInfo d;
  d.kind = "cpu";
  d.name = model;
  d.memoryBytes = gib << 30;
  d.threads = threads;
  return d;
}

DeviceInfo gpu(const std::string& model, uint64_t gib, int major, int minor) {
  DeviceInfo d;
  d.kind = "cuda";
  d.name = model;
  d.memoryBytes = gib << 30;
  d.computeMajor = major;
  d.computeMinor = minor;
  return d;
}

TEST(NodeAdvertTest, CompactDeviceList) {
  std::string text = encodeDeviceList({cpu("AMD EPYC", 24, 2), gpu("NVIDIA H100", 80, 9, 0)}, 251);
  EXPECT_EQ(text, "cpu:AMD EPYC:24G:2t;cuda:NVIDIA H100:80G:9.0");
  auto back = decodeDeviceList(text);
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].kind, "cpu");
  EXPECT_EQ(back[0].model, "AMD EPYC");
  EXPECT_EQ(back[0].memoryGiB, 24u);
  EXPECT_EQ(back[0].threads, 2u);
  EXPECT_EQ(back[1].kind, "cuda");
  EXPECT_EQ(back[1].compute, "9.0");
  EXPECT_EQ(back[1].memoryGiB, 80u);
}

TEST(NodeAdvertTest, SeparatorsInModelNamesDoNotBreakTheList) {
  std::string text = encodeDeviceList({cpu("Weird: CPU; model", 1, 4)}, 251);
  EXPECT_EQ(text, "cpu:Weird CPU model:1G:4t");
  EXPECT_EQ(decodeDeviceList(text).size(), 1u);
}

TEST(NodeAdvertTest, ManyDevicesStayWithinOneTxtString) {
  std::vector<DeviceInfo> devices{cpu("AMD Ryzen Threadripper PRO 7995WX 96-Cores", 512, 192)};
  for (int i = 0; i < 16; ++i) devices.push_back(gpu("NVIDIA RTX 6000 Ada Generation", 48, 8, 9));
  NodeAdvert advert{1, "0123456789abcdef0123456789abcdef", "render-farm-01", "fe659440191117a9",
                    "idle", devices};
  TxtRecords txt = advertTxt(advert);
  for (const auto& [k, v] : txt) EXPECT_LE(k.size() + 1 + v.size(), kMaxTxtStringBytes) << k;
  std::vector<DeviceSummary> back;
  auto parsed = parseAdvert(txt, &back);
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  uint32_t more = 0;
  std::string dev;
  for (const auto& [k, v] : txt) {
    if (k == "dev") dev = v;
  }
  back = decodeDeviceList(dev, &more);
  EXPECT_GE(back.size(), 2u);
  EXPECT_EQ(back.size() + more, devices.size()) << dev;  // the rest is counted in "+N"
}

TEST(NodeAdvertTest, TxtRoundTripNeverCarriesTheKey) {
  NodeAdvert advert{3, "abcdef0123", "studio-7", "00112233aabbccdd", "leased", {cpu("X", 8, 4)}};
  TxtRecords txt = advertTxt(advert);
  std::vector<DeviceSummary> devices;
  auto back = parseAdvert(txt, &devices);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->protocolVersion, 3u);
  EXPECT_EQ(back->nodeId, "abcdef0123");
  EXPECT_EQ(back->name, "studio-7");
  EXPECT_EQ(back->keyFingerprint, "00112233aabbccdd");
  EXPECT_EQ(back->state, "leased");
  ASSERT_EQ(devices.size(), 1u);
  std::vector<std::string> keys;
  for (const auto& [k, v] : txt) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"v", "id", "name", "key", "state", "dev", "kernel"}));
  EXPECT_EQ(back->renderKernel, renderKernelId());
  EXPECT_EQ(parseAdvert({{"v", "3"}, {"id", "x"}})->renderKernel, "") << "an older node's";

  EXPECT_FALSE(parseAdvert({{"id", "x"}}).ok()) << "no version";
  EXPECT_FALSE(parseAdvert({{"v", "one"}, {"id", "x"}}).ok()) << "version not a number";
  EXPECT_FALSE(parseAdvert({{"v", "1"}}).ok()) << "no id";
}

TEST(NodeAdvertTest, InstanceNamesAreBoundedAndCarryTheIdPrefix) {
  EXPECT_EQ(advertInstanceName("vm", "a004f06bca475415"), "vm [a004f06b]");
  std::string longName(100, 'n');
  EXPECT_LE(advertInstanceName(longName, "a004f06bca475415").size(), 63u);
}

DiscoveredPeer peer(const std::string& instance, const std::string& host, uint16_t port,
                    const std::string& id, const std::string& state = "idle") {
  DiscoveredPeer p;
  p.instanceName = instance;
  p.host = host;
  p.port = port;
  p.txt = {{"v", "1"}, {"id", id}, {"state", state}};
  return p;
}

TEST(PeerDirectoryTest, MergesStaticAndDiscoveredByAddress) {
  PeerDirectory dir;
  dir.addStatic("localhost:4000");
  dir.addStatic("10.0.0.9:4000");
  dir.addStatic("127.0.0.1:4000");  // same as localhost:4000
  EXPECT_TRUE(dir.apply(PeerEvent::kFound, peer("a [1]", "127.0.0.1", 4000, "1")));
  EXPECT_TRUE(dir.apply(PeerEvent::kFound, peer("b [2]", "10.0.0.5", 4001, "2")));
  auto entries = dir.entries();
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[0].address, "127.0.0.1:4000");
  EXPECT_TRUE(entries[0].isStatic);
  EXPECT_TRUE(entries[0].discovered);
  ASSERT_TRUE(entries[0].record);
  EXPECT_EQ(entries[0].record->instanceName, "a [1]");
  EXPECT_EQ(entries[1].address, "10.0.0.9:4000");
  EXPECT_FALSE(entries[1].discovered);
  EXPECT_EQ(entries[2].address, "10.0.0.5:4001");
  EXPECT_FALSE(entries[2].isStatic);

  // Removal: the static entry stays (without its record), the mDNS-only one goes.
  EXPECT_TRUE(dir.apply(PeerEvent::kRemoved, peer("a [1]", "127.0.0.1", 4000, "1")));
  EXPECT_TRUE(dir.apply(PeerEvent::kRemoved, peer("b [2]", "10.0.0.5", 4001, "2")));
  entries = dir.entries();
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_FALSE(entries[0].discovered);
  EXPECT_FALSE(entries[0].record);
}

TEST(PeerDirectoryTest, UpdatesAndOwnServiceAndIpv6) {
  PeerDirectory dir;
  dir.setIgnoreNodeId("self");
  EXPECT_FALSE(dir.apply(PeerEvent::kFound, peer("me [self]", "127.0.0.1", 1, "self")));
  EXPECT_EQ(dir.size(), 0u);
  EXPECT_TRUE(dir.apply(PeerEvent::kFound, peer("x", "fe80::1", 4000, "x")));
  EXPECT_FALSE(dir.apply(PeerEvent::kUpdated, peer("x", "fe80::1", 4000, "x")))
      << "nothing changed";
  EXPECT_TRUE(dir.apply(PeerEvent::kUpdated, peer("x", "fe80::1", 4000, "x", "leased")));
  auto entries = dir.entries();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].address, "[fe80::1]:4000");
  EXPECT_EQ(entries[0].record->txtValue("state"), "leased");
  EXPECT_EQ(entries[0].record->txtValue("missing"), "");
  EXPECT_FALSE(dir.apply(PeerEvent::kRemoved, peer("never-seen", "1.2.3.4", 1, "n")));
}

}  // namespace
}  // namespace pl
