#pragma once
// Finding and opening the CUDA GPUs of this machine. Only this header and cuda_device.h are
// meant for code outside gpu/; neither includes a CUDA header, so callers need no CUDA
// include paths.
//
// The CUDA runtime is linked statically, so a binary built with CUDA runs on machines without
// a GPU or without the NVIDIA driver: there it simply finds zero GPUs.

#include <memory>
#include <vector>

#include "core/render/device.h"
#include "core/util/status.h"

namespace pl {

// One DeviceInfo per visible GPU (kind "cuda", name, memoryBytes, computeMajor/Minor,
// ordinal). No GPU or no usable driver: an empty list and one Info log line saying why.
// Never fails.
std::vector<DeviceInfo> enumerateCudaDevices();

// Opens GPU `ordinal` (0-based, as listed by enumerateCudaDevices) as a render Device.
// Fails with a message naming the GPU when it does not exist or cannot be initialized.
Result<std::unique_ptr<Device>> makeCudaDevice(int ordinal);

}  // namespace pl
