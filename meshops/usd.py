"""USD export of an animated mesh: one ``UsdGeom.Mesh`` whose points are time-sampled, one sample per frame.

Needs the ``usd`` extra (``pip install "face4d[usd]"``, the ``usd-core`` wheel); ``pxr`` is
imported on first use, so the rest of ``meshops`` works without it.

The stage says what our numbers mean, so that DCCs place the head without manual settings:
``upAxis = Y``, ``metersPerUnit = 0.01`` (the head is in centimetres), ``timeCodesPerSecond =
framesPerSecond = fps``, time codes ``0 .. F-1`` (time code ``k`` is frame ``k``). The mesh is the
default prim ``/Face``; its topology is written once, its ``points`` and ``extent`` at every time
code, ``subdivisionScheme = "none"`` so viewers show the triangles as they are. Points are float32,
so float32 input comes back exactly. A ``.usda`` path writes text, ``.usdc`` (or ``.usd``) binary.
"""
from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import numpy as np

from meshops.atomic import atomic_file
from meshops.io import MeshFileError
from meshops.pointcache import check_fps, check_frames
from meshops.rig import RigAnimation

USD_SUFFIXES = (".usd", ".usda", ".usdc")
MESH_PATH = "/Face"
METERS_PER_UNIT = 0.01
INSTALL_HINT = 'USD export needs the usd extra: pip install "face4d[usd]"'


class USDAnimation(NamedTuple):
    """What ``read_usd`` gives: float32 ``frames`` (F, V, 3), ``faces`` (T, 3), ``fps`` and the time codes."""
    frames: np.ndarray
    faces: np.ndarray
    fps: float
    times: np.ndarray


def require_pxr() -> ModuleType:
    """The ``pxr`` package, or an ``ImportError`` with one line saying which extra to install."""
    try:
        import pxr
        from pxr import Usd, UsdGeom  # noqa: F401  (fail here, not halfway through a write)
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return pxr


def check_faces(faces: np.ndarray, num_vertices: int) -> np.ndarray:
    """``faces`` as an int64 (T, 3) array of vertex ids in ``[0, num_vertices)``."""
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0 or not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"faces must be a non-empty integer (T, 3) triangle array, got {faces.dtype} {faces.shape}")
    if faces.min() < 0 or faces.max() >= num_vertices:
        raise ValueError(f"faces index vertices {faces.min()}..{faces.max()}, but the mesh has {num_vertices}")
    return np.ascontiguousarray(faces, np.int64)


def _new_stage(fps: float, num_frames: int):
    """An in-memory stage with our metadata: Y up, centimetres, time codes 0 .. F-1 at ``fps``."""
    from pxr import Usd, UsdGeom

    stage = Usd.Stage.CreateInMemory()
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.y)
    UsdGeom.SetStageMetersPerUnit(stage, METERS_PER_UNIT)
    stage.SetTimeCodesPerSecond(fps)
    stage.SetFramesPerSecond(fps)
    stage.SetStartTimeCode(0)
    stage.SetEndTimeCode(num_frames - 1)
    return stage


def write_usd(path: str | os.PathLike, frames: np.ndarray, faces: np.ndarray, fps: float,
              overwrite: bool = False) -> Path:
    """Write an animated mesh as a USD stage, atomically: ``frames`` (F, V, 3) at time codes ``0 .. F-1``."""
    path = Path(path)
    if path.suffix.lower() not in USD_SUFFIXES:
        raise ValueError(f"{path}: a USD file must end in {', '.join(USD_SUFFIXES)}")
    frames = check_frames(frames)
    faces = check_faces(faces, frames.shape[1])
    fps = check_fps(fps)
    require_pxr()
    from pxr import Sdf, Usd, UsdGeom, Vt

    stage = _new_stage(fps, len(frames))
    mesh = UsdGeom.Mesh.Define(stage, Sdf.Path(MESH_PATH))
    stage.SetDefaultPrim(mesh.GetPrim())
    mesh.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)
    mesh.CreateOrientationAttr(UsdGeom.Tokens.rightHanded)
    mesh.CreateFaceVertexCountsAttr(Vt.IntArray.FromNumpy(np.full(len(faces), 3, np.int32)))
    mesh.CreateFaceVertexIndicesAttr(Vt.IntArray.FromNumpy(faces.reshape(-1).astype(np.int32)))
    points, extent = mesh.CreatePointsAttr(), mesh.CreateExtentAttr()
    for k, verts in enumerate(frames):
        points.Set(Vt.Vec3fArray.FromNumpy(verts), Usd.TimeCode(k))
        extent.Set(Vt.Vec3fArray.FromNumpy(np.stack([verts.min(0), verts.max(0)])), Usd.TimeCode(k))
    with atomic_file(path, overwrite=overwrite) as tmp:
        if not stage.GetRootLayer().Export(str(tmp)):
            raise OSError(f"{path}: USD could not write the file")
    return path


def read_usd(path: str | os.PathLike) -> USDAnimation:
    """Read the animated mesh that ``write_usd`` writes (the default prim, or the first ``Mesh``)."""
    path = Path(path)
    require_pxr()
    from pxr import Usd, UsdGeom

    if not path.is_file():
        raise MeshFileError(f"{path}: no such file")
    try:
        stage = Usd.Stage.Open(str(path))
    except Exception as exc:  # pxr raises Tf.ErrorException for unreadable layers
        raise MeshFileError(f"{path}: cannot read as USD ({' '.join(str(exc).split())})") from None
    prim = stage.GetDefaultPrim()
    if not (prim and prim.IsA(UsdGeom.Mesh)):
        prim = next((p for p in stage.Traverse() if p.IsA(UsdGeom.Mesh)), None)
    if prim is None:
        raise MeshFileError(f"{path}: holds no UsdGeom.Mesh")
    mesh = UsdGeom.Mesh(prim)
    counts = np.asarray(mesh.GetFaceVertexCountsAttr().Get(), np.int64)
    if len(counts) == 0 or (counts != 3).any():
        raise MeshFileError(f"{path}: {prim.GetPath()} is not a triangle mesh")
    faces = np.asarray(mesh.GetFaceVertexIndicesAttr().Get(), np.int64).reshape(-1, 3)
    points = mesh.GetPointsAttr()
    times = np.asarray(points.GetTimeSamples(), np.float64)
    if len(times):
        frames = np.stack([np.asarray(points.Get(Usd.TimeCode(t)), np.float32) for t in times])
    else:  # a static mesh: its one shape, at the default time
        frames = np.asarray(points.Get(), np.float32)[None]
    return USDAnimation(frames, faces, float(stage.GetTimeCodesPerSecond()), times)


SKEL_ROOT_PATH = "/Rig"


def write_usd_skel(path: str | os.PathLike, neutral: np.ndarray, faces: np.ndarray, rig: RigAnimation, fps: float,
                   overwrite: bool = False) -> Path:
    """Write a ``RigAnimation`` as a UsdSkel stage, atomically: the blendshape variant of ``write_usd``.

    ``/Rig`` (SkelRoot, the default prim) holds ``Skel`` (a Skeleton with one joint, ``head``),
    ``Anim`` (its SkelAnimation: the ``blendShapeWeights`` at every time code ``0 .. F-1`` and the
    head joint's rotation and translation, the head pose) and ``Face``, the neutral mesh bound to
    the skeleton (every vertex fully on ``head``, identity bind transforms) with one ``BlendShape``
    prim per shape holding its offsets. Stage metadata as ``write_usd``'s.
    """
    path = Path(path)
    if path.suffix.lower() not in USD_SUFFIXES:
        raise ValueError(f"{path}: a USD file must end in {', '.join(USD_SUFFIXES)}")
    neutral = check_frames(np.asarray(neutral)[None])[0]
    faces = check_faces(faces, len(neutral))
    fps = check_fps(fps)
    if rig.basis.shape[1:] != neutral.shape:
        raise ValueError(f"the neutral mesh {neutral.shape} and the rig's basis {rig.basis.shape} differ")
    require_pxr()
    from pxr import Gf, Sdf, Usd, UsdGeom, UsdSkel, Vt

    stage = _new_stage(fps, rig.num_frames)
    root = UsdSkel.Root.Define(stage, Sdf.Path(SKEL_ROOT_PATH))
    stage.SetDefaultPrim(root.GetPrim())
    joints = ["head"]
    skeleton = UsdSkel.Skeleton.Define(stage, root.GetPath().AppendChild("Skel"))
    skeleton.CreateJointsAttr(joints)
    identity = Vt.Matrix4dArray([Gf.Matrix4d(1.0)])
    skeleton.CreateBindTransformsAttr(identity)
    skeleton.CreateRestTransformsAttr(identity)
    anim = UsdSkel.Animation.Define(stage, root.GetPath().AppendChild("Anim"))
    names = [_usd_token(n) for n in rig.names]
    anim.CreateJointsAttr(joints)
    anim.CreateBlendShapesAttr(names)
    weights_attr, rotations, translations = (anim.CreateBlendShapeWeightsAttr(), anim.CreateRotationsAttr(),
                                             anim.CreateTranslationsAttr())
    anim.CreateScalesAttr(Vt.Vec3hArray([Gf.Vec3h(1, 1, 1)]))
    quaternions, shifts = rig.node_transform()
    for k in range(rig.num_frames):
        time = Usd.TimeCode(k)
        weights_attr.Set(Vt.FloatArray.FromNumpy(rig.weights[k]), time)
        x, y, z, w = (float(c) for c in quaternions[k])
        rotations.Set(Vt.QuatfArray([Gf.Quatf(w, x, y, z)]), time)
        translations.Set(Vt.Vec3fArray.FromNumpy(shifts[k][None]), time)
    UsdSkel.BindingAPI.Apply(skeleton.GetPrim()).CreateAnimationSourceRel().SetTargets([anim.GetPath()])

    mesh = UsdGeom.Mesh.Define(stage, root.GetPath().AppendChild("Face"))
    mesh.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)
    mesh.CreateOrientationAttr(UsdGeom.Tokens.rightHanded)
    mesh.CreateFaceVertexCountsAttr(Vt.IntArray.FromNumpy(np.full(len(faces), 3, np.int32)))
    mesh.CreateFaceVertexIndicesAttr(Vt.IntArray.FromNumpy(faces.reshape(-1).astype(np.int32)))
    mesh.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(neutral))
    binding = UsdSkel.BindingAPI.Apply(mesh.GetPrim())
    binding.CreateSkeletonRel().SetTargets([skeleton.GetPath()])
    binding.CreateGeomBindTransformAttr(Gf.Matrix4d(1.0))
    binding.CreateJointIndicesPrimvar(constant=True, elementSize=1).Set(Vt.IntArray([0]))
    binding.CreateJointWeightsPrimvar(constant=True, elementSize=1).Set(Vt.FloatArray([1.0]))
    binding.CreateBlendShapesAttr(names)
    shape_paths = []
    for name, offsets in zip(names, rig.basis):
        shape = UsdSkel.BlendShape.Define(stage, mesh.GetPath().AppendChild(name))
        shape.CreateOffsetsAttr(Vt.Vec3fArray.FromNumpy(offsets))
        shape_paths.append(shape.GetPath())
    binding.CreateBlendShapeTargetsRel().SetTargets(shape_paths)
    with atomic_file(path, overwrite=overwrite) as tmp:
        if not stage.GetRootLayer().Export(str(tmp)):
            raise OSError(f"{path}: USD could not write the file")
    return path


def _usd_token(name: str) -> str:
    """A prim name from a shape name (``mouthSmile_L`` is one already; others are cleaned)."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name) or "shape"
