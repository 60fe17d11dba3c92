"""Retargeting: a landmark sequence -> a mesh sequence on any neutral mesh (the API behind ``face4d retarget``).

The sequence's motion is its landmark displacements from its neutral frame,
``dL_f = L_f - L_n``; the neutral mesh ``M`` supplies the face they move: ``M_f = M + dM_f`` with
``dM_f`` from the learned decoder (meshes in the head model's topology) or from the RBF
interpolation of ``dL_f`` around the mesh's own landmark vertices ``M[landmark_ids]`` (any mesh).
The sequence's person need not be the mesh's: only the displacements cross over, which is what
retargeting is. Both must be in the head model's units (centimetres) and frame (the head upright,
facing +z, as the ICT head); the landmark sequence must carry no rigid head motion, or it would be
read as expression.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from face4d.checkpoint import CONFIG_FILE, load_weights, read_model_config
from face4d.data.interchange import NUM_LANDMARKS, LandmarkSequences, load_sequences
from face4d.decoder.model import DECODER_KINDS
from face4d.decoder.rbf import check_landmark_ids, rbf_displacements
from face4d.decoder.topology import DecoderTopology
from face4d.decoder.training import neutral_frames
from face4d.errors import Face4DError
from meshops.blendshapes import fit_head
from meshops.head import HeadModel

METHODS = ("blendshape", "learned", "rbf")
DEFAULT_METHOD = "blendshape"
"""On the head model's topology; why it beats the learned decoder there: docs/decoder.md."""
DECODE_BOUNDS = (-1.0, 1.0)
"""Weight range of the blendshape path: the data generator's, which the landmark models learned
(``cheeks_in`` pulls ``cheekPuff`` negative); the rig exports bound theirs to a rig's [0, 1]."""
EXPORTS = ("ply", "obj")


def default_decoder_dir() -> Path:
    """Where the shipped decoder for the ICT topology lives: ``face4d/weights/default/decoder``."""
    return Path(str(resources.files("face4d") / "weights" / "default" / "decoder"))


def load_decoder(directory: str | os.PathLike | None = None, topology: DecoderTopology | None = None,
                 device: str | torch.device = "cpu") -> torch.nn.Module:
    """The decoder of a model directory (``face4d train decoder --out``), in eval mode; the shipped
    one by default. ``topology`` defaults to the ICT head's; a checkpoint trained on another is refused."""
    if directory is None:
        directory = default_decoder_dir()
        if not (directory / CONFIG_FILE).is_file():
            raise Face4DError(f"no default decoder is installed ({directory}); train one with 'face4d train "
                              f"decoder' and pass its directory (--model), or use --method rbf")
    directory = Path(directory)
    config = read_model_config(directory)
    kind = config["kind"]
    if kind not in DECODER_KINDS:
        raise Face4DError(f"{directory}: holds a {kind!r} model, not a mesh decoder ({', '.join(DECODER_KINDS)})")
    config_cls, model_cls = DECODER_KINDS[kind]
    topology = DecoderTopology.from_head() if topology is None else topology
    try:
        model_config = config_cls.from_dict(config["model_config"])
    except (Face4DError, TypeError) as exc:
        raise Face4DError(f"{directory / CONFIG_FILE}: invalid decoder config ({exc})") from None
    topology.check_fingerprint(model_config.topology, str(directory))
    return load_weights(model_cls(model_config, topology), directory, device)


@torch.no_grad()
def decode_displacements(model: torch.nn.Module, neutral_vertices: np.ndarray, delta_landmarks: np.ndarray,
                         chunk: int = 64) -> np.ndarray:
    """``dM`` (F, V, 3) of one neutral mesh (V, 3) for landmark displacements (F, 68, 3): the mesh
    is encoded once, the frames decoded ``chunk`` at a time."""
    device = next(iter(model.parameters())).device
    neutral = torch.as_tensor(np.asarray(neutral_vertices, np.float32), device=device)[None]
    delta = torch.as_tensor(np.asarray(delta_landmarks, np.float32), device=device)
    context = model.encode(neutral)
    parts = [model.decode(context, delta[None, start:start + chunk])[0].cpu().numpy()
             for start in range(0, len(delta), chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, *neutral.shape[1:]), np.float32)


def blendshape_displacements(head: HeadModel, delta_landmarks: np.ndarray, smoothness: float = 0.0) -> np.ndarray:
    """``dM`` (F, V, 3) of the blendshape path: the head's expression weights solved from the landmark
    displacements ``dL`` (F, 68, 3) (``meshops.blendshapes``, within ``DECODE_BOUNDS``, no pose: like the
    decoder, it reads the sequence as expression only), applied to the full basis. A frame with
    ``dL = 0`` solves to zero weights, so the neutral frame gives the mesh back exactly."""
    delta = np.asarray(delta_landmarks, np.float32)
    fit = fit_head(head, head.landmark_neutral + delta, head.landmark_neutral, smoothness, solve_pose=False,
                   bounds=DECODE_BOUNDS)
    return head.vertices(expression_weights=fit.weights) - head.neutral


# ------------------------------------------------------------------------------------ inputs

def _check_landmark_frames(landmarks: np.ndarray, source: str) -> np.ndarray:
    landmarks = np.asarray(landmarks)
    if landmarks.ndim != 3 or landmarks.shape[1:] != (NUM_LANDMARKS, 3) or len(landmarks) < 1 \
            or not np.issubdtype(landmarks.dtype, np.number):
        raise Face4DError(f"{source}: a landmark sequence must be a (F, {NUM_LANDMARKS}, 3) array of numbers with "
                          f"F >= 1, got {landmarks.dtype} {landmarks.shape}")
    if not np.isfinite(landmarks).all():
        raise Face4DError(f"{source}: landmarks contain NaN or infinity")
    return landmarks.astype(np.float32)


def sequence_frames(landmarks: LandmarkSequences | np.ndarray, neutral_frame: int | None = None,
                    sequence_index: int = 0, source: str = "landmarks") -> tuple[np.ndarray, int]:
    """The landmark frames (F, 68, 3) of one sequence and the index of its neutral frame.

    ``neutral_frame`` None picks the sequence's own: the last valid frame of an ``E2N`` sequence,
    else the first. Negative indices count from the end.
    """
    if isinstance(landmarks, LandmarkSequences):
        if not 0 <= sequence_index < len(landmarks):
            raise Face4DError(f"{source}: sequence index {sequence_index} is out of range (it holds "
                              f"{len(landmarks)} sequence(s))")
        default = int(neutral_frames(landmarks)[sequence_index])
        frames = _check_landmark_frames(landmarks.sequence(sequence_index), source)
    else:
        default = 0
        frames = _check_landmark_frames(landmarks, source)
    f = len(frames)
    index = default if neutral_frame is None else int(neutral_frame)
    if not -f <= index < f:
        raise Face4DError(f"{source}: neutral frame {index} is out of range for a sequence of {f} frames")
    return frames, index % f


def load_landmark_file(path: str | os.PathLike, sequence_index: int = 0) -> LandmarkSequences:
    """A landmark file for retargeting: ``.npz`` in the interchange format or ``.npy`` (F, 68, 3);
    returned as a batch (``sequence_index`` is checked by ``sequence_frames``)."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        return load_sequences(path)
    if path.suffix.lower() != ".npy":
        raise Face4DError(f"{path}: unsupported landmark file; use .npz (interchange format) or .npy (F, 68, 3)")
    if not path.is_file():
        raise Face4DError(f"{path}: no such file")
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise Face4DError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    frames = _check_landmark_frames(array, str(path))
    return LandmarkSequences(frames[None], [len(frames)], [""], [""])


def load_landmark_ids(path: str | os.PathLike, num_vertices: int) -> np.ndarray:
    """68 landmark vertex ids from ``.npy`` or ``.txt`` (whitespace/comma separated), checked against the mesh."""
    path = Path(path)
    if not path.is_file():
        raise Face4DError(f"{path}: no such file")
    try:
        if path.suffix.lower() == ".npy":
            ids = np.load(path, allow_pickle=False)
        else:
            text = path.read_text()
            ids = np.loadtxt(path, delimiter="," if "," in text else None, ndmin=1)
            if np.issubdtype(ids.dtype, np.floating) and np.all(ids == np.round(ids)):
                ids = ids.astype(np.int64)
    except Exception as exc:
        raise Face4DError(f"{path}: cannot read landmark ids ({type(exc).__name__}: {exc})") from None
    ids = np.asarray(ids)
    if ids.ndim == 2 and 1 in ids.shape:  # a row or a column
        ids = ids.reshape(-1)
    return check_landmark_ids(ids, num_vertices, str(path))


def _spread(points: np.ndarray) -> float:
    points = np.asarray(points, np.float64)
    return float(np.sqrt(((points - points.mean(0)) ** 2).sum(-1).mean()))


def check_units(sequence_neutral: np.ndarray, mesh_landmarks: np.ndarray) -> None:
    """Refuse a landmark sequence whose face is of a clearly different size than the mesh's, the
    usual sign of metres or millimetres against centimetres."""
    size, ref = _spread(sequence_neutral), _spread(mesh_landmarks)
    if not ref / 3 <= size <= 3 * ref:
        raise Face4DError(f"the landmark sequence's face spans {size:.3g} units around its centre and the mesh's "
                          f"landmarks {ref:.3g}: they are in different units (both must be in the head model's "
                          f"centimetres; e.g. multiply metres by 100, divide millimetres by 10)")


# ------------------------------------------------------------------------------------ retarget

def retarget(landmarks: LandmarkSequences | np.ndarray, neutral_mesh_vertices: np.ndarray,
             decoder: torch.nn.Module | str | os.PathLike | None = None, neutral_frame: int | None = None,
             method: str | None = None, landmark_ids: np.ndarray | None = None, faces: np.ndarray | None = None,
             sequence_index: int = 0, smoothness: float = 0.0) -> np.ndarray:
    """Animate ``neutral_mesh_vertices`` (V, 3) with a landmark sequence: meshes (F, V, 3), float32.

    ``landmarks``: a ``LandmarkSequences`` (its sequence ``sequence_index``) or an array (F, 68, 3),
    in the head model's units. ``dL_f = L_f - L_{neutral_frame}``; ``neutral_frame`` defaults to the
    sequence's own neutral frame (the first, or the last of an ``E2N`` sequence; 0 for an array).
    The sequence's identity need not match the mesh's: the displacements are retargeted.

    ``method`` None is ``learned`` when a ``decoder`` is given, else ``blendshape``.
    ``method="blendshape"``: the head model's expression weights solved from the landmarks,
    applied to a mesh of the head's topology (``blendshape_displacements``; ``smoothness`` weighs a
    temporal-smoothness term of that solve). ``method="learned"``: ``decoder`` (a loaded decoder, a
    model directory, or None for the shipped one) on a mesh of its topology; ``faces``, when given,
    are checked too (with either method). ``method="rbf"``: the
    non-learned interpolation (``face4d.decoder.rbf``), for any mesh given its ``landmark_ids``
    (default: the ICT head's, for a mesh with its vertex count). Frame ``neutral_frame`` gives
    back the neutral mesh exactly, with every method.
    """
    method = method or ("learned" if decoder is not None else DEFAULT_METHOD)
    if method not in METHODS:
        raise Face4DError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    frames, neutral_index = sequence_frames(landmarks, neutral_frame, sequence_index)
    delta = frames - frames[neutral_index]
    if method == "blendshape":
        head = HeadModel.load()
        vertices = DecoderTopology.from_head(head).check_mesh(neutral_mesh_vertices, faces, "neutral mesh")
        check_units(frames[neutral_index], vertices[head.landmark_ids])
        return vertices + blendshape_displacements(head, delta, smoothness)
    if method == "learned":
        model = decoder if isinstance(decoder, torch.nn.Module) else load_decoder(decoder)
        topology: DecoderTopology = model.topology
        vertices = topology.check_mesh(neutral_mesh_vertices, faces, "neutral mesh")
        check_units(frames[neutral_index], vertices[topology.landmark_ids])
        return vertices + decode_displacements(model, vertices, delta)
    vertices = np.asarray(neutral_mesh_vertices)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or not np.isfinite(vertices).all():
        raise Face4DError(f"neutral mesh: vertices must be a finite (V, 3) array, got shape {vertices.shape}")
    if landmark_ids is None:
        head = HeadModel.load()
        if len(vertices) != head.num_vertices:
            raise Face4DError(f"neutral mesh: has {len(vertices)} vertices, not the head model's {head.num_vertices}; "
                              f"give the vertex ids of its 68 landmarks (--landmark-ids ids.npy)")
        landmark_ids = head.landmark_ids
    ids = check_landmark_ids(landmark_ids, len(vertices))
    check_units(frames[neutral_index], vertices[ids])
    return np.asarray(vertices, np.float32) + rbf_displacements(vertices, ids, delta)


def retarget_files(landmarks_path: str | os.PathLike, mesh_path: str | os.PathLike, out_dir: str | os.PathLike,
                   export: str = "ply", neutral_frame: int | None = None, model: str | os.PathLike | None = None,
                   method: str | None = None, landmark_ids_path: str | os.PathLike | None = None,
                   sequence_index: int = 0, overwrite: bool = False, device: str = "cpu") -> tuple[Path, int, str]:
    """``retarget`` from files into ``out_dir``: ``frame_0000.<export>``, ... (0-based, one per frame
    of the sequence) and ``neutral.obj`` (the input mesh), written atomically; a non-empty
    ``out_dir`` is refused unless ``overwrite``. ``method`` None: ``learned`` with a ``model``, ``rbf``
    with landmark ids, else ``blendshape``. Returns the directory, the number of frames and the method."""
    from meshops.atomic import atomic_dir, check_dir_target
    from meshops.io import load_mesh, save_mesh

    method = method or ("learned" if model is not None else "rbf" if landmark_ids_path is not None
                        else DEFAULT_METHOD)
    if export not in EXPORTS:
        raise Face4DError(f"unknown export format {export!r}; expected one of {', '.join(EXPORTS)}")
    if method != "rbf" and landmark_ids_path is not None:
        raise Face4DError("--landmark-ids only applies to --method rbf (the learned decoder knows its topology)")
    if method != "learned" and model is not None:
        raise Face4DError("--model only applies to --method learned")
    out_dir = check_dir_target(out_dir, overwrite)
    seqs = load_landmark_file(landmarks_path, sequence_index)
    mesh = load_mesh(mesh_path)
    vertices, faces = np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int64)
    if method == "learned":
        decoder = load_decoder(model, device=device)
        decoder.topology.check_mesh(vertices, faces, str(mesh_path))
        meshes = retarget(seqs, vertices, decoder, neutral_frame, method=method, faces=faces,
                          sequence_index=sequence_index)
    elif method == "blendshape":
        meshes = retarget(seqs, vertices, None, neutral_frame, method=method, faces=faces,
                          sequence_index=sequence_index)
    else:
        ids = None if landmark_ids_path is None else load_landmark_ids(landmark_ids_path, len(vertices))
        meshes = retarget(seqs, vertices, None, neutral_frame, method="rbf", landmark_ids=ids,
                          sequence_index=sequence_index)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        save_mesh(tmp / "neutral.obj", vertices, faces)
        for i, frame in enumerate(meshes):
            save_mesh(tmp / f"frame_{i:04d}.{export}", frame, faces)
    return out_dir, len(meshes), method
