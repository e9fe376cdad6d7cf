"""Blender with its window (under Xvfb), used as a person would: the peerlight engine chosen,
the viewport in Rendered shading, orbited, with a render border, the Render Properties, then
F12. Screenshots of each go to
the folder given after `--`.
    blender -b --factory-startup --python-expr \
        "import bpy; bpy.ops.wm.save_as_mainfile(filepath='/tmp/start.blend')"
    xvfb-run -s "-screen 0 1600x900x24" blender --factory-startup /tmp/start.blend \
        --python scripts/blender_screenshots.py -- OUT_DIR [ADDON_DIR]
(Opening a file skips the splash screen.)
"""
import math
import os
import sys

import bpy

argv = sys.argv[sys.argv.index("--") + 1:]
OUT = argv[0]
sys.path.insert(0, argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "blender"))
import peerlight_blender  # noqa: E402

os.makedirs(OUT, exist_ok=True)
log = open(os.path.join(OUT, "log.txt"), "w")


def say(*a):
    print(*a, file=log, flush=True)
    print(*a, flush=True)


def build():
    # The default startup file's cube, light and camera, plus a floor and a glowing panel.
    scene = bpy.context.scene
    bpy.ops.mesh.primitive_plane_add(size=12, location=(0, 0, -1))
    floor_mat = bpy.data.materials.new("Floor")
    floor_mat.use_nodes = True
    floor_mat.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (0.6, 0.5, 0.4, 1)
    bpy.context.object.data.materials.append(floor_mat)
    cube = bpy.data.objects["Cube"]
    m = bpy.data.materials.new("Red")
    m.use_nodes = True
    m.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (0.8, 0.1, 0.05, 1)
    m.node_tree.nodes["Principled BSDF"].inputs["Roughness"].default_value = 0.3
    cube.data.materials.clear()
    cube.data.materials.append(m)
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.7, location=(2.2, 0.5, -0.3))
    bpy.ops.object.shade_smooth()
    s = bpy.data.materials.new("Metal")
    s.use_nodes = True
    s.node_tree.nodes["Principled BSDF"].inputs["Metallic"].default_value = 1.0
    s.node_tree.nodes["Principled BSDF"].inputs["Roughness"].default_value = 0.2
    bpy.context.object.data.materials.append(s)
    scene.render.engine = "PEERLIGHT"
    scene.peerlight.samples = 64
    scene.peerlight.viewport_samples = 32
    scene.peerlight.use_adaptive_sampling = True  # render until clean (Sampling panel)
    scene.peerlight.adaptive_threshold = 0.05
    scene.peerlight.devices = "LOCAL"
    scene.render.resolution_x, scene.render.resolution_y = 640, 360


def area(kind):
    for a in bpy.context.window.screen.areas:
        if a.type == kind:
            return a
    return None


def shot(name):
    path = os.path.join(OUT, name)
    with bpy.context.temp_override(window=bpy.context.window, area=area("VIEW_3D")):
        bpy.ops.screen.screenshot(filepath=path)
    say("screenshot", path)


steps = []


def step(delay):
    def wrap(fn):
        steps.append((delay, fn))
        return fn
    return wrap


@step(2.0)
def start():
    peerlight_blender.register()
    build()
    view = area("VIEW_3D")
    view.spaces[0].shading.type = "RENDERED"
    view.spaces[0].region_3d.view_perspective = "CAMERA"
    bpy.context.preferences.view.render_display_type = "AREA"  # F12 shows in the viewport's area
    props = area("PROPERTIES")
    if props is not None:
        props.spaces[0].context = "RENDER"
    say("viewport in Rendered shading through peerlight")


@step(12.0)
def viewport_shot():
    shot("viewport.png")
    view = area("VIEW_3D")
    r3d = view.spaces[0].region_3d
    r3d.view_perspective = "PERSP"
    r3d.view_rotation.rotate(__import__("mathutils").Euler((0.0, 0.0, math.radians(25))))
    say("orbited the view")


@step(10.0)
def orbit_shot():
    shot("viewport_orbit.png")
    # A render border in the orbited view (as Ctrl+B and a drag set it): only it renders.
    space = area("VIEW_3D").spaces[0]
    space.use_render_border = True
    space.render_border_min_x, space.render_border_max_x = 0.3, 0.7
    space.render_border_min_y, space.render_border_max_y = 0.25, 0.75
    say("viewport render border")


@step(10.0)
def border_shot():
    shot("viewport_border.png")
    area("VIEW_3D").spaces[0].use_render_border = False
    bpy.ops.render.render("INVOKE_DEFAULT")
    say("F12")


@step(15.0)
def render_shot():
    shot("f12.png")
    bpy.ops.wm.quit_blender()


def run_next():
    if not steps:
        return None
    delay, fn = steps.pop(0)
    try:
        fn()
    except Exception as e:  # keep going: the screenshots say what worked
        say("step", fn.__name__, "failed:", repr(e))
    return steps[0][0] if steps else None


bpy.app.timers.register(run_next, first_interval=steps[0][0])
