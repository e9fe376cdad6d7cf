# The Blender scene as peerlight reads it: a .glb written by Blender's own glTF exporter
# (io_scene_gltf2, with the KHR extensions it writes), in a private folder, from whichever
# thread asks (operators run on the main thread). What the export cannot carry is
# scene_report.py's.

import contextlib
import os
import queue
import tempfile
import threading

import bpy

from . import scene_diff, scene_report


class ExportError(Exception):
    """The export failed; the message is the exporter's."""


def private_folder():
    """A folder only this user may read (mkdtemp gives 0700), removed by the caller."""
    return tempfile.mkdtemp(prefix="peerlight-blender-")


def _render_objects(scene):
    """The scene's objects and those of the collections they instance, each once."""
    seen, stack = set(), list(scene.objects)
    while stack:
        obj = stack.pop()
        if obj.name_full in seen:
            continue
        seen.add(obj.name_full)
        yield obj
        if obj.instance_type == "COLLECTION" and obj.instance_collection is not None:
            stack.extend(obj.instance_collection.all_objects)


@contextlib.contextmanager
def render_modifiers(scene, unchanged=None):
    """Within it, the scene's modifiers evaluate as a render evaluates them: those enabled for
    the render and no others, subdivision and multiresolution at their render levels (and
    Simplify's render limit). Blender's exporter applies modifiers from the viewport's
    evaluation, so without this F12 would render the viewport's levels. Everything is put back
    on the way out. A modifier Blender does not let us change (a linked object's) is left as
    the viewport shows it and named in `unchanged` (a list), for the report area."""
    saved = []

    def change(owner, name, value, what):
        try:
            before = getattr(owner, name)
            setattr(owner, name, value)
        except (AttributeError, TypeError, RuntimeError):
            if unchanged is not None and what not in unchanged:
                unchanged.append(what)
            return
        saved.append((owner, name, before))

    try:
        r = scene.render
        if r.use_simplify and r.simplify_subdivision != r.simplify_subdivision_render:
            change(r, "simplify_subdivision", r.simplify_subdivision_render, "Simplify")
        for obj in _render_objects(scene):
            for modifier in getattr(obj, "modifiers", []):
                what = "modifier '%s' on '%s'" % (modifier.name, obj.name)
                if modifier.show_viewport != modifier.show_render:
                    change(modifier, "show_viewport", modifier.show_render, what)
                if modifier.type in ("SUBSURF", "MULTIRES") and \
                        modifier.levels != modifier.render_levels:
                    change(modifier, "levels", modifier.render_levels, what)
        yield
    finally:
        for owner, name, before in reversed(saved):
            try:
                setattr(owner, name, before)
            except (AttributeError, TypeError, RuntimeError, ReferenceError):
                pass  # the object went away meanwhile; the others are still put back


@contextlib.contextmanager
def view_layer_only(scene, view_layer, kept=None):
    """Within it, the scene's objects that `view_layer` leaves out (their collections excluded
    from it) are hidden from the render, so that the export holds that view layer alone:
    Blender's exporter takes every object of the scene. Put back on the way out; an object
    Blender does not let us hide (a linked one) stays in the export, named in `kept`."""
    saved = []
    try:
        if view_layer is not None:
            # What the layer renders: its objects, what they instance (a collection excluded
            # from the layer and placed by instancer empties, as asset libraries are), and the
            # scene's camera wherever it lies. (Blender's exporter drops an instance whose
            # object is hidden from the render, so an instanced object is kept, and is then
            # also exported where it lies itself.)
            included = set()
            stack = list(view_layer.objects) + ([scene.camera] if scene.camera else [])
            while stack:
                obj = stack.pop()
                if obj.name_full in included:
                    continue
                included.add(obj.name_full)
                if obj.instance_type == "COLLECTION" and obj.instance_collection is not None:
                    stack.extend(obj.instance_collection.all_objects)
            for obj in scene.objects:
                if obj.name_full in included or obj.hide_render:
                    continue
                try:
                    obj.hide_render = True
                except (AttributeError, TypeError, RuntimeError):
                    if kept is not None and obj.name not in kept:
                        kept.append(obj.name)
                    continue
                saved.append(obj)
        yield
    finally:
        for obj in saved:
            try:
                obj.hide_render = False
            except (AttributeError, TypeError, RuntimeError, ReferenceError):
                pass


def export_glb(path, scene, frame=None, for_render=False, unchanged=None, view_layer=None,
               kept=None):
    """Writes `scene` to `path` (.glb). Modifiers are applied, objects hidden from the render
    left out, cameras and lights included. `frame`: bring the scene to that frame first (an
    animation's frame: the exporter reads the view layer's evaluated state, which a render of
    the frame does not update). `for_render`: the modifiers as a render evaluates them
    (render_modifiers(), which names in `unchanged` those it could not switch); else as the
    viewport shows them. `view_layer`: only its objects (view_layer_only(), which names in
    `kept` those it could not leave out). Raises ExportError."""
    # The exporter works on the context's scene and view layer.
    window = bpy.context.window
    override = {"scene": scene}
    if window is not None:
        override["window"] = window
    modifiers = render_modifiers(scene, unchanged) if for_render else contextlib.nullcontext()
    try:
        with bpy.context.temp_override(**override), modifiers, \
                view_layer_only(scene, view_layer, kept):
            if frame is not None:
                scene.frame_set(frame)
            result = bpy.ops.export_scene.gltf(
                filepath=path, export_format="GLB", use_renderable=True, use_active_scene=True,
                export_cameras=True, export_lights=True, export_apply=True,
                export_animations=False, export_current_frame=True, export_extras=False,
                export_yup=True, will_save_settings=False)
    except (RuntimeError, TypeError) as e:
        raise ExportError("glTF export failed: %s" % e) from e
    if "FINISHED" not in result or not os.path.isfile(path):
        raise ExportError("glTF export failed (the exporter returned %s)" % ", ".join(result))
    solid_transmission(path)


def solid_transmission(path):
    """Makes every transmissive material of the .glb at `path` a refracting volume, as Cycles
    renders the Principled BSDF's Transmission, with the absorption of its Volume Absorption
    node if it has one (scene_report.volume_absorption). Blender's exporter writes
    KHR_materials_transmission alone unless a "glTF Material Output" node gives a thickness,
    and glTF reads transmission alone as a thin wall (no refraction). Returns the names of
    the materials changed."""
    export = scene_diff.Export.read(path)
    changed = []
    for material in export.gltf.get("materials", []):
        ext = material.get("extensions", {})
        if "KHR_materials_transmission" in ext and "KHR_materials_volume" not in ext:
            volume = {"thicknessFactor": 1.0}
            source = bpy.data.materials.get(material.get("name", ""))
            absorption = scene_report.volume_absorption(source) if source else None
            if absorption is not None:
                volume["attenuationColor"], volume["attenuationDistance"] = absorption
            ext["KHR_materials_volume"] = volume
            changed.append(material.get("name", ""))
    if changed:
        used = export.gltf.setdefault("extensionsUsed", [])
        if "KHR_materials_volume" not in used:
            used.append("KHR_materials_volume")
        export.write(path)
    return changed


# Blender's operators and data belong to the main thread, and F12 renders on a thread of its
# own: the render thread queues what it needs from Blender (the export, the settings), and a
# timer on the main thread runs it.
_calls = queue.Queue()


class Cancelled(Exception):
    """should_stop() became true while waiting for the main thread."""


def _serve_calls():
    while True:
        try:
            fn, done, box = _calls.get_nowait()
        except queue.Empty:
            return 0.1
        try:
            if not box.get("cancelled"):
                box["result"] = fn()
        except Exception as e:  # handed to the render thread, which reports it
            box["error"] = e
        done.set()


def on_main_thread(fn, should_stop=lambda: False):
    """fn()'s result, run on the main thread: directly there, else through the main thread's
    timer (waiting). Raises what fn raised, or Cancelled when `should_stop()` became true
    first (fn then does not run, unless it had started)."""
    if threading.current_thread() is threading.main_thread():
        return fn()
    done, box = threading.Event(), {}
    _calls.put((fn, done, box))
    while not done.wait(0.05):
        if should_stop():
            box["cancelled"] = True
            raise Cancelled()
    if "error" in box:
        raise box["error"]
    return box["result"]


def register():
    if not bpy.app.timers.is_registered(_serve_calls):
        bpy.app.timers.register(_serve_calls, first_interval=0.1, persistent=True)


def unregister():
    if bpy.app.timers.is_registered(_serve_calls):
        bpy.app.timers.unregister(_serve_calls)


def read(path):
    return scene_diff.Export.read(path)
