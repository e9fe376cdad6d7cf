# The render engine Blender lists as "peerlight": F12 and animations (final_render), and the
# viewport (viewport).

import bpy

from . import final_render, viewport


class PeerlightRenderEngine(bpy.types.RenderEngine):
    bl_idname = "PEERLIGHT"
    bl_label = "peerlight"
    bl_use_preview = False
    bl_use_eevee_viewport = True  # material previews and Look Dev use Eevee
    bl_use_shading_nodes_custom = False  # materials are Blender's node trees (exported as glTF)

    # The viewport's session, by engine: __del__ runs after Blender has freed the engine's own
    # data, so the session is kept beside it, under the Python object's id.
    _viewports = {}

    def __del__(self):
        v = PeerlightRenderEngine._viewports.pop(id(self), None)
        if v is not None:
            v.close()

    def render(self, depsgraph):
        final_render.render(self, depsgraph)

    def update_render_passes(self, scene=None, renderlayer=None):
        final_render.register_passes(self, scene, renderlayer)

    def view_update(self, context, depsgraph):
        v = self._viewports.get(id(self))
        if v is None:
            v = self._viewports[id(self)] = viewport.ViewportSession(self.report)
        elif v.exporting or not any(_matters(u) for u in depsgraph.updates):
            return  # our own export's update, or nothing the render shows
        # The export is an operator, which must not run inside the depsgraph update that
        # called us: it runs from a timer, once per burst of updates.
        if not v.sync_queued:
            v.sync_queued = True
            scene = depsgraph.scene  # the original scene, which outlives this depsgraph
            bpy.app.timers.register(lambda: v.sync(scene), first_interval=0.05)

    def view_draw(self, context, depsgraph):
        v = self._viewports.get(id(self))
        if v is None:
            return
        region, rv3d = context.region, context.region_data
        border = viewport.view_border(context, depsgraph.scene, region.width, region.height)
        v.set_view(rv3d.view_matrix, rv3d.window_matrix, region.width, region.height, border)
        v.draw(self, context, depsgraph)


def _matters(update):
    return update.is_updated_transform or update.is_updated_geometry or \
        update.is_updated_shading or isinstance(update.id, (bpy.types.Material, bpy.types.World,
                                                            bpy.types.Scene))


@bpy.app.handlers.persistent
def close_viewports(*_args):
    """load_pre: the viewports' sessions end with the file they showed."""
    for v in PeerlightRenderEngine._viewports.values():
        v.close()
    PeerlightRenderEngine._viewports.clear()


def _handlers():
    h = bpy.app.handlers
    return ((h.render_complete, final_render.end_job), (h.render_cancel, final_render.end_job),
            (h.load_pre, final_render.end_job), (h.load_pre, close_viewports))


def register():
    bpy.utils.register_class(PeerlightRenderEngine)
    for handler, fn in _handlers():
        if fn not in handler:
            handler.append(fn)


def unregister():
    close_viewports()
    for handler, fn in _handlers():
        if fn in handler:
            handler.remove(fn)
    final_render.end_job()
    bpy.utils.unregister_class(PeerlightRenderEngine)
