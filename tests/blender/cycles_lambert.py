"""Blender's Cycles renders a glTF scene with every material a pure Lambertian (the independent
renderer of tests/blender/cycles_lambert_test.py). Run by Blender:

    blender -b --factory-startup --python cycles_lambert.py -- SCENE.gltf OUT.exr SIZE SPP

Each Principled BSDF becomes a Diffuse BSDF (roughness 0: Lambert) of its base colour, plus its
emission (colour times strength, the glTF emissive radiance), from the front face only where
the material is single-sided (Cycles' mesh lights emit from both faces). The glTF camera,
a black world, 16 bounces, a 1-pixel box filter, fixed seed, no clamping, denoising or
adaptive sampling: as peerlight renders it."""
import sys

import addon_utils
import bpy
import numpy

# Debian 12: Blender 3.4's glTF importer still uses aliases numpy 1.24 removed.
for _name, _alias in (("bool", numpy.bool_), ("int", int), ("float", float), ("object", object)):
    if _name not in numpy.__dict__:
        setattr(numpy, _name, _alias)

scene_path, out, size, spp = sys.argv[sys.argv.index("--") + 1:]
size, spp = int(size), int(spp)

bpy.ops.wm.read_factory_settings(use_empty=True)
addon_utils.enable("io_scene_gltf2", default_set=True)
bpy.ops.import_scene.gltf(filepath=scene_path)
scene = bpy.context.scene
cameras = sorted((o for o in scene.objects if o.type == "CAMERA"), key=lambda o: o.name)
scene.camera = cameras[0]

for mat in bpy.data.materials:
    if not mat.use_nodes:
        continue
    nt = mat.node_tree
    for node in [n for n in nt.nodes if n.type == "BSDF_PRINCIPLED"]:
        outs = [link.to_socket for link in node.outputs["BSDF"].links]
        diffuse = nt.nodes.new("ShaderNodeBsdfDiffuse")
        diffuse.inputs["Roughness"].default_value = 0.0
        base = node.inputs["Base Color"]
        if base.is_linked:
            nt.links.new(base.links[0].from_socket, diffuse.inputs["Color"])
        else:
            diffuse.inputs["Color"].default_value = base.default_value
        emission = nt.nodes.new("ShaderNodeEmission")
        # ("Emission Color" from Blender 4.0 on.)
        colour = node.inputs.get("Emission") or node.inputs.get("Emission Color")
        emission.inputs["Color"].default_value = colour.default_value
        strength = node.inputs["Emission Strength"].default_value
        if mat.use_backface_culling:  # single-sided in glTF: emits from its front face only
            geometry = nt.nodes.new("ShaderNodeNewGeometry")
            front = nt.nodes.new("ShaderNodeMath")
            front.operation = "MULTIPLY_ADD"  # strength * (-backfacing) + strength
            front.inputs[1].default_value = -strength
            front.inputs[2].default_value = strength
            nt.links.new(geometry.outputs["Backfacing"], front.inputs[0])
            nt.links.new(front.outputs[0], emission.inputs["Strength"])
        else:
            emission.inputs["Strength"].default_value = strength
        add = nt.nodes.new("ShaderNodeAddShader")
        nt.links.new(diffuse.outputs["BSDF"], add.inputs[0])
        nt.links.new(emission.outputs["Emission"], add.inputs[1])
        for dst in outs:
            nt.links.new(add.outputs["Shader"], dst)

world = bpy.data.worlds.new("Black")
world.use_nodes = True
world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.0
scene.world = world

scene.render.engine = "CYCLES"
cy = scene.cycles
cy.device = "CPU"
cy.samples = spp
cy.use_adaptive_sampling = False
cy.use_denoising = False
cy.seed = 0
cy.sample_clamp_direct = cy.sample_clamp_indirect = 0.0
cy.blur_glossy = 0.0
cy.light_sampling_threshold = 0.0
cy.max_bounces = cy.diffuse_bounces = cy.glossy_bounces = 16
cy.transmission_bounces = cy.transparent_max_bounces = 16
cy.pixel_filter_type = "BOX"
cy.filter_width = 1.0
r = scene.render
r.resolution_x = r.resolution_y = size
r.resolution_percentage = 100
r.film_transparent = False
r.image_settings.file_format = "OPEN_EXR"
r.image_settings.color_depth = "32"
r.image_settings.exr_codec = "NONE"
scene.view_settings.view_transform = "Standard"
r.filepath = out
bpy.ops.render.render(write_still=True)
