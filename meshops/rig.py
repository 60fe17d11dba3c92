"""Rig exports: blendshape weight curves and head pose as glTF, Live Link Face CSV (ARKit) and JSON.

A ``RigAnimation`` is what ``meshops.blendshapes.fit_head`` solves for a mesh sequence of the head
model: per-frame weights of its named expression shapes and a rigid head pose (axis-angle +
translation about ``pivot``, ``meshops.pose.apply_head_pose``). The writers here turn it into the
files rigs read (``docs/exports.md`` has how to import each):

* ``write_gltf``: one binary ``.glb`` (pygltflib): the neutral mesh with one morph target per
  shape, an animation of the morph weights and of the node's rotation and translation, keyframe
  ``k`` at ``k / fps`` seconds. The mesh keeps our numbers (centimetres, Y up, which is glTF's up)
  on a child node of a ``face4d`` root node scaled by 0.01, since glTF's unit is the metre.
* ``write_arkit_csv``: Apple's 52 ARKit blendshapes in the column layout of Epic's Live Link Face
  app recordings (``Timecode, BlendShapeCount``, the 52 curves, head yaw/pitch/roll in radians and
  the six eye angles, which we leave at 0), for Unreal Live Link / MetaHuman. ``ARKIT_FROM_HEAD``
  is the mapping: ``x_L``/``x_R`` become ``xLeft``/``xRight``; the head splits ARKit's
  ``browInnerUp`` and ``cheekPuff`` into left and right, whose mean is written; ARKit's
  ``tongueOut`` has no shape in the head and is written as 0.
* ``write_weights_json``: names, fps, weights, pose and pivot as plain JSON for any other tool.

Every writer is atomic (``meshops.atomic``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from meshops.atomic import atomic_file
from meshops.pointcache import check_fps

ARKIT_NAMES = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeSquintLeft",
    "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight", "jawForward", "jawLeft", "jawRight", "jawOpen", "mouthClose", "mouthFunnel",
    "mouthPucker", "mouthLeft", "mouthRight", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft", "mouthPressRight",
    "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight", "browDownLeft",
    "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff", "cheekSquintLeft",
    "cheekSquintRight", "noseSneerLeft", "noseSneerRight", "tongueOut")
"""ARKit's 52 blendshapes in the order of Live Link Face's CSV (Unreal's ``EARFaceBlendShape``)."""
LIVE_LINK_EXTRA = ("HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll", "RightEyeYaw",
                   "RightEyePitch", "RightEyeRoll")
LIVE_LINK_COLUMNS = ("Timecode", "BlendShapeCount",
                     *(name[0].upper() + name[1:] for name in ARKIT_NAMES), *LIVE_LINK_EXTRA)


def _head_names(arkit: str) -> tuple[str, ...]:
    """The head model's shapes that make one ARKit shape (``eyeBlinkLeft`` <- ``eyeBlink_L``)."""
    if arkit == "tongueOut":
        return ()
    if arkit in ("browInnerUp", "cheekPuff"):
        return (f"{arkit}_L", f"{arkit}_R")
    for side, suffix in (("Left", "_L"), ("Right", "_R")):
        if arkit.endswith(side) and arkit not in ("jawLeft", "jawRight", "mouthLeft", "mouthRight"):
            return (arkit[:-len(side)] + suffix,)
    return (arkit,)


ARKIT_FROM_HEAD: dict[str, tuple[str, ...]] = {name: _head_names(name) for name in ARKIT_NAMES}
"""ARKit name -> the head model's shapes whose mean it is (empty: written as 0)."""


@dataclass
class RigAnimation:
    """Blendshape animation of a mesh: ``names`` (K,) of the ``basis`` (K, V, 3) offsets, ``weights``
    (F, K), ``head_pose`` (F, 6) axis-angle (rad) + translation about ``pivot`` (3,)."""

    names: tuple[str, ...]
    basis: np.ndarray
    weights: np.ndarray
    head_pose: np.ndarray
    pivot: np.ndarray

    def __post_init__(self) -> None:
        self.names = tuple(str(n) for n in self.names)
        self.basis = np.ascontiguousarray(self.basis, np.float32)
        self.weights = np.ascontiguousarray(self.weights, np.float32)
        self.head_pose = np.ascontiguousarray(self.head_pose, np.float32)
        self.pivot = np.asarray(self.pivot, np.float32).reshape(3)
        k, f = len(self.names), len(self.weights)
        if self.basis.shape[0] != k or self.basis.ndim != 3 or self.basis.shape[2] != 3:
            raise ValueError(f"the basis must be ({k}, V, 3) for {k} names, got {self.basis.shape}")
        if self.weights.shape != (f, k) or self.head_pose.shape != (f, 6) or f == 0:
            raise ValueError(f"weights {self.weights.shape} and head pose {self.head_pose.shape} must be (F, {k}) "
                             "and (F, 6) with F >= 1")

    @property
    def num_frames(self) -> int:
        return len(self.weights)

    def node_transform(self) -> tuple[np.ndarray, np.ndarray]:
        """The pose as a node's per-frame rotation quaternion (F, 4) x, y, z, w and translation
        (F, 3): ``R x + tau`` with ``tau = pivot + t - R pivot`` turns about the pivot."""
        rotation = Rotation.from_rotvec(self.head_pose[:, :3].astype(np.float64))
        tau = self.pivot + self.head_pose[:, 3:] - rotation.apply(self.pivot)
        return rotation.as_quat().astype(np.float32), tau.astype(np.float32)

    def arkit_weights(self) -> np.ndarray:
        """The 52 ARKit curves (F, 52) in ``ARKIT_NAMES`` order, by ``ARKIT_FROM_HEAD``."""
        index = {n: i for i, n in enumerate(self.names)}
        missing = sorted({n for parts in ARKIT_FROM_HEAD.values() for n in parts} - set(index))
        if missing:
            raise ValueError(f"the rig lacks the shapes ARKit needs: {', '.join(missing)}")
        out = np.zeros((self.num_frames, len(ARKIT_NAMES)), np.float32)
        for j, parts in enumerate(ARKIT_FROM_HEAD.values()):
            if parts:
                out[:, j] = self.weights[:, [index[n] for n in parts]].mean(1)
        return out


def _timecode(frame: int, fps: float) -> str:
    """Live Link Face's ``HH:MM:SS:FF.mmm`` of frame ``frame`` from time 0."""
    seconds, sub = divmod(frame / fps, 1.0)
    minutes, sec = divmod(int(seconds), 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}:{sec:02d}:{int(round(sub * fps)) % max(round(fps), 1):02d}.000"


def write_arkit_csv(path: str | os.PathLike, rig: RigAnimation, fps: float, overwrite: bool = False) -> Path:
    """The rig's ARKit curves as a Live Link Face CSV (``LIVE_LINK_COLUMNS``), one row per frame."""
    path, fps = Path(path), check_fps(fps)
    weights = rig.arkit_weights()
    # yaw about Y (up), pitch about X, roll about Z: our axes are ARKit's (Y up, +z towards the viewer)
    yaw, pitch, roll = Rotation.from_rotvec(rig.head_pose[:, :3].astype(np.float64)).as_euler("YXZ").T
    lines = [",".join(LIVE_LINK_COLUMNS)]
    for k in range(rig.num_frames):
        values = [*weights[k], yaw[k], pitch[k], roll[k], *([0.0] * 6)]
        lines.append(",".join([_timecode(k, fps), str(len(values))] + [f"{v:.6g}" for v in values]))
    with atomic_file(path, overwrite=overwrite) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


def write_weights_json(path: str | os.PathLike, rig: RigAnimation, fps: float, overwrite: bool = False) -> Path:
    """Names, fps, weights (F, K), head pose (F, 6) and pivot as JSON."""
    path, fps = Path(path), check_fps(fps)
    data = {"fps": fps, "frames": rig.num_frames, "names": list(rig.names),
            "weights": np.round(rig.weights.astype(np.float64), 7).tolist(),
            "head_pose": np.round(rig.head_pose.astype(np.float64), 7).tolist(),
            "head_pose_layout": "axis-angle (radians, 3) + translation (centimetres, 3), turning about pivot",
            "pivot": rig.pivot.astype(np.float64).tolist(), "units": "centimetres", "up_axis": "Y"}
    with atomic_file(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(data) + "\n")
    return path


def write_gltf(path: str | os.PathLike, neutral: np.ndarray, faces: np.ndarray, rig: RigAnimation, fps: float,
               overwrite: bool = False) -> Path:
    """The neutral mesh (V, 3) with the rig's morph targets and animation as one ``.glb``."""
    import pygltflib as g

    path, fps = Path(path), check_fps(fps)
    if path.suffix.lower() != ".glb":
        raise ValueError(f"{path}: a binary glTF file must end in .glb")
    neutral = np.ascontiguousarray(neutral, np.float32)
    if neutral.shape != rig.basis.shape[1:]:
        raise ValueError(f"the neutral mesh {neutral.shape} and the rig's basis {rig.basis.shape} differ")
    blob, views, accessors = bytearray(), [], []

    def add(array: np.ndarray, component: int, kind: str, target: int | None = None, bounds: bool = False) -> int:
        while len(blob) % 4:
            blob.append(0)
        views.append(g.BufferView(buffer=0, byteOffset=len(blob), byteLength=array.nbytes, target=target))
        blob.extend(array.tobytes())
        flat = array.reshape(len(array), -1)
        accessors.append(g.Accessor(bufferView=len(views) - 1, componentType=component, count=len(array), type=kind,
                                    min=flat.min(0).tolist() if bounds else None,
                                    max=flat.max(0).tolist() if bounds else None))
        return len(accessors) - 1

    position = add(neutral, g.FLOAT, g.VEC3, g.ARRAY_BUFFER, bounds=True)
    indices = add(np.ascontiguousarray(faces, np.uint32).reshape(-1), g.UNSIGNED_INT, g.SCALAR, g.ELEMENT_ARRAY_BUFFER)
    targets = [{"POSITION": add(offsets, g.FLOAT, g.VEC3, g.ARRAY_BUFFER, bounds=True)} for offsets in rig.basis]
    times = add(np.arange(rig.num_frames, dtype=np.float32) / np.float32(fps), g.FLOAT, g.SCALAR, bounds=True)
    weights = add(rig.weights.reshape(-1), g.FLOAT, g.SCALAR)
    quaternions, translations = rig.node_transform()
    rotation, translation = add(quaternions, g.FLOAT, g.VEC4), add(translations, g.FLOAT, g.VEC3)
    mesh = g.Mesh(name="Face", weights=[0.0] * len(rig.names), extras={"targetNames": list(rig.names)},
                  primitives=[g.Primitive(attributes=g.Attributes(POSITION=position), indices=indices,
                                          targets=targets, mode=g.TRIANGLES)])
    samplers = [g.AnimationSampler(input=times, output=out, interpolation=g.ANIM_LINEAR)
                for out in (weights, rotation, translation)]
    channels = [g.AnimationChannel(sampler=i, target=g.AnimationChannelTarget(node=1, path=p))
                for i, p in enumerate(("weights", "rotation", "translation"))]
    gltf = g.GLTF2(asset=g.Asset(generator="face4d", version="2.0"), scene=0, scenes=[g.Scene(nodes=[0])],
                   nodes=[g.Node(name="face4d", children=[1], scale=[0.01, 0.01, 0.01]),
                          g.Node(name="Face", mesh=0, rotation=quaternions[0].tolist(),
                                 translation=translations[0].tolist())],
                   meshes=[mesh], accessors=accessors, bufferViews=views, buffers=[g.Buffer(byteLength=len(blob))],
                   animations=[g.Animation(name="face4d", samplers=samplers, channels=channels)])
    gltf.set_binary_blob(bytes(blob))
    with atomic_file(path, overwrite=overwrite) as tmp:
        gltf.save_binary(str(tmp))
    return path
