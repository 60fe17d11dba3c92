"""One pipeline from a condition to animated meshes, exports and a preview (``face4d generate / render / demo``).

::

    condition              ->  landmark sequences  ->  meshes on a target  ->  exports          ->  preview
    label | text |             (LandmarkGenerator)     (blendshape path,       (meshops.export)     (render)
    keyframes | neutral face                           learned decoder or
                                                       RBF fallback)

From Python::

    from face4d.pipeline import Pipeline
    pipe = Pipeline.from_default()
    result = pipe.generate(label="mouth_open", frames=40, num=2, seed=0, mesh="neutral.obj")
    pipe.export(result, "out/mouth_open", formats=("obj", "pc2", "usd"))
    pipe.render(result, "out/mouth_open.mp4")

The **target mesh** the landmark motion is put on is, in this order: ``mesh`` (an OBJ/PLY path or a
(V, 3) vertex array), a random person of the head model (``identity_seed``: identity weights
~ N(0, I) from that seed), the neutral face a geometry-adaptive sequence was generated from
(``neutral_mesh``), else the head model's mean face. A mesh in the head model's topology (the ICT
head's) is animated by the blendshape path (the head's expression weights solved from the
landmarks, ``method="blendshape"``, see docs/decoder.md) or the learned decoder
(``method="learned"``); any other needs the vertex ids of its 68 landmarks
(``landmark_ids``) and goes through the non-learned RBF fallback (``face4d.decoder.rbf``).
Every check of the inputs runs before the slow steps, so a bad mesh or format fails at once.
With a label on a mesh of the head model's topology the sequences start from that mesh's own neutral
face (``start``, see ``Pipeline.generate``), so the motion goes from that face at rest to the
expression.

**Output layout** (``export``, and ``face4d generate`` with meshes): one folder per sample,
``sample_000/`` ... (or named by the caller, as ``face4d demo`` does by label), each holding
``meshops.export.export_sequence``'s files (``neutral.obj``, the asked formats, ``export.json``)
plus ``landmarks.npz``, the sample's landmark sequence in the interchange format, and
``samples.json`` at the top, describing every sample. With a FLAME fit (``flame_model``), each
sample folder also holds ``flame/``: the same exports on FLAME's topology (its ``neutral.obj`` is the
fitted person at rest) and ``flame_params.npz`` (``face4d.flame``). The whole directory is written
under a temporary sibling name and renamed when complete; a non-empty one is refused without
``overwrite``.
"""
from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from face4d.errors import Face4DError
from meshops.atomic import check_dir_target

if TYPE_CHECKING:
    from face4d.data.interchange import LandmarkSequences

DEFAULT_EXPORTS = ("pc2", "mdd", "usd")
"""Without a choice, the compact formats: two point caches and a USD stage (each one file per
sample) plus ``neutral.obj``, which every sample folder holds. ``usd`` is left out of the default
when ``usd-core`` is not installed (asked for explicitly, it is an error that names the extra)."""
PREVIEW_FORMATS = ("mp4", "gif")
STARTS = ("auto", "target", "free")
TARGET_PASSES = 1
"""Sampling passes when a sequence starts from the target mesh's neutral face (``start="target"``,
and ``face4d demo``): one pass is Alg. 3's filling from that known frame. In renders of all labels
over several seeds it gave motions as clear as the paper's five passes or clearer (the later
harmonising passes pull the sequence back towards the neutral face), at a fifth of the cost."""
DEMO_LABELS = ("high_smile", "mouth_open", "sadness", "bareteeth")
DEMO_SEED = 3
MAX_SEED = 2**64 - 1
"""Seeds are 64-bit unsigned integers (what ``torch.Generator.manual_seed`` takes)."""
MAX_TILE = 2048
"""Largest preview tile, in pixels; with ``MAX_PREVIEW_BYTES`` it keeps a request like ``--size 100000``
from asking for tens of GiB."""
MAX_PREVIEW_BYTES = 4 * 2**30
"""Largest preview, as its frames held in memory (frames x tiles x size^2 x 3 bytes)."""
MAX_PREVIEW_SAMPLES = 64
"""Most samples a preview grid shows; a larger ``num`` with a preview is refused before any work."""
BATCH_FRAMES = 64 * 40
"""Sequence-frames sampled at once when ``generate_to`` / ``sample_to`` stream a large ``num`` to
disk: memory stays bounded whatever the request (64 sequences of 40 frames per batch)."""
BATCH_BYTES = 2**30
"""Most bytes of decoded meshes held at once while streaming."""


# ------------------------------------------------------------------------------------ results

@dataclass
class Target:
    """The mesh a landmark sequence animates: ``vertices`` (V, 3) float32 in centimetres, ``faces``
    (M, 3) int64, the vertex ids of its 68 landmarks, the ``method`` that decodes onto it
    (``blendshape``, ``learned`` or ``rbf``) and a ``name`` for messages and captions."""

    vertices: np.ndarray
    faces: np.ndarray
    landmark_ids: np.ndarray
    method: str
    name: str

    @property
    def landmarks(self) -> np.ndarray:
        """The mesh's own 68 landmarks (68, 3)."""
        return self.vertices[self.landmark_ids]


@dataclass
class PipelineResult:
    """What ``Pipeline.generate`` (or ``decode``) returns.

    ``landmarks``: the landmark sequences (interchange ``LandmarkSequences``, the generated person's
    face, centimetres); ``meshes``: one (F_i, V, 3) float32 array per sample, the target mesh
    animated by that sequence (``np.stack(result.meshes)`` is (num, F, V, 3) when all lengths are
    equal, which generation guarantees); ``target``: the mesh they animate (its ``faces`` are the
    meshes' triangles); ``names``: a folder name per sample for ``export``; ``flame``: with a FLAME
    model (``Pipeline.fit_flame``), one ``face4d.flame.FlameFit`` per sample, else None.
    """

    landmarks: LandmarkSequences
    meshes: list[np.ndarray]
    target: Target
    names: list[str]
    flame: list | None = None

    def __len__(self) -> int:
        return len(self.meshes)

    @property
    def faces(self) -> np.ndarray:
        return self.target.faces

    @property
    def fps(self) -> float:
        return self.landmarks.fps

    @property
    def captions(self) -> list[str]:
        """A caption per sample: its label, else its text, else its folder name."""
        seqs = self.landmarks
        texts = seqs.texts if seqs.texts is not None else [""] * len(seqs)
        return [str(label or text or name) for label, text, name in zip(seqs.labels, texts, self.names)]

    def driving_landmarks(self, i: int) -> np.ndarray:
        """The landmark motion of sample ``i`` carried onto the target: the target's landmarks plus
        the sequence's displacements from its neutral frame, (F_i, 68, 3). What the decoder is asked
        to follow; drawn by ``render(..., overlay_landmarks=True)``."""
        from face4d.decoder.retarget import sequence_frames

        frames, neutral = sequence_frames(self.landmarks, sequence_index=i)
        return self.target.landmarks[None] + (frames - frames[neutral])


def sample_names(count: int, start: int = 0) -> list[str]:
    """``sample_000``, ``sample_001``, ...: the default folder names of ``export`` (from ``start``)."""
    return [f"sample_{i:03d}" for i in range(start, start + count)]


# ------------------------------------------------------------------------------ input checks

def check_export_formats(formats: str | Sequence[str] | None) -> tuple[str, ...]:
    """Export formats as a tuple: a comma-separated string or a list; None gives ``DEFAULT_EXPORTS``
    (without ``usd`` when usd-core is missing). An unknown format, or ``usd`` without usd-core, is a
    one-line ``Face4DError``."""
    from meshops.export import check_formats

    if formats is None:
        return tuple(f for f in DEFAULT_EXPORTS if f != "usd" or usd_available())
    if isinstance(formats, str):
        formats = [part.strip() for part in formats.split(",") if part.strip()]
    try:
        formats = check_formats(formats)
    except ValueError as exc:
        raise Face4DError(str(exc)) from None
    if ("usd" in formats or "usd-skel" in formats) and not usd_available():
        raise Face4DError("the usd export needs usd-core: pip install 'face4d[usd]' (or leave usd out of the "
                          "export formats)")
    return formats


def load_flame(flame_model, trust_pickle: bool = False):
    """A ``face4d.flame.FlameModel`` from a path (checked, one-line errors), or the one given."""
    from face4d.flame import FlameModel, require_smplx

    require_smplx()
    return flame_model if isinstance(flame_model, FlameModel) else FlameModel.load(flame_model, trust_pickle)


def usd_available() -> bool:
    return importlib.util.find_spec("pxr") is not None


def check_preview_formats(formats: str | Sequence[str] | None) -> tuple[str, ...]:
    """Preview formats (``mp4``, ``gif``) from a comma-separated string or a list; ``none`` or an
    empty value gives none. Asking for one without pyvista is an error naming the extra."""
    if formats is None:
        return ()
    if isinstance(formats, str):
        formats = [part.strip().lower().lstrip(".") for part in formats.split(",") if part.strip()]
    formats = [f for f in dict.fromkeys(formats) if f != "none"]
    bad = [f for f in formats if f not in PREVIEW_FORMATS]
    if bad:
        raise Face4DError(f"unknown preview format {bad[0]!r}; use {', '.join(PREVIEW_FORMATS)} (or none)")
    if formats:
        require_render()
    return tuple(formats)


def check_fps(fps: float) -> float:
    if not (isinstance(fps, (int, float)) and np.isfinite(fps) and fps > 0):
        raise Face4DError(f"fps must be a positive number, got {fps}")
    return float(fps)


def check_preview_fps(formats: Sequence[str], fps: float) -> float:
    """``fps`` if every preview format can play at it (GIF: 100 fps at most, ``render.preview.gif_delays``)."""
    from render.preview import check_animation_fps

    fps = check_fps(fps)
    try:
        for fmt in formats:
            check_animation_fps(f".{fmt.lstrip('.')}", fps)
    except ValueError as exc:
        raise Face4DError(str(exc)) from None
    return fps


def check_seed(seed, name: str = "seed") -> int:
    """``seed`` as an int in [0, 2^64 - 1], else a one-line error giving that range."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise Face4DError(f"{name} must be an integer from 0 to 2^64 - 1 ({MAX_SEED}), got {seed!r}")
    return int(seed)


def check_names(names: Sequence[str], count: int) -> list[str]:
    """``count`` distinct sample names, each a plain folder name (``meshops.atomic.check_name``), so
    that ``export`` can never write outside its output directory."""
    from meshops.atomic import check_name

    names = [str(n) for n in names]
    if len(names) != count or len(set(names)) != len(names):
        raise Face4DError(f"need {count} distinct sample names, got {names}")
    try:
        return [check_name(n, "sample name") for n in names]
    except ValueError as exc:
        raise Face4DError(str(exc)) from None


def batch_seed(seed: int, index: int) -> int:
    """The seed of batch ``index`` of a streamed request: ``seed`` itself for the first, so that a
    request that fits in one batch gives what ``generate`` gives; independent seeds after it."""
    return seed if index == 0 else int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0])


def batches(num: int, per_batch: int) -> list[tuple[int, int]]:
    """``(start, count)`` of each batch of ``num`` items, ``per_batch`` at most."""
    per_batch = max(1, per_batch)
    return [(start, min(per_batch, num - start)) for start in range(0, num, per_batch)]


# bytes per vertex and frame of each export, and per vertex / triangle of an OBJ or PLY mesh
_FRAME_BYTES = {"pc2": 12, "mdd": 12, "usd": 12}
_OBJ_BYTES, _PLY_BYTES = (30, 20), (12, 13)
_LANDMARK_FILE_BYTES = 68 * 3 * 4, 2048  # per frame, per file


def estimate_output_bytes(num: int, frames: int, formats: Sequence[str] = (), vertices: int = 0,
                          triangles: int = 0) -> int:
    """A lower estimate of what ``num`` samples of ``frames`` frames take on disk: their landmark
    files, and with ``formats`` their sample folders (``neutral.obj`` and the exports)."""
    per_sample = frames * _LANDMARK_FILE_BYTES[0] + _LANDMARK_FILE_BYTES[1]
    if formats:
        obj = _OBJ_BYTES[0] * vertices + _OBJ_BYTES[1] * triangles
        per_sample += obj + frames * sum(_FRAME_BYTES.get(f, 0) * vertices for f in formats)
        per_sample += frames * (obj * ("obj" in formats) + (_PLY_BYTES[0] * vertices + _PLY_BYTES[1] * triangles)
                                * ("ply" in formats))
    return num * per_sample


def check_disk_space(path: str | os.PathLike, needed: int) -> None:
    """Refuse, before any work, an output of ``needed`` bytes that the disk holding ``path`` cannot take."""
    import shutil

    parent = Path(path).absolute()
    while not parent.exists():
        parent = parent.parent
    free = shutil.disk_usage(parent).free
    if needed > free:
        raise Face4DError(f"the output would take about {_size(needed)}, but {parent} has only {_size(free)} free; "
                          f"ask for fewer samples or frames")


def _size(count: float) -> str:
    units = ("bytes", "KiB", "MiB", "GiB", "TiB")
    k = 0
    while count >= 1024 and k < len(units) - 1:
        count, k = count / 1024, k + 1
    return f"{count:.0f} bytes" if k == 0 else f"{count:.1f} {units[k]}"


def require_render() -> None:
    if importlib.util.find_spec("pyvista") is None:
        raise Face4DError("previews need pyvista: pip install 'face4d[render]'")


def check_out_dir(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse, before any work, an output directory that cannot be written: a non-empty one without
    ``overwrite`` (``FileExistsError``), a file, or a place without write permission."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise Face4DError(f"{path} exists and is not a directory")
    check_dir_target(path, overwrite)
    _check_writable_parent(path)
    return path


def check_out_file(path: str | os.PathLike, suffixes: Sequence[str], overwrite: bool = False) -> Path:
    """The same for an output file, which must also end in one of ``suffixes`` (``.mp4``, ...)."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise Face4DError(f"{path}: unsupported output {path.suffix or '(no suffix)'!r}; use {', '.join(suffixes)}")
    if path.is_dir():
        raise Face4DError(f"{path} is a directory; give a file name such as {path / ('preview' + suffixes[0])}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it")
    _check_writable_parent(path)
    return path


def _check_writable_parent(path: Path) -> None:
    """The nearest existing ancestor of ``path`` must be a directory we may create entries in."""
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise Face4DError(f"cannot write {path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise Face4DError(f"cannot write {path}: no permission to write in {parent}")


# ------------------------------------------------------------------------------------ pipeline

class Pipeline:
    """The landmark generator, the mesh decoder and the head model, loaded on first use.

    ``model``: a landmark model bundle directory (``face4d train``), None for the embedded default;
    ``decoder``: a decoder model directory (``face4d train decoder``), None for the shipped one.
    Either may also be given already loaded (``generator=`` a ``LandmarkGenerator``, ``decoder=`` a
    module). Neither is loaded until needed: ``render`` of an existing file never loads the
    generator, and the RBF fallback never loads the decoder.
    """

    def __init__(self, model: str | os.PathLike | None = None, decoder=None, device: str = "cpu",
                 generator=None, head=None):
        from face4d.training import resolve_device
        from meshops.head import HeadModel

        self.model = model
        self.device = str(resolve_device(device))
        self._generator = generator
        self._decoder = decoder if decoder is None or hasattr(decoder, "topology") else None
        self._decoder_dir = None if self._decoder is not None else decoder
        self._decoder_given = decoder is not None  # a decoder given is the default method, as on the CLI
        self.head = HeadModel.load() if head is None else head

    @classmethod
    def from_default(cls, device: str = "cpu") -> "Pipeline":
        """The embedded landmark models, the shipped decoder and the ICT head."""
        return cls(device=device)

    @classmethod
    def from_pretrained(cls, model: str | os.PathLike | None = None, decoder: str | os.PathLike | None = None,
                        device: str = "cpu") -> "Pipeline":
        """Trained models from directories; None keeps the default of that part."""
        return cls(model, decoder, device)

    @property
    def generator(self):
        """The ``LandmarkGenerator`` (loaded on first use)."""
        if self._generator is None:
            from face4d.generate import LandmarkGenerator
            self._generator = LandmarkGenerator.from_pretrained(self.model, device=self.device)
        return self._generator

    @property
    def decoder(self):
        """The learned mesh decoder (loaded on first use)."""
        if self._decoder is None:
            from face4d.decoder.retarget import load_decoder
            self._decoder = load_decoder(self._decoder_dir, device=self.device)
        return self._decoder

    # -- the target mesh -------------------------------------------------------------------------
    def target(self, mesh=None, identity_seed: int | None = None, faces: np.ndarray | None = None,
               landmark_ids=None, method: str | None = None) -> Target:
        """Resolve and check the mesh to animate (see the module docstring).

        ``mesh``: an .obj/.ply path or a (V, 3) vertex array (with ``faces``, default the head's
        when V matches); ``identity_seed``: a random person of the head model instead;
        ``landmark_ids``: (68,) vertex ids (or a .npy/.txt file of them) of a mesh in another
        topology, for the RBF fallback; ``method``: ``blendshape``, ``learned`` or ``rbf`` (default:
        ``rbf`` when ``landmark_ids`` are given, ``learned`` when the pipeline was given a decoder,
        else ``blendshape``). A ``Target`` given as ``mesh`` is returned as is.
        """
        from face4d.decoder.rbf import check_landmark_ids
        from face4d.decoder.retarget import DEFAULT_METHOD, METHODS, check_units, load_landmark_ids
        from face4d.decoder.topology import DecoderTopology

        if isinstance(mesh, Target):
            if identity_seed is not None or faces is not None or landmark_ids is not None:
                raise Face4DError("give a Target or the target options, not both")
            return mesh
        if identity_seed is not None:
            identity_seed = check_seed(identity_seed, "the identity seed")
        method = method or ("rbf" if landmark_ids is not None else "learned" if self._decoder_given
                            else DEFAULT_METHOD)
        if method not in METHODS:
            raise Face4DError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
        if method != "rbf" and landmark_ids is not None:
            raise Face4DError(f"landmark ids only apply to the RBF fallback (--method rbf): the {method} method "
                              "knows its topology's landmarks")
        if mesh is not None and identity_seed is not None:
            raise Face4DError("give a target mesh or an identity seed, not both")
        head = self.head
        if mesh is None:
            if identity_seed is None:
                vertices, name = head.neutral, "the default head"
            else:
                weights = np.random.default_rng(int(identity_seed)).standard_normal(head.num_identity)
                vertices, name = head.vertices(weights.astype(np.float32)), f"identity seed {identity_seed}"
            vertices, faces = np.asarray(vertices, np.float32), head.faces
        elif isinstance(mesh, (str, os.PathLike)):
            if faces is not None:
                raise Face4DError("faces are read from the mesh file; pass them only with a vertex array")
            from meshops.io import load_mesh

            loaded = load_mesh(mesh)
            vertices, faces, name = np.asarray(loaded.vertices, np.float32), np.asarray(loaded.faces), str(mesh)
        else:
            vertices, name = np.asarray(mesh, np.float32), "the target mesh"
            if vertices.ndim != 2 or vertices.shape[1] != 3 or not np.isfinite(vertices).all():
                raise Face4DError(f"the target mesh must be a finite (V, 3) vertex array, got shape {vertices.shape}")
            if faces is None:
                if len(vertices) != head.num_vertices:
                    raise Face4DError(f"the target mesh has {len(vertices)} vertices, not the head model's "
                                      f"{head.num_vertices}: pass its faces too")
                faces = head.faces
        faces = _integer_faces(faces, name)
        if method != "rbf":
            topology = self.decoder.topology if method == "learned" else DecoderTopology.from_head(head)
            vertices = topology.check_mesh(vertices, faces, name)
            ids = topology.landmark_ids
        elif landmark_ids is None:
            if len(vertices) != head.num_vertices or not np.array_equal(faces, head.faces):
                raise Face4DError(f"{name}: has {len(vertices)} vertices and {len(faces)} triangles, not the head "
                                  f"model's topology; give the vertex ids of its 68 landmarks (--landmark-ids ids.npy)")
            ids = head.landmark_ids
        elif isinstance(landmark_ids, (str, os.PathLike)):
            ids = load_landmark_ids(landmark_ids, len(vertices))
        else:
            ids = check_landmark_ids(landmark_ids, len(vertices))
        if len(faces) == 0 or faces.min() < 0 or faces.max() >= len(vertices):
            raise Face4DError(f"{name}: faces must index its {len(vertices)} vertices")
        check_units(head.landmark_neutral, vertices[ids])
        return Target(vertices, faces, ids, method, name)

    # -- conditions -> landmark sequences -----------------------------------------------------------
    def sample(self, label: str | Sequence[str] | None = None, text: str | Sequence[str] | None = None,
               keyframes=None, known=None, neutral_mesh=None, neutral_landmarks=None, frames: int = 40,
               num: int = 1, seed: int = 0, sequence_type: str | None = None, passes: int | None = None,
               sequence_index: int = 0, sampling=None, progress: bool = False,
               intensity: float = 1.0) -> LandmarkSequences:
        """The landmark step alone: sequences for one condition.

        * ``label`` / ``text``: label- or text-controlled generation (``LandmarkGenerator.generate``);
          a list of labels gives one sequence per entry.
        * ``keyframes`` (a sequence file, ``LandmarkSequences`` or (F, 68, 3) array) with ``known``
          (a spec such as ``"0-9,30-39"`` or a (F,) bool mask): expression filling (Alg. 3),
          optionally steered by ``label``; ``sequence_index`` picks the sequence of a batch file.
        * ``neutral_mesh`` (a path or (V, 3) vertices in the head's topology) or ``neutral_landmarks``
          ((68, 3), or an interchange/.npy/.txt file): geometry-adaptive generation (Alg. 4) of that
          person, optionally with ``label`` or ``text``; ``sequence_type`` N2E (default) starts from the face,
          E2N ends on it; ``passes`` harmonising runs (default 5).

        ``intensity`` (0 to 1.5) scales how far a generated expression goes from the neutral face
        (``face4d.generate.scale_intensity``); keyframes are kept as given, so it does not apply there.
        """
        from face4d.data.interchange import LandmarkSequences, load_sequences
        from face4d.filling import parse_known

        seed = check_seed(seed)
        neutral = self.neutral_landmarks(neutral_mesh, neutral_landmarks)
        if keyframes is not None:
            if neutral is not None or text is not None:
                raise Face4DError("keyframes combine with a label only, not with a text or a neutral face")
            if known is None:
                raise Face4DError("keyframes need the known frames (--known, e.g. 0-9,30-39)")
            if intensity != 1.0:
                raise Face4DError("--intensity applies to generation from a label, a text or a neutral face; "
                                  "keyframes are kept as given")
            seqs = load_sequences(keyframes) if isinstance(keyframes, (str, os.PathLike)) else keyframes
            if isinstance(seqs, LandmarkSequences):
                if not 0 <= sequence_index < len(seqs):
                    raise Face4DError(f"--sequence-index {sequence_index} is out of range: the keyframes hold "
                                      f"{len(seqs)} sequence(s) (indices 0-{len(seqs) - 1})")
                seqs = seqs.select(sequence_index)
                length = int(seqs.lengths[0])
            else:
                length = np.shape(seqs)[0]
            known = parse_known(known, length) if isinstance(known, str) else known
            return self.generator.fill(seqs, known, num=num, seed=seed, label=label, sampling=sampling,
                                       progress=progress, passes=1 if passes is None else passes)
        if known is not None:
            raise Face4DError("known frames only apply to keyframes (--keyframes)")
        if neutral is not None:
            return self.generator.generate_from_neutral(
                neutral, frames=frames, sequence_type=sequence_type or "N2E", label=label, num=num, seed=seed,
                passes=5 if passes is None else passes, sampling=sampling, progress=progress, text=text,
                intensity=intensity)
        if passes is not None:
            raise Face4DError("--passes only applies to generation from a neutral face (--neutral-mesh or "
                              "--neutral-landmarks) or from keyframes (--keyframes)")
        return self.generator.generate(label, frames=frames, num=num, seed=seed, sequence_type=sequence_type,
                                       sampling=sampling, progress=progress, text=text, intensity=intensity)

    def neutral_landmarks(self, neutral_mesh=None, neutral_landmarks=None) -> np.ndarray | None:
        """The (68, 3) neutral landmarks of a geometry-adaptive request, or None."""
        from face4d.filling import _checked_neutral, neutral_landmarks_from_file, neutral_landmarks_from_mesh

        if neutral_mesh is not None and neutral_landmarks is not None:
            raise Face4DError("give a neutral mesh or neutral landmarks, not both")
        if isinstance(neutral_mesh, (str, os.PathLike)):
            return neutral_landmarks_from_mesh(neutral_mesh, self.head)
        if neutral_mesh is not None:
            vertices = np.asarray(neutral_mesh, np.float32)
            if vertices.shape != (self.head.num_vertices, 3):
                raise Face4DError(f"a neutral face mesh must have the head model's {self.head.num_vertices} "
                                  f"vertices, got shape {vertices.shape}")
            return _checked_neutral(vertices[self.head.landmark_ids], "neutral mesh")
        if isinstance(neutral_landmarks, (str, os.PathLike)):
            return neutral_landmarks_from_file(neutral_landmarks)
        if neutral_landmarks is not None:
            return _checked_neutral(neutral_landmarks, "neutral landmarks")
        return None

    # -- landmark sequences -> meshes -----------------------------------------------------------------
    def decode(self, seqs: LandmarkSequences, target: Target | None = None, names: Sequence[str] | None = None,
               progress: bool = False, **target_options) -> PipelineResult:
        """Animate the target (a ``Target``, or ``target(**target_options)``) with every sequence of
        ``seqs``: each sequence's displacements from its neutral frame (the first, or the last of an
        E2N one) are decoded onto the mesh, so that frame gives the mesh back exactly."""
        from tqdm.auto import tqdm

        from face4d.decoder.retarget import retarget

        if target is None:
            target = self.target(**target_options)
        elif target_options:
            raise Face4DError("give a Target or the target options, not both")
        names = check_names(sample_names(len(seqs)) if names is None else names, len(seqs))
        decoder = self.decoder if target.method == "learned" else None
        meshes = [retarget(seqs, target.vertices, decoder, method=target.method, landmark_ids=target.landmark_ids,
                           faces=target.faces, sequence_index=i)
                  for i in tqdm(range(len(seqs)), desc="decoding meshes", unit="sequence",
                                disable=not progress or len(seqs) < 2)]
        return PipelineResult(seqs, meshes, target, names)

    def generate(self, label: str | Sequence[str] | None = None, text: str | Sequence[str] | None = None,
                 keyframes=None, known=None, neutral_mesh=None, neutral_landmarks=None, frames: int = 40,
                 num: int = 1, seed: int = 0, sequence_type: str | None = None, passes: int | None = None,
                 sequence_index: int = 0, mesh=None, identity_seed: int | None = None, faces=None,
                 landmark_ids=None, method: str | None = None, start: str = "auto", sampling=None,
                 names: Sequence[str] | None = None, progress: bool = False, intensity: float = 1.0,
                 flame_model=None, trust_pickle: bool = False) -> PipelineResult:
        """Condition -> landmark sequences (``sample``) -> meshes on the target (``decode``).

        The condition's arguments are ``sample``'s, the target's ``target``'s (without ``mesh`` or
        ``identity_seed``, a ``neutral_mesh`` is also the target). The target is checked first, so a
        bad mesh fails before sampling. ``sampling``: a ``face4d.generate.SamplingConfig``.

        ``start``: where the sequences start. ``target``: from the target mesh's own neutral face
        (geometry-adaptive generation from its landmarks, ``TARGET_PASSES`` pass(es) unless
        ``passes`` says otherwise; N2E, or ending there with ``sequence_type="E2N"``), so the motion
        is the whole way from rest to the expression on that face. ``free``: plain label- or
        text-controlled generation, where the model also chooses the person and the first frame,
        which often already shows part of the expression (the decoded motion is taken from it).
        ``auto`` (default): ``target`` for a label, a text or no condition on a mesh of the decoder's
        topology, ``free`` otherwise (keyframes, a given neutral face, the RBF fallback).

        ``flame_model``: a FLAME model (path, or a loaded ``face4d.flame.FlameModel``) also fitted to
        every generated sequence (``fit_flame``); it is loaded and checked before sampling.
        """
        if start not in STARTS:
            raise Face4DError(f"unknown start {start!r}; use one of {', '.join(STARTS)}")
        if mesh is None and identity_seed is None and neutral_mesh is not None:
            mesh = neutral_mesh
        target = self.target(mesh, identity_seed, faces, landmark_ids, method)
        flame = None if flame_model is None else load_flame(flame_model, trust_pickle)
        conditioned = keyframes is not None or neutral_mesh is not None or neutral_landmarks is not None
        if start == "target" and conditioned:
            raise Face4DError("starting from the target mesh (--start target) combines with a label or a text, not "
                              "with keyframes or a neutral face")
        if start == "target" or (start == "auto" and not conditioned and target.method != "rbf"):
            neutral_landmarks = target.landmarks
            passes = TARGET_PASSES if passes is None else passes
        seqs = self.sample(label, text, keyframes, known, neutral_mesh, neutral_landmarks, frames, num, seed,
                           sequence_type, passes, sequence_index, sampling, progress, intensity)
        result = self.decode(seqs, target, names=names, progress=progress)
        return result if flame is None else self.fit_flame(result, flame, progress=progress)

    @staticmethod
    def fit_flame(result: PipelineResult, flame_model, trust_pickle: bool = False, config=None,
                  progress: bool = False) -> PipelineResult:
        """Fit a FLAME model (path or ``FlameModel``) to every landmark sequence of ``result``
        (``face4d.flame.fit_flame``: shape on the sequence's neutral frame, then the motion), and
        keep the fits in ``result.flame``; ``export`` then writes them next to the other meshes.
        ``config``: a ``face4d.flame.FlameFitConfig``."""
        from tqdm.auto import tqdm

        from face4d.decoder.retarget import sequence_frames
        from face4d.flame import fit_flame

        model = load_flame(flame_model, trust_pickle)
        fits = []
        with torch_threads(1):  # small tensors, as in sampling: one thread is fastest
            for i in tqdm(range(len(result)), desc="fitting FLAME", unit="sequence", disable=not progress):
                frames, neutral = sequence_frames(result.landmarks, sequence_index=i)
                fits.append(fit_flame(model, frames, neutral, config))
        result.flame = fits
        return result

    # -- exports and previews ---------------------------------------------------------------------------
    def export(self, result: PipelineResult, out_dir: str | os.PathLike,
               formats: str | Sequence[str] | None = None, fps: float | None = None, overwrite: bool = False,
               preview: str | Sequence[str] | None = None, overlay_landmarks: bool = False, size: int = 256,
               progress: bool = False) -> Path:
        """Write every sample of ``result`` into ``out_dir`` (layout in the module docstring), and
        with ``preview`` (``mp4``, ``gif`` or both) ``preview.mp4`` / ``preview.gif``, the grid of
        ``render_frames``; all of it atomically. ``formats``: any of ``obj, ply, pc2, mdd, usd``
        (default ``DEFAULT_EXPORTS``); ``fps``: default the sequences'. Every option is checked
        before anything is written."""
        from meshops.atomic import atomic_dir
        formats = check_export_formats(formats)
        preview = check_preview_formats(preview)
        fps = check_preview_fps(preview, result.fps if fps is None else fps)
        self.check_rig_target(result.target, formats)
        out_dir = check_out_dir(out_dir, overwrite)
        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            write_samples(result, tmp, formats, fps, progress, self.head)
            self._write_previews(result, tmp, preview, fps, overlay_landmarks, size, progress)
        return out_dir

    def check_rig_target(self, target: Target, formats: Sequence[str]) -> None:
        """The rig formats (glTF, ARKit CSV, weights, UsdSkel) need a target in the head model's
        topology, whose blendshapes they animate: a one-line error otherwise."""
        from meshops.export import RIG_FORMATS

        wanted = [f for f in formats if f in RIG_FORMATS]
        head = self.head
        if wanted and (len(target.vertices) != head.num_vertices or not np.array_equal(target.faces, head.faces)):
            raise Face4DError(f"the {', '.join(wanted)} export animates the head model's blendshapes, so it needs a "
                              f"mesh in its topology ({head.num_vertices} vertices); {target.name} is not: export "
                              f"its vertex animation instead: use pc2 or mdd")

    def _write_previews(self, result: PipelineResult, out_dir: Path, preview: Sequence[str], fps: float,
                        overlay_landmarks: bool, size: int, progress: bool) -> None:
        """``out_dir/preview.<fmt>`` for each format of ``preview``, from one rendering."""
        from render import save_animation

        if preview:
            frames = self.render_frames(result, overlay_landmarks=overlay_landmarks, size=size, progress=progress)
            for fmt in preview:
                save_animation(out_dir / f"preview.{fmt}", frames, fps=fps)

    def sample_to(self, out_dir: str | os.PathLike, num: int = 1, seed: int = 0, frames: int = 40,
                  overwrite: bool = False, progress: bool = False, **condition) -> int:
        """``sample`` streamed to disk, for any ``num``: ``out_dir/sequence_000.npz``, ... (one interchange
        file per sequence), sampled ``BATCH_FRAMES`` sequence-frames at a time (batch k > 0 with
        ``batch_seed(seed, k)``), after checking that the disk can take them. Returns the frame count."""
        from tqdm.auto import tqdm

        from face4d.data.interchange import save_sequences
        from meshops.atomic import atomic_dir

        num, seed = _check_num(num), check_seed(seed)
        out_dir = check_out_dir(out_dir, overwrite)
        check_disk_space(out_dir, estimate_output_bytes(num, frames))
        plan = batches(num, BATCH_FRAMES // max(frames, 1))
        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            for k, (start, count) in enumerate(tqdm(plan, desc="sampling", unit="batch",
                                                    disable=not progress or len(plan) < 2)):
                seqs = self.sample(num=count, seed=batch_seed(seed, k), frames=frames,
                                   progress=progress and len(plan) == 1, **condition)
                for i in range(len(seqs)):
                    save_sequences(tmp / f"sequence_{start + i:03d}.npz", seqs.select(i))
        return seqs.num_frames

    def generate_to(self, out_dir: str | os.PathLike, formats: str | Sequence[str] | None = None,
                    preview: str | Sequence[str] | None = None, overwrite: bool = False, num: int = 1,
                    seed: int = 0, frames: int = 40, overlay_landmarks: bool = False, size: int = 256,
                    progress: bool = False, mesh=None, identity_seed: int | None = None, faces=None,
                    landmark_ids=None, method: str | None = None, **condition) -> tuple[Target, int]:
        """``generate`` then ``export``, streamed for any ``num``: the samples are generated and written
        in batches (``BATCH_FRAMES`` sequence-frames and ``BATCH_BYTES`` of meshes at most; batch k > 0
        with ``batch_seed(seed, k)``), so memory stays bounded, after checking that the disk can take
        the whole output. Same layout and options as ``export``; a preview shows at most
        ``MAX_PREVIEW_SAMPLES`` samples. Returns the target mesh and the frame count."""
        from tqdm.auto import tqdm

        from face4d.data.interchange import LandmarkSequences
        from meshops.atomic import atomic_dir

        formats, preview = check_export_formats(formats), check_preview_formats(preview)
        num, seed = _check_num(num), check_seed(seed)
        if preview:
            check_preview_size(num, frames, size)
        out_dir = check_out_dir(out_dir, overwrite)
        if mesh is None and identity_seed is None:
            mesh = condition.get("neutral_mesh")  # what generate does
        target = self.target(mesh, identity_seed, faces, landmark_ids, method)
        self.check_rig_target(target, formats)  # before sampling
        vertices = len(target.vertices)
        check_disk_space(out_dir, estimate_output_bytes(num, frames, formats, vertices, len(target.faces)))
        plan = batches(num, min(BATCH_FRAMES // max(frames, 1), BATCH_BYTES // (12 * vertices * max(frames, 1))))
        records, kept, fps = [], [], None
        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            for k, (start, count) in enumerate(tqdm(plan, desc="generating", unit="batch",
                                                    disable=not progress or len(plan) < 2)):
                single = progress and len(plan) == 1
                result = self.generate(num=count, seed=batch_seed(seed, k), frames=frames, mesh=target,
                                       names=sample_names(count, start), progress=single, **condition)
                fps = check_preview_fps(preview, result.fps)
                records += write_sample_folders(result, tmp, formats, fps, single, self.head)
                if preview:
                    kept.append(result)
            write_samples_manifest(target, tmp, formats, fps, records)
            if preview:
                whole = PipelineResult(LandmarkSequences.concatenate([r.landmarks for r in kept]),
                                       [m for r in kept for m in r.meshes], target, [n for r in kept for n in r.names])
                self._write_previews(whole, tmp, preview, fps, overlay_landmarks, size, progress)
        return target, len(result.meshes[0])

    def render(self, result: PipelineResult, path: str | os.PathLike | Sequence[str | os.PathLike],
               reference: PipelineResult | None = None, overlay_landmarks: bool = False, size: int = 256,
               columns: int | None = None, view: str = "front", fps: float | None = None,
               overwrite: bool = False, progress: bool = False) -> list[Path]:
        """Render ``result`` as a captioned grid of its samples into ``path`` (.mp4 or .gif; a list of
        paths writes each from the same frames). See ``render_frames`` for the options."""
        from render import save_animation

        paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        paths = [check_out_file(p, (".mp4", ".gif"), overwrite) for p in paths]
        fps = check_preview_fps([p.suffix for p in paths], result.fps if fps is None else fps)
        frames = self.render_frames(result, reference, overlay_landmarks, size, columns, view, progress)
        return [save_animation(p, frames, fps=fps, overwrite=overwrite) for p in paths]

    @staticmethod
    def render_frames(result: PipelineResult, reference: PipelineResult | None = None,
                      overlay_landmarks: bool = False, size: int = 256, columns: int | None = None,
                      view: str = "front", progress: bool = False) -> np.ndarray:
        """The preview's frames (F, H, W, 3) uint8: one ``size``-pixel tile per sample, captioned, one
        camera framing the face over all frames. ``reference``: another result on the same target
        shown beside each sample (sample i next to reference i, or next to the only one).
        ``overlay_landmarks``: the driving landmarks (``PipelineResult.driving_landmarks``) as dots."""
        from render import render_grid

        require_render()
        check_preview_size(len(result) * (1 if reference is None else 2), max(len(m) for m in result.meshes), size)
        sequences, captions = list(result.meshes), result.captions
        marks = [result.driving_landmarks(i) for i in range(len(result))]
        if reference is not None:
            if not np.array_equal(reference.faces, result.faces) or len(reference) not in (1, len(result)):
                raise Face4DError("the reference must be decoded on the same mesh and hold one sequence or as many "
                                  f"as the samples ({len(result)}), got {len(reference)}")
            pick = [0 if len(reference) == 1 else i for i in range(len(result))]
            sequences = [s for i, j in enumerate(pick) for s in (sequences[i], reference.meshes[j])]
            captions = [c for i, j in enumerate(pick) for c in (captions[i], f"reference: {reference.captions[j]}")]
            marks = [m for i, j in enumerate(pick) for m in (marks[i], reference.driving_landmarks(j))]
            columns = 2
        bounds = face_box(np.concatenate([result.target.landmarks[None], *marks]).reshape(-1, 3))
        try:
            return render_grid(sequences, result.faces, labels=captions, columns=columns, size=(size, size),
                               view=view, landmarks=marks if overlay_landmarks else None, bounds=bounds,
                               progress=progress)
        except ValueError as exc:  # a bad view name, mostly
            raise Face4DError(f"cannot render the preview: {exc}") from None


@contextmanager
def torch_threads(count: int):
    """Run torch on ``count`` intra-op threads, then restore the setting. The landmark models are
    small: sampling one sequence at a time is fastest on one thread, and on a 2-core machine with
    anything else running, two threads fighting over the cores made the demo's sampling 5x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def face_box(landmarks: np.ndarray) -> np.ndarray:
    """The box (6,) a preview frames: around the face's landmark points (N, 3), widened a little
    and raised to the forehead (the landmarks stop at the eyebrows)."""
    lo, hi = landmarks.min(0), landmarks.max(0)
    width, height = hi[0] - lo[0], hi[1] - lo[1]
    return np.array([lo[0] - 0.06 * width, hi[0] + 0.06 * width, lo[1] - 0.1 * height, hi[1] + 0.35 * height,
                     lo[2], hi[2]])


def rig_animation(head, meshes: np.ndarray, neutral: np.ndarray):
    """The blendshape animation of a mesh sequence on the head's topology: weights in [0, 1] and
    head pose solved from the meshes (``meshops.blendshapes.fit_head``), exact for the blendshape
    path's meshes, a close fit of the learned decoder's (docs/results.md, section rig)."""
    from meshops.blendshapes import fit_head
    from meshops.rig import RigAnimation

    fit = fit_head(head, meshes, neutral)
    return RigAnimation(head.expression_names, head.expression_basis, fit.weights, fit.head_pose, fit.pivot)


def _check_num(num) -> int:
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
        raise Face4DError(f"num must be a positive integer, got {num!r}")
    return int(num)


def check_preview_size(tiles: int, frames: int, size: int) -> None:
    """Refuse a preview that would be too large to hold: tile ``size`` out of [32, MAX_TILE], more than
    ``MAX_PREVIEW_SAMPLES`` tiles, or frames over ``MAX_PREVIEW_BYTES``."""
    if not 32 <= size <= MAX_TILE:
        raise Face4DError(f"the preview tile size must be from 32 to {MAX_TILE} pixels, got {size}")
    if tiles > MAX_PREVIEW_SAMPLES:
        raise Face4DError(f"a preview shows at most {MAX_PREVIEW_SAMPLES} samples, got {tiles}; leave the preview out "
                          f"or ask for fewer samples")
    held = frames * tiles * size * size * 3
    if held > MAX_PREVIEW_BYTES:
        raise Face4DError(f"a preview of {tiles} tile(s) of {size} pixels would take {_size(held)} of memory, "
                          f"more than {_size(MAX_PREVIEW_BYTES)}; use a smaller size or fewer samples")


def _integer_faces(faces, name: str) -> np.ndarray:
    """Triangles as int64; float values that are not whole numbers are refused instead of truncated."""
    faces = np.asarray(faces)
    if faces.dtype.kind not in "iu":
        if faces.dtype.kind != "f" or not np.isfinite(faces).all() or (faces != np.round(faces)).any():
            raise Face4DError(f"{name}: faces must be integer vertex indices, got {faces.dtype} values")
    return faces.astype(np.int64)


def write_samples(result: PipelineResult, out_dir: Path, formats: Sequence[str], fps: float,
                  progress: bool = False, head=None) -> None:
    """The per-sample folders and ``samples.json`` of ``export``, into an existing (temporary)
    directory; the caller makes the whole directory appear at once. With a rig format (``head``
    needed), each sample's weights and head pose are solved and also stored in its ``landmarks.npz``
    (the interchange format's ``expression_weights`` and ``head_pose``)."""
    records = write_sample_folders(result, out_dir, formats, fps, progress, head)
    write_samples_manifest(result.target, out_dir, formats, fps, records)


def write_samples_manifest(target: Target, out_dir: Path, formats: Sequence[str], fps: float,
                           records: list[dict]) -> None:
    """``samples.json``: the target, the formats and one record per sample folder."""
    manifest = {"target": target.name, "method": target.method, "fps": fps,
                "vertices": int(len(target.vertices)), "formats": list(formats), "samples": records}
    (out_dir / "samples.json").write_text(json.dumps(manifest, indent=1) + "\n")


def write_sample_folders(result: PipelineResult, out_dir: Path, formats: Sequence[str], fps: float,
                         progress: bool = False, head=None) -> list[dict]:
    """One folder per sample of ``result`` in ``out_dir`` (``head``: for the rig formats); returns their
    ``samples.json`` records."""
    from dataclasses import replace

    from tqdm.auto import tqdm

    from face4d.data.interchange import save_sequences
    from meshops.export import RIG_FORMATS, export_sequence

    check_names(result.names, len(result))
    seqs, records = result.landmarks, []
    for i in tqdm(range(len(result)), desc="exporting", unit="sample", disable=not progress):
        folder = out_dir / result.names[i]
        rig = (rig_animation(head, result.meshes[i], result.target.vertices)
               if any(f in RIG_FORMATS for f in formats) else None)
        export_sequence(folder, result.meshes[i], result.faces, formats=formats, fps=fps,
                        neutral=result.target.vertices, progress=False, rig=rig)
        sequence = seqs.select(i)
        if rig is not None:
            sequence = replace(sequence, expression_weights=rig.weights[None], head_pose=rig.head_pose[None])
        save_sequences(folder / "landmarks.npz", sequence)
        records.append({"name": result.names[i], "caption": result.captions[i], "label": str(seqs.labels[i]),
                        "text": "" if seqs.texts is None else str(seqs.texts[i]), "type": str(seqs.types[i]),
                        "frames": int(seqs.lengths[i])})
        if result.flame is not None:
            fit = result.flame[i]
            # the rig formats are the head's blendshapes; FLAME's own rig is flame_params.npz
            mesh_formats = [f for f in formats if f not in RIG_FORMATS] or ["pc2"]
            export_sequence(folder / "flame", fit.meshes, fit.faces, formats=mesh_formats, fps=fps, neutral=fit.rest,
                            progress=False)
            fit.save(folder / "flame" / "flame_params.npz", fps)
            records[-1]["flame"] = {"landmark_error_mm": round(float(fit.landmark_error_mm.mean()), 4),
                                    "fit_seconds": round(fit.seconds, 2)}
    return records



def run_demo(out_dir: str | os.PathLike, labels: Sequence[str] = DEMO_LABELS, seed: int = DEMO_SEED,
             frames: int = 40, formats: str | Sequence[str] | None = None,
             preview: str | Sequence[str] | None = PREVIEW_FORMATS, size: int = 256, overwrite: bool = False,
             progress: bool = True, pipeline: Pipeline | None = None, sampling=None) -> PipelineResult:
    """``face4d demo``: one sequence per label on the default head, exported into ``out_dir/<label>/``,
    with a captioned preview grid (``preview.mp4`` and ``preview.gif``).

    Each sequence starts from the head's own neutral face (``Pipeline.generate(start="target")``:
    geometry-adaptive generation with one pass, i.e. filling from a known neutral first frame,
    guided towards the label), so frame 0 is exactly the head at rest and the decoder moves it from
    there. Same seed, same output.
    """
    from tqdm.auto import tqdm

    from face4d.data.interchange import LandmarkSequences
    from face4d.data.labels import get_label

    labels = [get_label(name).name for name in labels]
    if not labels or len(set(labels)) != len(labels):
        raise Face4DError(f"the demo needs distinct labels, got {labels}")
    check_export_formats(formats)
    if check_preview_formats(preview):
        check_preview_size(len(labels), frames, size)
    check_out_dir(out_dir, overwrite)
    pipe = Pipeline.from_default() if pipeline is None else pipeline
    target = pipe.target()
    with torch_threads(1):
        parts = [pipe.sample(label=name, neutral_landmarks=target.landmarks, frames=frames, seed=seed,
                             passes=TARGET_PASSES, sampling=sampling)  # what generate(start="target") does
                 for name in tqdm(labels, desc="generating", unit="label", disable=not progress)]
    result = pipe.decode(LandmarkSequences.concatenate(parts), target, names=labels, progress=progress)
    pipe.export(result, out_dir, formats, overwrite=overwrite, preview=preview, size=size, progress=progress)
    return result
