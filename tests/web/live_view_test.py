#!/usr/bin/env python3
"""The live view (issue 11) as a person uses it, in headless Chromium over the DevTools protocol.

A `peerlight node` daemon serves its page on 127.0.0.1 (ephemeral port). Through the page's own
form a session on the project's Cornell box starts; the test selects it, takes screenshots while
it converges (they differ), checks that the final preview shows the pixels of the image the API
saves (max difference 1/255 in sRGB, decoded by the browser), and that this image is bitwise the
one `peerlight render` gives. Then it drags in the preview: the camera moves (a new generation,
another view), and the image of the new state is bitwise `peerlight render --look-at ... --yfov`
of the view the daemon reports. Also: a request from another Host or without the token off
loopback is refused.

Needs Debian's `chromium`; exits 77 (skipped) without it. Every process it starts is killed.
    tests/web/live_view_test.py PEERLIGHT_BINARY SOURCE_DIR
"""
import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

SKIP = 77
SIZE, SPP = 192, 256


class WebSocket:
    """A minimal RFC 6455 client (text frames out, any frames in) for the DevTools protocol."""

    def __init__(self, url, protocol=None, headers=()):
        m = re.match(r"ws://([^/:]+):(\d+)(/.*)", url)
        self.sock = socket.create_connection((m.group(1), int(m.group(2))), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {m.group(3)} HTTP/1.1", f"Host: {m.group(1)}:{m.group(2)}",
                 "Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                 "Sec-WebSocket-Version: 13"] + list(headers)
        if protocol:
            lines.append(f"Sec-WebSocket-Protocol: {protocol}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ")[1]) if head else 0

    def send(self, text):
        data = text.encode()
        header = bytes([0x81])
        if len(data) < 126:
            header += bytes([0x80 | len(data)])
        elif len(data) < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", len(data))
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", len(data))
        mask = os.urandom(4)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _read(self, n):
        while len(self.buffer) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def receive(self):
        """(opcode, payload) of the next whole message."""
        payload, opcode = b"", None
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            payload += self._read(n)
            opcode = opcode or (b0 & 0x0F)
            if b0 & 0x80:
                return opcode, payload


class Browser:
    """Headless Chromium with one page, driven over its DevTools WebSocket."""

    def __init__(self, url, profile):
        self.p = subprocess.Popen(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--window-size=1280,800", "--remote-debugging-port=0", f"--user-data-dir={profile}",
             url], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True)  # its own process group: its helpers go with it
        port = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and port is None:
            line = self.p.stderr.readline()
            m = re.search(r"DevTools listening on ws://127.0.0.1:(\d+)/", line)
            if m:
                port = int(m.group(1))
        if port is None:
            raise SystemExit("chromium did not start")
        pages = []
        while not pages and time.monotonic() < deadline:
            pages = [t for t in json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
                     if t["type"] == "page"]
            time.sleep(0.1)
        self.ws = WebSocket(pages[0]["webSocketDebuggerUrl"])
        self.next = 0

    def call(self, method, **params):
        self.next += 1
        self.ws.send(json.dumps({"id": self.next, "method": method, "params": params}))
        while True:
            _, payload = self.ws.receive()
            m = json.loads(payload)
            if m.get("id") == self.next:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m["result"]

    def eval(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, awaitPromise=True,
                      returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expression, timeout=60, what=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                v = self.eval(expression)
            except RuntimeError:  # e.g. the page is not there yet
                v = None
            if v:
                return v
            time.sleep(0.05)
        raise AssertionError(f"timed out: {what or expression}")

    def screenshot(self):
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def close(self):
        try:
            os.killpg(self.p.pid, 9)
        except ProcessLookupError:
            pass
        self.p.wait()


def get(url, headers=None):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def main():
    binary, source = sys.argv[1], sys.argv[2]
    if shutil.which("chromium") is None:
        print("[  SKIPPED ] Debian's chromium is not installed")
        return SKIP
    scene = os.path.join(source, "scenes", "cornell_box.gltf")
    procs = []
    failures = []

    def check(ok, message):
        print(("ok   " if ok else "FAIL ") + message, flush=True)
        if not ok:
            failures.append(message)

    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        key = os.path.join(tmp, "key")
        with open(key, "wb") as f:
            f.write(os.urandom(32))
        os.chmod(key, 0o600)
        env = dict(os.environ, XDG_CACHE_HOME=os.path.join(tmp, "cache"), HOME=tmp)
        try:
            node = subprocess.Popen(
                [binary, "node", "--listen", "127.0.0.1:0", "--key-file", key, "--no-mdns",
                 "--threads", "2", "--control-socket", os.path.join(tmp, "node.sock"),
                 "--http", "127.0.0.1:0"],
                stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, "node.err"), "w"),
                text=True, env=env)
            procs.append(node)
            base = None
            deadline = time.monotonic() + 30
            while base is None and time.monotonic() < deadline:
                line = node.stdout.readline()
                m = re.match(r"live view on (http://127.0.0.1:\d+/)", line)
                if m:
                    base = m.group(1)
            if base is None:
                raise SystemExit("the node did not serve its live view")
            port = base.rstrip("/").rsplit(":", 1)[1]

            # Access: a Host that is not this machine's loopback name is refused (DNS rebinding).
            status, _ = get(base + "api/state", {"Host": f"attacker.example:{port}"})
            check(status == 403, f"a foreign Host header is refused ({status})")
            status, _ = get(base + "api/state")
            check(status == 200, f"loopback needs no token ({status})")
            # Off loopback (here: a Host that is not ours) the token of `peerlight open` is needed,
            # once in the URL; the page keeps it in a cookie.
            opened = subprocess.run([binary, "open", "--print", "--http", f"10.0.0.1:{port}",
                                     "--key-file", key], capture_output=True, text=True, env=env)
            token = opened.stdout.strip().rsplit("token=", 1)[-1]
            check(opened.returncode == 0 and len(token) == 32, "`peerlight open` prints the token")
            foreign = {"Host": f"10.0.0.1:{port}"}
            request = urllib.request.Request(base + "?token=" + token, headers=foreign)
            with urllib.request.urlopen(request) as r:
                cookie = r.headers.get("set-cookie", "")
                check(r.status == 200 and "peerlight_token=" + token in cookie and
                      "HttpOnly" in cookie, "the token in the URL opens the page and sets a cookie")
            status, _ = get(base + "api/state", dict(foreign, Cookie="peerlight_token=" + token))
            check(status == 200, f"the cookie is enough afterwards ({status})")
            status, _ = get(base + "api/state", dict(foreign, Cookie="peerlight_token=" + "0" * 32))
            check(status == 403, f"a wrong token is refused ({status})")
            with open(key, "rb") as f:
                raw = f.read()
            page = get(base)[1]
            check(raw.hex() not in page.decode() and token not in page.decode(),
                  "neither the key nor the token is in the page")

            browser = Browser(base, os.path.join(tmp, "profile"))
            procs.append(browser)
            b = browser
            b.wait("document.readyState === 'complete' && document.getElementById('self')"
                   ".textContent.includes('device')", what="the page shows this node")
            # Start a session through the page's form, as a person would.
            b.eval(f"""(() => {{
                const f = document.getElementById('start');
                f.scene.value = {json.dumps(scene)};
                f.width.value = {SIZE}; f.height.value = {SIZE}; f.spp.value = {SPP};
                f.requestSubmit(); return true; }})()""")
            b.wait("document.querySelector('.render.selected') !== null", what="session listed")
            b.wait("+document.getElementById('preview').dataset.spp >= 1", what="first preview")
            first = b.screenshot()
            spp_first = int(b.eval("document.getElementById('preview').dataset.spp"))
            b.wait(f"+document.getElementById('preview').dataset.spp === {SPP}", timeout=120,
                   what="the preview reaches the target")
            last = b.screenshot()
            check(spp_first < SPP and first != last,
                  f"the preview changes while it converges ({spp_first} -> {SPP} spp)")
            with open(os.path.join(tmp, "page.png"), "wb") as f:
                f.write(last)
            if os.environ.get("PEERLIGHT_SCREENSHOT"):
                shutil.copy(os.path.join(tmp, "page.png"), os.environ["PEERLIGHT_SCREENSHOT"])

            # The preview's pixels, as the browser decoded them, against the saved image.
            diff = b.eval("""(async () => {
                const pixels = async (src) => {
                  const img = new Image(); img.src = src; await img.decode();
                  const c = document.createElement('canvas');
                  c.width = img.naturalWidth; c.height = img.naturalHeight;
                  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
                  return g.getImageData(0, 0, c.width, c.height).data;
                };
                const a = await pixels(document.getElementById('preview').src);
                const b = await pixels('/api/image?key=s1');
                if (a.length !== b.length) return 999;
                let m = 0; for (let i = 0; i < a.length; ++i) m = Math.max(m, Math.abs(a[i] - b[i]));
                return m; })()""")
            check(diff is not None and diff <= 1,
                  f"the final preview shows the saved image (max difference {diff}/255)")
            status, saved = get(base + "api/image?key=s1")
            out = os.path.join(tmp, "render.png")
            subprocess.run([binary, "render", scene, "-o", out, "--size", f"{SIZE}x{SIZE}",
                            "--spp", str(SPP), "--local-only", "--no-daemon"], check=True,
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            check(status == 200 and saved == open(out, "rb").read(),
                  "the saved image is bitwise `peerlight render`'s")
            # This node's lease to the session, and its events, on the page.
            check(b.wait("document.getElementById('node').textContent.includes('held by')",
                         what="the lease is shown") and
                  b.wait("document.getElementById('events').textContent.includes('granted')",
                         what="the lease event is shown"),
                  "the page shows the lease and the lease events")

            # A page opened while a render runs shows it without a click.
            b.eval("window.beforeReload = true, location.reload(), true")
            check(b.wait("window.beforeReload === undefined && "
                         "document.querySelector('.render.selected') !== null && "
                         "+document.getElementById('preview').dataset.spp === " + str(SPP),
                         what="the render on show after a reload"),
                  "a page opened later shows the running render at once")

            # Drag in the preview: the camera orbits.
            state = json.loads(get(base + "api/state")[1])
            before = state["renders"][0]
            check([n["address"] for n in before["nodes"]] == ["this machine"] and
                  before["nodes"][0]["state"] in ("ready", "rendering", "done") and
                  "this machine" in b.eval("document.getElementById('renders').textContent"),
                  "the render lists the nodes it uses, with their state")
            rect = b.eval("(() => { const r = document.getElementById('preview')"
                          ".getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })()")
            x, y = rect[0] + rect[2] / 2, rect[1] + rect[3] / 2
            b.call("Input.dispatchMouseEvent", type="mousePressed", x=x, y=y, button="left",
                   clickCount=1)
            for i in range(1, 11):
                b.call("Input.dispatchMouseEvent", type="mouseMoved", x=x + 6 * i, y=y + 2 * i,
                       button="left", buttons=1)
                time.sleep(0.02)
            b.call("Input.dispatchMouseEvent", type="mouseReleased", x=x + 60, y=y + 20,
                   button="left", clickCount=1)
            time.sleep(0.5)  # the last throttled camera message
            deadline = time.monotonic() + 120
            after = None
            while time.monotonic() < deadline:
                after = json.loads(get(base + "api/state")[1])["renders"][0]
                if after["generation"] > before["generation"] and after["spp"] == SPP:
                    break
                time.sleep(0.1)
            check(after["generation"] > before["generation"] and after["view"] != before["view"],
                  f"the drag moved the camera (generation {before['generation']} -> "
                  f"{after['generation']})")
            time.sleep(0.3)
            after = json.loads(get(base + "api/state")[1])["renders"][0]
            status, saved = get(base + "api/image?key=s1")
            v = after["view"]
            look = ",".join(repr(c) for c in v["eye"] + v["target"] + v["up"])
            subprocess.run([binary, "render", scene, "-o", out, "--size", f"{SIZE}x{SIZE}",
                            "--spp", str(SPP), "--local-only", "--no-daemon", "--look-at", look,
                            "--yfov", repr(v["yfov"])], check=True, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            check(status == 200 and saved == open(out, "rb").read(),
                  "after the drag, the saved image is bitwise `peerlight render --look-at`'s")
            # A second session started from the form is on show at once and stays so, though
            # the first one is listed too; when it ends, the first one is shown again.
            selected = "(document.querySelector('.render.selected') || {dataset: {}}).dataset.key"
            b.eval(f"""(() => {{
                const f = document.getElementById('start');
                f.scene.value = {json.dumps(scene)}; f.spp.value = 4;
                f.requestSubmit(); return true; }})()""")
            b.wait(f"document.querySelectorAll('.render').length === 2 && {selected} !== 's1'",
                   what="the second session listed and on show")
            time.sleep(1.5)  # state broadcasts come every second
            second = b.eval(selected)
            check(second not in (None, "s1"), f"a session started from the page stays on show "
                  f"({second})")
            b.eval("document.getElementById('cancel').click(), true")
            b.wait(f"document.querySelectorAll('.render').length === 1 && {selected} === 's1'",
                   what="the first session on show again")
            b.eval("document.getElementById('cancel').click(), true")
            b.wait("document.querySelectorAll('.render').length === 0", what="cancel ends it")
            check(True, "cancel ends the session")

            # A session whose devices this machine's owner takes (a `render` in its own process
            # announces the owner's job) is listed as waiting until they are back.
            request = urllib.request.Request(
                base + "api/sessions", method="POST",
                data=json.dumps({"scene": scene, "width": 64, "height": 64,
                                 "spp": 1 << 20}).encode(),
                headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request) as r:
                check(r.status == 200, "a long session started through the API")

            def render_state():
                renders = json.loads(get(base + "api/state")[1])["renders"]
                return renders[0]["state"] if renders else None

            def wait_state(want, seconds=10):
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline and render_state() != want:
                    time.sleep(0.1)
                return render_state()

            check(wait_state("rendering") == "rendering", "it renders")
            owner = subprocess.Popen(
                [binary, "render", scene, "-o", os.path.join(tmp, "owner.exr"), "--size",
                 "64x64", "--spp", str(1 << 20), "--no-daemon", "--local-only", "--threads", "1",
                 "--control-socket", os.path.join(tmp, "node.sock")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            procs.append(owner)
            waiting = wait_state("waiting")
            eta = json.loads(get(base + "api/state")[1])["renders"][0].get("eta_seconds", 0)
            check(waiting == "waiting" and eta is None,
                  "while the owner renders, the session is listed as waiting, with no time left "
                  f"guessed ({eta})")
            b.wait("[...document.querySelectorAll('.pill')].some(p => p.textContent === "
                   "'waiting')", what="the page says waiting")
            owner.kill()
            owner.wait()
            check(wait_state("rendering") == "rendering",
                  "and as rendering once the owner's render has ended")
            b.eval("document.getElementById('cancel').click(), true")
            b.wait("document.querySelectorAll('.render').length === 0", what="cancel ends it")
        finally:
            for p in procs:
                if isinstance(p, Browser):
                    p.close()
                elif p.poll() is None:
                    p.kill()
                    p.wait()
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
