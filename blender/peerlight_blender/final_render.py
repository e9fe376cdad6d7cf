# F12 and animations: each frame rendered through one `peerlight session`.
#
# The first frame exports the scene and starts a session on it. Every later frame of the same
# render job exports again and sends the session only what changed (scene_diff: transforms,
# the camera, material factors); anything else starts a new session. Each pass the session
# writes (--pass-image) goes into Blender's Render Result as it comes. The session stays open
# between the frames of an animation and is closed when the render job ends or is cancelled.

import os
import shutil
import time

import bpy

from . import export, scene_diff, settings
from .session import Session, SessionError, find_binary, stats_line


class FrameSession:
    """The session of the render job in progress and the export it holds."""

    def __init__(self, key, session, folder, held, camera_index):
        self.key = key  # what a session cannot change: size, samples, devices, nodes, world
        self.session = session
        self.folder = folder
        self.held = held  # the scene_diff.Export the session's state matches
        self.camera_index = camera_index
        self.generation = session.ready["generation"]
        self.last_pass = None  # the last `pass` event seen
        self.frames = 0

    def close(self):
        self.session.close()
        shutil.rmtree(self.folder, ignore_errors=True)


_job = None  # the FrameSession of the render job in progress


def end_job(*_args):
    """render_complete / render_cancel handler: the job's session ends, its leases with it."""
    global _job
    if _job is not None:
        _job.close()
        _job = None


def _start(engine, binary, scene_path, folder, args, camera_index, key, held, lost):
    session = Session(binary, scene_path, args, os.path.join(folder, "pass.exr"))
    try:
        session.wait_ready(should_stop=engine.test_break)
    except SessionError:
        session.close()
        raise
    if session.ready is None:  # cancelled while loading
        session.close()
        return None
    for line in lost + session.ready.get("warnings", []):
        engine.report({"WARNING"}, "peerlight: " + line)
    return FrameSession(key, session, folder, held, camera_index)


def _frame_size(scene):
    r = scene.render
    return (max(1, r.resolution_x * r.resolution_percentage // 100),
            max(1, r.resolution_y * r.resolution_percentage // 100))


def render(engine, depsgraph):
    """RenderEngine.render(): one frame. Errors go to the report area, not a traceback."""
    global _job
    try:
        _render(engine, depsgraph)
    except (SessionError, export.ExportError, ValueError, OSError) as e:
        engine.report({"ERROR"}, str(e))
        end_job()


def _render(engine, depsgraph):
    global _job
    scene = depsgraph.scene
    prefs = settings.preferred_binary(bpy.context)
    binary = find_binary(prefs)
    width, height = _frame_size(scene)
    s = scene.peerlight
    env, _ = export.environment(scene)
    key = (width, height, s.samples, s.threads, s.devices, s.peers, s.key_file, env, binary)
    if scene.camera is None:
        raise SessionError("the scene has no camera")

    if _job is not None and _job.key != key:
        end_job()
    folder = _job.folder if _job is not None else export.private_folder()
    path = os.path.join(folder, "frame-%d.glb" % scene.frame_current)
    if not export.export_from_any_thread(path, scene, engine.test_break):
        return  # cancelled while exporting
    exported = export.read(path)
    camera_index = export.camera_index(exported, scene.camera)
    if camera_index is None:
        raise SessionError("the camera '%s' is not in the export (is it hidden from the "
                           "render?)" % scene.camera.name)

    ops = None
    if _job is not None and _job.camera_index == camera_index:
        ops = scene_diff.diff(_job.held, exported, camera_index)
    if ops is None:
        end_job()  # nothing to update (first frame), or more changed than updates carry
        keep = os.environ.get("PEERLIGHT_BLENDER_KEEP_EXPORT")
        if keep:  # for tests and bug reports: the file the session renders
            shutil.copyfile(path, keep)
        args = settings.session_args(s, width, height, s.samples, camera_index, env)
        _job = _start(engine, binary, path, folder, args, camera_index, key, exported,
                      export.what_is_lost(scene))
        if _job is None:
            return
    else:
        for op in ops:
            answer = _job.session.request(op.pop("op"), **op)
            _job.generation = answer["generation"]
        _job.held = exported
    _job.frames += 1
    _stream_passes(engine, _job, width, height, s.samples, s.time_limit)


def _stream_passes(engine, job, width, height, target, time_limit):
    """Loads each pass of the job's current generation into the Render Result until it holds
    `target` samples per pixel, the time limit passes, or the user cancels."""
    start = time.monotonic()
    result = engine.begin_result(0, 0, width, height)
    done = False
    shown = None
    try:
        while not done:
            if engine.test_break():
                end_job()  # Esc: the session and its leases end now
                return
            event = job.session.poll(0.05)
            if event is not None and event.get("event") == "pass":
                job.last_pass = event
            p = job.last_pass
            if p is not None and p.get("generation") == job.generation and p is not shown:
                shown = p
                if "image" in p:
                    result.layers[0].load_from_file(p["image"])
                    engine.update_result(result)
                engine.update_progress(min(1.0, p["spp"] / float(target)))
                engine.update_stats("", stats_line(p))
                done = p["spp"] >= target
            if not done and time_limit > 0 and shown is not None and \
                    time.monotonic() - start >= time_limit:
                done = True
    finally:
        engine.end_result(result)
