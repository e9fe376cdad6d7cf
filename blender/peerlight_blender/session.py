# A `peerlight session` subprocess and its JSON-lines protocol (README, "Render sessions").
#
# No bpy here: the F12 path, the viewport and the tests all drive a session through this class.
# A reader thread turns each stdout line into an event on a queue; stderr is kept (the last
# lines) for the message when the process fails. close() ends the session within about a
# second however busy it is: `quit`, then SIGTERM, then SIGKILL. Its leases are released when
# its connections close.

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections import deque


class SessionError(Exception):
    """The session could not start or ended early; the message says why, for a person."""


def find_binary(preferred=""):
    """The peerlight executable: `preferred` (the add-on preference), $PEERLIGHT_BINARY, PATH,
    /usr/bin. Raises SessionError naming every place looked at."""
    tried = []
    for candidate in (preferred, os.environ.get("PEERLIGHT_BINARY", "")):
        if not candidate:
            continue
        path = os.path.abspath(os.path.expanduser(candidate))
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
        tried.append(path)
    found = shutil.which("peerlight")
    if found:
        return found
    tried.append("PATH")
    if os.access("/usr/bin/peerlight", os.X_OK):
        return "/usr/bin/peerlight"
    tried.append("/usr/bin/peerlight")
    raise SessionError(
        "peerlight is not installed: no peerlight program found (looked at %s). Install the "
        "peerlight package, or set its path in the add-on's preferences." % ", ".join(tried))


class Session:
    """One `peerlight session` process. Not thread-safe: one owner drives it."""

    # A session's first event (`ready`) comes after the scene is loaded and compiled.
    READY_TIMEOUT = 600.0

    def __init__(self, binary, scene_path, args, pass_image=None):
        command = [binary, "session", scene_path] + list(args)
        if pass_image:
            command += ["--pass-image", pass_image]
        self.command = command
        self.events = queue.Queue()
        self.history = []  # every event taken from the queue, in order
        self.ready = None  # the `ready` event
        self._stderr = deque(maxlen=40)
        self._next_id = 0
        try:
            self.proc = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, bufsize=1, start_new_session=True)
        except OSError as e:
            raise SessionError("cannot run %s: %s" % (binary, e)) from e
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self):
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                self._stderr.append("(not JSON on stdout) " + line[:200])
                continue
            if isinstance(event, dict):
                self.events.put(event)
        self.events.put(None)  # end of output: the process is ending

    def _read_stderr(self):
        for line in self.proc.stderr:
            self._stderr.append(line.rstrip())

    def log_tail(self):
        return "\n".join(self._stderr)

    def alive(self):
        return self.proc.poll() is None

    def _ended_message(self):
        try:
            code = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        errors = [line for line in self._stderr if "error" in line]
        why = errors[-1] if errors else (self.log_tail().splitlines() or [""])[-1]
        return "peerlight session ended (exit status %s)%s" % (code, ": " + why if why else "")

    def send(self, op, **fields):
        """Sends one request; returns its id (answers carry it)."""
        self._next_id += 1
        request = {"op": op, "id": self._next_id}
        request.update(fields)
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError) as e:
            raise SessionError(self._ended_message()) from e
        return self._next_id

    def poll(self, timeout=0.0):
        """The next event, or None when none came within `timeout` seconds. Raises SessionError
        when the process has ended, or on a fatal error event."""
        try:
            event = self.events.get(timeout=timeout) if timeout > 0 else self.events.get_nowait()
        except queue.Empty:
            return None
        if event is None:
            self.events.put(None)  # stays ended for every later poll
            raise SessionError(self._ended_message())
        self.history.append(event)
        if event.get("event") == "error" and event.get("fatal"):
            raise SessionError("peerlight session: " + event.get("message", "fatal error"))
        return event

    def wait_for(self, predicate, timeout, should_stop=lambda: False, on_event=None):
        """Events until one satisfies `predicate` (returned), `should_stop()` is true (None), or
        `timeout` seconds pass (SessionError). `on_event` sees every event."""
        deadline = time.monotonic() + timeout
        while True:
            if should_stop():
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise SessionError("peerlight session: no answer within %.0f s" % timeout)
            event = self.poll(min(left, 0.05))
            if event is None:
                continue
            if on_event is not None:
                on_event(event)
            if predicate(event):
                return event

    def wait_ready(self, should_stop=lambda: False):
        event = self.wait_for(lambda e: e.get("event") == "ready", self.READY_TIMEOUT,
                              should_stop)
        self.ready = event
        return event

    def request(self, op, timeout=30.0, **fields):
        """Sends `op` and returns its answer (the event carrying its id). An `error` answer
        raises SessionError with the session's message."""
        rid = self.send(op, **fields)
        event = self.wait_for(lambda e: e.get("id") == rid, timeout)
        if event.get("event") == "error":
            raise SessionError("peerlight session: %s: %s" % (op, event.get("message", "")))
        return event

    def close(self, timeout=1.0):
        """Ends the session within about `timeout` seconds; returns the exit status."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write('{"op":"quit"}\n')
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass
            try:
                self.proc.wait(timeout=timeout * 0.6)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=timeout * 0.3)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        try:  # stdout and stderr belong to the reader threads, which end at their EOF
            self.proc.stdin.close()
        except (OSError, ValueError):
            pass
        return self.proc.returncode


def pass_summary(event):
    """`pass` event -> (nodes that rendered, samples per second, 'N/M spp') for a stats line."""
    shares = event.get("shares", [])
    nodes = sum(1 for s in shares if s.get("source") != "local" and s.get("samples", 0) > 0)
    samples = sum(s.get("samples", 0) for s in shares)
    seconds = event.get("seconds", 0.0)
    rate = samples / seconds if seconds > 0 else 0.0
    return nodes, rate, "%d/%d spp" % (event.get("spp", 0), event.get("target_spp", 0))


def stats_line(event):
    nodes, rate, spp = pass_summary(event)
    where = "this machine" if nodes == 0 else "%d node%s%s" % (
        nodes, "" if nodes == 1 else "s",
        " + this machine" if any(s.get("source") == "local" for s in event.get("shares", []))
        else "")
    line = "peerlight | %s | %.2f M samples/s | %s" % (where, rate / 1e6, spp)
    if "clean" in event:  # rendering until clean: the share of pixels that are done
        line += " | %d%% clean" % int(100 * event["clean"])
    return line
