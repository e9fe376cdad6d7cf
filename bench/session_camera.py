#!/usr/bin/env python3
"""Camera move to the first complete pass of the new generation, through `peerlight session`.

For each scene: starts NODES Render Nodes on 127.0.0.1 (one render thread each), a session with
those nodes (and, unless --no-local, this machine's devices), then sends MOVES camera moves, one
at a time, each after the previous generation's first pass. The time of a move is from writing
its line to reading the `pass` event of spp 1 of its generation (the client's clock: it includes
the pipe, the update, the nodes' loads and the pass). The reference is a one-spp local render of
the same frame (`peerlight render --spp 1 --local-only --json`, its "seconds"), and the target
p95 <= max(100 ms, 1.5 x that).

    bench/session_camera.py [--nodes 2] [--moves 20] [--size 256x256] [--veth] [--daemon]
                            [SCENE ...]

--veth: the session in one network namespace, the nodes in another, joined by a veth pair
shaped to 1 Gbit/s (bench/session_join.py's Veth; needs root).
--daemon: the session held by a node daemon of this machine (a `peerlight node` with a control
socket, all threads), which is then its Primary and this machine's device; else the session
renders in its own process (--no-daemon).

Default scenes: the project's Cornell box, and ../shared's DamagedHelmet when present. Every
process it starts is killed on exit.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

from event_reader import EventReader
from session_join import Loopback, Veth

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PL = os.path.join(ROOT, "build", "bin", "peerlight")
SHARED = os.path.join(os.path.dirname(ROOT), "shared")


def start_node(key, tmp, i, net):
    err = open(os.path.join(tmp, f"node{i}.err"), "w")
    p = subprocess.Popen(net.in_b([PL, "node", "--listen", f"{net.node_host}:0", "--key-file", key,
                                   "--threads", "1", "--name", f"bench{i}", "--no-mdns",
                                   "--no-control-socket"]),
                         stdout=subprocess.PIPE, stderr=err, text=True)
    line = p.stdout.readline()
    if not line.startswith("listening on "):
        raise SystemExit(f"node {i} did not start")
    return p, line.split()[-1]


class Session:
    def __init__(self, args):
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.events = EventReader(self.p.stdout)

    def send(self, obj):
        self.p.stdin.write(json.dumps(obj) + "\n")
        self.p.stdin.flush()

    def wait(self, match, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                e = self.events.next(deadline - time.monotonic())
            except EOFError:
                raise SystemExit("the session ended")
            if e is None:
                break
            if e.get("event") == "error" and e.get("fatal"):
                raise SystemExit("session failed: " + e["message"])
            if match(e):
                return e
        raise SystemExit("timed out waiting for an event")

    def close(self):
        try:
            self.send({"op": "quit"})
            self.p.wait(10)
        except Exception:
            self.p.kill()


def one_spp_seconds(scene, size, key):
    out = subprocess.run([PL, "render", scene, "-o", os.devnull + ".exr", "--size", size, "--spp",
                          "1", "--local-only", "--no-daemon", "--no-cache", "--json", "--key-file", key],
                         capture_output=True, text=True)
    if out.returncode != 0:
        # /dev/null.exr cannot be written: use a temporary file instead.
        with tempfile.TemporaryDirectory() as d:
            out = subprocess.run([PL, "render", scene, "-o", os.path.join(d, "x.exr"), "--size",
                                  size, "--spp", "1", "--local-only", "--no-daemon", "--no-cache", "--json",
                                  "--key-file", key], capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def start_daemon(key, tmp, net):
    """This machine's daemon, its control socket in `tmp`: (process, socket path)."""
    sock = os.path.join(tmp, "control", "node.sock")
    err = open(os.path.join(tmp, "daemon.err"), "w")
    p = subprocess.Popen(net.in_a([PL, "node", "--listen", "127.0.0.1:0", "--key-file", key,
                                   "--name", "daemon", "--no-mdns", "--http", "off",
                                   "--control-socket", sock]),
                         stdout=subprocess.PIPE, stderr=err, text=True)
    if not p.stdout.readline().startswith("listening on "):
        raise SystemExit("the daemon did not start")
    return p, sock


def bench(scene, args, key, tmp, net):
    nodes = [start_node(key, tmp, i, net) for i in range(args.nodes)]
    daemon = start_daemon(key, tmp, net) if args.daemon else None
    try:
        cmd = [PL, "session", scene, "--size", args.size, "--spp", "64", "--key-file", key]
        cmd += ["--control-socket", daemon[1]] if daemon else ["--no-daemon"]
        for _, address in nodes:
            cmd += ["--peer", address]
        if args.no_local:
            cmd.append("--no-local")
        s = Session(net.in_a(cmd))
        ready = s.wait(lambda e: e.get("event") == "ready")
        if bool(daemon) != ("daemon" in ready.get("renders_in", "")):
            raise SystemExit("the session renders in " + ready.get("renders_in", "?"))
        joined = 0
        while joined < len(nodes):
            s.wait(lambda e: e.get("event") == "node" and e.get("state") == "joined")
            joined += 1
        s.wait(lambda e: e.get("event") == "pass" and e.get("generation") == 1)
        s.send({"op": "stats", "id": "before"})
        before = s.wait(lambda e: e.get("id") == "before")
        times = []
        generation = 1
        for i in range(args.moves):
            angle = 0.05 * (i + 1)
            s.send({"op": "camera", "eye": [args.radius * math.sin(angle), args.height,
                                            args.radius * math.cos(angle)],
                    "target": [0, args.target_y, 0], "yfov": 40})
            t0 = time.monotonic()
            generation += 1
            g = generation
            s.wait(lambda e: e.get("event") == "pass" and e.get("generation") == g)
            times.append(time.monotonic() - t0)
        s.send({"op": "stats", "id": "after"})
        after = s.wait(lambda e: e.get("id") == "after")
        s.close()
    finally:
        for p, _ in nodes + ([daemon] if daemon else []):
            p.kill()
            p.wait()
    sent = [a["render_data_bytes_sent"] - b["render_data_bytes_sent"]
            for a, b in zip(after["nodes"], before["nodes"])]
    times.sort()
    p95 = times[min(len(times) - 1, math.ceil(0.95 * len(times)) - 1)]
    return ready, times, p95, sent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenes", nargs="*")
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--moves", type=int, default=20)
    ap.add_argument("--size", default="256x256")
    ap.add_argument("--no-local", action="store_true")
    ap.add_argument("--veth", action="store_true")
    ap.add_argument("--daemon", action="store_true")
    args = ap.parse_args()
    scenes = args.scenes or [os.path.join(ROOT, "scenes", "cornell_box.gltf")]
    helmet = os.path.join(SHARED, "scenes/khronos-gltf/DamagedHelmet/glTF/DamagedHelmet.gltf")
    if not args.scenes and os.path.exists(helmet):
        scenes.append(helmet)
    with tempfile.TemporaryDirectory() as tmp, (Veth() if args.veth else Loopback()) as net:
        key = os.path.join(tmp, "key")
        with open(key, "wb") as f:
            f.write(os.urandom(32))
        os.chmod(key, 0o600)
        for scene in scenes:
            # A view of the scene's middle from a circle around it (the Cornell box sits at
            # y 0..2, the helmet around the origin).
            cornell = "cornell" in os.path.basename(scene).lower()
            args.radius, args.height, args.target_y = (3.6, 1.0, 1.0) if cornell else (3.0, 0.3, 0)
            base = one_spp_seconds(scene, args.size, key)
            ready, times, p95, sent = bench(scene, args, key, tmp, net)
            target = max(0.100, 1.5 * base)
            print(f"{os.path.basename(scene)} {args.size}, {args.nodes} node(s)"
                  f"{', no local devices' if args.no_local else ' + local'}"
                  f"{' over veth 1 Gbit/s' if args.veth else ''}"
                  f"{', held by the daemon' if args.daemon else ''}: "
                  f"{len(times)} camera moves to the first pass: median "
                  f"{statistics.median(times) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
                  f"max {times[-1] * 1000:.0f} ms; one-spp local render {base * 1000:.0f} ms; "
                  f"target p95 <= {target * 1000:.0f} ms: {'met' if p95 <= target else 'NOT met'};"
                  f" bytes sent per node per move: "
                  + ", ".join(f"{b / len(times):.0f}" for b in sent))


if __name__ == "__main__":
    sys.exit(main())
