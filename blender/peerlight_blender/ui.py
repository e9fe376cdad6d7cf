# Render Properties for peerlight: sampling, devices, and the nodes found on the LAN.

import json
import subprocess

import bpy

from . import settings
from .session import SessionError, find_binary

_nodes = {"list": [], "error": ""}  # the last `peerlight nodes --json` answer


def probe_nodes(binary, prefs, wait=1.0):
    """`peerlight nodes --json`: [{name, address, status, usable, devices, reason}, ...]."""
    command = [binary, "nodes", "--json", "--wait", "%g" % wait] + settings.cluster_flags(prefs)
    out = subprocess.run(command, capture_output=True, text=True, timeout=wait + 30)
    if out.returncode != 0:
        raise SessionError(out.stderr.strip() or "peerlight nodes failed")
    return json.loads(out.stdout)


class PEERLIGHT_OT_refresh_nodes(bpy.types.Operator):
    bl_idname = "peerlight.refresh_nodes"
    bl_label = "Find Nodes"
    bl_description = "Look for peerlight Render Nodes on the LAN (mDNS) and the listed nodes"

    def execute(self, context):
        try:
            prefs = settings.preferences(context)
            binary = find_binary(prefs.binary)
            _nodes["list"] = probe_nodes(binary, prefs)
            _nodes["error"] = ""
        except (SessionError, OSError, ValueError, subprocess.TimeoutExpired) as e:
            _nodes["list"], _nodes["error"] = [], str(e)
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        return {"FINISHED"}


class PeerlightPanel:
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "render"

    @classmethod
    def poll(cls, context):
        return context.engine == "PEERLIGHT"


class PEERLIGHT_PT_sampling(PeerlightPanel, bpy.types.Panel):
    bl_label = "Sampling"

    def draw(self, context):
        s = context.scene.peerlight
        layout = self.layout
        layout.use_property_split = True
        layout.prop(s, "samples", text="Render")
        layout.prop(s, "viewport_samples", text="Viewport")
        row = layout.row(heading="Noise Threshold")
        row.prop(s, "use_adaptive_sampling", text="")
        sub = row.row()
        sub.active = s.use_adaptive_sampling
        sub.prop(s, "adaptive_threshold", text="")
        layout.prop(s, "time_limit")


class PEERLIGHT_PT_cluster(PeerlightPanel, bpy.types.Panel):
    bl_label = "Cluster"

    def draw(self, context):
        s = context.scene.peerlight
        layout = self.layout
        layout.use_property_split = True
        layout.prop(s, "devices")
        layout.prop(s, "threads")
        prefs = settings.preferences(context)
        if prefs.peers:
            layout.label(text="Nodes: " + prefs.peers, icon="PREFERENCES")
        layout.operator(PEERLIGHT_OT_refresh_nodes.bl_idname, icon="FILE_REFRESH")
        if _nodes["error"]:
            layout.label(text=_nodes["error"], icon="ERROR")
        box = layout.box() if _nodes["list"] else None
        for node in _nodes["list"]:
            row = box.row()
            icon = "CHECKMARK" if node.get("usable") else "CANCEL"
            devices = ", ".join(d.get("name", d.get("kind", "?")) for d in node.get("devices", []))
            row.label(text="%s  %s" % (node.get("name") or "?", node.get("address", "")),
                      icon=icon)
            row.label(text=devices or node.get("reason", "") or node.get("status", ""))


# Blender's own panels that apply to any engine (dimensions, output, materials).
def _compatible_panels():
    for panel in bpy.types.Panel.__subclasses__():
        engines = getattr(panel, "COMPAT_ENGINES", None)
        if engines is not None and "BLENDER_RENDER" in engines:
            yield panel
    for name in ("EEVEE_MATERIAL_PT_context_material", "EEVEE_MATERIAL_PT_surface",
                 "EEVEE_WORLD_PT_surface", "DATA_PT_lens", "DATA_PT_camera",
                 "DATA_PT_EEVEE_light", "DATA_PT_light"):
        panel = getattr(bpy.types, name, None)
        if panel is not None and hasattr(panel, "COMPAT_ENGINES"):
            yield panel


classes = (PEERLIGHT_OT_refresh_nodes, PEERLIGHT_PT_sampling, PEERLIGHT_PT_cluster)


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    for panel in _compatible_panels():
        panel.COMPAT_ENGINES.add("PEERLIGHT")


def unregister():
    for panel in _compatible_panels():
        panel.COMPAT_ENGINES.discard("PEERLIGHT")
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
