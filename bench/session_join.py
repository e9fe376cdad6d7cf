#!/usr/bin/env python3
"""A fresh Render Node joining an open session: time to its first result, and whether the
devices already rendering slow down meanwhile.

Opens `peerlight session SCENE` (this machine's CPU, no node), waits for its first passes,
then starts a fresh node (an empty chunk cache, no warm worker) and hands its address to the
session (`{"op": "peer"}`, what an mDNS discovery does). Measured on the client's clock, from
the `peer` line: the node's `joined` event (its data uploaded and loaded) and the first `stats`
poll (every 50 ms) that shows samples from it; and the local device's samples per second
before and during the join.

    bench/session_join.py [--veth] [--pin] [--size 256x256] [--node-threads 1]
                           [--node-log PATH] [--session-log PATH] [--node-peerlight PATH]
                           [SCENE]

--veth: the session and the node in two network namespaces joined by a veth pair shaped to
1 Gbit/s with tbf (needs root); else both on 127.0.0.1. --pin: the session on CPU 0 and the
node (daemon and worker) on CPU 1, as two one-core machines (else they share both cores). Default scene: ../shared's Sponza.
Every process and namespace it makes is removed on exit.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from event_reader import EventReader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PL = os.path.join(ROOT, "build", "bin", "peerlight")
SHARED = os.path.join(os.path.dirname(ROOT), "shared")


class Veth:
    """Two namespaces, A (the session) and B (the node), joined at 1 Gbit/s."""

    def __init__(self):
        tag = str(os.getpid())
        self.a, self.b = f"pl-join-a-{tag}", f"pl-join-b-{tag}"
        self.va, self.vb = f"vja{tag}", f"vjb{tag}"
        self.node_host = "10.78.0.2"

    def __enter__(self):
        def sh(*cmd):
            subprocess.run(cmd, check=True)
        sh("ip", "netns", "add", self.a)
        sh("ip", "netns", "add", self.b)
        sh("ip", "link", "add", self.va, "type", "veth", "peer", "name", self.vb)
        sh("ip", "link", "set", self.va, "netns", self.a)
        sh("ip", "link", "set", self.vb, "netns", self.b)
        sh("ip", "-n", self.a, "addr", "add", "10.78.0.1/24", "dev", self.va)
        sh("ip", "-n", self.b, "addr", "add", "10.78.0.2/24", "dev", self.vb)
        for ns, dev in ((self.a, self.va), (self.b, self.vb)):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate",
               "1gbit", "burst", "256kb", "latency", "20ms")
        return self

    def __exit__(self, *exc):
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)

    def in_a(self, cmd):
        return ["ip", "netns", "exec", self.a] + cmd

    def in_b(self, cmd):
        return ["ip", "netns", "exec", self.b] + cmd


class Loopback:
    node_host = "127.0.0.1"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def in_a(self, cmd):
        return cmd

    def in_b(self, cmd):
        return cmd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scene", nargs="?",
                    default=os.path.join(SHARED, "scenes/sponza-crytek-rendu/sponza.gltf"))
    ap.add_argument("--veth", action="store_true")
    ap.add_argument("--size", default="256x256")
    ap.add_argument("--node-threads", default="1")
    ap.add_argument("--local-threads", default="1")
    ap.add_argument("--node-peerlight", default=PL,
                    help="the node's program (another build, for A/B runs); default: this build's")
    ap.add_argument("--pin", action="store_true",
                    help="the session on CPU 0 and the node on CPU 1: two one-core machines")
    ap.add_argument("--node-log",
                    help="keep the node's log there (timed lines: run with PEERLIGHT_LOG=debug)")
    ap.add_argument("--session-log", help="keep the session's log there")
    args = ap.parse_args()
    if not os.path.exists(args.scene):
        raise SystemExit(f"session_join: {args.scene} not found")
    procs = []

    def pin(cpu):
        return ["taskset", "-c", str(cpu)] if args.pin else []

    with tempfile.TemporaryDirectory() as tmp, (Veth() if args.veth else Loopback()) as net:
        key = os.path.join(tmp, "key")
        with open(key, "wb") as f:
            f.write(os.urandom(32))
        os.chmod(key, 0o600)
        try:
            session = subprocess.Popen(
                net.in_a(pin(0) + [PL, "session", args.scene, "--size", args.size, "--spp", "4096",
                          "--key-file", key, "--mdns-wait", "0", "--threads", args.local_threads]),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=open(args.session_log, "w") if args.session_log else subprocess.DEVNULL,
                text=True, bufsize=1)
            procs.append(session)
            events = []

            reader = EventReader(session.stdout)

            def read(timeout):
                """Reads the events available within `timeout` seconds, with arrival times."""
                deadline = time.monotonic() + timeout
                while True:
                    left = deadline - time.monotonic()
                    try:
                        e = reader.next(max(0, left))
                    except EOFError:
                        raise SystemExit("the session ended")
                    if e is None:
                        return
                    if e.get("event") == "error" and e.get("fatal"):
                        raise SystemExit("session failed: " + e["message"])
                    events.append((time.monotonic(), e))
                    if left <= 0:
                        return

            def send(obj):
                session.stdin.write(json.dumps(obj) + "\n")
                session.stdin.flush()

            def wait_for(match, timeout=180):
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    for t, e in events:
                        if match(e):
                            return t, e
                    read(0.05)
                raise SystemExit("timed out")

            serial = [0]

            def stats():
                serial[0] += 1
                sid = f"s{serial[0]}"
                send({"op": "stats", "id": sid})
                return wait_for(lambda e: e.get("id") == sid)

            wait_for(lambda e: e.get("event") == "ready")
            # Past the local device's own load (decoded from the cache on its thread).
            wait_for(lambda e: e.get("event") == "pass" and e.get("spp", 0) >= 8)
            t_a, s_a = stats()
            time.sleep(1.0)
            t_b, s_b = stats()
            local_before = (s_b["devices"][0]["samples"] - s_a["devices"][0]["samples"]) / (t_b - t_a)

            err = open(args.node_log or os.path.join(tmp, "node.err"), "w")
            node = subprocess.Popen(
                net.in_b(pin(1) + [args.node_peerlight, "node", "--listen", f"{net.node_host}:0", "--key-file", key,
                          "--threads", args.node_threads, "--no-mdns", "--no-control-socket"]),
                stdout=subprocess.PIPE, stderr=err, text=True)
            procs.append(node)
            line = node.stdout.readline()
            if not line.startswith("listening on "):
                raise SystemExit("the node did not start")
            address = line.split()[-1]
            t0, s0 = stats()
            send({"op": "peer", "address": address})
            t_joined = None
            t_first = None
            s_first = None
            while time.monotonic() - t0 < 120:
                t, s = stats()
                if t_joined is None:
                    for te, e in events:
                        if e.get("event") == "node" and e.get("state") == "joined":
                            t_joined = te
                nodes = s.get("nodes", [])
                if nodes and nodes[0].get("samples", 0) > 0:
                    t_first, s_first = t, s
                    break
                time.sleep(0.05)
            if t_first is None:
                raise SystemExit("the node never rendered")
            local_during = ((s_first["devices"][0]["samples"] - s0["devices"][0]["samples"])
                            / (t_first - t0))
            n = s_first["nodes"][0]
            where = "veth 1 Gbit/s" if args.veth else "loopback"
            print(f"{os.path.basename(args.scene)} {args.size}, fresh node over {where}: "
                  f"joined (data uploaded and loaded) {1000 * (t_joined - t0):.0f} ms, "
                  f"first result seen {1000 * (t_first - t0):.0f} ms after the peer op; "
                  f"render data sent {n['render_data_bytes_sent'] / 1e6:.1f} MB (encoding on "
                  f"the Primary {s_first['render_data_encode_seconds']:.2f} s, upload "
                  f"{n['upload_seconds']:.2f} s); "
                  f"local samples/s before {local_before:.0f}, during the join "
                  f"{local_during:.0f} ({local_during / local_before:.2f}x)")
            send({"op": "quit"})
            session.wait(10)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()


if __name__ == "__main__":
    sys.exit(main())
