#!/bin/bash
# Where peerlight's glTF-BRDF Cornell box differs from the Cycles reference: the Smith G term.
#
# Blender 3.4's Cycles (the reference, ../shared/reference) gives its GGX Glossy BSDF the
# separable G = G1(wo) G1(wi) (its kernel source, closure/bsdf_microfacet.h, shipped in
# /usr/share/blender/scripts/addons/cycles/source), while the glTF specification, which
# peerlight follows, asks for the height-correlated G2. This builds cycles_reference_test a
# second time with -DPL_STUDY_SEPARABLE_SMITH (core/kernel/bsdf.h: ggxV() then uses Cycles' G),
# runs it and the normal one, and prints both lines: relative RMS of block means, per-block
# relative error, and the means. If the G term is the difference, the study build agrees with
# Cycles far better, block by block.
#
#   bench/cycles_smith_study.sh [slow]   # slow: the reference's own 512x512 at 1024 spp
#
# Needs ../shared (the scene and the reference) and the normal build (./run build). The study
# build goes to build-study/ (about 5 minutes on 2 cores the first time).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
study="${STUDY_BUILD:-$root/build-study}"
test=cycles_reference_test
[ "${1:-}" = slow ] && test=cycles_reference_slow_test
if [ ! -d "$root/../shared/reference" ]; then
  echo "cycles_smith_study: ../shared/reference not found; nothing to compare with" >&2
  exit 2
fi
cmake -S "$root" -B "$study" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPEERLIGHT_CUDA=OFF \
  -DCMAKE_CXX_FLAGS=-DPL_STUDY_SEPARABLE_SMITH > /dev/null
cmake --build "$study" --target "$test" > /dev/null
cmake --build "$root/build" --target "$test" > /dev/null
echo "height-correlated G (glTF specification, peerlight):"
"$root/build/tests/$test" 2>&1 | grep "^cornell box" || true
echo "separable G (Blender 3.4 Cycles):"
"$study/tests/$test" 2>&1 | grep "^cornell box" || true
