#!/usr/bin/env bash
# GPU check: the node daemon creates no CUDA context, and each worker only on the GPUs of its
# lease (apps/peerlight/node_devices.h).
#
#   tests/gpu/worker_devices_check.sh        # from anywhere; uses build/ (PEERLIGHT_BUILD_DIR)
#
# Starts `peerlight node` on 127.0.0.1:0 (--no-mdns --no-control-socket), checks with nvidia-smi
# that the idle daemon is no compute process (enumerating the GPUs makes no context), then
# renders through it with `peerlight render --peer ... --no-local` and, while that runs, samples
# `nvidia-smi --query-compute-apps` every 0.3 s. Asserts: the daemon's pid is never listed; at
# least one worker is (it renders on a GPU); each worker is listed only on the GPUs of its
# `--devices` list (index 0 is the CPU, index i >= 1 is CUDA ordinal i-1; CUDA_DEVICE_ORDER is set
# to PCI_BUS_ID so that CUDA ordinals and nvidia-smi indices agree); the render succeeds and
# leased the GPUs. Also: no GPU's memory.used grows by 200 MiB or more when the idle daemon
# starts (a second measure where nvidia-smi cannot see this PID namespace's processes, as in
# some containers; the pid checks then print "inconclusive" instead of failing).
# Budget: about 1 minute. Exit status 0: passed, or no GPU (prints why); 1: failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
B=${PEERLIGHT_BUILD_DIR:-build}
PL=$B/bin/peerlight
export CUDA_DEVICE_ORDER=PCI_BUS_ID
status=0
failed() { echo "worker_devices_check: FAILED: $*"; status=1; }

[ -x "$PL" ] || { echo "worker_devices_check: no $PL (build first)"; exit 1; }
if ! command -v nvidia-smi >/dev/null; then
  echo "worker_devices_check: no nvidia-smi: nothing to check"; exit 0
fi
if ! "$PL" devices --json 2>/dev/null | grep -q '"kind": "cuda"'; then
  echo "worker_devices_check: $PL finds no CUDA GPU (CPU-only build, or no GPU): nothing to check"
  exit 0
fi
nvidia-smi -L
# nvidia-smi index -> GPU uuid.
declare -A uuidOf
while IFS=', ' read -r index uuid; do uuidOf[$index]=$uuid; done \
  < <(nvidia-smi --query-gpu=index,uuid --format=csv,noheader)

work=$(mktemp -d)
node_pid=""
render_pid=""
cleanup() {
  [ -n "$render_pid" ] && kill "$render_pid" 2>/dev/null
  [ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null  # its workers die with it (PDEATHSIG)
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
head -c 32 /dev/urandom > "$work/key" && chmod 600 "$work/key"

# GPU memory in use (MiB) by nvidia-smi index: a second measure of contexts, for containers
# where nvidia-smi cannot see this PID namespace's processes (a context costs hundreds of MiB).
mem() { nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits; }
mem > "$work/mem.before"

"$PL" node --listen 127.0.0.1:0 --key-file "$work/key" --no-mdns --no-control-socket \
  --threads 2 --name gpu-node > "$work/node.out" 2> "$work/node.err" &
node_pid=$!
port=""
for _ in $(seq 200); do
  port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$work/node.out")
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { cat "$work/node.err"; failed "the node did not start"; exit 1; }
echo "daemon pid $node_pid on 127.0.0.1:$port"

apps() { nvidia-smi --query-compute-apps=pid,gpu_uuid,process_name --format=csv,noheader; }

# 1. The idle daemon has enumerated the GPUs (it serves them) but made no context.
sleep 1
apps > "$work/idle.csv"
echo "compute processes with the daemon idle:"; cat "$work/idle.csv"
if grep -q "^$node_pid," "$work/idle.csv"; then failed "the idle daemon has a CUDA context"; fi
mem > "$work/mem.idle"
echo "GPU memory used (MiB) before the daemon / with it idle:"
join -t, "$work/mem.before" "$work/mem.idle"
while IFS=, read -r index before idle; do
  [ $((idle - before)) -lt 200 ] ||
    failed "GPU $index: $((idle - before)) MiB more in use with the idle daemon (a context?)"
done < <(join -t, "$work/mem.before" "$work/mem.idle" | tr -d ' ')

# 2. While rendering through it: samples of the compute processes.
timeout 150 "$PL" render scenes/cornell_box.gltf -o "$work/out.exr" --size 1024x1024 --spp 2048 \
  --no-local --peer "127.0.0.1:$port" --key-file "$work/key" --json \
  > "$work/render.json" 2> "$work/render.err" &
render_pid=$!
# Each worker's lease, from its argv (`--devices I,J`) while it runs: the GPU uuids it may use.
record_workers() {
  local w cmdline list i gpus
  for w in $(sed -n 's/.*worker \([0-9]*\) started for lease.*/\1/p' "$work/node.err"); do
    [ -f "$work/allowed.$w" ] && continue
    cmdline=$(tr '\0' ' ' < "/proc/$w/cmdline" 2>/dev/null) || continue
    list=$(sed -n 's/.*--devices \([0-9,]*\).*/\1/p' <<< "$cmdline")
    [ -n "$list" ] || continue
    gpus=""
    for i in ${list//,/ }; do
      [ "$i" -ge 1 ] && gpus="$gpus ${uuidOf[$((i - 1))]:-unknown-gpu-$((i - 1))}"
    done
    echo "worker $w: --devices $list (GPUs:${gpus:- none})"
    echo "$gpus" > "$work/allowed.$w"
  done
}
: > "$work/busy.csv"
while kill -0 "$render_pid" 2>/dev/null; do
  record_workers
  apps >> "$work/busy.csv"
  sleep 0.3
done
wait "$render_pid"; render_status=$?; render_pid=""
[ $render_status -eq 0 ] || { cat "$work/render.err"; failed "the render failed ($render_status)"; }
echo "compute processes seen while rendering (pid, gpu, name):"
sort -u "$work/busy.csv"
if grep -q "^$node_pid," "$work/busy.csv"; then failed "the daemon made a CUDA context"; fi

# 3. Each worker only on its lease's GPUs.
workers=$(sed -n 's/.*worker \([0-9]*\) started for lease.*/\1/p' "$work/node.err")
[ -n "$workers" ] || failed "no worker was started"
seen_worker=0
for w in $workers; do
  lines=$(grep "^$w," "$work/busy.csv" | sort -u)
  [ -n "$lines" ] && seen_worker=1
  if [ ! -f "$work/allowed.$w" ]; then
    [ -n "$lines" ] && failed "worker $w has a context but its --devices was not recorded"
    continue
  fi
  allowed=$(cat "$work/allowed.$w")
  while IFS=', ' read -r pid uuid _; do
    [ -z "$pid" ] && continue
    grep -qw -- "$uuid" <<< "$allowed" ||
      failed "worker $w has a context on $uuid, which is not in its lease (${allowed:- no GPU})"
  done <<< "$lines"
done
if [ $seen_worker -eq 0 ]; then
  if [ -s "$work/busy.csv" ] || [ -s "$work/idle.csv" ]; then
    echo "worker_devices_check: note: nvidia-smi lists compute processes, none of them ours:"
    echo "  probably another PID namespace (a container); the pid checks are inconclusive,"
    echo "  the memory check above stands"
  else
    failed "no compute process was ever listed while rendering (did a GPU render?)"
  fi
fi
# The render leased the node's GPU(s) too: more than the CPU alone.
grep -Eq '"devices": *([2-9]|[1-9][0-9])' "$work/render.json" ||
  { cat "$work/render.json"; failed "the render did not lease the node's GPUs"; }

echo "daemon log (last lines):"; tail -8 "$work/node.err"
if [ $status -eq 0 ]; then echo "worker_devices_check: OK"
else echo "worker_devices_check: FAILED"; fi
exit $status
