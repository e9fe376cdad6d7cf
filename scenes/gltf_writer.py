"""Writing self-contained glTF 2.0 files for the project's scene generators
(make_cornell_box.py, make_glass_scene.py): one buffer, embedded as base64, holding each
primitive's positions, normals and indices."""

import base64
import json
import struct


class Buffer:
    """The file's one buffer, its views and accessors, and the primitives that use them."""

    def __init__(self):
        self.blob = bytearray()
        self.buffer_views, self.accessors, self.primitives = [], [], []

    def _view(self, data, target):
        while len(self.blob) % 4:
            self.blob.append(0)
        self.buffer_views.append({"buffer": 0, "byteOffset": len(self.blob),
                                  "byteLength": len(data), "target": target})
        self.blob.extend(data)
        return len(self.buffer_views) - 1

    def add_primitive(self, positions, normals, indices, material, wide_indices):
        """A triangle primitive; indices as uint32 when wide_indices, else uint16."""
        # min/max of the float32 values actually stored, as the specification requires.
        stored = [struct.unpack("<3f", struct.pack("<3f", *p)) for p in positions]
        first = len(self.accessors)
        self.accessors.append({
            "bufferView": self._view(b"".join(struct.pack("<3f", *p) for p in positions),
                                     34962),
            "componentType": 5126, "count": len(positions), "type": "VEC3",
            "min": [min(p[i] for p in stored) for i in range(3)],
            "max": [max(p[i] for p in stored) for i in range(3)]})
        self.accessors.append({
            "bufferView": self._view(b"".join(struct.pack("<3f", *n) for n in normals), 34962),
            "componentType": 5126, "count": len(normals), "type": "VEC3"})
        fmt, component = ("<I", 5125) if wide_indices else ("<H", 5123)
        self.accessors.append({
            "bufferView": self._view(b"".join(struct.pack(fmt, i) for i in indices), 34963),
            "componentType": component, "count": len(indices), "type": "SCALAR"})
        self.primitives.append({"attributes": {"POSITION": first, "NORMAL": first + 1},
                                "indices": first + 2, "material": material, "mode": 4})

    def write(self, path, gltf):
        """Writes `gltf` (everything but accessors, bufferViews and buffers) to path."""
        while len(self.blob) % 4:
            self.blob.append(0)
        gltf = dict(gltf, accessors=self.accessors, bufferViews=self.buffer_views,
                    buffers=[{"byteLength": len(self.blob),
                              "uri": "data:application/octet-stream;base64," +
                                     base64.b64encode(bytes(self.blob)).decode("ascii")}])
        with open(path, "w", encoding="ascii") as f:
            json.dump(gltf, f, indent=1)
            f.write("\n")
