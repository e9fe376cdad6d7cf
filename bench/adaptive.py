#!/usr/bin/env python3
"""Render until clean against a fixed sample count, ours and Cycles' (issue 10): how much sooner
each renderer's adaptive sampling reaches the error of its fixed-spp render, on the same machine,
one after the other.

For each renderer, the scene is rendered with several seeds at --spp (every pixel takes every
sample) and at --spp with a noise threshold (peerlight `--noise-threshold T`: 16x16 tiles whose
worst pixel's estimate is under T stop; Cycles `use_adaptive_sampling` with `adaptive_threshold
T`: pixels stop; both estimate a pixel's error from two half-buffers, |I - A| summed over R, G,
B over sqrt(I)). The error of one image is noise, measured as in bench/equal_error.py: half the
mean square difference of two seeds' images, relative to the square of the image's mean,
averaged over every pair of seeds, over 16x16-pixel blocks ("block") and over single pixels
("pixel"). Efficiency = 1 / (MSE x seconds); the ratio of an adaptive render's efficiency to
the fixed render's is how many times sooner it reaches the fixed render's error (as long as its
error falls as 1 / time).

    bench/adaptive.py [--scene NAME (bench/equal_error.py's SCENES)] [--size 256] [--spp 256]
                      [--threshold 0.05 ...] [--seeds 3]

Times as in bench/equal_error.py (peerlight's render seconds; Cycles' wall time less its 1-spp
warm-up). Needs Debian's `blender` and `../shared`.
"""
import argparse
import math
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from block_compare import block_means  # noqa: E402
from equal_error import (BLOCK, SCENES, cycles, noise_mse, peerlight_stats,  # noqa: E402
                         prepared_scene)


def summary(runs, size):
    """(block noise, pixel noise, mean seconds) of [(seconds, pixel values)] over the seeds."""
    per_block = size // BLOCK

    def blocks(pixels):
        out = [0.0] * (per_block * per_block)
        for i, v in enumerate(pixels):
            y, x = divmod(i, size)
            out[(y // BLOCK) * per_block + x // BLOCK] += v / (BLOCK * BLOCK)
        return out

    block_mse = noise_mse([blocks(p) for _, p in runs])
    pixel_mse = noise_mse([p for _, p in runs])
    return block_mse, pixel_mse, sum(t for t, _ in runs) / len(runs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scene", choices=sorted(SCENES), default="cornell")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--spp", type=int, default=256)
    ap.add_argument("--threshold", type=float, nargs="+", default=[0.05])
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    if args.seeds < 2:
        raise SystemExit("adaptive: --seeds must be at least 2")
    _, pl_flags, cy_flags, _ = SCENES[args.scene]
    modes = [0.0] + args.threshold  # 0: fixed spp
    with tempfile.TemporaryDirectory() as tmp:
        scene = prepared_scene(args.scene, tmp)
        # {(renderer, threshold): [(seconds, pixel values)]}; mean spp of ours per threshold
        runs = {(r, t): [] for r in ("ours", "cycles") for t in modes}
        spp_used = {t: [] for t in modes}
        for seed in range(1, args.seeds + 1):
            for t in modes:
                out = os.path.join(tmp, f"pl_{t}_{seed}.exr")
                flags = pl_flags + (["--noise-threshold", str(t)] if t > 0 else [])
                stats = peerlight_stats(scene, flags, args.size, args.spp, seed, out)
                # As many blocks per side as pixels: each pixel's value.
                runs[("ours", t)].append((stats["seconds"], block_means(out, args.size)))
                spp_used[t].append(stats["mean_spp"])
                extra = ["--adaptive-threshold", str(t)] if t > 0 else []
                theirs = cycles(scene, cy_flags + extra, args.size, [args.spp], seed,
                                os.path.join(tmp, f"cy_{t}_{seed}"))
                seconds, path = theirs[args.spp]
                runs[("cycles", t)].append((seconds, block_means(path, args.size)))
                print(f"  seed {seed}, threshold {t}: peerlight {stats['seconds']:.2f} s "
                      f"({stats['mean_spp']:.1f} spp), Cycles {seconds:.2f} s", flush=True)
        print(f"{args.scene} {args.size}x{args.size}, {args.spp} spp, {args.seeds} seeds; "
              f"relative RMS noise of {BLOCK}x{BLOCK} blocks and of pixels, mean seconds; "
              f"'sooner': the fixed render's time over the time this one needs for the fixed "
              f"render's error (efficiency ratio), by blocks / by pixels:")
        for name in ("ours", "cycles"):
            fixed_block, fixed_pixel, fixed_s = summary(runs[(name, 0.0)], args.size)
            for t in modes:
                block, pixel, seconds = summary(runs[(name, t)], args.size)
                label = "fixed" if t == 0 else f"threshold {t}"
                spp = (f", {sum(spp_used[t]) / len(spp_used[t]):.1f} spp on average"
                       if name == "ours" else "")
                line = (f"  {'peerlight' if name == 'ours' else 'Cycles':9s} {label:16s} "
                        f"block {100 * math.sqrt(block):.3f}%, pixel {100 * math.sqrt(pixel):.2f}%,"
                        f" {seconds:.2f} s{spp}")
                if t > 0:
                    line += (f": sooner {fixed_block * fixed_s / (block * seconds):.2f}x / "
                             f"{fixed_pixel * fixed_s / (pixel * seconds):.2f}x")
                print(line)
        for t in modes:
            ob, op, os_ = summary(runs[("ours", t)], args.size)
            cb, cp, cs = summary(runs[("cycles", t)], args.size)
            label = "fixed spp" if t == 0 else f"threshold {t}"
            print(f"  {label}: peerlight reaches equal error {cb * cs / (ob * os_):.2f}x "
                  f"(blocks) / {cp * cs / (op * os_):.2f}x (pixels) sooner than Cycles")


if __name__ == "__main__":
    sys.exit(main())
