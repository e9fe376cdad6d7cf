#!/usr/bin/env python3
"""Does watching slow a render? A session started through the live view's API, rendered to the
end with no page client, then again (same scene, same size and samples, a new session) with N
WebSocket clients watching it: one thread of this script reads every client's socket and drops
the bytes (a browser's work is elsewhere, and on one machine the clients' own reading competes
with the render: one Python thread per client cost about 1 s of CPU per render).

    bench/live_view_clients.py [--clients 50] [--size 256] [--spp 256] [--runs 3]
                               [--clients-nice N] [SCENE]

The pages connect before the session starts (their handshakes are not timed). Prints each run
and the medians: the render time (from the session's start to the film holding every sample,
from /api/state's `seconds` of the finished generation), the bytes the clients received, and
the CPU time of the daemon's loop thread (web server, preview frames, sends) and of the daemon
with its workers, read from /proc. One node daemon on 127.0.0.1 renders (its own devices);
every process it starts is killed on exit.

--clients-nice N runs the clients (this script) at that niceness and the daemon at the normal
one. Clients that fall behind get fewer frames (the daemon drops frames for a slow client),
which the bytes received show.
"""
import argparse
import json
import os
import re
import resource
import selectors
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


def cpu_seconds(pid):
    """(the daemon's loop thread, the daemon with its worker processes) CPU seconds so far, and
    the number of worker processes, from /proc: the process-level figures count the threads
    that have exited too."""
    hz = os.sysconf("SC_CLK_TCK")

    def ticks(path):
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime

    loop = ticks(f"/proc/{pid}/task/{pid}/stat")  # the main thread runs the loop
    total = ticks(f"/proc/{pid}/stat")
    children = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                children.update(f.read().split())
        except OSError:  # the thread has exited
            pass
    for child in children:
        try:
            total += ticks(f"/proc/{child}/stat")
        except OSError:
            pass
    return loop / hz, total / hz, len(children)


def render_once(base, pid, scene, size, spp, clients):
    # The pages are open before the render starts (as a studio's browsers are): their
    # connections and handshakes are not part of the render's time.
    sockets = [WebSocket(base.replace("http://", "ws://") + "ws", "peerlight")
               for _ in range(clients)]
    loop0, total0, _ = cpu_seconds(pid)
    key = post(base + "api/sessions",
               {"scene": scene, "width": size, "height": size, "spp": spp})["key"]
    stop = threading.Event()
    received = [0]

    def watch():
        # One thread reads every client's socket and drops the bytes (a browser's work is
        # elsewhere: this measures the daemon, and on one machine the clients' own reading
        # competes with the render).
        sel = selectors.DefaultSelector()
        buffer = bytearray(1 << 20)
        for ws in sockets:
            ws.send(json.dumps({"op": "watch", "key": key}))
            received[0] += len(ws.buffer)
            ws.sock.setblocking(False)
            sel.register(ws.sock, selectors.EVENT_READ)
        while not stop.is_set() and sel.get_map():
            for k, _ in sel.select(timeout=0.2):
                try:
                    n = k.fileobj.recv_into(buffer)
                except BlockingIOError:
                    continue
                except OSError:
                    n = 0
                if n == 0:
                    sel.unregister(k.fileobj)
                received[0] += n
        sel.close()
    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    seconds = None
    while seconds is None:
        for r in state(base)["renders"]:
            if r["key"] == key and r.get("spp") == spp and r.get("target_spp") == spp:
                seconds = r["seconds"]
        time.sleep(0.02)
    loop1, total1, workers = cpu_seconds(pid)
    if workers == 0:
        sys.exit("live_view_clients: no worker process of the daemon to count (/proc/PID/task/"
                 "TID/children)")
    stop.set()
    reader.join()
    for ws in sockets:
        try:
            ws.sock.close()
        except OSError:
            pass
    ws = WebSocket(base.replace("http://", "ws://") + "ws", "peerlight")
    ws.send(json.dumps({"op": "cancel", "key": key}))
    time.sleep(0.3)
    ws.sock.close()
    return seconds, received[0], loop1 - loop0, total1 - total0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scene", nargs="?", default=os.path.join(ROOT, "scenes", "cornell_box.gltf"))
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--spp", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clients-nice", type=int, default=0)
    args = ap.parse_args()
    if args.clients < 1:
        ap.error("--clients: at least 1")
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
            render_once(base, node.pid, args.scene, args.size, args.spp, 0)  # warm: worker
            runs = {0: [], args.clients: []}
            for _ in range(args.runs):  # alternating
                for clients in (0, args.clients):
                    before = resource.getrusage(resource.RUSAGE_SELF)
                    result = render_once(base, node.pid, args.scene, args.size, args.spp,
                                         clients)
                    after = resource.getrusage(resource.RUSAGE_SELF)
                    own = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                    runs[clients].append(result + (own,))
                    print(f"  {clients:3d} clients: {result[0]:.2f} s, {result[1] / 1e6:.1f} MB "
                          f"received, daemon loop thread {result[2]:.2f} s CPU, daemon and "
                          f"workers {result[3]:.2f} s CPU, this script {own:.2f} s CPU",
                          flush=True)
            med = {c: [statistics.median(r[i] for r in runs[c]) for i in range(5)] for c in runs}
            q, w = med[0], med[args.clients]
            print(f"{os.path.basename(args.scene)} {args.size}x{args.size} {args.spp} spp, median "
                  f"of {args.runs}: no client {q[0]:.2f} s, {args.clients} clients {w[0]:.2f} s: "
                  f"{w[0] / q[0]:.3f}x; the daemon's loop thread {q[2]:.2f} -> {w[2]:.2f} s CPU "
                  f"({(w[2] - q[2]) / q[3] * 100:.1f}% of the render's {q[3]:.2f} s CPU); the "
                  f"clients received {w[1] / 1e6:.1f} MB in all (clients at nice "
                  f"{args.clients_nice})")
        finally:
            node.kill()
            node.wait()


if __name__ == "__main__":
    sys.exit(main())
