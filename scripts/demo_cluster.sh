#!/usr/bin/env bash
# The cluster demo behind `./run demo`: three `peerlight node` daemons on this machine, one
# `peerlight render` through them, each node's share printed, demo.png written.
#
#   scripts/demo_cluster.sh [PEERLIGHT_BINARY [OUTPUT]]    (defaults: build/bin/peerlight demo.png)
#
# Two modes:
# - mDNS (when run as root with ip, unshare, dbus-daemon and avahi-daemon installed): the
#   one-host sandbox of tests/integration/netns_sandbox.h (a fresh network namespace with only
#   `lo`, a private system bus and an avahi-daemon on it, its own XDG_RUNTIME_DIR), three nodes
#   advertising `_peerlight._tcp`; the render is given no peers at all and finds them by mDNS.
#   Nothing is advertised outside the namespace.
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
die() {
  echo "demo: $*" >&2
  exit 1
}

TMP=$(mktemp -d /tmp/peerlight-demo-XXXXXX)
chmod 755 "$TMP"
NS=""
IN_NS=()  # the prefix that runs a command in the namespace
PIDS=()
# Nodes get SIGTERM (they end their leases) and 2 s, then SIGKILL; then whatever is left in the
# namespace is killed, the namespace deleted and the temp dir removed.
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

# Runs the command given until it succeeds, at most 10 s; fails on time out.
wait_for() {
  for _ in $(seq 200); do "$@" 2>/dev/null && return 0; sleep 0.05; done
  return 1
}
# Starts a command in the background, in the namespace when there is one, stdout and stderr to
# $TMP/$1.out and .err. Not through a function or subshell, and `ip netns exec` execs: $! is the
# command's own pid, so that cleanup's kill reaches it.
start_bg() {
  local log=$1
  shift
  "${IN_NS[@]}" "$@" >"$TMP/$log.out" 2>"$TMP/$log.err" &
  PIDS+=($!)
}

# The sandbox's host 1, file names as the C++ helper's: bus1, bus1.conf, avahi1.conf, run1/.
start_sandbox() {
  ip netns add "peerlight-demo-$$" 2>"$TMP/setup.log" || return 1
  NS=peerlight-demo-$$
  IN_NS=(ip netns exec "$NS")
  ip -n "$NS" link set lo up
  mkdir "$TMP/run1"
  export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$TMP/bus1" XDG_RUNTIME_DIR="$TMP/run1"
  cat >"$TMP/bus1.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$TMP/bus1</listen>
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
  printf '%s\n' "[server]" "host-name=$NS-host1" use-ipv4=yes use-ipv6=no \
    ratelimit-interval-usec=1000000 ratelimit-burst=1000 "[wide-area]" enable-wide-area=no \
    "[publish]" publish-hinfo=no publish-workstation=no >"$TMP/avahi1.conf"
  start_bg dbus1 "$(tool dbus-daemon)" --config-file="$TMP/bus1.conf" --nofork --nopidfile
  wait_for test -S "$TMP/bus1" || die "dbus-daemon did not start: $(cat "$TMP/dbus1.err")"
  start_bg avahi1 "$(tool unshare)" -m --propagation private /bin/sh -c "mount -t tmpfs tmpfs \
    /run && mkdir /run/avahi-daemon && exec $(tool avahi-daemon) -f $TMP/avahi1.conf \
    --no-drop-root --no-chroot --no-rlimits --no-proc-title"
  wait_for grep -q "Server startup complete" "$TMP/avahi1.err" ||
    die "avahi-daemon did not start: $(cat "$TMP/avahi1.err")"
  echo "demo: network namespace $NS with its own dbus-daemon and avahi-daemon"
}

head -c 32 /dev/urandom >"$TMP/cluster.key"
chmod 600 "$TMP/cluster.key"
export PEERLIGHT_KEY_FILE="$TMP/cluster.key"

mode=static
if [ "${PEERLIGHT_DEMO_STATIC:-0}" = 1 ]; then
  :
elif [ "$(id -u)" -ne 0 ]; then
  echo "demo: not root (no network namespace, no private avahi-daemon): static peers on 127.0.0.1"
else
  mode=mdns
  for t in ip unshare dbus-daemon avahi-daemon; do
    if [ -z "$(tool "$t")" ]; then
      echo "demo: $t is not installed: static peers instead"
      mode=static
      break
    fi
  done
  if [ "$mode" = mdns ] && ! start_sandbox; then
    echo "demo: cannot create a network namespace ($(cat "$TMP/setup.log")): static peers instead"
    mode=static
  fi
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
  start_bg "node$i" "$PEERLIGHT" node --listen 127.0.0.1:0 --threads "$threads" \
    --name "demo-node$i" "${node_flags[@]}"
done
for i in $(seq "$NODES"); do
  wait_for grep -q "listening on" "$TMP/node$i.out" ||
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
"${IN_NS[@]}" "$PEERLIGHT" render "$SCENE" -o "$OUTPUT" "${RENDER_ARGS[@]}" "${peer_flags[@]}" ||
  die "render failed"
ms=$(($(date +%s%N) / 1000000 - start_ms))
printf 'demo: %s mode, %d nodes, %d.%03d s for the whole render command\n' "$mode" "$NODES" \
  $((ms / 1000)) $((ms % 1000))
echo "demo: wrote $(realpath "$OUTPUT")"
