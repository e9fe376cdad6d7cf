#!/usr/bin/env python3
"""How closely peerlight's image agrees with Cycles' of the same glTF (issue 10's targets):
both render the scene at the same size and sample count, one after the other, and the images
are compared block by block as bench/block_compare.py does (32 x 32 blocks: 8x8 pixels at
256x256): relative RMS of the blocks, per-block relative error, and the mean's error.

    bench/cycles_agreement.py --scene NAME [--size 256] [--spp 512] [--keep DIR]

NAME is one of bench/equal_error.py's SCENES (glass, bottle, toycar, cornell, helmet, sponza).
--keep DIR keeps both EXRs (ours.exr, cycles.exr) there. Needs Debian's `blender` and
`../shared` (the project's own glass scene needs only the reference script there).
"""
import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from block_compare import block_means, compare  # noqa: E402
from equal_error import SCENES, cycles, peerlight_stats, prepared_scene  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scene", choices=sorted(SCENES), required=True)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--spp", type=int, default=512)
    ap.add_argument("--keep", default=None)
    args = ap.parse_args()
    _, pl_flags, cy_flags, _ = SCENES[args.scene]
    with tempfile.TemporaryDirectory() as tmp:
        scene = prepared_scene(args.scene, tmp)
        ours = os.path.join(tmp, "ours.exr")
        stats = peerlight_stats(scene, pl_flags, args.size, args.spp, 1, ours)
        seconds, theirs = cycles(scene, cy_flags, args.size, [args.spp], 1,
                                 os.path.join(tmp, "cycles"))[args.spp]
        rms, per_block, mean = compare(block_means(ours), block_means(theirs))
        print(f"{args.scene} {args.size}x{args.size} {args.spp} spp: peerlight {stats['seconds']:.1f}"
              f" s, Cycles {seconds:.1f} s; relative RMS {100 * rms:.2f}%, per-block "
              f"{100 * per_block:.2f}%, mean {100 * mean:+.2f}%")
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            shutil.copy(ours, os.path.join(args.keep, "ours.exr"))
            shutil.copy(theirs, os.path.join(args.keep, "cycles.exr"))


if __name__ == "__main__":
    sys.exit(main())
