"""Runs ../shared/reference/cycles_reference.py (its scene setup, render and output) with
changes the benchmarks need:

    blender -b --factory-startup --python bench/cycles_wrapper.py -- \
        [--adaptive-threshold T [--adaptive-min-samples N]] [--exact-volume] \
        [--keep-transmission] [--metal-fresnel] CYCLES_REFERENCE_ARGS...

--adaptive-threshold T  Cycles' adaptive sampling on, at noise threshold T (the reference script
                        turns it off); N: its minimum samples (0: Cycles' own choice).
--exact-volume          Make each Volume Absorption node that Blender's glTF importer made from
                        KHR_materials_volume absorb as the specification says. The importer
                        gives it colour c and density 1/d (attenuationColor, attenuationDistance),
                        which absorbs (1 - c)/d per metre; the specification's transmittance
                        c^(x/d) absorbs -ln(c)/d. The colour becomes 1 + ln(c) (below 1/e:
                        1 + ln(c)/k with the density k times higher, k = -ln(min c)).
--keep-transmission     With the reference's --gltf-brdf: materials with transmission keep
                        Blender's Principled BSDF (its glass: Fresnel reflection and refraction
                        through IOR), which the reference's glTF-BRDF node setup (diffuse and
                        GGX layers only) would make opaque; every other material gets that
                        setup.
--metal-fresnel         With the reference's --gltf-brdf: its metal layer (a GGX Glossy BSDF
                        tinted by the base colour, with no Fresnel) becomes a metallic
                        Principled BSDF of the same colour, roughness and normal, whose Fresnel
                        goes from the base colour at normal incidence to white at grazing (a
                        dielectric Fresnel curve at the half vector, normalized; the
                        specification's conductor Fresnel is Schlick's, of the same shape).
"""
import math
import os
import runpy
import sys

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "shared")


def take(argv, flag, default, has_value=True):
    """Removes `flag [VALUE]` from argv; returns VALUE (True for a flag without one), or
    default."""
    if flag not in argv:
        return default
    i = argv.index(flag)
    if has_value and i + 1 >= len(argv):
        raise SystemExit("cycles_wrapper: %s needs a value" % flag)
    value = argv[i + 1] if has_value else True
    del argv[i:i + (2 if has_value else 1)]
    return value


def shader_nodes(node_type):
    """(material, node) for every node of `node_type` in the materials that use nodes (a list:
    callers may change the trees)."""
    import bpy
    return [(mat, node) for mat in bpy.data.materials if mat.use_nodes
            for node in mat.node_tree.nodes if node.type == node_type]


def exact_volumes():
    changed = []
    for mat, node in shader_nodes("VOLUME_ABSORPTION"):
        colour = node.inputs["Color"].default_value
        # density (1 - colour') must be -ln(c) times the importer's density: where a channel is
        # below 1/e that asks for a colour below 0, so the density grows by k instead.
        logs = [math.log(max(colour[k], 1e-6)) for k in range(3)]
        scale = max(1.0, -min(logs))
        for k in range(3):
            colour[k] = 1.0 + logs[k] / scale
        node.inputs["Density"].default_value *= scale
        changed.append(mat.name)
    return changed


def transmissive_materials():
    out = []
    for mat, node in shader_nodes("BSDF_PRINCIPLED"):
        t = node.inputs.get("Transmission")
        if t is not None and (t.is_linked or t.default_value > 0) and mat not in out:
            out.append(mat)
    return out


def metals_with_fresnel():
    """Replaces the reference's metal Glossy BSDFs (those whose colour is not plain white)."""
    changed = []
    for mat, node in shader_nodes("BSDF_GLOSSY"):
        colour = node.inputs["Color"]
        if not colour.is_linked and tuple(colour.default_value)[:3] == (1.0, 1.0, 1.0):
            continue
        nt = mat.node_tree
        metal = nt.nodes.new("ShaderNodeBsdfPrincipled")
        metal.distribution = "GGX"
        metal.inputs["Metallic"].default_value = 1.0
        for src, dst in (("Color", "Base Color"), ("Roughness", "Roughness"),
                         ("Normal", "Normal")):
            socket = node.inputs[src]
            if socket.is_linked:
                nt.links.new(socket.links[0].from_socket, metal.inputs[dst])
            elif src != "Normal":
                metal.inputs[dst].default_value = socket.default_value
        for link in list(node.outputs["BSDF"].links):
            nt.links.new(metal.outputs["BSDF"], link.to_socket)
        nt.nodes.remove(node)
        changed.append(mat.name)
    return changed


def main():
    argv = sys.argv
    threshold = float(take(argv, "--adaptive-threshold", "0"))
    min_samples = int(take(argv, "--adaptive-min-samples", "0"))
    exact_volume = take(argv, "--exact-volume", False, has_value=False)
    keep_transmission = take(argv, "--keep-transmission", False, has_value=False)
    metal_fresnel = take(argv, "--metal-fresnel", False, has_value=False)
    ref = runpy.run_path(os.path.join(SHARED, "reference", "cycles_reference.py"),
                         run_name="cycles_reference")
    scope = ref["main"].__globals__
    setup = scope["setup_cycles"]

    def setup_wrapped(scene):
        setup(scene)
        if threshold > 0:
            scene.cycles.use_adaptive_sampling = True
            scene.cycles.adaptive_threshold = threshold
            scene.cycles.adaptive_min_samples = min_samples
            print("cycles_wrapper: adaptive sampling, threshold %g, min samples %d"
                  % (threshold, min_samples), flush=True)
        if metal_fresnel:
            print("cycles_wrapper: metals with Fresnel in %s" % metals_with_fresnel(), flush=True)
        if exact_volume:
            print("cycles_wrapper: exact volume absorption in %s" % exact_volumes(), flush=True)

    scope["setup_cycles"] = setup_wrapped
    spec_brdf = scope["gltf_spec_brdf"]

    def spec_brdf_opaque():
        # The reference's setup skips materials without nodes: hide the transmissive ones.
        kept = transmissive_materials()
        for mat in kept:
            mat.use_nodes = False
        try:
            return spec_brdf()
        finally:
            for mat in kept:
                mat.use_nodes = True
            print("cycles_wrapper: Principled BSDF kept for %s" % [m.name for m in kept],
                  flush=True)

    if keep_transmission:
        scope["gltf_spec_brdf"] = spec_brdf_opaque
    ref["main"]()


main()
