"""JSON lines from a process's stdout, read as they come.

select() on the pipe and os.read(), never a buffered readline(): a line that a readline() has
already pulled into Python's buffer is invisible to select(), so it would wait there until the
process wrote something else (a `peerlight session` at a long pass: seconds).
"""
import json
import os
import select
import time


class EventReader:
    def __init__(self, pipe):
        self.fd = pipe.fileno()
        self.buffer = b""

    def next(self, timeout):
        """The next event (a dict), or None when none has come within `timeout` seconds.
        Raises EOFError when the process closed its stdout."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if not select.select([self.fd], [], [], left)[0]:
                return None
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                raise EOFError("the process closed its output")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)
