#!/usr/bin/env python3
"""The Blender add-on (issue 12) as an artist uses it, in Debian's Blender (`blender -b
--factory-startup`), with the add-on from this source tree.

- F12 on a scene built by script (a glass sphere, an emissive panel, a textured plane, a
  camera): the image is bitwise `peerlight render` of the same export at the same spp, and
  not blank.
- The same F12 through two Render Nodes (this machine's devices off): identical again.
- A node killed (-9) mid-render: the render completes, identical again.
- A 3-frame animation (the sphere moves, then the camera too) through a node: after frame 1
  each frame sends only the changed chunks (bytes from the session's stats) as one update.
- An animation frame that changes geometry gets a new session.
- Esc (SIGINT, which Blender's background mode turns into the same break as Esc) mid-render:
  Blender's render returns within 1 s and the node holds no lease.
- The viewport's update path: a view change reaches the session as one camera update, an edit
  as one transform update.
- No peerlight program: a clear message in the report area, not a traceback.

Exits 77 (skipped) without Debian's blender. Every process it starts is killed.
    tests/blender/addon_test.py PEERLIGHT_BINARY SOURCE_DIR
"""
import json
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib

SKIP = 77
failures = []


def check(ok, message):
    print(("ok   " if ok else "FAIL ") + message, flush=True)
    if not ok:
        failures.append(message)


class Cluster:
    """Render Nodes on 127.0.0.1 (ephemeral ports), each with its live view's API."""

    def __init__(self, binary, tmp, env):
        self.binary, self.tmp, self.env = binary, tmp, env
        self.key = os.path.join(tmp, "key")
        with open(self.key, "wb") as f:
            f.write(os.urandom(32))
        os.chmod(self.key, 0o600)
        self.nodes = []  # (process, address, http base)

    def start(self, threads=1, env=None):
        """A node; with `env`, this machine's daemon: its control socket at the default place
        that env's XDG_RUNTIME_DIR gives."""
        i = len(self.nodes)
        control = [] if env else ["--no-control-socket"]
        p = subprocess.Popen(
            [self.binary, "node", "--listen", "127.0.0.1:0", "--key-file", self.key,
             "--no-mdns", "--threads", str(threads), "--http", "127.0.0.1:0",
             "--name", "node%d" % i] + control,
            stdout=subprocess.PIPE, stderr=open(self.log(i), "w"), text=True,
            env=env or self.env)
        address = base = None
        deadline = time.monotonic() + 30
        while (address is None or base is None) and time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            m = re.match(r"listening on (127\.0\.0\.1:\d+)", line)
            if m:
                address = m.group(1)
            m = re.match(r"live view on (http://127\.0\.0\.1:\d+/)", line)
            if m:
                base = m.group(1)
        self.nodes.append((p, address, base))
        if address is None or base is None:
            raise SystemExit("node %d did not start" % i)
        return address

    def log(self, i):
        return os.path.join(self.tmp, "node%d.err" % i)

    def leases(self, i):
        with urllib.request.urlopen(self.nodes[i][2] + "api/state", timeout=5) as r:
            state = json.load(r)
        return state.get("node", {}).get("leases", state.get("leases", []))

    def stop(self):
        for p, _, _ in self.nodes:
            if p.poll() is None:
                p.kill()
            p.wait()


class Blender:
    def __init__(self, source, binary, tmp, env):
        self.script = os.path.join(source, "tests", "blender", "in_blender.py")
        self.addon = os.path.join(source, "blender")
        # The system's PATH: a Python of another install first in PATH (pyenv, a venv) would
        # become Blender's Python home, without Debian's numpy that Blender's glTF exporter uses.
        self.tmp, self.env = tmp, dict(env, PEERLIGHT_BINARY=binary,
                                       PATH="/usr/local/bin:/usr/bin:/bin")
        self.runs = 0

    def command(self, step, options):
        self.runs += 1
        out = os.path.join(self.tmp, "result-%d.json" % self.runs)
        args = ["blender", "-b", "--factory-startup", "--python-exit-code", "1", "--python",
                self.script, "--", self.addon, out, step]
        args += ["%s=%s" % kv for kv in options.items()]
        return args, out

    def run(self, step, env=None, timeout=300, **options):
        """Runs a step to its end: (result dict, Blender's output)."""
        args, out = self.command(step, options)
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                           env=env or self.env)
        result = {}
        if os.path.exists(out):
            with open(out) as f:
                result = json.load(f)
        if p.returncode != 0 or not result.get("ok"):
            print(p.stdout[-4000:], p.stderr[-4000:], sep="\n")
        return result, p.stdout + p.stderr


def exr_compare(blender_env, a, b):
    """(identical, mean of a) of two EXR files' RGB, read by Blender itself."""
    code = ("import bpy, numpy as np, json, sys\n"
            "def px(p):\n"
            "    im = bpy.data.images.load(p, check_existing=False)\n"
            "    arr = np.empty(im.size[0] * im.size[1] * 4, dtype=np.float32)\n"
            "    im.pixels.foreach_get(arr)\n"
            "    return tuple(im.size), arr.reshape(-1, 4)[:, :3]\n"
            "sa, pa = px(%r); sb, pb = px(%r)\n"
            "print('COMPARE ' + json.dumps({'same': sa == sb and bool(np.array_equal(pa, pb)),"
            " 'mean': float(pa.mean()), 'std': float(pa.std())}))\n" % (a, b))
    p = subprocess.run(["blender", "-b", "--factory-startup", "--python-expr", code],
                       capture_output=True, text=True, timeout=120, env=blender_env)
    m = re.search(r"^COMPARE (.*)$", p.stdout, re.M)
    if m is None:
        print(p.stdout[-2000:], p.stderr[-2000:])
        return False, 0.0, 0.0
    r = json.loads(m.group(1))
    return r["same"], r["mean"], r["std"]


def glb_node_names(path):
    """The node names of a .glb's JSON chunk, sorted."""
    with open(path, "rb") as f:
        data = f.read()
    length, kind = struct.unpack("<II", data[12:20])
    if data[:4] != b"glTF" or kind != 0x4E4F534A:
        raise ValueError("%s: not a .glb" % path)
    gltf = json.loads(data[20:20 + length])
    return sorted(n.get("name", "") for n in gltf.get("nodes", []))


def read_exr_channels(path):
    """{channel name: list of floats, top row first} of a scanline EXR with 32-bit float
    channels, uncompressed or ZIP (what Blender writes with codec NONE and what peerlight
    writes): enough to compare passes without an EXR library in Python."""
    with open(path, "rb") as f:
        data = f.read()
    pos, channels, compression, window = 8, [], 0, None
    while data[pos] != 0:
        name_end = data.index(b"\0", pos)
        name = data[pos:name_end].decode()
        type_end = data.index(b"\0", name_end + 1)
        size = struct.unpack_from("<i", data, type_end + 1)[0]
        value = data[type_end + 5:type_end + 5 + size]
        if name == "channels":
            at = 0
            while value[at] != 0:
                end = value.index(b"\0", at)
                channels.append((value[at:end].decode(),
                                 struct.unpack_from("<i", value, end + 1)[0]))
                at = end + 1 + 16
        elif name == "compression":
            compression = value[0]
        elif name == "dataWindow":
            window = struct.unpack_from("<4i", value)
        pos = type_end + 5 + size
    pos += 1
    width, height = window[2] - window[0] + 1, window[3] - window[1] + 1
    lines = {0: 1, 2: 1, 3: 16}[compression]  # NONE, ZIPS, ZIP
    blocks = (height + lines - 1) // lines
    offsets = struct.unpack_from("<%dQ" % blocks, data, pos)
    names = sorted(c[0] for c in channels)
    out = {n: [] for n in names}
    for offset in offsets:
        y, size = struct.unpack_from("<ii", data, offset)
        raw = data[offset + 8:offset + 8 + size]
        n = min(lines, window[3] + 1 - y)
        if compression != 0 and size < n * width * 4 * len(names):
            t = bytearray(zlib.decompress(raw))
            for i in range(1, len(t)):
                t[i] = (t[i - 1] + t[i] - 128) & 0xFF
            half = (len(t) + 1) // 2
            raw = bytearray(len(t))
            raw[0::2], raw[1::2] = t[:half], t[half:]
        at = 0
        for _ in range(n):
            for name in names:
                out[name].extend(struct.unpack_from("<%df" % width, raw, at))
                at += 4 * width
    return out


def read_gltf(path):
    """The JSON chunk of a .glb."""
    with open(path, "rb") as f:
        data = f.read()
    length, kind = int.from_bytes(data[12:16], "little"), data[16:20]
    if data[:4] != b"glTF" or kind != b"JSON":
        return {}
    return json.loads(data[20:20 + length])


def triangles(gltf, node_name):
    """Triangles of the mesh of the node named `node_name` in a glTF's JSON (indexed
    primitives; None when there is no such node)."""
    for node in gltf.get("nodes", []):
        if node.get("name") == node_name and "mesh" in node:
            mesh = gltf["meshes"][node["mesh"]]
            return sum(gltf["accessors"][p["indices"]]["count"] // 3 for p in mesh["primitives"])
    return None


def cli_render(binary, env, scene, out, spp, width, height, extra=()):
    p = subprocess.run([binary, "render", scene, "-o", out, "--spp", str(spp), "--size",
                        "%dx%d" % (width, height), "--camera", "0", "--local-only",
                        "--no-daemon"] + list(extra), capture_output=True, text=True, env=env,
                       timeout=300)
    if p.returncode != 0:
        print(p.stderr)
    return p.returncode == 0


def passes_match(cli_passes, layered):
    """Whether F12's multilayer EXR `layered` holds the passes of `render --passes` exactly:
    (same, True or why not varied)."""
    try:
        ours, theirs = read_exr_channels(cli_passes), read_exr_channels(layered)
        pairs = [("depth.Z", "ViewLayer.Depth.Z"), ("normal.X", "ViewLayer.Normal.X"),
                 ("normal.Z", "ViewLayer.Normal.Z"), ("albedo.R", "ViewLayer.DiffCol.R"),
                 ("albedo.B", "ViewLayer.DiffCol.B"), ("R", "ViewLayer.Combined.R")]
        same = all(ours[a] == theirs[b] for a, b in pairs)
        return same, len(set(ours["depth.Z"])) > 10 and len(set(ours["normal.X"])) > 10
    except (OSError, KeyError, ValueError, struct.error) as e:
        return False, str(e)


def escape_mid_render(blender, env, leases, options):
    """An F12 of many samples (320x240), broken (SIGINT: Esc in background mode) once its first
    pass shows: (whether `leases()` held one then, seconds from the break to the render's
    return; 99 when either was not seen)."""
    spp = 1 << 16
    args, _ = blender.command("f12", dict(options, spp=spp, width=320, height=240))
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=env)
    sent_at = returned_at = None
    leased = False
    for line in p.stdout:
        if sent_at is None and re.search(r"\| \d+/%d spp" % spp, line):
            leased = bool(leases())
            sent_at = time.monotonic()
            p.send_signal(signal.SIGINT)
        if "peerlight-test: render returned" in line:
            returned_at = time.monotonic()
            break
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
    if sent_at is None or returned_at is None:
        return leased, 99.0
    print("cancel: the render returned %.3f s after the break" % (returned_at - sent_at))
    return leased, returned_at - sent_at


def main():
    binary, source = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    if shutil.which("blender") is None:
        print("[  SKIPPED ] Debian's blender is not installed")
        return SKIP
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        env = dict(os.environ, XDG_CACHE_HOME=os.path.join(tmp, "cache"), HOME=tmp)
        cluster = Cluster(binary, tmp, env)
        blender = Blender(source, binary, tmp, env)
        try:
            run_all(binary, blender, cluster, env, tmp)
        finally:
            cluster.stop()
    if failures:
        print("%d check(s) failed" % len(failures))
        return 1
    return 0


def run_all(binary, blender, cluster, env, tmp):
    spp, width, height = 16, 160, 120
    export = os.path.join(tmp, "export.glb")
    kept = dict(blender.env, PEERLIGHT_BLENDER_KEEP_EXPORT=export)

    # F12 on this machine.
    f12 = os.path.join(tmp, "f12.exr")
    result, out = blender.run("f12", env=kept, out=f12, spp=spp, devices="LOCAL")
    check(result.get("ok") and os.path.exists(f12), "F12 through the add-on writes the image")
    check("displacement is not exported" in out and "not supported" not in out,
          "what the export cannot carry is named in the report area, and only that")
    # Modifiers as the render evaluates them: the panel's subdivision at its render levels (2:
    # 2 triangles become 32), the floor's viewport-only one not at all.
    exported = read_gltf(export)
    check(triangles(exported, "Panel") == 32 and triangles(exported, "Floor") == 2,
          "F12 exports modifiers at their render settings (panel %s triangles, floor %s)"
          % (triangles(exported, "Panel"), triangles(exported, "Floor")))
    glass = [m for m in exported.get("materials", []) if m.get("name") == "Glass"]
    volume = glass[0].get("extensions", {}).get("KHR_materials_volume", {}) if glass else {}
    colour = volume.get("attenuationColor", [])
    expected = [math.exp(-0.5 * (1 - c)) for c in (0.6, 0.8, 1.0)]
    check(volume.get("thicknessFactor") == 1.0 and len(colour) == 3 and
          all(abs(a - b) < 1e-6 for a, b in zip(colour, expected)),
          "the glass is exported as a refracting volume with its absorption (%s)" % volume)
    cli = os.path.join(tmp, "cli.exr")
    check(cli_render(binary, env, export, cli, spp, width, height),
          "peerlight render of the add-on's export")
    same, mean, std = exr_compare(blender.env, f12, cli)
    check(same, "F12 is bitwise `peerlight render` of the same export at %d spp" % spp)
    check(mean > 0.01 and std > 0.01, "and not blank (mean %.4f, std %.4f)" % (mean, std))

    # A render border (x 0.25-0.75, y 0.2-0.6 from the bottom: pixels 40-119 and, from the
    # top, rows 48-95): F12 renders those pixels alone, bitwise the whole render's, and leaves
    # the rest of the frame empty.
    bordered = os.path.join(tmp, "f12-border.exr")
    result, _ = blender.run("f12", out=bordered, spp=spp, devices="LOCAL", border=1)
    check(result.get("ok") and os.path.exists(bordered), "F12 with a render border")
    try:
        got, whole = read_exr_channels(bordered), read_exr_channels(cli)
        inside = [(y, x) for y in range(48, 96) for x in range(40, 120)]
        same = len(got["R"]) == width * height and all(
            got[c][y * width + x] == whole[c][y * width + x]
            for (y, x) in inside for c in "RGB")
        lit = sum(1 for i in range(width * height) for c in "RGB"
                  if got[c][i] != 0.0 and not (48 <= i // width < 96 and 40 <= i % width < 120))
        some = any(got["R"][y * width + x] != 0.0 for (y, x) in inside)
    except (OSError, KeyError, ValueError, struct.error) as e:
        same, lit, some = False, -1, False
        print("border compare: %s" % e)
    check(same and some and lit == 0,
          "its border's pixels are the whole render's bitwise, none outside (%d lit)" % lit)

    # A time limit: the session ends the frame at its last whole pass, which F12 keeps.
    limited = os.path.join(tmp, "limited.exr")
    result, _ = blender.run("f12", env=kept, out=limited, spp=1 << 20, devices="LOCAL",
                            time_limit=1)
    reached = result.get("stopped_spp") or 0
    check(result.get("ok") and 1 <= reached < (1 << 20) and result.get("seconds", 99) < 30,
          "F12 with a time limit of 1 s ends at a whole pass (%s spp, %.1f s)" %
          (reached, result.get("seconds", -1)))
    limited_cli = os.path.join(tmp, "limited-cli.exr")
    check(reached >= 1 and
          cli_render(binary, env, export, limited_cli, reached, width, height) and
          exr_compare(blender.env, limited, limited_cli)[0],
          "and its image is bitwise `peerlight render --spp %s`" % reached)

    # Render until clean (Sampling > Noise Threshold): tiles stop early, the stats line says how
    # much is clean, and the image is bitwise `peerlight render --noise-threshold`.
    clean = os.path.join(tmp, "f12-clean.exr")
    result, _ = blender.run("f12", env=kept, out=clean, spp=128, devices="LOCAL",
                            noise_threshold=0.1)
    last = result.get("last_pass") or {}
    clean_cli = os.path.join(tmp, "clean-cli.exr")
    check(result.get("ok") and last.get("spp") == 128 and 0 < last.get("clean", 0) <= 1 and
          "% clean" in result.get("stats_line", ""),
          "F12 with a noise threshold renders until clean (%d%% of pixels stopped early)"
          % int(100 * last.get("clean", 0)))
    check(cli_render(binary, env, export, clean_cli, 128, width, height,
                     ["--noise-threshold", "0.1"]) and
          exr_compare(blender.env, clean, clean_cli)[0],
          "and its image is bitwise `peerlight render --noise-threshold 0.1`")

    # The compositor's passes (Depth, Normal, Diffuse Color as the albedo), switched on in
    # the view layer: the same numbers as `peerlight render --passes` of the same export.
    layered = os.path.join(tmp, "f12-passes.exr")
    result, _ = blender.run("f12", out=layered, spp=spp, devices="LOCAL", passes=1)
    cli_passes = os.path.join(tmp, "cli-passes.exr")
    cli_render(binary, env, export, cli_passes, spp, width, height,
               ["--passes", "albedo,normal,depth"])
    same, varied = passes_match(cli_passes, layered)
    check(result.get("ok") and same and varied is True,
          "F12's Depth, Normal and Diffuse Color passes are `render --passes` exactly (%s)"
          % varied)

    # Through two nodes, this machine's devices off; then with one of them killed mid-render.
    a, b = cluster.start(), cluster.start()
    peers = "%s,%s" % (a, b)
    two = os.path.join(tmp, "two.exr")
    result, out = blender.run("f12", out=two, spp=spp, devices="CLUSTER", peers=peers,
                              key=cluster.key)
    same, _, _ = exr_compare(blender.env, two, cli)
    check(result.get("ok") and same, "F12 through two nodes is bitwise the same image")

    big = 64  # long enough to kill a node while it renders
    ref = os.path.join(tmp, "ref64.exr")
    cli_render(binary, env, export, ref, big, width, height)
    args, res = blender.command("f12", dict(out=os.path.join(tmp, "killed.exr"), spp=big,
                                            devices="CLUSTER", peers=peers, key=cluster.key))
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=blender.env)
    killed = False
    for line in p.stdout:
        if not killed and re.search(r"\| [1-9]\d*/%d spp" % big, line):
            cluster.nodes[1][0].kill()
            killed = True
    p.wait(timeout=300)
    same, _, _ = exr_compare(blender.env, os.path.join(tmp, "killed.exr"), ref)
    check(killed and p.returncode == 0 and same,
          "a node killed mid-render: the render completes, bitwise the same image")

    # Find Nodes lists the nodes with their state and devices.
    result, out = blender.run("nodes", peers=peers, key=cluster.key)
    listed = {n.get("address"): n for n in result.get("nodes", [])}
    check(listed.get(a, {}).get("usable") is True and listed.get(a, {}).get("devices")
          and b in listed and listed[b].get("usable") is False,
          "Find Nodes lists the live node as usable with its devices, the killed one not (%s)"
          % {k: (v.get("usable"), v.get("status")) for k, v in listed.items()})

    # A 3-frame animation through a fresh node (it holds no chunk yet).
    fresh = cluster.start()
    frames_dir = os.path.join(tmp, "frames")
    os.mkdir(frames_dir)
    result, out = blender.run("animation", out=frames_dir, spp=4, devices="CLUSTER",
                              peers=fresh, key=cluster.key)
    frames = result.get("frames", [])
    check(len(frames) == 3 and all(os.path.exists(os.path.join(frames_dir, "frame-%d.exr" % i))
                                   for i in (1, 2, 3)),
          "an animation renders its 3 frames through one session (%d stats)" % len(frames))
    if len(frames) == 3 and all(f["nodes"] for f in frames):
        sent = [f["nodes"][0]["render_data_bytes_sent"] for f in frames]
        deltas = [sent[0]] + [sent[i] - sent[i - 1] for i in (1, 2)]
        chunks = [f["nodes"][0]["chunks_sent"] for f in frames]
        chunk_deltas = [chunks[0]] + [chunks[i] - chunks[i - 1] for i in (1, 2)]
        total = frames[0]["nodes"][0]["chunks_total"]
        # The moved object's vertices and the scene's BVH change (world-space geometry); the
        # rest (the other meshes' data, materials, textures, lights) is not sent again.
        check(chunk_deltas[0] == total and 0 < max(chunk_deltas[1:]) <= total // 3
              and max(deltas[1:]) < deltas[0],
              "after frame 1 only the changed chunks go to the node (chunks per frame %s of "
              "%d; bytes per frame %s)" % (chunk_deltas, total, deltas))
        requests = [f["requests"] for f in frames]
        check(requests == [[], ["transform"], ["batch"]],
              "each later frame is one update: frame 2 the sphere's transform, frame 3 the "
              "sphere's and the camera's as one batch (%s)" % requests)

    # An animation whose frame 2 changes geometry: a new session for it, and both frames.
    restart_dir = os.path.join(tmp, "restart")
    os.mkdir(restart_dir)
    result, out = blender.run("restart", out=restart_dir, spp=2, devices="LOCAL")
    sessions = result.get("sessions", [])
    check(len(sessions) == 2 and None not in sessions and sessions[0] != sessions[1] and
          all(os.path.exists(os.path.join(restart_dir, "frame-%d.exr" % i)) for i in (1, 2)),
          "a frame that changes more than updates carry gets a new session (%s)" % sessions)

    # Esc mid-render.
    leased, seconds = escape_mid_render(
        blender, blender.env, lambda: cluster.leases(0),
        dict(out=os.path.join(tmp, "cancel.exr"), devices="CLUSTER", peers=a, key=cluster.key))
    check(leased, "the node held a lease while the render ran")
    check(seconds < 1.0, "Esc ends the render within 1 s (%.3f s)" % seconds)
    deadline = time.monotonic() + 5
    while cluster.leases(0) and time.monotonic() < deadline:
        time.sleep(0.1)
    check(not cluster.leases(0), "after Esc the node holds no lease")

    # The viewport's update path.
    result, out = blender.run("viewport", spp=4, devices="LOCAL")
    check(result.get("ok", False), "the viewport session starts and draws passes")
    check(result.get("camera_updates") == 1,
          "a view change is one camera update, the same view none (%s)"
          % result.get("camera_updates"))
    check(result.get("requests") == ["camera", "transform"],
          "the session saw one camera and one transform update (%s)" % result.get("requests"))
    command = result.get("border_command") or []
    check(result.get("border_pixels") == [24, 0, 48, 36] and
          "24,0,48,36" in command and "--crop" in command and
          result.get("border_image") == [48, 36],
          "a viewport render border renders its pixels alone (%s, pass %s)"
          % (result.get("border_pixels"), result.get("border_image")))

    # View layers: each renders its own objects (a collection excluded from one is not there).
    layered = os.path.join(tmp, "layers")
    os.makedirs(layered, exist_ok=True)
    kept_layer = os.path.join(tmp, "layer-render.glb")
    result, _ = blender.run("view_layers", out=layered, spp=4, devices="LOCAL",
                            env=dict(blender.env, PEERLIGHT_BLENDER_KEEP_EXPORT=kept_layer))
    nodes = result.get("layer_nodes", {})
    try:
        rendered = glb_node_names(kept_layer)
    except (OSError, ValueError, KeyError) as e:
        rendered = str(e)
    check(result.get("ok") and "Ball" in nodes.get("ViewLayer", []) and
          "Ball" not in nodes.get("NoBall", ["Ball"]) and isinstance(rendered, list) and
          "Ball" not in rendered and "Floor" in rendered and
          result.get("ball_hidden_after") is False,
          "a view layer renders its own objects (F12 of one that excludes the ball: %s)"
          % rendered)
    check(all("Asset" in nodes.get(layer, []) for layer in ("ViewLayer", "NoBall")) and
          result.get("asset_hidden_after") is False,
          "an asset placed by an instancer stays, its collection excluded from the layer (%s)"
          % nodes)

    # This machine's node daemon holds the session when one runs (found where the add-on's
    # `peerlight session` looks: XDG_RUNTIME_DIR): F12 and Esc through it.
    run_dir = os.path.join(tmp, "run")
    os.mkdir(run_dir, 0o700)
    daemon_env = dict(env, XDG_RUNTIME_DIR=run_dir)
    daemon = len(cluster.nodes)
    cluster.start(env=daemon_env)
    held = os.path.join(tmp, "f12-daemon.exr")
    result, _ = blender.run("f12", env=dict(blender.env, XDG_RUNTIME_DIR=run_dir), out=held,
                            spp=spp, devices="LOCAL")
    with open(cluster.log(daemon)) as f:
        daemon_log = f.read()
    check(result.get("ok") and "node daemon" in result.get("renders_in", "") and
          "this node is its Primary" in daemon_log,
          "with a node daemon running, F12's session is held by it (%s)"
          % result.get("renders_in"))
    check(os.path.exists(held) and exr_compare(blender.env, held, cli)[0],
          "and its image is bitwise `peerlight render` of the export")
    held_passes = os.path.join(tmp, "f12-daemon-passes.exr")
    result, _ = blender.run("f12", env=dict(blender.env, XDG_RUNTIME_DIR=run_dir),
                            out=held_passes, spp=spp, devices="LOCAL", passes=1)
    same, varied = passes_match(cli_passes, held_passes)
    check(result.get("ok") and same and varied is True,
          "and its Depth, Normal and Diffuse Color passes are `render --passes` exactly (%s)"
          % varied)
    leased, seconds = escape_mid_render(
        blender, dict(blender.env, XDG_RUNTIME_DIR=run_dir), lambda: cluster.leases(daemon),
        dict(out=os.path.join(tmp, "cancel-daemon.exr"), devices="LOCAL"))
    check(leased and seconds < 1.0,
          "Esc ends a render the daemon holds within 1 s (%.3f s; leased before: %s)"
          % (seconds, leased))
    deadline = time.monotonic() + 5
    while cluster.leases(daemon) and time.monotonic() < deadline:
        time.sleep(0.1)
    check(not cluster.leases(daemon), "after Esc the daemon holds no lease")
    result, _ = blender.run("viewport", env=dict(blender.env, XDG_RUNTIME_DIR=run_dir), spp=4,
                            devices="LOCAL")
    check(result.get("ok", False) and "node daemon" in result.get("renders_in", "") and
          result.get("camera_updates") == 1 and result.get("requests") == ["camera", "transform"],
          "the viewport's session is held by the daemon too, a view change one camera update "
          "(%s, %s)" % (result.get("renders_in"), result.get("requests")))

    # No peerlight program.
    lost = dict(blender.env, PEERLIGHT_BINARY="/nonexistent/peerlight")
    result, out = blender.run("f12", env=lost, out=os.path.join(tmp, "none.exr"), spp=1)
    check("peerlight is not installed" in result.get("error", "") and "Traceback" not in out,
          "without peerlight the report area says so, without a traceback")


if __name__ == "__main__":
    sys.exit(main())
