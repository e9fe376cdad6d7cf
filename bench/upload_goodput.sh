#!/usr/bin/env bash
# Upload goodput of render data to one Render Node, against iperf3 on the same path:
#   1. loopback (127.0.0.1);
#   2. two network namespaces joined by a veth pair shaped to 1 Gbit/s with tbf (a studio LAN).
# Goodput = render-data bytes sent (compressed, as on the wire) / upload seconds, from the
# Primary's --json. Needs root (namespaces), iperf3 and a built peerlight.
#
#   bench/upload_goodput.sh [SCENE]     (default: ../shared Sponza)
#
# Everything it starts (namespaces, nodes, iperf3 servers) is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
PL=$PWD/build/bin/peerlight
SCENE=${1:-$PWD/../shared/scenes/sponza-crytek-rendu/sponza.gltf}
[ -f "$SCENE" ] || { echo "upload_goodput: $SCENE not found"; exit 2; }
command -v iperf3 >/dev/null || { echo "upload_goodput: iperf3 missing (apt-get install iperf3)"; exit 2; }
tmp=$(mktemp -d)
NSA=pl-bench-a-$$ NSB=pl-bench-b-$$
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  ip netns del "$NSA" 2>/dev/null || true
  ip netns del "$NSB" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
head -c 32 /dev/urandom > "$tmp/key"; chmod 600 "$tmp/key"

# start_node PREFIX LISTEN: starts a node (with an optional `ip netns exec NS` prefix), sets PORT.
start_node() {
  local prefix=$1 listen=$2
  $prefix "$PL" node --listen "$listen" --key-file "$tmp/key" --threads 1 --no-mdns --no-control-socket > "$tmp/node.out" 2>"$tmp/node.err" &
  pids+=($!)
  for _ in $(seq 100); do
    PORT=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$tmp/node.out")
    [ -n "$PORT" ] && return 0
    sleep 0.1
  done
  echo "node did not start"; cat "$tmp/node.err"; exit 1
}

# measure LABEL PREFIX_PRIMARY HOST PREFIX_NODE LISTEN_HOST
measure() {
  local label=$1 pprefix=$2 host=$3 nprefix=$4 listen=$5
  $nprefix iperf3 -s -1 -B "$listen" -p 5299 > /dev/null 2>&1 &
  pids+=($!)
  sleep 0.5
  local bps
  bps=$($pprefix iperf3 -c "$host" -p 5299 -t 3 -J | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])')
  start_node "$nprefix" "$listen:0"
  $pprefix "$PL" render "$SCENE" -o "$tmp/out.exr" --size 64x64 --spp 1 --no-local \
    --peer "$host:$PORT" --key-file "$tmp/key" --json > "$tmp/render.json"
  python3 - "$label" "$bps" "$tmp/render.json" <<'PY'
import json, sys
label, bps, path = sys.argv[1], float(sys.argv[2]), sys.argv[3]
n = json.load(open(path))["nodes"][0]
sent, secs = n["render_data_bytes_sent"], n["upload_seconds"]
good = sent * 8 / secs if secs > 0 else 0
print(f"{label}: iperf3 {bps/1e9:.2f} Gbit/s; render data {sent/1e6:.1f} MB sent "
      f"({n['render_data_bytes_raw']/1e6:.1f} MB raw) in {secs:.3f} s = {good/1e9:.2f} Gbit/s "
      f"= {good/bps:.2f} of iperf3")
PY
}

measure loopback "" 127.0.0.1 "" 127.0.0.1

ip netns add "$NSA"; ip netns add "$NSB"
ip link add "veth-a$$" type veth peer name "veth-b$$"
ip link set "veth-a$$" netns "$NSA"; ip link set "veth-b$$" netns "$NSB"
ip -n "$NSA" addr add 10.77.0.1/24 dev "veth-a$$"; ip -n "$NSB" addr add 10.77.0.2/24 dev "veth-b$$"
for ns in "$NSA" "$NSB"; do ip -n "$ns" link set lo up; done
ip -n "$NSA" link set "veth-a$$" up; ip -n "$NSB" link set "veth-b$$" up
ip netns exec "$NSA" tc qdisc add dev "veth-a$$" root tbf rate 1gbit burst 256kb latency 20ms
ip netns exec "$NSB" tc qdisc add dev "veth-b$$" root tbf rate 1gbit burst 256kb latency 20ms
measure "veth 1 Gbit/s" "ip netns exec $NSA" 10.77.0.2 "ip netns exec $NSB" 10.77.0.2
