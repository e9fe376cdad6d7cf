#!/usr/bin/env python3
"""Writes scenes/cornell_box.gltf: the Cornell box from the published Cornell PCG measurements
(http://www.graphics.cornell.edu/online/box/data.html), as one self-contained glTF 2.0 file.

Conventions of the output (glTF: metres, right-handed, +Y up, cameras look down -Z):
- Cornell's data is in millimetres and is itself right-handed, with the camera at
  (278, 273, -800) looking along +Z. We turn it 180 degrees about +Y (x -> -x, z -> -z; a
  rotation, so handedness and winding are kept), centre the box on x = 0 and z = 0, and scale
  to metres. The camera then sits on +Z looking down -Z with an identity rotation, and the red
  wall is on the left of the image, the green one on the right, as in Cornell's photographs.
- 35 mm lens on 25 mm film: yfov = 2 atan(12.5 / 35) = 39.31 degrees.
- Albedos: McGuire's RGB fits of the measured spectra (white 0.725 0.71 0.68, red
  0.63 0.065 0.05, green 0.14 0.45 0.091). Light: radiance (17, 12, 4) as emissiveFactor
  (1, 12/17, 4/17) times KHR_materials_emissive_strength 17, single-sided, facing down; it is
  130 x 105 mm and sits at y = 548.7 mm, 0.1 mm under the ceiling, so it never coincides
  with the ceiling.
- Flat normals; each face winds counter-clockwise seen from its front (walls face into the
  room, blocks face out, the light faces down).

Run: python3 scenes/make_cornell_box.py  (writes next to this script; deterministic output)
"""

import math
import os

from gltf_writer import Buffer

# Cornell's quads, in mm, in their coordinates.
WHITE, RED, GREEN, LIGHT = "white", "red", "green", "light"
ROOM_CENTRE = (278.0, 274.4, 279.6)
QUADS = [
    # (material, vertices, "in": normal towards the room centre / "out": away from `centre`)
    (WHITE, [(552.8, 0, 0), (0, 0, 0), (0, 0, 559.2), (549.6, 0, 559.2)], "in"),  # floor
    (WHITE, [(556, 548.8, 0), (556, 548.8, 559.2), (0, 548.8, 559.2), (0, 548.8, 0)], "in"),  # ceiling
    (WHITE, [(549.6, 0, 559.2), (0, 0, 559.2), (0, 548.8, 559.2), (556, 548.8, 559.2)], "in"),  # back
    (GREEN, [(0, 0, 559.2), (0, 0, 0), (0, 548.8, 0), (0, 548.8, 559.2)], "in"),  # right wall
    (RED, [(552.8, 0, 0), (549.6, 0, 559.2), (556, 548.8, 559.2), (556, 548.8, 0)], "in"),  # left
]
SHORT_BLOCK = [
    [(130, 165, 65), (82, 165, 225), (240, 165, 272), (290, 165, 114)],
    [(290, 0, 114), (290, 165, 114), (240, 165, 272), (240, 0, 272)],
    [(130, 0, 65), (130, 165, 65), (290, 165, 114), (290, 0, 114)],
    [(82, 0, 225), (82, 165, 225), (130, 165, 65), (130, 0, 65)],
    [(240, 0, 272), (240, 165, 272), (82, 165, 225), (82, 0, 225)],
]
TALL_BLOCK = [
    [(423, 330, 247), (265, 330, 296), (314, 330, 456), (472, 330, 406)],
    [(423, 0, 247), (423, 330, 247), (472, 330, 406), (472, 0, 406)],
    [(472, 0, 406), (472, 330, 406), (314, 330, 456), (314, 0, 456)],
    [(314, 0, 456), (314, 330, 456), (265, 330, 296), (265, 0, 296)],
    [(265, 0, 296), (265, 330, 296), (423, 330, 247), (423, 0, 247)],
]
LIGHT_Y = 548.7
LIGHT_QUAD = [(343, LIGHT_Y, 227), (343, LIGHT_Y, 332), (213, LIGHT_Y, 332), (213, LIGHT_Y, 227)]
CAMERA = (278.0, 273.0, -800.0)
YFOV = 2.0 * math.atan(12.5 / 35.0)

MATERIALS = {
    WHITE: {"baseColorFactor": [0.725, 0.71, 0.68, 1.0]},
    RED: {"baseColorFactor": [0.63, 0.065, 0.05, 1.0]},
    GREEN: {"baseColorFactor": [0.14, 0.45, 0.091, 1.0]},
    LIGHT: {"baseColorFactor": [0.78, 0.78, 0.78, 1.0]},
}
MATERIAL_ORDER = [WHITE, RED, GREEN, LIGHT]


def to_gltf(p):
    """Cornell mm -> glTF metres: rotate 180 degrees about +Y, centre on x = z = 0."""
    x, y, z = p
    return ((ROOM_CENTRE[0] - x) * 0.001, y * 0.001, (ROOM_CENTRE[2] - z) * 0.001)


def sub(a, b):
    return tuple(x - y for x, y in zip(a, b))


def cross(a, b):
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def normalize(a):
    n = math.sqrt(dot(a, a))
    return tuple(x / n for x in a)


def oriented(quad, want):
    """The quad in glTF coordinates, wound so that its normal has a positive dot with want."""
    q = [to_gltf(p) for p in quad]
    n = cross(sub(q[1], q[0]), sub(q[2], q[0]))
    if dot(n, want) < 0:
        q = q[::-1]
        n = cross(sub(q[1], q[0]), sub(q[2], q[0]))
    return q, normalize(n)


def centroid(points):
    return tuple(sum(c) / len(points) for c in zip(*points))


def build_faces():
    faces = {m: [] for m in MATERIAL_ORDER}
    room = to_gltf(ROOM_CENTRE)
    for material, quad, _ in QUADS:
        q = [to_gltf(p) for p in quad]
        faces[material].append(oriented(quad, sub(room, centroid(q))))
    for block in (SHORT_BLOCK, TALL_BLOCK):
        centre = centroid([to_gltf(p) for quad in block for p in quad])
        for quad in block:
            q = [to_gltf(p) for p in quad]
            faces[WHITE].append(oriented(quad, sub(centroid(q), centre)))
    faces[LIGHT].append(oriented(LIGHT_QUAD, (0.0, -1.0, 0.0)))
    return faces


def main():
    faces = build_faces()
    buf = Buffer()
    for index, material in enumerate(MATERIAL_ORDER):
        positions, normals, indices = [], [], []
        for quad, normal in faces[material]:
            base = len(positions)
            positions.extend(quad)
            normals.extend([normal] * 4)
            indices.extend([base, base + 1, base + 2, base, base + 2, base + 3])
        buf.add_primitive(positions, normals, indices, index, wide_indices=False)

    materials = []
    for name in MATERIAL_ORDER:
        m = {"name": name,
             "pbrMetallicRoughness": dict(MATERIALS[name], metallicFactor=0.0,
                                          roughnessFactor=1.0),
             "doubleSided": name != LIGHT}
        if name == LIGHT:
            m["emissiveFactor"] = [1.0, 12.0 / 17.0, 4.0 / 17.0]
            m["extensions"] = {"KHR_materials_emissive_strength": {"emissiveStrength": 17.0}}
        materials.append(m)

    camera = [round(c, 6) for c in to_gltf(CAMERA)]
    gltf = {
        "asset": {"version": "2.0",
                  "generator": "peerlight scenes/make_cornell_box.py (Cornell PCG measurements)"},
        "extensionsUsed": ["KHR_materials_emissive_strength"],
        "scene": 0,
        "scenes": [{"name": "CornellBox", "nodes": [0, 1]}],
        "nodes": [{"name": "CornellBox", "mesh": 0},
                  {"name": "Camera", "camera": 0, "translation": camera}],
        "cameras": [{"name": "Camera", "type": "perspective",
                     "perspective": {"yfov": YFOV, "aspectRatio": 1.0, "znear": 0.01,
                                     "zfar": 100.0}}],
        "meshes": [{"name": "CornellBox", "primitives": buf.primitives}],
        "materials": materials,
    }
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cornell_box.gltf")
    buf.write(out, gltf)
    print(f"wrote {out}: {sum(len(a) for a in faces.values()) * 2} triangles")


if __name__ == "__main__":
    main()
