# F12 and animations: each frame rendered through one `peerlight session`.
#
# The first frame exports the scene and starts a session on it. Every later frame of the same
# render job exports again and sends the session only what changed (scene_diff: transforms,
# the camera, material factors); anything else starts a new session. Each pass the session
# writes (--pass-image) goes into Blender's Render Result as it comes. The session stays open
# between the frames of an animation and is closed when the render job ends or is cancelled,
# and when another file is loaded. Each session has a private folder of its own (its exports
# and its pass image), removed with it.

import os
import shutil
import time

import bpy

from . import export, scene_diff, scene_report, settings
from .session import Session, SessionError, find_binary, stats_line


class FrameSession:
    """The session of the render job in progress, its folder and the export it holds."""

    def __init__(self, key, session, folder, held, camera):
        self.key = key  # what a session cannot change: size, samples, devices, nodes, world
        self.session = session
        self.folder = folder
        self.held = held  # the scene_diff.Export the session's state matches
        self.camera = camera  # the name of the camera's node
        self.generation = session.ready["generation"]
        self.last_pass = None  # the last `pass` event seen

    def close(self):
        self.session.close()
        shutil.rmtree(self.folder, ignore_errors=True)


_job = None  # the FrameSession of the render job in progress


@bpy.app.handlers.persistent
def end_job(*_args):
    """render_complete / render_cancel / load_pre handler: the job's session ends, its leases
    with it."""
    global _job
    if _job is not None:
        _job.close()
        _job = None


def _frame_size(scene):
    r = scene.render
    return (max(1, r.resolution_x * r.resolution_percentage // 100),
            max(1, r.resolution_y * r.resolution_percentage // 100))


def render(engine, depsgraph):
    """RenderEngine.render(): one frame. Errors go to the report area, not a traceback."""
    try:
        _render(engine, depsgraph)
    except (SessionError, export.ExportError, ValueError, OSError) as e:
        engine.report({"ERROR"}, str(e))
        end_job()


def _render(engine, depsgraph):
    global _job
    scene = depsgraph.scene
    prefs = settings.preferences(bpy.context)
    binary = find_binary(prefs.binary)
    width, height = _frame_size(scene)
    s = scene.peerlight
    env, _ = scene_report.environment(scene)
    key = (width, height, s.samples, s.threads, s.devices, prefs.peers, prefs.key_file, env,
           binary)
    if scene.camera is None:
        raise SessionError("the scene has no camera")
    if _job is not None and _job.key != key:
        end_job()

    # This frame's export, in a folder of its own until a session owns it.
    folder = export.private_folder()
    try:
        path = os.path.join(folder, "frame-%d.glb" % scene.frame_current)
        if not export.export_from_any_thread(path, scene, scene.frame_current,
                                             engine.test_break):
            return  # cancelled while exporting
        exported = export.read(path)
        camera = scene.camera.name
        ops = None
        if _job is not None and _job.camera == camera:
            ops = scene_diff.diff(_job.held, exported, camera)
        if ops is not None:
            _update(_job, ops, exported)
        else:
            end_job()  # the first frame, or more changed than updates carry
            _job = _start(engine, binary, path, folder, exported, scene, key, prefs)
            folder = None  # the session's now
            if _job is None:
                return
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    _stream_passes(engine, _job, width, height, s.samples, s.time_limit)


def _update(job, ops, exported):
    """Sends a later frame's updates as one generation (one `batch` when there are several);
    its answer names the generation to wait for."""
    if ops:
        op, fields = scene_diff.as_one_request(ops)
        answer = job.session.request(op, **fields)
        job.generation = answer["generation"]
    job.held = exported


def _start(engine, binary, path, folder, exported, scene, key, prefs):
    index = scene_diff.scene_camera_index(exported.gltf, scene.camera.name)
    if index is None:
        raise SessionError("the camera '%s' is not in the export (is it hidden from the "
                           "render?)" % scene.camera.name)
    keep = os.environ.get("PEERLIGHT_BLENDER_KEEP_EXPORT")
    if keep:  # for tests and bug reports: the file the session renders
        shutil.copyfile(path, keep)
    width, height = key[0], key[1]
    args = settings.session_args(scene.peerlight, prefs, width, height, scene.peerlight.samples,
                                 index, key[7])
    session = Session(binary, path, args, os.path.join(folder, "pass.exr"))
    try:
        ready = session.wait_ready(should_stop=engine.test_break)
    except SessionError:
        session.close()
        raise
    if ready is None:  # cancelled while loading
        session.close()
        shutil.rmtree(folder, ignore_errors=True)
        return None
    for line in scene_report.what_is_lost(scene) + ready.get("warnings", []):
        engine.report({"WARNING"}, "peerlight: " + line)
    return FrameSession(key, session, folder, exported, scene.camera.name)


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
