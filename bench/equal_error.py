#!/usr/bin/env python3
"""Time to equal error against Cycles (issue 10): how long each renderer needs to bring its
image to a given error, on the same machine, one after the other.

Each renderer renders the scene with several seeds at each of a few sample counts. The error
measured is noise, not bias (the two renderers' BRDFs differ in their details): for each sample
count, the mean square difference of two renders with different seeds is twice the variance of
one, taken over 16x16-pixel blocks of R + G + B (noise the eye sees; the per-pixel error of a path
tracer is dominated by fireflies), relative to the image's mean, and averaged over every pair of
seeds. Efficiency = 1 / (MSE x seconds): the ratio of the two renderers' efficiencies is the
ratio of their times to any equal error. No many-sample reference is needed: each seed's
samples are independent of every other's (a reference that held the rung's own samples would
not be).

    bench/equal_error.py [--size 256] [--spp 32 128] [--seeds 4] [--scene NAME (SCENES)]

Times: peerlight's render seconds (`render --json`, the scene already compiled); Cycles' wall
time minus its 1-spp warm-up (sync, BVH, textures), scaled by spp / (spp - 1), as
`cycles_reference.py` reports. Both on every core of this machine. Needs Debian's `blender`
and `../shared` (scenes and `reference/cycles_reference.py`).
"""
import argparse
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PL = os.path.join(ROOT, "build", "bin", "peerlight")
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from block_compare import block_means  # noqa: E402

BLOCK = 16
SCENES = {
    # name: (scene, peerlight flags, Cycles flags, camera distance); scene is under ../shared,
    # or under the project's scenes/ when it starts with "scenes/" and is not found there.
    # A camera distance: the file has no camera of its own, so a copy of it gets one that far in
    # front along +Z (edited_copy()), so that both renderers frame it alike.
    "cornell": ("scenes/cornell-box/gltf-derived/cornell_box.gltf",
                ["--max-depth", "17", "--env", "0,0,0"], ["--gltf-brdf", "--bounces", "16"],
                None),
    # DamagedHelmet close-up under a uniform white sky.
    "helmet": ("scenes/khronos-gltf/DamagedHelmet/glTF/DamagedHelmet.gltf",
               ["--max-depth", "17", "--env", "1,1,1"],
               ["--gltf-brdf", "--bounces", "16", "--world", "1.0"], 2.4),
    # Its own camera; lit by a uniform white sky through the roof.
    "sponza": ("scenes/sponza-crytek-rendu/sponza.gltf",
               ["--max-depth", "17", "--env", "1,1,1"],
               ["--gltf-brdf", "--bounces", "16", "--world", "1.0"], None),
    # The helmet again, its metals given a Fresnel in the reference (bench/cycles_wrapper.py).
    "helmet-fresnel": ("scenes/khronos-gltf/DamagedHelmet/glTF/DamagedHelmet.gltf",
                       ["--max-depth", "17", "--env", "1,1,1"],
                       ["--gltf-brdf", "--metal-fresnel", "--bounces", "16", "--world", "1.0"],
                       2.4),
    "bottle": ("scenes/khronos-gltf/WaterBottle/glTF/WaterBottle.gltf",
               ["--max-depth", "17", "--env", "1,1,1"],
               ["--gltf-brdf", "--metal-fresnel", "--bounces", "16", "--world", "1.0"], 0.45),
    # Layered materials: Cycles renders Blender's import of the file (Principled BSDFs).
    "toycar": ("scenes/khronos-gltf/ToyCar/glTF/ToyCar.gltf",
               ["--max-depth", "17", "--env", "1,1,1"],
               ["--bounces", "16", "--world", "1.0", "--camera", "0"], None),
    # ToyCar's base layers alone (its clearcoat and sheen taken out of a copy of the file)
    # against a reference that follows the specification for them: Cycles 3.4 has no node for
    # the specification's sheen, and Blender imports its clearcoat as Disney's.
    "toycar-base": ("scenes/khronos-gltf/ToyCar/glTF/ToyCar.gltf",
                    ["--max-depth", "17", "--env", "1,1,1"],
                    ["--gltf-brdf", "--keep-transmission", "--metal-fresnel", "--bounces", "16",
                     "--world", "1.0", "--camera", "0"], None),
    # The project's glass sphere (scenes/make_glass_scene.py): the glass a Principled BSDF,
    # every other material the glTF BRDF, Cycles' volume absorption made exact
    # (bench/cycles_wrapper.py).
    "glass": ("scenes/glass_sphere.gltf", ["--max-depth", "17", "--env", "1,1,1"],
              ["--gltf-brdf", "--keep-transmission", "--bounces", "16", "--world", "1.0",
               "--exact-volume"], None),
}


def scene_path(rel):
    """The scene file of a SCENES entry: under ../shared, else the project's own."""
    shared = os.path.join(SHARED, rel)
    return shared if os.path.exists(shared) else os.path.join(ROOT, rel)


# Material extensions taken out of a copy of the file, by scene name.
STRIPPED = {"toycar-base": ("KHR_materials_clearcoat", "KHR_materials_sheen")}


def edited_copy(scene, tmp, distance, strip):
    """A copy of the scene's folder whose glTF has a camera `distance` in front of the origin
    along +Z, looking down -Z (40 degrees vertical field of view; None: none added), and whose
    materials lose the extensions named in `strip`."""
    folder = os.path.join(tmp, "edited")
    shutil.copytree(os.path.dirname(scene), folder)
    path = os.path.join(folder, os.path.basename(scene))
    with open(path) as f:
        gltf = json.load(f)
    if distance is not None:
        gltf["cameras"] = [{"type": "perspective",
                            "perspective": {"yfov": math.radians(40), "znear": 0.01,
                                            "aspectRatio": 1.0}}]
        gltf["nodes"].append({"camera": 0, "translation": [0.0, 0.0, distance]})
        gltf["scenes"][gltf.get("scene", 0)]["nodes"].append(len(gltf["nodes"]) - 1)
    for material in gltf.get("materials", []):
        for name in strip:
            material.get("extensions", {}).pop(name, None)
    if strip:
        gltf["extensionsUsed"] = [e for e in gltf.get("extensionsUsed", []) if e not in strip]
    with open(path, "w") as f:
        json.dump(gltf, f)
    return path


def prepared_scene(name, tmp):
    """The file both renderers render for SCENES[name] (a copy with a camera added or
    extensions taken out where needed)."""
    rel, _, _, distance = SCENES[name]
    scene = scene_path(rel)
    if not os.path.exists(scene):
        raise SystemExit(f"{scene} not found (../shared missing?)")
    strip = STRIPPED.get(name, ())
    if distance is None and not strip:
        return scene
    return edited_copy(scene, tmp, distance, strip)


def noise_mse(images):
    """Relative MSE of one image's blocks: over every pair of seeds, half the mean square
    difference of their block means, relative to the square of the images' mean."""
    mean = sum(sum(i) for i in images) / sum(len(i) for i in images)
    pairs = list(itertools.combinations(images, 2))
    return sum(sum((x - y) ** 2 for x, y in zip(a, b)) / len(a) / 2
               for a, b in pairs) / len(pairs) / mean ** 2


def peerlight_stats(scene, flags, size, spp, seed, out):
    """Renders with `render --json`; returns its statistics."""
    r = subprocess.run([PL, "render", scene, "-o", out, "--size", f"{size}x{size}", "--spp",
                        str(spp), "--seed", str(seed), "--local-only", "--no-daemon",
                        "--json"] + flags,
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def peerlight(scene, flags, size, spp, seed, out):
    return peerlight_stats(scene, flags, size, spp, seed, out)["seconds"]


WRAPPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cycles_wrapper.py")
WRAPPER_FLAGS = ("--adaptive-threshold", "--adaptive-min-samples", "--exact-volume",
                 "--keep-transmission", "--metal-fresnel")


def cycles(scene, flags, size, spps, seed, prefix):
    """Renders with Cycles (through bench/cycles_wrapper.py when a flag needs it); returns
    {spp: (seconds, EXR path)}."""
    wrapped = any(f in WRAPPER_FLAGS for f in flags)
    script = WRAPPER if wrapped else os.path.join(SHARED, "reference", "cycles_reference.py")
    r = subprocess.run(["blender", "-b", "--factory-startup", "--python", script, "--",
                        "--scene", scene, "--out", prefix, "--res", str(size), str(size),
                        "--samples"] + [str(s) for s in spps] + ["--seed", str(seed), "--no-png"]
                       + flags,
                       capture_output=True, text=True,
                       # The system's PATH: a Python of another install first in PATH (pyenv)
                       # would become Blender's Python home, without Debian's numpy.
                       env=dict(os.environ, PATH="/usr/local/bin:/usr/bin:/bin"))
    out = {}
    for line in r.stdout.splitlines():
        if line.startswith("CYCLES_REF "):
            rec = json.loads(line[len("CYCLES_REF "):])
            spp, wall, warm = rec["spp"], rec["wall_s"], rec["warmup_1spp_s"] or 0.0
            exr = [f for f in rec["files"] if f.endswith(".exr")]
            out[spp] = ((wall - warm) * spp / (spp - 1) if spp > 1 else wall, exr[0])
    if len(out) != len(spps):
        raise SystemExit("Cycles failed:\n" + r.stdout[-2000:] + r.stderr[-2000:])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scene", choices=sorted(SCENES), default="cornell")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--spp", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--seeds", type=int, default=4)
    args = ap.parse_args()
    if args.seeds < 2:
        raise SystemExit("equal_error: --seeds must be at least 2")
    _, pl_flags, cy_flags, _ = SCENES[args.scene]
    per_side = args.size // BLOCK
    with tempfile.TemporaryDirectory() as tmp:
        scene = prepared_scene(args.scene, tmp)
        # {renderer: {spp: [(seconds, block means) per seed]}}, seeds 1..K, one after the other.
        runs = {"ours": {spp: [] for spp in args.spp}, "cycles": {spp: [] for spp in args.spp}}
        for seed in range(1, args.seeds + 1):
            for spp in args.spp:
                out = os.path.join(tmp, f"pl_{spp}_{seed}.exr")
                seconds = peerlight(scene, pl_flags, args.size, spp, seed, out)
                runs["ours"][spp].append((seconds, block_means(out, per_side)))
            theirs = cycles(scene, cy_flags, args.size, args.spp, seed,
                            os.path.join(tmp, f"cy{seed}"))
            for spp in args.spp:
                seconds, path = theirs[spp]
                runs["cycles"][spp].append((seconds, block_means(path, per_side)))
        print(f"{args.scene} {args.size}x{args.size}, {args.seeds} seeds; relative RMS noise of "
              f"{BLOCK}x{BLOCK} blocks, mean seconds, efficiency 1/(MSE x s):")
        ratios = []
        for spp in args.spp:
            row = {}
            for name in ("ours", "cycles"):
                seeds = runs[name][spp]
                mse = noise_mse([blocks for _, blocks in seeds])
                seconds = sum(t for t, _ in seeds) / len(seeds)
                row[name] = (math.sqrt(mse), seconds, 1 / (mse * seconds))
            ratio = row["ours"][2] / row["cycles"][2]
            ratios.append(ratio)
            print(f"  {spp:5d} spp: peerlight {100 * row['ours'][0]:.3f}% in "
                  f"{row['ours'][1]:.2f} s, Cycles {100 * row['cycles'][0]:.3f}% in "
                  f"{row['cycles'][1]:.2f} s: peerlight reaches equal error "
                  f"{ratio:.2f}x sooner")
        geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        print(f"{args.scene}: time to equal error, Cycles / peerlight: {geo:.2f}x (geometric "
              f"mean over the sample counts; the issue asks for at least 1.5x)")


if __name__ == "__main__":
    sys.exit(main())
