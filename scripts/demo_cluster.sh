#!/usr/bin/env bash
# The cluster demo behind `./run demo`: three `peerlight node` daemons on this machine, one
# `peerlight render` through them, each node's share printed, demo.png written.
#
#   scripts/demo_cluster.sh [PEERLIGHT_BINARY [OUTPUT]]    (defaults: build/bin/peerlight demo.png)
#
# Two modes:
# - mDNS (when run as root with ip, unshare, dbus-daemon and avahi-daemon installed): a fresh
#   network namespace with only `lo`, a private system bus and an avahi-daemon in it, three
#   nodes advertising `_peerlight._tcp`; the render is given no peers at all and finds them by
#   mDNS. Nothing is advertised outside the namespace.
# - static (otherwise, or with PEERLIGHT_DEMO_STATIC=1): three nodes on 127.0.0.1, no mDNS, and
#   the render names them with --peer.
# Both use a fresh cluster key in a temp dir (PEERLIGHT_KEY_FILE), never the user's key.
# Everything started here (nodes, dbus-daemon, avahi-daemon, the namespace, the temp dir) is
# removed on exit, on failure and on Ctrl-C too.
#
# Environment: PEERLIGHT_DEMO_STATIC=1 forces static mode; PEERLIGHT_DEMO_ARGS replaces the
# render options (default "--spp 256 --size 512x512").
set -euo pipefail
cd "$(dirname "$0")/.."

PEERLIGHT=$(realpath "${1:-build/bin/peerlight}")
OUTPUT=${2:-demo.png}
SCENE=scenes/cornell_box.gltf
read -r -a RENDER_ARGS <<<"${PEERLIGHT_DEMO_ARGS:---spp 256 --size 512x512}"
NODES=3

tool() { command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || true; }

TMP=$(mktemp -d /tmp/peerlight-demo-XXXXXX)
chmod 755 "$TMP"
NS=""
PIDS=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$NS" ]; then
    for pid in $(ip netns pids "$NS" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$NS" 2>/dev/null || true
  fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() {
  echo "demo: $*" >&2
  exit 1
}

head -c 32 /dev/urandom >"$TMP/cluster.key"
chmod 600 "$TMP/cluster.key"
export PEERLIGHT_KEY_FILE="$TMP/cluster.key"

mode=static
if [ "${PEERLIGHT_DEMO_STATIC:-0}" != 1 ] && [ "$(id -u)" -eq 0 ]; then
  mode=mdns
  for t in ip unshare dbus-daemon avahi-daemon; do
    if [ -z "$(tool "$t")" ]; then
      echo "demo: $t is not installed: static peers instead"
      mode=static
      break
    fi
  done
fi
[ "$mode" = static ] && [ "$(id -u)" -ne 0 ] && [ "${PEERLIGHT_DEMO_STATIC:-0}" != 1 ] &&
  echo "demo: not root (no network namespace, no private avahi-daemon): static peers on 127.0.0.1"

# Waits until file $1 contains $2 (at most $3 seconds); prints nothing, fails on time out.
wait_for() {
  for _ in $(seq $((${3} * 20))); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

# Runs a command in the namespace when there is one (`ip netns exec` execs it: same pid).
in_ns() {
  if [ -n "$NS" ]; then ip netns exec "$NS" "$@"; else "$@"; fi
}
# The same in the background, stdout to $1 and stderr to $2; its pid is added to PIDS. Not a
# subshell: the pid is the command's own, so that cleanup's kill reaches it.
start_bg() {
  local out=$1 err=$2
  shift 2
  if [ -n "$NS" ]; then
    ip netns exec "$NS" "$@" >"$out" 2>"$err" &
  else
    "$@" >"$out" 2>"$err" &
  fi
  PIDS+=($!)
}

if [ "$mode" = mdns ]; then
  ns_name="peerlight-demo-$$"
  if ip netns add "$ns_name" 2>"$TMP/netns.err"; then
    NS=$ns_name
    ip netns exec "$NS" ip link set lo up
  else
    echo "demo: cannot create a network namespace ($(cat "$TMP/netns.err")): static peers instead"
    mode=static
  fi
fi

if [ "$mode" = mdns ]; then
  # A private system bus (a socket in $TMP) and an avahi-daemon on it inside the namespace;
  # avahi's fixed pid file path gets a private tmpfs /run.
  cat >"$TMP/bus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$TMP/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/> <allow own="*"/>
    <allow send_type="method_call"/> <allow send_type="signal"/>
    <allow send_type="method_return"/> <allow send_type="error"/>
    <allow receive_type="method_call"/> <allow receive_type="signal"/>
    <allow receive_type="method_return"/> <allow receive_type="error"/>
  </policy>
</busconfig>
EOF
  cat >"$TMP/avahi.conf" <<EOF
[server]
host-name=peerlight-demo
use-ipv4=yes
use-ipv6=no
ratelimit-interval-usec=1000000
ratelimit-burst=1000
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
EOF
  export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$TMP/bus"
  start_bg "$TMP/dbus.out" "$TMP/dbus.err" \
    "$(tool dbus-daemon)" --config-file="$TMP/bus.conf" --nofork --nopidfile
  for _ in $(seq 100); do [ -S "$TMP/bus" ] && break; sleep 0.05; done
  [ -S "$TMP/bus" ] || die "dbus-daemon did not start: $(cat "$TMP/dbus.err")"
  start_bg "$TMP/avahi.out" "$TMP/avahi.err" "$(tool unshare)" -m --propagation private \
    /bin/sh -c "mount -t tmpfs tmpfs /run && mkdir /run/avahi-daemon && exec $(tool avahi-daemon) \
     -f $TMP/avahi.conf --no-drop-root --no-chroot --no-rlimits --no-proc-title"
  wait_for "$TMP/avahi.err" "Server startup complete" 10 ||
    die "avahi-daemon did not start: $(cat "$TMP/avahi.err")"
  echo "demo: network namespace $NS with its own dbus-daemon and avahi-daemon"
fi

# Node threads: the machine's cores shared among the nodes and this render (at least one each).
threads=$(( $(nproc) / (NODES + 1) ))
[ "$threads" -ge 1 ] || threads=1
# The demo's own render must not preempt its nodes as the machine's owner (they run on this
# machine, but stand for other machines): no control socket for them.
node_flags=(--no-control-socket)
[ "$mode" = static ] && node_flags+=(--no-mdns)
addresses=()
for i in $(seq "$NODES"); do
  start_bg "$TMP/node$i.out" "$TMP/node$i.err" \
    "$PEERLIGHT" node --listen 127.0.0.1:0 --threads "$threads" --name "demo-node$i" \
    "${node_flags[@]}"
done
for i in $(seq "$NODES"); do
  wait_for "$TMP/node$i.out" "listening on" 10 ||
    die "node $i did not start: $(cat "$TMP/node$i.err")"
  addresses+=("$(sed -n 's/^listening on //p' "$TMP/node$i.out" | head -n1)")
done
echo "demo: $NODES nodes (${threads} CPU thread(s) each): ${addresses[*]}"

peer_flags=()
if [ "$mode" = static ]; then
  for a in "${addresses[@]}"; do peer_flags+=(--peer "$a"); done
  echo "demo: peerlight render $SCENE -o $OUTPUT ${RENDER_ARGS[*]} ${peer_flags[*]}"
else
  echo "demo: peerlight render $SCENE -o $OUTPUT ${RENDER_ARGS[*]}   (nodes found by mDNS)"
fi
start_ms=$(($(date +%s%N) / 1000000))
in_ns "$PEERLIGHT" render "$SCENE" -o "$OUTPUT" "${RENDER_ARGS[@]}" "${peer_flags[@]}" ||
  die "render failed"
ms=$(($(date +%s%N) / 1000000 - start_ms))
printf 'demo: %s mode, %d nodes, %d.%03d s for the whole render command\n' "$mode" "$NODES" \
  $((ms / 1000)) $((ms % 1000))
echo "demo: wrote $(realpath "$OUTPUT")"
