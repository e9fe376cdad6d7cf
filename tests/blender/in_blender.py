"""Runs inside Debian's Blender (`blender -b --factory-startup --python in_blender.py -- ...`)
for tests/blender/addon_test.py: builds the test scene the way a person would (a glass sphere,
an emissive panel, a textured plane, a camera), enables the add-on from the source tree, and
renders through it. Each step writes what it saw to a JSON file the test reads.

    in_blender.py -- ADDON_DIR RESULT.json STEP [key=value ...]

Steps:
    f12        F12 (render.render, write_still) to out=PATH.exr; settings from the arguments
    animation  frames 1-3 of the scene (the sphere moves); the session's stats after each frame
    viewport   the viewport's update path: view_update/view_draw's calls, driven by hand
    nodes      the Cluster panel's Find Nodes button: the nodes it lists
    restart    frames 1-2 where frame 2 displaces the sphere (more than updates carry): a new
               session
"""
import json
import math
import os
import sys
import time

import addon_utils
import bpy
import mathutils

argv = sys.argv[sys.argv.index("--") + 1:]
ADDON_DIR, RESULT, STEP = argv[0], argv[1], argv[2]
OPTIONS = dict(a.split("=", 1) for a in argv[3:])
sys.path.insert(0, ADDON_DIR)
from peerlight_blender import final_render, viewport  # noqa: E402

result = {"reports": []}


def save():
    with open(RESULT, "w") as f:
        json.dump(result, f)


def build_scene():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    bpy.ops.mesh.primitive_plane_add(size=6, location=(0, 0, 0))
    floor = bpy.context.object
    floor.name = "Floor"
    image = bpy.data.images.new("Checker", 64, 64)
    image.generated_type = "COLOR_GRID"
    mat = bpy.data.materials.new("FloorMat")
    mat.use_nodes = True
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    tex = mat.node_tree.nodes.new("ShaderNodeTexImage")
    tex.image = image
    mat.node_tree.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    # Displacement, which the export cannot carry: the report area must say so.
    bump = mat.node_tree.nodes.new("ShaderNodeDisplacement")
    mat.node_tree.links.new(bump.outputs["Displacement"],
                            mat.node_tree.nodes["Material Output"].inputs["Displacement"])
    floor.data.materials.append(mat)
    # A modifier for the viewport only: F12 must not apply it.
    preview = floor.modifiers.new("PreviewOnly", "SUBSURF")
    preview.subdivision_type = "SIMPLE"
    preview.levels, preview.show_render = 1, False

    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.8, location=(0, 0, 0.8))
    ball = bpy.context.object
    ball.name = "Ball"
    glass = bpy.data.materials.new("Glass")
    glass.use_nodes = True
    b = glass.node_tree.nodes["Principled BSDF"]
    b.inputs["Transmission"].default_value = 1.0
    b.inputs["Roughness"].default_value = 0.05
    b.inputs["Base Color"].default_value = (0.8, 0.9, 1.0, 1.0)
    # Tinted glass: a Volume Absorption node, which the add-on carries as glTF attenuation.
    absorb = glass.node_tree.nodes.new("ShaderNodeVolumeAbsorption")
    absorb.inputs["Color"].default_value = (0.6, 0.8, 1.0, 1.0)
    absorb.inputs["Density"].default_value = 0.5
    glass.node_tree.links.new(absorb.outputs["Volume"],
                              glass.node_tree.nodes["Material Output"].inputs["Volume"])
    ball.data.materials.append(glass)
    ball.location = (0, 0, 0.8)
    ball.keyframe_insert("location", frame=1)
    ball.location = (1.2, 0.4, 0.8)
    ball.keyframe_insert("location", frame=3)

    bpy.ops.mesh.primitive_plane_add(size=2, location=(0, 0, 3.5), rotation=(math.pi, 0, 0))
    panel = bpy.context.object
    panel.name = "Panel"
    light = bpy.data.materials.new("Light")
    light.use_nodes = True
    lb = light.node_tree.nodes["Principled BSDF"]
    lb.inputs["Emission"].default_value = (1, 1, 1, 1)
    lb.inputs["Emission Strength"].default_value = 8.0
    lb.inputs["Base Color"].default_value = (0, 0, 0, 1)
    panel.data.materials.append(light)
    # Subdivided for the render only (flat, as the plane): F12 must export its render levels.
    fine = panel.modifiers.new("RenderLevels", "SUBSURF")
    fine.subdivision_type = "SIMPLE"
    fine.levels, fine.render_levels = 0, 2

    bpy.ops.object.camera_add(location=(5, -5, 3.5), rotation=(1.1, 0, 0.785))
    scene.camera = bpy.context.object
    scene.camera.name = "Cam"
    scene.render.resolution_x = int(OPTIONS.get("width", 160))
    scene.render.resolution_y = int(OPTIONS.get("height", 120))
    scene.render.resolution_percentage = 100
    scene.frame_start, scene.frame_end = 1, 3
    scene.frame_set(1)
    return scene


def configure(scene):
    # Enabled as Preferences > Add-ons does (the add-on folder is on sys.path above).
    addon_utils.enable("peerlight_blender", default_set=True)
    prefs = bpy.context.preferences.addons["peerlight_blender"].preferences
    prefs.peers = OPTIONS.get("peers", "")
    prefs.key_file = OPTIONS.get("key", "")
    scene.render.engine = "PEERLIGHT"
    s = scene.peerlight
    s.samples = int(OPTIONS.get("spp", 16))
    s.time_limit = float(OPTIONS.get("time_limit", 0))
    if OPTIONS.get("noise_threshold"):
        s.use_adaptive_sampling = True
        s.adaptive_threshold = float(OPTIONS["noise_threshold"])
    s.devices = OPTIONS.get("devices", "LOCAL")
    s.threads = int(OPTIONS.get("threads", 0))
    settings = scene.render.image_settings
    settings.file_format = "OPEN_EXR"
    settings.color_depth = "32"
    settings.exr_codec = "NONE"
    if OPTIONS.get("border"):
        # A render border, as the viewport's Ctrl+B draws it (the output keeps the full frame).
        r = scene.render
        r.use_border, r.use_crop_to_border = True, False
        r.border_min_x, r.border_max_x, r.border_min_y, r.border_max_y = 0.25, 0.75, 0.2, 0.6
    if OPTIONS.get("passes"):
        # The compositor's passes, switched on as in the View Layer properties; saved with
        # the image as a multilayer EXR.
        layer = bpy.context.view_layer
        layer.use_pass_z = layer.use_pass_normal = layer.use_pass_diffuse_color = True
        settings.file_format = "OPEN_EXR_MULTILAYER"


def f12(scene):
    scene.render.filepath = OPTIONS["out"]

    def stopped(*_):  # before render_complete ends the job: where the time limit ended it
        job = final_render._job
        if job is not None and job.stopped is not None:
            result["stopped_spp"] = job.stopped["spp"]
        if job is not None and job.session is not None and job.session.ready is not None:
            result["renders_in"] = job.session.ready.get("renders_in", "")
        if job is not None and job.last_pass is not None:
            result["last_pass"] = job.last_pass
            result["stats_line"] = final_render.stats_line(job.last_pass)  # as the header shows

    bpy.app.handlers.render_post.append(stopped)
    start = time.monotonic()
    print("peerlight-test: render starts", flush=True)
    try:
        bpy.ops.render.render(write_still=True)
    except RuntimeError as e:  # the engine reported an error (in the UI: the report area)
        result["error"] = str(e)
    result["seconds"] = time.monotonic() - start
    print("peerlight-test: render returned", flush=True)


def animation(scene):
    # The sphere moves in frames 2 and 3 (build_scene); the camera moves in frame 3 too: frame
    # 3's updates go as one batch.
    cam = scene.camera
    cam.keyframe_insert("location", frame=2)
    cam.location.x += 0.4
    cam.keyframe_insert("location", frame=3)
    scene.frame_set(1)
    frames = []

    seen = [0]  # updates of the session seen before this frame

    def after_frame(scene, *_):
        job = final_render._job
        if job is None:
            return
        stats = job.session.request("stats")
        updates = [e.get("op") for e in job.session.history if e.get("event") == "generation"]
        frames.append({"frame": scene.frame_current, "nodes": stats["nodes"],
                       "generation": stats["generation"], "spp": stats["spp"],
                       "requests": updates[seen[0]:]})
        seen[0] = len(updates)

    bpy.app.handlers.render_post.append(after_frame)
    scene.render.filepath = os.path.join(OPTIONS["out"], "frame-#")
    bpy.ops.render.render(animation=True)
    result["frames"] = frames


def viewport_step(scene):
    # What view_update and view_draw do, called by hand (no window in -b): a view, the scene's
    # sync, passes; then one view change, which must reach the session as one camera update.
    reports = result["reports"]
    v = viewport.ViewportSession(lambda kind, text: reports.append(text))
    depsgraph = bpy.context.evaluated_depsgraph_get()
    eye = mathutils.Vector((5, -5, 3.5))
    rot = mathutils.Euler((1.1, 0, 0.785)).to_matrix().to_4x4()
    cam_to_world = mathutils.Matrix.Translation(eye) @ rot
    projection = mathutils.Matrix(((1.5, 0, 0, 0), (0, 2.0, 0, 0), (0, 0, -1, -0.2),
                                   (0, 0, -1, 0)))
    v.sync(depsgraph.scene)
    v.set_view(cam_to_world.inverted(), projection, 96, 72)

    def final_pass(after=None):
        """The viewport's final pass of a generation newer than `after`."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            v.tick()  # the viewport's timer: events, the pass image
            p = v.last_pass
            if p is not None and p["spp"] >= p["target_spp"] and p["generation"] != after:
                return p
            time.sleep(0.02)
        raise SystemExit("the viewport session gave no final pass")

    first = final_pass()
    result["first_generation"] = first["generation"]
    v.set_view(cam_to_world.inverted(), projection, 96, 72)  # the same view: nothing to send
    turned = mathutils.Matrix.Rotation(0.2, 4, "Z") @ cam_to_world
    v.set_view(turned.inverted(), projection, 96, 72)  # the user orbits
    second = final_pass(first["generation"])
    result["second_generation"] = second["generation"]
    # An edit in the scene: the sphere moves (view_update with the new depsgraph).
    bpy.data.objects["Ball"].location.x += 0.5
    v.sync(bpy.context.evaluated_depsgraph_get().scene)
    final_pass(second["generation"])
    result["camera_updates"] = v.camera_updates
    ready = [e for e in v.session.history if e.get("event") == "ready"]
    result["renders_in"] = ready[0].get("renders_in", "") if ready else ""
    result["requests"] = [e.get("op") for e in v.session.history if e.get("event") == "generation"]
    result["pid"] = v.session.proc.pid
    # A render border (Ctrl+B in the viewport): Blender's fractions (y up) as --region (y down),
    # and a session that renders the border alone, whose passes are the border's size.
    result["border_pixels"] = viewport.border_pixels((0, 0, 96, 72), (0.25, 0.75, 0.5, 1.0),
                                                     96, 72)
    v.set_view(turned.inverted(), projection, 96, 72, border=(24, 0, 48, 36))
    deadline = time.monotonic() + 10
    while v.restart_at is not None and time.monotonic() < deadline:  # the border settles
        v.tick()
        time.sleep(0.02)
    final_pass()
    result["border_command"] = v.session.command
    result["border_image"] = list(v.image.size) if v.image is not None else None
    v.close()


def restart(scene):
    ball = bpy.data.objects["Ball"]
    bump = ball.modifiers.new("Bump", "DISPLACE")  # frame 2's geometry differs
    bump.strength = 0.0
    bump.keyframe_insert("strength", frame=1)
    bump.strength = 0.3
    bump.keyframe_insert("strength", frame=2)
    scene.frame_end = 2
    sessions = []
    bpy.app.handlers.render_post.append(
        lambda *_: sessions.append(final_render._job.session.proc.pid if final_render._job else None))
    scene.render.filepath = os.path.join(OPTIONS["out"], "frame-#")
    bpy.ops.render.render(animation=True)
    result["sessions"] = sessions


def nodes(scene):
    from peerlight_blender import ui
    bpy.ops.peerlight.refresh_nodes()
    result["nodes"] = ui._nodes["list"]


def view_layers(scene):
    # A second view layer that excludes the ball's collection, the only one rendered: F12
    # exports it without the ball; the ball is rendered again afterwards by the first layer.
    from peerlight_blender import export
    extras = bpy.data.collections.new("Extras")
    scene.collection.children.link(extras)
    ball = bpy.data.objects["Ball"]
    for c in list(ball.users_collection):
        c.objects.unlink(ball)
    extras.objects.link(ball)
    # An asset placed by an instancer: its collection is excluded from both layers, and it is
    # rendered through the instance.
    library = bpy.data.collections.new("Library")
    scene.collection.children.link(library)
    bpy.ops.mesh.primitive_cube_add(size=0.3, location=(20, 0, 0))
    asset = bpy.context.object
    asset.name = "Asset"
    for c in list(asset.users_collection):
        c.objects.unlink(asset)
    library.objects.link(asset)
    instancer = bpy.data.objects.new("Instancer", None)
    instancer.instance_type = "COLLECTION"
    instancer.instance_collection = library
    instancer.location = (-21.5, 1.5, 0)
    scene.collection.objects.link(instancer)
    first = scene.view_layers[0]
    first.layer_collection.children["Library"].exclude = True
    second = scene.view_layers.new("NoBall")
    second.layer_collection.children["Extras"].exclude = True
    second.layer_collection.children["Library"].exclude = True
    path = os.path.join(OPTIONS["out"], "layer.glb")
    names = {}
    for layer in (first, second):
        export.export_glb(path, scene, view_layer=layer)
        names[layer.name] = sorted(n.get("name", "") for n in export.read(path).gltf["nodes"])
    result["layer_nodes"] = names
    first.use = False  # F12 renders the NoBall layer alone
    scene.render.filepath = os.path.join(OPTIONS["out"], "noball.exr")
    bpy.ops.render.render(write_still=True)
    result["ball_hidden_after"] = ball.hide_render
    result["asset_hidden_after"] = asset.hide_render


def main():
    scene = build_scene()
    configure(scene)
    try:
        {"f12": f12, "animation": animation, "viewport": viewport_step, "nodes": nodes,
         "restart": restart, "view_layers": view_layers}[STEP](scene)
        result["ok"] = True
    finally:
        save()


main()
