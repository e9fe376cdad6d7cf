#include "core/render/work_unit.h"

namespace pl {

Status WorkUnit::validate(uint32_t imageWidth, uint32_t imageHeight) const {
  if (tile.width == 0 || tile.height == 0)
    return Error{"work unit " + describe() + ": empty tile"};
  if (tile.x >= imageWidth || tile.y >= imageHeight || tile.width > imageWidth - tile.x ||
      tile.height > imageHeight - tile.y)
    return Error{"work unit " + describe() + ": tile outside the " + std::to_string(imageWidth) +
                 "x" + std::to_string(imageHeight) + " image"};
  if (sampleBegin >= sampleEnd || sampleEnd > totalSamples)
    return Error{"work unit " + describe() + ": bad sample range"};
  return Status();
}

std::string WorkUnit::describe() const {
  return "tile " + std::to_string(tile.x) + "," + std::to_string(tile.y) + " " +
         std::to_string(tile.width) + "x" + std::to_string(tile.height) + " samples [" +
         std::to_string(sampleBegin) + "," + std::to_string(sampleEnd) + ") of " +
         std::to_string(totalSamples);
}

}  // namespace pl
