#!/usr/bin/env bash
# GPU check: build, run the GPU tests, and print CPU vs GPU throughput on the same scenes.
#
#   tests/gpu/check.sh            # from anywhere; works in the repository root
#
# Steps: ./run build (installs missing packages, configures build/ with CUDA when nvcc is
# found); bvh_test and gpu_test (gpu_test compares the GPU with the CPU device within noise,
# and checks bitwise reproducibility on the GPU); then peerlight-gpu-bench on the Cornell box,
# DamagedHelmet and Sponza (when ../shared has them): samples/s and Mrays/s for the CPU device
# (all cores) and each GPU at the same settings, plus larger GPU-only runs.
# Budget: about 8 minutes on a fresh 16-core H100 machine (most of it package install+build).
#
# Exit status: 0 when everything ran and passed, also on a machine without a GPU (then it
# prints "check.sh: no GPU" and skips the GPU parts); 1 when the build or a test failed.
# Set PEERLIGHT_SHARED_DIR to point at the shared scenes (default: ../shared, else ./shared),
# and PEERLIGHT_BUILD_DIR to use an existing, configured build directory instead of
# ./run build. PEERLIGHT_PREBUILT=1 skips building altogether and uses the binaries already in
# PEERLIGHT_BUILD_DIR: for GPU machines that cannot install packages (tests/gpu/bundle.sh
# packs such a build with its libraries and the shared scenes).
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
SHARED=${PEERLIGHT_SHARED_DIR:-$ROOT/../shared}
if [ -z "${PEERLIGHT_SHARED_DIR:-}" ] && [ ! -d "$SHARED/scenes" ] &&
   [ -d "$ROOT/shared/scenes" ]; then
  SHARED=$ROOT/shared  # a copy of the shared data inside the checkout
fi
# The tests find the shared scenes through this CMake cache entry (first configure only).
export PEERLIGHT_CMAKE_ARGS="${PEERLIGHT_CMAKE_ARGS:-} -DPEERLIGHT_SHARED_DIR=$SHARED"
B=${PEERLIGHT_BUILD_DIR:-build}
status=0

section() { printf '\n== %s ==\n' "$*"; }

section "build"
start=$(date +%s)
if [ -n "${PEERLIGHT_PREBUILT:-}" ]; then
  echo "check.sh: using the prebuilt binaries in $B"
else
build_cmd=(./run build)
[ "$B" = build ] || build_cmd=(cmake --build "$B" -j "$(nproc)")
if ! "${build_cmd[@]}"; then
  echo "check.sh: build failed"
  exit 1
fi
echo "check.sh: build took $(( $(date +%s) - start )) s"
fi

section "devices"
command -v nvidia-smi >/dev/null && nvidia-smi -L || echo "(no nvidia-smi)"
"$B"/bin/peerlight devices || status=1

if [ ! -x "$B"/tests/gpu_test ]; then
  echo "check.sh: no GPU: this build has no CUDA device (nvcc not found at configure time)"
  exit $status
fi
has_gpu=0
if "$B"/bin/peerlight devices --json 2>/dev/null | grep -q '"kind": "cuda"'; then
  has_gpu=1
fi

section "tests"
timeout 300 "$B"/tests/bvh_test --gtest_brief=1 || { echo "check.sh: bvh_test FAILED"; status=1; }
timeout 420 "$B"/tests/gpu_test || { echo "check.sh: gpu_test FAILED"; status=1; }
# The device numbering of the daemon and its workers, with the real GPUs enumerated.
timeout 120 "$B"/tests/node_devices_test --gtest_brief=1 || { echo "check.sh: node_devices_test FAILED"; status=1; }

if [ $has_gpu -eq 0 ]; then
  echo
  echo "check.sh: no GPU: CUDA support is built, but no CUDA GPU (or no driver) was found;"
  echo "          the GPU tests skipped and there are no GPU figures"
  exit $status
fi

section "throughput: same scene, same settings, CPU (all cores) vs GPU"
bench() {
  timeout 240 "$B/bin/peerlight-gpu-bench" "$@" || { echo "check.sh: bench failed: $*"; status=1; }
}
bench scenes/cornell_box.gltf --size 512x512 --spp 64
helmet=$SHARED/scenes/khronos-gltf/DamagedHelmet/glTF/DamagedHelmet.gltf
sponza=$SHARED/scenes/sponza-crytek-rendu/sponza.gltf
if [ -f "$helmet" ]; then bench "$helmet" --size 512x512 --spp 32 --env 1,1,1;
else echo "(DamagedHelmet not found under $SHARED)"; fi
if [ -f "$sponza" ]; then bench "$sponza" --size 512x512 --spp 16;
else echo "(Sponza not found under $SHARED)"; fi

section "GPU only: larger runs (steadier GPU figures)"
bench scenes/cornell_box.gltf --size 1024x1024 --spp 256 --device cuda
[ -f "$helmet" ] && bench "$helmet" --size 1024x1024 --spp 128 --env 1,1,1 --device cuda
[ -f "$sponza" ] && bench "$sponza" --size 1024x1024 --spp 64 --device cuda

section "GPU with the default tiling of peerlight render (64x64 tiles, 4-sample passes)"
bench scenes/cornell_box.gltf --size 512x512 --spp 64 --tile 64 --pass 4 --device cuda

section "peerlight render on the local GPU (--device cuda), and a GPU leased over the network"
timeout 120 "$B/bin/peerlight" render scenes/cornell_box.gltf -o /tmp/pl-check-gpu.exr \
  --size 512x512 --spp 64 --device cuda || { echo "check.sh: render --device cuda failed"; status=1; }
# A node on this machine serves its devices (the GPUs and the CPU); a Primary with --no-local
# leases them over 127.0.0.1 exactly as it would a remote machine's.
work=$(mktemp -d)
head -c 32 /dev/urandom > "$work/key" && chmod 600 "$work/key"
"$B/bin/peerlight" node --listen 127.0.0.1:0 --key-file "$work/key" --no-mdns --no-control-socket --name gpu-node \
  > "$work/node.out" 2> "$work/node.err" &
node_pid=$!
port=""
for _ in $(seq 100); do
  port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$work/node.out")
  [ -n "$port" ] && break
  sleep 0.1
done
if [ -z "$port" ]; then
  echo "check.sh: the node did not start"; cat "$work/node.err"; status=1
else
  timeout 60 "$B/bin/peerlight" nodes --peer "127.0.0.1:$port" --key-file "$work/key" --no-mdns \
    | tee "$work/nodes.txt" || { echo "check.sh: peerlight nodes failed"; status=1; }
  grep -qi cuda "$work/nodes.txt" || { echo "check.sh: the node does not advertise its GPU"; status=1; }
  if timeout 120 "$B/bin/peerlight" render scenes/cornell_box.gltf -o "$work/remote.exr" \
      --size 512x512 --spp 256 --no-local --peer "127.0.0.1:$port" --key-file "$work/key" \
      --json > "$work/remote.json"; then
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); n=r["nodes"][0]; print("remote render: %.3f s, %.1f M samples/s; node: %s devices leased, %s work units" % (r["seconds"], r["samples_per_second"]/1e6, n.get("devices"), n.get("work_units"))); sys.exit(0 if n.get("devices", 0) >= 2 else 1)' "$work/remote.json" \
      || { echo "check.sh: the GPU was not leased"; cat "$work/remote.json"; status=1; }
  else
    echo "check.sh: remote render failed"; cat "$work/remote.json"; status=1
  fi
  tail -5 "$work/node.err"
fi
kill "$node_pid" 2>/dev/null; wait "$node_pid" 2>/dev/null
rm -rf "$work"

section "a render handed to this machine's node daemon (it renders through a worker)"
# The daemon becomes the Primary of the job (apps/peerlight/render_job.h) and leases its own
# node: its GPUs render in a worker process; the command gets the film back and writes it.
work=$(mktemp -d)
head -c 32 /dev/urandom > "$work/key" && chmod 600 "$work/key"
"$B/bin/peerlight" node --listen 127.0.0.1:0 --key-file "$work/key" --no-mdns \
  --control-socket "$work/node.sock" --name gpu-daemon > "$work/node.out" 2> "$work/node.err" &
node_pid=$!
for _ in $(seq 100); do [ -S "$work/node.sock" ] && break; sleep 0.1; done
if timeout 120 "$B/bin/peerlight" render scenes/cornell_box.gltf -o "$work/job.exr" \
    --size 512x512 --spp 256 --control-socket "$work/node.sock" --key-file "$work/key" \
    --json > "$work/job.json"; then
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); n=r["nodes"][0]; print("daemon job: %.3f s, %.1f M samples/s; own node: %s devices leased, %s work units; node_daemon=%s" % (r["seconds"], r["samples_per_second"]/1e6, n.get("devices"), n.get("work_units"), r.get("node_daemon"))); sys.exit(0 if r.get("node_daemon") and n.get("devices", 0) >= 2 else 1)' "$work/job.json" \
    || { echo "check.sh: the daemon job did not lease the GPU"; cat "$work/job.json"; status=1; }
else
  echo "check.sh: render through the daemon failed"; cat "$work/job.json"; status=1
fi
grep -E "render job|worker" "$work/node.err" | tail -6
kill "$node_pid" 2>/dev/null; wait "$node_pid" 2>/dev/null
rm -rf "$work"

section "the daemon opens no GPU; each worker only the GPUs of its lease"
timeout 240 tests/gpu/worker_devices_check.sh || status=1

echo
if [ $status -eq 0 ]; then echo "check.sh: OK"; else echo "check.sh: FAILED (see above)"; fi
exit $status
