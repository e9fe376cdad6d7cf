#!/usr/bin/env python3
"""Does watching slow a render? A session started through the live view's API, rendered to the
end with no page client, then again (same scene, same size and samples, a new session) with N
WebSocket clients watching it (each receives every preview frame and the state broadcasts, and
drops the bytes: the clients' own work is kept small, since on one machine it competes with the
render).

    bench/live_view_clients.py [--clients 50] [--size 256] [--spp 256] [--runs 3]
                               [--clients-nice N] [SCENE]

The pages connect before the session starts (their handshakes are not timed). Prints the
median render time of each case (from the session's start to the film holding every
sample, from /api/state's `seconds` of the finished generation) and their ratio. One node daemon
on 127.0.0.1 renders (its own devices); every process it starts is killed on exit.

--clients-nice N runs the clients (this script) at that niceness and the daemon at the normal
one: browsers are on other machines, and on a small machine the clients' own reading would
otherwise be counted as the daemon's cost. Clients that fall behind get fewer frames (the
daemon drops frames for a slow client), which the bytes received show.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "web"))
from live_view_test import WebSocket  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PL = os.path.join(ROOT, "build", "bin", "peerlight")


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))


def state(base):
    return json.load(urllib.request.urlopen(base + "api/state"))


def render_once(base, scene, size, spp, clients):
    # The pages are open before the render starts (as a studio's browsers are): their
    # connections and handshakes are not part of the render's time.
    sockets = [WebSocket(base.replace("http://", "ws://") + "ws", "peerlight")
               for _ in range(clients)]
    key = post(base + "api/sessions",
               {"scene": scene, "width": size, "height": size, "spp": spp})["key"]
    stop = threading.Event()
    frames = [0]

    def watch(ws):
        ws.send(json.dumps({"op": "watch", "key": key}))
        ws.sock.settimeout(1)
        # Read and drop the bytes (a browser's work is elsewhere: this measures the daemon).
        while not stop.is_set():
            try:
                chunk = ws.sock.recv(1 << 20)
                if not chunk:
                    break
                frames[0] += len(chunk)
            except Exception:
                if stop.is_set():
                    break
    threads = [threading.Thread(target=watch, args=(ws,), daemon=True) for ws in sockets]
    for t in threads:
        t.start()
    seconds = None
    while seconds is None:
        for r in state(base)["renders"]:
            if r["key"] == key and r.get("spp") == spp and r.get("target_spp") == spp:
                seconds = r["seconds"]
        time.sleep(0.02)
    stop.set()
    for ws in sockets:
        try:
            ws.sock.close()
        except OSError:
            pass
    ws = WebSocket(base.replace("http://", "ws://") + "ws", "peerlight")
    ws.send(json.dumps({"op": "cancel", "key": key}))
    time.sleep(0.3)
    ws.sock.close()
    return seconds, frames[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scene", nargs="?", default=os.path.join(ROOT, "scenes", "cornell_box.gltf"))
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--spp", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clients-nice", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        key = os.path.join(tmp, "key")
        with open(key, "wb") as f:
            f.write(os.urandom(32))
        os.chmod(key, 0o600)
        node = subprocess.Popen([PL, "node", "--listen", "127.0.0.1:0", "--key-file", key,
                                 "--no-mdns", "--control-socket", os.path.join(tmp, "s"),
                                 "--http", "127.0.0.1:0"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            base = None
            while base is None:
                m = re.match(r"live view on (http://127.0.0.1:\d+/)", node.stdout.readline())
                if m:
                    base = m.group(1)
            if args.clients_nice:
                os.nice(args.clients_nice)  # after the daemon started: it keeps its own
            render_once(base, args.scene, args.size, args.spp, 0)  # warm: worker, caches
            quiet, watched, frames = [], [], []
            for _ in range(args.runs):  # alternating
                quiet.append(render_once(base, args.scene, args.size, args.spp, 0)[0])
                s, f = render_once(base, args.scene, args.size, args.spp, args.clients)
                watched.append(s)
                frames.append(f)
            q, w = statistics.median(quiet), statistics.median(watched)
            print(f"{os.path.basename(args.scene)} {args.size}x{args.size} {args.spp} spp: "
                  f"no client {q:.2f} s, {args.clients} clients {w:.2f} s (median of "
                  f"{args.runs}; {statistics.median(frames) / 1e6:.1f} MB received by the "
                  f"clients in all per run; clients at nice {args.clients_nice}): "
                  f"{w / q:.3f}x")
        finally:
            node.kill()
            node.wait()


if __name__ == "__main__":
    sys.exit(main())
