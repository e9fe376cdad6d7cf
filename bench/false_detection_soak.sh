#!/usr/bin/env bash
# False failure detections under load (issue 4 figure: "the number of false detections in a
# 5-minute run with both cores saturated by rendering").
#
# Three `peerlight node` daemons on 127.0.0.1 (--no-mdns, --threads 1 each; a worker process per
# lease with 250 ms heartbeats, killed after 2 s of silence), every core kept busy by an extra
# `peerlight render --local-only` loop at full threads (LOAD=render, the default) or by one
# `yes > /dev/null` per core (LOAD=yes), and back-to-back cluster renders through all three nodes
# (--peer x3, --no-local, --json) for DURATION seconds. Nothing fails on purpose, so every loss
# is a false detection:
#   - node losses in the renders' --json (sum of nodes[].losses; nodes[].state == "lost");
#   - workers the daemons killed for missed heartbeats ("hung: no heartbeat" in their logs);
#   - any other worker failure the daemons logged ("worker ... failed"), leases that expired
#     (renewals missed), and failed renders.
# Prints one summary line at the end (and keeps the logs if KEEP=1).
#
#   DURATION=300 bench/false_detection_soak.sh [SCENE]    (default scenes/cornell_box.gltf)
#   env: PEERLIGHT (binary; default build/bin/peerlight), DURATION (s, default 300),
#        LOAD (render|yes), SIZE (cluster render, default 320x240), SPP (default 32), KEEP=1
#
# Everything it starts (nodes and their workers, the load, renders) is stopped on exit and its
# temp dir removed.
set -euo pipefail
cd "$(dirname "$0")/.."
PL=${PEERLIGHT:-$PWD/build/bin/peerlight}
SCENE=${1:-$PWD/scenes/cornell_box.gltf}
DURATION=${DURATION:-300}
LOAD=${LOAD:-render}
SIZE=${SIZE:-320x240}
SPP=${SPP:-32}
CORES=$(nproc)
[ -x "$PL" ] || { echo "false_detection_soak: $PL not built (set PEERLIGHT=...)"; exit 2; }
[ -f "$SCENE" ] || { echo "false_detection_soak: $SCENE not found"; exit 2; }
command -v python3 >/dev/null || { echo "false_detection_soak: python3 missing"; exit 2; }

tmp=$(mktemp -d)
node_pids=()
load_pids=()
render_pid=
cleanup() {
  set +e
  [ -f "$tmp/stop" ] || touch "$tmp/stop"
  # The load loop's current render (its pid is written before each wait), then the load itself
  # (disowned jobs: no "Killed" notices).
  [ -f "$tmp/load.pid" ] && kill -9 "$(cat "$tmp/load.pid")" 2>/dev/null
  for p in "${load_pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  [ -n "$render_pid" ] && kill -9 "$render_pid" 2>/dev/null
  # Nodes: SIGTERM ends their leases and stops their workers; SIGKILL whatever is left after 3 s.
  for p in "${node_pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for _ in $(seq 30); do
    alive=0
    for p in "${node_pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${node_pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  if [ "${KEEP:-0}" = 1 ]; then echo "logs kept in $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
head -c 32 /dev/urandom > "$tmp/key"; chmod 600 "$tmp/key"
# A private copy of the binary: a rebuild during the run must not change or break it.
cp "$PL" "$tmp/peerlight"; PL=$tmp/peerlight
# Each node and the load get their own runtime dir: a node's control socket lives there, and the
# load render must not find a node daemon and preempt its leases as the machine's owner (that
# would be a real revocation, not a false detection). Nothing here may touch a daemon of this
# machine's own either.
mkdir -p "$tmp/run1" "$tmp/run2" "$tmp/run3" "$tmp/run-load" "$tmp/run-primary"

peers=()
for i in 1 2 3; do
  XDG_RUNTIME_DIR=$tmp/run$i "$PL" node --listen 127.0.0.1:0 --key-file "$tmp/key" --threads 1 --no-mdns --name "soak$i" \
    > "$tmp/node$i.out" 2> "$tmp/node$i.err" &
  node_pids+=($!)
done
for i in 1 2 3; do
  port=
  for _ in $(seq 100); do
    port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$tmp/node$i.out")
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { echo "node $i did not start:"; cat "$tmp/node$i.err"; exit 1; }
  peers+=(--peer "127.0.0.1:$port")
done

# The load: rendering on every core for the whole run.
if [ "$LOAD" = yes ]; then
  for _ in $(seq "$CORES"); do yes > /dev/null & load_pids+=($!); disown $!; done
else
  (
    while [ ! -f "$tmp/stop" ]; do
      XDG_RUNTIME_DIR=$tmp/run-load "$PL" render "$SCENE" -o "$tmp/load.exr" --local-only --threads "$CORES" \
        --size 512x384 --spp 64 > /dev/null 2>> "$tmp/load.err" &
      echo $! > "$tmp/load.pid"
      wait $! || true
    done
  ) &
  load_pids+=($!)
  disown $!
fi
sleep 1

start=$(date +%s)
renders=0 failed=0 failed_in_a_row=0
while [ $(( $(date +%s) - start )) -lt "$DURATION" ]; do
  renders=$((renders + 1))
  XDG_RUNTIME_DIR=$tmp/run-primary "$PL" render "$SCENE" -o "$tmp/cluster.exr" --no-local "${peers[@]}" --key-file "$tmp/key" \
    --size "$SIZE" --spp "$SPP" --json > "$tmp/render$renders.json" 2> "$tmp/render$renders.err" &
  render_pid=$!
  if ! wait $render_pid; then
    failed=$((failed + 1)) failed_in_a_row=$((failed_in_a_row + 1))
    echo "render $renders failed:" >&2; tail -5 "$tmp/render$renders.err" >&2
    [ $failed_in_a_row -lt 3 ] || { echo "false_detection_soak: 3 renders failed in a row"; exit 1; }
  else
    failed_in_a_row=0
  fi
  render_pid=
done
elapsed=$(( $(date +%s) - start ))
touch "$tmp/stop"

# Node logs are read while the nodes still run (their lines are flushed per line).
hung=$(cat "$tmp"/node[123].err | grep -c "hung: no heartbeat" || true)
worker_failed=$(cat "$tmp"/node[123].err | grep -c "worker [0-9]* for .* failed" || true)
expired=$(cat "$tmp"/node[123].err | grep -c "lease [0-9]* of .* expired" || true)
workers=$(cat "$tmp"/node[123].err | grep -c "worker [0-9]* started" || true)
python3 - "$tmp" "$renders" "$failed" "$elapsed" "$hung" "$worker_failed" "$LOAD" "$CORES" \
  "$expired" "$workers" <<'PY'
import glob, json, sys
tmp, renders, failed, elapsed, hung, wfail, load, cores, expired, workers = sys.argv[1:]
losses = lost_states = units = 0
secs = []
for path in glob.glob(tmp + "/render*.json"):
    try:
        j = json.load(open(path))
    except ValueError:
        continue
    secs.append(float(j.get("seconds") or 0))
    for n in j.get("nodes", []):
        losses += int(n.get("losses", 0))
        lost_states += n.get("state") == "lost"
        units += int(n.get("work_units", 0))
print(f"false_detection_soak: {elapsed} s, load={load} on {cores} cores: {renders} cluster "
      f"renders ({failed} failed, {units} work units, mean "
      f"{sum(secs) / max(len(secs), 1):.2f} s each), node losses {losses} "
      f"({lost_states} nodes ended 'lost'), hung-worker kills {hung}, "
      f"worker failures logged {wfail}, leases expired {expired} ({workers} workers started)")
PY
