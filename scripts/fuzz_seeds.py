#!/usr/bin/env python3
"""Seeds for the scene-file fuzz targets (fuzz/), made from the shared test scenes.

    scripts/fuzz_seeds.py SCENES_DIR OUT_DIR

Writes OUT_DIR/gltf/* and OUT_DIR/obj/* in the targets' input formats: for gltf, one selector
byte (1: .glb, 0: .gltf) and the file, with a .gltf's external buffers embedded as data URIs
(the target writes one file, so nothing beside it resolves); for obj, the .obj with its
`mtllib` renamed to input.mtl, a 0xff byte, and the .mtl. Files over 128 KiB are skipped: the
fuzzer mutates small inputs faster. Scenes whose licence does not allow redistribution in an
open-source project (SKIP) are left out, since what the fuzzer finds from these seeds may be
kept in fuzz/corpus/. Nothing is copied into the project by this script: `./run fuzz` reads
these from its build folder.
"""
import base64
import json
import os
import re
import sys

MAX_BYTES = 128 << 10
# Not open-source licences (../shared/scenes/README.md): Duck (SCEA Shared Source), DamagedHelmet
# (CC-BY-NC for the original), the Stanford bunny (research use), Sponza (CRYENGINE terms).
SKIP = ("Duck", "DamagedHelmet", "stanford-bunny", "sponza")


def write(path, data):
    if len(data) > MAX_BYTES:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def embedded_gltf(path):
    with open(path, "rb") as f:
        doc = json.load(f)
    folder = os.path.dirname(path)
    for buf in doc.get("buffers", []):
        uri = buf.get("uri", "")
        if uri and not uri.startswith("data:"):
            with open(os.path.join(folder, uri), "rb") as f:
                buf["uri"] = ("data:application/octet-stream;base64," +
                              base64.b64encode(f.read()).decode())
    return json.dumps(doc).encode()


def main():
    scenes, out = sys.argv[1], sys.argv[2]
    for root, _, files in sorted(os.walk(scenes)):
        for name in sorted(files):
            path = os.path.join(root, name)
            stem = os.path.relpath(path, scenes).replace(os.sep, "_")
            if any(skip in stem for skip in SKIP):
                continue
            if name.endswith(".glb") and os.path.getsize(path) <= MAX_BYTES:
                with open(path, "rb") as f:
                    write(os.path.join(out, "gltf", stem), b"\x01" + f.read())
            elif name.endswith(".gltf"):
                try:
                    data = embedded_gltf(path)
                except OSError:
                    continue
                write(os.path.join(out, "gltf", stem), b"\x00" + data)
            elif name.endswith(".obj") and os.path.getsize(path) <= MAX_BYTES:
                with open(path, "rb") as f:
                    obj = f.read()
                mtl = b""
                match = re.search(rb"^mtllib\s+(\S+)", obj, re.M)
                if match:
                    try:
                        with open(os.path.join(root, match.group(1).decode()), "rb") as f:
                            mtl = f.read()
                    except OSError:
                        pass
                    obj = obj[:match.start(1)] + b"input.mtl" + obj[match.end(1):]
                write(os.path.join(out, "obj", stem), obj + b"\xff" + mtl)


if __name__ == "__main__":
    main()
