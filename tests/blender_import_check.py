"""Check, inside Blender, that every export of ``meshops.export.export_sequence`` imports with the right positions.

Run headless (Blender's own Python: bpy, no numpy)::

    blender -b --factory-startup --python tests/blender_import_check.py -- EXPORT_DIR EXPECTED.npz [CHECK ...]

``EXPECTED.npz`` holds ``frames`` float32 (F, V, 3) and ``neutral`` float32 (V, 3), in our
coordinates (Y up, centimetres), and for the rig formats ``rig_frames`` (F, V, 3), what the
blendshape weights and head pose rebuild. CHECKs (default: all; the USD ones are skipped when this
Blender has no USD support): ``obj-neutral``, ``obj``, ``ply``, ``pc2``, ``mdd``, ``usd``,
``gltf`` (animation.glb: shape keys + object animation), ``usd-skel`` (animation_skel.usdc:
shape keys + armature). Each import is done with
the settings ``docs/exports.md`` gives, and compared in two ways: the mesh's own (local) vertex
coordinates must equal ours, and its world positions must equal ours turned Y-up -> Z-up
(Blender ``(x, y, z) = (x, -z, y)`` ours, times the unit scale), so that the caches land on
the imported ``neutral.obj`` and everything stands upright. Scene frame ``k`` is frame ``k``.

Prints one ``OK``/``FAIL``/``SKIP`` line per check; exits 1 on any mismatch, 2 on bad arguments.
"""
from __future__ import annotations

import array
import ast
import sys
import zipfile
from pathlib import Path

import bpy
from mathutils import Matrix

TOLERANCE = 1e-5  # centimetres; float32 in and out, so the errors found are 0
CHECKS = ("obj-neutral", "obj", "ply", "pc2", "mdd", "usd", "gltf", "usd-skel")
RIG_TOLERANCE = 1e-4  # centimetres: shape keys sum 53 float32 offsets (and skinning a float32 matrix)
# Our Y-up axes seen from Blender's Z-up world: x stays, our y is Blender's z, our z is Blender's -y.
Y_UP_TO_Z_UP = Matrix(((1, 0, 0, 0), (0, 0, -1, 0), (0, 1, 0, 0), (0, 0, 0, 1)))
IDENTITY = Matrix.Identity(4)


# -- expected values: a minimal .npz reader, since Blender's Python may lack numpy ---------------
def read_npz(path: str) -> dict[str, tuple[tuple[int, ...], array.array]]:
    """{name: (shape, flat float32 array)} for the little-endian float arrays of an .npz."""
    out = {}
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            data = z.read(name)
            if data[:6] != b"\x93NUMPY":
                raise ValueError(f"{path}:{name} is not an .npy array")
            major = data[6]
            hlen_size = 2 if major == 1 else 4
            hlen = int.from_bytes(data[8:8 + hlen_size], "little")
            header = ast.literal_eval(data[8 + hlen_size:8 + hlen_size + hlen].decode("latin1"))
            body = data[8 + hlen_size + hlen:]
            if header["fortran_order"] or header["descr"] not in ("<f4", "<f8"):
                continue  # only C-order little-endian floats are needed here
            values = array.array("f" if header["descr"] == "<f4" else "d", body)
            out[name.removesuffix(".npy")] = (tuple(header["shape"]), array.array("f", values))
    return out


# -- Blender helpers --------------------------------------------------------------------------
def new_scene() -> bpy.types.Scene:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy.context.scene


def has_operator(module: str, name: str) -> bool:
    return name in dir(getattr(bpy.ops, module))


def imported_mesh_objects(before: set) -> list:
    return [ob for ob in bpy.data.objects if ob.name not in before and ob.type == "MESH"]


def import_obj(path: Path, scale: float = 1.0):
    """Blender 3.3+'s OBJ importer (File > Import > Wavefront (.obj)), default axes.

    It puts the axis conversion and the scale on the object and keeps the file's numbers as the
    mesh's vertex coordinates, which is where the Mesh Cache modifier writes the caches' numbers.
    """
    before = {ob.name for ob in bpy.data.objects}
    bpy.ops.wm.obj_import(filepath=str(path), forward_axis="NEGATIVE_Z", up_axis="Y", global_scale=scale)
    return _single(imported_mesh_objects(before), path)


def import_obj_legacy(path: Path):
    """The legacy Python importer; ``split_mode='OFF'`` keeps one object and the file's vertex order."""
    before = {ob.name for ob in bpy.data.objects}
    bpy.ops.import_scene.obj(filepath=str(path), split_mode="OFF", axis_forward="-Z", axis_up="Y")
    return _single(imported_mesh_objects(before), path)


def _single(objects: list, path: Path):
    if len(objects) != 1:
        raise RuntimeError(f"{path}: expected one mesh object, the import made {len(objects)}")
    return objects[0]


def evaluated_coords(ob, frame: int) -> array.array:
    """Local vertex coordinates of ``ob`` after its modifiers, at scene frame ``frame``."""
    bpy.context.scene.frame_set(frame)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    ob_eval = ob.evaluated_get(depsgraph)
    mesh = ob_eval.to_mesh()
    try:
        coords = array.array("f", [0.0]) * (3 * len(mesh.vertices))
        mesh.vertices.foreach_get("co", coords)
    finally:
        ob_eval.to_mesh_clear()
    return coords


def max_error(got, want) -> float:
    if len(got) != len(want):
        return float("inf")
    return max(abs(a - b) for a, b in zip(got, want))


def world_error(ob, coords, want, scale: float) -> float:
    """Largest distance between ``ob``'s world positions (at the current frame) and ours turned
    Z-up and scaled."""
    m = ob.matrix_world
    expected = Y_UP_TO_Z_UP * scale
    worst = 0.0
    for i in range(0, len(coords), 3):
        x, y, z = coords[i:i + 3]
        wx = m[0][0] * x + m[0][1] * y + m[0][2] * z + m[0][3]
        wy = m[1][0] * x + m[1][1] * y + m[1][2] * z + m[1][3]
        wz = m[2][0] * x + m[2][1] * y + m[2][2] * z + m[2][3]
        a, b, c = want[i:i + 3]
        ex = expected[0][0] * a + expected[0][1] * b + expected[0][2] * c
        ey = expected[1][0] * a + expected[1][1] * b + expected[1][2] * c
        ez = expected[2][0] * a + expected[2][1] * b + expected[2][2] * c
        worst = max(worst, abs(wx - ex), abs(wy - ey), abs(wz - ez))
    return worst


class Checker:
    def __init__(self, export_dir: Path, expected: dict):
        self.dir = export_dir
        shape, self.flat = expected["frames"]
        self.num_frames, self.num_vertices = shape[0], shape[1]
        self.neutral = expected["neutral"][1]
        self.rig_flat = expected["rig_frames"][1] if "rig_frames" in expected else None
        self.failures = 0
        # first, middle and last frames: enough to catch an off-by-one or a reversed order
        self.frames = sorted({0, 1, self.num_frames // 2, self.num_frames - 1} & set(range(self.num_frames)))

    def frame(self, k: int) -> array.array:
        n = 3 * self.num_vertices
        return self.flat[k * n:(k + 1) * n]

    def rig_frame(self, k: int) -> array.array:
        n = 3 * self.num_vertices
        return self.rig_flat[k * n:(k + 1) * n]

    def report(self, name: str, local: float, world: float, detail: str = "", tolerance: float = TOLERANCE) -> None:
        ok = local <= tolerance and world <= tolerance * 100  # world: float32 matrix products
        self.failures += not ok
        print(f"{'OK' if ok else 'FAIL'} {name}: max local error {local:.3g} cm, max world error {world:.3g}"
              f"{' ' + detail if detail else ''}", flush=True)

    # -- the checks --------------------------------------------------------------------------
    def check_obj_neutral(self) -> None:
        for label, importer in (("wm.obj_import", import_obj), ("import_scene.obj legacy", import_obj_legacy)):
            if importer is import_obj_legacy and not has_operator("import_scene", "obj"):
                print(f"SKIP neutral.obj via {label}: not in Blender {bpy.app.version_string} (removed in 4.0)")
                continue
            new_scene()
            ob = importer(self.dir / "neutral.obj")
            coords = evaluated_coords(ob, 0)
            self.report(f"neutral.obj via {label}", max_error(coords, self.neutral),
                        world_error(ob, coords, self.neutral, 1.0))

    def check_obj(self) -> None:
        self._check_files("obj", import_obj)

    def check_ply(self) -> None:
        def import_ply(path: Path):
            before = {ob.name for ob in bpy.data.objects}
            if has_operator("wm", "ply_import"):  # Blender 4.0+: the C++ importer, with axis settings
                bpy.ops.wm.ply_import(filepath=str(path), forward_axis="NEGATIVE_Z", up_axis="Y")
                return _single(imported_mesh_objects(before), path)
            bpy.ops.import_mesh.ply(filepath=str(path))  # Blender 3.x: no axis settings
            ob = _single(imported_mesh_objects(before), path)
            ob.rotation_euler = (1.5707963267948966, 0.0, 0.0)  # stand it up: Rotation X 90 degrees
            bpy.context.view_layer.update()
            return ob
        self._check_files("ply", import_ply)

    def _check_files(self, fmt: str, importer) -> None:
        width = max(4, len(str(self.num_frames - 1)))
        local = world = 0.0
        new_scene()
        for k in self.frames:
            ob = importer(self.dir / fmt / f"frame_{k:0{width}d}.{fmt}")
            coords = evaluated_coords(ob, k)
            local = max(local, max_error(coords, self.frame(k)))
            world = max(world, world_error(ob, coords, self.frame(k), 1.0))
        self.report(f"{fmt}/frame_*.{fmt}", local, world, f"(frames {self.frames})")

    def check_pc2(self) -> None:
        self._check_cache("PC2", self.dir / "animation.pc2", 1.0)

    def check_mdd(self) -> None:
        self._check_cache("MDD", self.dir / "animation.mdd", 0.01)  # and the import scaled to metres

    def _check_cache(self, cache_format: str, path: Path, scale: float) -> None:
        """neutral.obj + a Mesh Cache modifier with its default axes and timing: scene frame k = sample k."""
        new_scene()
        ob = import_obj(self.dir / "neutral.obj", scale)
        mod = ob.modifiers.new("face4d", "MESH_CACHE")
        mod.cache_format = cache_format
        mod.filepath = str(path)
        mod.time_mode, mod.play_mode, mod.frame_start, mod.frame_scale = "FRAME", "SCENE", 0.0, 1.0
        mod.forward_axis, mod.up_axis = "POS_Y", "POS_Z"  # the defaults: no axis conversion
        local = world = 0.0
        for k in self.frames:
            coords = evaluated_coords(ob, k)
            local = max(local, max_error(coords, self.frame(k)))
            world = max(world, world_error(ob, coords, self.frame(k), scale))
        self.report(f"neutral.obj + Mesh Cache {cache_format}", local, world,
                    f"(frames {self.frames}, OBJ import scale {scale})")

    def check_usd(self) -> None:
        if not bpy.app.build_options.usd:
            print("SKIP usd: this Blender was built without USD support (bpy.app.build_options.usd is False)")
            return
        scene = new_scene()
        before = {ob.name for ob in bpy.data.objects}
        bpy.ops.wm.usd_import(filepath=str(self.dir / "animation.usdc"), set_frame_range=True, scale=1.0)
        ob = _single(imported_mesh_objects(before), self.dir / "animation.usdc")
        range_ok = (scene.frame_start, scene.frame_end) == (0, self.num_frames - 1)
        unit = ob.matrix_world.to_scale()[0]  # Blender applies the stage's metersPerUnit as an object scale
        local = world = 0.0
        for k in self.frames:
            coords = evaluated_coords(ob, k)
            local = max(local, max_error(coords, self.frame(k)))
            world = max(world, world_error(ob, coords, self.frame(k), unit))
        self.failures += not range_ok
        print(f"{'OK' if range_ok else 'FAIL'} usd scene range: {scene.frame_start}..{scene.frame_end}", flush=True)
        self.report("animation.usdc", local, world, f"(frames {self.frames}, object scale {unit:.4g})")

    def check_gltf(self) -> None:
        """animation.glb with the glTF importer's defaults: the mesh comes in Z up (the importer turns
        the vertex data), so only world positions are compared; scene frame k = key k (24 fps)."""
        new_scene()
        before = {ob.name for ob in bpy.data.objects}
        bpy.ops.import_scene.gltf(filepath=str(self.dir / "animation.glb"))
        ob = _single(imported_mesh_objects(before), self.dir / "animation.glb")
        keys = ob.data.shape_keys
        world = 0.0
        for k in self.frames:
            coords = evaluated_coords(ob, k)
            world = max(world, world_error(ob, coords, self.rig_frame(k), 0.01))
        count = len(keys.key_blocks) - 1 if keys else 0
        self.report("animation.glb", 0.0, world, f"(frames {self.frames}, {count} shape keys)", RIG_TOLERANCE)

    def check_usd_skel(self) -> None:
        if not bpy.app.build_options.usd:
            print("SKIP usd-skel: this Blender was built without USD support (bpy.app.build_options.usd is False)")
            return
        new_scene()
        before = {ob.name for ob in bpy.data.objects}
        path = self.dir / "animation_skel.usdc"
        bpy.ops.wm.usd_import(filepath=str(path), set_frame_range=True, scale=1.0)
        ob = _single(imported_mesh_objects(before), path)
        unit = ob.matrix_world.to_scale()[0]
        local = world = 0.0
        for k in self.frames:
            coords = evaluated_coords(ob, k)  # shape keys and the armature modifier applied
            local = max(local, max_error(coords, self.rig_frame(k)))
            world = max(world, world_error(ob, coords, self.rig_frame(k), unit))
        count = len(ob.data.shape_keys.key_blocks) - 1 if ob.data.shape_keys else 0
        self.report("animation_skel.usdc", local, world, f"(frames {self.frames}, {count} shape keys, "
                    f"modifiers {[m.type for m in ob.modifiers]})", RIG_TOLERANCE)


def main(argv: list[str]) -> int:
    args = argv[argv.index("--") + 1:] if "--" in argv else []
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    export_dir, expected_path, checks = Path(args[0]), args[1], args[2:] or list(CHECKS)
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        print(f"unknown check(s) {unknown}; known: {', '.join(CHECKS)}", file=sys.stderr)
        return 2
    print(f"Blender {bpy.app.version_string}, USD support: {bpy.app.build_options.usd}", flush=True)
    checker = Checker(export_dir, read_npz(expected_path))
    for name in checks:
        try:
            getattr(checker, "check_" + name.replace("-", "_"))()
        except Exception as exc:  # a failed import is a failed check, with its reason
            checker.failures += 1
            print(f"FAIL {name}: {type(exc).__name__}: {exc}", flush=True)
    print(f"{'FAILED' if checker.failures else 'PASSED'}: {checker.failures} failure(s)", flush=True)
    return 1 if checker.failures else 0


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    # sys.exit inside `blender --python` is honoured; the os-level exit also skips Blender's own
    # cleanup, which is slow and irrelevant to a check
    import os
    os._exit(code)
