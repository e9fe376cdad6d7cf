#!/usr/bin/env python3
"""Compares two linear EXR images of one size block by block, as the Cycles reference test does
(tests/core/render/cycles_reference_test.cpp): the image is cut into 32x32 blocks, and of each
block's mean R + G + B it prints

  relative RMS  sqrt(mean over blocks of (ours - ref)^2) / mean(ref)
  per-block     sqrt(mean over blocks of ((ours - ref) / ref)^2): each block against its own value
  mean error    (mean(ours) - mean(ref)) / mean(ref), signed

    bench/block_compare.py OURS.exr REFERENCE.exr

No EXR library needed (the reader of tests/blender/addon_test.py: 32-bit float scanlines,
uncompressed or ZIP)."""
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "blender"))
from addon_test import read_exr_channels  # noqa: E402

BLOCKS = 32


def block_means(path, blocks=BLOCKS):
    """The mean R + G + B of each of blocks x blocks blocks of a square image, row by row."""
    ch = read_exr_channels(path)
    n = len(ch["R"])
    size = int(round(math.sqrt(n)))
    if size * size != n or size % blocks:
        raise SystemExit("%s: %d pixels, not a square image whose side is a multiple of %d"
                         % (path, n, blocks))
    block = size // blocks
    sums = [0.0] * (blocks * blocks)
    for i in range(n):
        y, x = divmod(i, size)
        sums[(y // block) * blocks + x // block] += ch["R"][i] + ch["G"][i] + ch["B"][i]
    return [s / (block * block) for s in sums]


def compare(ours, ref):
    """(relative RMS, per-block, mean error) of two lists of block means."""
    mean_ref = sum(ref) / len(ref)
    rms = math.sqrt(sum((o - r) ** 2 for o, r in zip(ours, ref)) / len(ref)) / mean_ref
    lit = [(o, r) for o, r in zip(ours, ref) if r > 0]
    per_block = math.sqrt(sum(((o - r) / r) ** 2 for o, r in lit) / len(lit))
    return rms, per_block, (sum(ours) - sum(ref)) / sum(ref)


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    ours, ref = block_means(sys.argv[1]), block_means(sys.argv[2])
    rms, per_block, mean_error = compare(ours, ref)
    print("relative RMS %.4f  per-block %.4f  mean error %+.4f  (%d blocks)"
          % (rms, per_block, mean_error, len(ref)))


if __name__ == "__main__":
    main()
