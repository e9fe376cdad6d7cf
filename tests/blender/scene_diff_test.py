#!/usr/bin/env python3
"""The add-on's scene_diff (no Blender needed): which session updates turn one glTF export into
the next, and when a new session is needed instead.
    tests/blender/scene_diff_test.py SOURCE_DIR
"""
import copy
import json
import os
import struct
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(sys.argv.pop(1) if len(sys.argv) > 1 else ".", "blender",
                                "peerlight_blender"))
import scene_diff  # noqa: E402
from scene_diff import Export  # noqa: E402

BASE = {
    "asset": {"version": "2.0"},
    "scene": 0,
    "scenes": [{"nodes": [0, 2, 3]}],
    "nodes": [
        {"name": "Table", "mesh": 0, "translation": [1.0, 0.0, 0.0], "children": [1]},
        {"name": "Cup", "mesh": 1, "translation": [0.0, 1.0, 0.0]},
        {"name": "Floor", "mesh": 2},
        {"name": "Cam", "camera": 0, "translation": [0.0, 1.0, 5.0]},
    ],
    "cameras": [{"type": "perspective", "perspective": {"yfov": 0.7, "znear": 0.1}}],
    "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "material": 0}]}] * 3,
    "materials": [{"name": "Wood", "pbrMetallicRoughness": {"baseColorFactor": [1, 1, 1, 1]}}],
}


def export(gltf, binary=b"\x00" * 16):
    return Export(copy.deepcopy(gltf), binary)


class SceneDiffTest(unittest.TestCase):
    def test_the_same_export_needs_no_update(self):
        self.assertEqual(scene_diff.diff(export(BASE), export(BASE), "Cam"), [])

    def test_a_moved_parent_is_one_transform_with_its_world_matrix(self):
        moved = copy.deepcopy(BASE)
        moved["nodes"][0]["translation"] = [2.0, 0.0, 3.0]
        ops = scene_diff.diff(export(BASE), export(moved), "Cam")
        # The child keeps its place relative to the table: no update of its own.
        self.assertEqual([o["op"] for o in ops], ["transform"])
        self.assertEqual(ops[0]["node"], "Table")
        self.assertEqual(ops[0]["matrix"][12:15], [2.0, 0.0, 3.0])

    def test_a_moved_child_gets_its_world_matrix_after_its_parent(self):
        moved = copy.deepcopy(BASE)
        moved["nodes"][1]["rotation"] = [0.0, 0.7071067811865476, 0.0, 0.7071067811865476]
        moved["nodes"][0]["translation"] = [4.0, 0.0, 0.0]
        ops = scene_diff.diff(export(BASE), export(moved), "Cam")
        self.assertEqual([o["node"] for o in ops], ["Table", "Cup"])
        m = ops[1]["matrix"]
        self.assertAlmostEqual(m[12], 4.0)  # parent's translation, then the child's own
        self.assertAlmostEqual(m[13], 1.0)
        self.assertAlmostEqual(m[2], -1.0)  # 90 degrees about +Y: local +X becomes world -Z

    def test_a_material_factor_is_one_material_update(self):
        red = copy.deepcopy(BASE)
        red["materials"][0]["pbrMetallicRoughness"]["baseColorFactor"] = [1, 0, 0, 1]
        ops = scene_diff.diff(export(BASE), export(red), "Cam")
        self.assertEqual(len(ops), 1)
        self.assertEqual(ops[0]["op"], "material")
        self.assertEqual(ops[0]["name"], "Wood")
        self.assertEqual(ops[0]["base_color"], [1, 0, 0, 1])

    def test_the_camera_is_a_camera_update_only_when_rendered_through_it(self):
        moved = copy.deepcopy(BASE)
        moved["nodes"][3]["translation"] = [0.0, 2.0, 5.0]
        moved["cameras"][0]["perspective"]["yfov"] = 0.5
        ops = scene_diff.diff(export(BASE), export(moved), "Cam")
        self.assertEqual([o["op"] for o in ops], ["camera"])
        self.assertEqual(ops[0]["matrix"][13], 2.0)
        self.assertAlmostEqual(ops[0]["yfov"], 28.64788975654116)
        self.assertEqual(scene_diff.diff(export(BASE), export(moved)), [])  # the viewport's

    def test_a_moved_camera_with_children_moves_them_too(self):
        base = copy.deepcopy(BASE)
        base["nodes"][3]["children"] = [1]  # the cup rides on the camera
        base["nodes"][0].pop("children")
        moved = copy.deepcopy(base)
        moved["nodes"][3]["translation"] = [0.0, 2.0, 5.0]
        ops = scene_diff.diff(export(base), export(moved), "Cam")
        self.assertEqual([o["op"] for o in ops], ["transform", "camera"])
        self.assertEqual(ops[0]["node"], "Cam")

    def test_names_that_are_not_unique_need_a_new_session(self):
        twins = copy.deepcopy(BASE)
        twins["nodes"][2]["name"] = "Table"
        moved = copy.deepcopy(twins)
        moved["nodes"][0]["translation"] = [5.0, 0.0, 0.0]
        self.assertIsNone(scene_diff.diff(export(twins), export(moved), "Cam"))

    def test_the_camera_index_is_the_loaders(self):
        g = copy.deepcopy(BASE)
        # Two nodes share one camera; the loader counts nodes depth first, parents first.
        g["nodes"].append({"name": "Cam2", "camera": 0})
        g["nodes"][0]["children"] = [1, 4]
        self.assertEqual(scene_diff.scene_camera_index(g, "Cam2"), 0)
        self.assertEqual(scene_diff.scene_camera_index(g, "Cam"), 1)
        self.assertIsNone(scene_diff.scene_camera_index(g, "Table"))

    def test_what_updates_cannot_carry_needs_a_new_session(self):
        self.assertIsNone(scene_diff.diff(export(BASE), export(BASE, b"\x01" * 16), 0))
        more = copy.deepcopy(BASE)
        more["nodes"].append({"name": "Lamp", "mesh": 0})
        more["scenes"][0]["nodes"].append(4)
        self.assertIsNone(scene_diff.diff(export(BASE), export(more), 0))
        textured = copy.deepcopy(BASE)
        textured["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"] = {"index": 0}
        self.assertIsNone(scene_diff.diff(export(BASE), export(textured), 0))

    def test_several_updates_are_one_batch_request(self):
        one = [{"op": "camera", "yfov": 40.0}]
        self.assertEqual(scene_diff.as_one_request(one), ("camera", {"yfov": 40.0}))
        self.assertEqual(one[0]["op"], "camera")  # the update itself is left alone
        two = one + [{"op": "transform", "node": "Cup", "matrix": [0.0] * 16}]
        self.assertEqual(scene_diff.as_one_request(two), ("batch", {"ops": two}))

    def test_glb_files_are_read_and_bad_ones_refused(self):
        with tempfile.TemporaryDirectory() as tmp:
            text = json.dumps(BASE).encode()
            text += b" " * (-len(text) % 4)
            binary = b"\x07" * 8
            glb = struct.pack("<III", scene_diff.GLB_MAGIC, 2, 12 + 8 + len(text) + 8 + 8)
            glb += struct.pack("<II", len(text), scene_diff.CHUNK_JSON) + text
            glb += struct.pack("<II", len(binary), scene_diff.CHUNK_BIN) + binary
            path = os.path.join(tmp, "a.glb")
            with open(path, "wb") as f:
                f.write(glb)
            e = Export.read(path)
            self.assertEqual(e.gltf["nodes"][0]["name"], "Table")
            self.assertEqual(e.binary, binary)
            with open(path, "wb") as f:
                f.write(glb[:10])
            with self.assertRaises(ValueError):
                Export.read(path)


if __name__ == "__main__":
    unittest.main()
