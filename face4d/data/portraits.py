"""Portrait images of the head model: the training and evaluation data of the neural renderers.

Image models of faces need many pictures of many people making labelled expressions, with the exact
landmarks of each picture, and for evaluation, the exact picture of a known person with a given
expression. No such data set can be downloaded here; renders of the morphable head give all of it
exactly. Each identity (identity weights ~ N(0, I), as in the 4D data) gets painted features, so that
what the expression models move shows in the image: a skin tone, red lips, dark brows and lash lines,
eyeballs with sclera, iris and pupil, and a dark mouth interior (the inside of the head, seen through
the lips when the jaw opens). Expressions are the 18 label recipes at random intensities with left/right
asymmetry (``face4d.data.synth``, one apex frame per image; whole sequences for clips).

What varies per image is the camera (yaw +-20, pitch +-10, roll +-5 degrees, distance +-7%) and the
expression; the lighting and the background belong to the identity (one "photo session" per person),
so that an identity image plus target landmarks determine the target image, which is what lets the
evaluation score generated images against exact ground truth. With ``PortraitConfig.sources`` each image
also has a *source* image of the same person, camera and session whose expression is that of the person's
next image: the pairs the editing model learns an expression change from, with nothing else changing.

Images are drawn by ``render.raster`` (numpy, no OpenGL) through ``render.camera.Camera``, the
previews' camera, and the 68 landmarks are the landmark vertices projected by that same camera.
The folder layout is the portrait data contract (docs/neural.md): ``manifest.json``,
``images-NNNNN.npz`` and ``clips-NNNNN.npz`` shards (each holding the identities of one split only),
and ``neutrals.npz``. Image ``i`` depends only on ``(seed, i)`` and the identity count, so shards can
be rendered by parallel workers.
"""
from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from face4d.data.labels import LABEL_NAMES
from face4d.data.synth import ExpressionSynthesizer, SynthConfig
from face4d.errors import Face4DError
from face4d.jsonfile import write_json
from meshops.atomic import atomic_dir, atomic_file, check_dir_target
from meshops.head import HeadModel
from render.camera import Camera
from render.neural.data import next_of_same
from render.preview import VIEW_ANGLE
from render.raster import Light, MeshRasterizer, composite

FORMAT, FORMAT_VERSION = "face4d-portraits", 1
LICENCE = ("Renders of the ICT Face Model Light (USC ICT-FaceKit, MIT licence; see "
           "meshops/data/ICT-FaceKit-LICENSE.txt, which must accompany copies)")
CLIP_SIZES = (64, 128)
YAW, PITCH, ROLL, DISTANCE = 20.0, 10.0, 5.0, 0.07  # camera jitter: degrees either way; relative distance
TEST_FRACTION = 0.1
SUPERSAMPLE = 2
MOUTH_INTERIOR = (0.20, 0.05, 0.06)
SKIN, LIPS, BROW, LASH, SCLERA, IRIS, PUPIL = range(7)
# skin tones from light to dark (sRGB in [0, 1]); an identity's tone is a random point on this path
SKIN_TONES = np.array([[0.96, 0.82, 0.72], [0.90, 0.71, 0.58], [0.80, 0.58, 0.44], [0.64, 0.43, 0.30],
                       [0.45, 0.29, 0.19], [0.30, 0.19, 0.13]])
HAIR = np.array([[0.08, 0.06, 0.05], [0.20, 0.13, 0.08], [0.35, 0.22, 0.12], [0.45, 0.22, 0.10], [0.55, 0.45, 0.30]])
IRISES = np.array([[0.25, 0.45, 0.70], [0.30, 0.50, 0.30], [0.40, 0.25, 0.12], [0.22, 0.13, 0.07], [0.50, 0.42, 0.22]])
_APPEARANCE, _IMAGE, _CLIP, _SPLIT = 1, 2, 3, 4  # random streams of one seed
_CLIP_SEQUENCES = 1 << 40  # the synthesizer's sequence indices of clips start here, after any image's


@dataclass
class PortraitConfig:
    """What shapes a portrait data set besides the seed (saved in its manifest)."""

    size: int = 64
    images: int = 20000
    clips: int = 0
    clip_frames: int = 16
    identities: int = 500
    clip_sizes: tuple[int, int] = CLIP_SIZES
    shard_size: int = 1000
    clip_shard_size: int = 50
    sources: bool = False
    """Also render, for each image, its *source*: the same person, camera and session with the expression
    of the identity's next image (the editing model's training pairs differ in expression only)."""

    def __post_init__(self) -> None:
        self.clip_sizes = tuple(int(s) for s in self.clip_sizes)
        for name, value, low in (("size", self.size, 16), ("images", self.images, 1), ("clips", self.clips, 0),
                                 ("clip frames", self.clip_frames, 2), ("identities", self.identities, 3),
                                 ("shard size", self.shard_size, 1), ("clip shard size", self.clip_shard_size, 1)):
            if int(value) != value or value < low:
                raise Face4DError(f"{name} must be an integer of at least {low}, got {value}")
        if self.size > 512 or len(self.clip_sizes) != 2 or not 16 <= self.clip_sizes[0] <= self.clip_sizes[1] <= 512:
            raise Face4DError(f"image sizes must lie within 16..512 pixels and the clip sizes be (low, high) with "
                              f"low <= high, got size {self.size}, clip sizes {self.clip_sizes}")


@dataclass
class Appearance:
    """One identity's look: the colours of its painted features (``palette``, one row per material),
    its ``light`` and its background (two colours and a coarse 4 x 4 blend field)."""

    palette: np.ndarray
    light: Light
    background: np.ndarray  # (2, 3) colours
    field: np.ndarray  # (4, 4) in [0, 1]: where each colour shows

    def background_image(self, size: int) -> np.ndarray:
        """The background (size, size, 3) in [0, 1]: the blend field bilinearly upsampled, so the same
        backdrop at every resolution."""
        u = np.clip((np.arange(size) + 0.5) / size * 3, 0, 3 - 1e-9)
        i, f = u.astype(int), u - u.astype(int)
        rows = self.field[i] * (1 - f)[:, None] + self.field[i + 1] * f[:, None]  # (size, 4)
        blend = rows[:, i] * (1 - f) + rows[:, i + 1] * f  # (size, size)
        return self.background[0] + blend[..., None] * (self.background[1] - self.background[0])


def draw_appearance(rng: np.random.Generator) -> Appearance:
    """A random identity look (see the module docstring)."""
    t = rng.uniform(0, len(SKIN_TONES) - 1)
    k = min(int(t), len(SKIN_TONES) - 2)
    skin = SKIN_TONES[k] + (t - k) * (SKIN_TONES[k + 1] - SKIN_TONES[k])
    skin = np.clip(skin * rng.uniform(0.95, 1.05, 3), 0, 1)
    lips = np.clip(skin * np.array([0.80, 0.45, 0.48]) + np.array([0.10, 0.0, 0.02]) * rng.uniform(0.5, 1.5), 0, 1)
    hair = HAIR[rng.integers(len(HAIR))] * rng.uniform(0.8, 1.2)
    brow = np.minimum(hair, skin * 0.45)  # brows stay darker than the skin, so they show on every tone
    lash = np.minimum(brow, skin * 0.3)
    iris = np.clip(IRISES[rng.integers(len(IRISES))] * rng.uniform(0.8, 1.2, 3), 0, 1)
    sclera = np.array([0.93, 0.91, 0.87]) * rng.uniform(0.9, 1.0)
    palette = np.stack([skin, lips, brow, lash, sclera, iris, np.full(3, 0.04)]).astype(np.float32)
    azimuth, elevation = np.radians(rng.uniform(-60, 60)), np.radians(rng.uniform(-10, 50))
    direction = (math.sin(azimuth) * math.cos(elevation), math.sin(elevation), math.cos(azimuth) * math.cos(elevation))
    warm = rng.uniform(-0.08, 0.08)
    light = Light(direction=direction, ambient=rng.uniform(0.3, 0.45), diffuse=rng.uniform(0.55, 0.8),
                  specular=rng.uniform(0.02, 0.12), color=(1 + warm, 1.0, 1 - warm))
    background = rng.uniform(0.05, 0.95, (2, 3))
    return Appearance(palette, light, background.astype(np.float32), rng.uniform(0, 1, (4, 4)))


def paint_materials(head: HeadModel) -> np.ndarray:
    """Each vertex's material (V,) int8 (``SKIN``, ``LIPS``, ``BROW``, ...), found on the mean neutral head.

    The ICT head has no texture or feature labels, so the features are painted from its landmarks:
    the lips are the front vertices inside the outer lip contour (landmarks 48-59), the brows a band
    along the brow landmarks (17-26), the lash lines a thin band along the eye contours (36-47), and
    each eyeball is split by the angle from its forward (+z) axis into pupil, iris and sclera.
    Materials travel with the vertices, so an expression moves the paint with the skin.
    """
    v = head.neutral
    landmarks = head.landmark_neutral
    materials = np.full(head.num_vertices, SKIN, np.int8)
    face = np.zeros(head.num_vertices, bool)
    face[head.region_ids("face")] = True
    xy = v[:, :2]

    lip = landmarks[48:60, :2]
    lip = lip.mean(0) + 1.04 * (lip - lip.mean(0))
    materials[face & _inside(xy, lip) & (v[:, 2] > landmarks[48:60, 2].min() - 0.6)] = LIPS
    front = face & (v[:, 2] > landmarks[17:27, 2].min() - 1.5)
    for brow in (landmarks[17:22], landmarks[22:27]):
        centre = brow[:, :2] - [0.0, 0.2]
        taper = np.interp(np.abs(xy[:, 0]), np.sort(np.abs(centre[:, 0])), [0.5, 0.5, 0.45, 0.4, 0.3])
        materials[front & (_polyline_distance(xy, centre) < taper)] = BROW
    for eye in (landmarks[36:42], landmarks[42:48]):
        ring = np.vstack([eye[:, :2], eye[:1, :2]])
        near = face & (v[:, 2] > eye[:, 2].min() - 1.0)
        materials[near & (_polyline_distance(xy, ring[:4]) < 0.16)] = LASH  # the upper lid's line
    for region in ("eyeball_left", "eyeball_right"):
        ids = head.region_ids(region)
        p = v[ids]
        offset = p - (p.min(0) + p.max(0)) / 2
        angle = np.degrees(np.arccos(np.clip(offset[:, 2] / np.linalg.norm(offset, axis=1), -1, 1)))
        materials[ids] = np.where(angle < 11, PUPIL, np.where(angle < 27, IRIS, SCLERA))
    return materials


def _inside(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Which of the (N, 2) points lie inside the closed (K, 2) polygon (even-odd rule)."""
    x, y = points[:, :1], points[:, 1:]
    a, b = polygon, np.roll(polygon, -1, 0)
    crosses = (a[:, 1] > y) != (b[:, 1] > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        at = a[:, 0] + (y - a[:, 1]) * (b[:, 0] - a[:, 0]) / (b[:, 1] - a[:, 1])
    return (crosses & (x < at)).sum(1) % 2 == 1


def _polyline_distance(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Distance (N,) of (N, 2) points from the polyline through (K, 2) points."""
    a, b = line[:-1], line[1:]
    ab = b - a
    t = np.clip(((points[:, None] - a) * ab).sum(-1) / (ab * ab).sum(-1), 0, 1)
    return np.linalg.norm(points[:, None] - (a + t[..., None] * ab), axis=-1).min(1)


class PortraitRenderer:
    """Renders painted heads of one ``HeadModel`` with the portrait camera (see the module docstring)."""

    def __init__(self, head: HeadModel):
        self.head = head
        self.materials = paint_materials(head)
        face = np.zeros(head.num_vertices, bool)
        for region in ("face", "eyeball_left", "eyeball_right"):
            face[head.region_ids(region)] = True
        self.face_triangles = face[head.faces].all(1)
        # what shows through the open mouth is the inside of the lower head: drawn dark, both sides
        below_nose = head.neutral[head.faces, 1].mean(1) < head.landmark_neutral[33, 1]
        self.rasterizer = MeshRasterizer(head.faces, SUPERSAMPLE, back_color=MOUTH_INTERIOR, double_sided=below_nose)
        lm = head.landmark_neutral
        # the portrait's box: the face from chin to forehead, ear to ear of the landmarks
        self.bounds = np.array([lm[:, 0].min(), lm[:, 0].max(), lm[:, 1].min() - 1.0, lm[:, 1].max() + 3.0,
                                lm[:, 2].min(), lm[:, 2].max()], np.float64)
        self._frontal = Camera.framing(self.bounds, (64, 64), view_angle=VIEW_ANGLE, margin=1.1)

    @property
    def target(self) -> tuple[float, float, float]:
        return self._frontal.target

    def camera(self, size: int, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0,
               scale: float = 1.0) -> Camera:
        """The portrait camera for a ``size``-pixel square image; ``scale`` multiplies the framing distance."""
        base = self._frontal.scaled(size / 64)
        return Camera(base.target, yaw, pitch, roll, base.distance * scale, base.focal, (size, size))

    def render(self, vertices: np.ndarray, appearance: Appearance,
               camera: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """RGB (S, S, 3) uint8, the 68 projected landmarks (68, 2) float32 and the face mask (S, S) uint8."""
        colors = appearance.palette[self.materials]
        rgba, fragments = self.rasterizer.render(camera, vertices, colors, appearance.light)
        rgb = composite(rgba, appearance.background_image(camera.size[0]))
        mask = self.rasterizer.coverage(fragments, self.face_triangles, back=True) >= 0.5
        landmarks = camera.project(vertices[self.head.landmark_ids]).astype(np.float32)
        return rgb, landmarks, mask.astype(np.uint8)


# -- the data set ---------------------------------------------------------------------------------
class PortraitPlan:
    """Every draw of a data set, made up front from the seed (cheap): who, which expression, which camera.

    ``images``: identity (N,), label (N,) (-1 neutral), weights (N, 53), camera (N, 4) (yaw, pitch, roll,
    distance scale); ``clips``: the same per clip, with weights (M, T, 53).
    """

    def __init__(self, head: HeadModel, config: PortraitConfig, seed: int):
        self.config, self.seed = config, int(seed)
        synth_config = SynthConfig(frames=config.clip_frames, num_identities=config.identities,
                                   intensity=(0.3, 1.0), asymmetry=0.3)
        self.synth = ExpressionSynthesizer(head, synth_config, seed)
        order = self._rng(_SPLIT).permutation(config.identities)
        n_test = max(1, round(config.identities * TEST_FRACTION))
        self.split = {"train": sorted(int(i) for i in order[n_test:]), "test": sorted(int(i) for i in order[:n_test])}
        self.appearance = [draw_appearance(self._rng(_APPEARANCE, i)) for i in range(config.identities)]
        self.images = self._draw(config.images, _IMAGE, 1, neutral=True)
        self.images["source"] = next_of_same(self.images["identity"])
        self.clips = self._draw(config.clips, _CLIP, config.clip_frames, neutral=False)

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=key))

    def _draw(self, count: int, stream: int, frames: int, neutral: bool) -> dict[str, np.ndarray]:
        n_labels = len(LABEL_NAMES)
        out = {"identity": np.zeros(count, np.int32), "label": np.zeros(count, np.int16),
               "camera": np.zeros((count, 4), np.float32),
               "weights": np.zeros((count, frames, self.synth.head.num_expressions), np.float32)}
        for i in range(count):
            rng = self._rng(stream, i)
            identity = int(rng.integers(self.config.identities))
            label = int(rng.integers(-1 if neutral else 0, n_labels))
            out["identity"][i], out["label"][i] = identity, label
            out["camera"][i] = (rng.uniform(-YAW, YAW), rng.uniform(-PITCH, PITCH), rng.uniform(-ROLL, ROLL),
                                rng.uniform(1 - DISTANCE, 1 + DISTANCE))
            if label >= 0:
                index = i if stream == _IMAGE else _CLIP_SEQUENCES + i
                out["weights"][i] = self.synth.sample(index, label=LABEL_NAMES[label], identity=identity,
                                                      frames=frames)["expression_weights"]
        if frames == 1:
            out["weights"] = out["weights"][:, 0]
        return out

    def batches(self, kind: str, size: int) -> Iterator[tuple[str, np.ndarray]]:
        """``(split, indices)`` of ``kind`` (``"images"`` or ``"clips"``) in shards of at most ``size``,
        the train split first; a shard never mixes splits."""
        table = self.images if kind == "images" else self.clips
        test = set(self.split["test"])
        is_test = np.array([int(i) in test for i in table["identity"]], bool)
        for split, picked in (("train", np.flatnonzero(~is_test)), ("test", np.flatnonzero(is_test))):
            for start in range(0, len(picked), size):
                yield split, picked[start:start + size]


_worker: tuple[PortraitRenderer, PortraitPlan] | None = None


def _set_worker(renderer: PortraitRenderer, plan: PortraitPlan) -> None:
    global _worker
    _worker = (renderer, plan)


def _render_task(task: tuple[str, np.ndarray]) -> dict[str, np.ndarray]:
    kind, indices = task
    renderer, plan = _worker
    return (_render_images if kind == "images" else _render_clips)(renderer, plan, indices)


def _vertices(renderer: PortraitRenderer, plan: PortraitPlan, identity: int, weights: np.ndarray) -> np.ndarray:
    return renderer.head.vertices(plan.synth.identities[identity], weights)


def _render_images(renderer: PortraitRenderer, plan: PortraitPlan, indices: np.ndarray) -> dict[str, np.ndarray]:
    size, table = plan.config.size, plan.images
    n = len(indices)
    out = {"rgb": np.zeros((n, size, size, 3), np.uint8), "landmarks": np.zeros((n, 68, 2), np.float32),
           "label": table["label"][indices], "identity": table["identity"][indices],
           "weights": table["weights"][indices], "mask": np.zeros((n, size, size), np.uint8),
           "camera": np.zeros((n, 6), np.float32)}
    if plan.config.sources:  # each image's source: its camera and person, its partner's expression
        out.update({"source_rgb": np.zeros_like(out["rgb"]), "source_landmarks": np.zeros_like(out["landmarks"]),
                    "source_label": table["label"][table["source"][indices]]})
    for k, i in enumerate(indices):
        identity = int(table["identity"][i])
        camera = renderer.camera(size, *(float(c) for c in table["camera"][i]))
        vertices = _vertices(renderer, plan, identity, table["weights"][i])
        out["rgb"][k], out["landmarks"][k], out["mask"][k] = renderer.render(vertices, plan.appearance[identity],
                                                                             camera)
        out["camera"][k] = camera.as_vector()
        if plan.config.sources:
            vertices = _vertices(renderer, plan, identity, table["weights"][table["source"][i]])
            out["source_rgb"][k], out["source_landmarks"][k], _ = renderer.render(
                vertices, plan.appearance[identity], camera)
    return out


def _render_clips(renderer: PortraitRenderer, plan: PortraitPlan, indices: np.ndarray) -> dict[str, np.ndarray]:
    (low, high), frames, table = plan.config.clip_sizes, plan.config.clip_frames, plan.clips
    n = len(indices)
    out = {"low": np.zeros((n, frames, low, low, 3), np.uint8), "high": np.zeros((n, frames, high, high, 3), np.uint8),
           "landmarks_low": np.zeros((n, frames, 68, 2), np.float32),
           "landmarks_high": np.zeros((n, frames, 68, 2), np.float32),
           "identity": table["identity"][indices], "label": table["label"][indices],
           "identity_high": np.zeros((n, high, high, 3), np.uint8), "weights": table["weights"][indices],
           "camera": np.zeros((n, 6), np.float32)}
    for k, i in enumerate(indices):
        identity = int(table["identity"][i])
        appearance = plan.appearance[identity]
        cam_low = renderer.camera(low, *(float(c) for c in table["camera"][i]))
        cam_high = cam_low.scaled(high / low)
        meshes = _vertices(renderer, plan, identity, table["weights"][i])
        for t in range(frames):
            out["low"][k, t], out["landmarks_low"][k, t], _ = renderer.render(meshes[t], appearance, cam_low)
            out["high"][k, t], out["landmarks_high"][k, t], _ = renderer.render(meshes[t], appearance, cam_high)
        out["identity_high"][k] = renderer.render(_vertices(renderer, plan, identity, None), appearance, cam_high)[0]
        out["camera"][k] = cam_low.as_vector()
    return out


def render_neutrals(renderer: PortraitRenderer, plan: PortraitPlan) -> dict[str, np.ndarray]:
    """Every identity's neutral face, frontal, at the data set's size (``neutrals.npz``)."""
    size, count = plan.config.size, plan.config.identities
    out = {"identity": np.arange(count, dtype=np.int32), "rgb": np.zeros((count, size, size, 3), np.uint8),
           "landmarks": np.zeros((count, 68, 2), np.float32), "mask": np.zeros((count, size, size), np.uint8),
           "identity_weights": plan.synth.identities.copy()}
    camera = renderer.camera(size)
    for i in range(count):
        vertices = _vertices(renderer, plan, i, None)
        out["rgb"][i], out["landmarks"][i], out["mask"][i] = renderer.render(vertices, plan.appearance[i], camera)
    return out


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write plain arrays (no pickled objects) to ``path`` under a temporary name, then rename it."""
    with atomic_file(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def build_portraits(out: str | os.PathLike, config: PortraitConfig, seed: int = 0, workers: int = 1,
                    overwrite: bool = False, progress: bool = True, head: HeadModel | None = None) -> Path:
    """Render the portrait data set ``config`` of ``seed`` into the folder ``out`` (the layout is in the
    module docstring); the folder appears whole or not at all. ``workers`` > 1 renders shards in that
    many processes (the result is the same)."""
    if int(workers) != workers or workers < 1:
        raise Face4DError(f"workers must be a positive integer, got {workers}")
    check_dir_target(out, overwrite)
    head = head or HeadModel.load()
    renderer = PortraitRenderer(head)
    plan = PortraitPlan(head, config, seed)
    tasks = [("images", idx) for _, idx in plan.batches("images", config.shard_size)]
    tasks += [("clips", idx) for _, idx in plan.batches("clips", config.clip_shard_size)]
    splits = [split for split, _ in plan.batches("images", config.shard_size)]
    splits += [split for split, _ in plan.batches("clips", config.clip_shard_size)]
    _set_worker(renderer, plan)
    shards: list[str] = []
    with atomic_dir(out, overwrite=overwrite) as tmp:
        renders = config.images * (1 + config.sources) + config.clips * config.clip_frames + config.identities
        bar = tqdm(total=renders, desc="rendering portraits", unit="img", disable=not progress)
        save_npz(tmp / "neutrals.npz", render_neutrals(renderer, plan))
        bar.update(config.identities)
        pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None
        try:
            results = pool.imap(_render_task, tasks) if pool else map(_render_task, tasks)
            counts = {"images": 0, "clips": 0}
            for (kind, indices), arrays in zip(tasks, results):
                name = f"{kind}-{counts[kind]:05d}.npz"
                counts[kind] += 1
                save_npz(tmp / name, arrays)
                shards.append(name)
                bar.update(len(indices) * (1 + config.sources if kind == "images" else config.clip_frames))
        finally:
            if pool is not None:
                pool.terminate()
        bar.close()
        manifest = {"format": FORMAT, "version": FORMAT_VERSION, "size": config.size,
                    "clip_size": list(config.clip_sizes) if config.clips else None, "images": config.images,
                    "identities": config.identities, "clips": config.clips, "labels": list(LABEL_NAMES),
                    "seed": int(seed), "split": plan.split, "shards": shards, "licence": LICENCE,
                    "shard_splits": dict(zip(shards, splits)), "clip_frames": config.clip_frames,
                    "camera_target": list(renderer.target), "config": {
                        "yaw": YAW, "pitch": PITCH, "roll": ROLL, "distance": DISTANCE, "supersample": SUPERSAMPLE,
                        "test_fraction": TEST_FRACTION, "shard_size": config.shard_size,
                        "clip_shard_size": config.clip_shard_size, "sources": config.sources}}
        write_json(tmp / "manifest.json", manifest)
    return Path(out)
