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
import numpy

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
        self.stopped = None  # the last `stopped` event seen (the time limit ended a generation)

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


def render_border(scene, width, height):
    """The render border as Blender cuts it from a width x height frame, (x, y, w, h) with y
    from the top (peerlight's --region), or None for the whole frame. Blender truncates
    border * size in single precision; so does this, so that the region is exactly the Render
    Result's."""
    r = scene.render
    if not r.use_border:
        return None
    f32 = numpy.float32
    x0, x1 = int(f32(r.border_min_x) * f32(width)), int(f32(r.border_max_x) * f32(width))
    y0, y1 = int(f32(r.border_min_y) * f32(height)), int(f32(r.border_max_y) * f32(height))
    x0, x1 = max(0, min(x0, width)), max(0, min(x1, width))
    y0, y1 = max(0, min(y0, height)), max(0, min(y1, height))
    if x1 <= x0 or y1 <= y0 or (x1 - x0, y1 - y0) == (width, height):
        return None
    return (x0, height - y1, x1 - x0, y1 - y0)


# Blender's passes that peerlight fills: the view layer's switch, the pass's name in the
# Render Result, its channels, and peerlight's pass (`--passes`). Albedo goes to Diffuse
# Color, the pass Blender's compositor and denoise node take as the albedo.
PASSES = (("use_pass_z", "Depth", 1, "Z", "VALUE", "depth"),
          ("use_pass_normal", "Normal", 3, "XYZ", "VECTOR", "normal"),
          ("use_pass_diffuse_color", "DiffCol", 3, "RGB", "COLOR", "albedo"))


def render_passes(view_layer):
    """{Blender pass name: peerlight pass} of the passes the view layer turns on."""
    return {name: ours for switch, name, _n, _c, _t, ours in PASSES
            if getattr(view_layer, switch, False)}


def register_passes(engine, scene, view_layer):
    """RenderEngine.update_render_passes(): the passes peerlight fills, as the view layer
    asks."""
    engine.register_pass(scene, view_layer, "Combined", 4, "RGBA", "COLOR")
    for switch, name, count, channels, kind, _ours in PASSES:
        if getattr(view_layer, switch, False):
            engine.register_pass(scene, view_layer, name, count, channels, kind)


def _load_pass(render_pass, path, width, height):
    """Copies a pass image (an RGB .exr the session wrote) into a Render Result pass: the
    first `channels` of each pixel's RGBA (both bottom row first, as Blender holds them)."""
    image = bpy.data.images.load(path, check_existing=False)
    try:
        pixels = numpy.empty(width * height * 4, dtype=numpy.float32)
        image.pixels.foreach_get(pixels)
    finally:
        bpy.data.images.remove(image)
    render_pass.rect = pixels.reshape(-1, 4)[:, :render_pass.channels].tolist()


class Frame:
    """What the render thread needs from Blender for one frame, read on the main thread (and
    the export written there): the render thread never touches Blender's data itself."""

    def __init__(self, scene, path, view_layer):
        prefs = settings.preferences(bpy.context)
        s = scene.peerlight
        self.binary = prefs.binary
        self.width, self.height = _frame_size(scene)
        # The render border: the session renders those pixels alone and writes them alone,
        # the size of the Render Result Blender gives the engine.
        self.border = render_border(scene, self.width, self.height)
        self.samples, self.time_limit = s.samples, s.time_limit
        self.noise_threshold = s.adaptive_threshold if s.use_adaptive_sampling else 0.0
        self.passes = render_passes(view_layer)
        env, _ = scene_report.environment(scene)
        self.camera = scene.camera.name if scene.camera is not None else None
        # What a session cannot change: a change of any of these starts a new one.
        self.key = (self.width, self.height, s.samples, s.time_limit, s.threads, s.devices,
                    prefs.peers, prefs.key_file, env, prefs.binary, tuple(self.passes),
                    self.border, self.noise_threshold)
        self.flags = settings.session_args(s, prefs, self.width, self.height, s.samples, None,
                                           env)
        if s.time_limit > 0:  # each frame (a generation) ends at its last whole pass after it
            self.flags += ["--time-limit", "%g" % s.time_limit]
        if self.noise_threshold > 0:  # tiles stop once clean; the last pass still ends a frame
            self.flags += ["--noise-threshold", "%g" % self.noise_threshold]
        if self.passes:
            self.flags += ["--passes", ",".join(sorted(self.passes.values()))]
        if self.border is not None:
            self.flags += ["--region", "%d,%d,%d,%d" % self.border, "--crop"]
        self.lost = scene_report.what_is_lost(scene)
        if self.camera is not None:
            unchanged, kept = [], []
            export.export_glb(path, scene, scene.frame_current, for_render=True,
                              unchanged=unchanged, view_layer=view_layer, kept=kept)
            self.lost += ["%s is exported at its viewport settings (it could not be switched "
                          "to its render settings)" % what for what in unchanged]
            self.lost += ["'%s' is rendered although view layer '%s' leaves it out (it could "
                          "not be hidden)" % (name, view_layer.name) for name in kept]


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
    # This frame's export, in a folder of its own until a session owns it.
    folder = export.private_folder()
    try:
        path = os.path.join(folder, "scene.glb")
        try:
            frame = export.on_main_thread(lambda: Frame(scene, path, depsgraph.view_layer),
                                          engine.test_break)
        except export.Cancelled:
            return
        binary = find_binary(frame.binary)
        if frame.camera is None:
            raise SessionError("the scene has no camera")
        if _job is not None and _job.key != frame.key:
            end_job()
        exported = export.read(path)
        ops = None
        if _job is not None and _job.camera == frame.camera:
            ops = scene_diff.diff(_job.held, exported, frame.camera)
        if ops is not None:
            _update(_job, ops, exported)
        else:
            end_job()  # the first frame, or more changed than updates carry
            _job = _start(engine, binary, path, folder, exported, frame)
            folder = None  # the session's now
            if _job is None:
                return
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    _stream_passes(engine, _job, frame.width, frame.height, frame.border, frame.samples,
                   frame.time_limit, frame.passes)


def _update(job, ops, exported):
    """Sends a later frame's updates as one generation (one `batch` when there are several);
    its answer names the generation to wait for."""
    if ops:
        op, fields = scene_diff.as_one_request(ops)
        answer = job.session.request(op, **fields)
        job.generation = answer["generation"]
    job.held = exported


def _start(engine, binary, path, folder, exported, frame):
    index = scene_diff.scene_camera_index(exported.gltf, frame.camera)
    if index is None:
        raise SessionError("the camera '%s' is not in the export (is it hidden from the "
                           "render?)" % frame.camera)
    keep = os.environ.get("PEERLIGHT_BLENDER_KEEP_EXPORT")
    if keep:  # for tests and bug reports: the file the session renders
        shutil.copyfile(path, keep)
    session = Session(binary, path, frame.flags + ["--camera", str(index)],
                      os.path.join(folder, "pass.exr"))
    try:
        ready = session.wait_ready(should_stop=engine.test_break)
    except SessionError:
        session.close()
        raise
    if ready is None:  # cancelled while loading
        session.close()
        shutil.rmtree(folder, ignore_errors=True)
        return None
    for line in frame.lost + ready.get("warnings", []):
        engine.report({"WARNING"}, "peerlight: " + line)
    return FrameSession(frame.key, session, folder, exported, frame.camera)


def _stream_passes(engine, job, width, height, border, target, time_limit, passes):
    """Loads each pass of the job's current generation into the Render Result until it holds
    `target` samples per pixel, the session's time limit ends the generation (its `stopped`
    event: the last pass shown is then final), or the user cancels. With a render border the
    result (which Blender clips to it) and the session's images hold the border alone."""
    start = time.monotonic()
    result = engine.begin_result(0, 0, width, height)
    if border is not None:
        width, height = border[2], border[3]
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
            if event is not None and event.get("event") == "stopped":
                job.stopped = event
            p = job.last_pass
            if p is not None and p.get("generation") == job.generation and p is not shown:
                shown = p
                if "image" in p:
                    result.layers[0].load_from_file(p["image"])
                    layer = result.layers[0]
                    for name, ours in passes.items():
                        path = p.get("pass_images", {}).get(ours)
                        render_pass = layer.passes.find_by_name(name, "")
                        if path and render_pass is not None:
                            try:
                                export.on_main_thread(
                                    lambda rp=render_pass, f=path: _load_pass(rp, f, width,
                                                                              height),
                                    engine.test_break)
                            except export.Cancelled:
                                end_job()  # Esc while waiting: as above
                                return
                    engine.update_result(result)
                engine.update_progress(min(1.0, p["spp"] / float(target)))
                engine.update_stats("", stats_line(p))
                done = p["spp"] >= target
            stop = job.stopped
            if not done and stop is not None and stop.get("generation") == job.generation and \
                    shown is not None and shown.get("spp") == stop.get("spp"):
                done = True  # the time limit ended this frame at the pass shown
            # A session that never says so (the time limit counts from its generation's start,
            # a little after this frame's): give up a while after it.
            if not done and time_limit > 0 and shown is not None and \
                    time.monotonic() - start >= time_limit + 5.0:
                done = True
    finally:
        engine.end_result(result)
