#!/usr/bin/env python3
"""Writes scenes/glass_sphere.gltf: a solid glass sphere on a checkered floor before a striped
wall, for refraction (issue 10's glass test scene), as one self-contained glTF 2.0 file.

- Sphere: radius 0.35 m, centre (0, 0.35, 0), 48 x 24 segments with smooth normals;
  KHR_materials_transmission 1, KHR_materials_ior 1.5, KHR_materials_volume (thickness 0.7,
  the diameter; attenuation colour (0.75, 0.95, 0.8) at 0.5 m): a refracting, slightly
  green-tinted solid, roughness 0.
- Floor: 12 x 12 squares of 0.25 m, alternating diffuse 0.8 and 0.1 grey, at y = 0.
- Wall: at z = -1.0, 3 m wide and 1.5 m high, 12 vertical stripes alternating red (0.7, 0.1,
  0.1) and blue (0.1, 0.2, 0.7), diffuse.
- No lights: render it under a uniform sky (`--env 1,1,1`; Cycles `--world 1.0`).
- Camera `Camera`: at (0, 0.55, 2.0), looking at (0, 0.3, 0), yfov 35 degrees.

Run: python3 scenes/make_glass_scene.py  (writes next to this script; deterministic output)
"""

import math
import os

from gltf_writer import Buffer

RADIUS = 0.35
CENTRE = (0.0, RADIUS, 0.0)
SEGMENTS, RINGS = 48, 24
SQUARE, SQUARES = 0.25, 12
WALL_Z, WALL_HEIGHT, STRIPES = -1.0, 1.5, 12
EYE, TARGET = (0.0, 0.55, 2.0), (0.0, 0.3, 0.0)
YFOV = math.radians(35.0)

GLASS, LIGHT_GREY, DARK_GREY, RED, BLUE = range(5)
MATERIALS = [
    {"name": "Glass",
     "pbrMetallicRoughness": {"baseColorFactor": [1.0, 1.0, 1.0, 1.0], "metallicFactor": 0.0,
                              "roughnessFactor": 0.0},
     "extensions": {"KHR_materials_transmission": {"transmissionFactor": 1.0},
                    "KHR_materials_ior": {"ior": 1.5},
                    "KHR_materials_volume": {"thicknessFactor": 2 * RADIUS,
                                             "attenuationDistance": 0.5,
                                             "attenuationColor": [0.75, 0.95, 0.8]}}},
]
for name, colour in (("LightGrey", [0.8, 0.8, 0.8]), ("DarkGrey", [0.1, 0.1, 0.1]),
                     ("Red", [0.7, 0.1, 0.1]), ("Blue", [0.1, 0.2, 0.7])):
    MATERIALS.append({"name": name, "pbrMetallicRoughness": {
        "baseColorFactor": colour + [1.0], "metallicFactor": 0.0, "roughnessFactor": 1.0}})


def sphere():
    """(positions, normals, indices) of a UV sphere, counter-clockwise seen from outside."""
    positions, normals, indices = [], [], []
    for r in range(RINGS + 1):
        theta = math.pi * r / RINGS
        for s in range(SEGMENTS + 1):
            phi = 2.0 * math.pi * s / SEGMENTS
            n = (math.sin(theta) * math.cos(phi), math.cos(theta), -math.sin(theta) * math.sin(phi))
            normals.append(n)
            positions.append(tuple(c + RADIUS * x for c, x in zip(CENTRE, n)))
    row = SEGMENTS + 1
    for r in range(RINGS):
        for s in range(SEGMENTS):
            a, b = r * row + s, (r + 1) * row + s
            if r > 0:
                indices += [a, b, a + 1]
            if r < RINGS - 1:
                indices += [a + 1, b, b + 1]
    return positions, normals, indices


def quads(corners_list, normal):
    """(positions, normals, indices) of quads given by their 4 corners, counter-clockwise."""
    positions, normals, indices = [], [], []
    for q in corners_list:
        base = len(positions)
        positions += q
        normals += [normal] * 4
        indices += [base, base + 1, base + 2, base, base + 2, base + 3]
    return positions, normals, indices


def floor_squares(dark):
    half = SQUARES * SQUARE / 2
    out = []
    for i in range(SQUARES):
        for j in range(SQUARES):
            if (i + j) % 2 != dark:
                continue
            x0, z0 = -half + i * SQUARE, -half + j * SQUARE
            x1, z1 = x0 + SQUARE, z0 + SQUARE
            out.append([(x0, 0.0, z1), (x1, 0.0, z1), (x1, 0.0, z0), (x0, 0.0, z0)])
    return out


def wall_stripes(odd):
    width = SQUARES * SQUARE / STRIPES
    half = SQUARES * SQUARE / 2
    out = []
    for i in range(odd, STRIPES, 2):
        x0 = -half + i * width
        x1 = x0 + width
        out.append([(x0, 0.0, WALL_Z), (x1, 0.0, WALL_Z), (x1, WALL_HEIGHT, WALL_Z),
                    (x0, WALL_HEIGHT, WALL_Z)])
    return out


def look_at_quaternion(eye, target):
    """The rotation (x, y, z, w) taking the camera's -Z to target - eye, +Y staying up."""
    f = [t - e for t, e in zip(target, eye)]
    n = math.sqrt(sum(c * c for c in f))
    f = [c / n for c in f]
    up = (0.0, 1.0, 0.0)
    r = [f[1] * up[2] - f[2] * up[1], f[2] * up[0] - f[0] * up[2], f[0] * up[1] - f[1] * up[0]]
    n = math.sqrt(sum(c * c for c in r))
    r = [c / n for c in r]
    u = [r[1] * f[2] - r[2] * f[1], r[2] * f[0] - r[0] * f[2], r[0] * f[1] - r[1] * f[0]]
    # Columns of the rotation matrix: x = r, y = u, z = -f.
    m = [[r[0], u[0], -f[0]], [r[1], u[1], -f[1]], [r[2], u[2], -f[2]]]
    w = math.sqrt(max(0.0, 1.0 + m[0][0] + m[1][1] + m[2][2])) / 2
    return [(m[2][1] - m[1][2]) / (4 * w), (m[0][2] - m[2][0]) / (4 * w),
            (m[1][0] - m[0][1]) / (4 * w), w]


def main():
    parts = [(GLASS, sphere()),
             (LIGHT_GREY, quads(floor_squares(0), (0.0, 1.0, 0.0))),
             (DARK_GREY, quads(floor_squares(1), (0.0, 1.0, 0.0))),
             (RED, quads(wall_stripes(0), (0.0, 0.0, 1.0))),
             (BLUE, quads(wall_stripes(1), (0.0, 0.0, 1.0)))]
    buf = Buffer()
    triangles = 0
    for material, (positions, normals, indices) in parts:
        buf.add_primitive(positions, normals, indices, material, wide_indices=True)
        triangles += len(indices) // 3
    extensions = ["KHR_materials_transmission", "KHR_materials_ior", "KHR_materials_volume"]
    gltf = {
        "asset": {"version": "2.0", "generator": "peerlight scenes/make_glass_scene.py"},
        "extensionsUsed": extensions,
        "scene": 0,
        "scenes": [{"name": "GlassSphere", "nodes": [0, 1]}],
        "nodes": [{"name": "GlassSphere", "mesh": 0},
                  {"name": "Camera", "camera": 0, "translation": list(EYE),
                   "rotation": [round(c, 8) for c in look_at_quaternion(EYE, TARGET)]}],
        "cameras": [{"name": "Camera", "type": "perspective",
                     "perspective": {"yfov": YFOV, "aspectRatio": 1.0, "znear": 0.01,
                                     "zfar": 100.0}}],
        "meshes": [{"name": "GlassSphere", "primitives": buf.primitives}],
        "materials": MATERIALS,
    }
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "glass_sphere.gltf")
    buf.write(out, gltf)
    print(f"wrote {out}: {triangles} triangles")


if __name__ == "__main__":
    main()
