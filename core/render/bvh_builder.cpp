#include "core/render/bvh_builder.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "core/util/check.h"

namespace pl {

namespace {

using kernel::Vec3f;

constexpr uint32_t kMaxBins = 64;

struct Aabb {
  Vec3f lo{kernel::kInfinity, kernel::kInfinity, kernel::kInfinity};
  Vec3f hi{-kernel::kInfinity, -kernel::kInfinity, -kernel::kInfinity};

  void grow(Vec3f p) {
    lo = kernel::min(lo, p);
    hi = kernel::max(hi, p);
  }
  void grow(const Aabb& b) {
    lo = kernel::min(lo, b.lo);
    hi = kernel::max(hi, b.hi);
  }
  bool empty() const { return lo.x > hi.x; }
  float halfArea() const {
    if (empty()) return 0.0f;
    Vec3f d = hi - lo;
    return d.x * d.y + d.y * d.z + d.z * d.x;
  }
};

float axisOf(Vec3f v, int axis) { return axis == 0 ? v.x : (axis == 1 ? v.y : v.z); }

// Number of halvings that bring `count` primitives down to leaves of at most maxLeaf.
uint32_t halvingsNeeded(uint32_t count, uint32_t maxLeaf) {
  uint32_t n = 0;
  uint64_t capacity = maxLeaf;
  while (capacity < count) {
    capacity *= 2;
    ++n;
  }
  return n;
}

// A triangle during the build: its bounds and index. The builder partitions an array of
// these in place, so every pass over a node's range reads memory sequentially.
struct PrimRef {
  Vec3f lo;
  uint32_t index;
  Vec3f hi;
  uint32_t pad;
  Vec3f centroid() const { return (lo + hi) * 0.5f; }
};

struct Bin {
  Aabb bounds;
  uint32_t count = 0;
};

class Builder {
 public:
  // Over `triangles`, or only those whose indices `subset` lists (in that order).
  Builder(const std::vector<Vec3f>& positions, const std::vector<kernel::Triangle>& triangles,
          const BvhBuildOptions& options, const std::vector<uint32_t>* subset = nullptr)
      : options_(options), triangleCount_(subset ? subset->size() : triangles.size()) {
    PL_CHECK(options_.binCount >= 2 && options_.binCount <= kMaxBins);
    PL_CHECK(options_.maxLeafSize >= 1 && options_.maxLeafSize <= 255);
    PL_CHECK(triangles.size() < (size_t(1) << 32));
    refs_.reserve(triangleCount_);
    for (size_t k = 0; k < triangleCount_; ++k) {
      const size_t i = subset ? (*subset)[k] : k;
      PL_CHECK(i < triangles.size());
      const kernel::Triangle& t = triangles[i];
      PL_CHECK(t.v0 < positions.size() && t.v1 < positions.size() && t.v2 < positions.size());
      Vec3f p0 = positions[t.v0], p1 = positions[t.v1], p2 = positions[t.v2];
      if (isDegenerateTriangle(p0, p1, p2)) continue;
      PrimRef r;
      r.lo = kernel::min(p0, kernel::min(p1, p2));
      r.hi = kernel::max(p0, kernel::max(p1, p2));
      r.index = static_cast<uint32_t>(i);
      r.pad = 0;
      refs_.push_back(r);
    }
  }

  Bvh build() {
    Bvh bvh;
    uint32_t n = static_cast<uint32_t>(refs_.size());
    bvh.degenerateCount = static_cast<uint32_t>(triangleCount_ - n);
    bvh.nodes.reserve(n > 0 ? 2 * ((n + options_.maxLeafSize - 1) / options_.maxLeafSize) : 1);
    bvh.nodes.push_back({});
    out_ = &bvh;
    buildNode(0, 0, n, 0);
    out_ = nullptr;
    bvh.primIndices.resize(n);
    for (uint32_t i = 0; i < n; ++i) bvh.primIndices[i] = refs_[i].index;
    return bvh;
  }

 private:
  void makeLeaf(uint32_t nodeIndex, const Aabb& bounds, uint32_t begin, uint32_t end,
                uint32_t depth) {
    kernel::BvhNode& node = out_->nodes[nodeIndex];
    node.boundsMin = bounds.lo;
    node.boundsMax = bounds.hi;
    node.first = begin;
    node.count = end - begin;
    out_->depth = std::max(out_->depth, depth + 1);
    out_->leafCount += 1;
    out_->maxLeafSize = std::max(out_->maxLeafSize, end - begin);
  }

  // Builds the subtree over refs_[begin, end) into nodes[nodeIndex].
  void buildNode(uint32_t nodeIndex, uint32_t begin, uint32_t end, uint32_t depth) {
    PrimRef* refs = refs_.data();
    uint32_t count = end - begin;
    Aabb bounds, centroidBounds;
    for (uint32_t i = begin; i < end; ++i) {
      bounds.grow(refs[i].lo);
      bounds.grow(refs[i].hi);
      centroidBounds.grow(refs[i].centroid());
    }
    if (count <= 1) {
      makeLeaf(nodeIndex, bounds, begin, end, depth);
      return;
    }

    uint32_t mid = begin;
    // Close to the depth limit, fall back to median splits, which halve the count per level
    // and so always end in leaves of at most maxLeafSize before kBvhMaxDepth.
    bool balanced =
        depth + halvingsNeeded(count, options_.maxLeafSize) + 2 >= kernel::kBvhMaxDepth;
    Vec3f extent = centroidBounds.hi - centroidBounds.lo;
    bool splittable = extent.x > 0.0f || extent.y > 0.0f || extent.z > 0.0f;
    if (!balanced && splittable) {
      const uint32_t binCount = options_.binCount;
      // Bin all three axes in one pass. scale == 0 puts everything in bin 0 (flat axis).
      float scale[3];
      for (int axis = 0; axis < 3; ++axis) {
        float ext = axisOf(extent, axis);
        scale[axis] = ext > 0.0f ? float(binCount) * (1.0f - 1e-6f) / ext : 0.0f;
      }
      std::array<std::array<Bin, kMaxBins>, 3> bins{};
      for (uint32_t i = begin; i < end; ++i) {
        Vec3f c = refs[i].centroid();
        Aabb b{refs[i].lo, refs[i].hi};
        for (int axis = 0; axis < 3; ++axis) {
          Bin& bin = bins[axis][binIndex(axisOf(c, axis), axisOf(centroidBounds.lo, axis),
                                         scale[axis], binCount)];
          bin.bounds.grow(b);
          bin.count += 1;
        }
      }
      float bestCost = kernel::kInfinity;
      int bestAxis = -1;
      uint32_t bestBin = 0;
      float parentArea = bounds.halfArea();
      float invParentArea = parentArea > 0.0f ? 1.0f / parentArea : 0.0f;
      for (int axis = 0; axis < 3; ++axis) {
        if (scale[axis] == 0.0f) continue;
        // rightCost[b]: half area * count of bins (b, binCount).
        std::array<float, kMaxBins> rightCost{};
        Aabb acc;
        uint32_t accCount = 0;
        for (uint32_t b = binCount - 1; b > 0; --b) {
          acc.grow(bins[axis][b].bounds);
          accCount += bins[axis][b].count;
          rightCost[b - 1] = acc.halfArea() * float(accCount);
        }
        acc = Aabb();
        accCount = 0;
        for (uint32_t b = 0; b + 1 < binCount; ++b) {
          acc.grow(bins[axis][b].bounds);
          accCount += bins[axis][b].count;
          if (accCount == 0 || accCount == count) continue;
          float cost = options_.traversalCost +
                       (acc.halfArea() * float(accCount) + rightCost[b]) * invParentArea;
          if (cost < bestCost) {
            bestCost = cost;
            bestAxis = axis;
            bestBin = b;
          }
        }
      }
      if (bestAxis >= 0) {
        if (count <= options_.maxLeafSize && float(count) <= bestCost) {
          makeLeaf(nodeIndex, bounds, begin, end, depth);
          return;
        }
        float lo = axisOf(centroidBounds.lo, bestAxis);
        float s = scale[bestAxis];
        PrimRef* split = std::partition(refs + begin, refs + end, [&](const PrimRef& r) {
          return binIndex(axisOf(r.centroid(), bestAxis), lo, s, binCount) <= bestBin;
        });
        mid = static_cast<uint32_t>(split - refs);
      }
    }
    if (mid == begin || mid == end) {
      if (count <= options_.maxLeafSize) {
        makeLeaf(nodeIndex, bounds, begin, end, depth);
        return;
      }
      // Median split along the widest centroid axis (by position when all centroids
      // coincide). Ties are broken by triangle index, so the tree is deterministic.
      mid = begin + count / 2;
      int axis = extent.x >= extent.y ? (extent.x >= extent.z ? 0 : 2)
                                      : (extent.y >= extent.z ? 1 : 2);
      std::nth_element(refs + begin, refs + mid, refs + end,
                       [&](const PrimRef& a, const PrimRef& b) {
                         float ca = axisOf(a.centroid(), axis), cb = axisOf(b.centroid(), axis);
                         return ca < cb || (ca == cb && a.index < b.index);
                       });
    }

    uint32_t left = static_cast<uint32_t>(out_->nodes.size());
    out_->nodes.push_back({});
    out_->nodes.push_back({});
    kernel::BvhNode& node = out_->nodes[nodeIndex];
    node.boundsMin = bounds.lo;
    node.boundsMax = bounds.hi;
    node.first = left;
    node.count = 0;
    buildNode(left, begin, mid, depth + 1);
    buildNode(left + 1, mid, end, depth + 1);
  }

  static uint32_t binIndex(float c, float lo, float scale, uint32_t binCount) {
    float f = (c - lo) * scale;
    if (!(f > 0.0f)) return 0;
    uint32_t b = static_cast<uint32_t>(f);
    return b < binCount ? b : binCount - 1;
  }

  BvhBuildOptions options_;
  size_t triangleCount_;
  std::vector<PrimRef> refs_;  // non-degenerate triangles; partitioned during the build
  Bvh* out_ = nullptr;
};

}  // namespace

bool isDegenerateTriangle(kernel::Vec3f p0, kernel::Vec3f p1, kernel::Vec3f p2) {
  for (Vec3f p : {p0, p1, p2})
    if (!std::isfinite(p.x) || !std::isfinite(p.y) || !std::isfinite(p.z)) return true;
  Vec3f n = kernel::cross(p1 - p0, p2 - p0);
  return n.x == 0.0f && n.y == 0.0f && n.z == 0.0f;
}

Bvh buildBvh(const std::vector<kernel::Vec3f>& positions,
             const std::vector<kernel::Triangle>& triangles, const BvhBuildOptions& options) {
  return Builder(positions, triangles, options).build();
}

namespace {

// Joins parts (each a whole tree, none empty) under a top tree. With a static part, the root's
// children are the static tree and a tree over the dynamic parts, so the big static tree
// lies one level down whatever their number. The dynamic parts are split at the median of
// their centroids along the widest axis, ties by part order. Each part's root takes a slot of
// the top tree; its other nodes and its leaf entries are appended with their indices shifted.
class Joiner {
 public:
  Joiner(const Bvh* staticPart, std::vector<const Bvh*> dynamicParts)
      : parts_(std::move(dynamicParts)) {
    if (staticPart) parts_.insert(parts_.begin(), staticPart);
    staticFirst_ = staticPart != nullptr && parts_.size() > 1;
  }

  Bvh join() {
    out_.nodes.push_back({});
    std::vector<uint32_t> order(parts_.size());
    for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
    uint32_t* begin = order.data();
    uint32_t* end = order.data() + order.size();
    if (!staticFirst_) {
      place(0, begin, end, 0);
    } else {
      const uint32_t left = addChildren(0, begin, end);
      copyPart(left, *parts_[0], 1);
      place(left + 1, begin + 1, end, 1);
    }
    return std::move(out_);
  }

 private:
  static Aabb boundsOf(const Bvh& b) {
    Aabb a;
    a.grow(b.nodes[0].boundsMin);
    a.grow(b.nodes[0].boundsMax);
    return a;
  }

  void place(uint32_t slot, uint32_t* begin, uint32_t* end, uint32_t depth) {
    if (end - begin == 1) {
      copyPart(slot, *parts_[*begin], depth);
      return;
    }
    Aabb centroids;
    for (uint32_t* p = begin; p != end; ++p) {
      const Aabb b = boundsOf(*parts_[*p]);
      centroids.grow((b.lo + b.hi) * 0.5f);
    }
    const Vec3f extent = centroids.hi - centroids.lo;
    const int axis = extent.x >= extent.y ? (extent.x >= extent.z ? 0 : 2)
                                          : (extent.y >= extent.z ? 1 : 2);
    uint32_t* mid = begin + (end - begin) / 2;
    std::nth_element(begin, mid, end, [&](uint32_t a, uint32_t b) {
      const Aabb ba = boundsOf(*parts_[a]), bb = boundsOf(*parts_[b]);
      const float ca = axisOf(ba.lo + ba.hi, axis), cb = axisOf(bb.lo + bb.hi, axis);
      return ca < cb || (ca == cb && a < b);
    });
    const uint32_t left = addChildren(slot, begin, end);
    place(left, begin, mid, depth + 1);
    place(left + 1, mid, end, depth + 1);
  }

  // Makes `slot` an interior node over the parts [begin, end): its two children are appended;
  // returns the left one's index.
  uint32_t addChildren(uint32_t slot, const uint32_t* begin, const uint32_t* end) {
    Aabb bounds;
    for (const uint32_t* p = begin; p != end; ++p) bounds.grow(boundsOf(*parts_[*p]));
    const uint32_t left = static_cast<uint32_t>(out_.nodes.size());
    out_.nodes.push_back({});
    out_.nodes.push_back({});
    out_.nodes[slot] = {bounds.lo, left, bounds.hi, 0};
    return left;
  }

  void copyPart(uint32_t slot, const Bvh& part, uint32_t depth) {
    const uint32_t base = static_cast<uint32_t>(out_.nodes.size());
    const uint32_t primBase = static_cast<uint32_t>(out_.primIndices.size());
    out_.primIndices.insert(out_.primIndices.end(), part.primIndices.begin(),
                            part.primIndices.end());
    // The part's node j > 0 goes to base + j - 1; its root to the slot.
    auto shifted = [&](kernel::BvhNode n) {
      n.first = n.count == 0 ? base + n.first - 1 : primBase + n.first;
      return n;
    };
    out_.nodes[slot] = shifted(part.nodes[0]);
    for (size_t j = 1; j < part.nodes.size(); ++j) out_.nodes.push_back(shifted(part.nodes[j]));
    out_.depth = std::max(out_.depth, depth + part.depth);
    out_.leafCount += part.leafCount;
    out_.maxLeafSize = std::max(out_.maxLeafSize, part.maxLeafSize);
  }

  std::vector<const Bvh*> parts_;  // the static part first, when there is one
  bool staticFirst_ = false;
  Bvh out_;
};

Hash128 staticKey(const RenderData& data, const std::vector<kernel::MeshRange>& meshes,
                  const BvhBuildOptions& options) {
  std::vector<Hash128> parts;
  const float settings[3] = {float(options.binCount), float(options.maxLeafSize),
                             options.traversalCost};
  parts.push_back(hash128(settings, sizeof(settings)));
  for (const kernel::MeshRange& m : meshes) {
    if (m.flags & kernel::kMeshDynamic) continue;
    const uint32_t range[4] = {m.firstTriangle, m.triangleCount, m.firstVertex, m.vertexCount};
    parts.push_back(hash128(range, sizeof(range)));
    parts.push_back(hash128(data.positions.data() + m.firstVertex,
                            size_t(m.vertexCount) * sizeof(kernel::Vec3f)));
    parts.push_back(hash128(data.triangles.data() + m.firstTriangle,
                            size_t(m.triangleCount) * sizeof(kernel::Triangle)));
  }
  return hash128(parts.data(), parts.size() * sizeof(Hash128));
}

bool isEmpty(const Bvh& b) { return b.nodes.size() == 1 && b.nodes[0].count == 0; }

}  // namespace

Bvh buildMeshBvh(const RenderData& data, std::shared_ptr<const StaticBvh>* staticPart,
                 const BvhBuildOptions& options) {
  const std::vector<kernel::MeshRange> meshes = structureMeshes(data);
  size_t dynamicCount = 0;
  for (const kernel::MeshRange& m : meshes) dynamicCount += (m.flags & kernel::kMeshDynamic) != 0;

  const Hash128 key = staticKey(data, meshes, options);
  if (!*staticPart || !((*staticPart)->key == key)) {
    staticPart->reset();  // not two static trees at once
    std::vector<uint32_t> staticTriangles;
    for (const kernel::MeshRange& m : meshes)
      if (!(m.flags & kernel::kMeshDynamic))
        for (uint32_t t = m.firstTriangle; t < m.firstTriangle + m.triangleCount; ++t)
          staticTriangles.push_back(t);
    auto part = std::make_shared<StaticBvh>();
    part->key = key;
    part->bvh = Builder(data.positions, data.triangles, options, &staticTriangles).build();
    *staticPart = std::move(part);
  }

  std::vector<Bvh> dynamicTrees;
  dynamicTrees.reserve(dynamicCount);
  uint32_t degenerate = (*staticPart)->bvh.degenerateCount;
  for (const kernel::MeshRange& m : meshes) {
    if (!(m.flags & kernel::kMeshDynamic)) continue;
    std::vector<uint32_t> triangles(m.triangleCount);
    for (uint32_t i = 0; i < m.triangleCount; ++i) triangles[i] = m.firstTriangle + i;
    dynamicTrees.push_back(Builder(data.positions, data.triangles, options, &triangles).build());
    degenerate += dynamicTrees.back().degenerateCount;
  }
  if (dynamicTrees.empty()) return (*staticPart)->bvh;

  const Bvh* staticTree = isEmpty((*staticPart)->bvh) ? nullptr : &(*staticPart)->bvh;
  std::vector<const Bvh*> dynamicParts;
  for (const Bvh& b : dynamicTrees)
    if (!isEmpty(b)) dynamicParts.push_back(&b);
  if (!staticTree && dynamicParts.empty()) {  // every triangle degenerate
    Bvh empty = (*staticPart)->bvh;
    empty.degenerateCount = degenerate;
    return empty;
  }
  Bvh joined = Joiner(staticTree, std::move(dynamicParts)).join();
  joined.degenerateCount = degenerate;
  // Deeper than the kernel's stack allows (never seen): one tree over everything instead.
  if (joined.depth > kernel::kBvhMaxDepth) return buildBvh(data.positions, data.triangles, options);
  return joined;
}

}  // namespace pl
