# The viewport (Rendered shading): one `peerlight session` kept open while the viewport shows
# peerlight. Navigation becomes `camera` updates (only the camera chunk goes to the nodes);
# edits are exported again and sent as the updates scene_diff finds (transforms, material
# factors), else the session starts again. The latest pass is drawn as it comes.

import math
import os
import shutil
import time

import bpy

from . import export, scene_diff, scene_report, settings
from .session import Session, SessionError, find_binary

# Blender's Z-up world to glTF's Y-up one (what the exporter does): (x, y, z) -> (x, z, -y).
Z_UP_TO_Y_UP = [1, 0, 0, 0, 0, 0, -1, 0, 0, 1, 0, 0, 0, 0, 0, 1]  # column-major


def view_camera(view_matrix, window_matrix):
    """The viewport's camera for the session: (column-major camera-to-world in glTF space,
    vertical field of view in degrees). `view_matrix`/`window_matrix`: RegionView3D's."""
    inv = view_matrix.inverted()
    blender = [inv[r][c] for c in range(4) for r in range(4)]  # column-major
    matrix = scene_diff.multiply(Z_UP_TO_Y_UP, blender)
    yfov = math.degrees(2.0 * math.atan(1.0 / window_matrix[1][1]))
    return matrix, yfov


def look_at_flag(matrix):
    """--look-at EX,EY,EZ,TX,TY,TZ,UX,UY,UZ for a column-major camera-to-world matrix."""
    eye = matrix[12:15]
    forward = [-matrix[8], -matrix[9], -matrix[10]]
    up = matrix[4:7]
    target = [e + f for e, f in zip(eye, forward)]
    return ",".join("%.9g" % v for v in eye + target + up)


def border_pixels(rect, fractions, width, height):
    """A render border in a width x height viewport: `fractions` (min x, max x, min y, max y,
    Blender's border values, y up) of `rect` ((x, y, w, h) in region pixels, y up: the region
    itself, or the camera's frame in it), clipped to the region. Returns (x, y, w, h) with y
    from the top (peerlight's --region), or None when nothing (or everything) is left."""
    rx, ry, rw, rh = rect
    x0, x1 = rx + fractions[0] * rw, rx + fractions[1] * rw
    y0, y1 = ry + fractions[2] * rh, ry + fractions[3] * rh
    # (A thousandth of a pixel of slack: a corner projected through the camera frame must not
    # move the border by a pixel, and restart the session, as the camera view redraws.)
    x0 = max(0, min(int(math.floor(x0 + 1e-3)), width))
    x1 = max(0, min(int(math.ceil(x1 - 1e-3)), width))
    y0 = max(0, min(int(math.floor(y0 + 1e-3)), height))
    y1 = max(0, min(int(math.ceil(y1 - 1e-3)), height))
    if x1 <= x0 or y1 <= y0 or (x1 - x0, y1 - y0) == (width, height):
        return None
    return (x0, height - y1, x1 - x0, y1 - y0)


def view_border(context, scene, width, height):
    """The viewport's render border, as Cycles takes it: in the camera view the scene's border
    (Ctrl+B, Output Properties) within the camera's frame; in other views the viewport's own
    (Ctrl+B there). (x, y, w, h) with y from the top, or None."""
    rv3d, space, region = context.region_data, context.space_data, context.region
    if rv3d.view_perspective == "CAMERA":
        r = scene.render
        if not r.use_border or scene.camera is None:
            return None
        from bpy_extras.view3d_utils import location_3d_to_region_2d
        corners = [scene.camera.matrix_world @ c
                   for c in scene.camera.data.view_frame(scene=scene)]
        points = [location_3d_to_region_2d(region, rv3d, c) for c in corners]
        if any(p is None for p in points):
            return None
        xs, ys = [p.x for p in points], [p.y for p in points]
        frame = (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))
        return border_pixels(frame, (r.border_min_x, r.border_max_x, r.border_min_y,
                                     r.border_max_y), width, height)
    if not getattr(space, "use_render_border", False):
        return None
    return border_pixels((0, 0, width, height),
                         (space.render_border_min_x, space.render_border_max_x,
                          space.render_border_min_y, space.render_border_max_y), width, height)


class ViewportSession:
    """One viewport's session. Main thread only: view_update schedules sync() on a timer,
    view_draw calls set_view() and draw(), and tick() (a timer) takes the session's events.
    Nothing here waits for the session: it starts in the background, and a resize starts a new
    one only once the size has held for RESIZE_SETTLE seconds."""

    RESIZE_SETTLE = 0.3

    def __init__(self, report):
        self.report = report
        self.session = None
        self.folder = export.private_folder()
        self.exports = 0
        self.scene = None
        self.held = None  # the export the session's state matches
        self.source = None  # the file the session started from
        self.key = None  # what a session cannot change
        self.camera = None  # (matrix, yfov): the view, as last sent
        self.size = None
        self.border = None  # (x, y, w, h), y from the top: the pixels rendered; None: all
        self.restart_at = None  # a new size waits to settle until then (time.monotonic())
        self.generation = None  # None until the session is ready
        self.last_pass = None
        self.session_border = None  # the border the current session renders
        self.image_border = None  # the border the image drawn was rendered for
        self.drawn = None
        self.image = None
        self.camera_updates = 0  # camera requests sent (tests read it)
        self.failed = None
        self.exporting = False  # the export's own depsgraph update is not an edit
        self.sync_queued = False
        self.closed = False
        self._tick = self.tick  # one object: Blender's timers know a function by identity

    def close(self):
        self.closed = True
        self.sync_queued = False
        if self.session is not None:
            self.session.close()
            self.session = None
        if self.image is not None:
            try:
                bpy.data.images.remove(self.image)
            except (ReferenceError, RuntimeError):
                pass
            self.image = None
        shutil.rmtree(self.folder, ignore_errors=True)

    def _fail(self, e):
        self.failed = str(e)
        self.report({"ERROR"}, str(e))
        if self.session is not None:
            self.session.close()
            self.session = None

    # After view_update: the scene changed (or the viewport just switched to peerlight).
    def sync(self, scene):
        self.sync_queued = False
        if self.closed:
            return None
        self.scene = scene
        self.exports += 1
        path = os.path.join(self.folder, "view-%d.glb" % self.exports)
        self.exporting = True
        try:
            # (Not view_layer_only(): switching objects' hide_render here would come back as
            # an edit through view_update, and export again. The viewport shows the whole
            # scene, as before view layers were rendered on their own.)
            export.export_glb(path, self.scene)
            exported = export.read(path)
        except (export.ExportError, ValueError, OSError) as e:
            return self._fail(e)
        finally:
            self.exporting = False
        s = self.scene.peerlight
        prefs = settings.preferences(bpy.context)
        env, _ = scene_report.environment(self.scene)
        key = (s.viewport_samples, s.threads, s.devices, prefs.peers, prefs.key_file, env)
        if self.session is not None and key == self.key:
            ops = scene_diff.diff(self.held, exported)
            if ops is not None:
                os.unlink(path)
                try:
                    if ops:
                        op, fields = scene_diff.as_one_request(ops)
                        self.session.send(op, **fields)
                    self.held = exported
                except SessionError as e:
                    self._fail(e)
                return None
        # The first sync, or more changed than updates carry: a new session.
        if self.source is not None and os.path.exists(self.source):
            os.unlink(self.source)
        self.source, self.held, self.key = path, exported, key
        self.failed = None
        self._restart()
        return None

    # view_draw: the view (camera, size, render border) as it is now.
    def set_view(self, view_matrix, window_matrix, width, height, border=None):
        camera = view_camera(view_matrix, window_matrix)
        size = (int(width), int(height))
        if border != self.border and size == self.size:
            # The session renders its border alone (--region, --crop): another border is
            # another session, once the border holds (zooming the camera view moves it).
            self.border, self.camera = border, camera
            self.restart_at = time.monotonic() + self.RESIZE_SETTLE
            return
        self.border = border
        if size != self.size:
            first = self.size is None
            self.size, self.camera = size, camera
            if first:
                self._restart()
            else:  # a new size: a new session once the size holds (tick)
                self.restart_at = time.monotonic() + self.RESIZE_SETTLE
            return
        if _same(camera, self.camera):
            return
        self.camera = camera
        if self.session is None or self.restart_at is not None:
            return  # the next session starts from this view
        matrix, yfov = camera
        try:
            self.session.send("camera", matrix=matrix, yfov=yfov)
            self.camera_updates += 1
        except SessionError as e:
            self._fail(e)

    def _restart(self):
        """A session on self.source seen from self.camera at self.size, once all are known. It
        starts in the background: tick() sees it become ready."""
        self.restart_at = None
        if self.session is not None:
            self.session.close()
            self.session = None
        if self.source is None or self.camera is None or self.size is None or self.closed:
            return
        s = self.scene.peerlight
        prefs = settings.preferences(bpy.context)
        env = self.key[-1]
        matrix, yfov = self.camera
        width, height = self.size
        args = settings.session_args(s, prefs, width, height, s.viewport_samples, None, env)
        args += ["--look-at", look_at_flag(matrix), "--yfov", "%.9g" % yfov]
        if self.border is not None:
            args += ["--region", "%d,%d,%d,%d" % self.border, "--crop"]
        self.session_border = self.border
        self.last_pass = self.drawn = self.generation = None
        try:
            binary = find_binary(prefs.binary)
            self.session = Session(binary, self.source, args,
                                   os.path.join(self.folder, "pass.exr"))
        except SessionError as e:
            return self._fail(e)
        self.failed = None

    def poll(self):
        """Takes the session's events; returns the newest pass of the current generation."""
        if self.session is None:
            return None
        try:
            while True:
                event = self.session.poll()
                if event is None:
                    break
                kind = event.get("event")
                if kind == "ready":
                    self.generation = event["generation"]
                    for line in scene_report.what_is_lost(self.scene) + event.get("warnings", []):
                        self.report({"WARNING"}, "peerlight: " + line)
                elif kind == "generation":
                    self.generation = event["generation"]
                elif kind == "pass" and event.get("generation") == self.generation:
                    self.last_pass = event
        except SessionError as e:
            self._fail(e)
        return self.last_pass

    # A timer while the viewport shows peerlight: a settled resize starts its session; new
    # passes are loaded here (images may not be created or changed while Blender draws), then
    # the viewports redraw.
    def tick(self):
        if self.closed:
            return None
        if self.restart_at is not None and time.monotonic() >= self.restart_at:
            self._restart()
        p = self.poll()
        if p is not None and p is not self.drawn and "image" in p:
            self.drawn = p
            try:
                self._load(p["image"])
                self.image_border = self.session_border
            except RuntimeError as e:  # a file that cannot be read: say so, keep going
                self._fail(e)
            for window in bpy.context.window_manager.windows:
                for area in window.screen.areas:
                    if area.type == "VIEW_3D":
                        area.tag_redraw()
        return 0.05

    def draw(self, engine, context, depsgraph):
        if not self.closed and not bpy.app.timers.is_registered(self._tick):
            bpy.app.timers.register(self._tick, first_interval=0.05)
        if self.image is not None and self.size is not None:
            width, height = self.size
            x, y, w, h = self.image_border or (0, 0, width, height)
            # The pass holds the border alone: drawn where it lies (GPU y is up).
            _draw_image(engine, depsgraph.scene, self.image, x, height - y - h, w, h)

    def _load(self, path):
        if self.image is None:
            self.image = bpy.data.images.load(path, check_existing=False)
            self.image.name = ".peerlight viewport"
        else:
            self.image.reload()


def _same(a, b):
    (ma, fa), (mb, fb) = a, b
    return abs(fa - fb) < 1e-6 and all(abs(x - y) < 1e-6 for x, y in zip(ma, mb))


def _draw_image(engine, scene, image, x, y, width, height):
    import gpu
    from gpu_extras.presets import draw_texture_2d
    texture = gpu.texture.from_image(image)
    gpu.state.blend_set("ALPHA_PREMULT")
    engine.bind_display_space_shader(scene)
    draw_texture_2d(texture, (x, y), width, height)
    engine.unbind_display_space_shader()
    gpu.state.blend_set("NONE")
