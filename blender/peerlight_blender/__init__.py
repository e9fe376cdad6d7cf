# peerlight for Blender: a render engine that renders through a peerlight session, on this
# machine and every idle node on the LAN (README, "Blender").

bl_info = {
    "name": "peerlight",
    "author": "the peerlight developers",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "Render Properties > Render Engine > peerlight",
    "description": "Render on every idle GPU and CPU of the LAN: F12, animations and the "
                   "viewport through a peerlight session",
    "doc_url": "https://github.com/peerlight/peerlight#blender",
    "category": "Render",
}

if "bpy" in locals():  # reloaded (F3 > Reload Scripts): take the new modules
    import importlib
    for _name in ("session", "scene_diff", "scene_report", "export", "settings",
                  "final_render", "viewport", "engine", "ui"):
        if _name in locals():
            importlib.reload(locals()[_name])

import bpy  # noqa: E402

from . import engine, export, settings, ui  # noqa: E402


def register():
    settings.register()
    export.register()
    engine.register()
    ui.register()


def unregister():
    ui.unregister()
    engine.unregister()
    export.unregister()
    settings.unregister()
