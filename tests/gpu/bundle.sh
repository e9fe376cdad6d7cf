#!/usr/bin/env bash
# Packs a CUDA build for a GPU machine that cannot install packages: the peerlight binaries
# and GPU tests from build/, the shared libraries they need that are not part of the base
# system, and the shared scenes the GPU check uses, into .devbundle/bundle.tar.xz.
#
#   ./run build && tests/gpu/bundle.sh
#   # on the GPU machine, in the repository root:
#   mkdir -p .devbundle/x && tar xJf .devbundle/bundle.tar.xz -C .devbundle/x
#   export LD_LIBRARY_PATH=$PWD/.devbundle/x/lib
#   PEERLIGHT_PREBUILT=1 PEERLIGHT_BUILD_DIR=.devbundle/x/build \
#     PEERLIGHT_SHARED_DIR=$PWD/.devbundle/x/shared tests/gpu/check.sh
#
# The test binaries have the source and shared-data paths of this machine compiled in; the
# GPU machine needs the same paths (symbolic links will do): see the README's GPU section.
set -euo pipefail
cd "$(dirname "$0")/../.."
SHARED=${PEERLIGHT_SHARED_DIR:-../shared}
out=.devbundle
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/build/bin" "$stage/build/tests" "$stage/lib" "$stage/shared/scenes/khronos-gltf"
bins=(build/bin/peerlight build/bin/peerlight-gpu-bench build/tests/gpu_test build/tests/bvh_test
      build/tests/node_devices_test)
cp build/bin/peerlight build/bin/peerlight-gpu-bench "$stage/build/bin/"
cp build/tests/gpu_test build/tests/bvh_test build/tests/node_devices_test "$stage/build/tests/"
strip "$stage"/build/bin/* "$stage"/build/tests/*
# Every shared library outside glibc, libstdc++ and libgcc (which any x86-64 Linux has).
for b in "${bins[@]}"; do ldd "$b" | awk '$3 ~ /^\// {print $3}'; done | sort -u |
  grep -Ev '/(libc|libm|libstdc\+\+|libgcc_s|libpthread|libdl|librt|ld-linux[^/]*)\.so' |
  while read -r lib; do cp -L "$lib" "$stage/lib/"; done
if [ -d "$SHARED/scenes" ]; then
  cp -r "$SHARED/scenes/khronos-gltf/DamagedHelmet" "$stage/shared/scenes/khronos-gltf/"
  rm -rf "$stage/shared/scenes/khronos-gltf/DamagedHelmet/"{glTF-Binary,screenshot}
  cp -r "$SHARED/scenes/sponza-crytek-rendu" "$stage/shared/scenes/"
fi
mkdir -p "$out"
tar cf - -C "$stage" . | xz -T0 -6 > "$out/bundle.tar.xz"
echo "bundle.sh: wrote $out/bundle.tar.xz ($(du -h "$out/bundle.tar.xz" | cut -f1))"
