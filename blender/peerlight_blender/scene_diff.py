# What changed between two glTF exports of one Blender scene, as session updates.
#
# An animation frame or a viewport edit is exported again; comparing the new export with the
# one the session holds gives the updates that turn one into the other: `transform` for a node
# whose own placement changed, `camera` for the active camera, `material` for a material's
# factors. Anything else that differs (geometry, textures, lights, objects added or removed)
# cannot be sent as an update, and diff() says so by returning None: the caller starts a new
# session. No bpy here.

import copy
import json
import math
import struct

GLB_MAGIC = 0x46546C67
CHUNK_JSON = 0x4E4F534A
CHUNK_BIN = 0x004E4942


class Export:
    """A parsed .glb: its JSON and its binary chunk."""

    def __init__(self, gltf, binary):
        self.gltf = gltf
        self.binary = binary

    @staticmethod
    def read(path):
        with open(path, "rb") as f:
            data = f.read()
        if len(data) < 20:
            raise ValueError("%s: not a .glb (%d bytes)" % (path, len(data)))
        magic, _version, length = struct.unpack_from("<III", data, 0)
        if magic != GLB_MAGIC or length > len(data):
            raise ValueError("%s: not a .glb" % path)
        gltf, binary, offset = None, b"", 12
        while offset + 8 <= length:
            size, kind = struct.unpack_from("<II", data, offset)
            chunk = data[offset + 8:offset + 8 + size]
            if kind == CHUNK_JSON:
                gltf = json.loads(chunk.decode("utf-8"))
            elif kind == CHUNK_BIN:
                binary = bytes(chunk)
            offset += 8 + size
        if gltf is None:
            raise ValueError("%s: no JSON chunk" % path)
        return Export(gltf, binary)

    def write(self, path):
        """Writes it back as a .glb (chunks padded to 4 bytes: JSON with spaces, BIN with
        zeros)."""
        text = json.dumps(self.gltf, separators=(",", ":")).encode("utf-8")
        text += b" " * (-len(text) % 4)
        binary = self.binary + b"\0" * (-len(self.binary) % 4)
        chunks = struct.pack("<II", len(text), CHUNK_JSON) + text
        if binary:
            chunks += struct.pack("<II", len(binary), CHUNK_BIN) + binary
        with open(path, "wb") as f:
            f.write(struct.pack("<III", GLB_MAGIC, 2, 12 + len(chunks)) + chunks)


# Column-major 4x4 matrices as lists of 16 floats (glTF's layout, and the session's).
def identity():
    return [1.0 if i % 5 == 0 else 0.0 for i in range(16)]


def multiply(a, b):
    out = [0.0] * 16
    for c in range(4):
        for r in range(4):
            out[c * 4 + r] = sum(a[k * 4 + r] * b[c * 4 + k] for k in range(4))
    return out


def local_matrix(node):
    if "matrix" in node:
        return [float(v) for v in node["matrix"]]
    tx, ty, tz = node.get("translation", [0.0, 0.0, 0.0])
    qx, qy, qz, qw = node.get("rotation", [0.0, 0.0, 0.0, 1.0])
    sx, sy, sz = node.get("scale", [1.0, 1.0, 1.0])
    rot = [
        1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy + qz * qw), 2 * (qx * qz - qy * qw), 0.0,
        2 * (qx * qy - qz * qw), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz + qx * qw), 0.0,
        2 * (qx * qz + qy * qw), 2 * (qy * qz - qx * qw), 1 - 2 * (qx * qx + qy * qy), 0.0,
        0.0, 0.0, 0.0, 1.0,
    ]
    scale = [sx, 0, 0, 0, 0, sy, 0, 0, 0, 0, sz, 0, 0, 0, 0, 1]
    m = multiply(rot, scale)
    m[12], m[13], m[14] = tx, ty, tz
    return m


def parents(gltf):
    out = {}
    for i, node in enumerate(gltf.get("nodes", [])):
        for child in node.get("children", []):
            out[child] = i
    return out


def world_matrices(gltf):
    """Node index -> world matrix (column-major), for the nodes of the default scene's trees."""
    nodes = gltf.get("nodes", [])
    scenes = gltf.get("scenes", [])
    roots = scenes[gltf.get("scene", 0)].get("nodes", []) if scenes else []
    out = {}
    stack = [(r, identity()) for r in roots]
    while stack:
        index, parent = stack.pop()
        if index in out or not 0 <= index < len(nodes):
            continue
        world = multiply(parent, local_matrix(nodes[index]))
        out[index] = world
        stack.extend((c, world) for c in nodes[index].get("children", []))
    return out


def depth(index, parent_of):
    d = 0
    while index in parent_of:
        index = parent_of[index]
        d += 1
    return d


TRS_KEYS = ("matrix", "translation", "rotation", "scale")


def _material_factors(material):
    """The factors a `material` update carries, as its fields."""
    pbr = material.get("pbrMetallicRoughness", {})
    ext = material.get("extensions", {})
    return {
        "base_color": pbr.get("baseColorFactor", [1.0, 1.0, 1.0, 1.0]),
        "metallic": pbr.get("metallicFactor", 1.0),
        "roughness": pbr.get("roughnessFactor", 1.0),
        "emissive": material.get("emissiveFactor", [0.0, 0.0, 0.0]),
        "emissive_strength":
            ext.get("KHR_materials_emissive_strength", {}).get("emissiveStrength", 1.0),
        "ior": ext.get("KHR_materials_ior", {}).get("ior", 1.5),
        "alpha_cutoff": material.get("alphaCutoff", 0.5),
    }


def _without_updatable(gltf):
    """The export less what updates can carry: node placements, camera projections and
    material factors. Two exports that agree on this differ only by updates."""
    g = copy.deepcopy(gltf)
    for node in g.get("nodes", []):
        for key in TRS_KEYS:
            node.pop(key, None)
    for camera in g.get("cameras", []):
        camera.pop("perspective", None)
        camera.pop("orthographic", None)
    for material in g.get("materials", []):
        pbr = material.get("pbrMetallicRoughness", {})
        for key in ("baseColorFactor", "metallicFactor", "roughnessFactor"):
            pbr.pop(key, None)
        material.pop("emissiveFactor", None)
        material.pop("alphaCutoff", None)
        ext = material.get("extensions", {})
        for name in ("KHR_materials_emissive_strength", "KHR_materials_ior"):
            ext.pop(name, None)
    g.pop("asset", None)
    return g


def camera_yfov_degrees(gltf, node):
    """The vertical field of view (degrees) of the perspective camera on node `node`, or
    None."""
    nodes = gltf.get("nodes", [])
    cameras = gltf.get("cameras", [])
    index = nodes[node].get("camera") if 0 <= node < len(nodes) else None
    if index is None or not 0 <= index < len(cameras):
        return None
    persp = cameras[index].get("perspective")
    return math.degrees(persp["yfov"]) if persp else None


def node_named(gltf, name):
    for i, node in enumerate(gltf.get("nodes", [])):
        if node.get("name") == name:
            return i
    return None


def scene_camera_index(gltf, name):
    """The index peerlight's --camera gives the camera on the node named `name`: cameras count
    in the order the loader meets them (depth first from the default scene's roots, a node
    before its children), one per node that has one. None when no such node has a camera."""
    nodes = gltf.get("nodes", [])
    scenes = gltf.get("scenes", [])
    roots = scenes[gltf.get("scene", 0)].get("nodes", []) if scenes else []
    count, stack, seen = 0, list(reversed(roots)), set()
    while stack:
        index = stack.pop()
        if index in seen or not 0 <= index < len(nodes):
            continue
        seen.add(index)
        node = nodes[index]
        if "camera" in node:
            if node.get("name") == name:
                return count
            count += 1
        stack.extend(reversed(node.get("children", [])))
    return None


def _close(a, b):
    return all(abs(x - y) <= 1e-9 * max(1.0, abs(x), abs(y)) for x, y in zip(a, b))


def _unique(names):
    return len(names) == len(set(names))


def diff(old, new, camera=None):
    """Updates (request dicts for the session) that turn `old` into `new` (two Exports), or None
    when they differ by more than updates carry. `camera`: the name of the node whose camera the
    session renders through (None: the session's camera is set another way, as in the
    viewport)."""
    if old.binary != new.binary:
        return None  # geometry, textures or animation data differ
    if _without_updatable(old.gltf) != _without_updatable(new.gltf):
        return None
    ops = []
    old_nodes, new_nodes = old.gltf.get("nodes", []), new.gltf.get("nodes", [])
    # The session finds nodes and materials by name: every one must have a name of its own.
    if not _unique([n.get("name") for n in new_nodes]) or \
            not _unique([m.get("name") for m in new.gltf.get("materials", [])]):
        return None
    parent_of = parents(new.gltf)
    world = world_matrices(new.gltf)
    # A camera's own placement is the `camera` update; a camera node with children is moved
    # like any node too, so that they follow it.
    moved = [i for i, (a, b) in enumerate(zip(old_nodes, new_nodes))
             if not _close(local_matrix(a), local_matrix(b))
             and ("camera" not in b or b.get("children"))]
    # Parents first: a node's update moves its descendants along, so a child whose own
    # placement did not change needs none.
    for i in sorted(moved, key=lambda i: depth(i, parent_of)):
        if i not in world:
            continue  # not in the rendered scene
        if "name" not in new_nodes[i]:
            return None
        ops.append({"op": "transform", "node": new_nodes[i]["name"], "matrix": world[i]})
    for a, b in zip(old.gltf.get("materials", []), new.gltf.get("materials", [])):
        fa, fb = _material_factors(a), _material_factors(b)
        if fa != fb:
            if "name" not in b:
                return None
            ops.append(dict({"op": "material", "name": b["name"]}, **fb))
    if camera is not None:
        node = node_named(new.gltf, camera)
        if node is None or node_named(old.gltf, camera) != node:
            return None
        old_world = world_matrices(old.gltf).get(node)
        new_world = world.get(node)
        old_fov = camera_yfov_degrees(old.gltf, node)
        new_fov = camera_yfov_degrees(new.gltf, node)
        if new_world is None or new_fov is None:
            return None
        if old_world is None or not _close(old_world, new_world) or old_fov != new_fov:
            ops.append({"op": "camera", "matrix": new_world, "yfov": new_fov})
    return ops


def as_one_request(ops):
    """(op, fields) of one session request carrying all of `ops` (diff()'s updates) as one
    generation: the update itself when there is one, else a `batch`."""
    if len(ops) == 1:
        fields = dict(ops[0])
        return fields.pop("op"), fields
    return "batch", {"ops": ops}
