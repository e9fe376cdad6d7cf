# The add-on's settings: per scene (Render Properties) and per installation (preferences),
# and the `peerlight session` flags they give.

import os

import bpy
from bpy.props import (BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty,
                       StringProperty)

ADDON = __package__


class PeerlightSceneSettings(bpy.types.PropertyGroup):
    samples: IntProperty(
        name="Samples", description="Samples per pixel of a final render (F12)",
        default=64, min=1, max=1 << 20)
    viewport_samples: IntProperty(
        name="Viewport Samples", description="Samples per pixel in the viewport",
        default=16, min=1, max=1 << 16)
    time_limit: FloatProperty(
        name="Time Limit",
        description="Stop a frame after this many seconds, keeping the last whole pass "
                    "(0: no limit, render all samples)",
        default=0.0, min=0.0, max=86400.0, unit="TIME_ABSOLUTE")
    use_adaptive_sampling: BoolProperty(
        name="Noise Threshold",
        description="Render until clean: from 8 samples on, each 16x16 tile stops taking "
                    "samples once its noise estimate is below the threshold",
        default=False)
    adaptive_threshold: FloatProperty(
        name="Noise Threshold",
        description="Per-pixel noise estimate below which a tile is done (lower: cleaner and "
                    "slower; typical 0.01 to 0.1)",
        default=0.05, min=0.0001, max=1.0, precision=4, step=0.1)
    devices: EnumProperty(
        name="Devices", description="Which devices render",
        items=[("BOTH", "This Machine and the Cluster",
                "This machine's devices and every node found on the LAN"),
               ("LOCAL", "This Machine", "Only this machine's devices"),
               ("CLUSTER", "The Cluster", "Only the nodes found on the LAN")],
        default="BOTH")
    threads: IntProperty(
        name="Threads", description="CPU threads on this machine (0: all)",
        default=0, min=0, max=1024)


# Where the scene may go is this installation's choice, never a .blend file's: the nodes and
# the key are preferences (a file opened from elsewhere cannot send its scene to hosts it
# names, with a key it brings).
class PeerlightPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON

    binary: StringProperty(
        name="peerlight Program",
        description="The peerlight executable (empty: $PEERLIGHT_BINARY, else PATH, else "
                    "/usr/bin/peerlight)",
        subtype="FILE_PATH")
    peers: StringProperty(
        name="Nodes",
        description="Render Nodes to use besides those found by mDNS: HOST:PORT, separated by "
                    "commas or spaces")
    key_file: StringProperty(
        name="Cluster Key",
        description="The cluster key file (empty: $PEERLIGHT_KEY_FILE, else "
                    "~/.config/peerlight/cluster.key)",
        subtype="FILE_PATH")

    def draw(self, context):
        for name in ("binary", "peers", "key_file"):
            self.layout.prop(self, name)


class _NoPreferences:  # registered by hand (tests), not through Preferences > Add-ons
    binary = peers = key_file = ""


def preferences(context):
    addon = context.preferences.addons.get(ADDON)
    return addon.preferences if addon is not None else _NoPreferences()


def preferred_binary(context):
    return preferences(context).binary


def peer_list(prefs):
    return [p for p in prefs.peers.replace(",", " ").split() if p]


def cluster_flags(prefs):
    """--peer and --key-file for the preferences (commands `session` and `nodes` take both)."""
    args = []
    for peer in peer_list(prefs):
        args += ["--peer", peer]
    if prefs.key_file:
        args += ["--key-file", os.path.abspath(os.path.expanduser(prefs.key_file))]
    return args


def session_args(settings, prefs, width, height, spp, camera_index=None, env=None):
    """The `peerlight session` flags for the scene's settings and the preferences."""
    args = ["--size", "%dx%d" % (width, height), "--spp", str(spp)]
    if camera_index is not None:
        args += ["--camera", str(camera_index)]
    if env:
        args += ["--env", env]
    if settings.threads:
        args += ["--threads", str(settings.threads)]
    if settings.devices == "LOCAL":
        args.append("--local-only")
    elif settings.devices == "CLUSTER":
        args.append("--no-local")
    return args + cluster_flags(prefs)


classes = (PeerlightSceneSettings, PeerlightPreferences)


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.peerlight = PointerProperty(type=PeerlightSceneSettings)


def unregister():
    del bpy.types.Scene.peerlight
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
