# What peerlight makes of the parts of a Blender scene the glTF export does not carry: the
# World as peerlight's environment, and the list of what is lost, for the report area (said
# once per render, never dropped silently).

import math
import os

import bpy


SUPPORTED_SURFACE_NODES = {"BSDF_PRINCIPLED", "EMISSION", "BSDF_DIFFUSE", "MIX_SHADER",
                           "BSDF_TRANSPARENT"}


def what_is_lost(scene):
    """What the export cannot carry, one line each (said once per render, never dropped
    silently): hair and particles, volumes, unapplied modifiers the exporter skips, and
    material node setups the exporter can only approximate."""
    lost = []
    seen_materials = set()
    for obj in scene.objects:
        if obj.hide_render:
            continue
        if obj.type == "VOLUME":
            lost.append("volume object '%s' is not exported (volumes are not supported)"
                        % obj.name)
        if obj.type in ("META", "GPENCIL", "POINTCLOUD"):
            lost.append("%s object '%s' is not exported" % (obj.type.lower(), obj.name))
        for system in getattr(obj, "particle_systems", []):
            kind = "hair" if system.settings.type == "HAIR" else "particles"
            lost.append("%s '%s' on '%s' is not exported" % (kind, system.name, obj.name))
        for modifier in getattr(obj, "modifiers", []):
            if not modifier.show_render:
                continue
            if obj.type == "MESH" and obj.data.shape_keys is not None:
                lost.append("modifier '%s' on '%s' is not applied (the object has shape keys)"
                            % (modifier.name, obj.name))
        for slot in getattr(obj, "material_slots", []):
            material = slot.material
            if material is None or material.name in seen_materials:
                continue
            seen_materials.add(material.name)
            lost.extend(_material_losses(material))
    _env, env_loss = environment(scene)
    if env_loss:
        lost.append(env_loss)
    return lost


def _material_losses(material):
    if not material.use_nodes or material.node_tree is None:
        return []
    out = []
    for node in material.node_tree.nodes:
        if node.type != "OUTPUT_MATERIAL" or not node.is_active_output:
            continue
        volume = node.inputs.get("Volume")
        if volume is not None and volume.is_linked and volume_absorption(material) is None:
            out.append("material '%s': its volume shader is not exported" % material.name)
        displacement = node.inputs.get("Displacement")
        if displacement is not None and displacement.is_linked:
            out.append("material '%s': displacement is not exported" % material.name)
        surface = node.inputs.get("Surface")
        if surface is not None and surface.is_linked:
            source = surface.links[0].from_node
            if source.type not in SUPPORTED_SURFACE_NODES:
                out.append("material '%s': the %s shader is exported as an approximation"
                           % (material.name, source.bl_label))
    return out


def volume_absorption(material):
    """The volume of a transmissive material as KHR_materials_volume's (attenuationColor,
    attenuationDistance), when it is a Volume Absorption node with a constant colour and
    density on the active output (what peerlight can render); else None. Cycles absorbs
    density * (1 - colour) per metre; glTF gives the colour left after a distance, here 1 m:
    exp(-density * (1 - colour))."""
    if not material.use_nodes or material.node_tree is None:
        return None
    transmissive = False
    for node in material.node_tree.nodes:
        if node.type == "BSDF_PRINCIPLED":
            t = node.inputs.get("Transmission")
            transmissive |= t is not None and (t.is_linked or t.default_value > 0)
    for node in material.node_tree.nodes:
        if node.type != "OUTPUT_MATERIAL" or not node.is_active_output:
            continue
        volume = node.inputs.get("Volume")
        if not transmissive or volume is None or not volume.is_linked:
            return None
        source = volume.links[0].from_node
        if source.type != "VOLUME_ABSORPTION":
            return None
        colour, density = source.inputs["Color"], source.inputs["Density"]
        if colour.is_linked or density.is_linked:
            return None
        d = max(float(density.default_value), 0.0)
        return ([math.exp(-d * (1.0 - min(max(float(c), 0.0), 1.0)))
                 for c in colour.default_value[:3]], 1.0)
    return None


def environment(scene):
    """The World as peerlight's environment: (the --env value or None, what is lost or None).
    A uniform colour (the World's colour, or a Background node's colour times its strength)
    or an Environment Texture's image file; anything else falls back to peerlight's default
    environment, and says so."""
    world = scene.world
    if world is None:
        return None, None
    if not world.use_nodes or world.node_tree is None:
        return "%.9g,%.9g,%.9g" % tuple(world.color), None
    output = next((n for n in world.node_tree.nodes
                   if n.type == "OUTPUT_WORLD" and n.is_active_output), None)
    surface = output.inputs.get("Surface") if output is not None else None
    if surface is None or not surface.is_linked:
        return "0,0,0", None
    background = surface.links[0].from_node
    if background.type != "BACKGROUND":
        return None, ("the World's %s shader is not exported: peerlight's default environment "
                      "is used" % background.bl_label)
    color, strength = background.inputs["Color"], background.inputs["Strength"]
    if strength.is_linked:
        return None, ("the World's strength is driven by nodes, which are not exported: "
                      "peerlight's default environment is used")
    k = strength.default_value
    if not color.is_linked:
        r, g, b = color.default_value[:3]
        return "%.9g,%.9g,%.9g" % (r * k, g * k, b * k), None
    source = color.links[0].from_node
    if source.type == "TEX_ENVIRONMENT" and source.image is not None and k == 1.0:
        path = bpy.path.abspath(source.image.filepath)
        if os.path.splitext(path)[1].lower() in (".hdr", ".exr") and os.path.isfile(path):
            return path, None
    return None, ("the World's colour comes from a %s node setup that is not exported (an "
                  "Environment Texture with an .hdr/.exr file at strength 1 is): peerlight's "
                  "default environment is used" % source.bl_label)
