#!/usr/bin/env python3
"""Two builds' render times, compared on a machine whose speed drifts: both render at once, one
pinned to each of two cores, and swap cores each round.

Run one after the other, the same build's render time on the project's 2-core VM moved by up to
30% from minute to minute; run at once, both see the same minute. One core may be faster than
the other (on this VM, by up to 20%): the geometric mean of the ratios of two rounds that swap
cores cancels that. Prints each round's seconds and, per swapped pair, B's time over A's.

    bench/ab_render.py BUILD_A BUILD_B [--scene SCENE] [--spp N] [--size WxH] [--rounds N]
                       [-- EXTRA RENDER FLAGS]

BUILD_A, BUILD_B: peerlight binaries (say a worktree's build/bin/peerlight and this one's).
Times: `render --json`'s seconds (the render, not the load), --local-only, one thread each.
Default scene: ../shared's Sponza.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--scene",
                    default=os.path.join(SHARED, "scenes/sponza-crytek-rendu/sponza.gltf"))
    ap.add_argument("--spp", default="16")
    ap.add_argument("--size", default="256x256")
    ap.add_argument("--rounds", type=int, default=6, help="an even number: pairs swap cores")
    ap.add_argument("extra", nargs="*", help="more render flags (after --)")
    args = ap.parse_args()
    if os.cpu_count() < 2:
        raise SystemExit("ab_render: needs two cores")
    if not os.path.exists(args.scene):
        raise SystemExit(f"ab_render: {args.scene} not found")
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            cores = ("0", "1") if r % 2 == 0 else ("1", "0")
            procs = []
            for build, core, tag in zip((args.a, args.b), cores, "ab"):
                cmd = ["taskset", "-c", core, build, "render", args.scene, "-o",
                       os.path.join(tmp, f"{tag}.exr"), "--size", args.size, "--spp", args.spp,
                       "--local-only", "--no-daemon", "--threads", "1", "--json"] + args.extra
                procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                              stderr=subprocess.DEVNULL, text=True))
            seconds = []
            for p in procs:
                out, _ = p.communicate()
                if p.returncode != 0:
                    raise SystemExit(f"ab_render: a render failed (exit {p.returncode})")
                seconds.append(json.loads(out.strip().splitlines()[-1])["seconds"])
            times.append(seconds)
            print(f"round {r + 1}: A on core {cores[0]} {seconds[0]:.2f} s, "
                  f"B on core {cores[1]} {seconds[1]:.2f} s", flush=True)
    pairs = [math.sqrt((times[i][1] / times[i][0]) * (times[i + 1][1] / times[i + 1][0]))
             for i in range(0, len(times) - 1, 2)]
    if pairs:
        mean = math.exp(sum(math.log(p) for p in pairs) / len(pairs))
        print(f"B / A render time, per swapped pair: {' '.join(f'{p:.3f}' for p in pairs)}; "
              f"geometric mean {mean:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
