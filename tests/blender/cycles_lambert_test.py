#!/usr/bin/env python3
"""Light transport against an independent renderer, in the suite: the project's own Cornell
box (scenes/cornell_box.gltf) with every material a pure Lambertian, rendered by Debian's
Blender Cycles (cycles_lambert.py) and by peerlight (the same scene with KHR_materials_ior 1.0:
no specular layer), compared block by block.

With the glTF BRDF the two differ by design: Blender 3.4's Cycles uses the separable Smith G
where the glTF specification asks for the height-correlated one (bench/cycles_smith_study.sh,
tests/core/kernel/ggx_spec_test.cpp). Lambertian surfaces have no G, so here they must agree
within noise: diffuse transport, emission, next-event estimation and MIS.

    cycles_lambert_test.py PEERLIGHT_BINARY SOURCE_DIR

Skips (77) without blender. About a minute on 2 cores."""
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from addon_test import read_exr_channels  # noqa: E402

SIZE, SPP, BLOCKS = 128, 1024, 16  # 8x8-pixel blocks, 65536 samples each
MAX_PER_BLOCK, MAX_MEAN = 0.025, 0.005  # measured: about 0.7% and 0.02%


def block_means(path):
    """Each block's mean R, G and B (a channel swap or wrong colour bleeding counts)."""
    ch = read_exr_channels(path)
    if len(ch["R"]) != SIZE * SIZE:
        raise SystemExit("%s: %d pixels, expected %d" % (path, len(ch["R"]), SIZE * SIZE))
    block = SIZE // BLOCKS
    sums = [0.0] * (BLOCKS * BLOCKS * 3)
    for i in range(SIZE * SIZE):
        y, x = divmod(i, SIZE)
        b = (y // block) * BLOCKS + x // block
        for c, name in enumerate("RGB"):
            sums[b * 3 + c] += ch[name][i]
    return [s / (block * block) for s in sums]


def main():
    binary, source = sys.argv[1], sys.argv[2]
    blender = shutil.which("blender")
    if blender is None:
        print("skipped: blender is not installed")
        return 77
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(source, "scenes", "cornell_box.gltf")) as f:
            gltf = json.load(f)
        for m in gltf["materials"]:
            m.setdefault("extensions", {})["KHR_materials_ior"] = {"ior": 1.0}
        gltf["extensionsUsed"] = sorted(set(gltf.get("extensionsUsed", []) +
                                            ["KHR_materials_ior"]))
        scene = os.path.join(tmp, "lambert.gltf")
        with open(scene, "w") as f:
            json.dump(gltf, f)

        cycles = os.path.join(tmp, "cycles.exr")
        # The system's PATH: a Python of another install first in PATH (pyenv, a venv) would
        # become Blender's Python home, without Debian's numpy that its glTF importer uses.
        blender_env = dict(os.environ, PATH="/usr/local/bin:/usr/bin:/bin")
        p = subprocess.run([blender, "-b", "--factory-startup", "--python-exit-code", "1",
                            "--python",
                            os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "cycles_lambert.py"),
                            "--", scene, cycles, str(SIZE), str(SPP)],
                           capture_output=True, text=True, timeout=400, env=blender_env)
        if p.returncode != 0 or not os.path.exists(cycles):
            print(p.stdout[-3000:], p.stderr[-3000:])
            print("FAIL Cycles did not render the scene")
            return 1
        ours = os.path.join(tmp, "ours.exr")
        p = subprocess.run([binary, "render", scene, "-o", ours, "--size", "%dx%d" % (SIZE, SIZE),
                            "--spp", str(SPP), "--camera", "0", "--local-only", "--no-daemon"],
                           capture_output=True, text=True, timeout=400)
        if p.returncode != 0:
            print(p.stderr[-3000:])
            print("FAIL peerlight did not render the scene")
            return 1

        a, b = block_means(ours), block_means(cycles)
        lit = [(o, r) for o, r in zip(a, b) if r > 0]
        per_block = math.sqrt(sum(((o - r) / r) ** 2 for o, r in lit) / len(lit))
        mean = (sum(a) - sum(b)) / sum(b)
        worst = max(abs(o - r) / r for o, r in lit)
        print("pure-Lambert Cornell box %dx%d, %d spp, %d block channels: per-block relative RMS "
              "%.4f (worst %.4f), mean error %+.4f" % (SIZE, SIZE, SPP, len(lit), per_block,
                                                      worst, mean))
        ok = per_block <= MAX_PER_BLOCK and abs(mean) <= MAX_MEAN and \
            len(lit) > BLOCKS * BLOCKS * 3 // 2
        print("%s agrees with Cycles block by block (limits %.3f per block, %.3f in the mean)"
              % ("ok  " if ok else "FAIL", MAX_PER_BLOCK, MAX_MEAN))
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
