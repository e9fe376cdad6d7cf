// apps/peerlight/node_devices.h: how the node daemon and its workers number and open devices.
// Pure logic with an injected opener (fake GPUs on a machine without one); no processes.

#include "apps/peerlight/node_devices.h"

#include <gtest/gtest.h>

#include <map>
#include <thread>

#include "core/render/cpu_device.h"

namespace pl::app {
namespace {

DeviceInfo gpu(int ordinal, const std::string& name) {
  DeviceInfo info;
  info.kind = "cuda";
  info.name = name;
  info.ordinal = ordinal;
  info.memoryBytes = uint64_t(80) << 30;
  info.computeMajor = 9;
  return info;
}

// A CPU and three GPUs, as enumerateNodeDevices() would list them.
std::vector<DeviceInfo> machine() {
  DeviceInfo cpu;
  cpu.kind = "cpu";
  cpu.name = "Test CPU";
  cpu.threads = 4;
  return {cpu, gpu(0, "GPU A"), gpu(1, "GPU B"), gpu(2, "GPU C")};
}

// A device that renders nothing but says it was opened (what a real one would be).
class FakeOpenDevice final : public Device {
 public:
  explicit FakeOpenDevice(DeviceInfo info) : info_(std::move(info)) {}
  DeviceInfo info() const override { return info_; }
  Status load(std::shared_ptr<const RenderData>) override { return Status(); }

 protected:
  Result<TileResult> renderUnit(const WorkUnit&, const RenderStop&) override {
    return TileResult{};
  }

 private:
  DeviceInfo info_;
};

// Records which indices were opened; fails the ones in `broken` with "driver says no".
struct FakeOpener {
  std::vector<uint32_t> opened;
  std::vector<uint32_t> broken;
  DeviceOpener opener() {
    return [this](uint32_t index, const DeviceInfo& info) -> Result<std::unique_ptr<Device>> {
      opened.push_back(index);
      for (uint32_t b : broken) {
        if (b == index) return Error{"cudaErrorDevicesUnavailable: driver says no"};
      }
      return std::unique_ptr<Device>(std::make_unique<FakeOpenDevice>(info));
    };
  }
};

bool isPlaceholder(const Device& d) { return dynamic_cast<const UnopenedDevice*>(&d) != nullptr; }

void expectSameInfo(const DeviceInfo& a, const DeviceInfo& b) {
  EXPECT_EQ(a.kind, b.kind);
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.ordinal, b.ordinal);
  EXPECT_EQ(a.memoryBytes, b.memoryBytes);
  EXPECT_EQ(a.threads, b.threads);
  EXPECT_EQ(a.computeMajor, b.computeMajor);
}

TEST(ParseDeviceIndices, AcceptsListsInRange) {
  auto one = parseDeviceIndices("0", 1);
  ASSERT_TRUE(one.ok()) << one.error().message;
  EXPECT_EQ(*one, std::vector<uint32_t>{0});
  auto several = parseDeviceIndices("3,1, 2", 4);
  ASSERT_TRUE(several.ok()) << several.error().message;
  EXPECT_EQ(*several, (std::vector<uint32_t>{3, 1, 2}));
}

TEST(ParseDeviceIndices, RejectsBadListsWithAClearMessage) {
  struct Case {
    std::string list;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"", "no device index"},
      {"1,", "an empty entry"},
      {",1", "an empty entry"},
      {"1,,2", "an empty entry"},
      {"x", "\"x\" is not a device index"},
      {"-1", "\"-1\" is not a device index"},
      {"1.0", "\"1.0\" is not a device index"},
      {"0x1", "\"0x1\" is not a device index"},
      {"+1", "\"+1\" is not a device index"},
      {"4", "device 4 does not exist (this machine has 4 devices, 0..3)"},
      {"99999999999999999999999", "does not exist"},
      {"1,2,1", "device 1 is listed twice"},
  };
  for (const Case& c : cases) {
    auto parsed = parseDeviceIndices(c.list, 4);
    ASSERT_FALSE(parsed.ok()) << "\"" << c.list << "\" was accepted";
    EXPECT_NE(parsed.error().message.find("--devices \"" + c.list + "\""), std::string::npos)
        << parsed.error().message;
    EXPECT_NE(parsed.error().message.find(c.says), std::string::npos)
        << "\"" << c.list << "\": " << parsed.error().message;
  }
  EXPECT_FALSE(parseDeviceIndices("0", 0).ok());
}

// The daemon: every index a placeholder with the real info, nothing opened, load and render
// fail naming the device.
TEST(AssembleNodeDevices, DaemonOpensNothingAndKeepsEveryInfo) {
  const auto infos = machine();
  FakeOpener fake;
  auto devices = assembleNodeDevices(infos, {}, fake.opener());
  EXPECT_TRUE(fake.opened.empty());
  ASSERT_EQ(devices.size(), infos.size());
  for (size_t i = 0; i < infos.size(); ++i) {
    ASSERT_TRUE(isPlaceholder(*devices[i])) << i;
    expectSameInfo(devices[i]->info(), infos[i]);
    EXPECT_FALSE(devices[i]->failed()) << "a placeholder is not a broken device";
  }
  Status loaded = devices[2]->load(std::make_shared<const RenderData>());
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.error().message.find("cuda:1 (GPU B)"), std::string::npos)
      << loaded.error().message;
  EXPECT_NE(loaded.error().message.find("not opened in this process"), std::string::npos)
      << loaded.error().message;
  WorkUnit unit;
  unit.tile = {0, 0, 8, 8};
  unit.sampleEnd = 1;
  unit.totalSamples = 1;
  auto rendered = devices[0]->render(unit);
  ASSERT_FALSE(rendered.ok());
  EXPECT_NE(rendered.error().message.find("cpu"), std::string::npos) << rendered.error().message;
}

// A worker for devices 2,0: exactly those opened, each at its own index; the rest placeholders.
TEST(AssembleNodeDevices, WorkerOpensOnlyItsLeaseAtTheDaemonsIndices) {
  const auto infos = machine();
  FakeOpener fake;
  auto indices = parseDeviceIndices("2,0", infos.size());
  ASSERT_TRUE(indices.ok());
  auto devices = assembleNodeDevices(infos, *indices, fake.opener());
  EXPECT_EQ(fake.opened, (std::vector<uint32_t>{2, 0}));
  ASSERT_EQ(devices.size(), infos.size());
  for (size_t i = 0; i < infos.size(); ++i) {
    expectSameInfo(devices[i]->info(), infos[i]);
    EXPECT_EQ(isPlaceholder(*devices[i]), i != 0 && i != 2) << i;
    EXPECT_FALSE(devices[i]->failed()) << i;
  }
}

// A leased GPU that does not open stays at its index as a failed device naming it; the
// devices after it keep their indices.
TEST(AssembleNodeDevices, LeasedDeviceThatFailsToOpenIsFailedNotShifted) {
  const auto infos = machine();
  FakeOpener fake;
  fake.broken = {1};
  auto devices = assembleNodeDevices(infos, {1, 3}, fake.opener());
  ASSERT_EQ(devices.size(), infos.size());
  for (size_t i = 0; i < infos.size(); ++i) expectSameInfo(devices[i]->info(), infos[i]);
  ASSERT_TRUE(isPlaceholder(*devices[1]));
  EXPECT_TRUE(devices[1]->failed());
  Status loaded = devices[1]->load(std::make_shared<const RenderData>());
  ASSERT_FALSE(loaded.ok());
  const std::string& message = loaded.error().message;
  EXPECT_NE(message.find("cuda:0 (GPU A)"), std::string::npos) << message;
  EXPECT_NE(message.find("could not be opened"), std::string::npos) << message;
  EXPECT_NE(message.find("driver says no"), std::string::npos) << message;
  EXPECT_FALSE(isPlaceholder(*devices[3]));
  EXPECT_EQ(devices[3]->info().name, "GPU C");
  EXPECT_FALSE(devices[3]->failed());
}

// This machine (no GPU here; one in a GPU build): the numbering starts with the CPU and is the
// same on every call, and the CPU's info is what a real CpuDevice reports.
TEST(EnumerateNodeDevices, CpuFirstStableAndAsCpuDeviceReportsIt) {
  auto a = enumerateNodeDevices(3), b = enumerateNodeDevices(3);
  ASSERT_FALSE(a.empty());
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) expectSameInfo(a[i], b[i]);
  expectSameInfo(a[0], CpuDevice(3).info());
  expectSameInfo(enumerateNodeDevices(0)[0], CpuDevice(0).info());
  for (size_t i = 1; i < a.size(); ++i) {
    EXPECT_EQ(a[i].kind, "cuda");
    EXPECT_EQ(a[i].ordinal, a[i - 1].kind == "cuda" ? a[i - 1].ordinal + 1 : 0);
  }
}

// The real path a worker takes, with the CPU leased: it renders; a bad list fails.
TEST(OpenLeasedNodeDevices, OpensTheCpuForLeaseZeroAndRejectsBadLists) {
  auto devices = openLeasedNodeDevices(1, "0");
  ASSERT_TRUE(devices.ok()) << devices.error().message;
  ASSERT_EQ(devices->size(), enumerateNodeDevices(1).size());
  EXPECT_FALSE(isPlaceholder(*(*devices)[0]));
  EXPECT_NE(dynamic_cast<CpuDevice*>((*devices)[0].get()), nullptr);
  for (size_t i = 1; i < devices->size(); ++i) EXPECT_TRUE(isPlaceholder(*(*devices)[i]));
  auto bad = openLeasedNodeDevices(1, "0,0");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("listed twice"), std::string::npos);
}

}  // namespace
}  // namespace pl::app
