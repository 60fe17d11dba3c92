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

The **target mesh** the landmark motion is put on is resolved by ``face4d.decoder.target`` (a
mesh, a random person of the head model, else the head's mean face; here also the neutral face a
geometry-adaptive sequence was generated from, ``neutral_mesh``); the output options are checked by
``face4d.outputs``. Every check of the inputs runs before the slow steps, so a bad mesh or format
fails at once.
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

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from face4d.decoder.target import DEFAULT_METHOD, Target, resolve_target
from face4d.errors import Face4DError
from face4d.outputs import (check_disk_space, check_export_formats, check_names, check_out_dir, check_out_file,
                            check_preview_formats, check_preview_fps, check_preview_size, check_rig_target,
                            estimate_output_bytes, require_render, write_sample_folders, write_samples,
                            write_samples_manifest)

if TYPE_CHECKING:
    from face4d.data.interchange import LandmarkSequences

STARTS = ("auto", "target", "free")
MAX_SEED = 2**64 - 1
"""Seeds are 64-bit unsigned integers (what ``torch.Generator.manual_seed`` takes)."""
BATCH_FRAMES = 64 * 40
"""Sequence-frames sampled at once when ``generate_to`` / ``sample_to`` stream a large ``num`` to
disk: memory stays bounded whatever the request (64 sequences of 40 frames per batch)."""
BATCH_BYTES = 2**30
"""Most bytes of decoded meshes held at once while streaming."""
DECODE_FRAMES = 256
"""Frames decoded at once for a timeline's long sequences: the decoder's working memory stays bounded."""
TARGET_PASSES = 1
"""Sampling passes when a sequence starts from the target mesh's neutral face (``start="target"``,
and ``face4d demo``): one pass is Alg. 3's filling from that known frame; the later harmonising
passes pull the sequence back towards the neutral face (docs/tuning.md)."""


# ------------------------------------------------------------------------------------ results

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
    neutral: np.ndarray | None = None
    """The landmarks (68, 3) the motion is measured from when the sequences' first frame is not
    neutral (a timeline that starts on an expression); None: each sequence's own neutral frame."""

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
        rest = frames[neutral] if self.neutral is None else self.neutral
        return self.target.landmarks[None] + (frames - rest)


def sample_names(count: int, start: int = 0) -> list[str]:
    """``sample_000``, ``sample_001``, ...: the default folder names of ``export`` (from ``start``)."""
    return [f"sample_{i:03d}" for i in range(start, start + count)]


def check_seed(seed, name: str = "seed") -> int:
    """``seed`` as an int in [0, 2^64 - 1], else a one-line error giving that range."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise Face4DError(f"{name} must be an integer from 0 to 2^64 - 1 ({MAX_SEED}), got {seed!r}")
    return int(seed)


def _check_num(num) -> int:
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
        raise Face4DError(f"num must be a positive integer, got {num!r}")
    return int(num)


def batch_seed(seed: int, index: int) -> int:
    """The seed of batch ``index`` of a streamed request: ``seed`` itself for the first, so that a
    request that fits in one batch gives what ``generate`` gives; independent seeds after it."""
    return seed if index == 0 else int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0])


def batches(num: int, per_batch: int) -> list[tuple[int, int]]:
    """``(start, count)`` of each batch of ``num`` items, ``per_batch`` at most."""
    per_batch = max(1, per_batch)
    return [(start, min(per_batch, num - start)) for start in range(0, num, per_batch)]


def _timeline_frames(condition: dict, frames: int) -> int:
    """The frames per sequence of a request: a timeline's (checked, and kept in ``condition`` as a
    ``Timeline``) or ``frames``."""
    if condition.get("timeline") is None:
        return frames
    from face4d.timeline import timeline_arg

    condition["timeline"] = timeline_arg(condition["timeline"])
    return condition["timeline"].num_frames


def load_flame(flame_model, trust_pickle: bool = False):
    """A ``face4d.flame.FlameModel`` from a path (checked, one-line errors), or the one given."""
    from face4d.flame import FlameModel, require_smplx

    require_smplx()
    return flame_model if isinstance(flame_model, FlameModel) else FlameModel.load(flame_model, trust_pickle)


# ------------------------------------------------------------------------------------ pipeline

class Pipeline:
    """The landmark generator, the mesh decoder and the head model (loaded when the pipeline is made).

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
        """The checked mesh to animate: ``face4d.decoder.target.resolve_target`` on this pipeline's
        head, loading the decoder only for the learned method, which is the default when the
        pipeline was given a decoder (else ``blendshape``; ``rbf`` with ``landmark_ids``). A ``Target``
        given as ``mesh`` is returned as is."""
        if isinstance(mesh, Target):
            if identity_seed is not None or faces is not None or landmark_ids is not None:
                raise Face4DError("give a Target or the target options, not both")
            return mesh
        if identity_seed is not None:
            identity_seed = check_seed(identity_seed, "the identity seed")
        return resolve_target(mesh, identity_seed, faces, landmark_ids, method, head=self.head,
                              decoder=lambda: self.decoder,
                              default="learned" if self._decoder_given else DEFAULT_METHOD)

    # -- conditions -> landmark sequences -----------------------------------------------------------
    def sample(self, label: str | Sequence[str] | None = None, text: str | Sequence[str] | None = None,
               keyframes=None, known=None, neutral_mesh=None, neutral_landmarks=None, frames: int = 40,
               num: int = 1, seed: int = 0, sequence_type: str | None = None, passes: int | None = None,
               sequence_index: int = 0, sampling=None, progress: bool = False,
               intensity: float = 1.0, timeline=None) -> LandmarkSequences:
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

        * ``timeline``: a shot of timed keys (a ``face4d.timeline.Timeline``, its command-line string
          or a .json path; docs/timeline.md) on the person of ``neutral_mesh`` / ``neutral_landmarks``
          (default: the head model's mean face, a neutral face); ``num`` takes of it, each one sequence
          of the timeline's frames at its fps (``face4d.windows.sample_shot``). ``frames`` does not apply.
        """
        from face4d.data.interchange import LandmarkSequences, load_sequences
        from face4d.filling import parse_known

        seed = check_seed(seed)
        neutral = self.neutral_landmarks(neutral_mesh, neutral_landmarks)
        if timeline is not None:
            others = dict(label=label, text=text, keyframes=keyframes, known=known, sequence_type=sequence_type,
                          passes=passes)
            given = [name for name, value in others.items() if value is not None] + (["intensity"] * (intensity != 1.0))
            if given:
                raise Face4DError(f"a timeline holds its own conditions; it does not combine with {', '.join(given)} "
                                  "(give labels, texts, keyframes and intensities as keys)")
            return self.sample_timeline(timeline, neutral, num, seed, sampling, progress)
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

    def sample_timeline(self, timeline, neutral: np.ndarray | None = None, num: int = 1, seed: int = 0,
                        sampling=None, progress: bool = False) -> LandmarkSequences:
        """``num`` takes of a timeline (take k > 0 with ``batch_seed(seed, k)``) on the person of
        ``neutral`` (68, 3), default the head model's mean face: one sequence each, in a batch.

        Not the normaliser's mean face: that is the mean of every frame of the training data,
        expressions included, so it is not a neutral face, and expressions generated from it as
        one are read as other labels (docs/results.md, section timeline)."""
        from face4d.data.interchange import LandmarkSequences
        from face4d.timeline import timeline_arg
        from face4d.windows import sample_shot

        timeline = timeline_arg(timeline)
        num, seed = _check_num(num), check_seed(seed)
        neutral = self.head.landmark_neutral if neutral is None else neutral
        takes = [sample_shot(self.generator, timeline, neutral, batch_seed(seed, k), sampling, progress).sequences()
                 for k in range(num)]
        return LandmarkSequences.concatenate(takes)

    def neutral_landmarks(self, neutral_mesh=None, neutral_landmarks=None) -> np.ndarray | None:
        """The (68, 3) neutral landmarks of a geometry-adaptive request, or None."""
        from face4d.landmarks import check_neutral, neutral_landmarks_from_file, neutral_landmarks_from_mesh

        if neutral_mesh is not None and neutral_landmarks is not None:
            raise Face4DError("give a neutral mesh or neutral landmarks, not both")
        if isinstance(neutral_mesh, (str, os.PathLike)):
            return neutral_landmarks_from_mesh(neutral_mesh, self.head)
        if neutral_mesh is not None:
            vertices = np.asarray(neutral_mesh, np.float32)
            if vertices.shape != (self.head.num_vertices, 3):
                raise Face4DError(f"a neutral face mesh must have the head model's {self.head.num_vertices} "
                                  f"vertices, got shape {vertices.shape}")
            return check_neutral(vertices[self.head.landmark_ids], "neutral mesh")
        if isinstance(neutral_landmarks, (str, os.PathLike)):
            return neutral_landmarks_from_file(neutral_landmarks)
        if neutral_landmarks is not None:
            return check_neutral(neutral_landmarks, "neutral landmarks")
        return None

    # -- landmark sequences -> meshes -----------------------------------------------------------------
    def decode(self, seqs: LandmarkSequences, target: Target | None = None, names: Sequence[str] | None = None,
               progress: bool = False, neutral: np.ndarray | None = None, **target_options) -> PipelineResult:
        """Animate the target (a ``Target``, or ``target(**target_options)``) with every sequence of
        ``seqs``: each sequence's displacements from its neutral frame (the first, or the last of an
        E2N one) are decoded onto the mesh, so that frame gives the mesh back exactly. ``neutral``
        (68, 3): the landmarks to measure the displacements from instead (a timeline's person), the
        sequences then decoded ``DECODE_FRAMES`` frames at a time."""
        from tqdm.auto import tqdm

        from face4d.decoder.retarget import retarget

        if target is None:
            target = self.target(**target_options)
        elif target_options:
            raise Face4DError("give a Target or the target options, not both")
        names = check_names(sample_names(len(seqs)) if names is None else names, len(seqs))
        decoder = self.decoder if target.method == "learned" else None
        options = dict(method=target.method, landmark_ids=target.landmark_ids, faces=target.faces)
        if neutral is not None:
            rest = np.asarray(neutral, np.float32)[None]
            meshes = []
            for i in range(len(seqs)):
                frames = seqs.sequence(i)
                meshes.append(np.empty((len(frames), *target.vertices.shape), np.float32))
                for start in tqdm(range(0, len(frames), DECODE_FRAMES), desc="decoding meshes", unit="chunk",
                                  disable=not progress or len(frames) <= DECODE_FRAMES):
                    chunk = np.concatenate([rest, frames[start: start + DECODE_FRAMES]])
                    meshes[i][start: start + DECODE_FRAMES] = retarget(chunk, target.vertices, decoder, neutral_frame=0,
                                                                       **options)[1:]
            return PipelineResult(seqs, meshes, target, names, neutral=rest[0])
        meshes = [retarget(seqs, target.vertices, decoder, sequence_index=i, **options)
                  for i in tqdm(range(len(seqs)), desc="decoding meshes", unit="sequence",
                                disable=not progress or len(seqs) < 2)]
        return PipelineResult(seqs, meshes, target, names)

    def generate(self, label: str | Sequence[str] | None = None, text: str | Sequence[str] | None = None,
                 keyframes=None, known=None, neutral_mesh=None, neutral_landmarks=None, frames: int = 40,
                 num: int = 1, seed: int = 0, sequence_type: str | None = None, passes: int | None = None,
                 sequence_index: int = 0, mesh=None, identity_seed: int | None = None, faces=None,
                 landmark_ids=None, method: str | None = None, start: str = "auto", sampling=None,
                 names: Sequence[str] | None = None, progress: bool = False, intensity: float = 1.0,
                 flame_model=None, trust_pickle: bool = False, timeline=None) -> PipelineResult:
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

        ``timeline``: a shot of timed keys (see ``sample``) on the target mesh's own neutral face (or
        the ``neutral_mesh`` / ``neutral_landmarks`` given; the head model's mean face for the RBF
        fallback, whose mesh has its own units); its motion is decoded from that face, whatever the
        first key.
        """
        if start not in STARTS:
            raise Face4DError(f"unknown start {start!r}; use one of {', '.join(STARTS)}")
        if mesh is None and identity_seed is None and neutral_mesh is not None:
            mesh = neutral_mesh
        target = self.target(mesh, identity_seed, faces, landmark_ids, method)
        flame = None if flame_model is None else load_flame(flame_model, trust_pickle)
        if timeline is not None:
            from face4d.timeline import timeline_arg

            timeline = timeline_arg(timeline)  # checked before the slow steps
            neutral = self.neutral_landmarks(neutral_mesh, neutral_landmarks)
            if neutral is None:
                neutral = target.landmarks if target.method != "rbf" else self.head.landmark_neutral
            seqs = self.sample(label, text, keyframes, known, None, neutral, frames, num, seed, sequence_type, passes,
                               sequence_index, sampling, progress, intensity, timeline)
            result = self.decode(seqs, target, names=names, progress=progress, neutral=neutral)
            return result if flame is None else self.fit_flame(result, flame, progress=progress)
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
        from face4d.threads import torch_threads
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
        check_rig_target(result.target, formats, self.head)
        out_dir = check_out_dir(out_dir, overwrite)
        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            write_samples(result, tmp, formats, fps, progress, self.head)
            self._write_previews(result, tmp, preview, fps, overlay_landmarks, size, progress)
        return out_dir

    def _write_previews(self, result: PipelineResult, out_dir: Path, preview: Sequence[str], fps: float,
                        overlay_landmarks: bool, size: int, progress: bool) -> None:
        """``out_dir/preview.<fmt>`` for each format of ``preview``, from one rendering."""
        from render import save_animation

        if preview:
            # An MP4 alone is streamed to its writer frame by frame (a long shot is never held whole).
            frames = self.render_frames(result, overlay_landmarks=overlay_landmarks, size=size, progress=progress,
                                        stream=tuple(preview) == ("mp4",))
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
        frames = _timeline_frames(condition, frames)
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
                    landmark_ids=None, method: str | None = None, neural: dict | None = None,
                    **condition) -> tuple[Target, int]:
        """``generate`` then ``export``, streamed for any ``num``: the samples are generated and written
        in batches (``BATCH_FRAMES`` sequence-frames and ``BATCH_BYTES`` of meshes at most; batch k > 0
        with ``batch_seed(seed, k)``), so memory stays bounded, after checking that the disk can take
        the whole output. Same layout and options as ``export``; a preview shows at most
        ``MAX_PREVIEW_SAMPLES`` samples. ``neural``: ``neural_video``'s options (``identity_image``,
        ``model``, ``steps``, ``seed``) to also write ``OUT/neural.<fmt>`` (the preview's first format):
        the first sample's mesh preview beside its neural video. Returns the target mesh and the frame
        count."""
        from tqdm.auto import tqdm

        from face4d.data.interchange import LandmarkSequences
        from meshops.atomic import atomic_dir

        formats, preview = check_export_formats(formats), check_preview_formats(preview)
        num, seed = _check_num(num), check_seed(seed)
        frames = _timeline_frames(condition, frames)
        if neural is not None and not preview:
            raise Face4DError("the neural video is written beside the mesh preview: give a preview format (mp4 or gif)")
        if preview:
            check_preview_size(num, frames, size)
        out_dir = check_out_dir(out_dir, overwrite)
        if mesh is None and identity_seed is None:
            mesh = condition.get("neutral_mesh")  # what generate does
        target = self.target(mesh, identity_seed, faces, landmark_ids, method)
        check_rig_target(target, formats, self.head)  # before sampling
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
                if neural is not None:
                    first = PipelineResult(whole.landmarks.select(0), whole.meshes[:1], target, whole.names[:1])
                    tiles = self.render_frames(first, overlay_landmarks=overlay_landmarks, size=size, stream=True)
                    self.neural_video(first.meshes[0], len(first.meshes[0]), path=tmp / f"neural.{preview[0]}",
                                      fps=fps, beside=tiles, progress=progress, **neural)
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
                      view: str = "front", progress: bool = False, stream: bool = False) -> np.ndarray:
        """The preview's frames (F, H, W, 3) uint8: one ``size``-pixel tile per sample, captioned, one
        camera framing the face over all frames. ``reference``: another result on the same target
        shown beside each sample (sample i next to reference i, or next to the only one).
        ``overlay_landmarks``: the driving landmarks (``PipelineResult.driving_landmarks``) as dots.
        ``stream``: an iterator of the (H, W, 3) frames instead, rendered as they are taken
        (``render.grid_frames``), for ``render.save_animation`` to write an MP4 as they come."""
        from render import face_box, grid_frames, render_grid

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
            return (grid_frames if stream else render_grid)(
                sequences, result.faces, labels=captions, columns=columns, size=(size, size), view=view,
                landmarks=marks if overlay_landmarks else None, bounds=bounds, progress=progress)
        except ValueError as exc:  # a bad view name, mostly
            raise Face4DError(f"cannot render the preview: {exc}") from None

    def render_neural(self, landmarks, identity_image: np.ndarray, identity_landmarks: np.ndarray,
                      model: str | os.PathLike | None = None, path: str | os.PathLike | None = None, steps: int = 25,
                      seed: int = 0, fps: float | None = None, overwrite: bool = False,
                      progress: bool = False, precision: str = "auto") -> np.ndarray:
        """A person drawn making a landmark sequence, frame by frame, by a CCFExp model (``face4d train
        neural-faces``; None: the shipped one): ``landmarks`` a ``LandmarkSequences`` (its first sequence) or (F, 68, 3) frames in
        cm, projected onto the identity image (``face4d.neural.project_sequence``: the pinhole camera
        that puts its first frame on ``identity_landmarks``, head pose included); ``identity_image``
        (S, S, 3) uint8 at the model's size; ``precision`` the UNet's arithmetic ("auto": bfloat16 on a
        CPU that has it natively, "float32", "bfloat16"). Returns the frames (F, S, S, 3) uint8 and
        writes them to ``path`` (.mp4/.gif) when given."""
        from face4d.neural import neural_errors, neural_model, project_sequence

        model = neural_model(model, "ccfexp", "model")
        frames, seq_fps = (landmarks, None) if isinstance(landmarks, np.ndarray) else (
            landmarks.landmarks[0, :landmarks.lengths[0]], landmarks.fps)
        if path is not None:
            path = check_out_file(path, (".mp4", ".gif"), overwrite)
        with neural_errors():
            from render.neural.ccfexp_model import CCFExp
            from render.neural.data import check_landmarks, to_uint8

            identity_landmarks = check_landmarks(identity_landmarks, "identity landmarks")
            net = CCFExp.from_pretrained(model, self.device)
            targets = project_sequence(frames, identity_landmarks, size=net.config.size)
            images = to_uint8(net.generate(identity_image, identity_landmarks, targets, steps=steps, seed=seed,
                                           progress=progress, precision=precision))
        if path is not None:
            from render.preview import save_animation

            fps = check_preview_fps([path.suffix], fps or seq_fps or 30.0)
            save_animation(path, images, fps=fps, overwrite=overwrite)
        return images

    def mesh_frames(self, landmarks, target: Target | None = None) -> tuple[int, Iterator[np.ndarray]]:
        """The frame count and an iterator of the meshes (V, 3) of ``landmarks`` (a ``LandmarkSequences``,
        its first sequence, or (F, 68, 3) frames in cm) on ``target`` (default: ``target()``), decoded
        ``DECODE_FRAMES`` frames at a time from the sequence's neutral frame, so that a long timeline never
        sits in memory as meshes."""
        from face4d.decoder.retarget import retarget, sequence_frames

        target = self.target() if target is None else target
        frames, neutral = sequence_frames(landmarks)
        decoder = self.decoder if target.method == "learned" else None
        options = dict(method=target.method, landmark_ids=target.landmark_ids, faces=target.faces)

        def meshes() -> Iterator[np.ndarray]:
            for start in range(0, len(frames), DECODE_FRAMES):
                chunk = np.concatenate([frames[neutral][None], frames[start:start + DECODE_FRAMES]])
                yield from retarget(chunk, target.vertices, decoder, neutral_frame=0, **options)[1:]

        return len(frames), meshes()

    def neural_video(self, meshes: Iterable[np.ndarray], count: int, identity_image: np.ndarray, model,
                     path: str | os.PathLike, fps: float = 30.0, steps: int | None = None, seed: int = 0,
                     beside: Iterable[np.ndarray] | None = None, overwrite: bool = False,
                     progress: bool = False) -> Path:
        """A person's video drawn by the recurrent model (``face4d train neural-video``; ``model`` a
        directory or a loaded ``FacEnhance``) over ``count`` mesh frames (V, 3) of the head model's
        topology: each is rendered at the model's low size, frontal and coloured after
        ``identity_image`` (``face4d.neural.low_res_frames``), and the model draws the high-res frame
        from it, the identity image and its own previous frame. Written to ``path`` (.mp4/.gif) as the
        frames come, one in memory at a time (an MP4), with a progress bar and its time estimate;
        each frame beside the matching frame of ``beside`` (e.g. the mesh preview) or, without it,
        beside its low-res input. Returns the path."""
        from tqdm.auto import tqdm

        import torch

        from face4d.neural import load_video_model, low_res_frames, neural_errors
        from render.preview import save_animation

        path = check_out_file(path, (".mp4", ".gif"), overwrite)
        fps = check_preview_fps([path.suffix], fps)
        net = model if isinstance(model, torch.nn.Module) else load_video_model(model, identity_image, self.device, steps)
        with neural_errors():
            shown: list[np.ndarray] = []

            def checked() -> Iterator[np.ndarray]:
                for vertices in meshes:
                    if len(vertices) != self.head.num_vertices:
                        raise Face4DError(f"the neural video renders the head model's mesh ({self.head.num_vertices} "
                                          f"vertices); the target has {len(vertices)}")
                    yield vertices

            def lows() -> Iterator[np.ndarray]:
                for low in low_res_frames(checked(), self.head, identity_image, net.config.low_size):
                    shown.append(low)
                    yield low

            left = iter(beside) if beside is not None else None
            bar = tqdm(total=count, desc="neural video", unit="frame", disable=not progress)

            def frames() -> Iterator[np.ndarray]:
                for frame in net.generate(lows(), identity_image, steps, seed):
                    low = shown.pop(0)
                    bar.update()
                    yield side_by_side(next(left) if left is not None else low, frame)

            try:
                save_animation(path, frames(), fps=fps, overwrite=overwrite)
            finally:
                bar.close()
        return path

    def render_neural_video(self, landmarks, identity_image: np.ndarray, model, path: str | os.PathLike,
                            target: Target | None = None, fps: float | None = None, **options) -> Path:
        """``neural_video`` of a landmark sequence (a ``LandmarkSequences``, its first sequence, or
        (F, 68, 3) frames in cm) decoded on ``target`` as it goes (``mesh_frames``), in bounded memory
        however long; each frame beside the low-res mesh render it was drawn from."""
        count, meshes = self.mesh_frames(landmarks, target)
        seq_fps = None if isinstance(landmarks, np.ndarray) else landmarks.fps
        return self.neural_video(meshes, count, identity_image, model, path, fps or seq_fps or 30.0, **options)

    def edit(self, image: np.ndarray, label: str, model: str | os.PathLike | None = None,
             path: str | os.PathLike | None = None, steps: int = 25, strength: float = 1.0,
             guidance: float = 2.0, seed: int = 0, overwrite: bool = False, precision: str = "auto") -> np.ndarray:
        """``image`` (S, S, 3) uint8 edited to ``label`` by a label + VAE editing model (``face4d train
        neural-edit``; the shipped one by default); ``strength`` < 1 starts from the noised image (SDEdit),
        ``guidance`` > 1 is classifier-free guidance on the label (1: none); ``precision`` as in
        ``render_neural``. Returns the (S, S, 3) uint8 result, written to ``path`` when given."""
        from face4d.neural import neural_errors, neural_model

        model = neural_model(model, "edit", "--model")
        if path is not None:
            path = check_out_file(path, (".png", ".jpg", ".jpeg"), overwrite)
        with neural_errors():
            from render.neural.conditional_diffusion_model import EditModel
            from render.neural.data import to_uint8

            net = EditModel.from_pretrained(model, self.device)
            edited = to_uint8(net.edit(image, label, steps=steps, strength=strength, guidance=guidance, seed=seed,
                                       precision=precision))[0]
        if path is not None:
            from render.preview import save_image

            save_image(path, edited, overwrite=overwrite)
        return edited

    def edit_region(self, image: np.ndarray, landmarks: np.ndarray, text: str, region: str = "both",
                    model: str | os.PathLike | None = None, path: str | os.PathLike | None = None,
                    strength: int = 250, steps: int = 25, guidance: float = 5.0, seed: int = 0,
                    feather: float | None = None, overwrite: bool = False, precision: str = "auto") -> np.ndarray:
        """``image`` (H, W, 3) uint8 with its (68, 2) pixel ``landmarks``, its eyes, mouth or both
        re-drawn to show ``text`` by local expression diffusion (``face4d train neural-region``; the
        shipped model by default): the crops are noised to step ``strength`` of 500 (the paper's t_i),
        denoised under the text and pasted back with a feathered border (``feather`` 0: hard paste);
        ``guidance`` is classifier-free guidance on the text (1: none, the paper's sampling; 5, the
        default, reaches the expression at the paper's t_i: docs/neural.md); ``precision`` as in ``edit``. Returns the (H, W, 3) uint8 result, written to ``path`` when given."""
        from face4d.data.region_texts import embed
        from face4d.neural import neural_errors, neural_model

        regions = {"eyes": ("eyes",), "mouth": ("mouth",), "both": ("eyes", "mouth")}
        if region not in regions:
            raise Face4DError(f"unknown region {region!r}; use eyes, mouth or both")
        model = neural_model(model, "region", "--model")
        if path is not None:
            path = check_out_file(path, (".png", ".jpg", ".jpeg"), overwrite)
        with neural_errors():
            from render.neural.data import to_uint8
            from render.neural.local_expression_model import RegionDiffusion

            net = RegionDiffusion.from_pretrained(model, self.device)
            vector = embed([text], net.config.text_encoder)[0]
            edited = to_uint8(net.edit(image, landmarks, regions[region], vector, strength=strength, steps=steps,
                                       guidance=guidance, seed=seed, feather=feather,
                                       precision=precision))[0]
        if path is not None:
            from render.preview import save_image

            save_image(path, edited, overwrite=overwrite)
        return edited

def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Two (H, W, 3) uint8 frames in one row, the lower one scaled up (nearest, an integer factor) or
    padded to the other's height."""
    small, big = sorted((left, right), key=len)
    factor = max(1, len(big) // len(small))
    small = small.repeat(factor, 0).repeat(factor, 1)[:len(big)]
    small = np.pad(small, ((0, len(big) - len(small)), (0, 0), (0, 0)))
    pair = (small, big) if len(left) <= len(right) else (big, small)
    return np.concatenate(pair, axis=1)
