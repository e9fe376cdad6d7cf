#pragma once
// THE list of RenderData arrays. Everything that touches RenderData as a whole (the host
// container, serialization, hashing, chunking, the GPU upload and the kernel's SceneView) is
// generated from this one X-macro, so adding an array is one line here.
//
// X(ElementType, name). Arrays may be empty. Never reorder: the index is part of the
// serialized format.

#include "core/kernel/types.h"

#define PL_RENDER_DATA_ARRAYS(X)                                                 \
  X(::pl::kernel::Vec3f, positions)        /* per vertex, world space */        \
  X(::pl::kernel::Vec3f, normals)          /* per vertex, world space, unit */  \
  X(::pl::kernel::Vec2f, uvs)              /* per vertex, UV set 0 */           \
  X(::pl::kernel::Vec4f, tangents)         /* per vertex, xyz + handedness w */ \
  X(::pl::kernel::Triangle, triangles)                                          \
  X(::pl::kernel::Material, materials)                                          \
  X(::pl::kernel::Texture, textures)                                            \
  X(::pl::kernel::Rgba8, texels)                                                \
  X(uint32_t, emissiveTriangles)           /* indices into triangles */         \
  X(float, emissiveCdf)                    /* inclusive CDF, last = 1 */        \
  X(::pl::kernel::PunctualLight, lights)                                        \
  X(::pl::kernel::Vec3f, envTexels)        /* linear RGB, row 0 = top (+y) */   \
  X(float, envMarginalCdf)                 /* per row, inclusive, last = 1 */   \
  X(float, envConditionalCdf)              /* per row, per column, inclusive */ \
  X(::pl::kernel::Camera, camera)          /* exactly one */                    \
  X(::pl::kernel::SceneGlobals, globals)   /* exactly one */                    \
  X(::pl::kernel::MeshRange, meshes)       /* in order; empty: one mesh */      \
  X(::pl::kernel::Rgba8, mipTexels)        /* levels below 0, derived */
